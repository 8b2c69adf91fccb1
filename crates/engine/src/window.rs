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

use arrow::array::make_comparator;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StructArray, TimestampNanosecondArray,
    UInt32Array,
};
use arrow::compute::{SortOptions, cast, filter_record_batch, interleave, sort_to_indices, take};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use hashbrown::HashMap;

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

/// The most slides (panes) one window may span, `width / slide`: each is merged into every
/// window, so the cost of a window grows with it.
pub const MAX_PANES_PER_WINDOW: i64 = 10_000;

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
        let panes = width_ns / slide_ns;
        if panes > MAX_PANES_PER_WINDOW {
            return Err(Error::plan(format!(
                "a window of {} sliding by {} spans {panes} slides; at most \
                 {MAX_PANES_PER_WINDOW} are allowed (every slide is a pane of state merged \
                 into each window): make the slide longer or the window shorter",
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

fn fmt_bytes(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
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

/// Group keys interned once per operator into dense ids shared by every pane.
///
/// Panes and windows hold ids, not key values: a row's key is hashed once, when it arrives;
/// merging a window's panes maps integer ids, and key values are materialised only for the
/// rows a window emits. Ids of keys that no live pane holds any more are reclaimed by
/// [`KeyDict::compact`], so the dictionary stays bounded by the keys of the open windows.
struct KeyDict {
    schema: SchemaRef,
    values: Box<dyn GroupValues>,
    /// Key columns of the interned keys, in chunks as they arrived.
    chunks: Vec<Vec<ArrayRef>>,
    /// Where each id's key sits: (chunk, row).
    loc: Vec<(u32, u32)>,
    /// Rows of a batch holding the first occurrence of a new key (scratch).
    new_rows: Vec<u32>,
    /// Memory of `chunks`.
    chunk_bytes: usize,
}

impl KeyDict {
    fn new(schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            values: new_group_values(schema.clone(), &GroupOrdering::None)?,
            schema,
            chunks: Vec::new(),
            loc: Vec::new(),
            new_rows: Vec::new(),
            chunk_bytes: 0,
        })
    }

    fn len(&self) -> usize {
        self.loc.len()
    }

    /// Memory held: the hash table, the key values and the id locations.
    fn bytes(&self) -> usize {
        self.values.size()
            + self.chunk_bytes
            + self.loc.capacity() * size_of::<(u32, u32)>()
            + self.new_rows.capacity() * size_of::<u32>()
    }

    /// The id of each row's key in `ids`; keys not seen before get new ids.
    fn intern(&mut self, cols: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        let before = self.values.len();
        self.values.intern(cols, ids)?;
        let after = self.values.len();
        if after == before {
            return Ok(());
        }
        // New ids are handed out in row order: the first row holding id k (k >= before) is
        // the first row whose id is the next one expected.
        self.new_rows.clear();
        let mut next = before;
        for (row, &id) in ids.iter().enumerate() {
            if id == next {
                self.new_rows.push(row as u32);
                next += 1;
                if next == after {
                    break;
                }
            }
        }
        if next != after {
            return Err(Error::plan("internal: group ids out of order"));
        }
        let idx = UInt32Array::from_iter_values(self.new_rows.iter().copied());
        let chunk = cols
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        let ci = self.chunks.len() as u32;
        self.loc
            .extend((0..(after - before) as u32).map(|r| (ci, r)));
        self.chunk_bytes += arrays_bytes(&chunk);
        self.chunks.push(chunk);
        Ok(())
    }

    /// The key columns of `ids`, in that order.
    fn keys(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        if let [chunk] = self.chunks.as_slice() {
            // One chunk (after a compaction, or a small stream): a plain take.
            let idx = UInt32Array::from_iter_values(ids.iter().map(|&i| self.loc[i as usize].1));
            return Ok(chunk
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<Result<Vec<_>, _>>()?);
        }
        let idx: Vec<(usize, usize)> = ids
            .iter()
            .map(|&i| {
                let (c, r) = self.loc[i as usize];
                (c as usize, r as usize)
            })
            .collect();
        (0..self.schema.fields().len())
            .map(|col| {
                let arrays: Vec<&dyn Array> = self.chunks.iter().map(|c| c[col].as_ref()).collect();
                if arrays.is_empty() {
                    Ok(arrow::array::new_empty_array(
                        self.schema.field(col).data_type(),
                    ))
                } else {
                    Ok(interleave(&arrays, &idx)?)
                }
            })
            .collect()
    }

    /// Keeps the keys of `live` (ascending ids), renumbered `0..live.len()`; returns the old
    /// id -> new id map (`u32::MAX` for dropped ids).
    fn compact(&mut self, live: &[u32]) -> Result<Vec<u32>> {
        let keys = self.keys(live)?;
        let mut values = new_group_values(self.schema.clone(), &GroupOrdering::None)?;
        let mut ids = Vec::with_capacity(live.len());
        if !live.is_empty() {
            values.intern(&keys, &mut ids)?;
        }
        if ids.iter().enumerate().any(|(i, &id)| i != id) {
            return Err(Error::plan("internal: live keys are not distinct"));
        }
        let mut remap = vec![u32::MAX; self.len()];
        for (new, &old) in live.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        self.values = values;
        self.loc = (0..live.len() as u32).map(|r| (0, r)).collect();
        self.chunk_bytes = arrays_bytes(&keys);
        self.chunks = if live.is_empty() {
            Vec::new()
        } else {
            vec![keys]
        };
        Ok(remap)
    }
}

/// One slide's worth of partial state, keyed by [`KeyDict`] ids.
enum Pane {
    /// Receiving rows: `gids[local]` is the key of accumulator group `local`.
    Open {
        local: HashMap<u32, u32>,
        gids: Vec<u32>,
        accs: Vec<Box<dyn GroupsAccumulator>>,
    },
    /// Complete (the watermark passed its end): the accumulators' intermediate state, and
    /// the memory it holds.
    Frozen {
        gids: Vec<u32>,
        states: Vec<Vec<ArrayRef>>,
        bytes: usize,
    },
}

/// Memory held by arrays (buffers shared between them counted once per array).
fn arrays_bytes(arrays: &[ArrayRef]) -> usize {
    arrays.iter().map(|a| a.get_array_memory_size()).sum()
}

impl Pane {
    fn frozen(gids: Vec<u32>, states: Vec<Vec<ArrayRef>>) -> Self {
        let bytes = states.iter().map(|s| arrays_bytes(s)).sum();
        Pane::Frozen {
            gids,
            states,
            bytes,
        }
    }

    /// Memory held by the pane's state.
    fn bytes(&self) -> usize {
        match self {
            Pane::Open { local, gids, accs } => {
                local.capacity() * (size_of::<(u32, u32)>() + 1)
                    + gids.capacity() * size_of::<u32>()
                    + accs.iter().map(|a| a.size()).sum::<usize>()
            }
            Pane::Frozen { gids, bytes, .. } => gids.capacity() * size_of::<u32>() + bytes,
        }
    }

    fn gids(&self) -> &[u32] {
        match self {
            Pane::Open { gids, .. } | Pane::Frozen { gids, .. } => gids,
        }
    }

    fn remap(&mut self, remap: &[u32]) {
        match self {
            Pane::Open { local, gids, .. } => {
                local.clear();
                for (l, g) in gids.iter_mut().enumerate() {
                    *g = remap[*g as usize];
                    local.insert(*g, l as u32);
                }
            }
            Pane::Frozen { gids, .. } => {
                for g in gids.iter_mut() {
                    *g = remap[*g as usize];
                }
            }
        }
    }
}

/// Statistics of a window operator.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    pub windows_emitted: u64,
    pub rows_emitted: u64,
    pub late_rows: u64,
    pub open_panes: usize,
    /// Distinct group keys held for the open windows.
    pub keys: usize,
    /// Memory held by the operator's state (keys, panes, scratch space), in bytes.
    pub memory_bytes: usize,
}

/// A streaming `GROUP BY key..., hop(...)` operator (see the module docs).
pub struct WindowAggregate {
    spec: WindowSpec,
    ts_expr: Arc<dyn PhysicalExpr>,
    /// Non-window group expressions, in group order.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Position of the window among the group columns.
    window_pos: usize,
    aggs: Vec<Agg>,
    output_schema: SchemaRef,
    dict: KeyDict,
    /// Dictionary size after the last compaction (live keys then).
    live_after_compact: usize,
    panes: BTreeMap<i64, Pane>,
    /// Windows ending at or before this have been emitted.
    emitted_through: i64,
    watermark: i64,
    stats: WindowStats,
    // Scratch space reused across batches and windows.
    ids: Vec<usize>,
    local_ids: Vec<usize>,
    /// Dictionary id -> group of the window being merged (`u32::MAX`: not in it).
    window_map: Vec<u32>,
    emit_limit: Option<EmitLimit>,
    /// The state's share of a memory pool (see [`WindowAggregate::track_memory`]), and the
    /// pool's limit if it is known.
    memory: Option<(MemoryReservation, Option<usize>)>,
    /// The pipeline's stop handle: an abort ends window emission between two windows.
    stop: Option<crate::stop::StopHandle>,
}

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("spec", &self.spec)
            .field("panes", &self.panes.len())
            .field("keys", &self.dict.len())
            .finish()
    }
}

/// Rows of a batch going to one pane: a contiguous range, or gathered indices.
enum PaneRows {
    Range(usize, usize),
    Gather(UInt32Array),
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
        // With the window as the only key, every row of a pane is one group.
        if key_fields.is_empty() {
            key_fields.push(Field::new("_", DataType::Boolean, true));
        }
        Ok(Self {
            spec,
            ts_expr,
            keys,
            window_pos,
            dict: KeyDict::new(Arc::new(Schema::new(key_fields)))?,
            live_after_compact: 0,
            aggs,
            output_schema,
            panes: BTreeMap::new(),
            emitted_through: i64::MIN,
            watermark: i64::MIN,
            stats: WindowStats::default(),
            ids: Vec::new(),
            local_ids: Vec::new(),
            window_map: Vec::new(),
            emit_limit: None,
            memory: None,
            stop: None,
        })
    }

    /// Observes `stop`: once it aborts, [`WindowAggregate::advance`] fails between two windows
    /// with [`Error::Stopped`].
    pub fn set_stop(&mut self, stop: crate::stop::StopHandle) {
        self.stop = Some(stop);
    }

    /// Charges the operator's state to `pool` (as consumer `name`): once the state would grow
    /// past what the pool has left, the operator fails with [`Error::MemoryLimit`].
    pub fn track_memory(&mut self, pool: &Arc<dyn MemoryPool>, name: impl Into<String>) {
        let limit = match pool.memory_limit() {
            MemoryLimit::Finite(l) => Some(l),
            MemoryLimit::Infinite | MemoryLimit::Unknown => None,
        };
        self.memory = Some((MemoryConsumer::new(name).register(pool), limit));
    }

    /// Memory held by the state: the key dictionary, every pane and the scratch space.
    fn state_bytes(&self) -> usize {
        self.dict.bytes()
            + self.panes.values().map(Pane::bytes).sum::<usize>()
            + (self.ids.capacity() + self.local_ids.capacity()) * size_of::<usize>()
            + self.window_map.capacity() * size_of::<u32>()
    }

    /// Brings the reservation (and the statistic) in line with the state's size.
    fn account(&mut self) -> Result<()> {
        let bytes = self.state_bytes();
        self.stats.memory_bytes = bytes;
        let Some((r, limit)) = &self.memory else {
            return Ok(());
        };
        r.try_resize(bytes).map_err(|e| {
            let limit = match limit {
                Some(l) => format!(" of {}", fmt_bytes(*l)),
                None => String::new(),
            };
            Error::MemoryLimit(format!(
                "{}: its state ({} group keys in {} panes) needs {}, over the pipeline's \
                 memory limit{limit}; narrow the window, group by fewer keys or raise the \
                 limit ({e})",
                r.consumer().name(),
                self.dict.len(),
                self.panes.len(),
                fmt_bytes(bytes),
            ))
        })
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// What the operator computes, as text: window, event time, keys, aggregates and filters.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?} time={} keys=[", self.spec, self.ts_expr);
        for k in &self.keys {
            s.push_str(&format!("{k}, "));
        }
        s.push_str("] aggs=[");
        for a in &self.aggs {
            s.push_str(&format!("{}(", a.expr.name()));
            for e in &a.args {
                s.push_str(&format!("{e}, "));
            }
            if let Some(f) = &a.filter {
                s.push_str(&format!(") FILTER ({f}"));
            }
            s.push_str("), ");
        }
        s.push(']');
        s
    }

    /// Position of the window column (`STRUCT<start, end>`) in the output.
    pub fn window_column(&self) -> usize {
        self.window_pos
    }

    pub fn schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats {
            open_panes: self.panes.len(),
            keys: self.dict.len(),
            ..self.stats
        }
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggs.iter().map(Agg::accumulator).collect()
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
        let mut ts: TimestampNanosecondArray = ts.as_primitive().clone();
        // Late (or timeless) rows are dropped here and counted.
        let mut batch = batch.clone();
        let wm = self.watermark;
        let late = ts.null_count() + ts.values().iter().filter(|&&t| t < wm).count();
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
        let n = batch.num_rows();
        let keys = self.key_columns(&batch)?;
        let mut ids = std::mem::take(&mut self.ids);
        self.dict.intern(&keys, &mut ids)?;
        let args: Vec<Vec<ArrayRef>> = self
            .aggs
            .iter()
            .map(|a| {
                a.args
                    .iter()
                    .map(|e| Ok(e.evaluate(&batch)?.into_array(n)?))
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
                        Ok(f.evaluate(&batch)?.into_array(n)?.as_boolean().clone())
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let result = self.route(ts.values(), &ids, &args, &filters);
        self.ids = ids;
        result?;
        self.account()
    }

    /// Sends rows to their panes: contiguous runs of one pane as zero-copy slices (input in
    /// time order), otherwise gathered per pane.
    fn route(
        &mut self,
        ts: &[i64],
        ids: &[usize],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        let slide = self.spec.slide_ns;
        let mut runs: Vec<(i64, usize, usize)> = Vec::new();
        let mut start = 0;
        let mut cur = ts[0].div_euclid(slide);
        for (i, t) in ts.iter().enumerate().skip(1) {
            let p = t.div_euclid(slide);
            if p != cur {
                runs.push((cur, start, i));
                if runs.len() > 64 {
                    break;
                }
                start = i;
                cur = p;
            }
        }
        let parts: Vec<(i64, PaneRows)> = if runs.len() <= 64 {
            runs.push((cur, start, ts.len()));
            runs.into_iter()
                .map(|(p, s, e)| (p, PaneRows::Range(s, e)))
                .collect()
        } else {
            let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            for (i, t) in ts.iter().enumerate() {
                by_pane
                    .entry(t.div_euclid(slide))
                    .or_default()
                    .push(i as u32);
            }
            by_pane
                .into_iter()
                .map(|(p, idx)| (p, PaneRows::Gather(UInt32Array::from(idx))))
                .collect()
        };
        for (pane, rows) in parts {
            let (pane_ids, pane_args, pane_filters) = match &rows {
                PaneRows::Range(s, e) => (
                    ids[*s..*e].to_vec(),
                    args.iter()
                        .map(|a| a.iter().map(|c| c.slice(*s, e - s)).collect())
                        .collect::<Vec<Vec<ArrayRef>>>(),
                    filters
                        .iter()
                        .map(|f| f.as_ref().map(|f| f.slice(*s, e - s)))
                        .collect::<Vec<_>>(),
                ),
                PaneRows::Gather(idx) => (
                    idx.values().iter().map(|&i| ids[i as usize]).collect(),
                    args.iter()
                        .map(|a| a.iter().map(|c| take(c, idx, None)).collect())
                        .collect::<Result<Vec<Vec<ArrayRef>>, _>>()?,
                    filters
                        .iter()
                        .map(|f| {
                            f.as_ref()
                                .map(|f| Ok(take(f, idx, None)?.as_boolean().clone()))
                                .transpose()
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            self.update_pane(pane, &pane_ids, &pane_args, &pane_filters)?;
        }
        Ok(())
    }

    fn update_pane(
        &mut self,
        pane: i64,
        ids: &[usize],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if !self.panes.contains_key(&pane) {
            let accs = self.accumulators()?;
            self.panes.insert(
                pane,
                Pane::Open {
                    local: HashMap::new(),
                    gids: Vec::new(),
                    accs,
                },
            );
        }
        let Some(Pane::Open { local, gids, accs }) = self.panes.get_mut(&pane) else {
            return Err(Error::plan("internal: row for a frozen pane"));
        };
        let local_ids = &mut self.local_ids;
        local_ids.clear();
        local_ids.extend(ids.iter().map(|&g| {
            *local.entry(g as u32).or_insert_with(|| {
                gids.push(g as u32);
                (gids.len() - 1) as u32
            }) as usize
        }));
        let total = gids.len();
        for ((acc, a), f) in accs.iter_mut().zip(args).zip(filters) {
            acc.update_batch(a, local_ids, f.as_ref(), total)?;
        }
        Ok(())
    }

    /// Advances the watermark and returns the windows it completes, oldest first, one batch per
    /// window with the window's end (ns). `i64::MAX` flushes every window.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<(i64, RecordBatch)>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let slide = self.spec.slide_ns;
        let n = self.spec.panes_per_window();
        let panes_before = self.panes.len();
        // Freeze every pane that can no longer change.
        let mut out = Vec::new();
        if n > 1 {
            for (&p, pane) in self.panes.iter_mut() {
                let end = p.saturating_add(1).saturating_mul(slide);
                if end > watermark {
                    break;
                }
                if let Pane::Open { gids, accs, .. } = pane {
                    let states = accs
                        .iter_mut()
                        .map(|a| a.state(EmitTo::All))
                        .collect::<Result<Vec<_>, _>>()?;
                    *pane = Pane::frozen(std::mem::take(gids), states);
                }
            }
        }
        // Window ends to emit, oldest first: each end up to the watermark whose window holds a
        // pane. Ends without a pane are skipped, so the work follows the windows emitted, not
        // the event time passed.
        let mut next = self.first_end_after(self.emitted_through);
        while let Some(end) = next.filter(|e| *e <= watermark) {
            if self.stop.as_ref().is_some_and(|s| s.is_aborted()) {
                return Err(Error::Stopped("aborted while emitting windows".into()));
            }
            if let Some(b) = self.emit_window(end)? {
                out.push((end, b));
            }
            self.emitted_through = end;
            next = self.first_end_after(end);
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
        // (A tumbling window's pane is taken out as it is emitted, above.)
        if self.panes.len() < panes_before {
            self.maybe_compact()?;
        }
        self.account()?;
        Ok(out)
    }

    /// The first window end after `after` whose window holds a pane, if any.
    fn first_end_after(&self, after: i64) -> Option<i64> {
        let slide = self.spec.slide_ns;
        let n = self.spec.panes_per_window();
        let a = after.div_euclid(slide);
        // The last window of pane p ends at (p + n) * slide: the panes with a window ending
        // after `after` are those from a - n + 1 on.
        let (&p, _) = self.panes.range(a.saturating_sub(n - 1)..).next()?;
        let end = p
            .saturating_add(1)
            .saturating_mul(slide)
            .max(a.saturating_add(1).saturating_mul(slide));
        (end > after).then_some(end)
    }

    /// The first window end still to emit (whatever the watermark), if any.
    pub fn next_end(&self) -> Option<i64> {
        self.first_end_after(self.emitted_through)
    }

    /// Reclaims the ids of keys no pane holds any more, once they are at least half the
    /// dictionary (amortised: each compaction costs about the keys it keeps).
    fn maybe_compact(&mut self) -> Result<()> {
        let len = self.dict.len();
        if len < 2 * self.live_after_compact + 4096 {
            return Ok(());
        }
        let mut live_mark = vec![false; len];
        for pane in self.panes.values() {
            for &g in pane.gids() {
                live_mark[g as usize] = true;
            }
        }
        let live: Vec<u32> = (0..len as u32).filter(|&g| live_mark[g as usize]).collect();
        let remap = self.dict.compact(&live)?;
        for pane in self.panes.values_mut() {
            pane.remap(&remap);
        }
        self.live_after_compact = live.len();
        self.window_map.clear();
        self.window_map.shrink_to(live.len() * 2);
        Ok(())
    }

    fn emit_window(&mut self, end: i64) -> Result<Option<RecordBatch>> {
        let slide = self.spec.slide_ns;
        let n = self.spec.panes_per_window();
        let last = (end / slide).saturating_sub(1);
        let first = last.saturating_sub(n - 1);
        let (gids, values) = if n == 1 {
            // Tumbling: the pane is the window.
            let Some(pane) = self.panes.remove(&last) else {
                return Ok(None);
            };
            match pane {
                Pane::Open { gids, mut accs, .. } => {
                    if gids.is_empty() {
                        return Ok(None);
                    }
                    let values = accs
                        .iter_mut()
                        .map(|a| a.evaluate(EmitTo::All))
                        .collect::<Result<Vec<_>, _>>()?;
                    (gids, values)
                }
                Pane::Frozen { .. } => return Err(Error::plan("internal: frozen tumbling pane")),
            }
        } else {
            let mut accs = self.accumulators()?;
            let map = &mut self.window_map;
            map.resize(self.dict.len(), u32::MAX);
            let mut gids: Vec<u32> = Vec::new();
            let local_ids = &mut self.local_ids;
            for (_, pane) in self.panes.range(first..=last) {
                let Pane::Frozen {
                    gids: pane_gids,
                    states,
                    ..
                } = pane
                else {
                    return Err(Error::plan("internal: merging an open pane"));
                };
                if pane_gids.is_empty() {
                    continue;
                }
                local_ids.clear();
                local_ids.extend(pane_gids.iter().map(|&g| {
                    let slot = &mut map[g as usize];
                    if *slot == u32::MAX {
                        *slot = gids.len() as u32;
                        gids.push(g);
                    }
                    *slot as usize
                }));
                let total = gids.len();
                for (acc, s) in accs.iter_mut().zip(states) {
                    acc.merge_batch(s, local_ids, total)?;
                }
            }
            for &g in &gids {
                map[g as usize] = u32::MAX;
            }
            if gids.is_empty() {
                return Ok(None);
            }
            let values = accs
                .iter_mut()
                .map(|a| a.evaluate(EmitTo::All))
                .collect::<Result<Vec<_>, _>>()?;
            (gids, values)
        };
        // Aggregate values in their declared output types.
        let group_cols = self.keys.len() + 1;
        let mut values = values
            .into_iter()
            .zip(&self.output_schema.fields()[group_cols..])
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut gids = gids;
        if let Some(limit) = &self.emit_limit
            && let Some(keep) = limit.rows_to_keep(&values[limit.column - group_cols])?
        {
            gids = keep.values().iter().map(|&i| gids[i as usize]).collect();
            values = values
                .iter()
                .map(|v| take(v, &keep, None))
                .collect::<Result<Vec<_>, _>>()?;
        }
        let rows = gids.len();
        let start = end.saturating_sub(self.spec.width_ns);
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
            self.dict.keys(&gids)?
        };
        keys.insert(self.window_pos, window);
        // Key columns in their declared output types.
        for (c, f) in keys.into_iter().zip(self.output_schema.fields()) {
            cols.push(if c.data_type() == f.data_type() {
                c
            } else {
                cast(&c, f.data_type())?
            });
        }
        cols.extend(values);
        self.stats.windows_emitted += 1;
        self.stats.rows_emitted += rows as u64;
        Ok(Some(RecordBatch::try_new(
            self.output_schema.clone(),
            cols,
        )?))
    }

    /// Declares that whatever reads this operator's windows keeps only the first `k` rows of
    /// each by output column `column` (an aggregate value) in `options` order, and reads every
    /// row it is given otherwise unchanged (a per-window top-K directly above the window).
    /// Each window then emits only the rows that can make its top `k` (ties at the boundary
    /// included), and materialises keys only for them. Ignored for key columns.
    pub fn limit_emission(&mut self, column: usize, options: SortOptions, k: usize) {
        if column > self.keys.len() && column < self.output_schema.fields().len() && k > 0 {
            self.emit_limit = Some(EmitLimit { column, options, k });
        }
    }
}

/// See [`WindowAggregate::limit_emission`].
#[derive(Debug, Clone, Copy)]
struct EmitLimit {
    column: usize,
    options: SortOptions,
    k: usize,
}

impl EmitLimit {
    /// Rows of `col` that sort no later than its `k`-th row (`None`: keep all).
    fn rows_to_keep(&self, col: &ArrayRef) -> Result<Option<UInt32Array>> {
        if col.len() <= self.k {
            return Ok(None);
        }
        let top = sort_to_indices(col, Some(self.options), Some(self.k))?;
        let kth = top.value(self.k - 1) as usize;
        let cmp = make_comparator(col.as_ref(), col.as_ref(), self.options)?;
        let keep: UInt32Array = (0..col.len() as u32)
            .filter(|&i| cmp(i as usize, kth) != std::cmp::Ordering::Greater)
            .collect();
        Ok(Some(keep))
    }
}

/// The plan feeding a windowed aggregate's raw rows.
pub fn raw_input(agg: &AggregateExec) -> &Arc<dyn ExecutionPlan> {
    partial_of(agg).input()
}

/// What a checkpoint keeps of a [`WindowAggregate`] besides its arrays: the shape of the
/// state (checked on restore against the query) and where the operator stood.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WindowCheckpoint {
    slide_ns: i64,
    width_ns: i64,
    /// Types of the group keys, as text.
    key_types: Vec<String>,
    /// Number of state arrays of each aggregate.
    state_widths: Vec<usize>,
    /// Each pane's number and whether it was still open, in the order of the pane batches.
    panes: Vec<(i64, bool)>,
    emitted_through: i64,
    watermark: i64,
}

impl WindowAggregate {
    fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggs
            .iter()
            .map(|a| Ok(a.expr.state_fields()?.len()))
            .collect()
    }

    fn key_types(&self) -> Vec<String> {
        self.dict
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect()
    }

    /// The operator's state: the distinct keys the open panes hold (first batch), then one
    /// batch per pane (`gid` = row of the key batch, then the accumulators' state arrays).
    /// Open panes keep receiving rows afterwards.
    pub fn snapshot(&mut self) -> Result<(WindowCheckpoint, Vec<RecordBatch>)> {
        let widths = self.state_widths()?;
        let mut live_mark = vec![false; self.dict.len()];
        for pane in self.panes.values() {
            for &g in pane.gids() {
                live_mark[g as usize] = true;
            }
        }
        let live: Vec<u32> = (0..self.dict.len() as u32)
            .filter(|&g| live_mark[g as usize])
            .collect();
        let mut row_of = vec![u32::MAX; self.dict.len()];
        for (row, &g) in live.iter().enumerate() {
            row_of[g as usize] = row as u32;
        }
        let key_schema = Arc::new(Schema::new(
            self.dict
                .schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let keys = RecordBatch::try_new_with_options(
            key_schema,
            self.dict.keys(&live)?,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(live.len())),
        )?;
        let mut batches = vec![keys];
        let mut panes = Vec::with_capacity(self.panes.len());
        let fresh: Vec<Vec<Box<dyn GroupsAccumulator>>> = self
            .panes
            .values()
            .filter(|p| matches!(p, Pane::Open { .. }))
            .map(|_| self.accumulators())
            .collect::<Result<_>>()?;
        let mut fresh = fresh.into_iter();
        for (&p, pane) in self.panes.iter_mut() {
            let (gids, states, open) = match pane {
                Pane::Frozen { gids, states, .. } => (gids.clone(), states.clone(), false),
                Pane::Open { gids, accs, .. } => {
                    // Taking the state empties the accumulators: merge it back into new ones.
                    let states = accs
                        .iter_mut()
                        .map(|a| a.state(EmitTo::All))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut new_accs = fresh.next().expect("one per open pane");
                    let ids: Vec<usize> = (0..gids.len()).collect();
                    for (acc, s) in new_accs.iter_mut().zip(&states) {
                        acc.merge_batch(s, &ids, gids.len())?;
                    }
                    *accs = new_accs;
                    (gids.clone(), states, true)
                }
            };
            let mut fields = vec![Field::new("gid", DataType::UInt32, false)];
            let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from_iter_values(
                gids.iter().map(|&g| row_of[g as usize]),
            ))];
            for (i, s) in states.iter().enumerate() {
                for (j, c) in s.iter().enumerate() {
                    fields.push(Field::new(format!("a{i}_{j}"), c.data_type().clone(), true));
                    cols.push(c.clone());
                }
            }
            batches.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
            panes.push((p, open));
        }
        Ok((
            WindowCheckpoint {
                slide_ns: self.spec.slide_ns,
                width_ns: self.spec.width_ns,
                key_types: self.key_types(),
                state_widths: widths,
                panes,
                emitted_through: self.emitted_through,
                watermark: self.watermark,
            },
            batches,
        ))
    }

    /// Replaces the operator's state with a snapshot taken by [`WindowAggregate::snapshot`]
    /// of the same query.
    pub fn restore(&mut self, cp: &WindowCheckpoint, batches: &[RecordBatch]) -> Result<()> {
        let mismatch = |what: &str| {
            Err(Error::plan(format!(
                "the checkpoint does not match this query ({what} differ); \
                 start from a new checkpoint location"
            )))
        };
        if cp.slide_ns != self.spec.slide_ns || cp.width_ns != self.spec.width_ns {
            return mismatch("window sizes");
        }
        if cp.key_types != self.key_types() {
            return mismatch("group keys");
        }
        let widths = self.state_widths()?;
        if cp.state_widths != widths {
            return mismatch("aggregates");
        }
        if batches.len() != cp.panes.len() + 1 {
            return Err(Error::plan("checkpoint: window state is incomplete"));
        }
        let mut dict = KeyDict::new(self.dict.schema.clone())?;
        let keys = &batches[0];
        if keys.num_rows() > 0 {
            let mut ids = Vec::new();
            dict.intern(keys.columns(), &mut ids)?;
            if ids.iter().enumerate().any(|(i, &id)| i != id) {
                return Err(Error::plan("checkpoint: window keys are not distinct"));
            }
        }
        let mut panes = BTreeMap::new();
        for (&(p, open), b) in cp.panes.iter().zip(&batches[1..]) {
            let expected = 1 + widths.iter().sum::<usize>();
            if b.num_columns() != expected {
                return Err(Error::plan("checkpoint: pane state has the wrong shape"));
            }
            let gids: Vec<u32> = b
                .column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec();
            if gids.iter().any(|&g| g as usize >= dict.len()) {
                return Err(Error::plan("checkpoint: pane refers to an unknown key"));
            }
            let mut states = Vec::with_capacity(widths.len());
            let mut c = 1;
            for &w in &widths {
                states.push(b.columns()[c..c + w].to_vec());
                c += w;
            }
            let pane = if open {
                let mut accs = self.accumulators()?;
                let ids: Vec<usize> = (0..gids.len()).collect();
                for (acc, s) in accs.iter_mut().zip(&states) {
                    acc.merge_batch(s, &ids, gids.len())?;
                }
                let local = gids
                    .iter()
                    .enumerate()
                    .map(|(l, &g)| (g, l as u32))
                    .collect();
                Pane::Open { local, gids, accs }
            } else {
                Pane::frozen(gids, states)
            };
            panes.insert(p, pane);
        }
        self.live_after_compact = dict.len();
        self.dict = dict;
        self.panes = panes;
        self.emitted_through = cp.emitted_through;
        self.watermark = cp.watermark;
        self.window_map.clear();
        self.account()
    }
}
