//! Jetstream → Kafka (`skystream ingest`).
//!
//! Every event the Jetstream client hands out becomes one message: key = the author's DID,
//! value = the event's JSON, timestamp = `time_us` (in ms; the exact µs in header `time_us`).
//! The producer is idempotent. Acknowledgements are consumed in the order events were sent,
//! and the cursor (the newest `time_us` acknowledged plus the events acknowledged at that
//! microsecond) is written to the cursor file only after Kafka acknowledged everything up to
//! it, so a restart resumes exactly after the last stored event: no gap and no duplicate.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use skystream_jetstream::client::{Client, ClientConfig, ClientStats, Cursor};
use tokio::sync::watch;

use crate::sink::producer_defaults;

/// What `ingest` does.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub jetstream: ClientConfig,
    pub bootstrap_servers: String,
    pub topic: String,
    /// Extra librdkafka producer settings.
    pub kafka: Vec<(String, String)>,
    /// Where the acknowledged cursor is kept (`None`: nowhere; a restart starts from
    /// `jetstream.cursor`).
    pub cursor_file: Option<PathBuf>,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Stop when no event arrived for this long (replays of a finite file).
    pub idle_exit: Option<Duration>,
    /// How often the cursor file is rewritten.
    pub cursor_interval: Duration,
}

/// Live counters (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct IngestStats {
    pub jetstream: std::sync::Mutex<Option<Arc<ClientStats>>>,
    /// Events acknowledged by Kafka.
    pub produced: AtomicU64,
    /// Events Kafka refused for good (the run stops; a restart resumes before them).
    pub failed: AtomicU64,
    /// Events waiting for an acknowledgement.
    pub in_flight: AtomicU64,
    /// Now − `time_us` of the newest event received, in µs.
    pub lag_us: AtomicI64,
    /// `time_us` of the persisted cursor.
    pub cursor_time_us: AtomicI64,
}

impl IngestStats {
    /// The counters in Prometheus text format.
    pub fn prometheus(&self) -> String {
        let js = self.jetstream.lock().unwrap().clone().unwrap_or_default();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP skystream_ingest_{name} {help}\n# TYPE skystream_ingest_{name} {kind}\nskystream_ingest_{name} {v}\n"
            ));
        };
        metric(
            "events_received_total",
            "counter",
            "Events received from Jetstream (after de-duplication).",
            g(&js.events).to_string(),
        );
        metric(
            "frames_received_total",
            "counter",
            "Frames received from Jetstream.",
            g(&js.frames).to_string(),
        );
        metric(
            "events_produced_total",
            "counter",
            "Events acknowledged by Kafka.",
            g(&self.produced).to_string(),
        );
        metric(
            "events_failed_total",
            "counter",
            "Events Kafka refused.",
            g(&self.failed).to_string(),
        );
        metric(
            "events_skipped_total",
            "counter",
            "Malformed frames skipped.",
            g(&js.malformed).to_string(),
        );
        metric(
            "duplicates_skipped_total",
            "counter",
            "Events replayed by a reconnect and skipped.",
            g(&js.duplicates).to_string(),
        );
        metric(
            "post_deletes_total",
            "counter",
            "Deletions of posts forwarded.",
            g(&js.post_deletes).to_string(),
        );
        metric(
            "reconnects_total",
            "counter",
            "Reconnections to Jetstream.",
            g(&js.reconnects).to_string(),
        );
        metric(
            "in_flight",
            "gauge",
            "Events waiting for Kafka's acknowledgement.",
            g(&self.in_flight).to_string(),
        );
        metric(
            "lag_seconds",
            "gauge",
            "Wall clock minus time_us of the newest event received.",
            format!("{:.3}", self.lag_us.load(Ordering::Relaxed) as f64 / 1e6),
        );
        metric(
            "cursor_time_us",
            "gauge",
            "time_us of the persisted cursor.",
            self.cursor_time_us.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    pub received: u64,
    pub produced: u64,
    pub cursor: Option<Cursor>,
}

/// Reads the cursor file (absent = `None`).
pub fn load_cursor(path: &std::path::Path) -> Result<Option<Cursor>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("cursor file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cursor file {}: {e}", path.display())),
    }
}

/// Writes the cursor file atomically (temp file, fsync, rename).
pub fn store_cursor(path: &std::path::Path, c: &Cursor) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(c).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write cursor file {}: {e}", path.display()))
}

/// The acknowledged cursor, advanced in send order.
#[derive(Default)]
struct Acked {
    cursor: Option<Cursor>,
    dirty: bool,
}

impl Acked {
    fn ack(&mut self, time_us: i64, id: (String, Option<String>, Option<String>)) {
        match &mut self.cursor {
            Some(c) if c.time_us == time_us => c.seen.push(id),
            Some(c) if c.time_us > time_us => {}
            _ => {
                self.cursor = Some(Cursor {
                    time_us,
                    seen: vec![id],
                })
            }
        }
        self.dirty = true;
    }
}

type Pending = (i64, (String, Option<String>, Option<String>));

/// Runs until `stop` turns true, `max_events` or `idle_exit` ends it, or an error.
pub async fn run(
    config: IngestConfig,
    stats: Arc<IngestStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<IngestSummary, String> {
    let mut kc = rdkafka::ClientConfig::new();
    kc.set("bootstrap.servers", &config.bootstrap_servers);
    for (k, v) in &config.kafka {
        kc.set(k, v);
    }
    // A broker restart must not expire queued events.
    if kc.get("message.timeout.ms").is_none() {
        kc.set("message.timeout.ms", "0");
    }
    producer_defaults(&mut kc);
    let producer: FutureProducer = kc.create().map_err(|e| format!("kafka producer: {e}"))?;

    let mut client = Client::new(config.jetstream.clone()).map_err(|e| e.to_string())?;
    *stats.jetstream.lock().unwrap() = Some(client.stats());
    let mut acked = Acked::default();
    if let Some(path) = &config.cursor_file
        && let Some(c) = load_cursor(path)?
    {
        tracing::info!(time_us = c.time_us, "resuming after the stored cursor");
        client.resume(&c);
        stats.cursor_time_us.store(c.time_us, Ordering::Relaxed);
        acked.cursor = Some(c);
    }

    let mut inflight: FuturesOrdered<DeliveryWithMeta> = FuturesOrdered::new();
    let mut received: u64 = 0;
    let mut last_event = Instant::now();
    let mut persist = tokio::time::interval(config.cursor_interval);
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let result: Result<(), String> = loop {
        let done_receiving = stopping
            || config.max_events.is_some_and(|m| received >= m)
            || config
                .idle_exit
                .is_some_and(|d| last_event.elapsed() >= d && inflight.is_empty());
        if done_receiving && inflight.is_empty() {
            break Ok(());
        }
        let idle_wait = config
            .idle_exit
            .map(|d| d.saturating_sub(last_event.elapsed()))
            .unwrap_or(Duration::from_secs(3600));
        // Back-pressure: stop reading while too many events wait for Kafka.
        let can_receive = !done_receiving && inflight.len() < 100_000;
        tokio::select! {
            biased;
            _ = stop.changed() => stopping = true,
            Some(r) = inflight.next(), if !inflight.is_empty() => {
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok((time_us, id)) => {
                        stats.produced.fetch_add(1, Ordering::Relaxed);
                        acked.ack(time_us, id);
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        break Err(format!("Kafka refused an event: {e}"));
                    }
                }
            }
            ev = client.next(), if can_receive => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => break Err(e.to_string()),
                };
                received += 1;
                last_event = Instant::now();
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or(0);
                stats.lag_us.store(now_us - ev.envelope.time_us, Ordering::Relaxed);
                let time_us = ev.envelope.time_us.to_string();
                let headers = OwnedHeaders::new().insert(Header { key: "time_us", value: Some(&time_us) });
                let mut record = FutureRecord::to(&config.topic)
                    .key(&ev.envelope.did)
                    .payload(&ev.json)
                    .timestamp(ev.envelope.time_us / 1000)
                    .headers(headers);
                let queued = loop {
                    match producer.send_result(record) {
                        Ok(f) => break Ok(f),
                        Err((rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ), r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err((e, _)) => break Err(format!("cannot queue an event for Kafka: {e}")),
                    }
                };
                let fut = match queued {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                };
                stats.in_flight.fetch_add(1, Ordering::Relaxed);
                inflight.push_back(DeliveryWithMeta {
                    fut,
                    meta: Some((ev.envelope.time_us, ev.envelope.identity())),
                });
            }
            _ = tokio::time::sleep(idle_wait), if config.idle_exit.is_some() && !done_receiving => {}
            _ = persist.tick() => {
                if let (Some(path), Some(c)) = (&config.cursor_file, &acked.cursor)
                    && acked.dirty
                {
                    store_cursor(path, c)?;
                    stats.cursor_time_us.store(c.time_us, Ordering::Relaxed);
                    acked.dirty = false;
                }
            }
        }
    };
    // Whatever was acknowledged is recorded, even when the run failed.
    if let (Some(path), Some(c)) = (&config.cursor_file, &acked.cursor) {
        store_cursor(path, c)?;
        stats.cursor_time_us.store(c.time_us, Ordering::Relaxed);
    }
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10))).await;
    result?;
    Ok(IngestSummary {
        received,
        produced: stats.produced.load(Ordering::Relaxed),
        cursor: acked.cursor,
    })
}

/// A delivery future carrying the event's cursor data.
struct DeliveryWithMeta {
    fut: DeliveryFuture,
    meta: Option<Pending>,
}

impl std::future::Future for DeliveryWithMeta {
    type Output = Result<Pending, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.fut).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let meta = self.meta.take().unwrap_or_default();
                Poll::Ready(match r {
                    Ok(Ok(_)) => Ok(meta),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer went away".into()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_cursor_advances_in_order() {
        let mut a = Acked::default();
        a.ack(10, ("a".into(), None, None));
        a.ack(10, ("b".into(), None, None));
        assert_eq!(a.cursor.as_ref().unwrap().seen.len(), 2);
        a.ack(12, ("c".into(), None, None));
        let c = a.cursor.clone().unwrap();
        assert_eq!((c.time_us, c.seen.len()), (12, 1));
        // An older event acknowledged later does not move the cursor back.
        a.ack(11, ("d".into(), None, None));
        assert_eq!(a.cursor.unwrap().time_us, 12);
    }

    #[test]
    fn cursor_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("skystream-cursor-{}", std::process::id()));
        let path = dir.join("cursor.json");
        assert_eq!(load_cursor(&path).unwrap(), None);
        let c = Cursor {
            time_us: 42,
            seen: vec![(
                "did:x".into(),
                Some("app.bsky.feed.post".into()),
                Some("k".into()),
            )],
        };
        store_cursor(&path, &c).unwrap();
        assert_eq!(load_cursor(&path).unwrap(), Some(c));
        std::fs::write(&path, b"{oops").unwrap();
        assert!(load_cursor(&path).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
