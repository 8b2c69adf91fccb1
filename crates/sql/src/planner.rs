//! From a pipeline script to a runnable [`Pipeline`].
//!
//! 1. The script is split into statements ([`crate::script`]).
//! 2. `CREATE TABLE` resolves its connector; a table that is read becomes a [`StreamTable`] in
//!    a DataFusion session, a table that is inserted into becomes a sink.
//! 3. `CREATE VIEW` is planned by DataFusion (views are inlined where used).
//! 4. Each `INSERT INTO` (or bare `SELECT`, which prints to stdout) is planned by DataFusion
//!    into a logical plan, checked against the streaming rules ([`crate::validate`]), given
//!    event time ([`crate::rewrite`]), optimised and turned into a physical plan.
//! 5. The physical plan is cut at its windowed aggregate: the part below runs per source batch,
//!    the aggregate becomes a [`WindowAggregate`] over panes, the part above runs per emitted
//!    window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Column, TableReference};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, Projection, cast};
use datafusion::optimizer::Optimizer;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, ObjectName, SqlOption, Statement, TableObject, Value,
};
use skystream_engine::connector::{Connector, ConnectorRegistry, TableDef};
use skystream_engine::feed::{Feed, FeedExec};
use skystream_engine::options::Options;
use skystream_engine::pipeline::{Flow, Head, Pipeline, SinkSlot, SourceSlot, WindowStage};
use skystream_engine::watermark::WatermarkSpec;
use skystream_engine::window::{self, WindowAggregate};

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

/// A plan reading the sources, with its source feeds.
type HeadPlan = (Arc<dyn ExecutionPlan>, Vec<Arc<Feed>>);

/// A flow's physical plan cut at its windowed aggregates (see `skystream_engine::flow`).
struct Split {
    /// Plans reading the sources, with their source feeds.
    heads: Vec<HeadPlan>,
    /// Each window, the head it reads and the feed of `after` it fills.
    windows: Vec<(usize, WindowAggregate, Option<Arc<Feed>>)>,
    after: Option<Arc<dyn ExecutionPlan>>,
}

impl Split {
    fn feeds(&self) -> impl Iterator<Item = &Arc<Feed>> {
        self.heads.iter().flat_map(|(_, f)| f)
    }
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

    for st in &statements {
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

    // Plan each flow.
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

    // Sources: each used table once, decoding the columns any flow reads.
    let mut used: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for f in &flows {
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
        for f in &flows {
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

    // Sinks: one per target table.
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
            .map(|(head, op, output)| WindowStage {
                head,
                op: Box::new(op),
                output,
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
    let task_ctx = ctx.task_ctx();
    Ok(PlannedPipeline {
        pipeline: Pipeline::new(source_slots, pipeline_flows, sink_slots, task_ctx),
        explain,
        outputs,
    })
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

/// Cuts a physical plan at its windowed aggregates: the plans below them become heads (one
/// per distinct plan: windows over the same rows share it), the rest runs after the windows.
fn split_flow(plan: Arc<dyn ExecutionPlan>) -> skystream_engine::Result<Split> {
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
        let head = match head_keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                heads.push((below, feeds));
                head_keys.push(key);
                heads.len() - 1
            }
        };
        windows.push((head, w, feed));
    }
    // One window whose rows go to the sink as they are: nothing runs after it.
    let is_leaf = single
        && upper
            .downcast_ref::<FeedExec>()
            .is_some_and(|f| Arc::ptr_eq(f.feed(), &windows[0].2));
    if is_leaf {
        return Ok(Split {
            heads,
            windows: windows.into_iter().map(|(h, w, _)| (h, w, None)).collect(),
            after: None,
        });
    }
    let upper = if single {
        scope_topk_to_window(upper, &mut windows[0].1)?
    } else {
        upper
    };
    Ok(Split {
        heads,
        windows: windows
            .into_iter()
            .map(|(h, w, f)| (h, w, Some(f)))
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
    if let Some(agg) = plan.downcast_ref::<AggregateExec>()
        && window::is_windowed(agg)
    {
        let w = WindowAggregate::try_new(agg)?;
        let below = window::raw_input(agg).clone();
        let columns = (0..agg.schema().fields().len()).collect();
        let feed = Feed::new("window", agg.schema(), columns);
        return Ok((
            Arc::new(FeedExec::new(feed.clone())),
            vec![(w, below, feed)],
        ));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok((plan, Vec::new()));
    }
    let mut found = Vec::new();
    let mut new_children = Vec::new();
    for c in children {
        let (nc, f) = cut_windows(c)?;
        found.extend(f);
        new_children.push(nc);
    }
    if found.is_empty() {
        return Ok((plan, found));
    }
    #[allow(deprecated)]
    let plan = plan.with_new_children(new_children)?;
    Ok((plan, found))
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
    let window_column = window.window_column();
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
                window.limit_emission(fed, first.options, topk.fetch());
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
fn window_constant_columns(plan: &Arc<dyn ExecutionPlan>, window_column: usize) -> Vec<bool> {
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

fn collect_feeds(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<Feed>>) {
    if let Some(f) = plan.downcast_ref::<FeedExec>() {
        out.push(f.feed().clone());
    }
    for c in plan.children() {
        collect_feeds(c, out);
    }
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
        k.push_str(&format!(
            "window of {head}: {} {:?}\n",
            w.describe(),
            w.schema()
        ));
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
        let spec = w.spec();
        let kind = if spec.slide_ns == spec.width_ns {
            format!("tumble({}s)", spec.width_ns as f64 / 1e9)
        } else {
            format!(
                "hop(slide {}s, width {}s)",
                spec.slide_ns as f64 / 1e9,
                spec.width_ns as f64 / 1e9
            )
        };
        s.push_str(&format!(
            "  {}: window aggregate {kind} over panes, of the rows of {head}\n",
            first_window + j
        ));
    }
    if let Some(plan) = &split.after {
        let n = split.windows.len();
        let what = if n == 1 {
            "per emitted window".to_string()
        } else {
            format!("per window end, over the {n} windows' rows")
        };
        s.push_str(&format!(
            "  {}: DataFusion plan, run {what}\n",
            first_window + n
        ));
        plan_lines(&mut s, plan);
    }
    s
}
