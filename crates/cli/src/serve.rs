//! `skystream serve`: the HTTP API, and the SQL endpoint (PostgreSQL wire protocol) over the
//! lake and the pipelines' live state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow::array::{
    ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use skystream_api::{ApiConfig, Manager, ManagerConfig, Sandbox, Server};
use skystream_engine::objstore::StoreLocation;
use skystream_pgsql::{LiveTable, SqlConfig, SqlServer};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SKYSTREAM_LISTEN")]
    listen: String,
    /// Pipeline definitions and checkpoints are kept here (pipelines resume after a restart).
    #[arg(long, default_value = "skystream-data", env = "SKYSTREAM_DATA_DIR")]
    data_dir: PathBuf,
    /// Bearer token every endpoint but /healthz and /readyz requires.
    #[arg(long, env = "SKYSTREAM_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// At most this many pipelines.
    #[arg(long, default_value_t = 32)]
    max_pipelines: usize,
    /// Memory each pipeline's operators may hold, in MiB (0: unlimited).
    #[arg(long, default_value_t = 1024)]
    memory_limit_mb: usize,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = 256)]
    body_limit_kb: usize,
    /// HTTP connections open at once (past it the oldest idle one is closed).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds an HTTP connection may stay idle (no request in progress).
    #[arg(long, default_value_t = 60.0)]
    http_idle_timeout: f64,
    /// How far ahead of the wall clock a live source's event time may be (Jetstream, Kafka);
    /// later events are skipped and counted. A duration (`10m`) or `off`.
    #[arg(long, default_value = "10m")]
    max_event_ahead: String,
    /// Seconds without input after which a source stops holding windows back.
    #[arg(long, default_value_t = 5.0)]
    idle_timeout: f64,
    /// A host submitted queries may reach besides loopback and *.bsky.network (repeatable;
    /// `*.example.com` matches subdomains, `*` any host).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Let submitted queries read and write files of this machine (replay, file, local lake)
    /// and set raw kafka.* properties. Only for a trusted, local server.
    #[arg(long)]
    unsandboxed: bool,
    /// Let submitted queries use the server's own credentials (the AWS_* environment for an
    /// S3 lake without s3_access_key_id).
    #[arg(long)]
    allow_server_credentials: bool,
    /// Read /api/v1/trends from Redis: the URL (the key prefix is --trends-key).
    #[arg(long, env = "SKYSTREAM_TRENDS_REDIS")]
    trends_redis: Option<String>,
    /// Key prefix of the `ranking` sink /api/v1/trends reads.
    #[arg(long, default_value = "trending")]
    trends_key: String,
    /// Address of the SQL endpoint (PostgreSQL wire protocol; `off` to disable).
    #[arg(long, default_value = "127.0.0.1:5433", env = "SKYSTREAM_SQL_LISTEN")]
    sql_listen: String,
    /// The lake the SQL endpoint serves as schema `lake` (`s3://bucket/prefix` with the usual
    /// AWS_* variables, or a directory): every dataset in it is a table.
    #[arg(long, env = "SKYSTREAM_SQL_LAKE")]
    sql_lake: Option<String>,
    /// The user name SQL clients log in with.
    #[arg(long, default_value = "skystream", env = "SKYSTREAM_SQL_USER")]
    sql_user: String,
    /// Their password (cleartext authentication). Without one, any client on the listen address
    /// is trusted, so it is required off loopback.
    #[arg(long, env = "SKYSTREAM_SQL_PASSWORD", hide_env_values = true)]
    sql_password: Option<String>,
    /// Longest a SQL statement may run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    sql_timeout: f64,
    /// Memory the SQL endpoint's queries may hold together, in MiB.
    #[arg(long, default_value_t = 512)]
    sql_memory_mb: usize,
    /// Seconds between re-listings of the lake (new datasets and files).
    #[arg(long, default_value_t = 10.0)]
    sql_refresh: f64,
    /// SQL connections open at once (past it the oldest idle one is closed).
    #[arg(long, default_value_t = 64)]
    sql_max_connections: usize,
    /// Seconds a SQL connection may stay idle (no statement in progress).
    #[arg(long, default_value_t = 600.0)]
    sql_idle_timeout: f64,
    /// The longest SQL query text, in KiB.
    #[arg(long, default_value_t = 1024)]
    sql_max_query_kb: usize,
    /// A pipeline to create at start unless one of that name exists (repeatable): NAME for a
    /// shipped script of sql/ (trends, keyword_counts, ...), or NAME=FILE.
    #[arg(long = "pipeline", value_name = "NAME[=FILE]")]
    pipelines: Vec<String>,
    /// A parameter of those pipelines' scripts (repeatable): --set kafka=kafka:9092.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
}

/// Creates the `--pipeline` pipelines that do not exist yet (a restarted server keeps, and
/// resumes, the ones it made before).
async fn create_pipelines(manager: &Arc<Manager>, specs: &[String], sets: &[String]) -> Result<()> {
    let params = skystream_sql::params::parse_sets(sets).map_err(anyhow::Error::msg)?;
    for spec in specs {
        let (name, file) = spec.split_once('=').unwrap_or((spec, spec));
        if manager.list().iter().any(|p| p.name == name) {
            continue;
        }
        let query = crate::script_text(std::path::Path::new(file))?;
        let p = manager
            .create(skystream_api::manager::NewPipeline {
                name: name.to_string(),
                query,
                params: Some(params.clone()),
                checkpoint_interval: None,
            })
            .await
            .map_err(|e| anyhow::anyhow!("--pipeline {spec}: {e}"))?;
        eprintln!(
            "pipeline '{name}' created ({}), writing {:?}",
            p.id, p.outputs
        );
    }
    Ok(())
}

fn seconds(flag: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        bail!("{flag} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// The SQL endpoint's address and settings, or `None` when it is off.
fn sql_config(args: &ServeArgs) -> Result<Option<(SocketAddr, SqlConfig)>> {
    if args.sql_listen == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = args
        .sql_listen
        .parse()
        .with_context(|| format!("--sql-listen '{}': not an address", args.sql_listen))?;
    let password = args.sql_password.clone().filter(|p| !p.is_empty());
    if password.is_none() && !addr.ip().is_loopback() {
        bail!(
            "--sql-listen {addr} is not a loopback address: set a password \
             (--sql-password or SKYSTREAM_SQL_PASSWORD)"
        );
    }
    if args.sql_memory_mb == 0 {
        bail!("--sql-memory-mb must be positive");
    }
    let lake = match &args.sql_lake {
        Some(url) => Some(
            StoreLocation::open(url, &BTreeMap::new())
                .map_err(|e| anyhow::anyhow!("--sql-lake: {e}"))?,
        ),
        None => None,
    };
    if args.sql_max_query_kb == 0 || args.sql_max_connections == 0 {
        bail!("--sql-max-query-kb and --sql-max-connections must be positive");
    }
    let query_timeout = seconds("--sql-timeout", args.sql_timeout)?;
    Ok(Some((
        addr,
        SqlConfig {
            lake,
            user: args.sql_user.clone(),
            password,
            query_timeout,
            memory_limit: args.sql_memory_mb << 20,
            refresh: seconds("--sql-refresh", args.sql_refresh)?,
            max_connections: args.sql_max_connections,
            // A statement in progress is never idle; the idle clock starts after it.
            idle_timeout: seconds("--sql-idle-timeout", args.sql_idle_timeout)?,
            max_query_bytes: args.sql_max_query_kb << 10,
            ..SqlConfig::default()
        },
    )))
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `live.pipelines`: every pipeline's state and counters now.
struct PipelinesTable {
    manager: Arc<Manager>,
    schema: SchemaRef,
}

impl PipelinesTable {
    fn new(manager: Arc<Manager>) -> Self {
        let u = |n: &str| Field::new(n, DataType::UInt64, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("outputs", DataType::Utf8, false),
            u("rows_in"),
            u("rows_out"),
            u("late_rows"),
            u("malformed"),
            u("checkpoints"),
            Field::new("lag", DataType::UInt64, true),
            Field::new("watermark", utc_ms(), true),
            Field::new("started", utc_ms(), true),
        ]));
        Self { manager, schema }
    }
}

impl LiveTable for PipelinesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn snapshot(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let p = self.manager.list();
        let text = |f: &dyn Fn(&skystream_api::manager::PipelineView) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(p.iter().map(f)))
        };
        let count = |f: &dyn Fn(&skystream_api::manager::MetricsView) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(
                p.iter().map(|v| f(&v.metrics)),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|v| v.id.clone()),
            text(&|v| v.name.clone()),
            text(&|v| {
                serde_json::to_value(v.state)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            Arc::new(StringArray::from_iter(p.iter().map(|v| v.error.clone()))),
            text(&|v| v.outputs.join(",")),
            count(&|m| m.rows_in),
            count(&|m| m.rows_out),
            count(&|m| m.late_rows),
            count(&|m| m.malformed),
            count(&|m| m.checkpoints),
            Arc::new(UInt64Array::from_iter(p.iter().map(|v| v.metrics.lag))),
            Arc::new(
                TimestampMillisecondArray::from_iter(p.iter().map(|v| v.metrics.watermark_ms))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMillisecondArray::from_iter(p.iter().map(|v| v.started_ms))
                    .with_timezone("UTC"),
            ),
        ];
        Ok(vec![RecordBatch::try_new(self.schema.clone(), columns)?])
    }
}

/// `live.trends`: the newest window of every trend-shaped result (a window end, a term and a
/// score), ranked — what `/api/v1/trends` answers without Redis.
struct TrendsTable {
    manager: Arc<Manager>,
    schema: SchemaRef,
}

impl TrendsTable {
    fn new(manager: Arc<Manager>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("pipeline_id", DataType::Utf8, false),
            Field::new("output", DataType::Utf8, false),
            Field::new("window_end", utc_ms(), false),
            Field::new("rank", DataType::Int32, false),
            Field::new("term", DataType::Utf8, false),
            Field::new("score", DataType::Float64, false),
        ]));
        Self { manager, schema }
    }
}

impl LiveTable for TrendsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn snapshot(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let (mut id, mut output, mut end, mut rank, mut term, mut score) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (pipeline, tap) in self.manager.taps() {
            let Some((window_end, window)) = tap.trends(None) else {
                continue;
            };
            for (i, (t, s)) in window.terms.into_iter().enumerate() {
                id.push(pipeline.clone());
                output.push(window.table.clone());
                end.push(window_end);
                rank.push(i as i32 + 1);
                term.push(t);
                score.push(s);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(id)),
            Arc::new(StringArray::from(output)),
            Arc::new(TimestampMillisecondArray::from(end).with_timezone("UTC")),
            Arc::new(Int32Array::from(rank)),
            Arc::new(StringArray::from(term)),
            Arc::new(Float64Array::from(score)),
        ];
        Ok(vec![RecordBatch::try_new(self.schema.clone(), columns)?])
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if !(args.idle_timeout.is_finite() && args.idle_timeout >= 0.0) {
        bail!("--idle-timeout must be a non-negative number of seconds");
    }
    let sql = sql_config(&args)?;
    let mut sandbox = if args.unsandboxed {
        Sandbox::open()
    } else {
        Sandbox::default()
    };
    sandbox.allowed_hosts.extend(args.allow_hosts);
    sandbox.allow_server_credentials |= args.allow_server_credentials;
    if args.max_connections == 0 {
        bail!("--max-connections must be positive");
    }
    let config = ApiConfig {
        manager: ManagerConfig {
            data_dir: args.data_dir,
            max_pipelines: args.max_pipelines,
            idle_timeout: Duration::from_secs_f64(args.idle_timeout),
            sandbox,
            memory_limit: (args.memory_limit_mb > 0).then_some(args.memory_limit_mb << 20),
            max_event_ahead: crate::parse_event_ahead(&args.max_event_ahead)?,
        },
        token: args.token.filter(|t| !t.is_empty()),
        body_limit: args.body_limit_kb << 10,
        trends_redis: args.trends_redis.map(|u| (u, args.trends_key)),
        max_connections: args.max_connections,
        idle_timeout: seconds("--http-idle-timeout", args.http_idle_timeout)?,
        ..ApiConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = Server::start(&args.listen, config, skystream_registry::registry()).await?;
        eprintln!(
            "skystream API on http://{} (OpenAPI: /api/v1/openapi.json)",
            server.addr
        );
        create_pipelines(&server.state.manager, &args.pipelines, &args.sets).await?;
        let sql = match sql {
            Some((addr, cfg)) => {
                let manager = server.state.manager.clone();
                let live: Vec<(String, Arc<dyn LiveTable>)> = vec![
                    (
                        "pipelines".into(),
                        Arc::new(PipelinesTable::new(manager.clone())),
                    ),
                    ("trends".into(), Arc::new(TrendsTable::new(manager))),
                ];
                let lake = cfg.lake.as_ref().map(|l| l.url.clone());
                let user = cfg.user.clone();
                let sql = SqlServer::start(addr, cfg, live)
                    .await
                    .with_context(|| format!("SQL endpoint on {addr}"))?;
                eprintln!(
                    "skystream SQL on postgresql://{user}@{}/skystream (schemas: lake{}, live)",
                    sql.addr,
                    lake.map(|l| format!(" = {l}")).unwrap_or_default()
                );
                Some(sql)
            }
            None => None,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: last checkpoints...");
        if let Some(sql) = sql {
            sql.stop().await;
        }
        server.stop().await?;
        Ok(())
    })
}
