//! What the slice operator keeps: aggregates and how each is computed, the per-slide slices,
//! and the exact sliding `count(DISTINCT)` store.
//!
//! Per aggregate, one of:
//! * **count / integer sum** — invertible: a slice holds one total per key, a window a running
//!   total per key that gains a slice's totals when the slice completes and loses them when it
//!   leaves the window (subtract-on-evict), so a slide costs the keys of two slices whatever
//!   the window's width;
//! * **count(DISTINCT x)** — a slice holds the (key, value) pairs seen in it; each pair
//!   remembers the last completed slice it was seen in, and a window counts a pair when it
//!   enters with a slice while its last sighting is outside the window, and uncounts it when
//!   the slice of its last sighting leaves. One entry per live pair, not a set per key per
//!   slice;
//! * **min / max** — per window and key, a monotonic deque of the slices' values;
//! * **any other DataFusion aggregate** — its `GroupsAccumulator` per slice, frozen into its
//!   state arrays when the slice completes; a window spanning several slices keeps them in
//!   sparse two-stacks ([`super::stacks`]), a one-slice window reads its slice's state.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, Schema};
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use super::dict::{KeyDict, arrays_bytes};
use crate::Result;

/// How an aggregate is computed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AggImpl {
    /// `count(*)` (of a constant, no FILTER): the rows a window holds of the key, which it
    /// keeps anyway.
    Rows,
    Count,
    SumInt,
    /// Exact distinct count: the index of its pair store.
    Distinct(usize),
    Merge,
}

pub(super) struct Agg {
    pub expr: Arc<AggregateFunctionExpr>,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub imp: AggImpl,
    /// What it computes, as text (aggregates of fused windows are shared by it).
    pub describe: String,
}

impl Agg {
    pub fn new(
        expr: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input: &Schema,
    ) -> Result<Self> {
        let args = expr.expressions();
        let name = expr.fun().name().to_ascii_lowercase();
        let out = expr.field().data_type().clone();
        let int_arg = |i: usize| -> Result<bool> {
            Ok(args
                .get(i)
                .map(|a| a.data_type(input))
                .transpose()?
                .is_some_and(|t| {
                    matches!(
                        t,
                        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
                    )
                }))
        };
        let imp = match name.as_str() {
            "count" if expr.is_distinct() && args.len() == 1 => AggImpl::Distinct(usize::MAX),
            "count"
                if !expr.is_distinct()
                    && out == DataType::Int64
                    && filter.is_none()
                    && args.iter().all(|a| {
                        a.downcast_ref::<Literal>()
                            .is_some_and(|l| !l.value().is_null())
                    }) =>
            {
                AggImpl::Rows
            }
            "count" if !expr.is_distinct() && out == DataType::Int64 => AggImpl::Count,
            "sum"
                if !expr.is_distinct()
                    && args.len() == 1
                    && out == DataType::Int64
                    && int_arg(0)? =>
            {
                AggImpl::SumInt
            }
            _ => AggImpl::Merge,
        };
        let describe = describe_agg(&expr, &args, filter.as_ref());
        Ok(Self {
            expr,
            args,
            filter,
            imp,
            describe,
        })
    }

    /// For `min` / `max` (one argument, its state the value): whether it is `max`.
    pub fn extreme(&self) -> Option<bool> {
        let name = self.expr.fun().name().to_ascii_lowercase();
        let one_state =
            !self.expr.is_distinct() && self.expr.state_fields().is_ok_and(|f| f.len() == 1);
        match name.as_str() {
            "min" if self.args.len() == 1 && one_state => Some(false),
            "max" if self.args.len() == 1 && one_state => Some(true),
            _ => None,
        }
    }

    /// Reads column `map[i]` of `schema` wherever it read column `i`.
    pub fn remap_input(&mut self, map: &[usize], schema: &Schema) -> Result<()> {
        self.args = self
            .args
            .iter()
            .map(|a| super::remap_columns(a, map, schema))
            .collect::<Result<_>>()?;
        self.filter = self
            .filter
            .as_ref()
            .map(|f| super::remap_columns(f, map, schema))
            .transpose()?;
        self.describe = describe_agg(&self.expr, &self.args, self.filter.as_ref());
        Ok(())
    }

    pub fn accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        accumulator_of(&self.expr)
    }

    /// An empty part of a new slice.
    pub fn new_part(&self) -> Result<Part> {
        Ok(match self.imp {
            AggImpl::Rows => Part::Freed,
            AggImpl::Count => Part::Ints(Vec::new()),
            AggImpl::SumInt => Part::Sum {
                sum: Vec::new(),
                n: Vec::new(),
            },
            AggImpl::Distinct(_) => Part::Pairs(Vec::new()),
            AggImpl::Merge => Part::Acc(self.accumulator()?),
        })
    }
}

/// A new groups accumulator of `expr` (DataFusion's adapter for aggregates without one).
pub(super) fn accumulator_of(
    expr: &Arc<AggregateFunctionExpr>,
) -> Result<Box<dyn GroupsAccumulator>> {
    if expr.groups_accumulator_supported() {
        Ok(expr.create_groups_accumulator()?)
    } else {
        let e = expr.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            e.create_accumulator()
        })))
    }
}

fn describe_agg(
    expr: &AggregateFunctionExpr,
    args: &[Arc<dyn PhysicalExpr>],
    filter: Option<&Arc<dyn PhysicalExpr>>,
) -> String {
    let mut d = format!(
        "{}{}(",
        expr.fun().name(),
        if expr.is_distinct() { " DISTINCT" } else { "" }
    );
    for a in args {
        d.push_str(&format!("{a}, "));
    }
    d.push(')');
    if let Some(f) = filter {
        d.push_str(&format!(" FILTER ({f})"));
    }
    if !expr.order_bys().is_empty() {
        d.push_str(&format!(" ORDER BY {:?}", expr.order_bys()));
    }
    d
}

/// One aggregate's state in one slice, by the slice's local group.
pub(super) enum Part {
    Ints(Vec<i64>),
    Sum {
        sum: Vec<i64>,
        n: Vec<i64>,
    },
    /// Pair ids seen in the slice (deduplicated when the slice completes).
    Pairs(Vec<u32>),
    /// A DataFusion accumulator receiving rows.
    Acc(Box<dyn GroupsAccumulator>),
    /// Its state arrays once the slice is complete.
    States(Vec<ArrayRef>),
    /// No window needs it any more.
    Freed,
}

impl Part {
    pub fn bytes(&self) -> usize {
        match self {
            Part::Ints(v) => v.capacity() * size_of::<i64>(),
            Part::Sum { sum, n } => (sum.capacity() + n.capacity()) * size_of::<i64>(),
            Part::Pairs(p) => p.capacity() * size_of::<u32>(),
            Part::Acc(a) => a.size(),
            Part::States(s) => arrays_bytes(s),
            Part::Freed => 0,
        }
    }
}

/// The rows of one slide: keys present (by local group) and each aggregate's part.
pub(super) struct Slice {
    /// Dictionary id -> local group (`u32::MAX`: absent); kept only while the slice is open.
    pub local: Vec<u32>,
    pub gids: Vec<u32>,
    /// Rows per local group: a window holds a key while it holds any of its rows.
    pub rows: Vec<i64>,
    pub parts: Vec<Part>,
    /// Still receiving rows (the watermark has not passed its end).
    pub open: bool,
}

impl Slice {
    pub fn new(aggs: &[Agg]) -> Result<Self> {
        Ok(Self {
            local: Vec::new(),
            gids: Vec::new(),
            rows: Vec::new(),
            parts: aggs.iter().map(Agg::new_part).collect::<Result<_>>()?,
            open: true,
        })
    }

    pub fn bytes(&self) -> usize {
        (self.local.capacity() + self.gids.capacity()) * size_of::<u32>()
            + self.rows.capacity() * size_of::<i64>()
            + self.parts.iter().map(Part::bytes).sum::<usize>()
    }

    /// Local group of each dictionary id in `ids` (new groups for keys new to the slice).
    pub fn locals(&mut self, ids: &[usize], dict_len: usize, out: &mut Vec<usize>) {
        if self.local.len() < dict_len {
            self.local.resize(dict_len, u32::MAX);
        }
        out.clear();
        out.extend(ids.iter().map(|&g| {
            let slot = &mut self.local[g];
            if *slot == u32::MAX {
                *slot = self.gids.len() as u32;
                self.gids.push(g as u32);
                self.rows.push(0);
            }
            *slot as usize
        }));
        for &l in out.iter() {
            self.rows[l] += 1;
        }
    }

    /// The slice is complete: accumulators become their state. The local map is returned
    /// with every entry unset, for the next slice to reuse (it is as long as the dictionary:
    /// growing a fresh one per slice was a tenth of a megabyte copied per thousand keys).
    pub fn close(&mut self) -> Result<Vec<u32>> {
        for p in &mut self.parts {
            if let Part::Acc(a) = p {
                *p = Part::States(a.state(datafusion::logical_expr::EmitTo::All)?);
            }
        }
        let mut local = std::mem::take(&mut self.local);
        for &g in &self.gids {
            if let Some(slot) = local.get_mut(g as usize) {
                *slot = u32::MAX;
            }
        }
        self.open = false;
        Ok(local)
    }
}

/// Which rows of a batch an aggregate reads: its FILTER and, for counts, non-null arguments.
pub(super) fn counted_rows(
    args: &[ArrayRef],
    filter: Option<&BooleanArray>,
) -> Option<BooleanArray> {
    let mut mask: Option<BooleanArray> = filter.map(|f| {
        // A NULL filter value does not count the row.
        match f.nulls() {
            Some(n) => BooleanArray::new(f.values() & n.inner(), None),
            None => f.clone(),
        }
    });
    for a in args {
        if let Some(n) = a.logical_nulls() {
            let valid = BooleanArray::new(n.inner().clone(), None);
            mask = Some(match mask {
                Some(m) => BooleanArray::new(m.values() & valid.values(), None),
                None => valid,
            });
        }
    }
    mask
}

/// Adds one to `v[local]` for each counted row.
pub(super) fn count_into(
    v: &mut Vec<i64>,
    groups: usize,
    locals: &[usize],
    mask: Option<&BooleanArray>,
) {
    v.resize(groups, 0);
    match mask {
        None => locals.iter().for_each(|&l| v[l] += 1),
        Some(m) => {
            for (i, &l) in locals.iter().enumerate() {
                v[l] += m.value(i) as i64;
            }
        }
    }
}

/// Adds each counted row's integer to `sum[local]` (wrapping, as DataFusion's sum does).
pub(super) fn sum_into(
    sum: &mut Vec<i64>,
    n: &mut Vec<i64>,
    groups: usize,
    locals: &[usize],
    arg: &ArrayRef,
    mask: Option<&BooleanArray>,
) -> Result<()> {
    sum.resize(groups, 0);
    n.resize(groups, 0);
    let arg = cast(arg, &DataType::Int64)?;
    let vals = arg.as_primitive::<Int64Type>().values();
    for (i, &l) in locals.iter().enumerate() {
        if mask.is_none_or(|m| m.value(i)) {
            sum[l] = sum[l].wrapping_add(vals[i]);
            n[l] += 1;
        }
    }
    Ok(())
}

/// The (key, value) pairs of one `count(DISTINCT)`: values interned once (rows of one post
/// repeat their value, so runs of equal values are interned once), each pair an id by
/// `(key id, value id)`, with its key and the last completed slice it was seen in.
pub(super) struct PairStore {
    pub values: KeyDict,
    map: hashbrown::HashMap<u64, u32>,
    pub gid: Vec<u32>,
    pub vid: Vec<u32>,
    /// Last completed slice holding the pair (`NEVER`: none yet).
    pub last: Vec<i64>,
    /// Last open slice the pair was recorded in (a cheap first deduplication).
    pub seen_in: Vec<i64>,
    pub live_after_compact: usize,
    /// Pair ids of the last [`PairStore::intern`].
    pub ids: Vec<usize>,
    runs: Vec<u32>,
    vids: Vec<usize>,
}

pub(super) const NEVER: i64 = i64::MIN;

/// A pair store is compacted when it holds this many times the pairs it kept last time: a
/// compaction rebuilds the map of the live pairs, so the factor trades memory (a few dozen
/// bytes a pair) for rebuilds (with 2, a tenth of the trend query's time went to them).
pub(super) const PAIR_GROWTH: usize = 4;

impl PairStore {
    pub fn new(value: &arrow::datatypes::Field) -> Result<Self> {
        let schema = Schema::new(vec![value.clone().with_name("value")]);
        Ok(Self {
            values: KeyDict::new(Arc::new(schema))?,
            map: hashbrown::HashMap::new(),
            gid: Vec::new(),
            vid: Vec::new(),
            last: Vec::new(),
            seen_in: Vec::new(),
            live_after_compact: 0,
            ids: Vec::new(),
            runs: Vec::new(),
            vids: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.gid.len()
    }

    /// The size at which dead pairs are reclaimed ([`PAIR_GROWTH`]).
    pub fn compact_at(&self) -> usize {
        PAIR_GROWTH * self.live_after_compact + 4096
    }

    pub fn bytes(&self) -> usize {
        self.values.bytes()
            + self.map.capacity() * (size_of::<(u64, u32)>() + 1)
            + (self.gid.capacity() + self.vid.capacity() + self.runs.capacity()) * size_of::<u32>()
            + (self.last.capacity() + self.seen_in.capacity()) * size_of::<i64>()
            + (self.ids.capacity() + self.vids.capacity()) * size_of::<usize>()
    }

    /// Interns the pairs (`gids[i]`, `values[i]`); their ids are in `self.ids`.
    pub fn intern(&mut self, gids: &[u32], values: &ArrayRef) -> Result<()> {
        let n = values.len();
        self.ids.clear();
        if n == 0 {
            return Ok(());
        }
        // Rows starting a run of equal values: each row against the one before it, in one
        // vectorised comparison.
        self.runs.clear();
        self.runs.push(0);
        if n > 1 {
            let (next, prev) = (values.slice(1, n - 1), values.slice(0, n - 1));
            match arrow::compute::kernels::cmp::distinct(&next, &prev) {
                Ok(changed) => {
                    let changed = match changed.nulls() {
                        Some(nulls) => changed.values() & nulls.inner(),
                        None => changed.values().clone(),
                    };
                    self.runs
                        .extend(changed.set_indices().map(|i| i as u32 + 1));
                }
                // Types the kernel does not compare (nested ones): row by row.
                Err(_) => {
                    let cmp = arrow::array::make_comparator(
                        values.as_ref(),
                        values.as_ref(),
                        Default::default(),
                    )?;
                    self.runs.extend(
                        (1..n)
                            .filter(|&i| cmp(i - 1, i) != std::cmp::Ordering::Equal)
                            .map(|i| i as u32),
                    );
                }
            }
        }
        let firsts = arrow::compute::take(
            values,
            &arrow::array::UInt32Array::from(self.runs.clone()),
            None,
        )?;
        let mut vids = std::mem::take(&mut self.vids);
        let r = self.values.intern(&[firsts], &mut vids);
        self.vids = vids;
        r?;
        let mut run = 0;
        for (i, &g) in gids.iter().enumerate() {
            if run + 1 < self.runs.len() && self.runs[run + 1] as usize == i {
                run += 1;
            }
            let v = self.vids[run] as u32;
            let key = (u64::from(g) << 32) | u64::from(v);
            let next = self.gid.len() as u32;
            let id = *self.map.entry(key).or_insert(next);
            if id == next {
                self.gid.push(g);
                self.vid.push(v);
                self.last.push(NEVER);
                self.seen_in.push(NEVER);
            }
            self.ids.push(id as usize);
        }
        Ok(())
    }

    /// The values of pairs `ids`.
    pub fn values_of(&self, ids: &[u32]) -> Result<ArrayRef> {
        let vids: Vec<u32> = ids.iter().map(|&p| self.vid[p as usize]).collect();
        Ok(self.values.keys(&vids)?.remove(0))
    }

    /// Keeps pairs `live` (ascending ids), renumbered `0..live.len()`, their keys renumbered
    /// through `keys` (after a key compaction) when given; returns the old -> new pair id map.
    pub fn compact(&mut self, live: &[u32], keys: Option<&[u32]>) -> Result<Vec<u32>> {
        let mut used = vec![false; self.values.len()];
        for &p in live {
            used[self.vid[p as usize] as usize] = true;
        }
        let live_values: Vec<u32> = (0..self.values.len() as u32)
            .filter(|&v| used[v as usize])
            .collect();
        let vmap = self.values.compact(&live_values)?;
        let mut remap = vec![u32::MAX; self.len()];
        // Room for what the store may reach before the next compaction: the map is not
        // rehashed while it grows.
        let mut map = hashbrown::HashMap::with_capacity(PAIR_GROWTH * live.len() + 4096);
        let (mut gid, mut vid, mut last, mut seen_in) = (
            Vec::with_capacity(live.len()),
            Vec::with_capacity(live.len()),
            Vec::with_capacity(live.len()),
            Vec::with_capacity(live.len()),
        );
        for (new, &p) in live.iter().enumerate() {
            let p = p as usize;
            let g = keys.map_or(self.gid[p], |k| k[self.gid[p] as usize]);
            let v = vmap[self.vid[p] as usize];
            map.insert((u64::from(g) << 32) | u64::from(v), new as u32);
            gid.push(g);
            vid.push(v);
            last.push(self.last[p]);
            seen_in.push(self.seen_in[p]);
            remap[p] = new as u32;
        }
        (self.map, self.gid, self.vid, self.last, self.seen_in) = (map, gid, vid, last, seen_in);
        self.live_after_compact = live.len();
        Ok(remap)
    }
}
