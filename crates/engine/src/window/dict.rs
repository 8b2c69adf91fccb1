//! The key dictionary: group keys interned once per operator into dense ids.

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{interleave, take};
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::{Error, Result};

/// Memory held by arrays (buffers shared between them counted once per array).
pub(super) fn arrays_bytes(arrays: &[ArrayRef]) -> usize {
    arrays.iter().map(|a| a.get_array_memory_size()).sum()
}

/// Group keys interned once per operator into dense ids shared by every slice and window.
///
/// Slices and windows hold ids, not key values: a row's key is hashed once, when it arrives;
/// every per-key state is a vector indexed by id, and key values are materialised only for the
/// rows a window emits. Ids of keys that no stored slice holds any more are reclaimed by
/// [`KeyDict::compact`], so the dictionary stays bounded by the keys of the open windows.
pub(super) struct KeyDict {
    pub(super) schema: SchemaRef,
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
    pub(super) fn new(schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            values: new_group_values(schema.clone(), &GroupOrdering::None)?,
            schema,
            chunks: Vec::new(),
            loc: Vec::new(),
            new_rows: Vec::new(),
            chunk_bytes: 0,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.loc.len()
    }

    /// Memory held: the hash table, the key values and the id locations.
    pub(super) fn bytes(&self) -> usize {
        self.values.size()
            + self.chunk_bytes
            + self.loc.capacity() * size_of::<(u32, u32)>()
            + self.new_rows.capacity() * size_of::<u32>()
    }

    /// The id of each row's key in `ids`; keys not seen before get new ids.
    pub(super) fn intern(&mut self, cols: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        let before = self.values.len();
        self.values.intern(cols, ids)?;
        let after = self.values.len();
        if after == before {
            return Ok(());
        }
        // The first row holding each new id. DataFusion numbers new keys in row order except
        // when keys with nulls hash alike (they are numbered after the others): not assumed.
        self.new_rows.clear();
        self.new_rows.resize(after - before, u32::MAX);
        for (row, &id) in ids.iter().enumerate() {
            if let Some(first) = id
                .checked_sub(before)
                .and_then(|k| self.new_rows.get_mut(k))
                && *first == u32::MAX
            {
                *first = row as u32;
            }
        }
        if self.new_rows.contains(&u32::MAX) {
            return Err(Error::plan("internal: a new group id without a row"));
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
    pub(super) fn keys(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
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
    pub(super) fn compact(&mut self, live: &[u32]) -> Result<Vec<u32>> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Keys with nulls in several columns, batch after batch: every row's id gives back its
    /// own key (strings, string views, integers; sliced arrays). DataFusion numbers some such
    /// keys out of row order; the dictionary once refused those batches with an internal error.
    #[test]
    fn nullable_multi_column_keys_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut dict = KeyDict::new(schema).unwrap();
        let long = "x".repeat(300);
        let words = ["", "a", "ab", "b", "bc", "c", long.as_str(), "ünïcødé"];
        let mut seed = 7u64;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for _ in 0..20 {
            let n = 1 + next(500);
            let pick = |r: usize| (r < words.len()).then(|| words[r]);
            let a: StringArray = (0..n).map(|_| pick(next(words.len() + 1))).collect();
            let b: StringViewArray = (0..n).map(|_| pick(next(words.len() + 1))).collect();
            let c: Int64Array = (0..n)
                .map(|_| (next(5) > 0).then(|| next(4) as i64 - 2))
                .collect();
            let cols: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b), Arc::new(c)];
            let off = next(n);
            let cols: Vec<ArrayRef> = cols.iter().map(|c| c.slice(off, n - off)).collect();
            let mut ids = Vec::new();
            dict.intern(&cols, &mut ids).unwrap();
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            let keys = dict.keys(&ids).unwrap();
            for (col, key) in cols.iter().zip(&keys) {
                assert_eq!(col.as_ref(), key.as_ref());
            }
        }
        assert!(dict.len() > 100);
        let _ = dict.keys(&[0]).unwrap()[0].as_string::<i32>();
    }
}
