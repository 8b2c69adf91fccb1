//! Per-source event time: the watermark and late-row detection.
//!
//! The watermark of a source is the largest event time seen minus the declared bound
//! (`WATERMARK FOR ts AS ts - INTERVAL '5' SECOND`); for a source of several splits (Kafka
//! partitions) each split has its own and the source's is the lowest. A row whose event time is
//! below its split's watermark when it arrives is late: it is dropped and counted. Lateness is
//! decided row by row in arrival order within a split, so the result depends neither on how the
//! input was batched nor on how the splits interleave (a replay after a crash keeps the same
//! rows).

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

/// One split of a source (a Kafka partition; a single-stream source has one, split 0).
#[derive(Debug)]
struct Split {
    id: u32,
    /// Largest event time seen in this split minus the bound.
    watermark: i64,
    last_activity: Instant,
}

/// Tracks one source's watermark.
///
/// A source made of several splits (partitions) has one watermark per split; the source's
/// watermark is the lowest of them, so a partition that lags behind holds the stream back
/// instead of seeing its rows dropped as late. A split without input for the idle timeout
/// stops holding it back until it produces again. Splits a source announces
/// ([`WatermarkTracker::announce`]) hold the watermark back from the start, until they produce
/// or go idle.
#[derive(Debug)]
pub struct WatermarkTracker {
    spec: Option<WatermarkSpec>,
    idle_timeout: Duration,
    watermark: i64,
    splits: Vec<Split>,
    /// Rows seen with an event time (so the watermark means something).
    seen: bool,
    ended: bool,
    last_activity: Instant,
    pub late_rows: u64,
    /// Rows skipped because their event time was more than `max_ahead_ns` ahead of the wall
    /// clock.
    pub ahead_rows: u64,
    /// For sources whose event time is the wall clock's (a live feed): how far ahead of it an
    /// event may be. One event stamped in year 2262 would otherwise move the watermark there and
    /// every later event would be late.
    max_ahead_ns: Option<i64>,
}

impl WatermarkTracker {
    pub fn new(spec: Option<WatermarkSpec>, idle_timeout: Duration) -> Self {
        Self {
            spec,
            idle_timeout,
            watermark: i64::MIN,
            splits: Vec::new(),
            seen: false,
            ended: false,
            last_activity: Instant::now(),
            late_rows: 0,
            ahead_rows: 0,
            max_ahead_ns: None,
        }
    }

    /// Skips (and counts) rows whose event time is more than `max_ahead` ahead of the wall
    /// clock. For sources whose event time is wall-clock time; recorded and synthetic streams
    /// keep their own time.
    pub fn with_max_ahead(mut self, max_ahead: Option<Duration>) -> Self {
        self.max_ahead_ns = max_ahead.map(|d| d.as_nanos().min(i64::MAX as u128) as i64);
        self
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn has_event_time(&self) -> bool {
        self.spec.is_some()
    }

    fn split_index(&mut self, id: u32, now: Instant) -> usize {
        match self.splits.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                self.splits.push(Split {
                    id,
                    watermark: i64::MIN,
                    last_activity: now,
                });
                self.splits.len() - 1
            }
        }
    }

    /// The source will read these splits: each holds the watermark back until it has produced
    /// rows or has been idle for the idle timeout.
    pub fn announce(&mut self, ids: &[u32]) {
        let now = Instant::now();
        for &id in ids {
            let i = self.split_index(id, now);
            self.splits[i].last_activity = now;
        }
    }

    /// The lowest watermark of the splits that are not idle at `now`.
    fn lowest_active(&self, now: Instant) -> Option<i64> {
        self.splits
            .iter()
            .filter(|s| now.saturating_duration_since(s.last_activity) < self.idle_timeout)
            .map(|s| s.watermark)
            .min()
    }

    /// Drops late rows from `batch` (rows of split `split`) and advances the watermark past
    /// the rest.
    pub fn observe(&mut self, batch: RecordBatch, split: u32) -> Result<RecordBatch> {
        let now = Instant::now();
        self.last_activity = now;
        let Some(spec) = self.spec else {
            return Ok(batch);
        };
        let si = self.split_index(split, now);
        self.splits[si].last_activity = now;
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
        let single = self.splits.len() == 1;
        let mut keep: Option<Vec<bool>> = None;
        let too_far = self
            .max_ahead_ns
            .map(|a| crate::time::now_ns().saturating_add(a))
            .unwrap_or(i64::MAX);
        for i in 0..ts.len() {
            if ts.is_valid(i) && ts.value(i) > too_far {
                keep.get_or_insert_with(|| vec![true; ts.len()])[i] = false;
                self.ahead_rows += 1;
                if self.ahead_rows.is_power_of_two() {
                    tracing::warn!(
                        event_time = ts.value(i),
                        skipped = self.ahead_rows,
                        "skipping an event whose time is too far ahead of the wall clock"
                    );
                }
                continue;
            }
            // Judged against the row's own split: the splits' order within themselves is fixed
            // (Kafka keeps a partition's order), their interleaving is not, so the rows kept
            // do not depend on how partitions interleave and a replay keeps the same rows.
            // The source's watermark (the lowest split's) is never above an active split's, so
            // no kept row falls into a window already emitted; only after a split was idle can
            // one, and the window operator drops and counts it then.
            let late = ts.is_null(i) || ts.value(i) < self.splits[si].watermark;
            if late {
                keep.get_or_insert_with(|| vec![true; ts.len()])[i] = false;
                self.late_rows += 1;
                continue;
            }
            let candidate = ts.value(i).saturating_sub(spec.delay_ns);
            let split = &mut self.splits[si];
            if candidate > split.watermark {
                split.watermark = candidate;
                let lowest = if single {
                    Some(candidate)
                } else {
                    self.lowest_active(now)
                };
                if let Some(l) = lowest {
                    self.watermark = self.watermark.max(l);
                }
            }
        }
        self.seen = true;
        match keep {
            None => Ok(batch),
            Some(k) => Ok(filter_record_batch(&batch, &BooleanArray::from(k))?),
        }
    }

    /// The source says no event before `event_time_ns` will follow, in any split.
    pub fn heartbeat(&mut self, event_time_ns: i64) {
        let now = Instant::now();
        self.last_activity = now;
        if let Some(spec) = self.spec {
            self.seen = true;
            let wm = event_time_ns.saturating_sub(spec.delay_ns);
            self.watermark = self.watermark.max(wm);
            for s in &mut self.splits {
                s.watermark = s.watermark.max(wm);
                s.last_activity = now;
            }
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
    /// them back (it never produced a timed row and has been idle for the idle timeout). A
    /// source idle longer than that advances with the wall clock from its last watermark.
    pub fn effective(&mut self, now: Instant) -> Option<i64> {
        if self.ended {
            return Some(i64::MAX);
        }
        // Splits that went idle no longer hold the others back.
        if self.splits.len() > 1
            && let Some(l) = self.lowest_active(now)
        {
            self.watermark = self.watermark.max(l);
        }
        let idle_for = now.saturating_duration_since(self.last_activity);
        if idle_for < self.idle_timeout {
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

/// What a checkpoint keeps of a [`WatermarkTracker`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrackerCheckpoint {
    watermark: i64,
    /// Each split's id and watermark.
    splits: Vec<(u32, i64)>,
    seen: bool,
    late_rows: u64,
    #[serde(default)]
    ahead_rows: u64,
}

impl WatermarkTracker {
    pub fn snapshot(&self) -> TrackerCheckpoint {
        let splits: Vec<(u32, i64)> = self.splits.iter().map(|s| (s.id, s.watermark)).collect();
        // After the end of a finite input the watermark is "infinity"; a restored pipeline
        // reads on from its position, so it resumes from the event-time watermark instead.
        let watermark = if self.ended {
            splits.iter().map(|s| s.1).max().unwrap_or(i64::MIN)
        } else {
            self.watermark
        };
        TrackerCheckpoint {
            watermark,
            splits,
            seen: self.seen,
            late_rows: self.late_rows,
            ahead_rows: self.ahead_rows,
        }
    }

    /// Resumes from a snapshot (splits count as active from now).
    pub fn restore(&mut self, cp: &TrackerCheckpoint) {
        let now = Instant::now();
        self.watermark = cp.watermark;
        self.splits = cp
            .splits
            .iter()
            .map(|&(id, watermark)| Split {
                id,
                watermark,
                last_activity: now,
            })
            .collect();
        self.seen = cp.seen;
        self.late_rows = cp.late_rows;
        self.ahead_rows = cp.ahead_rows;
        self.last_activity = now;
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
        let mut t = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 10,
            }),
            Duration::from_secs(60),
        );
        // wm after 100 is 90; 95 is on time, 80 is late; after 120 wm is 110; 105 late.
        let out = t.observe(batch(&[100, 95, 80, 120, 105, 111]), 0).unwrap();
        let v: Vec<i64> = out
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(v, vec![100, 95, 120, 111]);
        assert_eq!(t.late_rows, 2);
        assert_eq!(t.watermark(), 110);
        // Same rows in two batches: same result.
        let mut t2 = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 10,
            }),
            Duration::from_secs(60),
        );
        let a = t2.observe(batch(&[100, 95, 80]), 0).unwrap().num_rows();
        let b = t2.observe(batch(&[120, 105, 111]), 0).unwrap().num_rows();
        assert_eq!((a + b, t2.late_rows), (4, 2));
    }

    #[test]
    fn idle_source_advances_with_wall_clock() {
        let mut t = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 0,
            }),
            Duration::from_secs(1),
        );
        let now = Instant::now();
        assert_eq!(t.effective(now), Some(i64::MIN));
        assert_eq!(t.effective(now + Duration::from_secs(2)), None);
        t.observe(batch(&[1_000]), 0).unwrap();
        let later = t.last_activity + Duration::from_secs(3);
        assert_eq!(t.effective(later), Some(1_000 + 3_000_000_000));
        t.end();
        assert_eq!(t.effective(later), Some(i64::MAX));
    }

    fn rows(out: &RecordBatch) -> Vec<i64> {
        out.column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let mut t = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 0,
            }),
            Duration::from_secs(60),
        );
        t.announce(&[0, 1]);
        // Partition 0 runs ahead; partition 1 has produced nothing yet: nothing is late.
        assert_eq!(rows(&t.observe(batch(&[100, 200]), 0).unwrap()), [100, 200]);
        assert_eq!(t.watermark(), i64::MIN);
        // Partition 1's older rows are on time; the watermark is now partition 1's.
        assert_eq!(rows(&t.observe(batch(&[50, 60]), 1).unwrap()), [50, 60]);
        assert_eq!(t.watermark(), 60);
        // Below its own partition's watermark is late.
        assert_eq!(rows(&t.observe(batch(&[55, 250]), 0).unwrap()), [250]);
        assert_eq!(t.late_rows, 1);
        assert_eq!(rows(&t.observe(batch(&[300]), 1).unwrap()), [300]);
        assert_eq!(t.watermark(), 250);
    }

    #[test]
    fn late_rows_do_not_depend_on_how_partitions_interleave() {
        // Partition 0 is out of order by 15 (bound 10): 85 is late after 100 in either order,
        // even when partition 1 lags so far that the source's watermark is still below 85.
        let kept = |order: &[(u32, &[i64])]| {
            let mut t = WatermarkTracker::new(
                Some(WatermarkSpec {
                    column: 0,
                    delay_ns: 10,
                }),
                Duration::from_secs(60),
            );
            t.announce(&[0, 1]);
            let mut all: Vec<(u32, i64)> = Vec::new();
            for &(split, ts) in order {
                let out = t.observe(batch(ts), split).unwrap();
                all.extend(rows(&out).into_iter().map(|v| (split, v)));
            }
            all.sort();
            (all, t.late_rows)
        };
        let a = kept(&[(1, &[50]), (0, &[100, 85]), (1, &[200])]);
        let b = kept(&[(1, &[50]), (1, &[200]), (0, &[100, 85])]);
        assert_eq!(a, b);
        assert_eq!(a, (vec![(0, 100), (1, 50), (1, 200)], 1));
    }

    #[test]
    fn events_far_ahead_of_the_wall_clock_are_skipped() {
        let mut t = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 10,
            }),
            Duration::from_secs(60),
        )
        .with_max_ahead(Some(Duration::from_secs(600)));
        let now = crate::time::now_ns();
        let out = t.observe(batch(&[now - 5, i64::MAX, now, now + 1_000_000_000]), 0);
        assert_eq!(rows(&out.unwrap()), [now - 5, now, now + 1_000_000_000]);
        assert_eq!((t.ahead_rows, t.late_rows), (1, 0));
        assert_eq!(t.watermark(), now + 1_000_000_000 - 10);
        // Without a bound (a recorded stream), the same row is kept.
        let mut u = WatermarkTracker::new(t.spec, Duration::from_secs(60));
        assert_eq!(u.observe(batch(&[i64::MAX]), 0).unwrap().num_rows(), 1);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark() {
        let mut t = WatermarkTracker::new(
            Some(WatermarkSpec {
                column: 0,
                delay_ns: 0,
            }),
            Duration::from_millis(50),
        );
        t.announce(&[0, 1]);
        t.observe(batch(&[100]), 1).unwrap();
        t.observe(batch(&[500]), 0).unwrap();
        assert_eq!(t.watermark(), 100);
        std::thread::sleep(Duration::from_millis(60));
        // Partition 1 is idle now; partition 0 alone decides once it speaks again.
        t.observe(batch(&[600]), 0).unwrap();
        assert_eq!(t.watermark(), 600);
        assert_eq!(t.effective(Instant::now()), Some(600));
    }
}
