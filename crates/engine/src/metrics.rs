//! Progress counters of a running pipeline, readable from other tasks while it runs.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::source::SourceCounters;

/// Live counters of one pipeline.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Rows received from sources (before late rows are dropped).
    pub rows_in: AtomicU64,
    /// Rows dropped because they arrived after the watermark had passed them.
    pub late_rows: AtomicU64,
    /// Windows emitted by every window operator.
    pub windows_emitted: AtomicU64,
    /// Rows written to sinks.
    pub rows_out: AtomicU64,
    /// The lowest watermark of all flows (ns since the epoch; `i64::MIN` before any).
    pub watermark: AtomicI64,
    /// Window panes held in memory.
    pub open_panes: AtomicU64,
    pub sources: Mutex<Vec<(String, Arc<SourceCounters>)>>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            windows_emitted: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            open_panes: AtomicU64::new(0),
            sources: Mutex::new(Vec::new()),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub rows_in: u64,
    pub late_rows: u64,
    pub windows_emitted: u64,
    pub rows_out: u64,
    pub watermark: Option<i64>,
    pub open_panes: u64,
    pub records_read: u64,
    pub malformed: u64,
    pub filtered: u64,
    /// Records behind the head of the inputs that report it (Kafka consumer lag).
    pub lag: Option<u64>,
}

impl PipelineMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let wm = self.watermark.load(Ordering::Relaxed);
        let mut s = MetricsSnapshot {
            rows_in: self.rows_in.load(Ordering::Relaxed),
            late_rows: self.late_rows.load(Ordering::Relaxed),
            windows_emitted: self.windows_emitted.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            watermark: (wm != i64::MIN && wm != i64::MAX).then_some(wm),
            open_panes: self.open_panes.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (_, c) in self.sources.lock().unwrap().iter() {
            s.records_read += c.records.load(Ordering::Relaxed);
            s.malformed += c.malformed.load(Ordering::Relaxed);
            s.filtered += c.filtered.load(Ordering::Relaxed);
            if c.lag_known.load(Ordering::Relaxed) {
                *s.lag.get_or_insert(0) += c.lag.load(Ordering::Relaxed);
            }
        }
        s
    }
}
