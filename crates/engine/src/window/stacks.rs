//! Sparse two-stacks: a sliding window's value of an aggregate that cannot be subtracted (any
//! DataFusion accumulator: avg of floats, approx_distinct, first_value, ...) at a cost per
//! slide that does not grow with the window's width.
//!
//! The window's slices form two runs: the *front* (oldest, leaving first) and the *back*
//! (newest, where slices come in). In the back, each key keeps a prefix: the merge of its
//! states from the back's first slice up to the newest slice holding it. In the front, each
//! slice keeps, for each of its keys, a suffix: the merge from that slice to the front's end,
//! and a link to the key's next front slice. A key's window value is its front suffix merged
//! with its back prefix. When the oldest slice leaves, its keys step to their next suffix; when
//! a slice leaves the front empty, the back becomes the front (suffixes computed newest first).
//! Each (key, slice) is merged into one prefix and one suffix: amortised O(1) merges per key
//! per slide, whatever `width / slide` (the two-stacks queue, kept per key: entries exist only
//! where a key has rows, so they take what the slices take, not keys × slices).

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{interleave, take};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::dict::arrays_bytes;
use super::slices::{Agg, Part, Slice};
use crate::{Error, Result};

/// Where a key's partial state sits: a slice's level and the key's row in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    slice: i64,
    row: u32,
}

const NONE: Loc = Loc {
    slice: i64::MIN,
    row: 0,
};

/// The partial states a slice holds for one window: suffixes while in the front (with each
/// key's next front slice), prefixes while in the back (`next` empty).
struct Level {
    states: Vec<ArrayRef>,
    next: Vec<Loc>,
}

/// One window's two-stacks for one aggregate (see the module docs).
pub(super) struct Stacks {
    make: Box<dyn Fn() -> Result<Box<dyn GroupsAccumulator>> + Send>,
    /// Slices before this are the front; from it on, the back.
    mid: i64,
    /// One past the newest slice that came in.
    end: i64,
    /// By dictionary id: the key's front suffix and back prefix (`NONE`: none).
    front: Vec<Loc>,
    back: Vec<Loc>,
    levels: BTreeMap<i64, Level>,
    level_bytes: usize,
}

impl std::fmt::Debug for Stacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stacks")
            .field("mid", &self.mid)
            .field("end", &self.end)
            .field("levels", &self.levels.len())
            .finish()
    }
}

impl Stacks {
    pub fn new(agg: &Agg) -> Self {
        let expr = agg.expr.clone();
        Self {
            make: Box::new(move || super::slices::accumulator_of(&expr)),
            mid: i64::MIN,
            end: i64::MIN,
            front: Vec::new(),
            back: Vec::new(),
            levels: BTreeMap::new(),
            level_bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.level_bytes
            + (self.front.capacity() + self.back.capacity()) * size_of::<Loc>()
            + self.levels.len() * (size_of::<Level>() + 32)
    }

    /// Room for dictionary ids below `n`.
    pub fn grow(&mut self, n: usize) {
        if self.front.len() < n {
            self.front.resize(n, NONE);
            self.back.resize(n, NONE);
        }
    }

    /// Dictionary ids renumbered by `remap` (old -> new, `u32::MAX`: dropped) to `live` ids.
    pub fn remap_keys(&mut self, remap: &[u32], live: usize) {
        for v in [&mut self.front, &mut self.back] {
            let mut new = vec![NONE; live];
            for (old, &loc) in v.iter().enumerate() {
                if let Some(&n) = remap.get(old)
                    && n != u32::MAX
                {
                    new[n as usize] = loc;
                }
            }
            *v = new;
        }
    }

    fn insert(&mut self, index: i64, level: Level) {
        self.level_bytes += arrays_bytes(&level.states) + level.next.len() * size_of::<Loc>();
        if let Some(old) = self.levels.insert(index, level) {
            self.level_bytes -= arrays_bytes(&old.states) + old.next.len() * size_of::<Loc>();
        }
    }

    fn remove(&mut self, index: i64) -> Option<Level> {
        let old = self.levels.remove(&index)?;
        self.level_bytes -= arrays_bytes(&old.states) + old.next.len() * size_of::<Loc>();
        Some(old)
    }

    /// The states at `locs` (none `NONE`), one row each, in that order.
    fn gather(&self, locs: &[Loc]) -> Result<Vec<ArrayRef>> {
        let mut slices: Vec<i64> = locs.iter().map(|l| l.slice).collect();
        slices.sort_unstable();
        slices.dedup();
        let levels = slices
            .iter()
            .map(|s| {
                self.levels
                    .get(s)
                    .ok_or_else(|| Error::plan("internal: a window state refers to no slice"))
            })
            .collect::<Result<Vec<_>>>()?;
        let width = levels.first().map_or(0, |l| l.states.len());
        if let [level] = levels.as_slice() {
            let idx = UInt32Array::from_iter_values(locs.iter().map(|l| l.row));
            return Ok(level
                .states
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<Result<_, _>>()?);
        }
        let idx: Vec<(usize, usize)> = locs
            .iter()
            .map(|l| {
                let at = slices.binary_search(&l.slice).unwrap_or(0);
                (at, l.row as usize)
            })
            .collect();
        (0..width)
            .map(|c| {
                let arrays: Vec<&dyn Array> = levels.iter().map(|l| l.states[c].as_ref()).collect();
                Ok(interleave(&arrays, &idx)?)
            })
            .collect()
    }

    /// Merges the states at `ptr[g]` for each of `gids` that has one into `acc`'s group of
    /// the key's position in `gids`.
    fn merge_at(
        &self,
        acc: &mut dyn GroupsAccumulator,
        gids: &[u32],
        ptr: &[Loc],
        groups: usize,
    ) -> Result<()> {
        let (mut rows, mut locs) = (Vec::new(), Vec::new());
        for (l, &g) in gids.iter().enumerate() {
            let loc = ptr[g as usize];
            if loc != NONE {
                rows.push(l);
                locs.push(loc);
            }
        }
        if !rows.is_empty() {
            acc.merge_batch(&self.gather(&locs)?, &rows, groups)?;
        }
        Ok(())
    }

    /// Slice `index` (complete; its keys `gids`, its states `states`) comes into the window.
    pub fn enter(&mut self, index: i64, gids: &[u32], states: &[ArrayRef]) -> Result<()> {
        let n = gids.len();
        let mut acc = (self.make)()?;
        // Oldest first: the key's prefix so far, then this slice.
        self.merge_at(acc.as_mut(), gids, &self.back, n)?;
        let all: Vec<usize> = (0..n).collect();
        acc.merge_batch(states, &all, n)?;
        let states = acc.state(EmitTo::All)?;
        for (l, &g) in gids.iter().enumerate() {
            self.back[g as usize] = Loc {
                slice: index,
                row: l as u32,
            };
        }
        self.insert(
            index,
            Level {
                states,
                next: Vec::new(),
            },
        );
        self.end = index + 1;
        Ok(())
    }

    /// Slices `from .. first` of `slices` leave the window (aggregate `a`'s parts).
    pub fn evict(
        &mut self,
        slices: &BTreeMap<i64, Slice>,
        a: usize,
        from: i64,
        first: i64,
    ) -> Result<()> {
        if first >= self.end {
            // The whole window goes (a cumulate window restarting, a gap in the stream).
            for (&q, _) in self.levels.iter() {
                let Some(s) = slices.get(&q) else {
                    return Err(Error::plan("internal: a window level without its slice"));
                };
                for &g in &s.gids {
                    self.front[g as usize] = NONE;
                    self.back[g as usize] = NONE;
                }
            }
            self.levels.clear();
            self.level_bytes = 0;
            self.mid = first;
            return Ok(());
        }
        for (&q, slice) in slices.range(from..first) {
            if q >= self.mid {
                self.flip(slices, a)?;
            }
            let Some(level) = self.remove(q) else {
                continue;
            };
            for (l, &g) in slice.gids.iter().enumerate() {
                self.front[g as usize] = level.next.get(l).copied().unwrap_or(NONE);
            }
        }
        Ok(())
    }

    /// The back becomes the front: each back slice's suffixes, newest first.
    fn flip(&mut self, slices: &BTreeMap<i64, Slice>, a: usize) -> Result<()> {
        let back: Vec<i64> = self.levels.range(self.mid..).map(|(&q, _)| q).collect();
        for &q in back.iter().rev() {
            let Some(slice) = slices.get(&q) else {
                return Err(Error::plan("internal: a window level without its slice"));
            };
            let Part::States(own) = &slice.parts[a] else {
                return Err(Error::plan("internal: a window's slice lost its state"));
            };
            let n = slice.gids.len();
            let mut acc = (self.make)()?;
            // Oldest first: this slice, then the key's suffix from the slices after it.
            let all: Vec<usize> = (0..n).collect();
            acc.merge_batch(own, &all, n)?;
            self.merge_at(acc.as_mut(), &slice.gids, &self.front, n)?;
            let states = acc.state(EmitTo::All)?;
            let mut next = Vec::with_capacity(n);
            for (l, &g) in slice.gids.iter().enumerate() {
                next.push(self.front[g as usize]);
                self.front[g as usize] = Loc {
                    slice: q,
                    row: l as u32,
                };
                self.back[g as usize] = NONE;
            }
            self.insert(q, Level { states, next });
        }
        self.mid = self.end;
        Ok(())
    }

    /// The window's values for keys `gids` (each held by some slice of the window).
    pub fn values(&self, gids: &[u32]) -> Result<ArrayRef> {
        let n = gids.len();
        if gids
            .iter()
            .any(|&g| self.front[g as usize] == NONE && self.back[g as usize] == NONE)
        {
            return Err(Error::plan(
                "internal: a key of the window is in none of its slices",
            ));
        }
        let mut acc = (self.make)()?;
        self.merge_at(acc.as_mut(), gids, &self.front, n)?;
        self.merge_at(acc.as_mut(), gids, &self.back, n)?;
        Ok(acc.evaluate(EmitTo::All)?)
    }
}
