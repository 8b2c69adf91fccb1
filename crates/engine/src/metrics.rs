//! Progress counters of a running pipeline, readable from other tasks while it runs.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::sink::SinkStatus;
use crate::source::SourceCounters;

/// Live counters of one pipeline.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Rows received from sources (before late rows are dropped).
    pub rows_in: AtomicU64,
    /// Rows dropped because they arrived after the watermark had passed them.
    pub late_rows: AtomicU64,
    /// Rows dropped because their event time ran too far ahead of the wall clock (see
    /// `PipelineConfig::max_event_ahead`).
    pub ahead_rows: AtomicU64,
    /// Windows emitted by every window operator.
    pub windows_emitted: AtomicU64,
    /// Rows written to sinks.
    pub rows_out: AtomicU64,
    /// The lowest watermark of all flows (ns since the epoch; `i64::MIN` before any).
    pub watermark: AtomicI64,
    /// Window panes held in memory.
    pub open_panes: AtomicU64,
    /// Memory held by the window operators' state (bytes).
    pub state_bytes: AtomicU64,
    /// The run has restored its checkpoint, started its sinks and is reading its sources.
    pub started: AtomicBool,
    pub sources: Mutex<Vec<(String, Arc<SourceCounters>)>>,
    pub sinks: Mutex<Vec<(String, Arc<SinkStatus>)>>,
    /// Checkpoints stored, and attempts that failed (the previous checkpoint stays in force).
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    /// The last stored checkpoint: epoch (0: none), duration (µs), size (bytes), and when
    /// (ms since the Unix epoch).
    pub last_checkpoint_epoch: AtomicU64,
    pub last_checkpoint_us: AtomicU64,
    pub last_checkpoint_bytes: AtomicU64,
    pub last_checkpoint_at_ms: AtomicI64,
    /// The epoch the pipeline resumed from (0: started fresh).
    pub restored_epoch: AtomicU64,
    /// Every operator of every flow, in order.
    pub operators: Mutex<Vec<(String, String, Arc<OperatorCounters>)>>,
}

/// Rows into and out of one operator of a flow.
#[derive(Debug, Default)]
pub struct OperatorCounters {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
}

impl OperatorCounters {
    pub fn count(&self, rows_in: usize, rows_out: usize) {
        self.rows_in.fetch_add(rows_in as u64, Ordering::Relaxed);
        self.rows_out.fetch_add(rows_out as u64, Ordering::Relaxed);
    }
}

/// One operator's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// The flow (the sink table it writes).
    pub flow: String,
    /// `{position}:{kind}`, e.g. `0:ProjectionExec`, `1:window`, `2:sink`.
    pub operator: String,
    pub rows_in: u64,
    pub rows_out: u64,
}

/// One source's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    pub name: String,
    pub records: u64,
    pub malformed: u64,
    pub filtered: u64,
    pub lag: Option<u64>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            ahead_rows: AtomicU64::new(0),
            windows_emitted: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            open_panes: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            started: AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            sinks: Mutex::new(Vec::new()),
            checkpoints: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            last_checkpoint_epoch: AtomicU64::new(0),
            last_checkpoint_us: AtomicU64::new(0),
            last_checkpoint_bytes: AtomicU64::new(0),
            last_checkpoint_at_ms: AtomicI64::new(0),
            restored_epoch: AtomicU64::new(0),
            operators: Mutex::new(Vec::new()),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub rows_in: u64,
    pub late_rows: u64,
    /// See [`PipelineMetrics::ahead_rows`].
    pub ahead_rows: u64,
    pub windows_emitted: u64,
    pub rows_out: u64,
    pub watermark: Option<i64>,
    pub open_panes: u64,
    /// Memory held by the window operators' state (bytes).
    pub state_bytes: u64,
    /// See [`PipelineMetrics::started`].
    pub started: bool,
    pub records_read: u64,
    pub malformed: u64,
    pub filtered: u64,
    /// Records behind the head of the inputs that report it (Kafka consumer lag).
    pub lag: Option<u64>,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    pub last_checkpoint: Option<CheckpointInfo>,
    /// The epoch the pipeline resumed from, if it restored a checkpoint.
    pub restored_epoch: Option<u64>,
    /// Sinks that are failing and retrying right now.
    pub degraded_sinks: Vec<String>,
    /// Sink write attempts that failed and were retried.
    pub sink_retries: u64,
    pub sources: Vec<SourceSnapshot>,
    pub operators: Vec<OperatorSnapshot>,
}

/// The last stored checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub epoch: u64,
    pub duration_us: u64,
    pub bytes: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl PipelineMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let wm = self.watermark.load(Ordering::Relaxed);
        let mut s = MetricsSnapshot {
            rows_in: self.rows_in.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            ahead_rows: self.ahead_rows.load(Ordering::Relaxed),
            windows_emitted: self.windows_emitted.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            watermark: (wm != i64::MIN && wm != i64::MAX).then_some(wm),
            open_panes: self.open_panes.load(Ordering::Relaxed),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: self.checkpoint_failures.load(Ordering::Relaxed),
            last_checkpoint: match self.last_checkpoint_epoch.load(Ordering::Relaxed) {
                0 => None,
                epoch => Some(CheckpointInfo {
                    epoch,
                    duration_us: self.last_checkpoint_us.load(Ordering::Relaxed),
                    bytes: self.last_checkpoint_bytes.load(Ordering::Relaxed),
                    at_ms: self.last_checkpoint_at_ms.load(Ordering::Relaxed),
                }),
            },
            restored_epoch: match self.restored_epoch.load(Ordering::Relaxed) {
                0 => None,
                e => Some(e),
            },
            ..Default::default()
        };
        for (name, st) in self.sinks.lock().unwrap().iter() {
            if st.degraded.load(Ordering::Relaxed) {
                s.degraded_sinks.push(name.clone());
            }
            s.sink_retries += st.retries.load(Ordering::Relaxed);
        }
        for (name, c) in self.sources.lock().unwrap().iter() {
            let src = SourceSnapshot {
                name: name.clone(),
                records: c.records.load(Ordering::Relaxed),
                malformed: c.malformed.load(Ordering::Relaxed),
                filtered: c.filtered.load(Ordering::Relaxed),
                lag: c
                    .lag_known
                    .load(Ordering::Relaxed)
                    .then(|| c.lag.load(Ordering::Relaxed)),
            };
            s.records_read += src.records;
            s.malformed += src.malformed;
            s.filtered += src.filtered;
            if let Some(l) = src.lag {
                *s.lag.get_or_insert(0) += l;
            }
            s.sources.push(src);
        }
        for (flow, op, c) in self.operators.lock().unwrap().iter() {
            s.operators.push(OperatorSnapshot {
                flow: flow.clone(),
                operator: op.clone(),
                rows_in: c.rows_in.load(Ordering::Relaxed),
                rows_out: c.rows_out.load(Ordering::Relaxed),
            });
        }
        s
    }
}
