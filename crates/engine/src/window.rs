//! Event-time window aggregation over DataFusion accumulators.
//!
//! `hop(slide, width)` and `tumble(width)` (a hop whose slide is its width) are computed from
//! **panes**: one pane per slide holds the partial aggregate state of the rows whose event time
//! falls in it, in DataFusion [`GroupsAccumulator`]s keyed by DataFusion [`GroupValues`]. When
//! the watermark passes a pane's end, the pane is frozen into its state arrays; when it passes
//! a window's end, the window's `width / slide` frozen panes are merged (`merge_batch`) and
//! evaluated. A pane is freed once the last window containing it has been emitted, so state is
//! bounded by the window width. Raw rows are never kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StructArray, TimestampNanosecondArray,
    UInt32Array,
};
use arrow::compute::{cast, filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

use crate::{Error, Result};

/// Name of the sliding-window function: `hop(slide, width)`.
pub const HOP: &str = "hop";
/// Name of the tumbling-window function: `tumble(width)`.
pub const TUMBLE: &str = "tumble";

/// Fields of the window value: `start` (inclusive) and `end` (exclusive).
pub fn window_fields() -> Fields {
    Fields::from(vec![
        Field::new("start", skystream_model::TIMESTAMP, false),
        Field::new("end", skystream_model::TIMESTAMP, false),
    ])
}

/// The type of the column `hop(...)` / `tumble(...)` produce: `STRUCT<start, end>`.
pub fn window_type() -> DataType {
    DataType::Struct(window_fields())
}

/// Width and slide of a window, in nanoseconds. A tumbling window has `slide == width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub slide_ns: i64,
    pub width_ns: i64,
}

impl WindowSpec {
    pub fn new(slide_ns: i64, width_ns: i64) -> Result<Self> {
        if slide_ns <= 0 || width_ns <= 0 {
            return Err(Error::plan("window width and slide must be positive"));
        }
        if width_ns % slide_ns != 0 {
            return Err(Error::plan(format!(
                "window width ({}) must be a multiple of its slide ({})",
                fmt_ns(width_ns),
                fmt_ns(slide_ns)
            )));
        }
        Ok(Self { slide_ns, width_ns })
    }

    fn panes_per_window(&self) -> i64 {
        self.width_ns / self.slide_ns
    }
}

fn fmt_ns(ns: i64) -> String {
    format!("{}s", ns as f64 / 1e9)
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

/// If `expr` is a `hop`/`tumble` call, its spec and its event-time argument.
pub fn window_call(
    expr: &Arc<dyn PhysicalExpr>,
) -> Result<Option<(WindowSpec, Arc<dyn PhysicalExpr>)>> {
    let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let name = f.fun().name();
    let args = f.args();
    let lit = |i: usize| -> Result<i64> {
        args.get(i)
            .and_then(|a| a.downcast_ref::<Literal>())
            .and_then(|l| interval_ns(l.value()))
            .ok_or_else(|| {
                Error::plan(format!(
                    "{name}(): argument {} must be a constant interval",
                    i + 1
                ))
            })
    };
    let spec = match name {
        HOP if args.len() == 3 => WindowSpec::new(lit(0)?, lit(1)?)?,
        TUMBLE if args.len() == 2 => {
            let w = lit(0)?;
            WindowSpec::new(w, w)?
        }
        HOP | TUMBLE => {
            return Err(Error::plan(format!(
                "internal: {name}() lacks its event-time argument"
            )));
        }
        _ => return Ok(None),
    };
    Ok(Some((spec, args[args.len() - 1].clone())))
}

/// Whether a physical aggregate groups by a window.
pub fn is_windowed(agg: &AggregateExec) -> bool {
    let inner = partial_of(agg);
    inner.group_expr().expr().iter().any(|(e, _)| {
        e.downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| matches!(f.fun().name(), HOP | TUMBLE))
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

struct Agg {
    expr: Arc<AggregateFunctionExpr>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

impl Agg {
    fn accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        if self.expr.groups_accumulator_supported() {
            Ok(self.expr.create_groups_accumulator()?)
        } else {
            let e = self.expr.clone();
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                e.create_accumulator()
            })))
        }
    }
}

/// One slide's worth of partial state.
enum Pane {
    Open {
        groups: Box<dyn GroupValues>,
        accs: Vec<Box<dyn GroupsAccumulator>>,
        ids: Vec<usize>,
    },
    Frozen {
        keys: Vec<ArrayRef>,
        states: Vec<Vec<ArrayRef>>,
    },
}

/// Statistics of a window operator.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    pub windows_emitted: u64,
    pub rows_emitted: u64,
    pub late_rows: u64,
    pub open_panes: usize,
}

/// A streaming `GROUP BY key..., hop(...)` operator (see the module docs).
pub struct WindowAggregate {
    spec: WindowSpec,
    ts_expr: Arc<dyn PhysicalExpr>,
    /// Non-window group expressions, in group order.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Position of the window among the group columns.
    window_pos: usize,
    key_schema: SchemaRef,
    aggs: Vec<Agg>,
    output_schema: SchemaRef,
    panes: BTreeMap<i64, Pane>,
    /// Windows ending at or before this have been emitted.
    emitted_through: i64,
    watermark: i64,
    stats: WindowStats,
}

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("spec", &self.spec)
            .field("panes", &self.panes.len())
            .finish()
    }
}

impl WindowAggregate {
    /// Builds the operator from a DataFusion aggregate grouping by `hop`/`tumble`. Its output
    /// has the aggregate's schema: group columns (the window as a `STRUCT<start, end>`) then
    /// aggregate values.
    pub fn try_new(agg: &AggregateExec) -> Result<Self> {
        let output_schema = agg.schema();
        let inner = partial_of(agg);
        let group_by = inner.group_expr();
        if !group_by.is_single() {
            return Err(Error::plan(
                "GROUPING SETS, CUBE and ROLLUP are not supported with windows",
            ));
        }
        let input_schema = inner.input_schema();
        let mut window = None;
        let mut keys = Vec::new();
        let mut key_fields = Vec::new();
        for (i, (e, name)) in group_by.expr().iter().enumerate() {
            if let Some(w) = window_call(e)? {
                if window.is_some() {
                    return Err(Error::plan(
                        "a GROUP BY may hold only one window (hop or tumble)",
                    ));
                }
                window = Some((i, w));
            } else {
                keys.push(e.clone());
                key_fields.push(Field::new(
                    name,
                    e.data_type(&input_schema)?,
                    e.nullable(&input_schema)?,
                ));
            }
        }
        let Some((window_pos, (spec, ts_expr))) = window else {
            return Err(Error::plan("internal: aggregate has no window"));
        };
        let aggs = inner
            .aggr_expr()
            .iter()
            .zip(inner.filter_expr())
            .map(|(a, f)| Agg {
                expr: a.clone(),
                args: a.expressions(),
                filter: f.clone(),
            })
            .collect();
        Ok(Self {
            spec,
            ts_expr,
            keys,
            window_pos,
            key_schema: Arc::new(Schema::new(key_fields)),
            aggs,
            output_schema,
            panes: BTreeMap::new(),
            emitted_through: i64::MIN,
            watermark: i64::MIN,
            stats: WindowStats::default(),
        })
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    pub fn schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats {
            open_panes: self.panes.len(),
            ..self.stats
        }
    }

    fn new_pane(&self) -> Result<Pane> {
        let groups = if self.key_schema.fields().is_empty() {
            new_group_values(
                Arc::new(Schema::new(vec![Field::new("_", DataType::Boolean, true)])),
                &GroupOrdering::None,
            )?
        } else {
            new_group_values(self.key_schema.clone(), &GroupOrdering::None)?
        };
        let accs = self
            .aggs
            .iter()
            .map(Agg::accumulator)
            .collect::<Result<_>>()?;
        Ok(Pane::Open {
            groups,
            accs,
            ids: Vec::new(),
        })
    }

    /// Group key columns for `n` rows (a constant column when the only key is the window).
    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.keys.is_empty() {
            return Ok(vec![Arc::new(BooleanArray::from(vec![
                true;
                batch.num_rows()
            ]))]);
        }
        self.keys
            .iter()
            .map(|k| Ok(k.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect()
    }

    /// Adds a batch of input rows. Rows older than the watermark are dropped and counted.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = self.ts_expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let ts = if ts.data_type() == &DataType::Timestamp(TimeUnit::Nanosecond, None) {
            ts
        } else {
            cast(&ts, &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        };
        let ts: &TimestampNanosecondArray = ts.as_primitive();
        // Late (or timeless) rows are dropped here and counted.
        let mut batch = batch.clone();
        let mut ts = ts.clone();
        let wm = self.watermark;
        let late = ts.null_count()
            + ts.iter()
                .filter(|t| matches!(t, Some(t) if *t < wm))
                .count();
        if late > 0 {
            let keep: BooleanArray = ts
                .iter()
                .map(|t| Some(matches!(t, Some(t) if t >= wm)))
                .collect();
            batch = filter_record_batch(&batch, &keep)?;
            ts = arrow::compute::filter(&ts, &keep)?.as_primitive().clone();
            self.stats.late_rows += late as u64;
            if batch.num_rows() == 0 {
                return Ok(());
            }
        }
        let slide = self.spec.slide_ns;
        let values = ts.values();
        let first = values[0].div_euclid(slide);
        if values.iter().all(|t| t.div_euclid(slide) == first) {
            return self.update_pane(first, &batch);
        }
        // Rows of several panes: split them by pane.
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, t) in values.iter().enumerate() {
            by_pane
                .entry(t.div_euclid(slide))
                .or_default()
                .push(i as u32);
        }
        for (pane, idx) in by_pane {
            let idx = UInt32Array::from(idx);
            let cols = batch
                .columns()
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(batch.schema(), cols)?;
            self.update_pane(pane, &part)?;
        }
        Ok(())
    }

    fn update_pane(&mut self, pane: i64, batch: &RecordBatch) -> Result<()> {
        let keys = self.key_columns(batch)?;
        let n = batch.num_rows();
        let args: Vec<Vec<ArrayRef>> = self
            .aggs
            .iter()
            .map(|a| {
                a.args
                    .iter()
                    .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let filters: Vec<Option<BooleanArray>> = self
            .aggs
            .iter()
            .map(|a| {
                a.filter
                    .as_ref()
                    .map(|f| -> Result<BooleanArray> {
                        Ok(f.evaluate(batch)?.into_array(n)?.as_boolean().clone())
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        if !self.panes.contains_key(&pane) {
            let p = self.new_pane()?;
            self.panes.insert(pane, p);
        }
        let Some(Pane::Open { groups, accs, ids }) = self.panes.get_mut(&pane) else {
            return Err(Error::plan("internal: row for a frozen pane"));
        };
        groups.intern(&keys, ids)?;
        let total = groups.len();
        for ((acc, a), f) in accs.iter_mut().zip(&args).zip(&filters) {
            acc.update_batch(a, ids, f.as_ref(), total)?;
        }
        Ok(())
    }

    /// Advances the watermark and returns the windows it completes, oldest first, one batch per
    /// window. `i64::MAX` flushes every window.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let slide = self.spec.slide_ns;
        let n = self.spec.panes_per_window();
        // Freeze every pane that can no longer change.
        let mut out = Vec::new();
        if n > 1 {
            for (&p, pane) in self.panes.iter_mut() {
                let end = (p + 1).saturating_mul(slide);
                if end > watermark {
                    break;
                }
                if let Pane::Open { groups, accs, .. } = pane {
                    let keys = groups.emit(EmitTo::All)?;
                    let states = accs
                        .iter_mut()
                        .map(|a| a.state(EmitTo::All))
                        .collect::<Result<Vec<_>, _>>()?;
                    *pane = Pane::Frozen { keys, states };
                }
            }
        }
        // Window ends to emit: those of every pane's windows, up to the watermark.
        let mut ends: Vec<i64> = Vec::new();
        for &p in self.panes.keys() {
            for k in 1..=n {
                let end = (p + k).saturating_mul(slide);
                if end > self.emitted_through && end <= watermark {
                    ends.push(end);
                }
            }
        }
        ends.sort_unstable();
        ends.dedup();
        for end in ends {
            if let Some(b) = self.emit_window(end)? {
                out.push(b);
            }
            self.emitted_through = end;
        }
        let aligned = if watermark == i64::MAX {
            i64::MAX
        } else {
            watermark.div_euclid(slide) * slide
        };
        self.emitted_through = self.emitted_through.max(aligned);
        // Free panes whose last window has been emitted.
        let width = self.spec.width_ns;
        let through = self.emitted_through;
        self.panes
            .retain(|&p, _| p.saturating_mul(slide).saturating_add(width) > through);
        Ok(out)
    }

    fn emit_window(&mut self, end: i64) -> Result<Option<RecordBatch>> {
        let slide = self.spec.slide_ns;
        let n = self.spec.panes_per_window();
        let last = end / slide - 1;
        let first = last - n + 1;
        let (keys, values) = if n == 1 {
            // Tumbling: the pane is the window.
            let Some(pane) = self.panes.remove(&last) else {
                return Ok(None);
            };
            match pane {
                Pane::Open {
                    mut groups,
                    mut accs,
                    ..
                } => {
                    if groups.is_empty() {
                        return Ok(None);
                    }
                    let keys = groups.emit(EmitTo::All)?;
                    let values = accs
                        .iter_mut()
                        .map(|a| a.evaluate(EmitTo::All))
                        .collect::<Result<Vec<_>, _>>()?;
                    (keys, values)
                }
                Pane::Frozen { .. } => return Err(Error::plan("internal: frozen tumbling pane")),
            }
        } else {
            let mut groups = match self.new_pane()? {
                Pane::Open { groups, .. } => groups,
                Pane::Frozen { .. } => unreachable!(),
            };
            let mut accs: Vec<Box<dyn GroupsAccumulator>> = self
                .aggs
                .iter()
                .map(Agg::accumulator)
                .collect::<Result<_>>()?;
            let mut ids = Vec::new();
            for (_, pane) in self.panes.range(first..=last) {
                let Pane::Frozen { keys, states } = pane else {
                    return Err(Error::plan("internal: merging an open pane"));
                };
                if keys.first().is_none_or(|k| k.is_empty()) {
                    continue;
                }
                groups.intern(keys, &mut ids)?;
                let total = groups.len();
                for (acc, s) in accs.iter_mut().zip(states) {
                    acc.merge_batch(s, &ids, total)?;
                }
            }
            if groups.is_empty() {
                return Ok(None);
            }
            let keys = groups.emit(EmitTo::All)?;
            let values = accs
                .iter_mut()
                .map(|a| a.evaluate(EmitTo::All))
                .collect::<Result<Vec<_>, _>>()?;
            (keys, values)
        };
        let rows = values
            .first()
            .map(|v| v.len())
            .unwrap_or_else(|| keys[0].len());
        let start = end - self.spec.width_ns;
        let window: ArrayRef = Arc::new(StructArray::new(
            window_fields(),
            vec![
                Arc::new(TimestampNanosecondArray::from_value(start, rows)),
                Arc::new(TimestampNanosecondArray::from_value(end, rows)),
            ],
            None,
        ));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.output_schema.fields().len());
        let mut keys = if self.keys.is_empty() {
            Vec::new()
        } else {
            keys
        };
        keys.insert(self.window_pos, window);
        cols.extend(keys);
        cols.extend(values);
        // Cast to the declared output types where accumulators differ in nullability/type.
        let cols = cols
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.stats.windows_emitted += 1;
        self.stats.rows_emitted += rows as u64;
        Ok(Some(RecordBatch::try_new(
            self.output_schema.clone(),
            cols,
        )?))
    }
}

/// The plan feeding a windowed aggregate's raw rows.
pub fn raw_input(agg: &AggregateExec) -> &Arc<dyn ExecutionPlan> {
    partial_of(agg).input()
}
