//! A minimal PostgreSQL wire-protocol client for tests: what psql cannot do (the extended
//! protocol, raw messages, reading the authentication request the server makes).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An error the server sent: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Rows as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// A connection, logged in.
pub struct PgClient {
    stream: TcpStream,
}

/// How the server asked a client to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// It did not (trust).
    Ok,
    Cleartext,
    /// SASL, with the mechanisms offered.
    Sasl(Vec<String>),
    Other(i32),
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse_error(body: &[u8]) -> PgError {
    let mut e = PgError {
        code: String::new(),
        message: String::new(),
    };
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let k = body[i];
        let end = body[i + 1..]
            .iter()
            .position(|&b| b == 0)
            .map_or(body.len(), |p| i + 1 + p);
        let v = String::from_utf8_lossy(&body[i + 1..end]).to_string();
        match k {
            b'C' => e.code = v,
            b'M' => e.message = v,
            _ => {}
        }
        i = end + 1;
    }
    e
}

impl PgClient {
    /// Reads one message: kind and body.
    pub async fn read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let kind = self.stream.read_u8().await?;
        let len = self.stream.read_i32().await?;
        let mut body = vec![0u8; (len as usize).saturating_sub(4)];
        self.stream.read_exact(&mut body).await?;
        Ok((kind, body))
    }

    /// Opens a connection and sends the startup message; returns it with the server's first
    /// authentication request (or its error).
    pub async fn start(
        addr: SocketAddr,
        user: &str,
    ) -> std::io::Result<(Self, Result<AuthRequest, PgError>)> {
        let stream = TcpStream::connect(addr).await?;
        let mut c = Self { stream };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", "skystream")] {
            body.extend(cstr(k));
            body.extend(cstr(v));
        }
        body.push(0);
        let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        m.extend(body);
        c.stream.write_all(&m).await?;
        let (kind, body) = c.read().await?;
        let auth = match kind {
            b'E' => Err(parse_error(&body)),
            b'R' => {
                let code = i32::from_be_bytes(body[0..4].try_into().unwrap());
                Ok(match code {
                    0 => AuthRequest::Ok,
                    3 => AuthRequest::Cleartext,
                    10 => AuthRequest::Sasl(
                        body[4..]
                            .split(|&b| b == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).to_string())
                            .collect(),
                    ),
                    n => AuthRequest::Other(n),
                })
            }
            k => Ok(AuthRequest::Other(k as i32)),
        };
        Ok((c, auth))
    }

    /// A logged-in connection to a server that trusts its clients.
    pub async fn trusted(addr: SocketAddr) -> std::io::Result<Self> {
        let (mut c, auth) = Self::start(addr, "skystream").await?;
        match auth {
            Ok(AuthRequest::Ok) => {}
            other => {
                return Err(std::io::Error::other(format!(
                    "not a trusting server: {other:?}"
                )));
            }
        }
        // Parameters, key data, then ReadyForQuery.
        loop {
            let (k, _) = c.read().await?;
            if k == b'Z' {
                return Ok(c);
            }
        }
    }

    /// Reads until ReadyForQuery: the rows, or the first error.
    async fn results(&mut self) -> std::io::Result<Result<Rows, PgError>> {
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let (k, body) = self.read().await?;
            match k {
                b'D' => {
                    let n = i16::from_be_bytes(body[0..2].try_into().unwrap());
                    let mut at = 2;
                    let mut row = Vec::new();
                    for _ in 0..n {
                        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                        at += 4;
                        if len < 0 {
                            row.push(None);
                        } else {
                            let v = &body[at..at + len as usize];
                            row.push(Some(String::from_utf8_lossy(v).to_string()));
                            at += len as usize;
                        }
                    }
                    rows.push(row);
                }
                b'E' => err = err.or(Some(parse_error(&body))),
                b'Z' => return Ok(err.map_or(Ok(rows), Err)),
                _ => {}
            }
        }
    }

    /// A simple-protocol query.
    pub async fn simple(&mut self, sql: &str) -> std::io::Result<Result<Rows, PgError>> {
        self.stream.write_all(&message(b'Q', &cstr(sql))).await?;
        self.results().await
    }

    /// An extended-protocol query: Parse, Bind (text parameters), Execute, Sync.
    pub async fn extended(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> std::io::Result<Result<Rows, PgError>> {
        let mut parse = cstr("");
        parse.extend(cstr(sql));
        parse.extend(0i16.to_be_bytes());
        let mut bind = cstr("");
        bind.extend(cstr(""));
        bind.extend(0i16.to_be_bytes());
        bind.extend((params.len() as i16).to_be_bytes());
        for p in params {
            bind.extend((p.len() as i32).to_be_bytes());
            bind.extend(p.as_bytes());
        }
        bind.extend(0i16.to_be_bytes());
        let mut execute = cstr("");
        execute.extend(0i32.to_be_bytes());
        let mut out = message(b'P', &parse);
        out.extend(message(b'B', &bind));
        out.extend(message(b'E', &execute));
        out.extend(message(b'S', &[]));
        self.stream.write_all(&out).await?;
        self.results().await
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }
}
