//! The correctness oracle: a query runs as a stream (through skystream's planner and engine)
//! and, as a plain DataFusion batch query that computes the same windows another way, over the
//! same finite input; the two results must hold the same rows.

pub mod faults;
pub mod http;
pub mod pg;
pub mod serve;
pub mod services;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use skystream_engine::format::RecordDecoder;
use skystream_engine::metrics::MetricsSnapshot;
use skystream_jetstream::JetstreamDecoder;
use skystream_synthetic::{Burst, Generator, GeneratorConfig};

/// The `skystream` binary cargo built beside the running test (target/<profile>/skystream).
pub fn skystream_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("skystream");
    assert!(
        bin.exists(),
        "{} not built: build the workspace's binaries first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Options of a `synthetic` posts table replayed as fast as possible: `set` adds or replaces
/// options (`seed`, `rate`, `duration`, `start`, `bursts`, ...).
pub fn synthetic_posts(set: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let mut o: std::collections::BTreeMap<String, String> = [
        ("connector", "synthetic"),
        ("speed", "max"),
        ("start", "2026-07-04T12:00:00Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in set {
        o.insert(k.to_string(), v.to_string());
    }
    o
}

/// The repository's root (where `testdata/` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Writes `n` synthetic Jetstream events (posts and, with `other_events`, likes) to a file in
/// a fresh temporary directory and returns its path.
pub fn synthetic_file(name: &str, cfg: GeneratorConfig) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skystream-tests-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let mut g = Generator::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while g.next_event(&mut buf).is_some() {
        out.extend_from_slice(&buf);
        out.push(b'\n');
    }
    std::fs::write(&path, out).unwrap();
    path
}

/// A standard input: 40 minutes of posts at 2/s, with a planted burst, in time order.
pub fn standard_config() -> GeneratorConfig {
    GeneratorConfig {
        seed: 7,
        rate: 2.0,
        duration_ns: Some(40 * 60 * 1_000_000_000),
        bursts: vec![Burst::parse("eclipse:10m:10m:8").unwrap()],
        authors: 300,
        other_events: 0.3,
        tail_words: 300,
        ..Default::default()
    }
}

/// Posts of a Jetstream file as one batch of the post schema, with a `late` column computed
/// independently of the engine: a row is late when its event time is below the largest event
/// time seen before it (in file order) minus `delay_ns`.
pub fn load_posts(path: &Path, delay_ns: i64) -> RecordBatch {
    let text = std::fs::read(path).unwrap();
    let mut d = JetstreamDecoder::new(None);
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let _ = d.push(line);
    }
    let batch = d.flush().unwrap().unwrap();
    let ts = batch
        .column_by_name("event_time")
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
    let mut max = i64::MIN;
    let late: BooleanArray = ts
        .values()
        .iter()
        .map(|&t| {
            let l = max != i64::MIN && t < max.saturating_sub(delay_ns);
            max = max.max(t);
            Some(l)
        })
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("late", DataType::Boolean, false));
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols.push(Arc::new(late));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// Runs a pipeline script to its end; returns the rows of memory table `output` and the
/// pipeline's counters.
pub async fn run_stream(sql: &str, output: &str) -> (Vec<RecordBatch>, MetricsSnapshot) {
    run_stream_with(sql, output, 1).await
}

/// [`run_stream`] computing on `threads` threads.
pub async fn run_stream_with(
    sql: &str,
    output: &str,
    threads: usize,
) -> (Vec<RecordBatch>, MetricsSnapshot) {
    let reg = skystream_registry::registry();
    let planned = match skystream_sql::plan_script(sql, &reg).await {
        Ok(p) => p,
        Err(e) => panic!("planning failed: {e}\n{sql}"),
    };
    let mut pipeline = planned.pipeline;
    pipeline.config.threads = threads;
    // Small batches from the source, so that several wait at once for the threads.
    pipeline.config.channel_capacity = 64;
    let summary = pipeline
        .run()
        .await
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    assert!(summary.completed);
    let batches = reg
        .memory()
        .batches(output)
        .map(|(_, b)| b)
        .unwrap_or_default();
    (batches, summary.metrics)
}

/// Runs a batch query over `posts` (the table from [`load_posts`]) with skystream's functions.
pub async fn run_batch(posts: &RecordBatch, sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    for f in skystream_sql::udf::all() {
        ctx.register_udf(f);
    }
    let table = MemTable::try_new(posts.schema(), vec![vec![posts.clone()]]).unwrap();
    ctx.register_table("posts", Arc::new(table)).unwrap();
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("batch query failed: {e}\n{sql}"))
        .collect()
        .await
        .unwrap()
}

fn cell(a: &ArrayRef, i: usize) -> String {
    if a.is_null(i) {
        return "NULL".into();
    }
    match a.data_type() {
        DataType::Float64 => format!(
            "{:.9e}",
            a.as_primitive::<arrow::datatypes::Float64Type>().value(i)
        ),
        DataType::Float32 => format!(
            "{:.6e}",
            a.as_primitive::<arrow::datatypes::Float32Type>().value(i)
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => a
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .value(i)
            .to_string(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let c = arrow::compute::cast(a, &DataType::Int64).unwrap();
            c.as_primitive::<arrow::datatypes::Int64Type>()
                .value(i)
                .to_string()
        }
        _ => ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
            .unwrap()
            .value(i)
            .to_string(),
    }
}

/// Rows as sorted strings: column order kept, row order ignored, numbers normalised.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let b = concat_batches(&first.schema(), batches).unwrap();
    let mut out: Vec<String> = (0..b.num_rows())
        .map(|i| {
            b.columns()
                .iter()
                .map(|c| cell(c, i))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    out.sort();
    out
}

/// Asserts the streaming and batch results hold the same rows, and that there are some.
pub fn assert_same(stream: &[RecordBatch], batch: &[RecordBatch]) {
    let (s, b) = (rows(stream), rows(batch));
    assert!(
        !b.is_empty(),
        "the batch query returned no rows: the case tests nothing"
    );
    if s != b {
        let only_s: Vec<_> = s.iter().filter(|r| !b.contains(r)).take(10).collect();
        let only_b: Vec<_> = b.iter().filter(|r| !s.contains(r)).take(10).collect();
        panic!(
            "stream ({} rows) and batch ({} rows) differ\nonly in stream: {only_s:#?}\nonly in batch: {only_b:#?}",
            s.len(),
            b.len()
        );
    }
}

/// The URL of a local lake directory for [`read_lake`].
pub fn lake_url(dir: &Path) -> String {
    format!("{}/", dir.display())
}

/// Every committed row of a lake table (all `.parquet` files under `url`, read with
/// DataFusion's ListingTable), as [`rows`]. `store` serves an `s3://` URL.
pub async fn read_lake(
    url: &str,
    store: Option<Arc<dyn object_store::ObjectStore>>,
) -> Vec<String> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let ctx = SessionContext::new();
    let table_url = ListingTableUrl::parse(url).unwrap();
    if let Some(store) = store {
        ctx.register_object_store(table_url.object_store().as_ref(), store);
    }
    let opts =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let schema = opts.infer_schema(&ctx.state(), &table_url).await.unwrap();
    let cfg = ListingTableConfig::new(table_url)
        .with_listing_options(opts)
        .with_schema(schema);
    ctx.register_table("lake", Arc::new(ListingTable::try_new(cfg).unwrap()))
        .unwrap();
    let b = ctx
        .sql("SELECT * FROM lake")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    rows(&b)
}

/// Asserts two row lists (from [`rows`]) are equal; on a difference prints the counts and a
/// few rows found on only one side instead of both lists.
pub fn assert_rows_eq(got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let mut only_got = Vec::new();
    let mut only_want = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                only_got.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                only_want.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                only_got.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                only_want.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    panic!(
        "rows differ: {} got, {} wanted; {} only in got, e.g. {:#?}; {} only in wanted, e.g. {:#?}",
        got.len(),
        want.len(),
        only_got.len(),
        &only_got[..only_got.len().min(8)],
        only_want.len(),
        &only_want[..only_want.len().min(8)]
    );
}

/// `counts`: per-keyword post and distinct-author counts over hop(1 min, 5 min) windows of
/// table `posts`, with the window's end as `window_end` (shared by the checkpoint and crash
/// tests).
pub const KEYWORD_COUNTS_VIEW: &str = "CREATE VIEW counts AS
SELECT win['end'] AS window_end, keyword, n, authors FROM (
  SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors,
         hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
  FROM (SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts)
  GROUP BY keyword, win);";
