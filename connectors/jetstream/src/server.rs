//! A local Jetstream v1-compatible server replaying a JSONL file of events, so tests and demos
//! never need the internet (`skystream jetstream-serve`).
//!
//! It honours `wantedCollections` (exact or `prefix.*`), `wantedDids`, `cursor` (events with
//! `time_us >= cursor`, in `time_us` order), `compress=true` (Binary frames, zstd with
//! Jetstream's dictionary), `maxMessageSizeBytes`, `requireHello` and `options_update`
//! messages; invalid parameters get HTTP 400 before the upgrade, as on Jetstream. Events are
//! served in `time_us` order (the file's lines are sorted on load, like Jetstream's store).
//! When the file is exhausted the connection stays open, like a live tail with no traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::event::{Envelope, valid_collection_pattern};
use crate::zstd_dict::Compressor;

/// How the server replays.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Events per second per connection (`None`: as fast as the client reads).
    pub rate: Option<f64>,
    /// Fault injection: drop each connection abruptly (no close frame) after this many events.
    pub drop_after: Option<u64>,
}

/// The events a server replays, sorted by `time_us`.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Vec<(Envelope, Vec<u8>)>,
    /// Lines of the file that were not events (reported at load).
    pub skipped: usize,
}

impl EventLog {
    /// Parses JSONL; lines that are not Jetstream events are counted in `skipped`.
    pub fn from_jsonl(data: &[u8]) -> Self {
        let mut log = EventLog::default();
        for line in data.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match Envelope::parse(line) {
                Ok(e) => log.events.push((e, line.to_vec())),
                Err(_) => log.skipped += 1,
            }
        }
        log.events.sort_by_key(|(e, _)| e.time_us);
        log
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn start(&self, cursor: Option<i64>) -> usize {
        match cursor {
            Some(c) => self.events.partition_point(|(e, _)| e.time_us < c),
            None => 0,
        }
    }
}

/// What one connection asked for.
#[derive(Debug, Clone, Default)]
struct Subscription {
    collections: Vec<String>,
    dids: Vec<String>,
    cursor: Option<i64>,
    compress: bool,
    max_size: usize,
    require_hello: bool,
}

fn decode_component(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_subscription(query: Option<&str>, headers_zstd: bool) -> Result<Subscription, String> {
    let mut s = Subscription {
        compress: headers_zstd,
        ..Default::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode_component(v);
        match k {
            "wantedCollections" => {
                if !valid_collection_pattern(&v) {
                    return Err(format!("invalid collection: {v}"));
                }
                s.collections.push(v);
            }
            "wantedDids" => {
                if !v.starts_with("did:") {
                    return Err(format!("invalid did: {v}"));
                }
                s.dids.push(v);
            }
            "cursor" => {
                s.cursor = Some(v.parse().map_err(|_| format!("invalid cursor: {v}"))?);
            }
            "compress" => s.compress = v == "true",
            "maxMessageSizeBytes" => {
                s.max_size = v
                    .parse()
                    .map_err(|_| format!("invalid maxMessageSizeBytes: {v}"))?;
            }
            "requireHello" => s.require_hello = v == "true",
            _ => {}
        }
    }
    if s.collections.len() > 100 {
        return Err("too many wantedCollections".into());
    }
    if s.dids.len() > 10_000 {
        return Err("too many wantedDids".into());
    }
    Ok(s)
}

/// Counters of a server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub events_sent: AtomicU64,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves `log` until [`Server::shutdown`].
    pub async fn start(
        addr: SocketAddr,
        log: Arc<EventLog>,
        config: ServerConfig,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (shutdown, rx) = watch::channel(false);
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut rx_accept = rx.clone();
            loop {
                let (tcp, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            continue;
                        }
                    },
                    _ = rx_accept.changed() => return,
                };
                let (log, config, st, rx) = (log.clone(), config.clone(), st.clone(), rx.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(tcp, log, config, st, rx).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
        });
        Ok(Server {
            addr,
            stats,
            shutdown,
            task,
        })
    }

    /// The `ws://` URL of the subscribe endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }

    /// Stops accepting and closes every connection abruptly.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

// The handshake callback's error is tungstenite's HTTP response type, as its API requires.
#[allow(clippy::result_large_err)]
async fn serve_connection(
    tcp: TcpStream,
    log: Arc<EventLog>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut sub = None;
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        let zstd = req
            .headers()
            .get("Socket-Encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("zstd"));
        if req.uri().path() != "/subscribe" {
            let mut r = ErrorResponse::new(Some("not found: use /subscribe".into()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Err(r);
        }
        match parse_subscription(req.uri().query(), zstd) {
            Ok(s) => {
                sub = Some(s);
                Ok(resp)
            }
            Err(e) => {
                let mut r = ErrorResponse::new(Some(e));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Err(r)
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut sub = sub.ok_or("no subscription")?;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let mut compressor = if sub.compress {
        Some(Compressor::new().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut hello = !sub.require_hello;
    let mut i = log.start(sub.cursor);
    let mut sent: u64 = 0;
    let started = Instant::now();
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    loop {
        // Client messages and pings take turns with sending.
        let ready = hello && i < log.events.len();
        let pace = match (ready, config.rate) {
            (true, Some(r)) if r > 0.0 => {
                let due = started + Duration::from_secs_f64(sent as f64 / r);
                due.saturating_duration_since(Instant::now())
            }
            _ => Duration::ZERO,
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(update) = options_update(t.as_bytes()) {
                        let (c, d) = update?;
                        sub.collections = c;
                        sub.dids = d;
                        hello = true;
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
            },
            _ = ping.tick() => {
                tx.send(Message::Ping(Vec::new().into())).await.map_err(|e| e.to_string())?;
            }
            // (A zero sleep would still wait for the timer's next tick, ~1 ms per event.)
            _ = async { if !pace.is_zero() { tokio::time::sleep(pace).await } }, if ready => {
                let (e, json) = &log.events[i];
                i += 1;
                if !e.wanted_collection(&sub.collections) || !e.wanted_did(&sub.dids)
                    || (sub.max_size > 0 && json.len() > sub.max_size)
                {
                    continue;
                }
                if let Some(limit) = config.drop_after
                    && sent >= limit
                {
                    // Abrupt: no close frame, the TCP connection just goes away.
                    return Ok(());
                }
                let msg = match &mut compressor {
                    Some(c) => Message::Binary(c.compress(json).map_err(|e| e.to_string())?.into()),
                    None => Message::text(String::from_utf8_lossy(json).into_owned()),
                };
                tx.send(msg).await.map_err(|e| e.to_string())?;
                sent += 1;
                stats.events_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

type Filters = (Vec<String>, Vec<String>);

/// Reads an `options_update` message: `None` if the message is something else.
fn options_update(msg: &[u8]) -> Option<Result<Filters, String>> {
    let v: serde_json::Value = serde_json::from_slice(msg).ok()?;
    if v.get("type")?.as_str()? != "options_update" {
        return None;
    }
    let p = v.get("payload")?;
    let list = |k: &str| -> Vec<String> {
        p.get(k)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = list("wantedCollections");
    if let Some(bad) = c.iter().find(|c| !valid_collection_pattern(c)) {
        return Some(Err(format!("invalid collection in options_update: {bad}")));
    }
    Some(Ok((c, list("wantedDids"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions() {
        let s = parse_subscription(
            Some("wantedCollections=app.bsky.feed.post&wantedDids=did%3Aplc%3Ax&cursor=12&compress=true"),
            false,
        )
        .unwrap();
        assert_eq!(s.collections, ["app.bsky.feed.post"]);
        assert_eq!(s.dids, ["did:plc:x"]);
        assert_eq!((s.cursor, s.compress), (Some(12), true));
        assert!(parse_subscription(Some("cursor=abc"), false).is_err());
        assert!(parse_subscription(Some("wantedCollections=bad%20nsid"), false).is_err());
        assert!(parse_subscription(None, true).unwrap().compress);
    }

    #[test]
    fn logs_are_sorted_and_cursors_start_inclusive() {
        let log = EventLog::from_jsonl(include_bytes!(
            "../../../testdata/jetstream/expected_v1.jsonl"
        ));
        assert!(log.len() > 100);
        assert!(
            log.events
                .windows(2)
                .all(|w| w[0].0.time_us <= w[1].0.time_us)
        );
        let t = log.events[10].0.time_us;
        let s = log.start(Some(t));
        assert_eq!(log.events[s].0.time_us, t);
        assert!(s == 0 || log.events[s - 1].0.time_us < t);
    }
}
