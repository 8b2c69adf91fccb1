//! The key dictionary: group keys interned once per operator into dense ids.

use std::hash::BuildHasher;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::buffer::Buffer;
use arrow::compute::{interleave, take};
use arrow::datatypes::{DataType, SchemaRef};
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
    values: Interner,
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
            values: Interner::new(&schema)?,
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
        let mut values = Interner::new(&self.schema)?;
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

/// Interns rows of key columns into dense ids, handed out in row order.
enum Interner {
    /// Any key type: DataFusion's group values.
    Any(Box<dyn GroupValues>),
    /// Strings and integers only (the usual keys): each row's key encoded as bytes.
    Encoded(EncodedKeys),
}

impl Interner {
    fn new(schema: &SchemaRef) -> Result<Self> {
        Ok(
            if schema.fields().iter().all(|f| Col::supports(f.data_type())) {
                Interner::Encoded(EncodedKeys::default())
            } else {
                Interner::Any(new_group_values(schema.clone(), &GroupOrdering::None)?)
            },
        )
    }

    fn intern(&mut self, cols: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        match self {
            Interner::Any(v) => Ok(v.intern(cols, ids)?),
            Interner::Encoded(e) => e.intern(cols, ids),
        }
    }

    fn len(&self) -> usize {
        match self {
            Interner::Any(v) => v.len(),
            Interner::Encoded(e) => e.len,
        }
    }

    fn size(&self) -> usize {
        match self {
            Interner::Any(v) => v.size(),
            Interner::Encoded(e) => e.size(),
        }
    }
}

/// Keys at most this long (encoded) are compared inside the hash table, without a lookup
/// elsewhere; a (language, keyword) key usually is.
const INLINE: usize = 16;

/// One interned key: its hash, id, encoded length, and its bytes (zero-padded) when they
/// fit in [`INLINE`], else their offset in the arena.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    id: u32,
    len: u32,
    key: u128,
}

/// Keys of string and integer columns, each row encoded column by column into one byte
/// string (a length or null tag, then the bytes: prefix-free, so equal encodings are equal
/// keys), hashed once and compared once. DataFusion's multi-column group values hash and
/// compare each column separately and keep the key bytes a second time; with (language,
/// keyword) keys they were a tenth of the trend query.
#[derive(Default)]
struct EncodedKeys {
    table: hashbrown::HashTable<Slot>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Encoded keys longer than [`INLINE`].
    arena: Vec<u8>,
    /// The row being looked up (scratch).
    row: Vec<u8>,
    len: usize,
}

impl EncodedKeys {
    fn size(&self) -> usize {
        self.table.capacity() * (size_of::<Slot>() + 1)
            + self.arena.capacity()
            + self.row.capacity()
    }

    fn intern(&mut self, cols: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        let cols = cols
            .iter()
            .map(|c| Col::of(c.as_ref()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::plan("internal: a key column of an unexpected type"))?;
        let n = cols.first().map_or(0, |c| c.len);
        ids.clear();
        ids.reserve(n);
        for i in 0..n {
            self.row.clear();
            for c in &cols {
                c.encode(i, &mut self.row);
            }
            let row = self.row.as_slice();
            let len = row.len();
            let hash = self.hasher.hash_one(row);
            let inline = (len <= INLINE).then(|| {
                let mut b = [0u8; INLINE];
                b[..len].copy_from_slice(row);
                u128::from_le_bytes(b)
            });
            let arena = &self.arena;
            let entry = self.table.entry(
                hash,
                |s| {
                    s.hash == hash
                        && s.len as usize == len
                        && match inline {
                            Some(k) => s.key == k,
                            None => &arena[s.key as usize..s.key as usize + len] == row,
                        }
                },
                |s| s.hash,
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(o) => ids.push(o.get().id as usize),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    let id = self.len;
                    let key = match inline {
                        Some(k) => k,
                        None => {
                            let at = self.arena.len();
                            self.arena.extend_from_slice(row);
                            at as u128
                        }
                    };
                    v.insert(Slot {
                        hash,
                        id: id as u32,
                        len: len as u32,
                        key,
                    });
                    self.len += 1;
                    ids.push(id);
                }
            }
        }
        Ok(())
    }
}

/// A key column as the encoder reads it.
struct Col<'a> {
    len: usize,
    nulls: Option<&'a arrow::buffer::NullBuffer>,
    values: ColValues<'a>,
}

enum ColValues<'a> {
    Utf8(&'a arrow::array::StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Utf8View(&'a arrow::array::StringViewArray),
    /// Fixed-width integers: the values buffer, its first value, the width in bytes.
    Fixed(Buffer, usize, usize),
}

impl<'a> Col<'a> {
    /// Integers (and the times stored as integers) are compared by their bytes; floats are
    /// not (0.0 and -0.0 are one group in SQL).
    fn supports(t: &DataType) -> bool {
        matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
        )
    }

    fn of(a: &'a dyn Array) -> Option<Self> {
        let values = match a.data_type() {
            DataType::Utf8 => ColValues::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => ColValues::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => ColValues::Utf8View(a.as_string_view()),
            t if Col::supports(t) => {
                let width = t.primitive_width()?;
                let data = a.to_data();
                ColValues::Fixed(data.buffers().first()?.clone(), data.offset(), width)
            }
            _ => return None,
        };
        Some(Self {
            len: a.len(),
            nulls: a.nulls(),
            values,
        })
    }

    /// Appends row `i`: a null tag, or the value (strings with their length first).
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        if self.nulls.is_some_and(|n| n.is_null(i)) {
            out.push(0xFF);
            return;
        }
        let bytes: &[u8] = match &self.values {
            ColValues::Utf8(a) => a.value(i).as_bytes(),
            ColValues::LargeUtf8(a) => a.value(i).as_bytes(),
            ColValues::Utf8View(a) => a.value(i).as_bytes(),
            ColValues::Fixed(buf, offset, width) => {
                out.push(0);
                out.extend_from_slice(&buf[(offset + i) * width..(offset + i + 1) * width]);
                return;
            }
        };
        if bytes.len() < 0xFE {
            out.push(bytes.len() as u8);
        } else {
            out.push(0xFE);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    /// The encoded interner tells keys apart as DataFusion's group values do, batch after
    /// batch, numbering new keys in row order: nulls, empty strings, long strings, a string that is another's prefix
    /// across columns ("ab" + "c" vs "a" + "bc"), integers.
    #[test]
    fn encoded_keys_agree_with_group_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut ours = Interner::new(&schema).unwrap();
        assert!(matches!(ours, Interner::Encoded(_)));
        let mut theirs = new_group_values(schema.clone(), &GroupOrdering::None).unwrap();
        let long = "x".repeat(300);
        let words = ["", "a", "ab", "b", "bc", "c", long.as_str(), "ünïcødé"];
        let mut seed = 7u64;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        let mut to_theirs = std::collections::HashMap::new();
        let mut to_ours = std::collections::HashMap::new();
        for _ in 0..20 {
            let n = 1 + next(500);
            let pick = |r: usize| (r < words.len()).then(|| words[r]);
            let a: StringArray = (0..n).map(|_| pick(next(words.len() + 1))).collect();
            let b: StringViewArray = (0..n).map(|_| pick(next(words.len() + 1))).collect();
            let c: Int64Array = (0..n)
                .map(|_| (next(5) > 0).then(|| next(4) as i64 - 2))
                .collect();
            let cols: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b), Arc::new(c)];
            // Sliced columns too: the encoder reads through the arrays' offsets.
            let off = next(n);
            let cols: Vec<ArrayRef> = cols.iter().map(|c| c.slice(off, n - off)).collect();
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let before = ours.len();
            ours.intern(&cols, &mut x).unwrap();
            theirs.intern(&cols, &mut y).unwrap();
            // The same keys apart, one to one (DataFusion may number new keys out of row
            // order when keys with nulls collide; ours are in row order).
            let mut next = before;
            for (&a, &b) in x.iter().zip(&y) {
                assert_eq!(*to_theirs.entry(a).or_insert(b), b);
                assert_eq!(*to_ours.entry(b).or_insert(a), a);
                if a >= next {
                    assert_eq!(a, next, "new ids in row order");
                    next += 1;
                }
            }
            assert_eq!(ours.len(), theirs.len());
        }
        assert!(ours.len() > 100);
    }

    /// A key dictionary over string keys interns, materialises and compacts them.
    #[test]
    fn key_dict_compacts_encoded_keys() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("lang", DataType::Utf8, false),
            Field::new("keyword", DataType::Utf8, false),
        ]));
        let mut dict = KeyDict::new(schema).unwrap();
        let cols = |l: &[&str], k: &[&str]| -> Vec<ArrayRef> {
            vec![
                Arc::new(StringArray::from(l.to_vec())),
                Arc::new(StringArray::from(k.to_vec())),
            ]
        };
        let mut ids = Vec::new();
        dict.intern(
            &cols(&["en", "en", "ja", "en"], &["cat", "dog", "cat", "cat"]),
            &mut ids,
        )
        .unwrap();
        assert_eq!(ids, [0, 1, 2, 0]);
        let remap = dict.compact(&[1, 2]).unwrap();
        assert_eq!(remap, [u32::MAX, 0, 1]);
        dict.intern(&cols(&["ja", "en", "en"], &["cat", "cat", "dog"]), &mut ids)
            .unwrap();
        assert_eq!(ids, [1, 2, 0]);
        let keys = dict.keys(&[2, 0]).unwrap();
        assert_eq!(keys[0].as_string::<i32>().value(0), "en");
        assert_eq!(keys[1].as_string::<i32>().value(0), "cat");
        assert_eq!(keys[1].as_string::<i32>().value(1), "dog");
    }
}
