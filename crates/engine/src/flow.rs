//! A flow: the rows of one `INSERT INTO`, from sources into a sink.
//!
//! ```text
//!   sources ──► heads ──► windows ──► after ──► sink
//! ```
//!
//! * A **head** is a DataFusion plan over source feeds (projection, filter, UNNEST, functions),
//!   run on each source batch it reads.
//! * A **window stage** ([`WindowAggregate`]) aggregates one head's rows into slices and emits
//!   each of its windows, complete, when the watermark passes its end. Windows over the same
//!   head, keys and slide are one stage (they share its slices); several stages may read the
//!   same head (their input is computed once).
//! * **after** is a DataFusion plan run once per window end over the rows every window emitted
//!   for that end (one feed per window): HAVING, ranking, scoring, and joins of windowed
//!   results. The windows of a flow slide alike, so their ends coincide.
//!
//! A flow without windows is one head whose rows go to the sink; a flow with one window and
//! nothing after it sends the window's rows to the sink as they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use crate::checkpoint::FlowCheckpoint;
use crate::exec::run_plan;
use crate::feed::Feed;
use crate::metrics::OperatorCounters;
use crate::window::WindowAggregate;
use crate::{Error, Result};

/// Window ends a flow emits in one step of [`Flow::advance`].
const STEP_ENDS: i64 = 64;

/// A plan reading a flow's sources.
pub struct Head {
    /// Source index and the feed of the plan that reads it.
    pub inputs: Vec<(usize, Arc<Feed>)>,
    pub plan: Arc<dyn ExecutionPlan>,
}

/// A window operator of a flow.
pub struct WindowStage {
    /// The head whose rows it aggregates.
    pub head: usize,
    pub op: Box<WindowAggregate>,
    /// Per window of the operator, the feed of the `after` plan it goes into (`None`: the
    /// flow has no such plan).
    pub outputs: Vec<Option<Arc<Feed>>>,
}

/// See the module documentation.
pub struct Flow {
    pub name: String,
    pub heads: Vec<Head>,
    pub windows: Vec<WindowStage>,
    pub after: Option<Arc<dyn ExecutionPlan>>,
    /// The sinks its rows go to (INSERTs of the same rows share a flow).
    pub sinks: Vec<usize>,
    watermark: i64,
    /// One per head, per window, for `after` (if any), then one per sink.
    counters: Vec<Arc<OperatorCounters>>,
}

impl Flow {
    /// Checks the shape described in the module documentation.
    pub fn new(
        name: impl Into<String>,
        heads: Vec<Head>,
        windows: Vec<WindowStage>,
        after: Option<Arc<dyn ExecutionPlan>>,
        sinks: Vec<usize>,
    ) -> Result<Self> {
        let name = name.into();
        let bad = |what: &str| Err(Error::plan(format!("internal: flow '{name}': {what}")));
        if heads.is_empty() {
            return bad("no head");
        }
        if sinks.is_empty() {
            return bad("no sink");
        }
        if windows.iter().any(|w| w.head >= heads.len()) {
            return bad("a window reads no head");
        }
        if windows.iter().any(|w| w.outputs.len() != w.op.outputs()) {
            return bad("a window stage's outputs do not match its windows");
        }
        let n_windows: usize = windows.iter().map(|w| w.outputs.len()).sum();
        match (&after, n_windows) {
            (_, 0) if heads.len() != 1 || after.is_some() => {
                return bad("without windows a flow is one plan");
            }
            (None, n) if n > 1 => return bad("several windows need a plan after them"),
            (Some(_), _) if windows.iter().flat_map(|w| &w.outputs).any(Option::is_none) => {
                return bad("a window feeds nothing");
            }
            _ => {}
        }
        if let Some(first) = windows.first() {
            let slide = first.op.slide_ns();
            if windows.iter().any(|w| w.op.slide_ns() != slide) {
                return Err(Error::plan(
                    "the windows of one query must slide by the same interval (their results are combined per window end)",
                ));
            }
        }
        let n = heads.len() + windows.len() + usize::from(after.is_some()) + sinks.len();
        Ok(Self {
            name,
            heads,
            windows,
            after,
            sinks,
            watermark: i64::MIN,
            counters: (0..n).map(|_| Arc::default()).collect(),
        })
    }

    /// Counters position of window `i`.
    fn window_pos(&self, i: usize) -> usize {
        self.heads.len() + i
    }

    /// Whether the flow reads source `source`.
    pub fn reads(&self, source: usize) -> bool {
        self.sources().any(|s| s == source)
    }

    /// The sources the flow reads (with repeats).
    pub fn sources(&self) -> impl Iterator<Item = usize> + '_ {
        self.heads
            .iter()
            .flat_map(|h| h.inputs.iter().map(|(s, _)| *s))
    }

    /// Names of the window operators, as [`Flow::operators`] gives them, in order.
    pub fn window_names(&self) -> Vec<String> {
        (0..self.windows.len())
            .map(|i| format!("{}:window", self.window_pos(i)))
            .collect()
    }

    pub(crate) fn window_ops_mut(&mut self) -> impl Iterator<Item = &mut WindowAggregate> {
        self.windows.iter_mut().map(|w| w.op.as_mut())
    }

    /// Counts rows written to each sink.
    pub(crate) fn count_sinks(&self, out: &[RecordBatch]) {
        let n = rows(out);
        for c in &self.counters[self.counters.len() - self.sinks.len()..] {
            c.count(n, n);
        }
    }

    /// The flow's operators, named `{position}:{kind}`, with their counters.
    pub(crate) fn operators(&self) -> Vec<(String, Arc<OperatorCounters>)> {
        let mut names: Vec<String> = self
            .heads
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{i}:{}", h.plan.name()))
            .collect();
        names.extend(self.window_names());
        if let Some(p) = &self.after {
            names.push(format!("{}:{}", names.len(), p.name()));
        }
        for _ in &self.sinks {
            names.push(format!("{}:sink", names.len()));
        }
        names
            .into_iter()
            .zip(self.counters.iter().cloned())
            .collect()
    }

    /// A copy of the flow's heads that can run on another thread ([`run_heads`]).
    pub(crate) fn fork_heads(&self) -> Result<Vec<Head>> {
        self.heads
            .iter()
            .map(|h| {
                let (plan, feeds) = crate::feed::fork_plan(&h.plan)?;
                let inputs = h
                    .inputs
                    .iter()
                    .map(|(s, f)| {
                        let fork = feeds
                            .iter()
                            .find(|(orig, _)| Arc::ptr_eq(orig, f))
                            .map(|(_, fork)| fork.clone())
                            .ok_or_else(|| {
                                Error::plan("internal: a head input is not in its plan")
                            })?;
                        Ok((*s, fork))
                    })
                    .collect::<Result<_>>()?;
                Ok(Head { inputs, plan })
            })
            .collect()
    }

    /// Takes the rows the heads computed from one batch of `in_rows` source rows
    /// ([`run_heads`]): into the windows, or (a flow without windows) back for the sink.
    pub(crate) fn apply(
        &mut self,
        in_rows: usize,
        outs: Vec<(usize, Vec<RecordBatch>)>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for (h, data) in outs {
            self.counters[h].count(in_rows, rows(&data));
            if self.windows.is_empty() {
                out.extend(data);
                continue;
            }
            for i in 0..self.windows.len() {
                if self.windows[i].head != h {
                    continue;
                }
                for b in &data {
                    self.windows[i].op.process(b)?;
                }
                let pos = self.window_pos(i);
                self.counters[pos].count(rows(&data), 0);
            }
        }
        Ok(out)
    }

    /// Whether the windows have yet to reach watermark `wm` (see [`Flow::advance`]).
    pub(crate) fn behind(&self, wm: i64) -> bool {
        wm > self.watermark
    }

    /// Advances the windows towards `wm` by one step of at most [`STEP_ENDS`] window ends;
    /// returns what the windows it completes yield, one batch per window end, oldest first.
    /// Call again while [`Flow::behind`]: a watermark that jumps far (the end of the input, a
    /// source idle for long) emits its windows a step at a time instead of all at once.
    pub(crate) fn advance(&mut self, wm: i64, ctx: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        if wm <= self.watermark {
            return Ok(Vec::new());
        }
        // The windows of a flow slide alike: a step ends STEP_ENDS slides after the first end
        // any window still has to emit (gaps without any window are skipped).
        let slide = self.windows.iter().map(|w| w.op.slide_ns()).min();
        let next = self.windows.iter().filter_map(|w| w.op.next_end()).min();
        let wm = match (slide, next) {
            (Some(slide), Some(next)) if next < wm => {
                wm.min(next.saturating_add(slide.saturating_mul(STEP_ENDS - 1)))
            }
            _ => wm,
        };
        self.watermark = wm;
        let mut by_end: BTreeMap<i64, Vec<(usize, usize, RecordBatch)>> = BTreeMap::new();
        for i in 0..self.windows.len() {
            let emitted = self.windows[i].op.advance(wm)?;
            let pos = self.window_pos(i);
            for (end, o, b) in emitted {
                self.counters[pos].count(0, b.num_rows());
                by_end.entry(end).or_default().push((i, o, b));
            }
        }
        let mut out = Vec::with_capacity(by_end.len());
        for (_, parts) in by_end {
            let Some(plan) = &self.after else {
                out.extend(parts.into_iter().map(|(_, _, b)| b));
                continue;
            };
            // The plan after slice windows sees the rows of exactly one window end (the
            // planner relies on it, see `scope_topk_to_window`), and the rows of one window
            // reach the sink in one batch (sinks that replace a window's rows as a whole, like
            // Redis rankings, rely on it). Sessions closed by one step come as one batch.
            let mut n_in = 0;
            for (i, o, b) in &parts {
                if let Some(feed) = &self.windows[*i].outputs[*o] {
                    feed.push(b)?;
                    n_in += b.num_rows();
                }
            }
            let data = run_plan(plan, ctx)?;
            let pos = self.heads.len() + self.windows.len();
            self.counters[pos].count(n_in, rows(&data));
            match data.len() {
                0 => {}
                1 => out.extend(data),
                _ => out.push(arrow::compute::concat_batches(&data[0].schema(), &data)?),
            }
        }
        Ok(out)
    }

    pub(crate) fn snapshot(&mut self, blobs: &mut Vec<RecordBatch>) -> Result<FlowCheckpoint> {
        let mut windows = Vec::new();
        for w in self.window_ops_mut() {
            let (meta, batches) = w.snapshot()?;
            let ids = (blobs.len()..blobs.len() + batches.len()).collect();
            blobs.extend(batches);
            windows.push((meta, ids));
        }
        Ok(FlowCheckpoint {
            name: self.name.clone(),
            watermark: self.watermark,
            windows,
        })
    }

    pub(crate) fn restore(&mut self, cp: &FlowCheckpoint, blobs: &[RecordBatch]) -> Result<()> {
        if cp.windows.len() != self.windows.len() {
            return Err(Error::plan(format!(
                "the checkpoint does not match flow '{}' (it has {} windows, the flow {})",
                self.name,
                cp.windows.len(),
                self.windows.len()
            )));
        }
        for (w, (meta, ids)) in self.windows.iter_mut().zip(&cp.windows) {
            let batches = ids
                .iter()
                .map(|&i| {
                    blobs
                        .get(i)
                        .cloned()
                        .ok_or_else(|| Error::plan("checkpoint: missing window state"))
                })
                .collect::<Result<Vec<_>>>()?;
            w.op.restore(meta, &batches)?;
        }
        self.watermark = cp.watermark;
        Ok(())
    }

    /// Windows emitted, late rows, open panes and state bytes of the flow's window operators.
    pub(crate) fn window_stats(&self) -> [u64; 4] {
        self.windows.iter().fold([0; 4], |acc, w| {
            let st = w.op.stats();
            [
                acc[0] + st.windows_emitted,
                acc[1] + st.late_rows,
                acc[2] + st.open_panes as u64,
                acc[3] + st.memory_bytes as u64,
            ]
        })
    }
}

/// Runs the heads (of a flow, or a fork of them) that read source `source` on `batch`: what
/// each computed, by head. Heads are stateless, so forks may run batches on other threads;
/// [`Flow::apply`] then takes the results in input order.
pub(crate) fn run_heads(
    heads: &[Head],
    source: usize,
    batch: &RecordBatch,
    ctx: &Arc<TaskContext>,
) -> Result<Vec<(usize, Vec<RecordBatch>)>> {
    let mut outs = Vec::new();
    for (h, head) in heads.iter().enumerate() {
        let mut fed = false;
        for (s, feed) in &head.inputs {
            if *s == source {
                feed.push(batch)?;
                fed = true;
            }
        }
        if fed {
            outs.push((h, run_plan(&head.plan, ctx)?));
        }
    }
    Ok(outs)
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
