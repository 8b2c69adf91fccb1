//! `connector = 'synthetic'`: a deterministic Jetstream-format firehose with planted bursts.
//!
//! ```sql
//! CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
//! WITH (connector = 'synthetic', rate = '40', speed = '60', duration = '2h',
//!       bursts = 'eclipse:20m:15m:8, 地震:50m:10m:6:ja', ground_truth = 'out/truth.json');
//! ```
//!
//! Options: `seed` (42), `rate` (posts per event-time second, 30), `speed` (`max`, `realtime`
//! or a factor; `max`), `start` (RFC 3339 or `now`; 2026-07-04T12:00:00Z), `duration` or
//! `count` (unbounded when neither), `bursts` (comma-separated
//! `keyword:start:duration:intensity[:lang]`), `ground_truth` (a path to write the planted
//! bursts to, as JSON), `authors` (20000), `out_of_order` (event times moved back by up to this,
//! e.g. `3s`), `other_events` (non-post events per post, 0), `batch_size` (4096),
//! `fast_forward` (a paced stream's first stretch of event time, e.g. `65m`, generated as fast
//! as it is read: a trend baseline filled at once, then real pacing).
//! Events are generated as Jetstream JSON and decoded like recorded ones.

pub mod generator;
pub mod rng;
pub mod vocab;

use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::format::RecordDecoder;
use skystream_engine::source::{Source, SourceContext, SourceEvent};
use skystream_engine::{Error, Result};
use skystream_jetstream::format::{jetstream_decoder, resolve_schema};
use skystream_replay::{Pacer, Speed, Yielder, push_record, send_paced};

pub use generator::{Burst, BurstTruth, Generator, GeneratorConfig};

/// The most distinct authors a synthetic stream may have (each is generated up front).
const MAX_AUTHORS: usize = 10_000_000;

/// The synthetic connector.
pub struct SyntheticConnector;

struct Config {
    gcfg: GeneratorConfig,
    speed: Speed,
    fast_forward: std::time::Duration,
    batch_size: usize,
    ground_truth: Option<String>,
}

fn config(table: &TableDef) -> Result<Config> {
    let mut o = table.options();
    let mut gcfg = GeneratorConfig::default();
    let bad = |m: String| {
        Error::plan(format!(
            "table '{}' (connector 'synthetic'): {m}",
            table.name
        ))
    };
    if let Some(s) = o.take_parsed::<u64>("seed")? {
        gcfg.seed = s;
    }
    if let Some(r) = o.take_parsed::<f64>("rate")? {
        if !(r > 0.0 && r.is_finite()) {
            return Err(bad(format!("rate must be positive, got {r}")));
        }
        gcfg.rate = r;
    }
    let speed = o
        .take("speed")
        .map(|s| Speed::parse(&s))
        .transpose()?
        .unwrap_or(Speed::Max);
    if let Some(start) = o.take("start") {
        gcfg.start_ns = if start.eq_ignore_ascii_case("now") {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        } else {
            skystream_engine::time::parse_rfc3339_ns(&start).ok_or_else(|| {
                bad(format!(
                    "start must be an RFC 3339 time or 'now', got '{start}'"
                ))
            })?
        };
    }
    gcfg.duration_ns = o.take_duration("duration")?.map(|d| d.as_nanos() as i64);
    gcfg.count = o.take_parsed::<u64>("count")?;
    if let Some(b) = o.take("bursts") {
        if b.split(',').count() > 100 {
            return Err(bad("at most 100 bursts".into()));
        }
        gcfg.bursts = b
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Burst::parse)
            .collect::<Result<_, _>>()
            .map_err(bad)?;
    }
    if let Some(a) = o.take_bounded::<usize>("authors", 1..=MAX_AUTHORS)? {
        gcfg.authors = a;
    }
    if let Some(d) = o.take_duration("out_of_order")? {
        if d > std::time::Duration::from_secs(86_400) {
            return Err(bad(format!(
                "out_of_order must be at most 1 day, got {d:?}"
            )));
        }
        gcfg.out_of_order_ns = d.as_nanos() as i64;
    }
    if let Some(x) = o.take_bounded::<f64>("other_events", 0.0..=100.0)? {
        gcfg.other_events = x;
    }
    let fast_forward = o.take_duration("fast_forward")?.unwrap_or_default();
    let batch_size = o.take_batch_size(4096)?;
    let ground_truth = o.take("ground_truth");
    o.finish()?;
    gcfg.check().map_err(bad)?;
    Ok(Config {
        gcfg,
        speed,
        fast_forward,
        batch_size,
        ground_truth,
    })
}

impl Connector for SyntheticConnector {
    fn name(&self) -> &str {
        "synthetic"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        table
            .options
            .get("ground_truth")
            .map(|p| Resource::LocalPath(p.to_string()))
            .into_iter()
            .collect()
    }

    fn description(&self) -> &str {
        "source: a deterministic Jetstream-format firehose (multi-language Zipf words, planted bursts)"
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source_schema(&self, table: &TableDef) -> Result<SchemaRef> {
        config(table)?;
        resolve_schema(&table.name, "jetstream", table.declared_schema.as_ref())
    }

    fn create_source(&self, table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
        let c = config(table)?;
        let decoder = jetstream_decoder(table, projection)?;
        let generator = Generator::new(c.gcfg).map_err(Error::plan)?;
        if let Some(path) = &c.ground_truth {
            write_ground_truth(path, &generator.ground_truth())
                .map_err(|e| Error::connector("synthetic", e))?;
        }
        Ok(Box::new(SyntheticSource {
            name: table.name.clone(),
            generator,
            decoder,
            pacer: Pacer::with_fast_forward(c.speed, c.fast_forward),
            batch_size: c.batch_size,
        }))
    }
}

/// Writes the planted bursts as pretty JSON.
pub fn write_ground_truth(path: &str, truth: &[BurstTruth]) -> std::io::Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        path,
        serde_json::to_vec_pretty(truth).map_err(std::io::Error::other)?,
    )
}

/// The running generator.
pub struct SyntheticSource {
    name: String,
    generator: Generator,
    decoder: Box<dyn RecordDecoder>,
    pacer: Pacer,
    batch_size: usize,
}

impl Source for SyntheticSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<()>> {
        async move {
            let mut line = Vec::with_capacity(2048);
            let mut n = 0u64;
            let mut logged = 0u32;
            // Paced output goes in small batches (a smooth stream); fast-forwarded, in full ones.
            let mut batch_size = self.batch_size;
            let mut batch_start: Option<i64> = None;
            // Resuming: the stream is deterministic, so the events already delivered are skipped.
            let skip = ctx
                .restore
                .as_ref()
                .and_then(|p| p.get("events"))
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let mut yielder = Yielder::default();
            loop {
                if yielder.tick(&ctx).await.is_err() {
                    return Ok(());
                }
                let next = self.generator.next_event(&mut line);
                if let Some(t) = next {
                    n += 1;
                    if n <= skip {
                        continue;
                    }
                    if batch_start.is_none() {
                        batch_start = Some(t * 1000);
                        batch_size = if self.pacer.paces(t * 1000) {
                            self.batch_size.min(64)
                        } else {
                            self.batch_size
                        };
                    }
                    push_record(
                        self.decoder.as_mut(),
                        &ctx,
                        &self.name,
                        n,
                        &line,
                        &mut logged,
                    );
                }
                let done = next.is_none();
                if (self.decoder.len() >= batch_size || (done && !self.decoder.is_empty()))
                    && let Some(batch) = self.decoder.flush()?
                {
                    yielder.sent();
                    let position = serde_json::json!({ "events": n });
                    if send_paced(&ctx, &mut self.pacer, batch, batch_start.take(), position)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                if done {
                    let _ = ctx.send(SourceEvent::End).await;
                    return Ok(());
                }
            }
        }
        .boxed()
    }
}
