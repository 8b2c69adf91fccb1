//! Event-time window aggregation over **slices** shared by every window of the same slide.
//!
//! Rows fall into slices, one per slide (`t.div_euclid(slide)`), keyed by dictionary ids
//! ([`dict`]). A window is a run of consecutive slices ending at a slide boundary; its kind
//! ([`kind`]: `tumble`, `hop`, `cumulate`) says which. When the watermark passes a slice's end,
//! the slice is complete: every window of the operator gains it and loses the slices it no
//! longer reaches, and the windows ending there are emitted. Counts and integer sums are
//! running totals (subtract-on-evict), `count(DISTINCT)` keeps one entry per live (key, value)
//! pair, `min`/`max` a monotonic deque per key, and any other DataFusion aggregate sparse
//! two-stacks of its per-slice states ([`slices`], [`stacks`]), so the cost of a slide does not
//! grow with `width / slide` for any of them.
//!
//! One operator computes every window of a query over the same rows, keys, event time and
//! slide ([`WindowAggregate::fuse`]): trends.sql's 5-minute and 65-minute windows read one set
//! of 1-minute slices. What the plan above does with a window's rows can be pushed into it: a
//! HAVING on its aggregates, an inner join on every key with another window of the operator
//! (only keys the other emitted), a per-window top-K ([`topk`]). State is bounded by the widest
//! window, charged to the pipeline's memory pool, and checkpointed ([`checkpoint`]).

mod checkpoint;
mod dict;
mod group;
pub mod kind;
mod operator;
mod session;
mod slices;
mod stacks;
mod topk;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

pub use checkpoint::{STATE_LAYOUT, SliceCheckpoint};
pub use kind::{
    CUMULATE, HOP, KINDS, KindDef, SESSION, TUMBLE, WindowKind, is_window_fn, kind_def, kind_names,
};
pub use operator::{SliceAggregate, WindowStats};
pub use session::{SessionAggregate, SessionCheckpoint};

use crate::{Error, Result};

/// A window operator: the slice operator for the kinds made of slides (tumble, hop,
/// cumulate), the session operator for sessions. The planner and the pipeline drive either
/// through this one type.
#[derive(Debug)]
pub enum WindowAggregate {
    Slices(Box<SliceAggregate>),
    Session(Box<SessionAggregate>),
}

/// What a checkpoint keeps of a window operator besides its arrays. Untagged: a slice
/// operator's state reads as it did before sessions existed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum WindowCheckpoint {
    Slices(SliceCheckpoint),
    Session(SessionCheckpoint),
}

/// Forwards a call to whichever operator it is.
macro_rules! either {
    ($self:expr, $w:ident => $e:expr) => {
        match $self {
            WindowAggregate::Slices($w) => $e,
            WindowAggregate::Session($w) => $e,
        }
    };
}

impl WindowAggregate {
    /// Builds the operator of a DataFusion aggregate grouping by a window function. Its first
    /// output has the aggregate's schema: group columns (the window as a
    /// `STRUCT<start, end>`) then aggregate values.
    pub fn try_new(agg: &AggregateExec) -> Result<Self> {
        let (group, kind) = group::Grouping::of(agg)?;
        Ok(match kind {
            WindowKind::Session { gap } => {
                Self::Session(Box::new(SessionAggregate::new(agg, group, gap)?))
            }
            _ => Self::Slices(Box::new(SliceAggregate::new(agg, group, kind)?)),
        })
    }

    /// What must match for two window operators to share slices (see
    /// [`SliceAggregate::slice_signature`]); sessions share nothing.
    pub fn slice_signature(&self) -> Option<String> {
        match self {
            Self::Slices(s) => Some(s.slice_signature()),
            Self::Session(_) => None,
        }
    }

    /// Takes over the windows of `other`, which has the same [`Self::slice_signature`].
    pub fn fuse(&mut self, other: WindowAggregate) -> Result<Vec<usize>> {
        match (self, other) {
            (Self::Slices(a), Self::Slices(b)) => a.fuse(*b),
            _ => Err(Error::plan("internal: only slice windows fuse")),
        }
    }

    pub fn remap_input(&mut self, map: &[usize], schema: &arrow::datatypes::Schema) -> Result<()> {
        either!(self, w => w.remap_input(map, schema))
    }

    /// Number of windows (outputs) the operator computes.
    pub fn outputs(&self) -> usize {
        match self {
            Self::Slices(s) => s.outputs(),
            Self::Session(_) => 1,
        }
    }

    /// Output `o` emits only the keys that pass `predicate` (a HAVING above the window).
    pub fn filter_emission(&mut self, o: usize, predicate: Arc<dyn PhysicalExpr>) {
        match self {
            Self::Slices(s) => s.filter_emission(o, predicate),
            Self::Session(s) => s.filter_emission(predicate),
        }
    }

    /// See [`SliceAggregate::restrict_emission`]; refused (false) for sessions.
    pub fn restrict_emission(&mut self, o: usize, by: usize) -> bool {
        match self {
            Self::Slices(s) => s.restrict_emission(o, by),
            Self::Session(_) => false,
        }
    }

    /// See [`SliceAggregate::limit_emission`]; sessions emit every row.
    pub fn limit_emission(&mut self, o: usize, column: usize, options: SortOptions, k: usize) {
        if let Self::Slices(s) = self {
            s.limit_emission(o, column, options, k);
        }
    }

    pub fn set_stop(&mut self, stop: crate::stop::StopHandle) {
        either!(self, w => w.set_stop(stop))
    }

    pub fn track_memory(
        &mut self,
        pool: &Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
        name: impl Into<String>,
    ) {
        either!(self, w => w.track_memory(pool, name))
    }

    /// The kind of output `o`'s window.
    pub fn kind(&self, o: usize) -> WindowKind {
        match self {
            Self::Slices(s) => s.kind(o),
            Self::Session(s) => s.kind(),
        }
    }

    /// How far apart window ends are at least, in ns: the slide (sessions: the gap).
    pub fn slide_ns(&self) -> i64 {
        match self {
            Self::Slices(s) => s.slide_ns(),
            Self::Session(s) => s.kind().slide_ns(),
        }
    }

    /// Whether one emitted batch holds the rows of exactly one window (slices), or of every
    /// session the watermark closed (sessions).
    pub fn one_window_per_batch(&self) -> bool {
        matches!(self, Self::Slices(_))
    }

    pub fn describe(&self) -> String {
        either!(self, w => w.describe())
    }

    pub fn describe_aggregates(&self, o: usize) -> String {
        match self {
            Self::Slices(s) => s.describe_aggregates(o),
            Self::Session(s) => s.describe_aggregates(),
        }
    }

    /// Position of the window column (`STRUCT<start, end>`) in output `o`.
    pub fn window_column(&self, o: usize) -> usize {
        match self {
            Self::Slices(s) => s.window_column(o),
            Self::Session(s) => s.window_column(),
        }
    }

    pub fn schema(&self, o: usize) -> arrow::datatypes::SchemaRef {
        match self {
            Self::Slices(s) => s.schema(o),
            Self::Session(s) => s.schema(),
        }
    }

    /// Number of group keys besides the window.
    pub fn key_count(&self) -> usize {
        either!(self, w => w.key_count())
    }

    pub fn stats(&self) -> WindowStats {
        either!(self, w => w.stats())
    }

    /// Adds a batch of input rows. Rows older than the watermark are dropped and counted.
    pub fn process(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        either!(self, w => w.process(batch))
    }

    /// Advances the watermark and returns what it completes, oldest first: each batch's
    /// window end (ns; for sessions the latest), output and rows. `i64::MAX` flushes all.
    pub fn advance(
        &mut self,
        watermark: i64,
    ) -> Result<Vec<(i64, usize, arrow::array::RecordBatch)>> {
        either!(self, w => w.advance(watermark))
    }

    /// The first window end still to emit (whatever the watermark), in ns, if any.
    pub fn next_end(&self) -> Option<i64> {
        either!(self, w => w.next_end())
    }

    pub fn snapshot(&mut self) -> Result<(WindowCheckpoint, Vec<arrow::array::RecordBatch>)> {
        Ok(match self {
            Self::Slices(s) => {
                let (c, b) = s.snapshot()?;
                (WindowCheckpoint::Slices(c), b)
            }
            Self::Session(s) => {
                let (c, b) = s.snapshot()?;
                (WindowCheckpoint::Session(c), b)
            }
        })
    }

    /// Replaces the operator's state with a snapshot of the same query.
    pub fn restore(
        &mut self,
        cp: &WindowCheckpoint,
        batches: &[arrow::array::RecordBatch],
    ) -> Result<()> {
        match (self, cp) {
            (Self::Slices(s), WindowCheckpoint::Slices(c)) => s.restore(c, batches),
            (Self::Session(s), WindowCheckpoint::Session(c)) => s.restore(c, batches),
            _ => Err(Error::plan(
                "the checkpoint does not match this query (its windows differ); start from a \
                 new checkpoint location",
            )),
        }
    }
}

/// Fields of the window value: `start` (inclusive) and `end` (exclusive).
pub fn window_fields() -> Fields {
    Fields::from(vec![
        Field::new("start", skystream_model::TIMESTAMP, false),
        Field::new("end", skystream_model::TIMESTAMP, false),
    ])
}

/// The type of the column a window function produces: `STRUCT<start, end>`.
pub fn window_type() -> DataType {
    DataType::Struct(window_fields())
}

/// A fixed interval literal in nanoseconds (months are rejected: their length varies).
pub fn interval_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000_000_000 + i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000_000_000 + i.milliseconds as i64 * 1_000_000)
        }
        ScalarValue::DurationNanosecond(Some(n)) => Some(*n),
        ScalarValue::DurationMicrosecond(Some(n)) => Some(n * 1_000),
        ScalarValue::DurationMillisecond(Some(n)) => Some(n * 1_000_000),
        ScalarValue::DurationSecond(Some(n)) => Some(n * 1_000_000_000),
        _ => None,
    }
}

/// If `expr` is a window function call, its kind and its event-time argument.
pub fn window_call(
    expr: &Arc<dyn PhysicalExpr>,
) -> Result<Option<(WindowKind, Arc<dyn PhysicalExpr>)>> {
    let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let Some(def) = kind_def(f.fun().name()) else {
        return Ok(None);
    };
    let args = f.args();
    if args.len() != def.args + 1 {
        return Err(Error::plan(format!(
            "internal: {}() lacks its event-time argument",
            def.name
        )));
    }
    let sizes = args[..def.args]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.downcast_ref::<Literal>()
                .and_then(|l| interval_ns(l.value()))
                .ok_or_else(|| {
                    Error::plan(format!(
                        "{}(): argument {} must be a constant interval",
                        def.name,
                        i + 1
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((def.build(&sizes)?, args[def.args].clone())))
}

/// Whether a physical aggregate groups by a window.
pub fn is_windowed(agg: &AggregateExec) -> bool {
    let inner = partial_of(agg);
    inner.group_expr().expr().iter().any(|(e, _)| {
        e.downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| is_window_fn(f.fun().name()))
    })
}

/// The aggregate whose expressions read raw input: the node itself, or the partial stage of a
/// partial/final pair.
fn partial_of(agg: &AggregateExec) -> &AggregateExec {
    if matches!(
        agg.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) && let Some(p) = agg.input().downcast_ref::<AggregateExec>()
    {
        return p;
    }
    agg
}

/// `expr` reading column `map[i]` of `schema` wherever it read column `i`.
pub fn remap_columns(
    expr: &Arc<dyn PhysicalExpr>,
    map: &[usize],
    schema: &arrow::datatypes::Schema,
) -> Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_expr::expressions::Column;
    Ok(expr
        .clone()
        .transform(|e| {
            let Some(c) = e.downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            let Some(&j) = map.get(c.index()) else {
                return datafusion::common::plan_err!("internal: column {c} has no new place");
            };
            let name = schema
                .fields()
                .get(j)
                .map_or(c.name(), |f| f.name().as_str());
            Ok(Transformed::yes(
                Arc::new(Column::new(name, j)) as Arc<dyn PhysicalExpr>
            ))
        })?
        .data)
}

/// The plan feeding a windowed aggregate's raw rows.
pub fn raw_input(agg: &AggregateExec) -> &Arc<dyn ExecutionPlan> {
    partial_of(agg).input()
}
