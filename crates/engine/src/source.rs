//! The source interface: connectors push Arrow batches (with their source position) into the
//! engine through a [`SourceContext`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::Result;

/// Where a source stands in its input (a file offset, Kafka offsets per partition, a Jetstream
/// cursor). Opaque to the engine, which stores it in checkpoints and hands it back on restore.
pub type Position = serde_json::Value;

/// What a source sends to the engine.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows of one split (a Kafka partition; 0 for a source with one stream), and the
    /// source's position just after the last of them. Each split has its own watermark; the
    /// source's is the lowest of them.
    Batch {
        batch: RecordBatch,
        split: u32,
        position: Option<Position>,
    },
    /// The splits the source reads, announced before its first batch: each holds the
    /// watermark back until it produces rows or goes idle.
    Splits(Vec<u32>),
    /// The source's own clock: no event earlier than `event_time_ns` will follow. Paced replays
    /// send it while they wait, so windows close on time even when no event arrives.
    Heartbeat { event_time_ns: i64 },
    /// A finite source reached its end: every open window can be flushed.
    End,
}

/// Counters a source keeps about its input, read by the engine's progress reports.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Input records read (lines, messages, frames), decoded or not.
    pub records: AtomicU64,
    /// Records skipped because they were malformed (each one logged).
    pub malformed: AtomicU64,
    /// Records skipped because they are not rows of this table (other collections, kinds...).
    pub filtered: AtomicU64,
    /// Records in the input not read yet (Kafka consumer lag), when the source knows it.
    pub lag: AtomicU64,
    pub lag_known: std::sync::atomic::AtomicBool,
}

impl SourceCounters {
    pub fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_malformed(&self, n: u64) {
        self.malformed.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_filtered(&self, n: u64) {
        self.filtered.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set_lag(&self, n: u64) {
        self.lag.store(n, Ordering::Relaxed);
        self.lag_known.store(true, Ordering::Relaxed);
    }
}

/// The handle a running source uses to talk to the engine.
pub struct SourceContext {
    pub(crate) index: usize,
    pub(crate) tx: mpsc::Sender<(usize, SourceEvent)>,
    /// Position to resume from (from a checkpoint), if any.
    pub restore: Option<Position>,
    pub counters: Arc<SourceCounters>,
    /// The column of the source's batches that holds event time (its watermark column), if
    /// the table declares one: heartbeats are in its terms.
    pub event_time_column: Option<usize>,
}

/// The pipeline stopped: the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl SourceContext {
    /// A context that is not attached to a pipeline: events go to the returned receiver.
    /// For connectors' own tests and tools.
    pub fn detached(capacity: usize) -> (Self, mpsc::Receiver<(usize, SourceEvent)>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Self {
                index: 0,
                tx,
                restore: None,
                counters: Arc::default(),
                event_time_column: None,
            },
            rx,
        )
    }

    /// Sends an event, waiting while the engine is busy (back-pressure).
    pub async fn send(&self, event: SourceEvent) -> Result<(), Stopped> {
        self.tx.send((self.index, event)).await.map_err(|_| Stopped)
    }

    /// Whether the engine has stopped listening.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A running input of a pipeline.
pub trait Source: Send {
    /// Schema of the batches this source sends.
    fn schema(&self) -> SchemaRef;

    /// Whether this source's event time is wall-clock time (a live feed such as Jetstream or a
    /// Kafka topic), so that an event far ahead of the wall clock is bogus and is skipped
    /// (see `PipelineConfig::max_event_ahead`). Recorded and synthetic streams keep time of
    /// their own.
    fn event_time_is_wall_clock(&self) -> bool {
        false
    }

    /// Reads the input and sends it to `ctx` until the input ends (then sends
    /// [`SourceEvent::End`]) or the engine stops listening. Errors that cannot be skipped end
    /// the source with `Err`.
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<()>>;
}
