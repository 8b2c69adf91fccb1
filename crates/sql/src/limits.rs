//! Limits on what one query may ask of the planner and of execution, shared by every front end
//! (pipeline scripts submitted over HTTP, the SQL endpoint):
//!
//! - **shape**, checked on the parsed statement before anything recursive sees it: how deep
//!   expressions nest, how many set operations (`UNION`, ...) and table references a statement
//!   holds, how deep subqueries nest. The parser builds long operator chains (`1+1+...+1`) and
//!   set-operation chains without recursion, but planning, optimising and even printing them
//!   recurse once per level; past the limits a query is refused with an error naming the limit.
//! - **values**: every scalar function of a session is wrapped so that a result larger than a
//!   cap fails the query instead of taking the machine's memory; functions that amplify their
//!   input (`repeat`, `lpad`, `replace`, `range`, ...) are checked before they run.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};

/// Limits on a statement's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// How deep expressions may nest (`1+1+1` nests 3 deep, `f(g(x))` 3).
    pub max_expr_depth: usize,
    /// Set operations (`UNION [ALL]`, `INTERSECT`, `EXCEPT`) in one statement.
    pub max_set_operations: usize,
    /// How deep queries may nest (subqueries, derived tables, CTEs).
    pub max_query_depth: usize,
    /// Table references (tables, subqueries, functions in `FROM`) in one statement.
    pub max_tables: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_expr_depth: 256,
            max_set_operations: 128,
            max_query_depth: 32,
            max_tables: 128,
        }
    }
}

/// A statement past one of the [`SqlLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    /// The limit's name, as the README lists it (`max_expr_depth`, ...).
    pub limit: &'static str,
    pub message: String,
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitError {}

struct ShapeCheck<'a> {
    limits: &'a SqlLimits,
    expr_depth: usize,
    query_depth: usize,
    set_operations: usize,
    tables: usize,
}

impl ShapeCheck<'_> {
    fn over(limit: &'static str, what: &str, max: usize) -> ControlFlow<LimitError> {
        ControlFlow::Break(LimitError {
            limit,
            message: format!(
                "statement too complex: {what} exceeds the limit of {max} ({limit}); \
                 simplify the query"
            ),
        })
    }
}

/// The set operations of one query body, not counting nested queries (they are visited on
/// their own). Iterative: a chain of 100,000 `UNION ALL`s must not recurse 100,000 deep.
fn set_operations(body: &SetExpr, stop_after: usize) -> usize {
    let mut n = 0;
    let mut stack = vec![body];
    while let Some(e) = stack.pop() {
        if let SetExpr::SetOperation { left, right, .. } = e {
            n += 1;
            if n > stop_after {
                break;
            }
            stack.push(left);
            stack.push(right);
        }
    }
    n
}

impl Visitor for ShapeCheck<'_> {
    type Break = LimitError;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<LimitError> {
        self.query_depth += 1;
        if self.query_depth > self.limits.max_query_depth {
            return Self::over(
                "max_query_depth",
                "subquery nesting",
                self.limits.max_query_depth,
            );
        }
        let left = self.limits.max_set_operations - self.set_operations;
        self.set_operations += set_operations(&q.body, left);
        if self.set_operations > self.limits.max_set_operations {
            return Self::over(
                "max_set_operations",
                "the number of UNION/INTERSECT/EXCEPT operations",
                self.limits.max_set_operations,
            );
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<LimitError> {
        self.query_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _t: &TableFactor) -> ControlFlow<LimitError> {
        self.tables += 1;
        if self.tables > self.limits.max_tables {
            return Self::over(
                "max_tables",
                "the number of table references",
                self.limits.max_tables,
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _e: &SqlExpr) -> ControlFlow<LimitError> {
        self.expr_depth += 1;
        if self.expr_depth > self.limits.max_expr_depth {
            return Self::over(
                "max_expr_depth",
                "expression nesting depth",
                self.limits.max_expr_depth,
            );
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _e: &SqlExpr) -> ControlFlow<LimitError> {
        self.expr_depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Checks a parsed statement against `limits`. The walk stops at the first limit passed, so it
/// never recurses deeper than the limits themselves (set-operation chains are counted without
/// recursion before they are walked).
pub fn check_statement(statement: &Statement, limits: &SqlLimits) -> Result<(), LimitError> {
    let mut v = ShapeCheck {
        limits,
        expr_depth: 0,
        query_depth: 0,
        set_operations: 0,
        tables: 0,
    };
    match statement.visit(&mut v) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The default cap on one scalar function result (one batch's worth of values).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 << 20;

/// Replaces every scalar function of `ctx` by one that fails a call whose result would exceed
/// `max_bytes` (see the module documentation).
pub fn cap_scalar_functions(ctx: &SessionContext, max_bytes: usize) {
    let functions: Vec<Arc<ScalarUDF>> = ctx.state().scalar_functions().values().cloned().collect();
    let mut done = std::collections::HashSet::new();
    for f in functions {
        let any: &dyn std::any::Any = f.inner().as_ref();
        if any.is::<CappedUdf>() || !done.insert(f.name().to_string()) {
            continue;
        }
        ctx.register_udf(ScalarUDF::new_from_impl(CappedUdf::new(f, max_bytes)));
    }
}

/// How an amplifying function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Amplifier {
    /// `repeat(text, n)`: len(text) * n.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: n characters.
    Pad,
    /// `replace(text, from, to)` / `regexp_replace(text, pattern, to ...)`: at most one `to`
    /// per character of the text, beside the text.
    Replace,
    /// `array_repeat(value, n)`: n values.
    ArrayRepeat,
    /// `range`/`generate_series(start, stop [, step])` as array functions: (stop - start) /
    /// step values.
    Range,
}

impl Amplifier {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "repeat" => Self::Repeat,
            "lpad" | "rpad" => Self::Pad,
            "replace" | "regexp_replace" => Self::Replace,
            "array_repeat" | "list_repeat" => Self::ArrayRepeat,
            "range" | "generate_series" => Self::Range,
            _ => return None,
        })
    }
}

/// A scalar function whose results are capped (see [`cap_scalar_functions`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct CappedUdf {
    inner: Arc<ScalarUDF>,
    max_bytes: usize,
    amplifier: Option<Amplifier>,
}

impl CappedUdf {
    fn new(inner: Arc<ScalarUDF>, max_bytes: usize) -> Self {
        let amplifier = Amplifier::of(inner.name());
        Self {
            inner,
            max_bytes,
            amplifier,
        }
    }

    fn imp(&self) -> &dyn ScalarUDFImpl {
        self.inner.inner().as_ref()
    }

    fn too_big(&self, bytes: u128) -> Result<()> {
        if bytes > self.max_bytes as u128 {
            return exec_err!(
                "{}(): its result would take {} MiB, over the limit of {} MiB on one value \
                 batch (max_value_bytes)",
                self.inner.name(),
                bytes >> 20,
                self.max_bytes >> 20
            );
        }
        Ok(())
    }

    /// An upper bound of the bytes an amplifying function's call produces.
    fn estimate(&self, a: Amplifier, args: &ScalarFunctionArgs) -> Result<u128> {
        let rows = args.number_rows.max(1);
        let arg = |i: usize| args.args.get(i);
        let lens = |i: usize| arg(i).map(|a| text_lengths(a, rows)).transpose();
        let ints = |i: usize| arg(i).map(|a| integers(a, rows)).transpose();
        Ok(match a {
            Amplifier::Repeat => match (lens(0)?, ints(1)?) {
                (Some(l), Some(n)) => l
                    .iter()
                    .zip(&n)
                    .map(|(&l, &n)| l as u128 * n.max(0) as u128)
                    .sum(),
                _ => 0,
            },
            Amplifier::Pad => match ints(1)? {
                Some(n) => n.iter().map(|&n| n.max(0) as u128 * 4).sum(),
                None => 0,
            },
            Amplifier::Replace => match (lens(0)?, lens(2)?) {
                (Some(text), Some(to)) => text
                    .iter()
                    .zip(&to)
                    .map(|(&t, &r)| t as u128 + (t as u128 + 1) * r as u128)
                    .sum(),
                _ => 0,
            },
            Amplifier::ArrayRepeat => match ints(1)? {
                Some(n) => n.iter().map(|&n| n.max(0) as u128 * 8).sum(),
                None => 0,
            },
            Amplifier::Range => {
                let (Some(start), Some(stop)) = (ints(0)?, ints(1)?) else {
                    return Ok(0);
                };
                // One argument: range(stop).
                let (start, stop) = if args.args.len() == 1 {
                    (vec![0; rows], start)
                } else {
                    (start, stop)
                };
                let step = ints(2)?.unwrap_or_else(|| vec![1; rows]);
                start
                    .iter()
                    .zip(&stop)
                    .zip(&step)
                    .map(|((&a, &b), &s)| {
                        let span = (b as i128 - a as i128).unsigned_abs();
                        let s = (s as i128).unsigned_abs().max(1);
                        (span / s + 1) * 8
                    })
                    .sum()
            }
        })
    }
}

/// The byte length of each row's text (0 for nulls and non-text values).
fn text_lengths(v: &ColumnarValue, rows: usize) -> Result<Vec<usize>> {
    Ok(match v {
        ColumnarValue::Scalar(s) => {
            let n = match s {
                ScalarValue::Utf8(Some(t))
                | ScalarValue::LargeUtf8(Some(t))
                | ScalarValue::Utf8View(Some(t)) => t.len(),
                _ => 0,
            };
            vec![n; rows]
        }
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().map(len).collect(),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().map(len).collect(),
            DataType::Utf8View => a.as_string_view().iter().map(len).collect(),
            _ => vec![0; a.len()],
        },
    })
}

fn len(s: Option<&str>) -> usize {
    s.map_or(0, str::len)
}

/// Each row's value as an integer (0 for nulls and values that are not integers).
fn integers(v: &ColumnarValue, rows: usize) -> Result<Vec<i64>> {
    let array: ArrayRef = match v {
        ColumnarValue::Scalar(s) if s.data_type().is_integer() => s.to_array_of_size(1)?,
        ColumnarValue::Scalar(_) => return Ok(vec![0; rows]),
        ColumnarValue::Array(a) if a.data_type().is_integer() => a.clone(),
        ColumnarValue::Array(a) => return Ok(vec![0; a.len()]),
    };
    let a = arrow::compute::cast(&array, &DataType::Int64)?;
    let a = a.as_primitive::<arrow::datatypes::Int64Type>();
    let values: Vec<i64> = a.iter().map(|x| x.unwrap_or(0)).collect();
    Ok(if values.len() == 1 && rows > 1 {
        vec![values[0]; rows]
    } else {
        values
    })
}

/// The bytes a result holds (of its own slice, not of buffers it shares).
fn result_bytes(v: &ColumnarValue) -> u128 {
    match v {
        ColumnarValue::Scalar(s) => s.size() as u128,
        ColumnarValue::Array(a) => {
            a.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| a.get_array_memory_size()) as u128
        }
    }
}

impl ScalarUDFImpl for CappedUdf {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.imp().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.imp().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }
    fn with_updated_config(&self, config: &datafusion::config::ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.imp().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(CappedUdf::new(
            Arc::new(updated),
            self.max_bytes,
        )))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.imp().return_field_from_args(args)
    }
    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[allow(deprecated)]
        self.imp().is_nullable(args, schema)
    }
    fn is_strict(&self) -> bool {
        self.imp().is_strict()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(a) = self.amplifier {
            self.too_big(self.estimate(a, &args)?)?;
        }
        let out = self.imp().invoke_with_args(args)?;
        self.too_big(result_bytes(&out))?;
        Ok(out)
    }
    fn simplify(
        &self,
        args: Vec<Expr>,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.imp().simplify(args, info)
    }
    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::preimage::PreimageResult> {
        self.imp().preimage(args, lit_expr, info)
    }
    fn short_circuits(&self) -> bool {
        self.imp().short_circuits()
    }
    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.imp().conditional_arguments(args)
    }
    fn evaluate_bounds(
        &self,
        input: &[&datafusion::logical_expr::interval_arithmetic::Interval],
    ) -> Result<datafusion::logical_expr::interval_arithmetic::Interval> {
        self.imp().evaluate_bounds(input)
    }
    fn propagate_constraints(
        &self,
        interval: &datafusion::logical_expr::interval_arithmetic::Interval,
        inputs: &[&datafusion::logical_expr::interval_arithmetic::Interval],
    ) -> Result<Option<Vec<datafusion::logical_expr::interval_arithmetic::Interval>>> {
        self.imp().propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.imp().output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().preserves_lex_ordering(inputs)
    }
    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().strictly_order_preserving(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }
    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<datafusion::logical_expr::StructFieldMapping> {
        self.imp().struct_field_mapping(literal_args)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }
    fn placement(
        &self,
        args: &[datafusion::logical_expr::ExpressionPlacement],
    ) -> datafusion::logical_expr::ExpressionPlacement {
        self.imp().placement(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> Result<(), LimitError> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        // Deep statements are dropped on a thread with room for their recursive drop.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let r = statements
                    .iter()
                    .try_for_each(|s| check_statement(s, &SqlLimits::default()));
                drop(statements);
                r
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn ordinary_queries_pass() {
        check("SELECT a + b * 2, f(g(x)) FROM t WHERE a IN (1, 2, 3) GROUP BY 1").unwrap();
        check("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3").unwrap();
        check("WITH c AS (SELECT * FROM (SELECT 1 AS x) s) SELECT x FROM c JOIN c d USING (x)")
            .unwrap();
    }

    #[test]
    fn long_operator_chains_are_refused_by_name() {
        let sql = format!("SELECT {}", vec!["1"; 2000].join("+"));
        let e = check(&sql).unwrap_err();
        assert_eq!(e.limit, "max_expr_depth", "{e}");
        let sql = format!("SELECT {}", vec!["1"; 200].join("+"));
        check(&sql).unwrap();
    }

    #[test]
    fn set_operation_chains_are_refused_without_recursing() {
        let sql = vec!["SELECT 1"; 100_000].join(" UNION ALL ");
        let e = check(&sql).unwrap_err();
        assert_eq!(e.limit, "max_set_operations", "{e}");
        // Also inside a subquery.
        let sql = format!(
            "SELECT * FROM ({}) s",
            vec!["SELECT 1"; 1000].join(" UNION ALL ")
        );
        assert_eq!(check(&sql).unwrap_err().limit, "max_set_operations");
    }

    #[test]
    fn many_tables_and_deep_subqueries_are_refused() {
        let sql = format!(
            "SELECT 1 FROM {}",
            (0..500)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(check(&sql).unwrap_err().limit, "max_tables");
        let mut sql = "SELECT 1".to_string();
        for _ in 0..40 {
            sql = format!("SELECT * FROM ({sql}) s");
        }
        // sqlparser's own recursion limit (50) may refuse it first; if it parses, ours does.
        if Parser::parse_sql(&PostgreSqlDialect {}, &sql).is_ok() {
            assert_eq!(check(&sql).unwrap_err().limit, "max_query_depth");
        }
    }

    #[tokio::test]
    async fn scalar_results_are_capped() {
        let ctx = SessionContext::new();
        cap_scalar_functions(&ctx, 1 << 20);
        for sql in [
            "SELECT length(repeat('xxxxxxxxxx', 200000000))",
            "SELECT lpad('x', 100000000)",
            "SELECT replace(repeat('x', 1000), 'x', repeat('y', 10000))",
            "SELECT cardinality(range(1, 100000000))",
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(e.to_string().contains("max_value_bytes"), "{sql}: {e}");
        }
        // Ordinary calls are untouched.
        let b = ctx
            .sql("SELECT length(repeat('ab', 1000)) AS n, upper('x') AS u")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(b[0].num_rows(), 1);
    }
}
