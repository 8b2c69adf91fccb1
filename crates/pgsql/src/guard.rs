//! What a client may run, and how: the query hooks of a connection's session.
//!
//! - [`ReadOnly`]: only reads reach DataFusion (SQLSTATE 25006 for the rest).
//! - [`Settings`]: `SET`/`RESET` of an allow-list of session variables, what psql, psycopg2,
//!   SQLAlchemy, JDBC and Superset send; every other variable (DataFusion's own
//!   `datafusion.*` first of all: memory limit, spilling, batch size) is refused with 42501.
//! - [`Cursors`]: `DECLARE ... CURSOR` runs its query to completion under the statement timeout
//!   (like any statement) and `FETCH` reads the stored rows.
//! - [`Executor`]: every other statement is planned and run on the SQL execution runtime, not
//!   on the runtime that serves connections, under the statement timeout: a statement that
//!   times out, or is cancelled, is aborted and stops using CPU; its results are charged to
//!   the server's memory pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, DeclareType, Expr, FetchDirection, Query, SelectItem, Set, SetExpr, Statement,
    Value,
};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::auth::STATEMENT_TIMEOUT_KEY;
use crate::cancel::Canceller;

/// SQLSTATE read_only_sql_transaction.
pub(crate) const READ_ONLY: &str = "25006";
/// SQLSTATE query_canceled.
pub(crate) const CANCELED: &str = "57014";
/// SQLSTATE insufficient_privilege.
pub(crate) const NOT_ALLOWED: &str = "42501";

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
    let msg = e.to_string();
    let code = if code == "42P01" && !msg.contains("not found") {
        "42000"
    } else if msg.contains("max_value_bytes") {
        "54000"
    } else {
        code
    };
    error(code, msg)
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

/// Session variables datafusion-postgres applies to the connection (its `SET` hook keeps them
/// in the connection's metadata).
const APPLIED: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// Variables clients set on connect whose only value here is the one the server has: accepted
/// and ignored.
const ACCEPTED: &[&str] = &[
    "client_encoding",
    "client_min_messages",
    "standard_conforming_strings",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_isolation",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
    "jit",
    "geqo",
    "work_mem",
    "timezone",
    "time zone",
];

fn settable(name: &str) -> bool {
    APPLIED.contains(&name) || ACCEPTED.contains(&name)
}

fn not_settable(name: &str) -> PgWireError {
    error(
        NOT_ALLOWED,
        format!(
            "permission denied to set parameter \"{name}\": the server's settings are not \
             changed from a connection (settable: {})",
            APPLIED.join(", ")
        ),
    )
}

/// `SET`/`RESET` of an allow-list of session variables (see the module documentation).
pub(crate) struct Settings;

impl Settings {
    fn check(statement: &Statement, client: &mut dyn HookClient) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Set(set) => match set {
                Set::SingleAssignment {
                    scope,
                    hivevar,
                    variable,
                    ..
                } => {
                    let name = variable.to_string().to_ascii_lowercase();
                    if *hivevar || !settable(&name) {
                        return Some(Err(not_settable(&name)));
                    }
                    // datafusion-postgres applies these (SESSION is the default scope).
                    if scope.is_none() && APPLIED.contains(&name.as_str()) {
                        return None;
                    }
                    Some(Ok(Response::Execution(Tag::new("SET"))))
                }
                Set::SetTimeZone { .. } => None,
                Set::SetNames { .. } | Set::SetNamesDefault {} => {
                    Some(Ok(Response::Execution(Tag::new("SET"))))
                }
                // SET TRANSACTION / SESSION CHARACTERISTICS: every transaction here reads.
                Set::SetTransaction { .. } => Some(Ok(Response::Execution(Tag::new("SET")))),
                other => {
                    let name = other
                        .to_string()
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("?")
                        .to_ascii_lowercase();
                    Some(Err(not_settable(&name)))
                }
            },
            Statement::Reset(r) => {
                let text = r.to_string().to_ascii_lowercase();
                let name = text
                    .strip_prefix("reset")
                    .unwrap_or(&text)
                    .trim()
                    .to_string();
                if name == "all" {
                    for v in APPLIED {
                        client.metadata_mut().remove(*v);
                    }
                    client.metadata_mut().remove(STATEMENT_TIMEOUT_KEY);
                    return Some(Ok(Response::Execution(Tag::new("RESET"))));
                }
                if !settable(&name) {
                    return Some(Err(not_settable(&name)));
                }
                client.metadata_mut().remove(&name);
                if name == "statement_timeout" {
                    client.metadata_mut().remove(STATEMENT_TIMEOUT_KEY);
                }
                Some(Ok(Response::Execution(Tag::new("RESET"))))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl QueryHook for Settings {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement, client)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match statement {
            Statement::Set(Set::SingleAssignment { variable, .. }) => {
                let name = variable.to_string().to_ascii_lowercase();
                (!settable(&name)).then(|| Err(not_settable(&name)))
            }
            Statement::Reset(_) => Some(Ok(empty_plan(false))),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement, client)
    }
}

fn empty_plan(one_row: bool) -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: one_row,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

/// What a statement produced, held in memory (and charged to the server's memory pool) until
/// it is sent.
pub(crate) struct Results {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub reservation: Option<MemoryReservation>,
}

/// Runs statements on the SQL execution runtime (see the module documentation).
pub(crate) struct Executor {
    /// The longest a statement may run; a client's `statement_timeout` may lower it.
    pub max_timeout: Duration,
    /// The runtime statements run on.
    pub runtime: tokio::runtime::Handle,
    /// Statements running at once over the whole server; others wait (within their timeout).
    pub slots: Arc<Semaphore>,
    /// This connection's cancel requests.
    pub cancel: Arc<Canceller>,
}

impl Executor {
    /// The statement timeout of `client`'s session.
    pub(crate) fn timeout(&self, client: &(dyn ClientInfo + Send + Sync)) -> Duration {
        let asked = client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        asked.map_or(self.max_timeout, |t| t.min(self.max_timeout))
    }

    /// Runs `work` with `ctx` on the execution runtime within `timeout`; on the timeout or a
    /// cancel request the work is aborted (it stops at its next yield: DataFusion's operators
    /// yield between batches).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        ctx: &SessionContext,
        timeout: Duration,
        work: F,
    ) -> PgWireResult<T>
    where
        T: Send + 'static,
        F: FnOnce(SessionContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, DataFusionError>> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            error(
                CANCELED,
                format!(
                    "canceling statement due to statement timeout ({} ms)",
                    timeout.as_millis()
                ),
            )
        };
        let user_cancel = || error(CANCELED, "canceling statement due to user request");
        let permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.map_err(|_| error("57P01", "the server is shutting down"))?,
            _ = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            _ = self.cancel.cancelled() => return Err(user_cancel()),
        };
        let ctx = ctx.clone();
        self.cancel.reset();
        // Aborted however this ends: timed out, cancelled, or the connection dropped (and its
        // join filters fail from then on, see crate::cancel).
        let mut task = AbortOnDrop(
            self.runtime.spawn(async move {
                let _permit = permit;
                work(ctx).await
            }),
            self.cancel.clone(),
        );
        tokio::select! {
            r = &mut task.0 => match r {
                Ok(r) => r.map_err(df_error),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = skystream_engine::pipeline::panic_message(&*p);
                    tracing::error!("SQL statement panicked: {msg}");
                    Err(error("XX000", format!("internal error: {msg}")))
                }
                Err(e) => Err(error("XX000", format!("internal error: {e}"))),
            },
            _ = tokio::time::sleep_until(deadline) => {
                task.cancel();
                Err(timed_out())
            }
            _ = self.cancel.cancelled() => Err(user_cancel()),
        }
    }

    /// Plans a statement (refusing DDL, DML and statements that change the session).
    async fn plan_statement(
        ctx: &SessionContext,
        statement: Statement,
    ) -> Result<LogicalPlan, DataFusionError> {
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        Ok(plan)
    }

    /// Runs a statement to its results (simple protocol, cursors).
    pub(crate) async fn statement(
        &self,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        statement: &Statement,
    ) -> PgWireResult<Results> {
        let s = statement.clone();
        let r = self
            .run(ctx, self.timeout(client), move |ctx| async move {
                let plan = Self::plan_statement(&ctx, s).await?;
                collect(ctx.execute_logical_plan(plan).await?).await
            })
            .await;
        match r {
            Err(e) if reads_key_catalogs(statement) && !is_timeout(&e) => {
                // Nothing here has a primary key, a unique constraint or an index: answer the
                // reflection query with its columns and no rows.
                tracing::debug!("key/index reflection answered empty: {e}");
                Ok(Results {
                    schema: key_catalog_schema(statement),
                    batches: vec![],
                    reservation: None,
                })
            }
            r => r,
        }
    }

    /// Runs a planned statement with bound parameters (extended protocol).
    pub(crate) async fn plan(
        &self,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        plan: &LogicalPlan,
        params: ParamValues,
    ) -> PgWireResult<Results> {
        if let Some(schema) = key_catalog_marker(plan) {
            return Ok(Results {
                schema,
                batches: vec![],
                reservation: None,
            });
        }
        let plan = plan.clone();
        self.run(ctx, self.timeout(client), move |ctx| async move {
            let plan = plan.replace_params_with_values(&params)?;
            let plan = ctx.state().optimize(&plan)?;
            collect(ctx.execute_logical_plan(plan).await?).await
        })
        .await
    }
}

/// A statement's task: aborted, and its connection's statement cancelled, unless it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>, Arc<Canceller>);

impl<T> AbortOnDrop<T> {
    fn cancel(&self) {
        self.1.cancel();
        self.0.abort();
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.cancel();
        }
    }
}

fn is_timeout(e: &PgWireError) -> bool {
    matches!(e, PgWireError::UserError(info) if info.code == CANCELED)
}

/// Collects a statement's results, charging them to the session's memory pool.
async fn collect(df: DataFrame) -> Result<Results, DataFusionError> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let pool = df.task_ctx().memory_pool().clone();
    let reservation = MemoryConsumer::new("SQL statement results").register(&pool);
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        reservation.try_grow(b.get_array_memory_size())?;
        batches.push(b);
    }
    Ok(Results {
        schema,
        batches,
        reservation: Some(reservation),
    })
}

/// A response streaming `results` in `format` (the reservation is released once it is sent).
pub(crate) fn respond(
    results: Results,
    format: &Format,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<Response> {
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &results.schema,
        format,
        Some(options),
    )?);
    let Results {
        batches,
        reservation,
        ..
    } = results;
    let f = fields.clone();
    let rows = futures::stream::iter(batches)
        .flat_map(move |b| futures::stream::iter(encode_recordbatch(f.clone(), b)))
        .chain(futures::stream::poll_fn(move |_| {
            // The reservation lives until the last row is sent.
            let _held = &reservation;
            std::task::Poll::Ready(None)
        }));
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

/// The cursor statements, over the connection's portal store.
pub(crate) struct Cursors {
    pub executor: Arc<Executor>,
}

impl Cursors {
    async fn declare(
        &self,
        stmts: &[datafusion::sql::sqlparser::ast::Declare],
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> PgWireResult<Response> {
        for declare in stmts {
            if declare.declare_type != Some(DeclareType::Cursor) {
                return Err(error(
                    "42601",
                    "only DECLARE ... CURSOR FOR a query is supported",
                ));
            }
            let name = declare
                .names
                .first()
                .map(|n| n.value.clone())
                .ok_or_else(|| error("42601", "cursor name is required"))?;
            let query = declare
                .for_query
                .as_deref()
                .ok_or_else(|| error("42601", "DECLARE CURSOR requires a FOR query"))?;
            // The query runs now, under the statement timeout; FETCH only reads its rows.
            let results = self
                .executor
                .statement(ctx, &*client, &Statement::Query(Box::new(query.clone())))
                .await?;
            let response = match respond(results, &Format::UnifiedText, &*client)? {
                Response::Query(q) => q,
                _ => unreachable!("respond gives a query response"),
            };
            let stored = Arc::new(StoredStatement::new(
                name.clone(),
                (query.to_string(), None),
                vec![],
            ));
            let portal = Portal::new_cursor(name, stored);
            portal.start(response).await;
            client.portal_store().put_portal(Arc::new(portal));
        }
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }

    async fn fetch(
        client: &mut dyn HookClient,
        name: &str,
        direction: &FetchDirection,
    ) -> PgWireResult<Response> {
        let backwards = || error("55000", "cursor can only scan forward");
        let rows = match direction {
            FetchDirection::Next | FetchDirection::Forward { limit: None } => 1,
            FetchDirection::Forward { limit: Some(v) } | FetchDirection::Count { limit: v } => {
                match &v.value {
                    Value::Number(n, _) => n.parse::<usize>().map_err(|_| {
                        error("22023", format!("FETCH count must be a number, got {n}"))
                    })?,
                    other => return Err(error("22023", format!("FETCH count {other}"))),
                }
            }
            FetchDirection::ForwardAll | FetchDirection::All => 0,
            _ => return Err(backwards()),
        };
        let portal = match client.portal_store().get_portal(name) {
            Some(entry) => entry.value().cloned(),
            None => None,
        };
        let Some(portal) = portal else {
            return Err(error("34000", format!("cursor \"{name}\" does not exist")));
        };
        let fetched = portal.fetch(rows).await?;
        Ok(Response::Query(fetched.response))
    }
}

#[async_trait]
impl QueryHook for Cursors {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Some(match statement {
            Statement::Declare { stmts } => self.declare(stmts, ctx, client).await,
            Statement::Fetch {
                name, direction, ..
            } => Self::fetch(client, &name.value, direction).await,
            Statement::Close { cursor } => {
                match cursor {
                    CloseCursor::All => client.portal_store().clear_portals(),
                    CloseCursor::Specific { name } => client.portal_store().rm_portal(&name.value),
                }
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            _ => return None,
        })
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        matches!(
            statement,
            Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. }
        )
        .then(|| Ok(empty_plan(false)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.handle_simple_query(statement, ctx, client).await
    }
}

/// Every statement no earlier hook took: planned and run by the [`Executor`].
pub(crate) struct Execute {
    pub executor: Arc<Executor>,
}

#[async_trait]
impl QueryHook for Execute {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let r = self.executor.statement(ctx, &*client, statement).await;
        Some(r.and_then(|res| respond(res, &Format::UnifiedText, &*client)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let s = statement.clone();
        let r = self
            .executor
            .run(ctx, self.executor.timeout(client), move |ctx| async move {
                Executor::plan_statement(&ctx, s).await
            })
            .await;
        Some(match r {
            Err(e) if reads_key_catalogs(statement) && !is_timeout(&e) => {
                tracing::debug!("key/index reflection answered empty: {e}");
                key_catalog_plan(statement)
            }
            r => r,
        })
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let r = self
            .executor
            .plan(ctx, &*client, plan, params.clone())
            .await;
        Some(r.and_then(|res| respond(res, &Format::UnifiedText, &*client)))
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

/// The columns (text, distinct names) of a key/index reflection query answered empty.
fn key_catalog_schema(statement: &Statement) -> SchemaRef {
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
    Arc::new(Schema::new(fields))
}

/// Metadata key marking the empty plan of a key/index reflection query.
const KEY_CATALOG_MARK: &str = "skystream.key_catalog";

fn key_catalog_plan(statement: &Statement) -> PgWireResult<LogicalPlan> {
    let schema = key_catalog_schema(statement);
    let mut meta = std::collections::HashMap::new();
    meta.insert(KEY_CATALOG_MARK.to_string(), "1".to_string());
    let schema = Schema::new_with_metadata(schema.fields().clone(), meta);
    let df_schema = datafusion::common::DFSchema::try_from(schema)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(LogicalPlan::EmptyRelation(
        datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(df_schema),
        },
    ))
}

fn key_catalog_marker(plan: &LogicalPlan) -> Option<SchemaRef> {
    match plan {
        LogicalPlan::EmptyRelation(e)
            if e.schema
                .as_arrow()
                .metadata()
                .contains_key(KEY_CATALOG_MARK) =>
        {
            Some(Arc::new(e.schema.as_arrow().clone()))
        }
        _ => None,
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
    fn only_allowed_variables_are_settable() {
        for v in [
            "statement_timeout",
            "search_path",
            "application_name",
            "client_encoding",
        ] {
            assert!(settable(v), "{v}");
        }
        for v in [
            "datafusion.runtime.memory_limit",
            "datafusion.execution.batch_size",
            "datafusion.runtime.temp_directory",
            "datafusion.catalog.information_schema",
            "anything_else",
        ] {
            assert!(!settable(v), "{v}");
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
        let plan = key_catalog_plan(&parse("SELECT conname, conkey FROM pg_constraint")).unwrap();
        assert_eq!(key_catalog_marker(&plan).unwrap().fields().len(), 2);
    }
}
