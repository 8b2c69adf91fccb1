//! Carries event time through a logical plan: each stream table scan gains a hidden
//! `_timestamp` column (its WATERMARK column), projections pass it along, and every
//! window function (`hop`, `tumble`, `cumulate`) in a `GROUP BY` receives it as its last argument. The optimizer therefore
//! keeps the column exactly where a window needs it and prunes it elsewhere.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use skystream_engine::window::is_window_fn;

use crate::table::stream_table;

/// Name of the hidden event-time column.
pub const EVENT_TIME_COLUMN: &str = "_timestamp";

pub fn is_window_call(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if is_window_fn(f.func.name()))
}

pub fn contains_window_call(e: &Expr) -> bool {
    e.exists(|x| Ok(is_window_call(x))).unwrap_or(false)
}

fn ts_column(plan: &LogicalPlan) -> Option<Column> {
    plan.schema()
        .iter()
        .find(|(_, f)| f.name() == EVENT_TIME_COLUMN)
        .map(|(q, f)| Column::new(q.cloned(), f.name()))
}

pub fn add_event_time(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::TableScan(scan) => {
            let Some(st) = stream_table(&scan.source) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let Some(et) = st.event_time.clone() else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            if scan.projected_schema.field_with_unqualified_name(&et).is_err() {
                return plan_err!("internal: scan of '{}' lacks its event-time column", st.name);
            }
            let mut exprs: Vec<Expr> = scan.projected_schema.columns().into_iter().map(Expr::Column).collect();
            exprs.push(Expr::Column(Column::new(Some(scan.table_name.clone()), et)).alias(EVENT_TIME_COLUMN));
            let p = Projection::try_new(exprs, Arc::new(LogicalPlan::TableScan(scan)))?;
            Ok(Transformed::yes(LogicalPlan::Projection(p)))
        }
        LogicalPlan::Projection(p) => {
            let has_out = p.schema.iter().any(|(_, f)| f.name() == EVENT_TIME_COLUMN);
            match ts_column(&p.input) {
                Some(c) if !has_out => {
                    let mut exprs = p.expr.clone();
                    exprs.push(Expr::Column(c));
                    Ok(Transformed::yes(LogicalPlan::Projection(Projection::try_new(exprs, p.input)?)))
                }
                _ => Ok(Transformed::yes(LogicalPlan::Projection(p).recompute_schema()?)),
            }
        }
        LogicalPlan::Aggregate(a) if a.group_expr.iter().any(contains_window_call) => {
            let Some(ts) = ts_column(&a.input) else {
                return plan_err!(
                    "windows need event time: declare WATERMARK FOR <column> AS <column> - INTERVAL '...' in the source table"
                );
            };
            let group_expr = a
                .group_expr
                .into_iter()
                .map(|g| {
                    g.transform_up(|e| match e {
                        Expr::ScalarFunction(f) if is_window_call(&Expr::ScalarFunction(f.clone())) => {
                            let mut args = f.args.clone();
                            args.push(Expr::Column(ts.clone()));
                            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(f.func.clone(), args))))
                        }
                        other => Ok(Transformed::no(other)),
                    })
                    .map(|t| t.data)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Transformed::yes(LogicalPlan::Aggregate(Aggregate::try_new(a.input, group_expr, a.aggr_expr)?)))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })
    .map(|t| t.data)
}

/// Turns `FROM t CROSS JOIN unnest(t.list) AS u(x)` — which DataFusion plans as a join with a
/// correlated subquery — into an `Unnest` over `t` itself, so it runs per batch like
/// `SELECT unnest(t.list)`. Other joins are left for the validator to refuse.
pub fn lateral_unnest(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Join(j) = &node else {
            return Ok(Transformed::no(node));
        };
        if j.join_type != datafusion::logical_expr::JoinType::Inner
            || !j.on.is_empty()
            || j.filter.is_some()
        {
            return Ok(Transformed::no(node));
        }
        let sub = match j.right.as_ref() {
            LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
                LogicalPlan::Subquery(s) => s,
                _ => return Ok(Transformed::no(node)),
            },
            LogicalPlan::Subquery(s) => s,
            _ => return Ok(Transformed::no(node)),
        };
        let mut tops: Vec<&Projection> = Vec::new();
        let mut cur = sub.subquery.as_ref();
        let unnest = loop {
            match cur {
                LogicalPlan::Projection(p) => {
                    tops.push(p);
                    cur = p.input.as_ref();
                }
                LogicalPlan::Unnest(u) => break u,
                _ => return Ok(Transformed::no(node)),
            }
        };
        let LogicalPlan::Projection(inner) = unnest.input.as_ref() else {
            return Ok(Transformed::no(node));
        };
        if !matches!(inner.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
            return Ok(Transformed::no(node));
        }
        let strip = |e: &Expr| -> Result<Expr> {
            e.clone()
                .transform(|x| match x {
                    Expr::OuterReferenceColumn(_, c) => Ok(Transformed::yes(Expr::Column(c))),
                    other => Ok(Transformed::no(other)),
                })
                .map(|t| t.data)
        };
        let left = j.left.as_ref().clone();
        let left_cols: Vec<Expr> = left
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let n_left = left_cols.len();
        let with = |exprs: &[Expr]| -> Result<Vec<Expr>> {
            let mut v = left_cols.clone();
            for e in exprs {
                v.push(strip(e)?);
            }
            Ok(v)
        };
        let mut b = datafusion::logical_expr::LogicalPlanBuilder::from(left)
            .project(with(&inner.expr)?)?
            .unnest_columns_with_options(unnest.exec_columns.clone(), unnest.options.clone())?;
        for p in tops.iter().rev() {
            b = b.project(with(&p.expr)?)?;
        }
        let built = b.build()?;
        let mut exprs = left_cols.clone();
        for ((q, f), (rq, rf)) in built
            .schema()
            .iter()
            .skip(n_left)
            .zip(j.right.schema().iter())
        {
            exprs.push(
                Expr::Column(Column::new(q.cloned(), f.name()))
                    .alias_qualified(rq.cloned(), rf.name()),
            );
        }
        Ok(Transformed::yes(LogicalPlan::Projection(
            Projection::try_new(exprs, Arc::new(built))?,
        )))
    })
    .map(|t| t.data)
}
