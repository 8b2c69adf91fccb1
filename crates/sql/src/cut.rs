//! Cutting a flow's physical plan at its windows: the plans below them (heads), the window
//! operators (windows over the same rows, keys and slide fused into one), and the plan after.

use std::sync::Arc;

use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use skystream_engine::feed::{Feed, FeedExec};
use skystream_engine::window::{self, WindowAggregate};

/// A plan reading the sources, with its source feeds.
pub(crate) type HeadPlan = (Arc<dyn ExecutionPlan>, Vec<Arc<Feed>>);

/// A flow's physical plan cut at its windowed aggregates (see `skystream_engine::flow`).
/// A window operator, the head it reads and, per window, the feed of `after` it fills.
pub(crate) type WindowPlan = (usize, WindowAggregate, Vec<Option<Arc<Feed>>>);

pub(crate) struct Split {
    /// Plans reading the sources, with their source feeds.
    pub heads: Vec<HeadPlan>,
    /// Each window operator, the head it reads and, per window it computes, the feed of
    /// `after` it fills.
    pub windows: Vec<WindowPlan>,
    pub after: Option<Arc<dyn ExecutionPlan>>,
}

impl Split {
    pub(crate) fn feeds(&self) -> impl Iterator<Item = &Arc<Feed>> {
        self.heads.iter().flat_map(|(_, f)| f)
    }
}

/// Cuts a physical plan at its windowed aggregates: the plans below them become heads (one
/// per distinct plan: windows over the same rows share it), the rest runs after the windows.
pub(crate) fn split_flow(plan: Arc<dyn ExecutionPlan>) -> skystream_engine::Result<Split> {
    let (upper, cuts) = cut_windows(plan)?;
    if cuts.is_empty() {
        let mut feeds = Vec::new();
        collect_feeds(&upper, &mut feeds);
        return Ok(Split {
            heads: vec![(upper, feeds)],
            windows: Vec::new(),
            after: None,
        });
    }
    let single = cuts.len() == 1;
    let mut heads: Vec<HeadPlan> = Vec::new();
    let mut head_keys: Vec<String> = Vec::new();
    let mut windows = Vec::new();
    for (w, below, feed) in cuts {
        if !cut_windows(below.clone())?.1.is_empty() {
            return Err(skystream_engine::Error::plan(
                "a window over the results of another window is not supported yet",
            ));
        }
        let mut feeds = Vec::new();
        collect_feeds(&below, &mut feeds);
        let mut key = displayable(below.as_ref()).indent(true).to_string();
        for f in &feeds {
            key.push_str(&format!("\n{}{:?}", f.name, f.columns));
        }
        let mut w = w;
        let head = if let Some(i) = head_keys.iter().position(|k| *k == key) {
            i
        } else if let Some((i, map)) = heads
            .iter()
            .enumerate()
            .find_map(|(i, (h, _))| crate::embed::embed(&below, h).map(|m| (i, m)))
        {
            // Its rows are a head's we already have, with fewer columns: read that one.
            w.remap_input(&map, &heads[i].0.schema())?;
            i
        } else if let Some((i, map)) = heads
            .iter()
            .enumerate()
            .find_map(|(i, (h, _))| crate::embed::embed(h, &below).map(|m| (i, m)))
        {
            // A head we have is this one with fewer columns: this one replaces it.
            let schema = below.schema();
            for (h, other, _) in windows.iter_mut() {
                if *h == i {
                    let other: &mut WindowAggregate = other;
                    other.remap_input(&map, &schema)?;
                }
            }
            heads[i] = (below, feeds);
            head_keys[i] = key;
            i
        } else {
            heads.push((below, feeds));
            head_keys.push(key);
            heads.len() - 1
        };
        windows.push((head, w, feed));
    }
    // One window whose rows go to the sink as they are: nothing runs after it.
    let is_leaf = single
        && upper
            .downcast_ref::<FeedExec>()
            .is_some_and(|f| Arc::ptr_eq(f.feed(), &windows[0].2));
    // Windows over the same head, keys, event time and slide share one operator's slices.
    let mut stages: Vec<(usize, WindowAggregate, Vec<Arc<Feed>>)> = Vec::new();
    for (head, w, feed) in windows {
        let signature = w.slice_signature();
        match stages
            .iter_mut()
            .find(|s| s.0 == head && signature.is_some() && s.1.slice_signature() == signature)
        {
            Some(s) => {
                s.1.fuse(w)?;
                s.2.push(feed);
            }
            None => stages.push((head, w, vec![feed])),
        }
    }
    if is_leaf {
        return Ok(Split {
            heads,
            windows: stages
                .into_iter()
                .map(|(h, w, _)| (h, w, vec![None]))
                .collect(),
            after: None,
        });
    }
    // Sessions closed together reach the plan after in one batch, whatever their windows.
    let upper = if single && stages[0].1.one_window_per_batch() {
        scope_topk_to_window(upper, &mut stages[0].1)?
    } else {
        upper
    };
    crate::pushdown::push_into_windows(&upper, &mut stages);
    Ok(Split {
        heads,
        windows: stages
            .into_iter()
            .map(|(h, w, f)| (h, w, f.into_iter().map(Some).collect()))
            .collect(),
        after: Some(upper),
    })
}

type Cut = (WindowAggregate, Arc<dyn ExecutionPlan>, Arc<Feed>);

/// Replaces every windowed aggregate of `plan` by a feed; returns the plan and, for each, the
/// window operator, the plan below it and the feed.
fn cut_windows(
    plan: Arc<dyn ExecutionPlan>,
) -> skystream_engine::Result<(Arc<dyn ExecutionPlan>, Vec<Cut>)> {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    let mut cuts = Vec::new();
    // The operator's own error (its message is the user's), kept aside from DataFusion's.
    let mut failed = None;
    let plan = plan
        .transform_down(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !window::is_windowed(agg) {
                return Ok(Transformed::no(node));
            }
            let w = match WindowAggregate::try_new(agg) {
                Ok(w) => w,
                Err(e) => {
                    failed = Some(e);
                    return Ok(Transformed::new(node, false, TreeNodeRecursion::Stop));
                }
            };
            let below = window::raw_input(agg).clone();
            let columns = (0..agg.schema().fields().len()).collect();
            let feed = Feed::new("window", agg.schema(), columns);
            cuts.push((w, below, feed.clone()));
            // What is below the window is its head, not part of this plan.
            Ok(Transformed::new(
                Arc::new(FeedExec::new(feed)) as Arc<dyn ExecutionPlan>,
                true,
                TreeNodeRecursion::Jump,
            ))
        })?
        .data;
    match failed {
        Some(e) => Err(e),
        None => Ok((plan, cuts)),
    }
}

/// A stage after a window runs once per emitted window, so columns derived only from the window
/// column hold one value per run. A per-partition top-K (`ROW_NUMBER() OVER (PARTITION BY win
/// ORDER BY ...) <= K`, which DataFusion's `WindowTopN` turns into a `PartitionedTopKExec`) whose
/// partition keys are such columns is a plain top-K: a `SortExec` with a fetch, which keeps a
/// K-row heap and skips rows that cannot enter it.
///
/// When that top-K reads the window's rows unfiltered and sorts first by an aggregate column,
/// the window operator is told so ([`WindowAggregate::limit_emission`]) and emits only the rows
/// that can make the top K.
fn scope_topk_to_window(
    plan: Arc<dyn ExecutionPlan>,
    window: &mut WindowAggregate,
) -> skystream_engine::Result<Arc<dyn ExecutionPlan>> {
    let window_column = window.window_column(0);
    use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
    use datafusion::physical_expr::LexOrdering;
    use datafusion::physical_plan::sorts::partitioned_topk::{PartitionedTopKExec, WindowFnKind};
    use datafusion::physical_plan::sorts::sort::SortExec;
    Ok(plan
        .transform_up(|node| {
            let Some(topk) = node.downcast_ref::<PartitionedTopKExec>() else {
                return Ok(Transformed::no(node));
            };
            if topk.fn_kind() != WindowFnKind::RowNumber {
                return Ok(Transformed::no(node));
            }
            let constant = window_constant_columns(topk.input(), window_column);
            let prefix = topk.partition_prefix_len();
            let exprs: Vec<_> = topk.expr().iter().cloned().collect();
            let partition_is_window = exprs[..prefix].iter().all(|e| {
                datafusion::physical_expr::utils::collect_columns(&e.expr)
                    .iter()
                    .all(|c| constant.get(c.index()).copied().unwrap_or(false))
            });
            if !partition_is_window || exprs.len() == prefix {
                return Ok(Transformed::no(node));
            }
            // The constant partition keys stay first in the sort key: the window function
            // above reads its partitions from the ordering (and the dynamic filter of the heap
            // compares them in one step).
            let Some(order) = LexOrdering::new(exprs.clone()) else {
                return Ok(Transformed::no(node));
            };
            let first = &exprs[prefix];
            if let Some(c) = first
                .expr
                .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                && let Some(fed) = feed_column(topk.input(), c.index())
            {
                window.limit_emission(0, fed, first.options, topk.fetch());
            }
            let sort = SortExec::new(order, topk.input().clone()).with_fetch(Some(topk.fetch()));
            Ok(Transformed::yes(Arc::new(sort) as Arc<dyn ExecutionPlan>))
        })
        .data()?)
}

/// The window feed's column that output column `column` of `plan` is, when every row of the
/// feed reaches `plan` unchanged (only projections in between).
fn feed_column(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<usize> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::projection::ProjectionExec;
    if plan.downcast_ref::<FeedExec>().is_some() {
        return Some(column);
    }
    let p = plan.downcast_ref::<ProjectionExec>()?;
    let c = p.expr().get(column)?.expr.downcast_ref::<Column>()?;
    feed_column(p.input(), c.index())
}

/// Which output columns of a post-window plan derive only from the window column (`FeedExec`
/// column `window_column`), through projections, filters, sorts and window functions.
pub(crate) fn window_constant_columns(
    plan: &Arc<dyn ExecutionPlan>,
    window_column: usize,
) -> Vec<bool> {
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::sorts::partitioned_topk::PartitionedTopKExec;
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    let n = plan.schema().fields().len();
    let passthrough = |input: &Arc<dyn ExecutionPlan>| {
        let mut v = window_constant_columns(input, window_column);
        v.resize(n, false);
        v
    };
    if plan.downcast_ref::<FeedExec>().is_some() {
        let mut v = vec![false; n];
        if window_column < n {
            v[window_column] = true;
        }
        return v;
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let input = window_constant_columns(p.input(), window_column);
        return p
            .expr()
            .iter()
            .map(|e| {
                datafusion::physical_expr::utils::collect_columns(&e.expr)
                    .iter()
                    .all(|c| input.get(c.index()).copied().unwrap_or(false))
            })
            .collect();
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let input = window_constant_columns(f.input(), window_column);
        return match f.projection() {
            None => input,
            Some(p) => p
                .iter()
                .map(|&i| input.get(i).copied().unwrap_or(false))
                .collect(),
        };
    }
    if let Some(s) = plan.downcast_ref::<SortExec>() {
        return passthrough(s.input());
    }
    if let Some(t) = plan.downcast_ref::<PartitionedTopKExec>() {
        return passthrough(t.input());
    }
    if let Some(w) = plan.downcast_ref::<BoundedWindowAggExec>() {
        return passthrough(w.input());
    }
    if let Some(w) = plan.downcast_ref::<WindowAggExec>() {
        return passthrough(w.input());
    }
    vec![false; n]
}

pub(crate) fn collect_feeds(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<Feed>>) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let _ = plan.apply(|node| {
        if let Some(f) = node.downcast_ref::<FeedExec>() {
            out.push(f.feed().clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
}
