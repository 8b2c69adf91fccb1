//! Event-time window aggregation over **slices** shared by every window of the same slide.
//!
//! Rows fall into slices, one per slide (`t.div_euclid(slide)`), keyed by dictionary ids
//! ([`dict`]). A window is a run of consecutive slices ending at a slide boundary; its kind
//! ([`kind`]: `tumble`, `hop`, `cumulate`) says which. When the watermark passes a slice's end,
//! the slice is complete: every window of the operator gains it and loses the slices it no
//! longer reaches, and the windows ending there are emitted. Counts and integer sums are
//! running totals (subtract-on-evict), `count(DISTINCT)` keeps one entry per live (key, value)
//! pair, and other DataFusion aggregates merge their per-slice states ([`slices`]), so the cost
//! of a slide does not grow with `width / slide` for the first two.
//!
//! One operator computes every window of a query over the same rows, keys, event time and
//! slide ([`WindowAggregate::fuse`]): trends.sql's 5-minute and 65-minute windows read one set
//! of 1-minute slices. What the plan above does with a window's rows can be pushed into it: a
//! HAVING on its aggregates, an inner join on every key with another window of the operator
//! (only keys the other emitted), a per-window top-K ([`topk`]). State is bounded by the widest
//! window, charged to the pipeline's memory pool, and checkpointed ([`checkpoint`]).

mod checkpoint;
mod dict;
pub mod kind;
mod operator;
mod slices;
mod topk;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

pub use checkpoint::{STATE_LAYOUT, WindowCheckpoint};
pub use kind::{
    CUMULATE, HOP, KINDS, KindDef, TUMBLE, WindowKind, is_window_fn, kind_def, kind_names,
};
pub use operator::{WindowAggregate, WindowStats};

use crate::{Error, Result};

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
