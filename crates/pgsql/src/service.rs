//! One connection's query handling: every statement is checked against the size and shape
//! limits before datafusion-postgres parses and plans it (its parser rewrites, and its extended
//! protocol prints, statements recursively), then handed to its session, whose hooks
//! ([`crate::guard`]) run it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, Response};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, Parser};
use futures::Sink;
use skystream_sql::limits::{SqlLimits, check_statement};

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;

use crate::guard::{Executor, error, respond};

/// SQLSTATE statement_too_complex.
pub(crate) const TOO_COMPLEX: &str = "54001";
/// SQLSTATE program_limit_exceeded.
pub(crate) const LIMIT_EXCEEDED: &str = "54000";

/// The most tokens one query text may have (a Superset query has a few hundred; an `IN` list
/// of 10,000 values 20,000).
pub(crate) const MAX_TOKENS: usize = 100_000;

/// The statement type of the extended protocol (datafusion-postgres's).
type DfStatement = (
    String,
    Option<(
        datafusion::sql::sqlparser::ast::Statement,
        datafusion::logical_expr::LogicalPlan,
    )>,
);

/// Checks a query text against the limits. Parse errors are left to the real parser, which
/// reports them in its own words.
pub(crate) fn precheck(sql: &str, limits: &SqlLimits, max_bytes: usize) -> PgWireResult<()> {
    if sql.len() > max_bytes {
        return Err(error(
            LIMIT_EXCEEDED,
            format!(
                "query of {} bytes exceeds the limit of {max_bytes} bytes (max_query_bytes)",
                sql.len()
            ),
        ));
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Ok(());
    };
    // The parser builds operator chains without recursion, but their trees are dropped by
    // recursion: the token count bounds how deep one can be.
    if tokens.len() > MAX_TOKENS {
        return Err(error(
            TOO_COMPLEX,
            format!(
                "statement too complex: {} tokens exceed the limit of {MAX_TOKENS} (max_query_tokens)",
                tokens.len()
            ),
        ));
    }
    let Ok(statements) = SqlParser::new(&dialect)
        .with_tokens(tokens)
        .parse_statements()
    else {
        return Ok(());
    };
    for s in &statements {
        if let Err(e) = check_statement(s, limits) {
            return Err(error(TOO_COMPLEX, e.message));
        }
    }
    Ok(())
}

/// See the module documentation.
pub(crate) struct SessionService {
    inner: Arc<DfSessionService>,
    parser: Arc<CheckedParser>,
    ctx: SessionContext,
    executor: Arc<Executor>,
}

impl SessionService {
    pub(crate) fn new(
        ctx: SessionContext,
        hooks: Vec<Arc<dyn datafusion_postgres::QueryHook>>,
        executor: Arc<Executor>,
        limits: SqlLimits,
        max_bytes: usize,
    ) -> Self {
        let inner = Arc::new(DfSessionService::new_with_hooks(
            Arc::new(ctx.clone()),
            hooks,
        ));
        let parser = Arc::new(CheckedParser {
            inner: inner.query_parser(),
            limits,
            max_bytes,
        });
        Self {
            inner,
            parser,
            ctx,
            executor,
        }
    }
}

/// The extended protocol's parser, with the limits checked first.
pub(crate) struct CheckedParser {
    inner: Arc<Parser>,
    limits: SqlLimits,
    max_bytes: usize,
}

#[async_trait]
impl QueryParser for CheckedParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        precheck(sql, &self.limits, self.max_bytes)?;
        self.inner.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl SimpleQueryHandler for SessionService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        precheck(query, &self.parser.limits, self.parser.max_bytes)?;
        SimpleQueryHandler::do_query(self.inner.as_ref(), client, query).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for SessionService {
    type Statement = DfStatement;
    type QueryParser = CheckedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Queries run here, where the portal's result formats are known; everything else
        // (SET, SHOW, cursors, transactions) goes through the session's hooks.
        if let (_, Some((statement, plan))) = &portal.statement.statement
            && matches!(statement, Statement::Query(_) | Statement::Explain { .. })
        {
            let wire = self
                .parser
                .get_parameter_types(&portal.statement.statement)?;
            let mut inferred: Vec<(String, Option<DataType>)> = plan
                .get_parameter_types()
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?
                .into_iter()
                .collect();
            inferred
                .sort_by_key(|(k, _)| k.trim_start_matches('$').parse::<u32>().unwrap_or(u32::MAX));
            let inferred: Vec<Option<&DataType>> =
                inferred.iter().map(|(_, t)| t.as_ref()).collect();
            let wire: Vec<Option<&Type>> = wire.iter().map(Some).collect();
            let params = deserialize_parameters_with_server_types(portal, &inferred, &wire)?;
            let results = self
                .executor
                .plan(&self.ctx, &*client, plan, params)
                .await?;
            return respond(results, &portal.result_column_format, &*client);
        }
        ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows).await
    }
}
