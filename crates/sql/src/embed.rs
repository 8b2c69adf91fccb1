//! Whether one head plan's rows are another's: plans that differ only in which columns their
//! projections keep (the optimizer prunes each window's input to what it reads) compute the
//! same rows, so windows over either can read one plan — computed once per batch — and share
//! its slices.

use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::unnest::UnnestExec;
use skystream_engine::feed::FeedExec;
use skystream_engine::window::remap_columns;

/// If every row of `small` is the row of `big` at the same position, with `small`'s columns
/// among `big`'s: where each output column of `small` is in `big`'s output.
pub(crate) fn embed(
    small: &Arc<dyn ExecutionPlan>,
    big: &Arc<dyn ExecutionPlan>,
) -> Option<Vec<usize>> {
    if let (Some(s), Some(b)) = (
        small.downcast_ref::<FeedExec>(),
        big.downcast_ref::<FeedExec>(),
    ) {
        let (s, b) = (s.feed(), b.feed());
        if s.name != b.name {
            return None;
        }
        return s
            .columns
            .iter()
            .map(|c| b.columns.iter().position(|x| x == c))
            .collect();
    }
    if let (Some(s), Some(b)) = (
        small.downcast_ref::<ProjectionExec>(),
        big.downcast_ref::<ProjectionExec>(),
    ) {
        let m = embed(s.input(), b.input())?;
        let schema = b.input().schema();
        return s
            .expr()
            .iter()
            .map(|e| {
                let e = remap_columns(&e.expr, &m, &schema).ok()?;
                b.expr().iter().position(|x| same(&x.expr, &e))
            })
            .collect();
    }
    if let (Some(s), Some(b)) = (
        small.downcast_ref::<UnnestExec>(),
        big.downcast_ref::<UnnestExec>(),
    ) {
        let m = embed(s.input(), b.input())?;
        // One level of list unnesting keeps columns in place; the same lists unnested (and
        // nothing else) give the same rows.
        let simple = |u: &UnnestExec| {
            u.struct_column_indices().is_empty()
                && u.list_column_indices().iter().all(|l| l.depth == 1)
        };
        if !simple(s) || !simple(b) || format!("{:?}", s.options()) != format!("{:?}", b.options())
        {
            return None;
        }
        let mut ls: Vec<usize> = s
            .list_column_indices()
            .iter()
            .map(|l| m[l.index_in_input_schema])
            .collect();
        let mut lb: Vec<usize> = b
            .list_column_indices()
            .iter()
            .map(|l| l.index_in_input_schema)
            .collect();
        ls.sort_unstable();
        lb.sort_unstable();
        return (ls == lb).then_some(m);
    }
    if let (Some(s), Some(b)) = (
        small.downcast_ref::<FilterExec>(),
        big.downcast_ref::<FilterExec>(),
    ) {
        let m = embed(s.input(), b.input())?;
        let p = remap_columns(s.predicate(), &m, &b.input().schema()).ok()?;
        if !same(&p, b.predicate()) {
            return None;
        }
        let n = s.input().schema().fields().len();
        let s_out: Vec<usize> = match s.projection() {
            Some(p) => p.iter().map(|&i| m[i]).collect(),
            None => (0..n).map(|i| m[i]).collect(),
        };
        let b_out: Vec<usize> = match b.projection() {
            Some(p) => p.to_vec(),
            None => (0..b.input().schema().fields().len()).collect(),
        };
        return s_out
            .iter()
            .map(|c| b_out.iter().position(|x| x == c))
            .collect();
    }
    None
}

/// Structural equality: two expressions that merely print alike are not taken as one.
fn same(a: &Arc<dyn PhysicalExpr>, b: &Arc<dyn PhysicalExpr>) -> bool {
    a.as_ref() == b.as_ref()
}
