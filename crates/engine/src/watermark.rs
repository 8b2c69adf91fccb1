//! Per-source event time: the watermark and late-row detection.
//!
//! The watermark of a source is the largest event time seen minus the declared bound
//! (`WATERMARK FOR ts AS ts - INTERVAL '5' SECOND`). A row whose event time is below the
//! watermark in force when it arrives is late: it is dropped and counted. Lateness is decided
//! row by row in arrival order, so the result does not depend on how the input was batched.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, TimeUnit};

use crate::Result;

/// How a source's watermark is derived: from column `column` of its batches, `delay_ns` behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    pub column: usize,
    pub delay_ns: i64,
}

/// Tracks one source's watermark.
#[derive(Debug)]
pub struct WatermarkTracker {
    spec: Option<WatermarkSpec>,
    watermark: i64,
    /// Rows seen with an event time (so the watermark means something).
    seen: bool,
    ended: bool,
    last_activity: Instant,
    pub late_rows: u64,
}

impl WatermarkTracker {
    pub fn new(spec: Option<WatermarkSpec>) -> Self {
        Self {
            spec,
            watermark: i64::MIN,
            seen: false,
            ended: false,
            last_activity: Instant::now(),
            late_rows: 0,
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn has_event_time(&self) -> bool {
        self.spec.is_some()
    }

    /// Drops late rows from `batch` and advances the watermark past the rest.
    pub fn observe(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        self.last_activity = Instant::now();
        let Some(spec) = self.spec else {
            return Ok(batch);
        };
        if batch.num_rows() == 0 {
            return Ok(batch);
        }
        let col = batch.column(spec.column);
        let ns_type = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let col = if col.data_type() == &ns_type {
            col.clone()
        } else {
            cast(col, &ns_type)?
        };
        let ts = col.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        let mut wm = self.watermark;
        let mut keep: Option<Vec<bool>> = None;
        for i in 0..ts.len() {
            let late = ts.is_null(i) || ts.value(i) < wm;
            if late {
                keep.get_or_insert_with(|| vec![true; ts.len()])[i] = false;
                self.late_rows += 1;
            } else {
                wm = wm.max(ts.value(i).saturating_sub(spec.delay_ns));
            }
        }
        self.seen = true;
        self.watermark = wm;
        match keep {
            None => Ok(batch),
            Some(k) => Ok(filter_record_batch(&batch, &BooleanArray::from(k))?),
        }
    }

    /// The source says no event before `event_time_ns` will follow.
    pub fn heartbeat(&mut self, event_time_ns: i64) {
        self.last_activity = Instant::now();
        if let Some(spec) = self.spec {
            self.seen = true;
            self.watermark = self
                .watermark
                .max(event_time_ns.saturating_sub(spec.delay_ns));
        }
    }

    pub fn end(&mut self) {
        self.ended = true;
        self.watermark = i64::MAX;
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The watermark this source contributes to its flows: `None` when it should not hold
    /// them back (it never produced a timed row and has been idle for `idle_timeout`). A source
    /// idle longer than `idle_timeout` advances with the wall clock from its last watermark.
    pub fn effective(&self, now: Instant, idle_timeout: Duration) -> Option<i64> {
        if self.ended {
            return Some(i64::MAX);
        }
        let idle_for = now.saturating_duration_since(self.last_activity);
        if idle_for < idle_timeout {
            return if self.seen {
                Some(self.watermark)
            } else {
                Some(i64::MIN)
            };
        }
        if !self.seen {
            return None;
        }
        Some(
            self.watermark
                .saturating_add(idle_for.as_nanos().min(i64::MAX as u128) as i64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(ts.to_vec())),
                Arc::new(Int64Array::from(ts.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn late_rows_are_decided_row_by_row() {
        let mut t = WatermarkTracker::new(Some(WatermarkSpec {
            column: 0,
            delay_ns: 10,
        }));
        // wm after 100 is 90; 95 is on time, 80 is late; after 120 wm is 110; 105 late.
        let out = t.observe(batch(&[100, 95, 80, 120, 105, 111])).unwrap();
        let v: Vec<i64> = out
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(v, vec![100, 95, 120, 111]);
        assert_eq!(t.late_rows, 2);
        assert_eq!(t.watermark(), 110);
        // Same rows in two batches: same result.
        let mut t2 = WatermarkTracker::new(Some(WatermarkSpec {
            column: 0,
            delay_ns: 10,
        }));
        let a = t2.observe(batch(&[100, 95, 80])).unwrap().num_rows();
        let b = t2.observe(batch(&[120, 105, 111])).unwrap().num_rows();
        assert_eq!((a + b, t2.late_rows), (4, 2));
    }

    #[test]
    fn idle_source_advances_with_wall_clock() {
        let mut t = WatermarkTracker::new(Some(WatermarkSpec {
            column: 0,
            delay_ns: 0,
        }));
        let now = Instant::now();
        assert_eq!(t.effective(now, Duration::from_secs(1)), Some(i64::MIN));
        assert_eq!(
            t.effective(now + Duration::from_secs(2), Duration::from_secs(1)),
            None
        );
        t.observe(batch(&[1_000])).unwrap();
        let later = t.last_activity + Duration::from_secs(3);
        assert_eq!(
            t.effective(later, Duration::from_secs(1)),
            Some(1_000 + 3_000_000_000)
        );
        t.end();
        assert_eq!(t.effective(later, Duration::from_secs(1)), Some(i64::MAX));
    }
}
