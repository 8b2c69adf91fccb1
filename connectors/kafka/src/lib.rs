//! Kafka: the `kafka` SQL source and sink (rdkafka, with its bundled librdkafka) and the
//! Jetstream → Kafka ingest loop behind `skystream ingest`.

pub mod ingest;
pub mod sink;
pub mod source;

use rdkafka::ClientConfig;
use skystream_engine::address::parse_kafka_brokers;
use skystream_engine::options::Options;
use skystream_engine::{Error, Result};

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::sink::Sink;
use skystream_engine::source::Source;

/// `connector = 'kafka'`: a topic read as a stream (see [`source`]) or written with one JSON
/// message per row (see [`sink`]).
pub struct KafkaConnector;

impl Connector for KafkaConnector {
    fn name(&self) -> &str {
        "kafka"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        let o = &table.options;
        let mut r: Vec<Resource> = Resource::hosts(parse_kafka_brokers(
            o.get("bootstrap_servers").unwrap_or_default(),
        ))
        .collect();
        r.extend(
            o.keys()
                .filter(|k| k.starts_with("kafka."))
                .map(Resource::RawSetting),
        );
        r
    }

    fn description(&self) -> &str {
        "source and sink: a Kafka topic (JSON or Jetstream messages; per-partition watermarks)"
    }

    fn is_source(&self) -> bool {
        true
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn source_schema(&self, table: &TableDef) -> Result<SchemaRef> {
        source::source_schema(table)
    }

    fn create_source(&self, table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
        source::create_source(table, projection)
    }

    fn validate_sink(&self, table: &TableDef, schema: &SchemaRef) -> Result<()> {
        sink::sink_config(table, schema).map(|_| ())
    }

    fn create_sink(&self, table: &TableDef, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        Ok(Box::new(sink::KafkaSink::new(table, schema)?))
    }
}

/// Shared with [`Arc`]-holding registries.
pub fn connector() -> Arc<dyn Connector> {
    Arc::new(KafkaConnector)
}

/// librdkafka settings shared by sources and sinks: `bootstrap_servers`, and any option
/// prefixed `kafka.` passed through verbatim (`'kafka.security.protocol' = 'ssl'`).
pub(crate) fn client_config(o: &mut Options) -> Result<ClientConfig> {
    let mut c = ClientConfig::new();
    let servers = o.take_required("bootstrap_servers")?;
    // Refused unless every broker address is unambiguous (see skystream_engine::address).
    parse_kafka_brokers(&servers)
        .map_err(|e| Error::plan(format!("table '{}': {e}", o.table())))?;
    c.set("bootstrap.servers", servers);
    let passthrough: Vec<String> = o.keys().filter(|k| k.starts_with("kafka.")).collect();
    for k in passthrough {
        if let Some(v) = o.take(&k) {
            c.set(&k["kafka.".len()..], v);
        }
    }
    Ok(c)
}

pub(crate) fn kafka_err(table: &str, e: impl std::fmt::Display) -> Error {
    Error::connector(table, format!("kafka: {e}"))
}
