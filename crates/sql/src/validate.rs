//! What a streaming query may do, checked on DataFusion's logical plan before it runs.
//! Every refusal names the construct and points at it in the script.

use std::collections::HashSet;

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, Operator};

use crate::error::SqlError;
use crate::rewrite::{contains_window_call, is_window_call};
use crate::script::ScriptStatement;
use crate::table::stream_table;

/// What flows out of a plan node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Finite data (VALUES, constants).
    Static,
    /// An unbounded stream of rows.
    Stream,
    /// Results of a window aggregate: each batch holds complete windows. The set names the
    /// columns that identify the window (the window struct, or its `start`/`end`).
    Windowed(HashSet<String>),
}

/// Checks `plan` (of statement `st`) against the streaming rules.
pub fn check(plan: &LogicalPlan, st: &ScriptStatement) -> Result<(), SqlError> {
    walk(plan, st).map(|_| ())
}

fn err(st: &ScriptStatement, msg: String, pos: Option<(u64, u64)>) -> SqlError {
    SqlError::new(msg).or_at(pos.or(Some(st.start())))
}

fn refers_to_window(e: &Expr, cols: &HashSet<String>) -> bool {
    match e {
        Expr::Column(c) => cols.contains(&c.name),
        Expr::Alias(a) => refers_to_window(&a.expr, cols),
        Expr::ScalarFunction(f) if f.func.name() == "get_field" => {
            f.args.first().is_some_and(|a| refers_to_window(a, cols))
        }
        _ => false,
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(false)
}

fn walk(plan: &LogicalPlan, st: &ScriptStatement) -> Result<Kind, SqlError> {
    for e in plan.expressions() {
        if has_subquery(&e) {
            return Err(err(st, "subqueries in expressions (IN (SELECT ...), EXISTS, scalar subqueries) are not supported in streaming queries".into(), st.find_keywords(&["SELECT"], false).and(None)));
        }
    }
    match plan {
        LogicalPlan::TableScan(s) => Ok(if stream_table(&s.source).is_some() { Kind::Stream } else { Kind::Static }),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Ok(Kind::Static),
        LogicalPlan::Projection(p) => {
            if let Some(e) = p.expr.iter().find(|e| contains_window_call(e)) {
                let name = window_name(e);
                return Err(err(st, format!("{name}() may only be used in GROUP BY"), st.find_call(&name)));
            }
            match walk(&p.input, st)? {
                Kind::Windowed(cols) => {
                    let out = p
                        .expr
                        .iter()
                        .zip(p.schema.fields())
                        .filter(|(e, _)| refers_to_window(e, &cols))
                        .map(|(_, f)| f.name().clone())
                        .collect();
                    Ok(Kind::Windowed(out))
                }
                k => Ok(k),
            }
        }
        LogicalPlan::Filter(f) => {
            if contains_window_call(&f.predicate) {
                return Err(err(st, format!("window functions ({}) may only be used in GROUP BY", skystream_engine::window::kind_names()), st.find_keywords(&["WHERE"], false)));
            }
            walk(&f.input, st)
        }
        LogicalPlan::SubqueryAlias(a) => walk(&a.input, st),
        LogicalPlan::Unnest(u) => walk(&u.input, st),
        LogicalPlan::Aggregate(a) => {
            let input = walk(&a.input, st)?;
            let windows: Vec<&Expr> = a.group_expr.iter().filter(|g| contains_window_call(g)).collect();
            if let Some(g) = windows.iter().find(|g| !is_window_call(g)) {
                let name = window_name(g);
                return Err(err(st, format!("{name}() must be a GROUP BY item of its own, not part of an expression"), st.find_call(&name)));
            }
            if windows.len() > 1 {
                return Err(err(st, format!("a GROUP BY may hold only one window ({})", skystream_engine::window::kind_names()), st.find_keywords(&["GROUP", "BY"], false)));
            }
            let first_agg = a.aggr_expr.first().map(agg_name);
            let agg_pos = first_agg.as_deref().and_then(|n| st.find_call(n));
            match input {
                Kind::Static => Ok(Kind::Static),
                Kind::Stream => {
                    if windows.is_empty() {
                        let what = if a.group_expr.is_empty() {
                            match &first_agg {
                                Some(n) => format!("aggregate {n}() over an unbounded stream"),
                                None => "aggregate over an unbounded stream".to_string(),
                            }
                        } else if a.aggr_expr.is_empty() {
                            "GROUP BY (or DISTINCT) over an unbounded stream".to_string()
                        } else {
                            "GROUP BY over an unbounded stream".to_string()
                        };
                        let pos = st.find_keywords(&["GROUP", "BY"], false).or(agg_pos).or(st.find_keywords(&["DISTINCT"], false));
                        return Err(err(st, format!("{what} never completes: add a window to the GROUP BY, e.g. GROUP BY ..., tumble(INTERVAL '1' MINUTE)"), pos));
                    }
                    let names = a
                        .group_expr
                        .iter()
                        .zip(a.schema.fields())
                        .filter(|(g, _)| is_window_call(g))
                        .map(|(_, f)| f.name().clone())
                        .collect();
                    Ok(Kind::Windowed(names))
                }
                Kind::Windowed(cols) => {
                    if !windows.is_empty() {
                        let name = window_name(windows[0]);
                        return Err(err(st, "a window over the results of another window is not supported yet".into(), st.find_call(&name)));
                    }
                    if !a.group_expr.iter().any(|g| refers_to_window(g, &cols)) {
                        let pos = st.find_keywords(&["GROUP", "BY"], false).or(agg_pos);
                        return Err(err(st, "an aggregate over windowed results must GROUP BY the window column, so each window is aggregated on its own".into(), pos));
                    }
                    let out = a
                        .group_expr
                        .iter()
                        .zip(a.schema.fields())
                        .filter(|(g, _)| refers_to_window(g, &cols))
                        .map(|(_, f)| f.name().clone())
                        .collect();
                    Ok(Kind::Windowed(out))
                }
            }
        }
        LogicalPlan::Window(w) => {
            let input = walk(&w.input, st)?;
            let over = st.find_keywords(&["OVER"], false);
            match input {
                Kind::Static => Ok(Kind::Static),
                Kind::Stream => Err(err(
                    st,
                    "window functions (OVER) over an unbounded stream are not supported: apply them to windowed results, partitioned by the window".into(),
                    over,
                )),
                Kind::Windowed(cols) => {
                    for e in &w.window_expr {
                        let partition_by = window_partition(e);
                        if !partition_by.iter().any(|p| refers_to_window(p, &cols)) {
                            return Err(err(
                                st,
                                "OVER over windowed results must PARTITION BY the window column (e.g. OVER (PARTITION BY window ORDER BY n DESC))".into(),
                                over,
                            ));
                        }
                    }
                    Ok(Kind::Windowed(cols))
                }
            }
        }
        LogicalPlan::Sort(s) => match walk(&s.input, st)? {
            Kind::Stream => Err(err(
                st,
                "ORDER BY on an unbounded stream is not supported: order windowed results, or rank them with ROW_NUMBER() OVER (PARTITION BY window ORDER BY ...)".into(),
                st.find_keywords(&["ORDER", "BY"], true),
            )),
            k => Ok(k),
        },
        LogicalPlan::Limit(l) => match walk(&l.input, st)? {
            Kind::Static => Ok(Kind::Static),
            _ => Err(err(
                st,
                "LIMIT on a stream is not supported: keep the top rows of each window with ROW_NUMBER() OVER (PARTITION BY window ORDER BY ...) <= n".into(),
                st.find_keywords(&["LIMIT"], false).or(st.find_keywords(&["FETCH"], false)),
            )),
        },
        LogicalPlan::Distinct(d) => {
            let input = match d {
                Distinct::All(i) => i,
                Distinct::On(o) => &o.input,
            };
            match walk(input, st)? {
                Kind::Stream => Err(err(
                    st,
                    "SELECT DISTINCT over an unbounded stream never completes: GROUP BY the columns and a window instead".into(),
                    st.find_keywords(&["DISTINCT"], false),
                )),
                k => Ok(k),
            }
        }
        LogicalPlan::Join(j) => {
            let (l, r) = (walk(&j.left, st)?, walk(&j.right, st)?);
            let join_pos = st.find_keywords(&["JOIN"], false).or(st.find_keywords(&["FROM"], false));
            match (l, r) {
                (Kind::Static, Kind::Static) => Ok(Kind::Static),
                (Kind::Windowed(lc), Kind::Windowed(rc)) => {
                    // Windowed results are joined window by window: the condition must match
                    // a window column of one side with one of the other.
                    let mut pairs: Vec<(&Expr, &Expr)> = j.on.iter().map(|(a, b)| (a, b)).collect();
                    if let Some(f) = &j.filter {
                        for c in split_conjunction(f) {
                            if let Expr::BinaryExpr(b) = c
                                && b.op == Operator::Eq
                            {
                                pairs.push((&b.left, &b.right));
                            }
                        }
                    }
                    let aligned = pairs.iter().any(|(a, b)| {
                        (refers_to_window(a, &lc) && refers_to_window(b, &rc))
                            || (refers_to_window(a, &rc) && refers_to_window(b, &lc))
                    });
                    if !aligned {
                        return Err(err(st, "a JOIN of windowed results must match their windows: add ON a.window_end = b.window_end (or a.win['end'] = b.win['end'])".into(), join_pos));
                    }
                    Ok(Kind::Windowed(lc.union(&rc).cloned().collect()))
                }
                (Kind::Windowed(c), Kind::Static) | (Kind::Static, Kind::Windowed(c)) => Ok(Kind::Windowed(c)),
                _ => Err(err(st, "JOIN of unbounded streams is not supported: aggregate each side into windows that slide alike, then join the windowed results on their window".into(), join_pos)),
            }
        }
        LogicalPlan::Union(u) => {
            let kinds = u.inputs.iter().map(|i| walk(i, st)).collect::<Result<Vec<_>, _>>()?;
            let streams = kinds.iter().filter(|k| **k == Kind::Stream).count();
            let windowed: Vec<&HashSet<String>> = kinds
                .iter()
                .filter_map(|k| match k {
                    Kind::Windowed(c) => Some(c),
                    _ => None,
                })
                .collect();
            if windowed.is_empty() {
                return Ok(if streams > 0 { Kind::Stream } else { Kind::Static });
            }
            if streams > 0 {
                return Err(err(st, "UNION of a stream and windowed results is not supported: aggregate the stream into windows too".into(), st.find_keywords(&["UNION"], false)));
            }
            // Output columns take the names of the first input's; a window column of any input
            // marks its position.
            let names: Vec<String> = u.schema.fields().iter().map(|f| f.name().clone()).collect();
            let mut cols = HashSet::new();
            for (input, kind) in u.inputs.iter().zip(&kinds) {
                if let Kind::Windowed(c) = kind {
                    for (i, f) in input.schema().fields().iter().enumerate() {
                        if c.contains(f.name()) && let Some(n) = names.get(i) {
                            cols.insert(n.clone());
                        }
                    }
                }
            }
            Ok(Kind::Windowed(cols))
        }
        other => Err(err(st, format!("{} is not supported in a streaming query", node_name(other)), None)),
    }
}

fn window_partition(e: &Expr) -> Vec<Expr> {
    match e {
        Expr::WindowFunction(w) => {
            let WindowFunction { params, .. } = w.as_ref();
            params.partition_by.clone()
        }
        Expr::Alias(a) => window_partition(&a.expr),
        _ => Vec::new(),
    }
}

fn window_name(e: &Expr) -> String {
    let mut name = String::from("hop");
    let _ = e.apply(|x| {
        if let Expr::ScalarFunction(f) = x
            && is_window_call(&Expr::ScalarFunction(f.clone()))
        {
            name = f.func.name().to_string();
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    name
}

fn agg_name(e: &Expr) -> String {
    match e {
        Expr::AggregateFunction(f) => f.func.name().to_string(),
        Expr::Alias(a) => agg_name(&a.expr),
        _ => String::new(),
    }
}

fn node_name(p: &LogicalPlan) -> String {
    let s = p.display().to_string();
    s.split(':').next().unwrap_or("this statement").to_string()
}
