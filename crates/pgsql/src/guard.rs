//! What a client may run, and how long: only reads reach DataFusion, and a statement runs to
//! completion under the session's timeout before its first row is sent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Query, SelectItem, SetExpr, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use crate::auth::STATEMENT_TIMEOUT_KEY;

/// SQLSTATE read_only_sql_transaction.
pub(crate) const READ_ONLY: &str = "25006";
/// SQLSTATE query_canceled.
pub(crate) const CANCELED: &str = "57014";

pub(crate) fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// A DataFusion error as the SQLSTATE a Postgres client can act on.
pub(crate) fn df_error(e: DataFusionError) -> PgWireError {
    let code = match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => "42P01",
        DataFusionError::NotImplemented(_) => "0A000",
        _ => "XX000",
    };
    let code = if code == "42P01" && !e.to_string().contains("not found") {
        "42000"
    } else {
        code
    };
    error(code, e.to_string())
}

/// Why `statement` may not run here, or `None` when it only reads.
pub(crate) fn refusal(statement: &Statement) -> Option<String> {
    let allowed = match statement {
        Statement::Query(q) => return query_refusal(q),
        Statement::Explain { statement, .. } => return refusal(statement),
        Statement::Declare { stmts } => {
            return stmts
                .iter()
                .find_map(|d| d.for_query.as_deref().and_then(query_refusal));
        }
        Statement::Set { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowObjects { .. }
        | Statement::ShowCharset { .. }
        | Statement::ShowCollation { .. }
        | Statement::ExplainTable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Reset { .. }
        | Statement::Use { .. } => true,
        _ => false,
    };
    (!allowed).then(|| command(statement))
}

fn query_refusal(q: &Query) -> Option<String> {
    if let Some(with) = &q.with
        && let Some(r) = with.cte_tables.iter().find_map(|c| query_refusal(&c.query))
    {
        return Some(r);
    }
    set_expr_refusal(&q.body)
}

fn set_expr_refusal(body: &SetExpr) -> Option<String> {
    match body {
        SetExpr::Select(s) if s.into.is_some() => Some("SELECT INTO".into()),
        SetExpr::Query(q) => query_refusal(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_refusal(left).or_else(|| set_expr_refusal(right))
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            Some(command(s))
        }
        _ => None,
    }
}

/// The command's leading keywords, as PostgreSQL names them in errors ("INSERT",
/// "CREATE TABLE", ...).
fn command(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let two = matches!(
        words.first().map(|w| w.to_ascii_uppercase()).as_deref(),
        Some("CREATE" | "DROP" | "ALTER" | "INSERT" | "DELETE")
    );
    let n = if two { 2 } else { 1 };
    words
        .iter()
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn refused(what: &str) -> PgWireError {
    error(
        READ_ONLY,
        format!(
            "cannot execute {what} in a read-only transaction: skystream's SQL endpoint serves \
             results read-only (write through a pipeline instead)"
        ),
    )
}

/// Refuses every statement that is not a read, in both protocols.
pub(crate) struct ReadOnly;

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refusal(statement).map(|what| Err(refused(&what)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        refusal(statement).map(|what| Err(refused(&what)))
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// Runs simple-protocol queries (what psql, psycopg2 and so Superset send) to completion under
/// the session's statement timeout, capped at `max_timeout`.
pub(crate) struct Executor {
    pub(crate) max_timeout: Duration,
}

impl Executor {
    fn timeout(&self, client: &dyn HookClient) -> Duration {
        let asked = client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        asked.map_or(self.max_timeout, |t| t.min(self.max_timeout))
    }
}

/// True when the statement reads `pg_index` or `pg_constraint`: the key and index reflection
/// of SQL toolkits, which the catalog cannot plan (`unnest(indkey)`, `reloptions`).
fn reads_key_catalogs(statement: &Statement) -> bool {
    let text = statement.to_string().to_ascii_lowercase();
    ["pg_index", "pg_constraint"].iter().any(|t| {
        text.match_indices(t).any(|(i, _)| {
            let after = text[i + t.len()..].chars().next();
            !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// The output column names of a plain SELECT.
fn output_names(statement: &Statement) -> Vec<String> {
    let Statement::Query(q) = statement else {
        return vec![];
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return vec![];
    };
    s.projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts
                .last()
                .map(|i| i.value.clone())
                .unwrap_or_else(|| "?column?".into()),
            SelectItem::UnnamedExpr(Expr::Function(f)) => f.name.to_string(),
            _ => "?column?".into(),
        })
        .collect()
}

async fn respond(
    ctx: &SessionContext,
    schema: Arc<Schema>,
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
    client: &dyn HookClient,
) -> PgWireResult<Response> {
    let table = MemTable::try_new(schema, vec![batches]).map_err(df_error)?;
    let df = ctx.read_table(Arc::new(table)).map_err(df_error)?;
    let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    Ok(Response::Query(
        encode_dataframe(df, &Format::UnifiedText, Some(format)).await?,
    ))
}

#[async_trait]
impl QueryHook for Executor {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_) | Statement::Explain { .. }) {
            return None;
        }
        let timeout = self.timeout(client);
        let run = async {
            let plan = ctx
                .state()
                .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                .await?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)?;
            let df = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok::<_, DataFusionError>((schema, batches))
        };
        let result = match tokio::time::timeout(timeout, run).await {
            Err(_) => {
                return Some(Err(error(
                    CANCELED,
                    format!(
                        "canceling statement due to statement timeout ({} ms)",
                        timeout.as_millis()
                    ),
                )));
            }
            Ok(r) => r,
        };
        Some(match result {
            Ok((schema, batches)) => respond(ctx, schema, batches, client).await,
            Err(e) if reads_key_catalogs(statement) => {
                // Nothing here has a primary key, a unique constraint or an index: answer the
                // reflection query with its columns and no rows.
                tracing::debug!("key/index reflection answered empty: {e}");
                let mut seen = std::collections::HashSet::new();
                let fields: Vec<Field> = output_names(statement)
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        // Arrow schemas need distinct names (`NULL, NULL` are both ?column?).
                        let n = if seen.insert(n.clone()) {
                            n
                        } else {
                            format!("{n}_{i}")
                        };
                        Field::new(n, DataType::Utf8, true)
                    })
                    .collect();
                respond(ctx, Arc::new(Schema::new(fields)), vec![], client).await
            }
            Err(e) => Err(df_error(e)),
        })
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "SELECT keyword, count(*) FROM lake.keyword_counts GROUP BY 1",
            "WITH t AS (SELECT 1 AS a) SELECT a FROM t UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "SET search_path TO lake",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "CLOSE c",
            "DISCARD ALL",
        ] {
            assert_eq!(refusal(&parse(sql)), None, "{sql}");
        }
    }

    #[test]
    fn writes_and_ddl_are_refused() {
        for (sql, what) in [
            ("INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DELETE FROM t", "DELETE FROM"),
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE lake.keyword_counts", "DROP TABLE"),
            ("ALTER TABLE t ADD COLUMN b INT", "ALTER TABLE"),
            ("TRUNCATE t", "TRUNCATE"),
            ("COPY t TO '/tmp/x.csv'", "COPY"),
            ("SELECT 1 INTO t", "SELECT INTO"),
            ("EXPLAIN ANALYZE DELETE FROM t", "DELETE FROM"),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "DELETE FROM",
            ),
            ("CREATE SCHEMA s", "CREATE SCHEMA"),
            ("GRANT SELECT ON t TO u", "GRANT"),
        ] {
            assert_eq!(refusal(&parse(sql)).as_deref(), Some(what), "{sql}");
        }
    }

    #[test]
    fn key_catalog_queries_are_recognised() {
        assert!(reads_key_catalogs(&parse(
            "SELECT a.attname FROM pg_attribute a JOIN (SELECT unnest(ix.indkey) attnum \
             FROM pg_catalog.pg_index ix) k ON a.attnum = k.attnum"
        )));
        assert!(reads_key_catalogs(&parse(
            "SELECT conname FROM pg_constraint r WHERE r.contype = 'p'"
        )));
        assert!(!reads_key_catalogs(&parse("SELECT * FROM pg_indexes_x")));
        assert_eq!(
            output_names(&parse(
                "SELECT a.attname, ix.indisunique AS uniq, count(*) FROM pg_index ix"
            )),
            vec!["attname", "uniq", "count"]
        );
    }
}
