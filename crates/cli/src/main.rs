//! `skystream`: streaming SQL over the Bluesky firehose.

mod bench;
mod bench_kafka;
mod bench_sinks;
mod client;
mod demo;
mod eval;
mod jetstream_cmds;
mod serve;
mod shipped;

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use skystream_engine::metrics::PipelineMetrics;
use skystream_engine::time::format_ns;

#[derive(Parser)]
#[command(
    name = "skystream",
    version,
    about = "Streaming SQL over the Bluesky firehose"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline script (CREATE TABLE / CREATE VIEW / INSERT INTO statements).
    Run {
        /// The script: a file, or the name of a shipped one (demo, trends, top_counts,
        /// keyword_counts, hashtag_counts, post_volume).
        file: PathBuf,
        /// Fill a ${name} placeholder of the script: --set rate=100 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Print the plan of every flow before running.
        #[arg(long)]
        explain: bool,
        /// Seconds between progress lines on stderr (0: none).
        #[arg(long, default_value_t = 5.0)]
        progress: f64,
        /// Seconds without input after which a source stops holding windows back.
        #[arg(long, default_value_t = 5.0)]
        idle_timeout: f64,
        /// Memory the pipeline's operators and window state may hold, in MiB (0: unlimited).
        #[arg(long, default_value_t = 0)]
        memory_limit_mb: usize,
        /// How far ahead of the wall clock a live source's event time may be (Jetstream,
        /// Kafka); later events are skipped and counted. A duration (`10m`) or `off`.
        #[arg(long, default_value = "10m")]
        max_event_ahead: String,
        /// Set an option of a declared table: TABLE.KEY=VALUE (repeatable). Giving
        /// TABLE.connector replaces all the table's options, e.g. --with posts.connector=synthetic
        /// --with posts.speed=60.
        #[arg(long = "with", value_name = "TABLE.KEY=VALUE")]
        with: Vec<String>,
        /// Threads to compute on (0: every core). Decoding and the plans before the windows
        /// run on several batches at once; results are those of one thread.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[command(flatten)]
        checkpoint: CheckpointArgs,
    },
    /// Check a script and print its plan, without running it.
    Validate {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Trend detection (sql/trends.sql) on a synthetic firehose with planted bursts, as a live
    /// board; --counts for the naive most-frequent ranking. Needs no external service.
    Demo(demo::DemoArgs),
    /// List the connectors.
    Connectors,
    /// The HTTP API: submit, run and watch SQL pipelines (OpenAPI at /api/v1/openapi.json).
    Serve(serve::ServeArgs),
    /// Submit a pipeline script to a server (`skystream serve`) and start it.
    Submit(client::SubmitArgs),
    /// A server's pipelines: id, name, state, counters.
    Pipelines(client::ListArgs),
    /// Follow a pipeline's result rows as they are written (a table, or --json lines).
    Tail(client::TailArgs),
    /// Stop a pipeline on a server (it takes a last checkpoint).
    Stop(client::TargetArgs),
    /// Start a stopped, finished or failed pipeline again (from its last checkpoint).
    Start(client::TargetArgs),
    /// Stop and delete a pipeline, with its checkpoints.
    Delete(client::TargetArgs),
    /// Serve a JSONL file of Jetstream events as a local Jetstream v1 endpoint.
    JetstreamServe(jetstream_cmds::ServeArgs),
    /// Jetstream -> Kafka: every event to a topic, keyed by author, resumable by cursor.
    Ingest(jetstream_cmds::IngestArgs),
    /// Measure throughput: JSON parse -> keywords -> hop(1 min, 10 min) count -> top-20.
    Bench(bench::BenchArgs),
    /// Measure ingest (local Jetstream server -> Kafka, events/s) and Kafka -> SQL (posts/s)
    /// against a running broker.
    BenchKafka(bench_kafka::BenchKafkaArgs),
    /// Rows/s into the Redis and lake sinks; checkpoint size and duration with many keys.
    BenchSinks(bench_sinks::BenchSinksArgs),
    /// Quality of sql/trends.sql on synthetic streams with planted bursts (precision@10,
    /// recall, detection delay, false alarms per hour), beside a naive top-counts ranking.
    Eval(eval::EvalArgs),
}

/// Checkpoint settings of `skystream run`.
#[derive(clap::Args, Debug, Clone)]
struct CheckpointArgs {
    /// Checkpoint (exactly-once) into this location: a directory, file:///dir or
    /// s3://bucket/prefix (S3 settings from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). The
    /// pipeline resumes from the newest checkpoint found there under its name.
    #[arg(long, env = "SKYSTREAM_CHECKPOINT", value_name = "LOCATION")]
    checkpoint: Option<String>,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 10.0)]
    checkpoint_interval: f64,
    /// The pipeline's name (checkpoints and lake file names); default: the script's file name.
    #[arg(long)]
    name: Option<String>,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKYSTREAM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            file,
            sets,
            explain,
            progress,
            idle_timeout,
            memory_limit_mb,
            max_event_ahead,
            with,
            threads,
            checkpoint,
        } => {
            let sql = read_script(&file, &sets)?;
            let name = pipeline_name(checkpoint.name.clone(), &file);
            run_script(
                &sql,
                RunOptions {
                    explain,
                    progress,
                    idle_timeout,
                    memory_limit: (memory_limit_mb > 0).then_some(memory_limit_mb << 20),
                    max_event_ahead: parse_event_ahead(&max_event_ahead)?,
                    tables: parse_with(&with)?,
                    name,
                    checkpoint: checkpoint.checkpoint,
                    checkpoint_interval: checkpoint.checkpoint_interval,
                    threads,
                },
            )
        }
        Command::Validate { file, sets } => {
            let sql = read_script(&file, &sets)?;
            let rt = runtime()?;
            let reg = skystream_registry::registry();
            match rt.block_on(skystream_sql::plan_script(&sql, &reg)) {
                Ok(p) => {
                    println!("ok: {} flow(s)\n{}", p.outputs.len(), p.explain);
                    Ok(())
                }
                Err(e) => bail!("{}: {e}", file.display()),
            }
        }
        Command::Demo(args) => demo::run(args),
        Command::Connectors => {
            for c in skystream_registry::registry().connectors() {
                println!("{:<10} {}", c.name(), c.description());
            }
            Ok(())
        }
        Command::Serve(args) => serve::serve(args),
        Command::Submit(args) => client::submit(args),
        Command::Pipelines(args) => client::pipelines(args),
        Command::Tail(args) => client::tail(args),
        Command::Stop(args) => client::action(client::Action::Stop, args),
        Command::Start(args) => client::action(client::Action::Start, args),
        Command::Delete(args) => client::action(client::Action::Delete, args),
        Command::Bench(args) => bench::run(args),
        Command::BenchKafka(args) => bench_kafka::run(args),
        Command::BenchSinks(args) => bench_sinks::run(args),
        Command::Eval(args) => eval::run(args),
        Command::JetstreamServe(args) => jetstream_cmds::serve(args),
        Command::Ingest(args) => jetstream_cmds::ingest(args),
    }
}

/// Parses `--with TABLE.KEY=VALUE` flags into table options.
fn parse_with(with: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for w in with {
        let parsed = w
            .split_once('=')
            .and_then(|(k, v)| k.split_once('.').map(|(t, k)| (t, k, v)));
        let Some((table, key, value)) = parsed.filter(|(t, k, _)| !t.is_empty() && !k.is_empty())
        else {
            bail!("--with takes TABLE.KEY=VALUE, got '{w}'");
        };
        tables
            .entry(table.trim().to_lowercase())
            .or_default()
            .insert(key.trim().to_lowercase(), value.to_string());
    }
    Ok(tables)
}

/// The script at `file`; a name without a file (`trends`, `sql/trends.sql` from another
/// directory) is the shipped script of that name.
fn read_script(file: &std::path::Path, sets: &[String]) -> Result<String> {
    let text = script_text(file)?;
    let vars = skystream_sql::params::parse_sets(sets).map_err(anyhow::Error::msg)?;
    skystream_sql::params::substitute(&text, &vars).map_err(anyhow::Error::msg)
}

/// A pipeline's name: the one given, else the script's file name without its extension.
pub(crate) fn pipeline_name(given: Option<String>, file: &std::path::Path) -> String {
    given.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    })
}

/// Column `name` of `b` cast to `to` (the rows a shipped query writes, read back).
pub(crate) fn column_as(
    b: &arrow::array::RecordBatch,
    name: &str,
    to: &arrow::datatypes::DataType,
) -> Result<arrow::array::ArrayRef> {
    let c = b
        .column_by_name(name)
        .with_context(|| format!("the rows have no column '{name}'"))?;
    Ok(arrow::compute::cast(c, to)?)
}

/// The text of the script at `file`, or of the shipped script of that name.
pub(crate) fn script_text(file: &std::path::Path) -> Result<String> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) => match shipped::by_name(&file.to_string_lossy()) {
            Some(t) if e.kind() == std::io::ErrorKind::NotFound => Ok(t.to_string()),
            _ => Err(e).with_context(|| format!("cannot read {}", file.display())),
        },
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `--threads`: 0 is every core.
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// A runtime for a pipeline on `threads` threads: with more than one, sources decode on
/// runtime workers beside the pipeline's loop.
pub(crate) fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return runtime();
    }
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads - 1)
        .enable_all()
        .build()?)
}

/// `--max-event-ahead`: a duration, or `off`.
pub(crate) fn parse_event_ahead(v: &str) -> Result<Option<Duration>> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    skystream_engine::time::parse_duration(v)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--max-event-ahead: {e}"))
}

struct RunOptions {
    explain: bool,
    progress: f64,
    idle_timeout: f64,
    memory_limit: Option<usize>,
    max_event_ahead: Option<Duration>,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    name: String,
    checkpoint: Option<String>,
    checkpoint_interval: f64,
    threads: usize,
}

fn run_script(sql: &str, opts: RunOptions) -> Result<()> {
    let RunOptions {
        explain,
        progress,
        idle_timeout,
        memory_limit,
        max_event_ahead,
        tables,
        name,
        checkpoint,
        checkpoint_interval,
        threads,
    } = opts;
    let threads = resolve_threads(threads);
    if checkpoint_interval.is_nan() || checkpoint_interval <= 0.0 {
        bail!("--checkpoint-interval must be positive");
    }
    let rt = runtime_with(threads)?;
    rt.block_on(async move {
        let reg = skystream_registry::registry();
        let opts = skystream_sql::PlanOptions {
            memory_limit,
            tables,
            ..Default::default()
        };
        let planned = match skystream_sql::plan_script_with(sql, &reg, &opts).await {
            Ok(p) => p,
            Err(e) => bail!("{e}"),
        };
        if explain {
            eprintln!("{}", planned.explain);
        }
        let mut pipeline = planned.pipeline;
        pipeline.config.idle_timeout = Duration::from_secs_f64(idle_timeout.max(0.0));
        pipeline.config.max_event_ahead = max_event_ahead;
        pipeline.config.name = name.clone();
        pipeline.config.threads = threads;
        if let Some(loc) = &checkpoint {
            let root = format!("{}/{name}", loc.trim_end_matches('/'));
            let location = skystream_engine::objstore::StoreLocation::open(&root, &Default::default())?;
            let mut c = skystream_engine::checkpoint::CheckpointConfig::new(location);
            c.interval = Duration::from_secs_f64(checkpoint_interval);
            pipeline.checkpoint = Some(c);
        }
        let metrics = pipeline.metrics();
        let stop = pipeline.stop_handle();
        // Ctrl-C or SIGTERM (a service manager's stop): a graceful stop with a last checkpoint.
        tokio::spawn(async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut t) => {
                        t.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            eprintln!("stopping...");
            stop.stop();
        });
        let reporter = (progress > 0.0).then(|| tokio::spawn(report(metrics.clone(), Duration::from_secs_f64(progress))));
        let summary = pipeline.run().await;
        if let Some(r) = reporter {
            r.abort();
        }
        let summary = summary?;
        let m = &summary.metrics;
        let secs = summary.elapsed.as_secs_f64().max(1e-9);
        if let Some(c) = m.last_checkpoint {
            eprintln!(
                "checkpoint {} stored ({} bytes in {:.1} ms; {} checkpoints, {} failed{})",
                c.epoch,
                c.bytes,
                c.duration_us as f64 / 1000.0,
                m.checkpoints,
                m.checkpoint_failures,
                m.restored_epoch.map(|e| format!(", resumed from {e}")).unwrap_or_default()
            );
        }
        eprintln!(
            "{}: {} rows in ({:.0}/s), {} out, {} windows, {} late, {} malformed, {} filtered in {:.1}s",
            if summary.completed { "done" } else { "stopped" },
            m.rows_in,
            m.rows_in as f64 / secs,
            m.rows_out,
            m.windows_emitted,
            m.late_rows,
            m.malformed,
            m.filtered,
            secs
        );
        Ok(())
    })
}

async fn report(metrics: Arc<PipelineMetrics>, every: Duration) {
    let mut last = metrics.snapshot();
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let now = metrics.snapshot();
        let dt = at.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "[progress] {:.0} events/s | watermark {} | windows {} | late {}{} | malformed {} | panes {} ({:.1} MiB){}{}",
            (now.rows_in - last.rows_in) as f64 / dt,
            now.watermark.map(format_ns).unwrap_or_else(|| "-".into()),
            now.windows_emitted,
            now.late_rows,
            if now.ahead_rows > 0 {
                format!(" | ahead of the clock {}", now.ahead_rows)
            } else {
                String::new()
            },
            now.malformed,
            now.open_panes,
            now.state_bytes as f64 / (1 << 20) as f64,
            now.lag.map(|l| format!(" | lag {l}")).unwrap_or_default(),
            progress_extras(&now),
        );
        last = now;
        at = Instant::now();
    }
}

/// Checkpoint and sink-health parts of a progress line.
fn progress_extras(m: &skystream_engine::metrics::MetricsSnapshot) -> String {
    let mut s = String::new();
    if let Some(c) = m.last_checkpoint {
        s.push_str(&format!(" | checkpoint {}", c.epoch));
    }
    if m.checkpoint_failures > 0 {
        s.push_str(&format!(" ({} failed)", m.checkpoint_failures));
    }
    if !m.degraded_sinks.is_empty() {
        s.push_str(&format!(" | DEGRADED: {}", m.degraded_sinks.join(", ")));
    }
    s
}
