//! A Jetstream v1 client: subscribes over WebSocket, decompresses, de-duplicates, and
//! reconnects on its own.
//!
//! [`Client::next`] hands out events one by one. Behind it the client keeps one connection;
//! when the connection fails it reconnects with exponential backoff and jitter, asking for
//! `cursor` = the newest `time_us` it handed out minus a safety margin, and skips the replayed
//! overlap (events older than that newest one, or at the same microsecond and already seen), so
//! a reconnect neither loses nor repeats events. Frames that do not decode (bad zstd, invalid
//! UTF-8, broken JSON, unknown kinds) are counted and logged, never fatal.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::event::{Envelope, valid_collection_pattern};
use crate::zstd_dict::Decompressor;

/// What to subscribe to and how to behave on failures.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The subscribe endpoint, e.g. `wss://jetstream2.us-east.bsky.network/subscribe`.
    pub url: String,
    pub wanted_collections: Vec<String>,
    pub wanted_dids: Vec<String>,
    /// Unix microseconds to start from (`None`: live tail).
    pub cursor: Option<i64>,
    pub compress: bool,
    /// How far before the newest handled event a reconnect resumes.
    pub resume_margin: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed connection attempts before giving up (`None`: never give up).
    pub max_attempts: Option<u32>,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            wanted_collections: vec![crate::decode::POST_COLLECTION.to_string()],
            wanted_dids: Vec::new(),
            cursor: None,
            compress: false,
            resume_margin: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_attempts: None,
        }
    }

    /// Checks the filters as the server would.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self
            .wanted_collections
            .iter()
            .find(|c| !valid_collection_pattern(c))
        {
            return Err(format!("invalid collection '{bad}' in wantedCollections"));
        }
        if self.wanted_collections.len() > 100 {
            return Err("at most 100 wantedCollections".into());
        }
        if self.wanted_dids.len() > 10_000 {
            return Err("at most 10000 wantedDids".into());
        }
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(format!("'{}' is not a ws:// or wss:// URL", self.url));
        }
        Ok(())
    }

    /// The URL to connect to, resuming at `cursor`.
    pub fn subscribe_url(&self, cursor: Option<i64>) -> String {
        let mut q: Vec<String> = Vec::new();
        for c in &self.wanted_collections {
            q.push(format!("wantedCollections={}", encode(c)));
        }
        for d in &self.wanted_dids {
            q.push(format!("wantedDids={}", encode(d)));
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={c}"));
        }
        if self.compress {
            q.push("compress=true".into());
        }
        if q.is_empty() {
            return self.url.clone();
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.url, q.join("&"))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counters of a client, shared with metrics endpoints.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Frames received (any kind of data frame).
    pub frames: AtomicU64,
    /// Events handed out.
    pub events: AtomicU64,
    /// Frames skipped as malformed (bad zstd, invalid UTF-8 or JSON, unknown kind, missing
    /// fields).
    pub malformed: AtomicU64,
    /// Events skipped because a reconnect replayed them.
    pub duplicates: AtomicU64,
    /// Deletes of posts handed out.
    pub post_deletes: AtomicU64,
    pub reconnects: AtomicU64,
    /// `time_us` of the newest event handed out.
    pub last_time_us: std::sync::atomic::AtomicI64,
}

/// One event.
#[derive(Debug, Clone)]
pub struct JetstreamEvent {
    pub envelope: Envelope,
    /// The event's JSON, decompressed.
    pub json: Vec<u8>,
}

/// Where a subscriber stands: the newest `time_us` handled and the events handled at that very
/// microsecond (several events can share one).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub time_us: i64,
    #[serde(default)]
    pub seen: Vec<(String, Option<String>, Option<String>)>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Errors that end a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Jetstream subscription: {0}")]
    Config(String),
    #[error("Jetstream unreachable after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// The client. See the module docs.
pub struct Client {
    config: ClientConfig,
    stats: Arc<ClientStats>,
    ws: Option<Ws>,
    decompressor: Decompressor,
    /// Newest event handed out, and identities handed out at that microsecond.
    newest: Option<i64>,
    seen_at_newest: HashSet<(String, Option<String>, Option<String>)>,
    /// After a reconnect: skip events up to the newest handed out (the overlap).
    in_overlap: bool,
    logged: u32,
    connected_once: bool,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        config.validate().map_err(ClientError::Config)?;
        Ok(Self {
            config,
            stats: Arc::default(),
            ws: None,
            decompressor: Decompressor::new().map_err(|e| ClientError::Config(e.to_string()))?,
            newest: None,
            seen_at_newest: HashSet::new(),
            in_overlap: false,
            logged: 0,
            connected_once: false,
        })
    }

    /// Resumes after `cursor` (from a persisted state): events at or before it are skipped.
    pub fn resume(&mut self, cursor: &Cursor) {
        self.newest = Some(cursor.time_us);
        self.seen_at_newest = cursor.seen.iter().cloned().collect();
        self.in_overlap = true;
    }

    pub fn stats(&self) -> Arc<ClientStats> {
        self.stats.clone()
    }

    /// Where the client stands (after the last event handed out).
    pub fn cursor(&self) -> Option<Cursor> {
        self.newest.map(|t| Cursor {
            time_us: t,
            seen: self.seen_at_newest.iter().cloned().collect(),
        })
    }

    /// Changes the filters: sent to the server as `options_update` and used on reconnects.
    pub async fn update_options(
        &mut self,
        wanted_collections: Vec<String>,
        wanted_dids: Vec<String>,
    ) -> Result<(), ClientError> {
        let mut next = self.config.clone();
        next.wanted_collections = wanted_collections;
        next.wanted_dids = wanted_dids;
        next.validate().map_err(ClientError::Config)?;
        self.config = next;
        if let Some(ws) = &mut self.ws {
            let msg = serde_json::json!({
                "type": "options_update",
                "payload": {
                    "wantedCollections": self.config.wanted_collections,
                    "wantedDids": self.config.wanted_dids,
                    "maxMessageSizeBytes": 0,
                }
            });
            if let Err(e) = ws.send(Message::text(msg.to_string())).await {
                tracing::warn!("options_update not sent ({e}); it applies on reconnect");
                self.ws = None;
            }
        }
        Ok(())
    }

    /// The cursor a (re)connection asks for.
    fn connect_cursor(&self) -> Option<i64> {
        match self.newest {
            Some(t) => Some(t - self.config.resume_margin.as_micros() as i64),
            None => self.config.cursor,
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut attempt: u32 = 0;
        let mut delay = self.config.backoff_initial;
        loop {
            let url = self.config.subscribe_url(self.connect_cursor());
            let err = match tokio::time::timeout(
                Duration::from_secs(15),
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await
            {
                Ok(Ok((ws, _))) => {
                    if self.connected_once {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(cursor = ?self.connect_cursor(), "reconnected to Jetstream");
                    }
                    self.connected_once = true;
                    self.in_overlap = self.newest.is_some();
                    self.ws = Some(ws);
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connection timed out".to_string(),
            };
            attempt += 1;
            if let Some(max) = self.config.max_attempts
                && attempt >= max
            {
                return Err(ClientError::GaveUp {
                    attempts: attempt,
                    last: err,
                });
            }
            let wait = jitter(delay);
            tracing::warn!(
                attempt,
                "cannot connect to Jetstream ({err}); retrying in {wait:?}"
            );
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    /// The next event, connecting and reconnecting as needed. Errors only when the
    /// configuration is invalid or `max_attempts` consecutive connection attempts failed.
    pub async fn next(&mut self) -> Result<JetstreamEvent, ClientError> {
        loop {
            if self.ws.is_none() {
                self.connect().await?;
            }
            let Some(ws) = self.ws.as_mut() else { continue };
            let msg = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!("Jetstream connection lost: {e}");
                    self.ws = None;
                    continue;
                }
                None => {
                    tracing::warn!("Jetstream closed the connection");
                    self.ws = None;
                    continue;
                }
            };
            let bytes = match msg {
                Message::Text(t) => {
                    self.stats.frames.fetch_add(1, Ordering::Relaxed);
                    t.as_bytes().to_vec()
                }
                Message::Binary(b) => {
                    self.stats.frames.fetch_add(1, Ordering::Relaxed);
                    match self.decompressor.decompress(&b) {
                        Ok(v) => v,
                        Err(e) => {
                            self.malformed(&format!("undecodable binary frame: {e}"));
                            continue;
                        }
                    }
                }
                Message::Close(_) => {
                    self.ws = None;
                    continue;
                }
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if std::str::from_utf8(&bytes).is_err() {
                self.malformed("event is not valid UTF-8");
                continue;
            }
            let envelope = match Envelope::parse(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    self.malformed(&e);
                    continue;
                }
            };
            if self.is_duplicate(&envelope) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.handed_out(&envelope);
            return Ok(JetstreamEvent {
                envelope,
                json: bytes,
            });
        }
    }

    fn is_duplicate(&mut self, e: &Envelope) -> bool {
        if !self.in_overlap {
            return false;
        }
        let Some(newest) = self.newest else {
            return false;
        };
        if e.time_us < newest
            || (e.time_us == newest && self.seen_at_newest.contains(&e.identity()))
        {
            return true;
        }
        if e.time_us > newest {
            self.in_overlap = false;
        }
        false
    }

    fn handed_out(&mut self, e: &Envelope) {
        match self.newest {
            Some(t) if e.time_us == t => {
                self.seen_at_newest.insert(e.identity());
            }
            Some(t) if e.time_us < t => {}
            _ => {
                self.newest = Some(e.time_us);
                self.seen_at_newest.clear();
                self.seen_at_newest.insert(e.identity());
                self.stats.last_time_us.store(e.time_us, Ordering::Relaxed);
            }
        }
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if e.is_post_delete() {
            self.stats.post_deletes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn malformed(&mut self, why: &str) {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        if self.logged < 20 {
            self.logged += 1;
            tracing::warn!("skipping malformed Jetstream frame: {why}");
        }
    }
}

/// `d` ± 50 %, from the clock's nanoseconds (no shared RNG needed).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos() as u64)
        .unwrap_or(7);
    let mut x = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 29;
    d.mul_f64(0.5 + (x % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_urls() {
        let mut c = ClientConfig::new("ws://127.0.0.1:6008/subscribe");
        c.wanted_dids = vec!["did:plc:abc".into()];
        c.compress = true;
        assert_eq!(
            c.subscribe_url(Some(17)),
            "ws://127.0.0.1:6008/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did%3Aplc%3Aabc&cursor=17&compress=true"
        );
        c.wanted_collections = vec!["not a nsid".into()];
        assert!(c.validate().is_err());
        assert!(ClientConfig::new("http://x").validate().is_err());
    }

    #[test]
    fn jitter_stays_within_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(150));
        }
    }
}
