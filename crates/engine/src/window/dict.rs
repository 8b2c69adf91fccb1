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
