//! The connectors skystream ships, assembled into one [`ConnectorRegistry`] for the binary,
//! the API server and the tests.

use std::sync::Arc;

use skystream_engine::connector::ConnectorRegistry;

/// Every shipped connector: `replay`, `synthetic`, `jetstream`, `kafka`, `redis`, `lake`, `stdout`, `file` and
/// the built-in `memory`.
pub fn registry() -> ConnectorRegistry {
    let mut r = ConnectorRegistry::new();
    r.register(Arc::new(skystream_replay::ReplayConnector));
    r.register(Arc::new(skystream_synthetic::SyntheticConnector));
    r.register(Arc::new(skystream_jetstream::source::JetstreamConnector));
    r.register(Arc::new(skystream_kafka::KafkaConnector));
    r.register(Arc::new(skystream_redis::RedisConnector));
    r.register(Arc::new(skystream_lake::LakeConnector));
    r.register(Arc::new(skystream_stdio::StdoutConnector));
    r.register(Arc::new(skystream_stdio::FileConnector));
    r
}
