//! The SQL endpoint's connections, guarded before pgwire sees a byte of them.
//!
//! Each client's TCP stream is relayed to pgwire through a local socket pair, and the relay
//! reads the protocol's framing (a length on every message) in both directions:
//!
//! - **admission**: an address locked out after failed logins is refused; past the connection
//!   cap the oldest idle connection is closed (`skystream_netguard::ConnTable`);
//! - **size**: a message longer than its kind allows (a query over `max_query_bytes`) closes
//!   the connection with an error before it is buffered;
//! - **time**: a client that has not logged in within the startup timeout, or that sits idle
//!   (no statement in progress) past the idle timeout, is disconnected;
//! - **SSL/GSS requests** are answered "no" here (TLS is terminated in front, if at all);
//! - **cancel requests** (psql's Ctrl-C) cancel the statement running on the connection whose
//!   key they carry;
//! - **logins**: the first `ReadyForQuery` after startup marks a successful login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skystream_netguard::{AuthLimiter, BusyGuard, Conn};

use crate::cancel::Canceller;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Protocol codes of the first message of a connection.
const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

/// Startup-phase messages are small (PostgreSQL's own limit is 10,000 bytes).
const MAX_STARTUP_BYTES: usize = 10_000;
/// Messages other than queries, binds and copies.
const MAX_SMALL_MESSAGE_BYTES: usize = 64 << 10;

/// How the relay limits a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub max_query_bytes: usize,
    pub startup_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A cancel key: process id and secret, as the server sent them.
type CancelKey = (i32, Vec<u8>);

/// The connections' cancel keys.
#[derive(Debug, Default)]
pub(crate) struct CancelKeys {
    keys: Mutex<HashMap<CancelKey, Arc<Canceller>>>,
}

/// The layout of client messages, checked before pgwire sees them: it decodes a message's
/// fields without checking them against the message's length, so a short or inconsistent
/// one would panic in it or be read into the next message.
#[derive(Debug, Default)]
struct FrontendLayout {
    /// A password-family message was seen (the first one is a SASLInitialResponse; later
    /// ones are SASL responses, opaque bytes).
    sasl_started: bool,
}

impl FrontendLayout {
    fn check(&mut self, kind: u8, body: &[u8]) -> Result<(), &'static str> {
        let mut r = Fields(body);
        match kind {
            b'Q' | b'f' => r.cstring()?,
            b'P' => {
                r.cstring()?;
                r.cstring()?;
                let types = r.u16()?;
                r.skip(4 * types)?;
            }
            b'B' => {
                r.cstring()?;
                r.cstring()?;
                let formats = r.u16()?;
                r.skip(2 * formats)?;
                for _ in 0..r.u16()? {
                    r.value()?;
                }
                let formats = r.u16()?;
                r.skip(2 * formats)?;
            }
            b'E' => {
                r.cstring()?;
                r.skip(4)?;
            }
            b'D' | b'C' => {
                r.skip(1)?;
                r.cstring()?;
            }
            b'H' | b'S' | b'X' | b'c' => {}
            b'p' if !self.sasl_started => {
                self.sasl_started = true;
                r.cstring()?;
                r.value()?;
            }
            // CopyData and SASL responses are opaque; pgwire refuses unknown kinds itself.
            _ => return Ok(()),
        }
        if r.0.is_empty() {
            Ok(())
        } else {
            Err("bytes after the last field")
        }
    }
}

/// The fields of a message body, read front to back.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if n > self.0.len() {
            return Err("a field runs past the end of the message");
        }
        self.0 = &self.0[n..];
        Ok(())
    }

    fn cstring(&mut self) -> Result<(), &'static str> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string without its terminating zero")?;
        self.skip(end + 1)
    }

    fn u16(&mut self) -> Result<usize, &'static str> {
        let v = self
            .0
            .get(..2)
            .ok_or("a count runs past the end of the message")?;
        let v = u16::from_be_bytes([v[0], v[1]]) as usize;
        self.skip(2)?;
        Ok(v)
    }

    /// A length-prefixed value (-1: none).
    fn value(&mut self) -> Result<(), &'static str> {
        let v = self
            .0
            .get(..4)
            .ok_or("a length runs past the end of the message")?;
        let len = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        self.skip(4)?;
        match len {
            -1 => Ok(()),
            n if n >= 0 => self.skip(n as usize),
            _ => Err("a negative length"),
        }
    }
}

/// A backend message seen by the relay, as far as it cares.
enum Seen {
    Other,
    /// AuthenticationOk.
    LoggedIn,
    ReadyForQuery,
    KeyData(i32, Vec<u8>),
}

/// Reads the server's messages as they go by: `ReadyForQuery` and `BackendKeyData`.
#[derive(Default)]
struct BackendFraming {
    buf: Vec<u8>,
}

impl BackendFraming {
    fn feed(&mut self, data: &[u8], out: &mut Vec<Seen>) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while self.buf.len() - at >= 5 {
            let kind = self.buf[at];
            let len = i32::from_be_bytes(self.buf[at + 1..at + 5].try_into().unwrap()) as usize;
            if len < 4 {
                // Not a protocol stream (cannot happen from pgwire); stop interpreting it.
                self.buf.clear();
                return;
            }
            if self.buf.len() - at < 1 + len {
                break;
            }
            let body = &self.buf[at + 5..at + 1 + len];
            out.push(match kind {
                b'R' if body == [0, 0, 0, 0] => Seen::LoggedIn,
                b'Z' => Seen::ReadyForQuery,
                b'K' if body.len() >= 8 => Seen::KeyData(
                    i32::from_be_bytes(body[0..4].try_into().unwrap()),
                    body[4..].to_vec(),
                ),
                _ => Seen::Other,
            });
            at += 1 + len;
        }
        self.buf.drain(..at);
    }
}

/// An ErrorResponse (severity FATAL) a client can show.
pub(crate) fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(k);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = vec![b'E'];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(&body);
    m
}

async fn refuse(mut tcp: TcpStream, code: &str, message: &str) {
    let _ =
        tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&fatal(code, message))).await;
}

/// Reads one startup-phase message (`len, code, body`) within `deadline`.
async fn read_startup(tcp: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    if tcp.read_exact(&mut len).await.is_err() {
        return Ok(None);
    }
    let n = i32::from_be_bytes(len);
    if n < 8 || n as usize > MAX_STARTUP_BYTES {
        return Ok(None);
    }
    let mut m = len.to_vec();
    m.resize(n as usize, 0);
    tcp.read_exact(&mut m[4..]).await?;
    Ok(Some(m))
}

fn code_of(m: &[u8]) -> i32 {
    i32::from_be_bytes(m[4..8].try_into().unwrap())
}

/// What the relay needs from the server.
pub(crate) struct RelayContext {
    pub limits: ConnLimits,
    pub auth: Arc<AuthLimiter>,
    pub keys: Arc<CancelKeys>,
}

/// Negotiates the startup of a new connection on `tcp`: SSL/GSS requests answered "no",
/// cancel requests carried out. Returns the startup message to pass on, or `None` when the
/// connection is done (a cancel request, a client that went away, a bad packet).
pub(crate) async fn startup(tcp: &mut TcpStream, cx: &RelayContext) -> Option<Vec<u8>> {
    let deadline = cx.limits.startup_timeout;
    let negotiate = async {
        loop {
            let m = read_startup(tcp).await.ok()??;
            match code_of(&m) {
                SSL_REQUEST | GSSENC_REQUEST => tcp.write_all(b"N").await.ok()?,
                CANCEL_REQUEST if m.len() >= 16 => {
                    let pid = i32::from_be_bytes(m[8..12].try_into().unwrap());
                    let key = (pid, m[12..].to_vec());
                    if let Some(c) = cx.keys.keys.lock().unwrap().get(&key) {
                        tracing::info!(pid, "SQL cancel request");
                        c.cancel();
                    }
                    return None;
                }
                _ => return Some(m),
            }
        }
    };
    tokio::time::timeout(deadline, negotiate)
        .await
        .ok()
        .flatten()
}

/// Relays an admitted connection between `tcp` and `server` (pgwire's end of a socket pair)
/// until either side closes, a limit is passed or the connection is asked to close.
pub(crate) async fn relay(
    mut tcp: TcpStream,
    mut server: UnixStream,
    first: Vec<u8>,
    conn: Arc<Conn>,
    peer: IpAddr,
    canceller: Arc<Canceller>,
    cx: &RelayContext,
) {
    let limits = cx.limits;
    if server.write_all(&first).await.is_err() {
        return;
    }
    let (mut tr, mut tw) = tcp.split();
    let (mut sr, mut sw) = server.split();
    let mut from_client = vec![0u8; 16 << 10];
    let mut from_server = vec![0u8; 64 << 10];
    // Client framing: whole messages (a kind byte, a length, the body) are checked, then
    // passed on.
    let mut msg: Vec<u8> = Vec::with_capacity(5);
    let mut want: usize = 5;
    let mut to_server: Vec<u8> = Vec::new();
    let mut layout = FrontendLayout::default();
    let mut framing = BackendFraming::default();
    let mut seen = Vec::new();
    let mut logged_in = false;
    // AuthenticationOk seen (pgwire may answer a failed login with ReadyForQuery too).
    let mut auth_ok = false;
    // Idle (and so the first to be evicted) until a statement is sent.
    let mut busy: Option<BusyGuard> = None;
    let mut key: Option<CancelKey> = None;
    let login_deadline = tokio::time::sleep(limits.startup_timeout);
    tokio::pin!(login_deadline);
    let reason: Option<Vec<u8>> = loop {
        tokio::select! {
            r = tr.read(&mut from_client) => {
                let n = match r { Ok(0) | Err(_) => break None, Ok(n) => n };
                conn.touch();
                let mut i = 0;
                let mut refuse = None;
                to_server.clear();
                while i < n {
                    let take = (want - msg.len()).min(n - i);
                    msg.extend_from_slice(&from_client[i..i + take]);
                    i += take;
                    if msg.len() < want {
                        break;
                    }
                    if want == 5 {
                        // The header: refuse a length past the limit before buffering it.
                        let len = i32::from_be_bytes(msg[1..5].try_into().unwrap());
                        let max = match msg[0] {
                            b'Q' | b'P' | b'B' => limits.max_query_bytes,
                            _ => MAX_SMALL_MESSAGE_BYTES,
                        };
                        if len < 4 || len as usize > max + 4 {
                            refuse = Some(fatal(
                                "54000",
                                &format!(
                                    "message too large: {} bytes, over the limit of {max} \
                                     (max_query_bytes for queries)",
                                    len.max(0)
                                ),
                            ));
                            break;
                        }
                        want = 1 + len as usize;
                        if want > 5 {
                            continue;
                        }
                    }
                    if let Err(what) = layout.check(msg[0], &msg[5..]) {
                        refuse = Some(fatal(
                            "08P01",
                            &format!("invalid message format: {what}"),
                        ));
                        break;
                    }
                    // Logged-in connections with a statement in progress are not evicted;
                    // one that has not logged in yet always may be.
                    if logged_in && msg[0] != b'X' && busy.is_none() {
                        busy = Some(conn.busy());
                    }
                    to_server.extend_from_slice(&msg);
                    msg.clear();
                    want = 5;
                }
                if refuse.is_some() {
                    break refuse;
                }
                if !to_server.is_empty() && sw.write_all(&to_server).await.is_err() {
                    break None;
                }
            }
            r = sr.read(&mut from_server) => {
                let n = match r { Ok(0) | Err(_) => break None, Ok(n) => n };
                seen.clear();
                framing.feed(&from_server[..n], &mut seen);
                for s in seen.drain(..) {
                    match s {
                        Seen::LoggedIn => auth_ok = true,
                        Seen::ReadyForQuery => {
                            busy = None;
                            if auth_ok && !logged_in {
                                logged_in = true;
                                cx.auth.succeeded(peer);
                            }
                        }
                        Seen::KeyData(pid, secret) => {
                            let k = (pid, secret);
                            cx.keys.keys.lock().unwrap().insert(k.clone(), canceller.clone());
                            key = Some(k);
                        }
                        Seen::Other => {}
                    }
                }
                if tw.write_all(&from_server[..n]).await.is_err() {
                    break None;
                }
                conn.touch();
            }
            _ = &mut login_deadline, if !logged_in => {
                break Some(fatal("08006", "no login within the startup timeout"));
            }
            _ = conn.closing(if logged_in { limits.idle_timeout } else { limits.startup_timeout }) => {
                break Some(fatal(
                    "57P05",
                    "terminating connection: idle for too long, or making room for others",
                ));
            }
        }
    };
    if let Some(k) = key {
        cx.keys.keys.lock().unwrap().remove(&k);
    }
    drop(busy);
    if let Some(m) = reason {
        let _ = tokio::time::timeout(Duration::from_secs(1), tw.write_all(&m)).await;
    }
}

/// Refuses a connection from a locked-out address or past the cap.
pub(crate) async fn refuse_connection(tcp: TcpStream, code: &str, message: &str) {
    refuse(tcp, code, message).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_framing_finds_ready_and_keys_across_reads() {
        let mut f = BackendFraming::default();
        let mut msgs = Vec::new();
        msgs.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        msgs.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4]);
        msgs.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let mut out = Vec::new();
        for chunk in msgs.chunks(3) {
            f.feed(chunk, &mut out);
        }
        assert!(matches!(out[0], Seen::LoggedIn));
        assert!(matches!(&out[1], Seen::KeyData(7, s) if s == &[1, 2, 3, 4]));
        assert!(matches!(out[2], Seen::ReadyForQuery));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn client_messages_must_fit_their_length() {
        let mut l = FrontendLayout::default();
        // Bind: portal, statement, no formats, one 2-byte parameter, no result formats.
        assert_eq!(l.check(b'B', b"\0\0\0\0\0\x01\0\0\0\x02hi\0\0"), Ok(()));
        // Found by the fuzzer: a parameter that claims 58 bytes of 2.
        assert!(l.check(b'B', b"\0\0\0\0\0\x01\0\0\0\x3a1\0\0").is_err());
        assert!(
            l.check(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0")
                .is_err()
        );
        assert_eq!(l.check(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17"), Ok(()));
        assert!(l.check(b'P', b"\0SELECT $1\0\0\x09\0\0\0\x17").is_err());
        assert!(l.check(b'Q', b"SELECT 1").is_err());
        assert!(l.check(b'Q', b"SELECT 1\0trailing").is_err());
        assert!(l.check(b'E', b"\0\0\0").is_err());
        assert!(l.check(b'D', b"").is_err());
        assert!(l.check(b'S', b"x").is_err());
        // The first password message is a SASLInitialResponse; later ones are opaque.
        assert!(
            l.check(b'p', b"SCRAM-SHA-256\0\0\0\0\x0an,,n=,r=x")
                .is_err()
        );
        let mut l = FrontendLayout::default();
        assert_eq!(l.check(b'p', b"SCRAM-SHA-256\0\0\0\0\x08n,,n=,r="), Ok(()));
        assert_eq!(l.check(b'p', b"c=biws,r=...,p=..."), Ok(()));
        assert_eq!(l.check(b'd', b"anything"), Ok(()));
    }

    #[test]
    fn fatal_errors_are_framed() {
        let m = fatal("54000", "too big");
        assert_eq!(m[0], b'E');
        assert_eq!(
            i32::from_be_bytes(m[1..5].try_into().unwrap()) as usize,
            m.len() - 1
        );
    }
}
