//! The slice operator: one per (input, group keys, event time, slide), computing every window
//! over them — windows of one query over the same rows share its slices (see the module docs).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StructArray,
    TimestampNanosecondArray, UInt32Array, new_null_array,
};
use arrow::compute::{SortOptions, cast, take};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use super::dict::KeyDict;
use super::group::{Grouping, MemoryCharge};
use super::kind::WindowKind;
use super::slices::{Agg, AggImpl, PairStore, Part, Slice, count_into, counted_rows, sum_into};
use super::stacks::Stacks;
use super::topk::EmitLimit;
use super::{partial_of, window_fields};
use crate::{Error, Result};

/// A window's running value of one aggregate, by dictionary id.
pub(super) enum Running {
    /// `count(*)`: the output's `rows`.
    Rows,
    /// Counts and distinct counts.
    Ints(Vec<i64>),
    /// Integer sums and how many values each holds (none: NULL).
    Sum { sum: Vec<i64>, n: Vec<i64> },
    /// `min` / `max`: per key, the values of the window's slices that no newer slice's value
    /// beats (a monotonic deque, oldest first), so the front is the window's value; a slice
    /// adds and evicts a key's entries in amortised O(1). `entries` counts them all.
    Extreme {
        max: bool,
        best: Vec<VecDeque<(i64, ScalarValue)>>,
        entries: usize,
    },
    /// Any other aggregate over several slices: sparse two-stacks of slice states.
    Stacks(Box<Stacks>),
    /// A one-slice window: its slice's state, read when it is emitted.
    Merge,
}

impl Running {
    fn bytes(&self) -> usize {
        match self {
            Running::Ints(v) => v.capacity() * 8,
            Running::Sum { sum, n } => (sum.capacity() + n.capacity()) * 8,
            Running::Extreme { best, entries, .. } => {
                best.capacity() * size_of::<VecDeque<(i64, ScalarValue)>>()
                    + entries * (size_of::<(i64, ScalarValue)>() + 16)
            }
            Running::Stacks(s) => s.bytes(),
            Running::Rows | Running::Merge => 0,
        }
    }
}

/// One window of the operator: its kind, output, and running state.
pub(super) struct Output {
    pub kind: WindowKind,
    pub schema: SchemaRef,
    /// Position of the window column among the group columns.
    pub window_pos: usize,
    /// The operator's aggregate behind each aggregate column.
    pub aggs: Vec<usize>,
    pub running: Vec<Running>,
    /// Rows held per key: a key is in the window while it has any.
    pub rows: Vec<i64>,
    /// Keys in the window, and where each sits in `members` (`u32::MAX`: not in it).
    pub members: Vec<u32>,
    pub member_pos: Vec<u32>,
    /// Slices before this have left the window.
    pub evicted_below: i64,
    pub emit_limit: Option<EmitLimit>,
    /// A predicate on the aggregate columns: only keys passing it are emitted (HAVING).
    pub having: Option<Arc<dyn PhysicalExpr>>,
    /// Lower bounds the HAVING puts on running counts (aggregate position, least value): keys
    /// below one are dropped before any value is materialised.
    pub floors: Vec<(usize, i64)>,
    /// Emit only keys another output emitted for the same end (an inner join on all keys).
    pub restrict: Option<usize>,
    /// Keys emitted for `emitted_end` (read by outputs restricted to this one).
    pub emitted: Vec<u32>,
    pub emitted_end: i64,
    pub windows_emitted: u64,
    pub rows_emitted: u64,
}

impl Output {
    fn bytes(&self) -> usize {
        self.running.iter().map(Running::bytes).sum::<usize>()
            + self.rows.capacity() * 8
            + (self.members.capacity() + self.member_pos.capacity() + self.emitted.capacity()) * 4
    }

    pub(super) fn grow(&mut self, n: usize) {
        if self.rows.len() >= n {
            return;
        }
        self.rows.resize(n, 0);
        self.member_pos.resize(n, u32::MAX);
        for r in &mut self.running {
            match r {
                Running::Ints(v) => v.resize(n, 0),
                Running::Sum { sum, n: c } => {
                    sum.resize(n, 0);
                    c.resize(n, 0);
                }
                Running::Extreme { best, .. } => best.resize_with(n, VecDeque::new),
                Running::Stacks(s) => s.grow(n),
                Running::Rows | Running::Merge => {}
            }
        }
    }

    /// A (key `g`, value) pair of distinct aggregate `a` comes in with a slice: counted unless
    /// its last sighting, `old`, is still in the window.
    pub(super) fn pair_enters(&mut self, a: usize, g: usize, old: i64) {
        if old >= self.evicted_below {
            return;
        }
        for (r, &oa) in self.running.iter_mut().zip(&self.aggs) {
            if oa == a
                && let Running::Ints(v) = r
            {
                v[g] += 1;
            }
        }
    }

    /// Adds (`sign` 1) or removes (-1) slice `index`'s rows, invertible totals and extremes.
    pub(super) fn apply(&mut self, slice: &Slice, index: i64, sign: i64) -> Result<()> {
        for (l, &g) in slice.gids.iter().enumerate() {
            let g = g as usize;
            let before = self.rows[g];
            self.rows[g] += sign * slice.rows[l];
            match (before == 0, self.rows[g] == 0) {
                (true, false) => {
                    self.member_pos[g] = self.members.len() as u32;
                    self.members.push(g as u32);
                }
                (false, true) => {
                    let at = self.member_pos[g] as usize;
                    self.members.swap_remove(at);
                    if let Some(&moved) = self.members.get(at) {
                        self.member_pos[moved as usize] = at as u32;
                    }
                    self.member_pos[g] = u32::MAX;
                }
                _ => {}
            }
        }
        for (r, &a) in self.running.iter_mut().zip(&self.aggs) {
            match (r, &slice.parts[a]) {
                (Running::Ints(v), Part::Ints(p)) => {
                    for (l, &g) in slice.gids.iter().enumerate() {
                        v[g as usize] += sign * p.get(l).copied().unwrap_or(0);
                    }
                }
                (Running::Sum { sum, n }, Part::Sum { sum: ps, n: pn }) => {
                    for (l, &g) in slice.gids.iter().enumerate() {
                        let (s, c) = (
                            ps.get(l).copied().unwrap_or(0),
                            pn.get(l).copied().unwrap_or(0),
                        );
                        sum[g as usize] = sum[g as usize].wrapping_add(sign.wrapping_mul(s));
                        n[g as usize] += sign * c;
                    }
                }
                // Stacks leave in `SliceAggregate::step` (a flip reads every slice).
                (Running::Stacks(st), Part::States(states)) if sign > 0 => {
                    st.enter(index, &slice.gids, states)?;
                }
                (Running::Extreme { best, entries, .. }, _) if sign < 0 => {
                    for &g in &slice.gids {
                        let d = &mut best[g as usize];
                        if d.front().is_some_and(|f| f.0 == index) {
                            d.pop_front();
                            *entries -= 1;
                        }
                    }
                }
                (Running::Extreme { max, best, entries }, Part::States(st)) => {
                    let col = &st[0];
                    for (l, &g) in slice.gids.iter().enumerate() {
                        if col.is_null(l) {
                            continue;
                        }
                        let v = ScalarValue::try_from_array(col, l)?;
                        let d = &mut best[g as usize];
                        // Entries the new value beats can never be a window's value again.
                        while let Some(b) = d.back() {
                            let beaten = match b.1.partial_cmp(&v) {
                                Some(std::cmp::Ordering::Equal) => true,
                                Some(std::cmp::Ordering::Less) => *max,
                                Some(std::cmp::Ordering::Greater) => !*max,
                                None => false,
                            };
                            if !beaten {
                                break;
                            }
                            d.pop_back();
                            *entries -= 1;
                        }
                        d.push_back((index, v));
                        *entries += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Statistics of a window operator.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    pub windows_emitted: u64,
    pub rows_emitted: u64,
    pub late_rows: u64,
    /// Slices held.
    pub open_panes: usize,
    /// Distinct group keys held for the open windows.
    pub keys: usize,
    /// Memory held by the operator's state (keys, slices, running totals), in bytes.
    pub memory_bytes: usize,
}

/// A streaming `GROUP BY key..., <window>(...)` operator computing one or more windows of the
/// same slide over the same rows and keys (see the module docs).
pub struct SliceAggregate {
    pub(super) slide_ns: i64,
    pub(super) group: Grouping,
    pub(super) aggs: Vec<Agg>,
    pub(super) pairs: Vec<PairStore>,
    pub(super) dict: KeyDict,
    pub(super) live_after_compact: usize,
    pub(super) slices: BTreeMap<i64, Slice>,
    /// Windows ending at slice boundaries up to this have been emitted; every slice before it
    /// is complete and in every window that holds it.
    pub(super) done: i64,
    pub(super) watermark: i64,
    pub(super) outputs: Vec<Output>,
    /// Output emission order: an output restricted to another's keys comes after it.
    order: Vec<usize>,
    /// Per aggregate: slices before this no longer hold its part.
    freed_below: Vec<i64>,
    late_rows: u64,
    // Scratch space reused across batches and windows.
    ids: Vec<usize>,
    local_ids: Vec<usize>,
    /// Dictionary id -> group of the window being merged (`u32::MAX`: not in it).
    pub(super) window_map: Vec<u32>,
    /// A closed slice's local map, every entry unset, for the next slice.
    spare_local: Vec<u32>,
    memory: MemoryCharge,
    stop: Option<crate::stop::StopHandle>,
}

impl std::fmt::Debug for SliceAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceAggregate")
            .field(
                "windows",
                &self.outputs.iter().map(|o| o.kind).collect::<Vec<_>>(),
            )
            .field("slices", &self.slices.len())
            .field("keys", &self.dict.len())
            .finish()
    }
}

/// Rows of a batch going to one slice: a contiguous range, or gathered indices.
enum SliceRows {
    Range(usize, usize),
    Gather(UInt32Array),
}

impl SliceAggregate {
    /// Builds the operator from a DataFusion aggregate grouping by a window function (its
    /// `group` and slice-based `kind`). Its one output has the aggregate's schema: group
    /// columns (the window as a `STRUCT<start, end>`) then aggregate values.
    /// [`SliceAggregate::fuse`] adds the windows of other aggregates.
    pub(super) fn new(agg: &AggregateExec, group: Grouping, kind: WindowKind) -> Result<Self> {
        let output_schema = agg.schema();
        let inner = partial_of(agg);
        let input_schema = inner.input_schema();
        let window_pos = group.window_pos;
        let mut aggs = Vec::new();
        let mut pairs = Vec::new();
        for (a, f) in inner.aggr_expr().iter().zip(inner.filter_expr()) {
            let mut agg = Agg::new(a.clone(), f.clone(), &input_schema)?;
            if agg.imp == AggImpl::Distinct(usize::MAX) {
                let field = Field::new(
                    "value",
                    agg.args[0].data_type(&input_schema)?,
                    agg.args[0].nullable(&input_schema)?,
                );
                agg.imp = AggImpl::Distinct(pairs.len());
                pairs.push(PairStore::new(&field)?);
            }
            aggs.push(agg);
        }
        let n_aggs = aggs.len();
        let running = aggs.iter().map(|a| running_for(a, kind)).collect();
        Ok(Self {
            slide_ns: kind.slide_ns(),
            dict: KeyDict::new(group.key_schema.clone())?,
            group,
            live_after_compact: 0,
            aggs,
            pairs,
            slices: BTreeMap::new(),
            done: i64::MIN,
            watermark: i64::MIN,
            outputs: vec![Output {
                kind,
                schema: output_schema,
                window_pos,
                aggs: (0..n_aggs).collect(),
                running,
                rows: Vec::new(),
                members: Vec::new(),
                member_pos: Vec::new(),
                evicted_below: i64::MIN,
                emit_limit: None,
                having: None,
                floors: Vec::new(),
                restrict: None,
                emitted: Vec::new(),
                emitted_end: i64::MIN,
                windows_emitted: 0,
                rows_emitted: 0,
            }],
            order: vec![0],
            freed_below: vec![i64::MIN; n_aggs],
            late_rows: 0,
            ids: Vec::new(),
            local_ids: Vec::new(),
            window_map: Vec::new(),
            spare_local: Vec::new(),
            memory: MemoryCharge::default(),
            stop: None,
        })
    }

    /// What must match for two window aggregates to share slices: input rows (the caller's
    /// concern), event time, keys and slide.
    pub fn slice_signature(&self) -> String {
        format!("slide={} {}", self.slide_ns, self.group.describe())
    }

    /// Takes over the windows of `other` (same [`SliceAggregate::slice_signature`], over the
    /// same input, both new): they are computed from this operator's slices, sharing the
    /// aggregates both compute. Returns the index of each of `other`'s outputs here.
    pub fn fuse(&mut self, other: SliceAggregate) -> Result<Vec<usize>> {
        if other.slice_signature() != self.slice_signature() {
            return Err(Error::plan("internal: fusing windows of different slices"));
        }
        if self.watermark != i64::MIN || other.watermark != i64::MIN {
            return Err(Error::plan("internal: fusing running windows"));
        }
        let mut map = Vec::with_capacity(other.aggs.len());
        for mut a in other.aggs {
            match self.aggs.iter().position(|b| b.describe == a.describe) {
                Some(i) => map.push(i),
                None => {
                    if let AggImpl::Distinct(p) = a.imp {
                        a.imp = AggImpl::Distinct(self.pairs.len());
                        let field = other.pairs[p].values.schema.field(0).clone();
                        self.pairs.push(PairStore::new(&field)?);
                    }
                    self.aggs.push(a);
                    self.freed_below.push(i64::MIN);
                    map.push(self.aggs.len() - 1);
                }
            }
        }
        let mut at = Vec::new();
        for mut o in other.outputs {
            o.aggs = o.aggs.iter().map(|&a| map[a]).collect();
            o.running = o
                .aggs
                .iter()
                .map(|&a| running_for(&self.aggs[a], o.kind))
                .collect();
            at.push(self.outputs.len());
            self.outputs.push(o);
        }
        self.order = (0..self.outputs.len()).collect();
        Ok(at)
    }

    /// Reads column `map[i]` of input `schema` wherever it read column `i`: the operator reads
    /// another plan computing the same rows with more columns. Only before any row.
    pub fn remap_input(&mut self, map: &[usize], schema: &Schema) -> Result<()> {
        if self.watermark != i64::MIN || !self.slices.is_empty() {
            return Err(Error::plan("internal: remapping a running window"));
        }
        self.group.remap_input(&mut self.aggs, map, schema)
    }

    /// Number of windows (outputs) the operator computes.
    pub fn outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Output `o` emits only the keys that pass `predicate`, an expression over its output
    /// columns that reads only aggregate columns (and the window): a HAVING above the window.
    pub fn filter_emission(&mut self, o: usize, predicate: Arc<dyn PhysicalExpr>) {
        let group_cols = self.group.keys.len() + 1;
        let out = &mut self.outputs[o];
        // Only counts (rows, counts, distinct counts) are tested before materialising.
        out.floors = count_floors(&predicate, group_cols)
            .into_iter()
            .filter(|(k, _)| matches!(out.running.get(*k), Some(Running::Rows | Running::Ints(_))))
            .collect();
        out.having = Some(predicate);
    }

    /// Output `o` emits, at each window end, only the keys output `by` emitted for that end.
    /// For an inner join of the two on every group key (nothing else may read `o`). Refused
    /// (false) when `by` is itself restricted, or for `o == by`.
    pub fn restrict_emission(&mut self, o: usize, by: usize) -> bool {
        if o == by || self.outputs[by].restrict.is_some() || self.outputs[o].restrict.is_some() {
            return false;
        }
        if self.outputs.iter().any(|x| x.restrict == Some(o)) {
            return false;
        }
        self.outputs[o].restrict = Some(by);
        let mut order: Vec<usize> = (0..self.outputs.len())
            .filter(|&i| self.outputs[i].restrict.is_none())
            .collect();
        order.extend((0..self.outputs.len()).filter(|&i| self.outputs[i].restrict.is_some()));
        self.order = order;
        true
    }

    /// Declares that whatever reads output `o` keeps only the first `k` rows of each window by
    /// output column `column` (an aggregate value) in `options` order, and reads every row it
    /// is given otherwise unchanged (a per-window top-K directly above the window). Each
    /// window then emits only the rows that can make its top `k` (ties at the boundary
    /// included). Ignored for key columns.
    pub fn limit_emission(&mut self, o: usize, column: usize, options: SortOptions, k: usize) {
        let out = &mut self.outputs[o];
        if column > self.group.keys.len() && column < out.schema.fields().len() && k > 0 {
            out.emit_limit = Some(EmitLimit { column, options, k });
        }
    }

    /// Observes `stop`: once it aborts, [`SliceAggregate::advance`] fails between two windows
    /// with [`Error::Stopped`].
    pub fn set_stop(&mut self, stop: crate::stop::StopHandle) {
        self.stop = Some(stop);
    }

    /// Charges the operator's state to `pool` (as consumer `name`): once the state would grow
    /// past what the pool has left, the operator fails with [`Error::MemoryLimit`].
    pub fn track_memory(&mut self, pool: &Arc<dyn MemoryPool>, name: impl Into<String>) {
        self.memory = MemoryCharge::new(pool, name);
    }

    fn state_bytes(&self) -> usize {
        self.dict.bytes()
            + self.pairs.iter().map(PairStore::bytes).sum::<usize>()
            + self.slices.values().map(Slice::bytes).sum::<usize>()
            + self.outputs.iter().map(Output::bytes).sum::<usize>()
            + (self.ids.capacity() + self.local_ids.capacity()) * size_of::<usize>()
            + (self.window_map.capacity() + self.spare_local.capacity()) * size_of::<u32>()
    }

    /// Brings the reservation in line with the state's size.
    pub(super) fn account(&mut self) -> Result<()> {
        let bytes = self.state_bytes();
        let what = format!(
            "{} group keys in {} slices",
            self.dict.len(),
            self.slices.len()
        );
        self.memory.resize(bytes, &what)
    }

    /// The kind of output `o`'s window.
    pub fn kind(&self, o: usize) -> WindowKind {
        self.outputs[o].kind
    }

    /// The slide every window of the operator shares, in ns.
    pub fn slide_ns(&self) -> i64 {
        self.slide_ns
    }

    /// What the operator computes, as text: windows, event time, keys, aggregates.
    pub fn describe(&self) -> String {
        let mut s = self.slice_signature();
        s.push_str(" aggs=[");
        for a in &self.aggs {
            s.push_str(&a.describe);
            s.push_str(", ");
        }
        s.push_str("] windows=[");
        for o in &self.outputs {
            s.push_str(&format!("{} {:?}, ", o.kind.describe(), o.aggs));
        }
        s.push(']');
        s
    }

    /// How each aggregate is computed, for EXPLAIN.
    pub fn describe_aggregates(&self, o: usize) -> String {
        self.outputs[o]
            .aggs
            .iter()
            .map(|&a| {
                let how = match self.aggs[a].imp {
                    AggImpl::Rows | AggImpl::Count | AggImpl::SumInt => "running",
                    AggImpl::Distinct(_) => "last-seen pairs",
                    AggImpl::Merge if self.aggs[a].extreme().is_some() => "monotonic deque",
                    AggImpl::Merge if self.outputs[o].kind.span() > 1 => "two-stacks",
                    AggImpl::Merge => "slice state",
                };
                format!("{} [{how}]", self.aggs[a].expr.name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Position of the window column (`STRUCT<start, end>`) in output `o`.
    pub fn window_column(&self, o: usize) -> usize {
        self.outputs[o].window_pos
    }

    pub fn schema(&self, o: usize) -> SchemaRef {
        self.outputs[o].schema.clone()
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats {
            windows_emitted: self.outputs.iter().map(|o| o.windows_emitted).sum(),
            rows_emitted: self.outputs.iter().map(|o| o.rows_emitted).sum(),
            late_rows: self.late_rows,
            open_panes: self.slices.len(),
            keys: self.dict.len(),
            memory_bytes: self.state_bytes(),
        }
    }

    /// Adds a batch of input rows. Rows older than the watermark are dropped and counted.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<()> {
        let (rows, late) = self.group.on_time(batch, self.watermark)?;
        self.late_rows += late as u64;
        let Some((batch, ts)) = rows else {
            return Ok(());
        };
        let keys = self.group.key_columns(&batch)?;
        let mut ids = std::mem::take(&mut self.ids);
        self.dict.intern(&keys, &mut ids)?;
        let (args, filters) = super::group::evaluate_args(&self.aggs, &batch)?;
        let result = self.route(ts.values(), &ids, &args, &filters);
        self.ids = ids;
        result?;
        self.account()
    }

    /// Sends rows to their slices: contiguous runs of one slice as zero-copy slices (input in
    /// time order), otherwise gathered per slice.
    fn route(
        &mut self,
        ts: &[i64],
        ids: &[usize],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        let slide = self.slide_ns;
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
        let parts: Vec<(i64, SliceRows)> = if runs.len() <= 64 {
            runs.push((cur, start, ts.len()));
            runs.into_iter()
                .map(|(p, s, e)| (p, SliceRows::Range(s, e)))
                .collect()
        } else {
            let mut by_slice: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
            for (i, t) in ts.iter().enumerate() {
                by_slice
                    .entry(t.div_euclid(slide))
                    .or_default()
                    .push(i as u32);
            }
            by_slice
                .into_iter()
                .map(|(p, idx)| (p, SliceRows::Gather(UInt32Array::from(idx))))
                .collect()
        };
        for (slice, rows) in parts {
            match &rows {
                SliceRows::Range(s, e) => {
                    let a: Vec<Vec<ArrayRef>> = args
                        .iter()
                        .map(|a| a.iter().map(|c| c.slice(*s, e - s)).collect())
                        .collect();
                    let f: Vec<Option<BooleanArray>> = filters
                        .iter()
                        .map(|f| f.as_ref().map(|f| f.slice(*s, e - s)))
                        .collect();
                    self.update_slice(slice, &ids[*s..*e], &a, &f)?;
                }
                SliceRows::Gather(idx) => {
                    let sub: Vec<usize> = idx.values().iter().map(|&i| ids[i as usize]).collect();
                    let a = args
                        .iter()
                        .map(|a| a.iter().map(|c| take(c, idx, None)).collect())
                        .collect::<Result<Vec<Vec<ArrayRef>>, _>>()?;
                    let f = filters
                        .iter()
                        .map(|f| {
                            f.as_ref()
                                .map(|f| Ok(take(f, idx, None)?.as_boolean().clone()))
                                .transpose()
                        })
                        .collect::<Result<Vec<_>>>()?;
                    self.update_slice(slice, &sub, &a, &f)?;
                }
            }
        }
        Ok(())
    }

    fn update_slice(
        &mut self,
        p: i64,
        ids: &[usize],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if !self.slices.contains_key(&p) {
            let mut slice = Slice::new(&self.aggs)?;
            slice.local = std::mem::take(&mut self.spare_local);
            self.slices.insert(p, slice);
        }
        let slice = self.slices.get_mut(&p).expect("inserted above");
        if !slice.open {
            return Err(Error::plan("internal: row for a complete slice"));
        }
        let locals = &mut self.local_ids;
        slice.locals(ids, self.dict.len(), locals);
        let groups = slice.gids.len();
        for (((agg, part), a), f) in self
            .aggs
            .iter()
            .zip(&mut slice.parts)
            .zip(args)
            .zip(filters)
        {
            match (agg.imp, part) {
                (AggImpl::Rows, _) => {}
                (AggImpl::Count, Part::Ints(v)) => {
                    let mask = counted_rows(a, f.as_ref());
                    count_into(v, groups, locals, mask.as_ref());
                }
                (AggImpl::SumInt, Part::Sum { sum, n }) => {
                    let mask = counted_rows(a, f.as_ref());
                    sum_into(sum, n, groups, locals, &a[0], mask.as_ref())?;
                }
                (AggImpl::Merge, Part::Acc(acc)) => {
                    acc.update_batch(a, locals, f.as_ref(), groups)?;
                }
                (AggImpl::Distinct(d), Part::Pairs(list)) => {
                    let store = &mut self.pairs[d];
                    let mask = counted_rows(a, f.as_ref());
                    let (gids, values): (Vec<u32>, ArrayRef) = match &mask {
                        Some(m) => (
                            ids.iter()
                                .enumerate()
                                .filter(|(i, _)| m.value(*i))
                                .map(|(_, &g)| g as u32)
                                .collect(),
                            arrow::compute::filter(&a[0], m)?,
                        ),
                        None => (ids.iter().map(|&g| g as u32).collect(), a[0].clone()),
                    };
                    if gids.is_empty() {
                        continue;
                    }
                    store.intern(&gids, &values)?;
                    for &pair in &store.ids {
                        if store.seen_in[pair] != p {
                            store.seen_in[pair] = p;
                            list.push(pair as u32);
                        }
                    }
                }
                _ => return Err(Error::plan("internal: aggregate part of the wrong kind")),
            }
        }
        Ok(())
    }

    /// Advances the watermark and returns the windows it completes, oldest first: each
    /// window's end (ns), output and rows. `i64::MAX` flushes every window.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<(i64, usize, RecordBatch)>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let slide = self.slide_ns;
        // Window ends (as slice numbers) at or before the watermark.
        let limit = if watermark == i64::MAX {
            i64::MAX
        } else {
            watermark.div_euclid(slide)
        };
        let mut out = Vec::new();
        while let Some(e) = self.next_end_slice().filter(|e| *e <= limit) {
            if self.stop.as_ref().is_some_and(|s| s.is_aborted()) {
                return Err(Error::Stopped("aborted while emitting windows".into()));
            }
            self.step(e, &mut out)?;
            self.done = e;
        }
        if limit != i64::MAX {
            self.done = self.done.max(limit);
        }
        self.maybe_compact()?;
        self.account()?;
        Ok(out)
    }

    /// The next window end (slice number) that may emit anything.
    fn next_end_slice(&self) -> Option<i64> {
        if self.done == i64::MAX {
            return None;
        }
        if self.outputs.iter().any(|o| !o.members.is_empty()) {
            return Some(self.done + 1);
        }
        // Every window is empty: the next one that is not ends after the next stored slice.
        let (&p, _) = self.slices.range(self.done.max(i64::MIN + 1)..).next()?;
        Some(p.saturating_add(1).max(self.done.saturating_add(1)))
    }

    /// The first window end still to emit (whatever the watermark), in ns, if any.
    pub fn next_end(&self) -> Option<i64> {
        self.next_end_slice()
            .map(|e| e.saturating_mul(self.slide_ns))
    }

    /// Completes slice `e - 1` and emits every window ending at slice boundary `e`.
    fn step(&mut self, e: i64, out: &mut Vec<(i64, usize, RecordBatch)>) -> Result<()> {
        let n = self.dict.len();
        for o in &mut self.outputs {
            o.grow(n);
        }
        // Windows lose the slices they no longer reach (before gaining the new one: the
        // distinct counts rely on it).
        for oi in 0..self.outputs.len() {
            let first = self.outputs[oi].kind.first_slice(e);
            let from = self.outputs[oi].evicted_below;
            if first <= from {
                continue;
            }
            let o = &mut self.outputs[oi];
            for (r, &a) in o.running.iter_mut().zip(&o.aggs) {
                if let Running::Stacks(st) = r {
                    st.evict(&self.slices, a, from, first)?;
                }
            }
            for (&q, slice) in self.slices.range(from..first) {
                o.apply(slice, q, -1)?;
                for (r, &a) in o.running.iter_mut().zip(&o.aggs) {
                    if let (Running::Ints(v), AggImpl::Distinct(d), Part::Pairs(list)) =
                        (r, self.aggs[a].imp, &slice.parts[a])
                    {
                        let store = &self.pairs[d];
                        for &pair in list {
                            if store.last[pair as usize] == q {
                                v[store.gid[pair as usize] as usize] -= 1;
                            }
                        }
                    }
                }
            }
            o.evicted_below = first;
        }
        // The slice ending here is complete: every window gains it.
        let p = e - 1;
        if let Some(slice) = self.slices.get_mut(&p) {
            let local = slice.close()?;
            if local.capacity() > self.spare_local.capacity() {
                self.spare_local = local;
            }
            let slice = self.slices.get_mut(&p).expect("present");
            for (a, agg) in self.aggs.iter().enumerate() {
                let (AggImpl::Distinct(d), Part::Pairs(list)) = (agg.imp, &mut slice.parts[a])
                else {
                    continue;
                };
                let store = &mut self.pairs[d];
                let outputs = &mut self.outputs;
                list.retain(|&pair| {
                    let pair = pair as usize;
                    let old = store.last[pair];
                    if old == p {
                        return false;
                    }
                    let g = store.gid[pair] as usize;
                    for o in outputs.iter_mut() {
                        o.pair_enters(a, g, old);
                    }
                    store.last[pair] = p;
                    true
                });
                list.shrink_to_fit();
            }
            let slice = &self.slices[&p];
            for o in &mut self.outputs {
                o.apply(slice, p, 1)?;
            }
        }
        for i in 0..self.order.len() {
            let o = self.order[i];
            if let Some(b) = self.emit(o, e)? {
                out.push((e.saturating_mul(self.slide_ns), o, b));
            }
        }
        self.free_slices();
        Ok(())
    }

    /// Drops slices no window holds any more, and the parts of aggregates no window still
    /// reading them needs.
    fn free_slices(&mut self) {
        let Some(min) = self.outputs.iter().map(|o| o.evicted_below).min() else {
            return;
        };
        while let Some(entry) = self.slices.first_entry() {
            if *entry.key() >= min {
                break;
            }
            entry.remove();
        }
        for a in 0..self.aggs.len() {
            let bound = self.freed_bound(a);
            let from = self.freed_below[a].max(min);
            if bound > from {
                for (_, s) in self.slices.range_mut(from..bound) {
                    s.parts[a] = Part::Freed;
                }
            }
            self.freed_below[a] = self.freed_below[a].max(bound);
        }
    }

    /// Output `o`'s window ending at slice boundary `e`, if it holds any row to emit.
    fn emit(&mut self, oi: usize, e: i64) -> Result<Option<RecordBatch>> {
        let o = &self.outputs[oi];
        let mut gids: Vec<u32> = match o.restrict {
            Some(by) => {
                let src = &self.outputs[by];
                if src.emitted_end == e {
                    src.emitted
                        .iter()
                        .copied()
                        .filter(|&g| o.rows.get(g as usize).is_some_and(|&r| r > 0))
                        .collect()
                } else {
                    Vec::new()
                }
            }
            None => {
                let mut m = o.members.clone();
                // Keys go out in id order (first seen first). With a HAVING or a top-K, only
                // the keys kept are sorted, below.
                if o.having.is_none() && o.emit_limit.is_none() {
                    m.sort_unstable();
                }
                m
            }
        };
        let sort_kept = o.restrict.is_none() && (o.having.is_some() || o.emit_limit.is_some());
        for &(k, least) in &o.floors {
            match &o.running[k] {
                Running::Rows => gids.retain(|&g| o.rows[g as usize] >= least),
                Running::Ints(v) => gids.retain(|&g| v[g as usize] >= least),
                _ => {}
            }
        }
        let kind = o.kind;
        let first = kind.first_slice(e);
        if gids.is_empty() {
            let o = &mut self.outputs[oi];
            o.emitted.clear();
            o.emitted_end = e;
            return Ok(None);
        }
        let group_cols = self.group.keys.len() + 1;
        let schema = o.schema.clone();
        let mut values = self.values(oi, first, e, &gids)?;
        for (c, f) in values.iter_mut().zip(&schema.fields()[group_cols..]) {
            if c.data_type() != f.data_type() {
                *c = cast(c, f.data_type())?;
            }
        }
        let window = |rows: usize| -> ArrayRef {
            Arc::new(StructArray::new(
                window_fields(),
                vec![
                    Arc::new(TimestampNanosecondArray::from_value(
                        first.saturating_mul(self.slide_ns),
                        rows,
                    )),
                    Arc::new(TimestampNanosecondArray::from_value(
                        e.saturating_mul(self.slide_ns),
                        rows,
                    )),
                ],
                None,
            ))
        };
        let o = &self.outputs[oi];
        let window_pos = o.window_pos;
        let mut keep: Option<UInt32Array> = None;
        if let Some(pred) = &o.having {
            // Keys are not materialised to test it: it reads only aggregate columns.
            let rows = gids.len();
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            let mut cols: Vec<ArrayRef> = (0..group_cols)
                .map(|i| new_null_array(schema.field(i).data_type(), rows))
                .collect();
            cols[window_pos] = window(rows);
            cols.extend(values.iter().cloned());
            let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
            let mask = pred.evaluate(&b)?.into_array(rows)?;
            let mask = mask.as_boolean();
            keep = Some(
                (0..rows as u32)
                    .filter(|&i| mask.is_valid(i as usize) && mask.value(i as usize))
                    .collect(),
            );
        }
        if let Some(k) = &keep {
            gids = k.values().iter().map(|&i| gids[i as usize]).collect();
            values = values
                .iter()
                .map(|v| take(v, k, None))
                .collect::<Result<Vec<_>, _>>()?;
        }
        if let Some(limit) = &o.emit_limit
            && let Some(k) = limit.rows_to_keep(&values[limit.column - group_cols])?
        {
            gids = k.values().iter().map(|&i| gids[i as usize]).collect();
            values = values
                .iter()
                .map(|v| take(v, &k, None))
                .collect::<Result<Vec<_>, _>>()?;
        }
        if sort_kept && !gids.is_sorted() {
            let mut order: Vec<u32> = (0..gids.len() as u32).collect();
            order.sort_unstable_by_key(|&i| gids[i as usize]);
            gids = order.iter().map(|&i| gids[i as usize]).collect();
            let order = UInt32Array::from(order);
            values = values
                .iter()
                .map(|v| take(v, &order, None))
                .collect::<Result<Vec<_>, _>>()?;
        }
        let rows = gids.len();
        let o = &mut self.outputs[oi];
        o.emitted.clear();
        o.emitted.extend_from_slice(&gids);
        o.emitted_end = e;
        if rows == 0 {
            return Ok(None);
        }
        o.windows_emitted += 1;
        o.rows_emitted += rows as u64;
        let mut keys = if self.group.keys.is_empty() {
            Vec::new()
        } else {
            self.dict.keys(&gids)?
        };
        keys.insert(window_pos, window(rows));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (c, f) in keys.into_iter().zip(schema.fields()) {
            cols.push(if c.data_type() == f.data_type() {
                c
            } else {
                cast(&c, f.data_type())?
            });
        }
        cols.extend(values);
        Ok(Some(RecordBatch::try_new(schema, cols)?))
    }

    /// Output `o`'s aggregate values for `gids`, over slices `first .. e`.
    fn values(&mut self, oi: usize, first: i64, e: i64, gids: &[u32]) -> Result<Vec<ArrayRef>> {
        let o = &self.outputs[oi];
        let merged: Vec<usize> = o
            .aggs
            .iter()
            .zip(&o.running)
            .filter(|(_, r)| matches!(r, Running::Merge))
            .map(|(&a, _)| a)
            .collect();
        // Aggregates without running totals: their slices' states merged, by local group.
        let mut merged_values: Vec<ArrayRef> = Vec::new();
        let mut rows_of: Vec<u32> = Vec::new();
        if !merged.is_empty() {
            let mut accs: Vec<Box<dyn GroupsAccumulator>> = merged
                .iter()
                .map(|&a| self.aggs[a].accumulator())
                .collect::<Result<_>>()?;
            let map = &mut self.window_map;
            map.resize(self.dict.len(), u32::MAX);
            let mut groups: Vec<u32> = Vec::new();
            let local_ids = &mut self.local_ids;
            for (_, slice) in self.slices.range(first..e) {
                if slice.gids.is_empty() {
                    continue;
                }
                local_ids.clear();
                local_ids.extend(slice.gids.iter().map(|&g| {
                    let slot = &mut map[g as usize];
                    if *slot == u32::MAX {
                        *slot = groups.len() as u32;
                        groups.push(g);
                    }
                    *slot as usize
                }));
                let total = groups.len();
                for (acc, &a) in accs.iter_mut().zip(&merged) {
                    let Part::States(s) = &slice.parts[a] else {
                        return Err(Error::plan("internal: merging an incomplete slice"));
                    };
                    acc.merge_batch(s, local_ids, total)?;
                }
            }
            rows_of = gids.iter().map(|&g| map[g as usize]).collect();
            for &g in &groups {
                map[g as usize] = u32::MAX;
            }
            if rows_of.contains(&u32::MAX) {
                return Err(Error::plan(
                    "internal: a key of the window is in none of its slices",
                ));
            }
            merged_values = accs
                .iter_mut()
                .map(|a| a.evaluate(EmitTo::All))
                .collect::<Result<Vec<_>, _>>()?;
        }
        let idx = UInt32Array::from(rows_of);
        let o = &self.outputs[oi];
        let mut next_merged = 0;
        let mut cols = Vec::with_capacity(o.aggs.len());
        for (r, &a) in o.running.iter().zip(&o.aggs) {
            cols.push(match r {
                Running::Rows => Arc::new(Int64Array::from_iter_values(
                    gids.iter().map(|&g| o.rows[g as usize]),
                )) as ArrayRef,
                Running::Ints(v) => Arc::new(Int64Array::from_iter_values(
                    gids.iter().map(|&g| v[g as usize]),
                )) as ArrayRef,
                Running::Sum { sum, n } => Arc::new(Int64Array::from_iter(
                    gids.iter()
                        .map(|&g| (n[g as usize] > 0).then_some(sum[g as usize])),
                )),
                Running::Extreme { best, .. } => {
                    let t = self.aggs[a].expr.state_fields()?[0].data_type().clone();
                    let null = ScalarValue::try_from(&t)?;
                    ScalarValue::iter_to_array(gids.iter().map(|&g| {
                        best[g as usize]
                            .front()
                            .map_or_else(|| null.clone(), |e| e.1.clone())
                    }))?
                }
                Running::Stacks(st) => st.values(gids)?,
                Running::Merge => {
                    let v = take(&merged_values[next_merged], &idx, None)?;
                    next_merged += 1;
                    v
                }
            });
        }
        Ok(cols)
    }

    /// Reclaims the ids of keys (and distinct pairs) no slice holds any more, once they are
    /// at least half the dictionary (amortised: each compaction costs about what it keeps).
    fn maybe_compact(&mut self) -> Result<()> {
        let len = self.dict.len();
        // Nothing held (a flush, a quiet stream): every id goes.
        let empty = self.slices.is_empty() && len > 0;
        if empty || len >= 2 * self.live_after_compact + 4096 {
            let mut live_mark = vec![false; len];
            for s in self.slices.values() {
                for &g in &s.gids {
                    live_mark[g as usize] = true;
                }
            }
            let live: Vec<u32> = (0..len as u32).filter(|&g| live_mark[g as usize]).collect();
            let remap = self.dict.compact(&live)?;
            // Every entry of the spare is unset: only its length goes with the old ids.
            self.spare_local.truncate(live.len());
            if self.slices.is_empty() {
                self.spare_local = Vec::new();
            }
            self.remap_keys(&remap, live.len());
            self.live_after_compact = live.len();
            for d in 0..self.pairs.len() {
                self.compact_pairs(d, Some(&remap))?;
            }
        }
        for d in 0..self.pairs.len() {
            let p = &self.pairs[d];
            if (self.slices.is_empty() && p.len() > 0) || p.len() >= p.compact_at() {
                self.compact_pairs(d, None)?;
            }
        }
        self.window_map = Vec::new();
        Ok(())
    }

    fn remap_keys(&mut self, remap: &[u32], live: usize) {
        for s in self.slices.values_mut() {
            for g in s.gids.iter_mut() {
                *g = remap[*g as usize];
            }
            if s.open {
                s.local = vec![u32::MAX; live];
                for (l, &g) in s.gids.iter().enumerate() {
                    s.local[g as usize] = l as u32;
                }
            }
        }
        let move_vec = |v: &mut Vec<i64>| {
            let mut new = vec![0; live];
            for (old, &x) in v.iter().enumerate() {
                if let Some(&n) = remap.get(old)
                    && n != u32::MAX
                {
                    new[n as usize] = x;
                }
            }
            *v = new;
        };
        for o in &mut self.outputs {
            move_vec(&mut o.rows);
            for r in &mut o.running {
                match r {
                    Running::Ints(v) => move_vec(v),
                    Running::Sum { sum, n } => {
                        move_vec(sum);
                        move_vec(n);
                    }
                    Running::Extreme { best, .. } => {
                        let mut new = vec![VecDeque::new(); live];
                        for (old, d) in best.iter_mut().enumerate() {
                            if let Some(&n) = remap.get(old)
                                && n != u32::MAX
                            {
                                new[n as usize] = std::mem::take(d);
                            }
                        }
                        *best = new;
                    }
                    Running::Stacks(st) => st.remap_keys(remap, live),
                    Running::Rows | Running::Merge => {}
                }
            }
            for g in o.members.iter_mut() {
                *g = remap[*g as usize];
            }
            o.member_pos = vec![u32::MAX; live];
            for (i, &g) in o.members.iter().enumerate() {
                o.member_pos[g as usize] = i as u32;
            }
            o.emitted
                .retain(|&g| remap.get(g as usize).is_some_and(|&n| n != u32::MAX));
            for g in o.emitted.iter_mut() {
                *g = remap[*g as usize];
            }
        }
    }

    /// Keeps the pairs of distinct store `d` that a slice holds, renumbered (and their keys
    /// renumbered through `keys` after a key compaction).
    fn compact_pairs(&mut self, d: usize, keys: Option<&[u32]>) -> Result<()> {
        let slices_parts: Vec<usize> = self
            .aggs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.imp == AggImpl::Distinct(d))
            .map(|(i, _)| i)
            .collect();
        let store = &mut self.pairs[d];
        let len = store.len();
        let mut live_mark = vec![false; len];
        for s in self.slices.values() {
            for &a in &slices_parts {
                if let Part::Pairs(list) = &s.parts[a] {
                    for &p in list {
                        live_mark[p as usize] = true;
                    }
                }
            }
        }
        let live: Vec<u32> = (0..len as u32).filter(|&p| live_mark[p as usize]).collect();
        let remap = store.compact(&live, keys)?;
        for s in self.slices.values_mut() {
            for &a in &slices_parts {
                if let Part::Pairs(list) = &mut s.parts[a] {
                    for p in list.iter_mut() {
                        *p = remap[*p as usize];
                    }
                }
            }
        }
        Ok(())
    }
}

/// The lower bounds a predicate over a window's output puts on its aggregate columns: its
/// conjuncts `column >= n` / `column > n` (or mirrored) on columns from `group_cols` on, as
/// (aggregate position, least value). Other conjuncts are ignored: the predicate itself is
/// still evaluated on the keys that pass these.
fn count_floors(pred: &Arc<dyn PhysicalExpr>, group_cols: usize) -> Vec<(usize, i64)> {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    let Some(b) = pred.downcast_ref::<BinaryExpr>() else {
        return Vec::new();
    };
    if *b.op() == Operator::And {
        let mut v = count_floors(b.left(), group_cols);
        v.extend(count_floors(b.right(), group_cols));
        return v;
    }
    // Integer literals only: a float cast to an integer truncates toward zero, which would
    // turn `count(x) > -0.5` into a floor of 1.
    let int = |e: &Arc<dyn PhysicalExpr>| -> Option<i64> {
        let v = e.downcast_ref::<Literal>()?.value();
        if !v.data_type().is_integer() {
            return None;
        }
        match v.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }
    };
    let col = |e: &Arc<dyn PhysicalExpr>| {
        e.downcast_ref::<Column>()
            .map(|c| c.index())
            .filter(|&i| i >= group_cols)
            .map(|i| i - group_cols)
    };
    let bound = match (
        b.op(),
        col(b.left()),
        int(b.right()),
        int(b.left()),
        col(b.right()),
    ) {
        (Operator::GtEq, Some(k), Some(n), ..) | (Operator::LtEq, .., Some(n), Some(k)) => {
            Some((k, n))
        }
        (Operator::Gt, Some(k), Some(n), ..) | (Operator::Lt, .., Some(n), Some(k)) => {
            n.checked_add(1).map(|n| (k, n))
        }
        _ => None,
    };
    bound.into_iter().collect()
}

/// The running state a window of `kind` keeps for aggregate `a`.
pub(super) fn running_for(a: &Agg, kind: WindowKind) -> Running {
    match a.imp {
        AggImpl::Rows => Running::Rows,
        AggImpl::Count | AggImpl::Distinct(_) => Running::Ints(Vec::new()),
        AggImpl::SumInt => Running::Sum {
            sum: Vec::new(),
            n: Vec::new(),
        },
        AggImpl::Merge => match a.extreme() {
            Some(max) => Running::Extreme {
                max,
                best: Vec::new(),
                entries: 0,
            },
            None if kind.span() > 1 => Running::Stacks(Box::new(Stacks::new(a))),
            None => Running::Merge,
        },
    }
}

impl SliceAggregate {
    /// Slices before this no longer need aggregate `a`'s part: every window reading it has
    /// evicted them.
    fn freed_bound(&self, a: usize) -> i64 {
        self.outputs
            .iter()
            .filter(|o| o.aggs.contains(&a))
            .map(|o| o.evicted_below)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Sets each aggregate's freed bound from the windows reading it (after a restore).
    pub(super) fn reset_freed(&mut self) {
        for a in 0..self.aggs.len() {
            self.freed_below[a] = self.freed_bound(a);
        }
    }

    /// Number of group keys besides the window.
    pub fn key_count(&self) -> usize {
        self.group.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

    use super::*;

    fn bin(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    }
    fn col(i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new("c", i))
    }
    fn lit(v: ScalarValue) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(v))
    }

    /// `n >= 8 AND 3 <= d AND n > x AND k = 'a' AND m > 4` over group columns 0..2: bounds on
    /// aggregate columns from literals only.
    #[test]
    fn count_floors_of_a_having() {
        let p = bin(
            bin(
                bin(col(2), Operator::GtEq, lit(ScalarValue::Int64(Some(8)))),
                Operator::And,
                bin(lit(ScalarValue::Int32(Some(3))), Operator::LtEq, col(3)),
            ),
            Operator::And,
            bin(
                bin(
                    bin(col(2), Operator::Gt, col(4)),
                    Operator::And,
                    bin(col(0), Operator::Eq, lit(ScalarValue::from("a"))),
                ),
                Operator::And,
                bin(col(5), Operator::Gt, lit(ScalarValue::Int64(Some(4)))),
            ),
        );
        assert_eq!(count_floors(&p, 2), vec![(0, 8), (1, 3), (3, 5)]);
        // A disjunction bounds nothing.
        let or = bin(
            bin(col(2), Operator::GtEq, lit(ScalarValue::Int64(Some(8)))),
            Operator::Or,
            bin(col(3), Operator::GtEq, lit(ScalarValue::Int64(Some(3)))),
        );
        assert!(count_floors(&or, 2).is_empty());
        // Nor does a float: `n > -0.5` holds for a count of 0.
        let float = bin(col(2), Operator::Gt, lit(ScalarValue::Float64(Some(-0.5))));
        assert!(count_floors(&float, 2).is_empty());
    }
}
