//! From a pipeline script to a runnable [`Pipeline`], in named steps:
//!
//! 1. [`declare_tables`]: the script is split into statements ([`crate::script`]); each
//!    `CREATE TABLE` resolves its connector (a table that is read becomes a [`StreamTable`] in
//!    a DataFusion session, one inserted into becomes a sink); each `CREATE VIEW` is planned by
//!    DataFusion (views are inlined where used).
//! 2. [`plan_flows`]: each `INSERT INTO` (or bare `SELECT`, which prints to stdout) is planned
//!    by DataFusion into a logical plan, checked against the streaming rules
//!    ([`crate::validate`]), given event time ([`crate::rewrite`]), optimised, turned into a
//!    physical plan and cut at its windowed aggregates ([`crate::cut`]): the part below runs per
//!    source batch, the aggregates become slice operators (windows over the same rows fused,
//!    what the plan above filters or joins pushed in: [`crate::pushdown`]), the part above
//!    runs per window end.
//! 3. [`wire_sources`]: each table read becomes one source decoding the columns read.
//! 4. [`wire_flows`]: sinks, and the runnable flows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Column, TableReference};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, Projection, cast};
use datafusion::optimizer::Optimizer;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, ObjectName, SqlOption, Statement, TableObject, Value,
};
use skystream_engine::connector::{Connector, ConnectorRegistry, TableDef};
use skystream_engine::options::Options;
use skystream_engine::pipeline::{Flow, Head, Pipeline, SinkSlot, SourceSlot, WindowStage};
use skystream_engine::watermark::WatermarkSpec;

use crate::cut::{Split, split_flow};
use crate::error::SqlError;
use crate::rewrite::add_event_time;
use crate::script::{ScriptStatement, WatermarkDecl, parse_script};
use crate::table::StreamTable;
use crate::validate;

/// A planned pipeline and a description of its plan.
pub struct PlannedPipeline {
    pub pipeline: Pipeline,
    pub explain: String,
    /// Names of the sink tables, one per flow.
    pub outputs: Vec<String>,
}

/// A DataFusion session set up for streaming plans: one partition, skystream's functions, and
/// the optimizer rules that keep a windowed aggregate in one piece.
pub fn new_session() -> SessionContext {
    new_session_with(None)
}

/// [`new_session`] whose operators may hold at most `memory_limit` bytes (DataFusion's memory
/// pool; a query needing more fails with an error saying so).
pub fn new_session_with(memory_limit: Option<usize>) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192)
        .with_repartition_aggregations(false)
        .with_repartition_joins(false)
        .with_repartition_windows(false)
        .with_repartition_sorts(false)
        .with_information_schema(false);
    {
        let opts = config.options_mut();
        opts.sql_parser.collect_spans = true;
        opts.sql_parser.map_string_types_to_utf8view = false;
        opts.execution.coalesce_batches = false;
        // `ROW_NUMBER() OVER (PARTITION BY win ORDER BY ...) <= K` keeps a top-K heap per
        // window instead of sorting every emitted window in full.
        opts.optimizer.enable_window_topn = true;
    }
    // `count(DISTINCT x)` must stay one aggregate (the window operator runs its accumulator);
    // the rule rewriting it into two GROUP BYs is left out.
    let rules = Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    // Stage plans run to completion synchronously on each batch; cooperative yielding (which
    // answers Pending to let other tokio tasks run) has no place there.
    let physical_rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "EnsureCooperative")
        .collect();
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_limit(limit, 1.0);
    }
    let runtime = runtime
        .build_arc()
        .expect("a runtime environment without disk settings builds");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_physical_optimizer_rules(physical_rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in crate::udf::all() {
        ctx.register_udf(f);
    }
    // One function call may not build a value batch past a share of the memory limit (a
    // `repeat()` would otherwise allocate outside any accounting).
    let cap = memory_limit.map_or(crate::limits::DEFAULT_MAX_VALUE_BYTES, |m| {
        (m / 4).clamp(1 << 20, crate::limits::DEFAULT_MAX_VALUE_BYTES)
    });
    crate::limits::cap_scalar_functions(&ctx, cap);
    ctx
}

struct SourceTable {
    def: TableDef,
    schema: SchemaRef,
    watermark: Option<WatermarkDecl>,
}

struct FlowPlan {
    /// The tables its rows go to: INSERTs of the same rows share one flow.
    targets: Vec<TableDef>,
    split: Split,
    output_schema: SchemaRef,
    /// The whole plan as text: flows with the same key compute the same rows.
    key: String,
}

fn ident_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }
        })
        .unwrap_or_else(|| name.to_string())
}

fn option_value(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) | Value::Number(s, _) => {
                Some(s.clone())
            }
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        SqlExpr::Identifier(i) => Some(i.value.clone()),
        SqlExpr::UnaryOp {
            op: datafusion::sql::sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => option_value(expr).map(|v| format!("-{v}")),
        _ => None,
    }
}

/// Checks a declared table before it is used (an API server's sandbox); an error refuses it.
pub type TableCheck = Arc<dyn Fn(&TableDef, &dyn Connector) -> Result<(), String> + Send + Sync>;

/// Settings of [`plan_script_with`].
#[derive(Clone, Default)]
pub struct PlanOptions {
    /// Memory the pipeline's DataFusion operators may hold (bytes).
    pub memory_limit: Option<usize>,
    /// Called for every `CREATE TABLE`.
    pub table_check: Option<TableCheck>,
    /// Options of declared tables replaced from outside the script (`skystream run --with`,
    /// benchmarks): table name -> options. With a `connector` the table's options are replaced
    /// whole; without, each one given is set. Naming a table the script does not declare is an
    /// error.
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
}

/// Plans a pipeline script with the connectors of `registry`.
pub async fn plan_script(
    sql: &str,
    registry: &ConnectorRegistry,
) -> Result<PlannedPipeline, SqlError> {
    plan_script_with(sql, registry, &PlanOptions::default()).await
}

/// Stack of the threads [`plan_script_isolated`] plans on: DataFusion's planner and optimizer
/// recurse once per level of a query, and dropping a deep statement recurses too.
pub const PLANNER_STACK: usize = 256 << 20;

/// Scripts planned at once by [`plan_script_isolated`]; more wait their turn.
static PLANNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// [`plan_script_with`] on a thread of its own, with a large stack and a runtime of its own,
/// so that a heavy script neither overflows the caller's stack nor holds up the caller's
/// runtime (an API server's). A panic while planning becomes an error.
pub async fn plan_script_isolated(
    sql: String,
    registry: ConnectorRegistry,
    options: PlanOptions,
) -> Result<PlannedPipeline, SqlError> {
    let _turn = PLANNING
        .acquire()
        .await
        .map_err(|_| SqlError::new("internal: the planner is closed"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skystream-planner".into())
        .stack_size(PLANNER_STACK)
        .spawn(move || {
            let run = || -> Result<PlannedPipeline, SqlError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| SqlError::new(format!("internal: {e}")))?;
                rt.block_on(plan_script_with(&sql, &registry, &options))
            };
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
                    Err(SqlError::new(format!(
                        "internal error while planning: {}",
                        skystream_engine::pipeline::panic_message(&*p)
                    )))
                });
            let _ = tx.send(r);
        })
        .map_err(|e| SqlError::new(format!("internal: cannot start a planner thread: {e}")))?;
    rx.await
        .unwrap_or_else(|_| Err(SqlError::new("internal: the planner thread ended")))
}

/// [`plan_script`] with settings.
/// Plans a script: tables declared, flows planned, sources and sinks wired (see the module
/// docs).
pub async fn plan_script_with(
    sql: &str,
    registry: &ConnectorRegistry,
    options: &PlanOptions,
) -> Result<PlannedPipeline, SqlError> {
    let statements = parse_script(sql)?;
    if statements.is_empty() {
        return Err(SqlError::new("the script holds no statement"));
    }
    let ctx = new_session_with(options.memory_limit);
    let declared = declare_tables(&statements, &ctx, registry, options).await?;
    let (flows, explain) = plan_flows(&ctx, declared.queries, &declared.sinks, registry).await?;
    let (source_slots, source_index) = wire_sources(&flows, &declared.sources, registry)?;
    let (sink_slots, pipeline_flows, outputs) = wire_flows(flows, &source_index, registry)?;
    let task_ctx = ctx.task_ctx();
    Ok(PlannedPipeline {
        pipeline: Pipeline::new(source_slots, pipeline_flows, sink_slots, task_ctx),
        explain,
        outputs,
    })
}

/// A query of the script: the table it inserts into (`None`: a bare SELECT), and where.
type Query<'a> = (
    Option<String>,
    Box<datafusion::sql::sqlparser::ast::Query>,
    &'a ScriptStatement,
);

/// What the script declares: source tables (registered in the session), sink tables, views
/// (in the session) and the queries to run.
struct Declared<'a> {
    sources: BTreeMap<String, SourceTable>,
    sinks: HashMap<String, TableDef>,
    queries: Vec<Query<'a>>,
}

/// Step 1: each `CREATE TABLE` resolves its connector (a source table is registered in the
/// session, an inserted-into one becomes a sink), each `CREATE VIEW` is planned into the
/// session, and the `INSERT`s and `SELECT`s are collected.
async fn declare_tables<'a>(
    statements: &'a [ScriptStatement],
    ctx: &SessionContext,
    registry: &ConnectorRegistry,
    options: &PlanOptions,
) -> Result<Declared<'a>, SqlError> {
    let insert_targets: HashSet<String> = statements
        .iter()
        .filter_map(|s| match &s.statement {
            Statement::Insert(i) => match &i.table {
                TableObject::TableName(n) => Some(ident_name(n)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut sources: BTreeMap<String, SourceTable> = BTreeMap::new();
    let mut sinks: HashMap<String, TableDef> = HashMap::new();
    let mut queries: Vec<(
        Option<String>,
        Box<datafusion::sql::sqlparser::ast::Query>,
        &ScriptStatement,
    )> = Vec::new();

    for st in statements {
        let pos = Some(st.start());
        match &st.statement {
            Statement::CreateTable(ct) => {
                let name = ident_name(&ct.name);
                if sources.contains_key(&name) || sinks.contains_key(&name) {
                    return Err(
                        SqlError::new(format!("table '{name}' is declared twice")).or_at(pos)
                    );
                }
                if ct.query.is_some() || ct.external || ct.like.is_some() {
                    return Err(SqlError::new("CREATE TABLE in a pipeline declares a connector table: CREATE TABLE name (columns) WITH (connector = '...')").or_at(pos));
                }
                let with = match &ct.table_options {
                    CreateTableOptions::With(o) => o.clone(),
                    CreateTableOptions::None => Vec::new(),
                    _ => {
                        return Err(
                            SqlError::new("table options go in WITH (key = 'value', ...)")
                                .or_at(pos),
                        );
                    }
                };
                let mut values = BTreeMap::new();
                for o in &with {
                    let SqlOption::KeyValue { key, value } = o else {
                        return Err(SqlError::new(format!(
                            "table '{name}': options are key = 'value' pairs, got {o}"
                        ))
                        .or_at(pos));
                    };
                    let v = option_value(value).ok_or_else(|| {
                        SqlError::new(format!(
                            "table '{name}': option '{}' needs a literal value",
                            key.value
                        ))
                        .or_at(pos)
                    })?;
                    values.insert(key.value.to_lowercase(), v);
                }
                if let Some(o) = options.tables.get(&name) {
                    if o.contains_key("connector") {
                        values.clear();
                    }
                    values.extend(o.iter().map(|(k, v)| (k.to_lowercase(), v.clone())));
                }
                let connector = values.remove("connector").ok_or_else(|| {
                    SqlError::new(format!("table '{name}' needs WITH (connector = '...')"))
                        .or_at(pos)
                })?;
                let role = values.remove("type");
                let conn = registry
                    .get(&connector)
                    .map_err(|e| SqlError::from(e).or_at(pos))?;
                // A table is a sink when it is inserted into, or when its connector cannot be read.
                let is_sink = insert_targets.contains(&name)
                    || role.as_deref() == Some("sink")
                    || !conn.is_source();
                if insert_targets.contains(&name) && !conn.is_sink() {
                    return Err(SqlError::new(format!(
                        "table '{name}': connector '{connector}' cannot be written to"
                    ))
                    .or_at(pos));
                }
                match (role.as_deref(), is_sink) {
                    (Some("source"), true) => {
                        return Err(SqlError::new(format!(
                            "table '{name}' is declared type = 'source' but is inserted into"
                        ))
                        .or_at(pos));
                    }
                    (Some("sink"), false)
                    | (Some("source"), false)
                    | (Some("sink"), true)
                    | (None, _) => {}
                    (Some(other), _) => {
                        return Err(SqlError::new(format!(
                            "table '{name}': type must be 'source' or 'sink', got '{other}'"
                        ))
                        .or_at(pos));
                    }
                }
                let declared_schema = if ct.columns.is_empty() {
                    None
                } else {
                    let mut plain = ct.clone();
                    plain.table_options = CreateTableOptions::None;
                    let plan = ctx
                        .state()
                        .statement_to_plan(DFStatement::Statement(Box::new(
                            Statement::CreateTable(plain),
                        )))
                        .await
                        .map_err(|e| SqlError::from(e).or_at(pos))?;
                    match plan {
                        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(m)) => {
                            Some(Arc::new(m.input.schema().as_arrow().clone()))
                        }
                        _ => {
                            return Err(SqlError::new(
                                "internal: unexpected plan for CREATE TABLE",
                            )
                            .or_at(pos));
                        }
                    }
                };
                let def = TableDef {
                    name: name.clone(),
                    connector: connector.clone(),
                    declared_schema,
                    options: Options::new(&name, values),
                };
                if let Some(check) = &options.table_check {
                    check(&def, conn.as_ref()).map_err(|e| SqlError::new(e).or_at(pos))?;
                }
                if is_sink {
                    if st.watermark.is_some() {
                        return Err(SqlError::new(format!(
                            "table '{name}' is a sink: WATERMARK applies to source tables"
                        ))
                        .or_at(pos));
                    }
                    sinks.insert(name, def);
                } else {
                    let schema = conn
                        .source_schema(&def)
                        .map_err(|e| SqlError::from(e).or_at(pos))?;
                    if let Some(w) = &st.watermark {
                        let f = schema.field_with_name(&w.column).map_err(|_| {
                            SqlError::at(
                                format!(
                                    "WATERMARK FOR '{}': table '{name}' has no such column",
                                    w.column
                                ),
                                w.line,
                                w.col,
                            )
                        })?;
                        if !matches!(f.data_type(), DataType::Timestamp(_, _)) {
                            return Err(SqlError::at(
                                format!(
                                    "WATERMARK FOR '{}': the column must be a TIMESTAMP, it is {}",
                                    w.column,
                                    f.data_type()
                                ),
                                w.line,
                                w.col,
                            ));
                        }
                    }
                    let table = StreamTable {
                        name: name.clone(),
                        schema: schema.clone(),
                        event_time: st.watermark.as_ref().map(|w| w.column.clone()),
                    };
                    ctx.register_table(TableReference::bare(name.clone()), Arc::new(table))
                        .map_err(|e| SqlError::from(e).or_at(pos))?;
                    sources.insert(
                        name,
                        SourceTable {
                            def,
                            schema,
                            watermark: st.watermark.clone(),
                        },
                    );
                }
            }
            Statement::CreateView(_) => {
                let plan = ctx
                    .state()
                    .statement_to_plan(DFStatement::Statement(Box::new(st.statement.clone())))
                    .await
                    .map_err(|e| st.locate(SqlError::from(e)))?;
                ctx.execute_logical_plan(plan)
                    .await
                    .map_err(|e| SqlError::from(e).or_at(pos))?;
            }
            Statement::Insert(ins) => {
                let TableObject::TableName(n) = &ins.table else {
                    return Err(SqlError::new("INSERT INTO takes a table name").or_at(pos));
                };
                let target = ident_name(n);
                if !sinks.contains_key(&target) {
                    return Err(SqlError::new(format!("INSERT INTO '{target}': no such table (declare it with CREATE TABLE ... WITH (connector = ...) first)")).or_at(pos));
                }
                if !ins.columns.is_empty() {
                    return Err(SqlError::new("INSERT INTO with a column list is not supported: select the sink's columns in order").or_at(pos));
                }
                let Some(q) = &ins.source else {
                    return Err(SqlError::new("INSERT INTO needs a SELECT").or_at(pos));
                };
                queries.push((Some(target), q.clone(), st));
            }
            Statement::Query(q) => queries.push((None, q.clone(), st)),
            other => {
                let kind = other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(SqlError::new(format!(
                    "'{kind} ...' is not allowed in a pipeline: use CREATE TABLE ... WITH (connector = ...), CREATE VIEW, INSERT INTO and SELECT"
                ))
                .or_at(pos));
            }
        }
    }
    if queries.is_empty() {
        return Err(SqlError::new(
            "the script has no INSERT INTO or SELECT: nothing would run",
        ));
    }
    if let Some(t) = options
        .tables
        .keys()
        .find(|t| !sources.contains_key(*t) && !sinks.contains_key(*t))
    {
        return Err(SqlError::new(format!(
            "options were given for table '{t}', which the script does not declare"
        )));
    }
    Ok(Declared {
        sources,
        sinks,
        queries,
    })
}

/// Step 2: each query is planned by DataFusion, checked against the streaming rules, given
/// event time, optimised, and its physical plan cut at its windows ([`split_flow`]); queries
/// computing the same rows share one flow.
async fn plan_flows(
    ctx: &SessionContext,
    queries: Vec<Query<'_>>,
    sinks: &HashMap<String, TableDef>,
    registry: &ConnectorRegistry,
) -> Result<(Vec<FlowPlan>, String), SqlError> {
    let mut flows: Vec<FlowPlan> = Vec::new();
    let mut explain = String::new();
    for (target, query, st) in queries {
        let pos = Some(st.start());
        let sink_def = match &target {
            Some(t) => sinks[t].clone(),
            None => TableDef {
                name: "stdout".into(),
                connector: "stdout".into(),
                declared_schema: None,
                options: Options::new("stdout", BTreeMap::new()),
            },
        };
        let plan = ctx
            .state()
            .statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(query))))
            .await
            .map_err(|e| st.locate(SqlError::from(e)))?;
        let plan =
            crate::rewrite::lateral_unnest(plan).map_err(|e| SqlError::from(e).or_at(pos))?;
        tracing::debug!(
            "logical plan of '{}':\n{}",
            sink_def.name,
            plan.display_indent_schema()
        );
        validate::check(&plan, st)?;
        let plan = add_event_time(plan).map_err(|e| SqlError::from(e).or_at(pos))?;
        let plan = conform_to_sink(plan, &sink_def).map_err(|e| e.or_at(pos))?;
        let physical = ctx
            .state()
            .create_physical_plan(&plan)
            .await
            .map_err(|e| SqlError::from(e).or_at(pos))?;
        let output_schema = physical.schema();
        let split = split_flow(physical).map_err(|e| SqlError::from(e).or_at(pos))?;
        let conn = registry
            .get(&sink_def.connector)
            .map_err(|e| SqlError::from(e).or_at(pos))?;
        conn.validate_sink(&sink_def, &output_schema)
            .map_err(|e| SqlError::from(e).or_at(pos))?;
        let key = flow_key(&split);
        if let Some(f) = flows
            .iter_mut()
            .find(|f| f.key == key && f.output_schema == output_schema)
        {
            // The rows of an earlier INSERT: its flow writes this table too.
            explain.push_str(&format!(
                "INSERT INTO {}\n  the rows of INSERT INTO {}: one flow writes both\n",
                sink_def.name, f.targets[0].name
            ));
            f.targets.push(sink_def);
            continue;
        }
        explain.push_str(&describe_flow(&sink_def.name, &split));
        flows.push(FlowPlan {
            targets: vec![sink_def],
            split,
            output_schema,
            key,
        });
    }

    Ok((flows, explain))
}

/// Step 3: each source table read by a flow becomes one source, decoding the columns any flow
/// reads; returns the sources and each table's source index.
fn wire_sources(
    flows: &[FlowPlan],
    sources: &BTreeMap<String, SourceTable>,
    registry: &ConnectorRegistry,
) -> Result<(Vec<SourceSlot>, HashMap<String, usize>), SqlError> {
    let mut used: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for f in flows {
        for feed in f.split.feeds() {
            used.entry(feed.name.clone())
                .or_default()
                .extend(feed.columns.iter().copied());
        }
    }
    let mut source_slots = Vec::new();
    let mut source_index = HashMap::new();
    for (name, mut cols) in used {
        let Some(src) = sources.get(&name) else {
            return Err(SqlError::new(format!(
                "internal: feed of unknown table '{name}'"
            )));
        };
        let wm_col = src
            .watermark
            .as_ref()
            .map(|w| src.schema.index_of(&w.column))
            .transpose()
            .map_err(|e| SqlError::new(e.to_string()))?;
        cols.extend(wm_col);
        cols.sort_unstable();
        cols.dedup();
        let conn = registry.get(&src.def.connector)?;
        let source = conn.create_source(&src.def, &cols)?;
        let watermark = match (&src.watermark, wm_col) {
            (Some(w), Some(c)) => Some(WatermarkSpec {
                column: cols.iter().position(|x| *x == c).unwrap_or(0),
                delay_ns: w.delay_ns,
            }),
            _ => None,
        };
        for f in flows {
            for feed in f.split.feeds() {
                if feed.name == name {
                    feed.set_input_columns(&cols);
                }
            }
        }
        source_index.insert(name.clone(), source_slots.len());
        source_slots.push(SourceSlot {
            name,
            source,
            watermark,
        });
    }
    for name in sources.keys() {
        if !source_index.contains_key(name) {
            tracing::warn!(table = %name, "source table is never read");
        }
    }

    Ok((source_slots, source_index))
}

/// The sinks, the flows, and each flow's target table names.
type Wired = (Vec<SinkSlot>, Vec<Flow>, Vec<String>);

/// Step 4: one sink per target table, and the runnable flows: heads reading their sources,
/// window stages, the plan after the windows, the sinks.
fn wire_flows(
    flows: Vec<FlowPlan>,
    source_index: &HashMap<String, usize>,
    registry: &ConnectorRegistry,
) -> Result<Wired, SqlError> {
    let mut sink_slots: Vec<SinkSlot> = Vec::new();
    let mut sink_index: HashMap<String, usize> = HashMap::new();
    let mut pipeline_flows = Vec::new();
    let mut outputs = Vec::new();
    for f in flows {
        let mut sinks_of_flow = Vec::new();
        for def in &f.targets {
            let idx = match sink_index.get(&def.name) {
                Some(&i) => i,
                None => {
                    let conn = registry.get(&def.connector)?;
                    let sink = conn.create_sink(def, f.output_schema.clone())?;
                    sink_slots.push(SinkSlot {
                        name: def.name.clone(),
                        sink,
                    });
                    sink_index.insert(def.name.clone(), sink_slots.len() - 1);
                    sink_slots.len() - 1
                }
            };
            sinks_of_flow.push(idx);
            outputs.push(def.name.clone());
        }
        let Split {
            heads,
            windows,
            after,
        } = f.split;
        let heads = heads
            .into_iter()
            .map(|(plan, feeds)| Head {
                inputs: feeds
                    .into_iter()
                    .map(|feed| (source_index[&feed.name], feed))
                    .collect(),
                plan,
            })
            .collect();
        let windows = windows
            .into_iter()
            .map(|(head, op, outputs)| WindowStage {
                head,
                op: Box::new(op),
                outputs,
            })
            .collect();
        let name = f
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        pipeline_flows
            .push(Flow::new(name, heads, windows, after, sinks_of_flow).map_err(SqlError::from)?);
    }
    Ok((sink_slots, pipeline_flows, outputs))
}

/// Casts and renames the query's columns to the sink's declared columns, by position.
fn conform_to_sink(plan: LogicalPlan, sink: &TableDef) -> Result<LogicalPlan, SqlError> {
    // Hidden event time never reaches a sink.
    let visible: Vec<(Option<&TableReference>, &arrow::datatypes::FieldRef)> = plan
        .schema()
        .iter()
        .filter(|(_, f)| f.name() != crate::rewrite::EVENT_TIME_COLUMN)
        .collect();
    let exprs: Vec<Expr> = match &sink.declared_schema {
        None => visible
            .iter()
            .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
            .collect(),
        Some(decl) => {
            if decl.fields().len() != visible.len() {
                return Err(SqlError::new(format!(
                    "INSERT INTO '{}': the query gives {} column{} but the table has {} ({})",
                    sink.name,
                    visible.len(),
                    if visible.len() == 1 { "" } else { "s" },
                    decl.fields().len(),
                    decl.fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            visible
                .iter()
                .zip(decl.fields())
                .map(|((q, f), d)| {
                    let c = Expr::Column(Column::new(q.cloned(), f.name()));
                    let c = if f.data_type() == d.data_type() {
                        c
                    } else {
                        cast(c, d.data_type().clone())
                    };
                    c.alias(d.name())
                })
                .collect()
        }
    };
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(plan)).map_err(SqlError::from)?,
    ))
}

/// What a flow computes, as text: its plans (in full) and windows, and what its feeds read.
fn flow_key(split: &Split) -> String {
    let mut k = String::new();
    for (plan, feeds) in &split.heads {
        k.push_str(&displayable(plan.as_ref()).indent(true).to_string());
        for f in feeds {
            k.push_str(&format!("feed {} {:?}\n", f.name, f.columns));
        }
    }
    for (head, w, _) in &split.windows {
        k.push_str(&format!("window of {head}: {}\n", w.describe()));
        for o in 0..w.outputs() {
            k.push_str(&format!("{:?}\n", w.schema(o)));
        }
    }
    if let Some(p) = &split.after {
        k.push_str(&displayable(p.as_ref()).indent(true).to_string());
    }
    k
}

fn describe_flow(target: &str, split: &Split) -> String {
    let mut s = format!("INSERT INTO {target}\n");
    let plan_lines = |s: &mut String, plan: &Arc<dyn ExecutionPlan>| {
        for line in displayable(plan.as_ref()).indent(false).to_string().lines() {
            s.push_str(&format!("    {line}\n"));
        }
    };
    for (i, (plan, _)) in split.heads.iter().enumerate() {
        s.push_str(&format!("  {i}: DataFusion plan, run per source batch\n"));
        plan_lines(&mut s, plan);
    }
    let first_window = split.heads.len();
    for (j, (head, w, _)) in split.windows.iter().enumerate() {
        let kinds: Vec<String> = (0..w.outputs()).map(|o| w.kind(o).describe()).collect();
        let how = if w.one_window_per_batch() {
            format!("over slices of {}s", w.slide_ns() as f64 / 1e9)
        } else {
            "per key".to_string()
        };
        s.push_str(&format!(
            "  {}: window aggregate {} {how}, of the rows of {head}\n",
            first_window + j,
            kinds.join(" + "),
        ));
        for o in 0..w.outputs() {
            s.push_str(&format!(
                "    {}: {}\n",
                w.kind(o).describe(),
                w.describe_aggregates(o)
            ));
        }
    }
    if let Some(plan) = &split.after {
        let n: usize = split.windows.iter().map(|(_, w, _)| w.outputs()).sum();
        let what = if n == 1 {
            "per emitted window".to_string()
        } else {
            format!("per window end, over the {n} windows' rows")
        };
        s.push_str(&format!(
            "  {}: DataFusion plan, run {what}\n",
            first_window + split.windows.len()
        ));
        plan_lines(&mut s, plan);
    }
    s
}
