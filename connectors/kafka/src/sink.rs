//! The `kafka` sink: one JSON message per row.
//!
//! ```sql
//! CREATE TABLE alerts WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092',
//!                           topic = 'skystream.trends', key = 'keyword');
//! ```
//!
//! Options: `bootstrap_servers`, `topic` (required); `key` (a column whose value, as text, is
//! the message key; default: no key); any `kafka.<librdkafka option>`. The producer is
//! idempotent (acks from all in-sync replicas, no duplicates from its retries) and compresses
//! with lz4. A batch is written when every one of its messages is acknowledged, so a sink
//! write that returns has reached the broker.

use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use skystream_engine::Result;
use skystream_engine::connector::TableDef;
use skystream_engine::sink::Sink;

use crate::{client_config, kafka_err};

pub(crate) struct SinkConfig {
    kafka: rdkafka::ClientConfig,
    topic: String,
    key: Option<usize>,
}

pub(crate) fn sink_config(table: &TableDef, schema: &SchemaRef) -> Result<SinkConfig> {
    let mut o = table.options();
    let mut kafka = client_config(&mut o)?;
    let topic = o.take_required("topic")?;
    let key = match o.take("key") {
        Some(k) => Some(table.sink_column(schema, "key", &k)?),
        None => None,
    };
    o.finish()?;
    producer_defaults(&mut kafka);
    Ok(SinkConfig { kafka, topic, key })
}

/// Producer settings for no loss and no duplicates: idempotence, acks=all, retries without a
/// deadline short enough to drop messages during a broker restart.
pub fn producer_defaults(c: &mut rdkafka::ClientConfig) {
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("compression.type", "lz4"),
        ("linger.ms", "20"),
        ("message.timeout.ms", "300000"),
    ] {
        if c.get(k).is_none() {
            c.set(k, v);
        }
    }
}

pub struct KafkaSink {
    name: String,
    topic: String,
    key: Option<usize>,
    producer: FutureProducer,
}

impl KafkaSink {
    pub fn new(table: &TableDef, schema: SchemaRef) -> Result<Self> {
        let c = sink_config(table, &schema)?;
        let producer: FutureProducer = c.kafka.create().map_err(|e| kafka_err(&table.name, e))?;
        Ok(Self {
            name: table.name.clone(),
            topic: c.topic,
            key: c.key,
            producer,
        })
    }
}

/// The rows of `batch` as JSON objects, one per row.
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        async move {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            let rows = json_rows(&batch)?;
            let keys = match self.key {
                Some(k) => Some(cast(batch.column(k), &DataType::Utf8)?),
                None => None,
            };
            let keys = keys.as_ref().map(|k| k.as_string::<i32>());
            let mut pending = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let key = keys.and_then(|k| k.is_valid(i).then(|| k.value(i)));
                let mut rec = FutureRecord::<str, [u8]>::to(&self.topic).payload(row);
                if let Some(k) = key {
                    rec = rec.key(k);
                }
                // `send` waits while librdkafka's queue is full.
                pending.push(self.producer.send(rec, Duration::from_secs(60)));
            }
            for r in futures::future::join_all(pending).await {
                r.map_err(|(e, _)| kafka_err(&self.name, e))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            let p = self.producer.clone();
            tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30)))
                .await
                .map_err(|e| kafka_err(&self.name, e))?
                .map_err(|e| kafka_err(&self.name, e))
        }
        .boxed()
    }
}
