//! `skystream bench-sinks`: rows/s into the Redis and lake sinks, and the cost of a checkpoint
//! holding many distinct keywords in window state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::checkpoint::{CheckpointConfig, CheckpointStore};
use skystream_engine::connector::{Connector, TableDef};
use skystream_engine::objstore::StoreLocation;
use skystream_engine::options::Options;
use skystream_engine::sink::SinkStart;
use skystream_engine::source::{Source, SourceContext, SourceEvent};

#[derive(clap::Args)]
pub struct BenchSinksArgs {
    /// Result rows written to each sink.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Distinct keywords held in window state for the checkpoint measurement.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Redis to write to (skipped when it does not answer).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Also write the lake and checkpoints to this S3 location (s3://bucket/prefix; endpoint
    /// and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
    #[arg(long)]
    s3: Option<String>,
}

/// Window result rows: (window_end, keyword, n, authors), `per_window` rows per window.
fn result_batches(rows: usize, per_window: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "window_end",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("keyword", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
        Field::new("authors", DataType::Int64, false),
    ]));
    let base = 1_783_166_400_000_000_000i64; // 2026-07-04T12:00:00Z
    let mut out = Vec::new();
    let mut done = 0;
    let mut w = 0i64;
    while done < rows {
        let k = per_window.min(rows - done);
        let end = base + (w + 1) * 60_000_000_000;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from_value(end, k)),
            Arc::new(StringArray::from_iter_values(
                (0..k).map(|i| format!("keyword{}", (i * 7919) % (per_window * 3))),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..k).map(|i| 1 + (i as i64 * 31) % 500),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..k).map(|i| 1 + (i as i64 * 17) % 200),
            )),
        ];
        out.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
        done += k;
        w += 1;
    }
    (schema, out)
}

async fn sink_rate(
    connector: &dyn Connector,
    name: &str,
    options: &[(&str, String)],
    schema: &SchemaRef,
    batches: &[RecordBatch],
    checkpoints: bool,
) -> Result<f64> {
    let table = TableDef {
        name: name.into(),
        connector: connector.name().into(),
        declared_schema: None,
        options: Options::new(
            name,
            options
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
    };
    let mut sink = connector.create_sink(&table, schema.clone())?;
    sink.start(SinkStart {
        pipeline: "bench".into(),
        checkpoints,
        restored: None,
    })
    .await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let started = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        sink.write(b.clone()).await?;
        // With checkpoints, a commit every 10 windows (as a 10 s interval would at speed).
        if checkpoints && i % 10 == 9 {
            sink.precommit(i as u64).await?;
            sink.commit(i as u64).await?;
        }
    }
    if checkpoints {
        sink.precommit(batches.len() as u64).await?;
        sink.commit(batches.len() as u64).await?;
    }
    sink.flush().await?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// A source of `keys` rows with distinct keywords inside one 10-minute span, which then
/// waits (so the pipeline holds them all in open windows).
struct KeysSource {
    keys: usize,
    projection: Vec<usize>,
}

struct KeysConnector {
    keys: usize,
}

fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("keyword", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
    ]))
}

impl Connector for KeysConnector {
    fn name(&self) -> &str {
        "bench_keys"
    }
    fn description(&self) -> &str {
        "source: distinct keywords (benchmark)"
    }
    fn is_source(&self) -> bool {
        true
    }
    fn source_schema(&self, _table: &TableDef) -> skystream_engine::Result<SchemaRef> {
        Ok(keys_schema())
    }
    fn create_source(
        &self,
        _table: &TableDef,
        projection: &[usize],
    ) -> skystream_engine::Result<Box<dyn Source>> {
        Ok(Box::new(KeysSource {
            keys: self.keys,
            projection: projection.to_vec(),
        }))
    }
}

impl Source for KeysSource {
    fn schema(&self) -> SchemaRef {
        Arc::new(
            keys_schema()
                .project(&self.projection)
                .expect("valid projection"),
        )
    }
    fn run(
        self: Box<Self>,
        ctx: SourceContext,
    ) -> BoxFuture<'static, skystream_engine::Result<()>> {
        async move {
            let base = 1_783_166_400_000_000_000i64;
            let span = 540_000_000_000i64; // 9 minutes
            let mut at = 0;
            while at < self.keys {
                let k = 8192.min(self.keys - at);
                let cols: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from_iter_values(
                        (at..at + k).map(|i| format!("kw{i:07}")),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (at..at + k).map(|i| format!("did:plc:{}", i % 5000)),
                    )),
                    Arc::new(TimestampNanosecondArray::from_iter_values(
                        (at..at + k).map(|i| base + span * i as i64 / self.keys as i64),
                    )),
                ];
                let batch = RecordBatch::try_new(keys_schema(), cols)?.project(&self.projection)?;
                at += k;
                let position = serde_json::json!({ "rows": at });
                if ctx
                    .send(SourceEvent::Batch {
                        batch,
                        split: 0,
                        position: Some(position),
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            // Keep the windows open: wait until the pipeline stops.
            while !ctx.is_stopped() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
        .boxed()
    }
}

const CHECKPOINT_SQL: &str = "
CREATE TABLE t (WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND)
WITH (connector = 'bench_keys');
CREATE TABLE out WITH (connector = 'memory');
INSERT INTO out SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors,
       hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
FROM t GROUP BY keyword, win;";

async fn checkpoint_cost(keys: usize, location: StoreLocation) -> Result<()> {
    let mut reg = skystream_registry::registry();
    reg.register(Arc::new(KeysConnector { keys }));
    let planned = skystream_sql::plan_script(CHECKPOINT_SQL, &reg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut p = planned.pipeline;
    p.config.name = "bench".into();
    p.config.idle_timeout = Duration::from_secs(3600);
    let mut c = CheckpointConfig::new(location.clone());
    c.interval = Duration::from_secs(3600);
    p.checkpoint = Some(c);
    let metrics = p.metrics();
    let stop = p.stop_handle();
    let run = tokio::spawn(p.run());
    while metrics.snapshot().rows_in < keys as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopping takes the final checkpoint with every key in state.
    stop.stop();
    let s = run.await??;
    let ck = s
        .metrics
        .last_checkpoint
        .context("no checkpoint was taken")?;
    println!(
        "checkpoint:         {keys} keys in window state: {:.1} MB in {:.0} ms ({})",
        ck.bytes as f64 / 1e6,
        ck.duration_us as f64 / 1000.0,
        location.url
    );
    let started = Instant::now();
    let restored = CheckpointStore::new(location)
        .latest()
        .await?
        .context("checkpoint not found")?;
    let rows: usize = restored.blobs.iter().map(|b| b.num_rows()).sum();
    println!(
        "checkpoint read:    {:.0} ms (read + decode + checksum; {rows} state rows)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

pub fn run(args: BenchSinksArgs) -> Result<()> {
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let reg = skystream_registry::registry();
        let (schema, batches) = result_batches(args.rows, 2000);
        println!("sink rows:          {} (windows of 2000 rows)", args.rows);
        let tmp =
            std::env::temp_dir().join(format!("skystream-bench-sinks-{}", std::process::id()));
        let lake = reg.get("lake")?;
        let local = tmp.join("lake").display().to_string();
        let r = sink_rate(
            lake.as_ref(),
            "counts",
            &[("path", local.clone())],
            &schema,
            &batches,
            false,
        )
        .await?;
        println!("lake (local dir):   {r:.0} rows/s");
        let r = sink_rate(
            lake.as_ref(),
            "counts",
            &[("path", format!("{local}-ck"))],
            &schema,
            &batches,
            true,
        )
        .await?;
        println!("lake (local, 2PC):  {r:.0} rows/s (staged, committed every 10 windows)");
        if let Some(s3) = &args.s3 {
            let r = sink_rate(
                lake.as_ref(),
                "counts",
                &[("path", format!("{s3}/bench-lake"))],
                &schema,
                &batches,
                true,
            )
            .await?;
            println!("lake (S3, 2PC):     {r:.0} rows/s ({s3})");
        }
        let redis = reg.get("redis")?;
        let prefix = format!("bench:{}", std::process::id());
        let ranking = [
            ("url", args.redis.clone()),
            ("layout", "ranking".to_string()),
            ("key", prefix.clone()),
            ("window", "window_end".to_string()),
            ("member", "keyword".to_string()),
            ("score", "n".to_string()),
            ("ttl", "5m".to_string()),
        ];
        match tokio::time::timeout(
            Duration::from_secs(120),
            sink_rate(
                redis.as_ref(),
                "ranking",
                &ranking,
                &schema,
                &batches,
                false,
            ),
        )
        .await
        {
            Ok(Ok(r)) => println!("redis ranking:      {r:.0} rows/s ({})", args.redis),
            Ok(Err(e)) => println!("redis ranking:      skipped ({e})"),
            Err(_) => println!(
                "redis ranking:      skipped (no answer from {})",
                args.redis
            ),
        }
        let hash = [
            ("url", args.redis.clone()),
            ("layout", "hash".to_string()),
            ("key", format!("{prefix}:h")),
            ("key_columns", "window_end,keyword".to_string()),
            ("ttl", "5m".to_string()),
        ];
        match tokio::time::timeout(
            Duration::from_secs(120),
            sink_rate(redis.as_ref(), "alerts", &hash, &schema, &batches, false),
        )
        .await
        {
            Ok(Ok(r)) => println!("redis hash:         {r:.0} rows/s"),
            Ok(Err(e)) => println!("redis hash:         skipped ({e})"),
            Err(_) => println!("redis hash:         skipped (no answer)"),
        }
        let ck = StoreLocation::open(&tmp.join("ck").display().to_string(), &Default::default())?;
        checkpoint_cost(args.keys, ck).await?;
        if let Some(s3) = &args.s3 {
            let ck = StoreLocation::open(&format!("{s3}/bench-ck"), &Default::default())?;
            checkpoint_cost(args.keys, ck).await?;
        }
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    })
}
