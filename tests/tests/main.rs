//! The cross-crate suite, one test binary: every file beside this one is a module here, so
//! DataFusion, librdkafka and the rest are linked once rather than once per file.

mod api;
mod checkpoint;
mod cli;
mod crash;
mod deploy;
mod errors;
mod hardening;
mod jetstream;
mod kafka;
mod memory;
mod oracle;
mod prometheus;
#[path = "redis.rs"]
mod redis_sink; // not `redis`: that is the client crate's name
mod schemathesis;
mod sql_endpoint;
mod trends;
