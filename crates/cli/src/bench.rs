//! `skystream bench`: posts/s through JSON parse -> keywords -> hop(1 min, 10 min) count per
//! keyword -> top-20 per window, over synthetic posts held in memory, on one thread.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use arrow::datatypes::SchemaRef;
use skystream_engine::connector::{Connector, ConnectorRegistry, TableDef};
use skystream_engine::source::Source;
use skystream_jetstream::format::{decoder_for, resolve_schema};
use skystream_replay::LinesSource;
use skystream_synthetic::{Generator, GeneratorConfig};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Number of synthetic posts.
    #[arg(long, default_value_t = 1_000_000)]
    posts: u64,
    /// Posts per second of event time (sets how many windows the posts span).
    #[arg(long, default_value_t = 35.0)]
    rate: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Which pipeline: `top20` (the windowed keyword count and top-20), `count` (without the
    /// top-20), `trends` (the full trend query of sql/trends.sql: four windows, joins, scoring),
    /// `keywords` (parse and tokenize only) or `parse` (decode only).
    #[arg(long, default_value = "top20")]
    query: String,
    /// Runs over the same input; the figures of each are printed, then the best and the median
    /// (this machine's timing noise is large: use 3 or more for a figure worth quoting).
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// The benchmarked statement: keywords -> hop(1 min, 10 min) count -> top-20 per window,
/// from table `posts` into table `top` (also used by `bench-kafka`).
pub(crate) const TOP20_INSERT: &str = "
INSERT INTO top
SELECT win, keyword, n, rn FROM (
  SELECT win, keyword, n, ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC) AS rn
  FROM (
    SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
    FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
    GROUP BY keyword, win))
WHERE rn <= 20;";

const TOP20_TABLES: &str = "
CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH (connector = 'bench_lines');
CREATE TABLE top WITH (connector = 'memory');";

const KEYWORDS_SQL: &str = "
CREATE TABLE posts WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT keyword FROM (SELECT unnest(keywords(text)) AS keyword FROM posts) WHERE keyword = 'nobody';";

const COUNT_SQL: &str = "
CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
GROUP BY keyword, win;";

const TUMBLE_SQL: &str = "
CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
GROUP BY keyword, win;";

const PARSE_SQL: &str = "
CREATE TABLE posts WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT did FROM posts WHERE did = 'nobody';";

/// Lines held in memory, served through the replay machinery.
struct BenchLines {
    lines: Arc<Vec<Vec<u8>>>,
}

impl Connector for BenchLines {
    fn name(&self) -> &str {
        "bench_lines"
    }
    fn description(&self) -> &str {
        "source: pre-generated Jetstream lines in memory (benchmark)"
    }

    fn is_source(&self) -> bool {
        true
    }
    fn source_schema(&self, table: &TableDef) -> skystream_engine::Result<SchemaRef> {
        resolve_schema(&table.name, "jetstream", table.declared_schema.as_ref())
    }
    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
    ) -> skystream_engine::Result<Box<dyn Source>> {
        let schema = self.source_schema(table)?;
        let decoder = decoder_for("jetstream", &schema, projection)?;
        Ok(Box::new(LinesSource::in_memory(
            &table.name,
            self.lines.clone(),
            decoder,
            8192,
        )))
    }
}

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let top20 = format!("{TOP20_TABLES}{TOP20_INSERT}");
    let trends = skystream_sql::params::substitute(crate::shipped::TRENDS, &Default::default())
        .map_err(anyhow::Error::msg)?;
    let mut opts = skystream_sql::PlanOptions::default();
    let sql = match args.query.as_str() {
        "top20" => top20.as_str(),
        "parse" => PARSE_SQL,
        "keywords" => KEYWORDS_SQL,
        "count" => COUNT_SQL,
        "tumble" => TUMBLE_SQL,
        "trends" => {
            opts.tables = crate::shipped::in_memory(
                [("connector".to_string(), "bench_lines".to_string())].into(),
                &crate::shipped::TREND_SINKS,
            );
            trends.as_str()
        }
        other => bail!("unknown --query '{other}' (top20, count, trends, tumble, keywords, parse)"),
    };
    eprintln!("generating {} synthetic posts...", args.posts);
    let mut g = Generator::new(GeneratorConfig {
        seed: args.seed,
        rate: args.rate,
        count: Some(args.posts),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let mut lines = Vec::with_capacity(args.posts as usize);
    let mut buf = Vec::new();
    let mut bytes = 0usize;
    while g.next_event(&mut buf).is_some() {
        bytes += buf.len();
        lines.push(buf.clone());
    }
    let n = lines.len() as u64;
    let lines = Arc::new(lines);
    // Reset the peak-RSS counter so it measures the run (the input stays resident).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kb("VmRSS:").unwrap_or(0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rates = Vec::new();
    for run in 1..=args.runs.max(1) {
        let mut reg = skystream_registry::registry();
        reg.register(Arc::new(BenchLines {
            lines: lines.clone(),
        }));
        let (s, elapsed, (batches, rows)) = rt.block_on(async {
            let planned = skystream_sql::plan_script_with(sql, &reg, &opts)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let started = Instant::now();
            let s = planned.pipeline.run().await?;
            Ok::<_, anyhow::Error>((s, started.elapsed(), memory_rows(&reg)))
        })?;
        let secs = elapsed.as_secs_f64();
        let rate = n as f64 / secs;
        rates.push(rate);
        if run == 1 {
            println!("benchmark: {}", args.query);
            println!("posts:              {n}");
            println!(
                "input JSON:         {:.1} MB ({:.0} bytes/post)",
                bytes as f64 / 1e6,
                bytes as f64 / n as f64
            );
            println!("windows emitted:    {}", s.metrics.windows_emitted);
            println!("result rows:        {rows} in {batches} batches");
            println!("late rows:          {}", s.metrics.late_rows);
        }
        println!("run {run}: {secs:.3} s (one thread), {rate:.0} posts/s");
    }
    let peak = status_kb("VmHWM:").unwrap_or(0);
    rates.sort_by(f64::total_cmp);
    println!(
        "throughput:         {:.0} posts/s (best of {}; median {:.0})",
        rates[rates.len() - 1],
        rates.len(),
        rates[rates.len() / 2]
    );
    println!(
        "peak RSS:           {:.1} MB (input held in memory: {:.1} MB before the run)",
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "peak RSS - input:   {:.1} MB",
        peak.saturating_sub(rss_before) as f64 / 1024.0
    );
    Ok(())
}

fn memory_rows(reg: &ConnectorRegistry) -> (usize, usize) {
    ["top", "out", crate::shipped::TREND_SINKS[0]]
        .iter()
        .filter_map(|t| reg.memory().batches(t))
        .map(|(_, b)| (b.len(), b.iter().map(|b| b.num_rows()).sum::<usize>()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
