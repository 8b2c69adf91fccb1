//! Snapshot and restore of a window operator's state.
//!
//! A snapshot holds what cannot be recomputed: the keys the slices hold, and each slice's
//! rows and parts. Running totals and distinct counts are rebuilt on restore by replaying the
//! complete slices each window still holds, so they cannot disagree with the slices.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt32Type};
use datafusion::logical_expr::EmitTo;

use super::SliceAggregate;
use super::operator::running_for;
use super::slices::{AggImpl, Part, Slice};
use crate::{Error, Result};

/// A checkpoint column read as `T`: a column of another type (a damaged or foreign file) is
/// an error, not a panic. `what` names the state ("window", "session").
pub(super) fn primitive<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    a: &'a ArrayRef,
    what: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    a.as_primitive_opt::<T>()
        .ok_or_else(|| Error::plan(format!("checkpoint: {what} state has the wrong shape")))
}

/// Layout of the window state in a checkpoint; another layout is refused.
pub const STATE_LAYOUT: u32 = 2;

/// What a checkpoint keeps of a [`SliceAggregate`] besides its arrays.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SliceCheckpoint {
    layout: u32,
    slide_ns: i64,
    /// The windows, as SQL would write them.
    kinds: Vec<String>,
    key_types: Vec<String>,
    aggs: Vec<String>,
    slices: Vec<SliceMeta>,
    /// Per window: slices before this have left it.
    evicted_below: Vec<i64>,
    done: i64,
    watermark: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SliceMeta {
    index: i64,
    open: bool,
    /// Per aggregate: whether the slice still holds its part.
    parts: Vec<bool>,
}

impl SliceAggregate {
    fn kinds_text(&self) -> Vec<String> {
        self.outputs.iter().map(|o| o.kind.describe()).collect()
    }

    /// The operator's state: the keys the slices hold (first batch), then per slice a batch of
    /// its groups (`gid` = row of the key batch, rows, then each held non-distinct part), then
    /// per slice and held distinct part a batch of its pairs (`gid`, value). Open slices keep
    /// receiving rows afterwards.
    pub fn snapshot(&mut self) -> Result<(SliceCheckpoint, Vec<RecordBatch>)> {
        let mut live_mark = vec![false; self.dict.len()];
        for s in self.slices.values() {
            for &g in &s.gids {
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
        let mut pair_batches = Vec::new();
        let mut metas = Vec::with_capacity(self.slices.len());
        for (&index, slice) in self.slices.iter_mut() {
            let gid_col = || -> ArrayRef {
                Arc::new(UInt32Array::from_iter_values(
                    slice.gids.iter().map(|&g| row_of[g as usize]),
                ))
            };
            let mut fields = vec![
                Field::new("gid", DataType::UInt32, false),
                Field::new("rows", DataType::Int64, false),
            ];
            let mut cols: Vec<ArrayRef> =
                vec![gid_col(), Arc::new(Int64Array::from(slice.rows.clone()))];
            let mut parts = Vec::with_capacity(self.aggs.len());
            let groups = slice.gids.len();
            let padded = |v: &Vec<i64>| -> ArrayRef {
                let mut v = v.clone();
                v.resize(groups, 0);
                Arc::new(Int64Array::from(v))
            };
            for (a, agg) in self.aggs.iter().enumerate() {
                let part = &mut slice.parts[a];
                parts.push(!matches!(part, Part::Freed));
                let mut push = |cols: &mut Vec<ArrayRef>, c: ArrayRef| {
                    fields.push(Field::new(
                        format!("a{a}_{}", cols.len()),
                        c.data_type().clone(),
                        true,
                    ));
                    cols.push(c);
                };
                match part {
                    Part::Freed => {}
                    Part::Ints(v) => push(&mut cols, padded(v)),
                    Part::Sum { sum, n } => {
                        push(&mut cols, padded(sum));
                        push(&mut cols, padded(n));
                    }
                    Part::States(s) => {
                        for c in s.iter() {
                            push(&mut cols, c.clone());
                        }
                    }
                    Part::Acc(acc) => {
                        // Taking the state empties the accumulator: merge it back into a new one.
                        let states = acc.state(EmitTo::All)?;
                        let mut fresh = agg.accumulator()?;
                        let ids: Vec<usize> = (0..groups).collect();
                        fresh.merge_batch(&states, &ids, groups)?;
                        *acc = fresh;
                        for c in states {
                            push(&mut cols, c);
                        }
                    }
                    Part::Pairs(list) => {
                        let AggImpl::Distinct(d) = agg.imp else {
                            return Err(Error::plan("internal: pairs of a non-distinct aggregate"));
                        };
                        let store = &self.pairs[d];
                        let gids: ArrayRef = Arc::new(UInt32Array::from_iter_values(
                            list.iter().map(|&p| row_of[store.gid[p as usize] as usize]),
                        ));
                        let values = store.values_of(list)?;
                        let schema = Schema::new(vec![
                            Field::new("gid", DataType::UInt32, false),
                            Field::new("value", values.data_type().clone(), true),
                        ]);
                        pair_batches
                            .push(RecordBatch::try_new(Arc::new(schema), vec![gids, values])?);
                    }
                }
            }
            batches.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?);
            metas.push(SliceMeta {
                index,
                open: slice.open,
                parts,
            });
        }
        batches.extend(pair_batches);
        Ok((
            SliceCheckpoint {
                layout: STATE_LAYOUT,
                slide_ns: self.slide_ns,
                kinds: self.kinds_text(),
                key_types: self.group.key_types(),
                aggs: self.aggs.iter().map(|a| a.describe.clone()).collect(),
                slices: metas,
                evicted_below: self.outputs.iter().map(|o| o.evicted_below).collect(),
                done: self.done,
                watermark: self.watermark,
            },
            batches,
        ))
    }

    /// Replaces the operator's state with a snapshot taken by [`SliceAggregate::snapshot`]
    /// of the same query.
    pub fn restore(&mut self, cp: &SliceCheckpoint, batches: &[RecordBatch]) -> Result<()> {
        let mismatch = |what: &str| {
            Err(Error::plan(format!(
                "the checkpoint does not match this query ({what} differ); \
                 start from a new checkpoint location"
            )))
        };
        if cp.layout != STATE_LAYOUT {
            return Err(Error::plan(format!(
                "the checkpoint's window state has layout {} and this skystream reads layout \
                 {STATE_LAYOUT}; start from a new checkpoint location",
                cp.layout
            )));
        }
        if cp.slide_ns != self.slide_ns || cp.kinds != self.kinds_text() {
            return mismatch("windows");
        }
        if cp.key_types != self.group.key_types() {
            return mismatch("group keys");
        }
        let aggs: Vec<String> = self.aggs.iter().map(|a| a.describe.clone()).collect();
        if cp.aggs != aggs {
            return mismatch("aggregates");
        }
        let bad = |why: &str| Err(Error::plan(format!("checkpoint: window state {why}")));
        let distinct_parts: usize = cp
            .slices
            .iter()
            .map(|s| {
                s.parts
                    .iter()
                    .zip(&self.aggs)
                    .filter(|(p, a)| **p && matches!(a.imp, AggImpl::Distinct(_)))
                    .count()
            })
            .sum();
        if batches.len() != 1 + cp.slices.len() + distinct_parts
            || cp.evicted_below.len() != self.outputs.len()
        {
            return bad("is incomplete");
        }
        let mut dict = super::dict::KeyDict::new(self.dict.schema.clone())?;
        let keys = &batches[0];
        if keys.num_rows() > 0 {
            let mut ids = Vec::new();
            dict.intern(keys.columns(), &mut ids)?;
            if ids.iter().enumerate().any(|(i, &id)| i != id) {
                return bad("has repeated keys");
            }
        }
        self.dict = dict;
        for p in &mut self.pairs {
            *p = super::slices::PairStore::new(p.values.schema.field(0))?;
        }
        let mut slices = std::collections::BTreeMap::new();
        let mut pair_batches = batches[1 + cp.slices.len()..].iter();
        for (meta, b) in cp.slices.iter().zip(&batches[1..]) {
            if meta.parts.len() != self.aggs.len() || b.num_columns() < 2 {
                return bad("has the wrong shape");
            }
            let gids: Vec<u32> = primitive::<UInt32Type>(b.column(0), "window")?
                .values()
                .to_vec();
            if gids.iter().any(|&g| g as usize >= self.dict.len()) {
                return bad("refers to an unknown key");
            }
            let mut slice = Slice::new(&self.aggs)?;
            slice.rows = primitive::<Int64Type>(b.column(1), "window")?
                .values()
                .to_vec();
            slice.open = meta.open;
            let groups = gids.len();
            let mut c = 2;
            let col = |c: &mut usize| -> Result<ArrayRef> {
                let r = b
                    .columns()
                    .get(*c)
                    .cloned()
                    .ok_or_else(|| Error::plan("checkpoint: window state has the wrong shape"));
                *c += 1;
                r
            };
            let ints = |a: ArrayRef| -> Result<Vec<i64>> {
                Ok(primitive::<Int64Type>(&a, "window")?.values().to_vec())
            };
            for (a, agg) in self.aggs.iter().enumerate() {
                if !meta.parts[a] {
                    slice.parts[a] = Part::Freed;
                    continue;
                }
                slice.parts[a] = match agg.imp {
                    // Kept by the slice's rows (a checkpoint of an older build stored it).
                    AggImpl::Rows => {
                        col(&mut c)?;
                        Part::Freed
                    }
                    AggImpl::Count => Part::Ints(ints(col(&mut c)?)?),
                    AggImpl::SumInt => Part::Sum {
                        sum: ints(col(&mut c)?)?,
                        n: ints(col(&mut c)?)?,
                    },
                    AggImpl::Merge => {
                        let w = agg.expr.state_fields()?.len();
                        let states = (0..w).map(|_| col(&mut c)).collect::<Result<Vec<_>>>()?;
                        if meta.open {
                            let mut acc = agg.accumulator()?;
                            let ids: Vec<usize> = (0..groups).collect();
                            acc.merge_batch(&states, &ids, groups)?;
                            Part::Acc(acc)
                        } else {
                            Part::States(states)
                        }
                    }
                    AggImpl::Distinct(d) => {
                        let Some(pb) = pair_batches.next() else {
                            return bad("is incomplete");
                        };
                        let store = &mut self.pairs[d];
                        let mut list = Vec::with_capacity(pb.num_rows());
                        if pb.num_rows() > 0 {
                            let gids = primitive::<UInt32Type>(pb.column(0), "window")?.values();
                            if gids.iter().any(|&g| g as usize >= self.dict.len()) {
                                return bad("refers to an unknown key");
                            }
                            store.intern(gids, pb.column(1))?;
                            for &p in &store.ids {
                                if meta.open {
                                    store.seen_in[p] = meta.index;
                                }
                                list.push(p as u32);
                            }
                        }
                        Part::Pairs(list)
                    }
                };
            }
            if slice.rows.len() != groups {
                return bad("has the wrong shape");
            }
            if meta.open {
                slice.local = vec![u32::MAX; self.dict.len()];
                for (l, &g) in gids.iter().enumerate() {
                    slice.local[g as usize] = l as u32;
                }
            }
            slice.gids = gids;
            slices.insert(meta.index, slice);
        }
        self.slices = slices;
        self.done = cp.done;
        self.watermark = cp.watermark;
        self.live_after_compact = self.dict.len();
        // Running state: replay the complete slices each window holds, oldest first.
        let n = self.dict.len();
        for (o, &ev) in self.outputs.iter_mut().zip(&cp.evicted_below) {
            o.rows.clear();
            o.members.clear();
            o.member_pos.clear();
            o.emitted.clear();
            o.emitted_end = i64::MIN;
            o.running = o
                .aggs
                .iter()
                .map(|&a| running_for(&self.aggs[a], o.kind))
                .collect();
            o.evicted_below = ev;
            o.grow(n);
        }
        let done = self.done;
        for (&s, slice) in self.slices.range(..done) {
            for o in &mut self.outputs {
                if s >= o.evicted_below {
                    o.apply(slice, s, 1)?;
                }
            }
            for (a, agg) in self.aggs.iter().enumerate() {
                let (AggImpl::Distinct(d), Part::Pairs(list)) = (agg.imp, &slice.parts[a]) else {
                    continue;
                };
                let store = &mut self.pairs[d];
                for &pair in list {
                    let pair = pair as usize;
                    let old = store.last[pair];
                    let g = store.gid[pair] as usize;
                    for o in &mut self.outputs {
                        if s >= o.evicted_below {
                            o.pair_enters(a, g, old);
                        }
                    }
                    store.last[pair] = s;
                }
            }
        }
        for p in &mut self.pairs {
            p.live_after_compact = p.len();
        }
        self.reset_freed();
        self.window_map.clear();
        self.account()
    }
}
