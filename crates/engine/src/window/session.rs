//! The session operator: `session(gap)` per key (Flink's SESSION window). A key's session
//! holds rows less than `gap` apart; it ends `gap` after its last row and is emitted once the
//! watermark reaches that end. Rows out of order within the watermark may start a session
//! before another of the key's, or bridge two into one (their states merge).
//!
//! Sessions have no common boundaries, so they share no slices: each open session keeps one
//! DataFusion `Accumulator` per aggregate (any aggregate, DISTINCT included), updated with
//! its rows as they arrive, merged when sessions join, and evaluated when it ends. State is
//! bounded by the open sessions, charged to the pipeline's memory pool and checkpointed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use arrow::compute::{cast, filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use super::dict::KeyDict;
use super::group::{Grouping, MemoryCharge};
use super::kind::WindowKind;
use super::slices::Agg;
use super::{WindowStats, window_fields};
use crate::{Error, Result};

/// One open session of a key: `[start, end)`, `end` being its last row's time plus the gap.
struct Session {
    gid: u32,
    start: i64,
    end: i64,
    /// The end under which it is in `by_end` (`i64::MIN`: not there).
    indexed: i64,
    accs: Vec<Box<dyn Accumulator>>,
    /// Taken into another session (during a batch), or closed.
    dead: bool,
}

/// A streaming `GROUP BY key..., session(gap)` (see the module docs).
pub struct SessionAggregate {
    gap: i64,
    group: Grouping,
    aggs: Vec<Agg>,
    schema: SchemaRef,
    window_pos: usize,
    dict: KeyDict,
    live_after_compact: usize,
    /// The open sessions by (key, start): a key's do not overlap, so they are in end order
    /// too. One ordered map, not a list per key: a key with many sessions (rows far apart
    /// arriving out of order) costs a logarithm per row, not a shift of its list.
    open: BTreeMap<(u32, i64), u32>,
    sessions: Vec<Session>,
    free: Vec<u32>,
    /// Open sessions by end: the next to close first.
    by_end: BTreeSet<(i64, u32)>,
    watermark: i64,
    having: Option<Arc<dyn PhysicalExpr>>,
    late_rows: u64,
    windows_emitted: u64,
    rows_emitted: u64,
    acc_bytes: usize,
    memory: MemoryCharge,
    stop: Option<crate::stop::StopHandle>,
    ids: Vec<usize>,
}

impl std::fmt::Debug for SessionAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAggregate")
            .field("gap", &self.gap)
            .field("sessions", &self.by_end.len())
            .finish()
    }
}

impl SessionAggregate {
    pub(super) fn new(agg: &AggregateExec, group: Grouping, gap: i64) -> Result<Self> {
        let inner = super::partial_of(agg);
        let input_schema = inner.input_schema();
        let aggs = inner
            .aggr_expr()
            .iter()
            .zip(inner.filter_expr())
            .map(|(a, f)| Agg::new(a.clone(), f.clone(), &input_schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gap,
            dict: KeyDict::new(group.key_schema.clone())?,
            window_pos: group.window_pos,
            group,
            aggs,
            schema: agg.schema(),
            live_after_compact: 0,
            open: BTreeMap::new(),
            sessions: Vec::new(),
            free: Vec::new(),
            by_end: BTreeSet::new(),
            watermark: i64::MIN,
            having: None,
            late_rows: 0,
            windows_emitted: 0,
            rows_emitted: 0,
            acc_bytes: 0,
            memory: MemoryCharge::default(),
            stop: None,
            ids: Vec::new(),
        })
    }

    pub fn kind(&self) -> WindowKind {
        WindowKind::Session { gap: self.gap }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn window_column(&self) -> usize {
        self.window_pos
    }

    pub fn key_count(&self) -> usize {
        self.group.keys.len()
    }

    pub fn filter_emission(&mut self, predicate: Arc<dyn PhysicalExpr>) {
        self.having = Some(predicate);
    }

    pub fn set_stop(&mut self, stop: crate::stop::StopHandle) {
        self.stop = Some(stop);
    }

    pub fn track_memory(&mut self, pool: &Arc<dyn MemoryPool>, name: impl Into<String>) {
        self.memory = MemoryCharge::new(pool, name);
    }

    pub fn remap_input(&mut self, map: &[usize], schema: &Schema) -> Result<()> {
        if self.watermark != i64::MIN || !self.by_end.is_empty() {
            return Err(Error::plan("internal: remapping a running window"));
        }
        self.group.remap_input(&mut self.aggs, map, schema)
    }

    /// What the operator computes, as text.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.kind().describe(), self.group.describe());
        s.push_str(" aggs=[");
        for a in &self.aggs {
            s.push_str(&a.describe);
            s.push_str(", ");
        }
        s.push(']');
        s
    }

    pub fn describe_aggregates(&self) -> String {
        self.aggs
            .iter()
            .map(|a| format!("{} [per session]", a.expr.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn state_bytes(&self) -> usize {
        self.dict.bytes()
            + self.acc_bytes
            + self.sessions.capacity() * size_of::<Session>()
            + (self.open.len() + self.by_end.len()) * 2 * size_of::<(u32, i64, u32)>()
            + self.ids.capacity() * size_of::<usize>()
    }

    fn account(&mut self) -> Result<()> {
        let bytes = self.state_bytes();
        let what = format!("{} open sessions", self.by_end.len());
        self.memory.resize(bytes, &what)
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats {
            windows_emitted: self.windows_emitted,
            rows_emitted: self.rows_emitted,
            late_rows: self.late_rows,
            open_panes: self.by_end.len(),
            keys: self.dict.len(),
            memory_bytes: self.state_bytes(),
        }
    }

    fn new_session(&mut self, gid: u32, start: i64, end: i64) -> Result<u32> {
        let accs = self
            .aggs
            .iter()
            .map(|a| a.expr.create_accumulator())
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        // Sizes are tracked by difference from here on (updates, merges, closing).
        self.acc_bytes += accs.iter().map(|a| a.size()).sum::<usize>();
        let s = Session {
            gid,
            start,
            end,
            indexed: i64::MIN,
            accs,
            dead: false,
        };
        Ok(match self.free.pop() {
            Some(slot) => {
                self.sessions[slot as usize] = s;
                slot
            }
            None => {
                self.sessions.push(s);
                (self.sessions.len() - 1) as u32
            }
        })
    }

    /// Adds a batch of input rows. Rows older than the watermark are dropped and counted.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<()> {
        let (rows, late) = self.group.on_time(batch, self.watermark)?;
        self.late_rows += late as u64;
        let Some((batch, ts)) = rows else {
            return Ok(());
        };
        let n = batch.num_rows();
        let keys = self.group.key_columns(&batch)?;
        let mut ids = std::mem::take(&mut self.ids);
        self.dict.intern(&keys, &mut ids)?;
        let (args, filters) = super::group::evaluate_args(&self.aggs, &batch)?;
        // Each row to its key's session overlapping `[t, t + gap)` (extended to hold it, and
        // taking in the next sessions it now reaches), or to a new one.
        let gap = self.gap;
        let mut slot_of = Vec::with_capacity(n);
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (&g, &t) in ids.iter().zip(ts.values()) {
            let g = g as u32;
            let end = t.saturating_add(gap);
            let slot = match self.first_ending_after(g, t) {
                Some((start, s)) if start < end => {
                    if t < start {
                        self.open.remove(&(g, start));
                        self.open.insert((g, t), s);
                        self.sessions[s as usize].start = t;
                    }
                    if end > self.sessions[s as usize].end {
                        self.sessions[s as usize].end = end;
                        self.take_in_reached(g, s, &mut merged);
                    }
                    s
                }
                _ => {
                    let s = self.new_session(g, t, end)?;
                    self.open.insert((g, t), s);
                    s
                }
            };
            slot_of.push(slot);
        }
        self.ids = ids;
        // States of sessions taken into another go to the session that holds them now.
        let mut forward: hashbrown::HashMap<u32, u32> = hashbrown::HashMap::new();
        for &(into, from) in &merged {
            forward.insert(from, into);
        }
        let resolve = |mut s: u32| {
            while let Some(&n) = forward.get(&s) {
                s = n;
            }
            s
        };
        for &(_, from) in &merged {
            let to = resolve(from);
            let accs = std::mem::take(&mut self.sessions[from as usize].accs);
            for (a, mut acc) in accs.into_iter().enumerate() {
                self.acc_bytes = self.acc_bytes.saturating_sub(acc.size());
                let state = acc
                    .state()?
                    .into_iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                let target = &mut self.sessions[to as usize].accs[a];
                let before = target.size();
                target.merge_batch(&state)?;
                self.acc_bytes = (self.acc_bytes + target.size()).saturating_sub(before);
            }
            let old = self.sessions[from as usize].indexed;
            self.by_end.remove(&(old, from));
            self.free.push(from);
        }
        for s in &mut slot_of {
            *s = resolve(*s);
        }
        // Rows by session, in input order within each; each session is then indexed by its
        // new end.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| slot_of[i as usize]);
        let mut i = 0;
        while i < n {
            let slot = slot_of[order[i] as usize];
            let mut j = i + 1;
            while j < n && slot_of[order[j] as usize] == slot {
                j += 1;
            }
            let idx = UInt32Array::from(order[i..j].to_vec());
            for (a, (cols, f)) in args.iter().zip(&filters).enumerate() {
                let idx = match f {
                    Some(f) => idx
                        .values()
                        .iter()
                        .copied()
                        .filter(|&r| f.is_valid(r as usize) && f.value(r as usize))
                        .collect(),
                    None => idx.clone(),
                };
                if idx.is_empty() {
                    continue;
                }
                let taken = cols
                    .iter()
                    .map(|c| take(c, &idx, None))
                    .collect::<Result<Vec<_>, _>>()?;
                let acc = &mut self.sessions[slot as usize].accs[a];
                let before = acc.size();
                acc.update_batch(&taken)?;
                self.acc_bytes = (self.acc_bytes + acc.size()).saturating_sub(before);
            }
            let sess = &mut self.sessions[slot as usize];
            if sess.indexed != sess.end {
                self.by_end.remove(&(sess.indexed, slot));
                sess.indexed = sess.end;
                self.by_end.insert((sess.end, slot));
            }
            i = j;
        }
        self.account()
    }

    /// Key `g`'s first open session ending after `t`: (start, slot).
    fn first_ending_after(&self, g: u32, t: i64) -> Option<(i64, u32)> {
        // The last one starting at or before `t` if it reaches past `t` (those before it end
        // before it starts), else the first starting after `t`.
        if let Some((&(_, start), &s)) = self.open.range((g, i64::MIN)..=(g, t)).next_back()
            && self.sessions[s as usize].end > t
        {
            return Some((start, s));
        }
        self.open
            .range((g, t.saturating_add(1))..=(g, i64::MAX))
            .next()
            .map(|(&(_, start), &s)| (start, s))
    }

    /// Session `s` of key `g` grew to a new end: the key's next sessions starting before it
    /// join it.
    fn take_in_reached(&mut self, g: u32, s: u32, merged: &mut Vec<(u32, u32)>) {
        let from = self.sessions[s as usize].start.saturating_add(1);
        loop {
            let end = self.sessions[s as usize].end;
            let Some((&(_, start), &next)) = self.open.range((g, from)..=(g, i64::MAX)).next()
            else {
                return;
            };
            if start >= end {
                return;
            }
            let next_end = self.sessions[next as usize].end;
            self.sessions[s as usize].end = end.max(next_end);
            self.sessions[next as usize].dead = true;
            self.open.remove(&(g, start));
            merged.push((s, next));
        }
    }

    /// The end of the next session to close, in ns.
    pub fn next_end(&self) -> Option<i64> {
        self.by_end.first().map(|&(e, _)| e)
    }

    /// Advances the watermark and returns the sessions it closes, in one batch, with the
    /// latest end among them. `i64::MAX` closes every session.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<(i64, usize, RecordBatch)>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let mut closing = Vec::new();
        while let Some(&(end, s)) = self.by_end.first() {
            if end > watermark {
                break;
            }
            if self.stop.as_ref().is_some_and(|s| s.is_aborted()) {
                return Err(Error::Stopped("aborted while emitting windows".into()));
            }
            self.by_end.pop_first();
            closing.push((end, s));
        }
        let out = if closing.is_empty() {
            Vec::new()
        } else {
            let last = closing.last().map_or(0, |c| c.0);
            let batch = self.emit(&closing)?;
            for &(_, s) in &closing {
                let sess = &mut self.sessions[s as usize];
                sess.dead = true;
                let freed: usize = sess.accs.iter().map(|a| a.size()).sum();
                sess.accs = Vec::new();
                self.acc_bytes = self.acc_bytes.saturating_sub(freed);
                self.open.remove(&(sess.gid, sess.start));
                self.free.push(s);
            }
            match batch {
                Some(b) => vec![(last, 0, b)],
                None => Vec::new(),
            }
        };
        self.maybe_compact()?;
        self.account()?;
        Ok(out)
    }

    /// The rows of the sessions `closing` (end, slot), HAVING applied.
    fn emit(&mut self, closing: &[(i64, u32)]) -> Result<Option<RecordBatch>> {
        let rows = closing.len();
        let gids: Vec<u32> = closing
            .iter()
            .map(|&(_, s)| self.sessions[s as usize].gid)
            .collect();
        let mut keys = if self.group.keys.is_empty() {
            Vec::new()
        } else {
            self.dict.keys(&gids)?
        };
        let starts = closing
            .iter()
            .map(|&(_, s)| self.sessions[s as usize].start);
        let window: ArrayRef = Arc::new(StructArray::new(
            window_fields(),
            vec![
                Arc::new(TimestampNanosecondArray::from_iter_values(starts)),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    closing.iter().map(|c| c.0),
                )),
            ],
            None,
        ));
        keys.insert(self.window_pos, window);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (c, f) in keys.into_iter().zip(self.schema.fields()) {
            cols.push(cast_to(c, f.data_type())?);
        }
        for a in 0..self.aggs.len() {
            let values = closing
                .iter()
                .map(|&(_, s)| self.sessions[s as usize].accs[a].evaluate())
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            let field = self.schema.field(cols.len());
            let array = if values.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            cols.push(cast_to(array, field.data_type())?);
        }
        let mut batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        if let Some(pred) = &self.having {
            let mask = pred.evaluate(&batch)?.into_array(rows)?;
            let mask = mask.as_boolean();
            let mask = match mask.nulls() {
                Some(n) => BooleanArray::new(mask.values() & n.inner(), None),
                None => mask.clone(),
            };
            batch = filter_record_batch(&batch, &mask)?;
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        self.windows_emitted += batch.num_rows() as u64;
        self.rows_emitted += batch.num_rows() as u64;
        Ok(Some(batch))
    }

    /// Reclaims the ids of keys without an open session once they are half the dictionary.
    fn maybe_compact(&mut self) -> Result<()> {
        let len = self.dict.len();
        let empty = self.by_end.is_empty() && len > 0;
        if !(empty || len >= 2 * self.live_after_compact + 4096) {
            return Ok(());
        }
        let mut live: Vec<u32> = self.open.keys().map(|&(g, _)| g).collect();
        live.dedup();
        let remap = self.dict.compact(&live)?;
        self.open = std::mem::take(&mut self.open)
            .into_iter()
            .map(|((g, start), s)| {
                let g = remap[g as usize];
                self.sessions[s as usize].gid = g;
                ((g, start), s)
            })
            .collect();
        self.live_after_compact = live.len();
        // Closed slots are reused; trailing ones are given back.
        if self.by_end.is_empty() {
            self.sessions.clear();
            self.free.clear();
        }
        Ok(())
    }

    /// The open sessions: one batch of their keys, bounds and each aggregate's state.
    pub fn snapshot(&mut self) -> Result<(SessionCheckpoint, Vec<RecordBatch>)> {
        let open: Vec<(i64, u32)> = self.by_end.iter().copied().collect();
        let gids: Vec<u32> = open
            .iter()
            .map(|&(_, s)| self.sessions[s as usize].gid)
            .collect();
        let mut fields: Vec<Field> = self
            .dict
            .schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect();
        let mut cols = self.dict.keys(&gids)?;
        fields.push(Field::new("start", DataType::Int64, false));
        fields.push(Field::new("end", DataType::Int64, false));
        cols.push(Arc::new(Int64Array::from_iter_values(
            open.iter().map(|&(_, s)| self.sessions[s as usize].start),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            open.iter().map(|c| c.0),
        )));
        for (a, agg) in self.aggs.iter().enumerate() {
            let state_fields = agg.expr.state_fields()?;
            let width = state_fields.len();
            let mut states: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(open.len()); width];
            for &(_, s) in &open {
                // Taking the state may empty the accumulator: it is merged back into a new one.
                let st = self.sessions[s as usize].accs[a].state()?;
                let mut fresh = agg.expr.create_accumulator()?;
                let arrays = st
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                fresh.merge_batch(&arrays)?;
                self.sessions[s as usize].accs[a] = fresh;
                for (i, v) in st.into_iter().enumerate() {
                    states[i].push(v);
                }
            }
            for (i, (v, f)) in states.into_iter().zip(state_fields).enumerate() {
                let array = if v.is_empty() {
                    arrow::array::new_empty_array(f.data_type())
                } else {
                    ScalarValue::iter_to_array(v)?
                };
                fields.push(Field::new(
                    format!("a{a}_{i}"),
                    array.data_type().clone(),
                    true,
                ));
                cols.push(array);
            }
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(open.len())),
        )?;
        Ok((
            SessionCheckpoint {
                gap_ns: self.gap,
                key_types: self.group.key_types(),
                aggs: self.aggs.iter().map(|a| a.describe.clone()).collect(),
                watermark: self.watermark,
            },
            vec![batch],
        ))
    }

    /// Replaces the operator's state with a snapshot of the same query.
    pub fn restore(&mut self, cp: &SessionCheckpoint, batches: &[RecordBatch]) -> Result<()> {
        let aggs: Vec<String> = self.aggs.iter().map(|a| a.describe.clone()).collect();
        if cp.gap_ns != self.gap || cp.key_types != self.group.key_types() || cp.aggs != aggs {
            return Err(Error::plan(
                "the checkpoint does not match this query (its session window, keys or \
                 aggregates differ); start from a new checkpoint location",
            ));
        }
        let bad = |why: &str| Err(Error::plan(format!("checkpoint: session state {why}")));
        let [b] = batches else {
            return bad("is incomplete");
        };
        let nk = self.dict.schema.fields().len();
        let widths = self
            .aggs
            .iter()
            .map(|a| Ok(a.expr.state_fields()?.len()))
            .collect::<Result<Vec<_>>>()?;
        let key_types_match = (0..nk)
            .all(|i| b.schema().field(i).data_type() == self.dict.schema.field(i).data_type());
        if b.num_columns() != nk + 2 + widths.iter().sum::<usize>() || !key_types_match {
            return bad("has the wrong shape");
        }
        self.dict = KeyDict::new(self.dict.schema.clone())?;
        self.open.clear();
        self.sessions.clear();
        self.free.clear();
        self.by_end.clear();
        self.acc_bytes = 0;
        let mut ids = Vec::new();
        if b.num_rows() > 0 {
            self.dict.intern(&b.columns()[..nk], &mut ids)?;
        }
        let bounds = |c: usize| super::checkpoint::primitive::<Int64Type>(b.column(c), "session");
        let (starts, ends) = (bounds(nk)?.values(), bounds(nk + 1)?.values());
        for (row, &g) in ids.iter().enumerate() {
            let (start, end) = (starts[row], ends[row]);
            if end <= start {
                return bad("holds an empty session");
            }
            let s = self.new_session(g as u32, start, end)?;
            let mut c = nk + 2;
            for (a, &w) in widths.iter().enumerate() {
                let state: Vec<ArrayRef> = (c..c + w).map(|i| b.column(i).slice(row, 1)).collect();
                c += w;
                let acc = &mut self.sessions[s as usize].accs[a];
                let before = acc.size();
                acc.merge_batch(&state)?;
                self.acc_bytes = (self.acc_bytes + acc.size()).saturating_sub(before);
            }
            self.sessions[s as usize].indexed = end;
            self.by_end.insert((end, s));
            if self.open.insert((g as u32, start), s).is_some() {
                return bad("holds two sessions of a key starting together");
            }
        }
        self.live_after_compact = self.dict.len();
        self.watermark = cp.watermark;
        self.account()
    }
}

fn cast_to(c: ArrayRef, t: &DataType) -> Result<ArrayRef> {
    Ok(if c.data_type() == t { c } else { cast(&c, t)? })
}

/// What a checkpoint keeps of a [`SessionAggregate`] besides its batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionCheckpoint {
    gap_ns: i64,
    key_types: Vec<String>,
    aggs: Vec<String>,
    watermark: i64,
}
