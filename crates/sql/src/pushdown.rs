//! Pushing what the plan after the windows does into the window operators, so a window emits
//! only the keys that can reach the result. Each rule leaves the plan as it is (the pushed
//! filter still runs there): a window emitting a superset of what survives is always correct.
//!
//! * **HAVING**: a filter reading only a window's aggregate columns (through projections) is
//!   evaluated by the window before it materialises keys ([`WindowAggregate::filter_emission`]).
//! * **Join on every key**: an inner hash join of two windows of the same operator on all
//!   their group keys, one filtered and the other not, makes the unfiltered one emit only the
//!   keys the filtered one emitted for the same end ([`WindowAggregate::restrict_emission`]):
//!   trends.sql's 65-minute baseline is looked up for the recent window's candidates instead
//!   of being emitted for every keyword.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use skystream_engine::feed::{Feed, FeedExec};
use skystream_engine::window::WindowAggregate;

type Stage = (usize, WindowAggregate, Vec<Arc<Feed>>);

/// A window: (stage, output of the stage's operator).
type Output = (usize, usize);

/// Applies the rules of the module docs to the windows `after` reads.
pub(crate) fn push_into_windows(after: &Arc<dyn ExecutionPlan>, stages: &mut [Stage]) {
    let mut outputs: HashMap<*const Feed, (usize, usize)> = HashMap::new();
    for (s, (_, _, feeds)) in stages.iter().enumerate() {
        for (o, f) in feeds.iter().enumerate() {
            outputs.insert(Arc::as_ptr(f), (s, o));
        }
    }
    let mut filtered: Vec<(usize, usize)> = Vec::new();
    let _ = after.apply(|node| {
        if let Some(f) = node.downcast_ref::<FilterExec>()
            && let Some((feed, pred)) = filter_on_feed(f)
            && let Some(&(s, o)) = outputs.get(&Arc::as_ptr(&feed))
            && reads_only_aggregates(&pred, &stages[s].1, o)
        {
            tracing::debug!(
                stage = s,
                output = o,
                "HAVING pushed into the window: {pred}"
            );
            stages[s].1.filter_emission(o, pred);
            filtered.push((s, o));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let _ = after.apply(|node| {
        if let Some(j) = node.downcast_ref::<HashJoinExec>()
            && *j.join_type() == JoinType::Inner
            && j.filter().is_none()
        {
            restrict_by_join(j, stages, &outputs, &filtered);
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// A filter whose input is a window feed through column-only projections and filters: the
/// feed and the predicate over the feed's columns.
fn filter_on_feed(f: &FilterExec) -> Option<(Arc<Feed>, Arc<dyn PhysicalExpr>)> {
    let mut feed = None;
    let mut ok = true;
    let pred = f
        .predicate()
        .clone()
        .transform(|e| {
            let Some(c) = e.downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            match trace(f.input(), c.index(), false) {
                Some((fd, i)) => {
                    let same = feed
                        .as_ref()
                        .is_none_or(|x: &Arc<Feed>| Arc::ptr_eq(x, &fd));
                    ok &= same;
                    let name = fd.schema.field(i).name().clone();
                    feed = Some(fd);
                    Ok(Transformed::yes(
                        Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>
                    ))
                }
                None => {
                    ok = false;
                    Ok(Transformed::no(e))
                }
            }
        })
        .ok()?
        .data;
    (ok && feed.is_some()).then(|| (feed.expect("checked"), pred))
}

/// Whether `pred` (over output `o`'s columns) reads only aggregate columns and the window.
fn reads_only_aggregates(pred: &Arc<dyn PhysicalExpr>, w: &WindowAggregate, o: usize) -> bool {
    // Group columns (the keys and the window) come first, then the aggregates.
    let group_cols = w.key_count() + 1;
    let window = w.window_column(o);
    let cols = datafusion::physical_expr::utils::collect_columns(pred);
    !cols.is_empty()
        && cols
            .iter()
            .all(|c| c.index() >= group_cols || c.index() == window)
}

/// The feed column that column `col` of `plan` is, through column projections, filters and
/// (with `joins`) inner hash joins: nodes that pass a window's rows on or drop some.
fn trace(plan: &Arc<dyn ExecutionPlan>, col: usize, joins: bool) -> Option<(Arc<Feed>, usize)> {
    if let Some(f) = plan.downcast_ref::<FeedExec>() {
        return Some((f.feed().clone(), col));
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let c = p.expr().get(col)?.expr.downcast_ref::<Column>()?;
        return trace(p.input(), c.index(), joins);
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let c = match f.projection() {
            Some(p) => *p.get(col)?,
            None => col,
        };
        return trace(f.input(), c, joins);
    }
    if joins
        && let Some(j) = plan.downcast_ref::<HashJoinExec>()
        && *j.join_type() == JoinType::Inner
    {
        let c = match &j.projection {
            Some(p) => *p.get(col)?,
            None => col,
        };
        let left = j.left().schema().fields().len();
        return if c < left {
            trace(j.left(), c, joins)
        } else {
            trace(j.right(), c - left, joins)
        };
    }
    None
}

/// For an inner join of two windows of one operator on every key, restricts the unfiltered
/// window to the keys of the filtered one.
fn restrict_by_join(
    j: &HashJoinExec,
    stages: &mut [Stage],
    outputs: &HashMap<*const Feed, (usize, usize)>,
    filtered: &[(usize, usize)],
) {
    // Key pairs per (left output, right output).
    let mut pairs: HashMap<(Output, Output), Vec<(usize, usize)>> = HashMap::new();
    for (l, r) in j.on() {
        let (Some(l), Some(r)) = (l.downcast_ref::<Column>(), r.downcast_ref::<Column>()) else {
            continue;
        };
        let (Some((lf, lc)), Some((rf, rc))) = (
            trace(j.left(), l.index(), true),
            trace(j.right(), r.index(), true),
        ) else {
            continue;
        };
        let (Some(&lo), Some(&ro)) = (
            outputs.get(&Arc::as_ptr(&lf)),
            outputs.get(&Arc::as_ptr(&rf)),
        ) else {
            continue;
        };
        pairs.entry((lo, ro)).or_default().push((lc, rc));
    }
    for ((a, b), cols) in pairs {
        if a.0 != b.0 || a.1 == b.1 {
            continue;
        }
        let w = &stages[a.0].1;
        let keys_a = key_columns(w, a.1);
        let keys_b = key_columns(w, b.1);
        if keys_a.is_empty()
            || !keys_a
                .iter()
                .zip(&keys_b)
                .all(|(ka, kb)| cols.contains(&(*ka, *kb)))
        {
            continue;
        }
        let (by, o) = match (filtered.contains(&a), filtered.contains(&b)) {
            (true, false) => (a.1, b.1),
            (false, true) => (b.1, a.1),
            _ => continue,
        };
        if stages[a.0].1.restrict_emission(o, by) {
            tracing::debug!(
                stage = a.0,
                output = o,
                by,
                "window restricted to the keys of a joined window"
            );
        }
    }
}

/// Output columns of output `o`'s group keys, in key order.
fn key_columns(w: &WindowAggregate, o: usize) -> Vec<usize> {
    let window = w.window_column(o);
    (0..w.key_count())
        .map(|k| if k < window { k } else { k + 1 })
        .collect()
}
