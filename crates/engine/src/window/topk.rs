//! Per-window top-K push-down: a window read by a top-K emits only the rows that can rank.

use arrow::array::{ArrayRef, UInt32Array, make_comparator};
use arrow::compute::{SortOptions, sort_to_indices};

use crate::Result;

/// Keep the rows of each window that sort no later than its `k`-th by output `column`.
#[derive(Debug, Clone, Copy)]
pub(super) struct EmitLimit {
    pub column: usize,
    pub options: SortOptions,
    pub k: usize,
}

impl EmitLimit {
    /// Rows of `col` that sort no later than its `k`-th row, ties included (`None`: keep all).
    pub fn rows_to_keep(&self, col: &ArrayRef) -> Result<Option<UInt32Array>> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn keeps_ties_at_the_boundary() {
        let col: ArrayRef = Arc::new(Int64Array::from(vec![5, 9, 7, 9, 7, 1]));
        let l = EmitLimit {
            column: 0,
            options: SortOptions {
                descending: true,
                nulls_first: false,
            },
            k: 3,
        };
        let keep = l.rows_to_keep(&col).unwrap().unwrap();
        assert_eq!(keep.values().to_vec(), vec![1, 2, 3, 4]);
        assert!(l.rows_to_keep(&col.slice(0, 3)).unwrap().is_none());
    }
}
