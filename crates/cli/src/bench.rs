//! `skystream bench`: posts/s through the engine for a few fixed queries (parse only,
//! keywords, a windowed count, top-20, the hashtag hop count of `scripts/bench-duckdb.sh`, and
//! the whole trend query), over synthetic posts held in memory or — with `--jsonl` — read
//! from a Jetstream JSONL file by the `replay` connector, as a deployment reads one.

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
    /// top-20), `hashtags` (hop(1 min, 5 min) count and count(DISTINCT did) per hashtag),
    /// `merged` (the same window with avg and stddev: two-stacks), `trends` (the full
    /// trend query of sql/trends.sql: four windows, joins, scoring),
    /// `keywords` (parse and tokenize only) or `parse` (decode only).
    #[arg(long, default_value = "top20")]
    query: String,
    /// Runs over the same input; the figures of each are printed, then the best and the median
    /// (this machine's timing noise is large: use 3 or more for a figure worth quoting).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Threads to compute on (decoding and the plans before the windows run on several
    /// batches at once; results are those of one thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Read the posts from this Jetstream JSONL file (the `replay` connector at full speed)
    /// instead of from memory; the file is written first when it does not exist. Peak RSS is
    /// then the whole process's.
    #[arg(long)]
    jsonl: Option<std::path::PathBuf>,
    /// Width of the `hashtags` and `merged` queries' hop window in minutes (it slides by 1
    /// minute): the cost of a slide should not grow with it (compare 5 and 1440).
    #[arg(long, default_value_t = 5)]
    width: u32,
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

/// The hop count `scripts/bench-duckdb.sh` runs in DuckDB too (`{width}` minutes wide).
const HASHTAGS_SQL: &str = "
CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT tag, count(*) AS n, count(DISTINCT did) AS authors,
       hop(INTERVAL '1' MINUTE, INTERVAL '{width}' MINUTE) AS win
FROM (SELECT did, unnest(hashtags) AS tag, event_time FROM posts)
GROUP BY tag, win;";

/// The same window over aggregates that cannot be subtracted (`avg`, `stddev`): their
/// windows come from two-stacks of slice states, whose cost per slide should not grow with
/// `{width}` either.
const MERGED_SQL: &str = "
CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
WITH (connector = 'bench_lines');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT tag, avg(character_length(text)) AS mean_len, stddev(character_length(text)) AS sd_len,
       hop(INTERVAL '1' MINUTE, INTERVAL '{width}' MINUTE) AS win
FROM (SELECT text, unnest(hashtags) AS tag, event_time FROM posts)
GROUP BY tag, win;";

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
    let hashtags = HASHTAGS_SQL.replace("{width}", &args.width.max(1).to_string());
    let merged = MERGED_SQL.replace("{width}", &args.width.max(1).to_string());
    let sql = match args.query.as_str() {
        "top20" => top20.as_str(),
        "parse" => PARSE_SQL,
        "keywords" => KEYWORDS_SQL,
        "count" => COUNT_SQL,
        "tumble" => TUMBLE_SQL,
        "hashtags" => hashtags.as_str(),
        "merged" => merged.as_str(),
        "trends" => {
            opts.tables = crate::shipped::in_memory(
                [("connector".to_string(), "bench_lines".to_string())].into(),
                &crate::shipped::TREND_SINKS,
            );
            trends.as_str()
        }
        other => bail!(
            "unknown --query '{other}' (top20, count, hashtags, merged, trends, tumble, keywords, parse)"
        ),
    };
    let generate = |sink: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<(u64, usize)> {
        eprintln!("generating {} synthetic posts...", args.posts);
        let mut g = Generator::new(GeneratorConfig {
            seed: args.seed,
            rate: args.rate,
            count: Some(args.posts),
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)?;
        let mut buf = Vec::new();
        let (mut n, mut bytes) = (0u64, 0usize);
        while g.next_event(&mut buf).is_some() {
            bytes += buf.len();
            n += 1;
            sink(&buf)?;
        }
        Ok((n, bytes))
    };
    let mut lines = Vec::new();
    let (n, bytes) = match &args.jsonl {
        None => generate(&mut |l| {
            lines.push(l.to_vec());
            Ok(())
        })?,
        Some(path) => {
            if !path.exists() {
                let tmp = path.with_extension("partial");
                let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                generate(&mut |l| {
                    use std::io::Write;
                    w.write_all(l)?;
                    w.write_all(b"\n")?;
                    Ok(())
                })?;
                std::io::Write::flush(&mut w)?;
                drop(w);
                std::fs::rename(&tmp, path)?;
            }
            // Records are counted by the run itself (the source's input records).
            (0, std::fs::metadata(path)?.len() as usize)
        }
    };
    if let Some(path) = &args.jsonl {
        // The posts come from the file, as `skystream run` reads one.
        let replay: std::collections::BTreeMap<String, String> = [
            ("connector".to_string(), "replay".to_string()),
            ("path".to_string(), path.display().to_string()),
            ("batch_size".to_string(), "8192".to_string()),
        ]
        .into();
        opts.tables.insert("posts".into(), replay);
    }
    let lines = Arc::new(lines);
    // Reset the peak-RSS counter so it measures the run (the input, if held, stays resident).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kb("VmRSS:").unwrap_or(0);

    let threads = crate::resolve_threads(args.threads);
    let rt = crate::runtime_with(threads)?;
    let mut rates = Vec::new();
    let mut times = Vec::new();
    for run in 1..=args.runs.max(1) {
        let mut reg = skystream_registry::registry();
        reg.register(Arc::new(BenchLines {
            lines: lines.clone(),
        }));
        let (s, elapsed, (batches, rows)) = rt.block_on(async {
            let planned = skystream_sql::plan_script_with(sql, &reg, &opts)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut pipeline = planned.pipeline;
            pipeline.config.threads = threads;
            let started = Instant::now();
            let s = pipeline.run().await?;
            Ok::<_, anyhow::Error>((s, started.elapsed(), memory_rows(&reg)))
        })?;
        let secs = elapsed.as_secs_f64();
        let n = if args.jsonl.is_some() {
            s.metrics.rows_in
        } else {
            n
        };
        let rate = n as f64 / secs;
        rates.push(rate);
        times.push(secs);
        if run == 1 {
            println!("benchmark: {}", args.query);
            println!("posts:              {n}");
            println!(
                "input JSON:         {:.1} MB ({:.0} bytes/post)",
                bytes as f64 / 1e6,
                bytes as f64 / n as f64
            );
            println!("windows emitted:    {}", s.metrics.windows_emitted);
            if s.metrics.windows_emitted > 0 {
                println!(
                    "per window end:     {:.1} µs (whole run / windows)",
                    secs * 1e6 / s.metrics.windows_emitted as f64
                );
            }
            println!("result rows:        {rows} in {batches} batches");
            if args.query == "hashtags" {
                println!("result checksum:    {}", hashtag_checksum(&reg));
            }
            println!("late rows:          {}", s.metrics.late_rows);
        }
        let on = if threads == 1 {
            "one thread".to_string()
        } else {
            format!("{threads} threads")
        };
        println!("run {run}: {secs:.3} s ({on}), {rate:.0} posts/s");
    }
    let peak = status_kb("VmHWM:").unwrap_or(0);
    rates.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    println!(
        "median time:        {:.3} s of {} run(s)",
        times[times.len() / 2],
        times.len()
    );
    println!(
        "throughput:         {:.0} posts/s (best of {}; median {:.0})",
        rates[rates.len() - 1],
        rates.len(),
        rates[rates.len() / 2]
    );
    if args.jsonl.is_some() {
        println!(
            "peak RSS:           {:.1} MB (whole process, input read from the file)",
            peak as f64 / 1024.0
        );
    } else {
        println!(
            "peak RSS:           {:.1} MB (input held in memory: {:.1} MB before the run)",
            peak as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
        println!(
            "peak RSS - input:   {:.1} MB",
            peak.saturating_sub(rss_before) as f64 / 1024.0
        );
    }
    Ok(())
}

/// Rows of the hashtag hop count and the sums of its two counts (compared with DuckDB's).
fn hashtag_checksum(reg: &ConnectorRegistry) -> String {
    use arrow::array::AsArray;
    let (mut rows, mut n, mut a) = (0usize, 0i64, 0i64);
    for b in reg
        .memory()
        .batches("out")
        .map(|(_, b)| b)
        .unwrap_or_default()
    {
        rows += b.num_rows();
        let col = |name: &str| {
            b.column_by_name(name)
                .map(|c| {
                    c.as_primitive::<arrow::datatypes::Int64Type>()
                        .values()
                        .iter()
                        .sum::<i64>()
                })
                .unwrap_or(0)
        };
        n += col("n");
        a += col("authors");
    }
    format!("windows x tags {rows}, sum(count) {n}, sum(distinct) {a}")
}

fn memory_rows(reg: &ConnectorRegistry) -> (usize, usize) {
    ["top", "out", crate::shipped::TREND_SINKS[0]]
        .iter()
        .filter_map(|t| reg.memory().batches(t))
        .map(|(_, b)| (b.len(), b.iter().map(|b| b.num_rows()).sum::<usize>()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
