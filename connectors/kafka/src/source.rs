//! The `kafka` source: messages of one topic decoded into Arrow batches.
//!
//! ```sql
//! CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
//! WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'bluesky.posts',
//!       format = 'jetstream', start = 'earliest');
//! ```
//!
//! Options: `bootstrap_servers`, `topic` (required); `format` (`jetstream` | `json`, default
//! `json`: one JSON object per message, decoded by arrow-json into the declared columns);
//! `start` (`earliest` | `latest`, default `earliest`); `partitions` (comma-separated; default:
//! every partition of the topic); `group_id` (offsets read are committed to this group, for
//! tools that watch lag; the source assigns partitions itself, so there is no group join or
//! rebalance); `bounded = 'latest'` (a finite run over what the topic holds: each partition
//! ends when the consumer has read it to the end its fetches report, and the stream ends when
//! all have); `batch_size` (4096); `linger` (longest wait before a partial batch
//! goes out, 100ms); any `kafka.<librdkafka option>`.
//!
//! Every partition is a split with its own watermark; the stream's watermark is the lowest
//! of them, and a partition idle for the pipeline's idle timeout stops holding it back. The
//! position is the next offset of every partition, and a restored position resumes there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use skystream_engine::connector::TableDef;
use skystream_engine::format::{RecordDecoder, push_record};
use skystream_engine::source::{Source, SourceContext, SourceEvent};
use skystream_engine::{Error, Result};
use skystream_jetstream::format::{FORMATS, decoder_for, resolve_schema};

use crate::{client_config, kafka_err};

#[derive(Clone)]
pub(crate) struct SourceConfig {
    kafka: rdkafka::ClientConfig,
    topic: String,
    format: String,
    start: Offset,
    partitions: Option<Vec<i32>>,
    group_id: Option<String>,
    bounded: bool,
    batch_size: usize,
    linger: Duration,
}

pub(crate) fn source_config(table: &TableDef) -> Result<SourceConfig> {
    let mut o = table.options();
    let mut kafka = client_config(&mut o)?;
    let topic = o.take_required("topic")?;
    let format = o
        .take_choice("format", FORMATS)?
        .unwrap_or_else(|| "json".into());
    let start = match o.take_choice("start", &["earliest", "latest"])?.as_deref() {
        Some("latest") => Offset::End,
        _ => Offset::Beginning,
    };
    let partitions = match o.take("partitions") {
        Some(p) => Some(
            p.split(',')
                .map(|x| {
                    x.trim().parse::<i32>().map_err(|_| {
                        Error::plan(format!("table '{}': bad partition '{x}'", table.name))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let group_id = o.take("group_id");
    let bounded = matches!(
        o.take_choice("bounded", &["latest", "none"])?.as_deref(),
        Some("latest")
    );
    let batch_size = o.take_batch_size(4096)?;
    let linger = o
        .take_duration("linger")?
        .unwrap_or(Duration::from_millis(100));
    o.finish()?;
    // The source assigns partitions and tracks offsets itself; a group only receives commits.
    kafka
        .set("group.id", group_id.as_deref().unwrap_or("skystream"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "enable.partition.eof",
            if bounded { "true" } else { "false" },
        )
        .set("socket.timeout.ms", "10000");
    Ok(SourceConfig {
        kafka,
        topic,
        format,
        start,
        partitions,
        group_id,
        bounded,
        batch_size,
        linger,
    })
}

/// Creates the source of a `kafka` table.
pub(crate) fn create_source(table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
    let c = source_config(table)?;
    let schema = resolve_schema(&table.name, &c.format, table.declared_schema.as_ref())?;
    let decoder = decoder_for(&c.format, &schema, projection)?;
    Ok(Box::new(KafkaSource {
        name: table.name.clone(),
        config: c,
        decoder,
        projection: projection.to_vec(),
        table_schema: schema,
    }))
}

/// The schema of a `kafka` source table.
pub(crate) fn source_schema(table: &TableDef) -> Result<SchemaRef> {
    let c = source_config(table)?;
    resolve_schema(&table.name, &c.format, table.declared_schema.as_ref())
}

struct KafkaSource {
    name: String,
    config: SourceConfig,
    decoder: Box<dyn RecordDecoder>,
    projection: Vec<usize>,
    table_schema: SchemaRef,
}

/// One assigned partition: its own decoder (a batch holds rows of one partition) and offsets.
struct Part {
    decoder: Box<dyn RecordDecoder>,
    /// Offset after the last message decoded into `decoder`.
    buffered_to: i64,
    /// Read to its end (bounded runs).
    done: bool,
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn event_time_is_wall_clock(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<()>> {
        async move {
            let name = self.name.clone();
            let c = self.config.clone();
            let consumer: Arc<Consumer_> = Arc::new(
                c.kafka
                    .create_with_context(QuietEof)
                    .map_err(|e| kafka_err(&name, e))?,
            );
            // Partitions and end offsets are metadata calls: blocking, off the engine's thread.
            let partitions = {
                let (consumer, topic, wanted) =
                    (consumer.clone(), c.topic.clone(), c.partitions.clone());
                tokio::task::spawn_blocking(move || discover(&consumer, &topic, wanted))
                    .await
                    .map_err(|e| kafka_err(&name, e))?
                    .map_err(|e| kafka_err(&name, e))?
            };
            let restored: BTreeMap<i32, i64> = match &ctx.restore {
                Some(p) => serde_json::from_value(p.get("offsets").cloned().unwrap_or_default())
                    .map_err(|e| {
                        Error::connector(&name, format!("bad restored position: {e}"))
                    })?,
                None => BTreeMap::new(),
            };
            let mut tpl = TopicPartitionList::new();
            let mut parts: BTreeMap<i32, Part> = BTreeMap::new();
            let mut sent: BTreeMap<i32, i64> = BTreeMap::new();
            for &p in &partitions {
                let offset = match restored.get(&p) {
                    Some(&o) => {
                        sent.insert(p, o);
                        Offset::Offset(o)
                    }
                    None => c.start,
                };
                tpl.add_partition_offset(&c.topic, p, offset)
                    .map_err(|e| kafka_err(&name, e))?;
                let decoder = decoder_for(&c.format, &self.table_schema, &self.projection)?;
                let start_at = restored.get(&p).copied().unwrap_or(0);
                parts.insert(
                    p,
                    Part {
                        decoder,
                        buffered_to: start_at,
                        // Bounded from `latest` with nothing restored: nothing to read.
                        done: c.bounded && c.start == Offset::End && !restored.contains_key(&p),
                    },
                );
            }
            consumer.assign(&tpl).map_err(|e| kafka_err(&name, e))?;
            let ids: Vec<u32> = partitions.iter().map(|&p| p as u32).collect();
            if ctx.send(SourceEvent::Splits(ids)).await.is_err() {
                return Ok(());
            }
            tracing::info!(source = %name, topic = %c.topic, ?partitions, bounded = c.bounded, "reading Kafka");
            let lag_task = tokio::spawn(track_lag(
                consumer.clone(),
                c.topic.clone(),
                partitions.clone(),
                ctx.counters.clone(),
            ));
            let result = read_loop(&name, &c, &consumer, &mut parts, &mut sent, &ctx).await;
            lag_task.abort();
            result
        }
        .boxed()
    }
}

type Consumer_ = StreamConsumer<QuietEof>;

/// Client context that logs librdkafka's errors through `tracing`, except the end-of-partition
/// events bounded runs ask for.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// The partitions to read.
fn discover(
    consumer: &Consumer_,
    topic: &str,
    wanted: Option<Vec<i32>>,
) -> std::result::Result<Vec<i32>, String> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("cannot read metadata of topic '{topic}': {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic '{topic}' does not exist"))?;
    if let Some(e) = t.error() {
        return Err(format!("topic '{topic}': {e:?}"));
    }
    let all: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if all.is_empty() {
        return Err(format!("topic '{topic}' has no partitions"));
    }
    match wanted {
        Some(w) => match w.iter().find(|p| !all.contains(p)) {
            Some(bad) => Err(format!("topic '{topic}' has no partition {bad}")),
            None => Ok(w),
        },
        None => Ok(all),
    }
}

async fn read_loop(
    name: &str,
    c: &SourceConfig,
    consumer: &Consumer_,
    parts: &mut BTreeMap<i32, Part>,
    sent: &mut BTreeMap<i32, i64>,
    ctx: &SourceContext,
) -> Result<()> {
    let mut logged = 0u32;
    let mut record_no = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if c.bounded && parts.values().all(|p| p.done) {
            for p in parts.keys().copied().collect::<Vec<_>>() {
                if flush_part(name, c, consumer, p, parts, sent, ctx)
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            let _ = ctx.send(SourceEvent::End).await;
            return Ok(());
        }
        let recv = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, consumer.recv()).await.ok(),
                None => Some(consumer.recv().await),
            }
        };
        let ready: Option<i32> = match recv.await {
            None => None,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(part) = parts.get_mut(&p) {
                    part.done = true;
                }
                Some(p)
            }
            Some(Err(e)) => {
                // Broker errors are transient for librdkafka (it reconnects on its own).
                tracing::warn!(source = %name, "kafka: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(part) = parts.get_mut(&p) else {
                    continue;
                };
                if part.done {
                    continue;
                }
                record_no += 1;
                match m.payload() {
                    Some(bytes) => push_record(
                        part.decoder.as_mut(),
                        ctx,
                        name,
                        record_no,
                        bytes,
                        &mut logged,
                    ),
                    None => {
                        ctx.counters.add_records(1);
                        ctx.counters.add_malformed(1);
                    }
                }
                part.buffered_to = m.offset() + 1;
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + c.linger);
                }
                (part.decoder.len() >= c.batch_size).then_some(p)
            }
        };
        let to_flush: Vec<i32> = match ready {
            Some(p) => vec![p],
            None => {
                // Linger expired: every partition's partial batch goes out.
                deadline = None;
                parts.keys().copied().collect()
            }
        };
        for p in to_flush {
            if flush_part(name, c, consumer, p, parts, sent, ctx)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

/// Sends partition `p`'s buffered rows with the position after them.
async fn flush_part(
    name: &str,
    c: &SourceConfig,
    consumer: &Consumer_,
    p: i32,
    parts: &mut BTreeMap<i32, Part>,
    sent: &mut BTreeMap<i32, i64>,
    ctx: &SourceContext,
) -> std::result::Result<(), ()> {
    let Some(part) = parts.get_mut(&p) else {
        return Ok(());
    };
    if sent.get(&p) == Some(&part.buffered_to) || part.buffered_to == 0 {
        return Ok(());
    }
    let batch = match part.decoder.flush() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(source = %name, "cannot build a batch: {e}");
            return Err(());
        }
    };
    sent.insert(p, part.buffered_to);
    let position = serde_json::json!({ "offsets": &*sent });
    if let Some(batch) = batch {
        ctx.send(SourceEvent::Batch {
            batch,
            split: p as u32,
            position: Some(position),
        })
        .await
        .map_err(|_| ())?;
    }
    if c.group_id.is_some() {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&c.topic, p, Offset::Offset(part.buffered_to))
            .is_ok()
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(source = %name, "offset commit failed: {e}");
        }
    }
    Ok(())
}

/// Every few seconds: records between the consumer's position and each partition's end.
async fn track_lag(
    consumer: Arc<Consumer_>,
    topic: String,
    partitions: Vec<i32>,
    counters: Arc<skystream_engine::source::SourceCounters>,
) {
    loop {
        let (consumer, topic, partitions) = (consumer.clone(), topic.clone(), partitions.clone());
        let lag = tokio::task::spawn_blocking(move || {
            let pos = consumer.position().ok()?;
            let mut lag = 0u64;
            for p in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .ok()?;
                let at = match pos.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                };
                lag += (high - at).max(0) as u64;
            }
            Some(lag)
        })
        .await
        .ok()
        .flatten();
        if let Some(l) = lag {
            counters.set_lag(l);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
