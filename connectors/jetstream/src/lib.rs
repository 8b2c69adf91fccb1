//! Bluesky Jetstream: a v1 client ([`client`]), a local replay server ([`server`]), the
//! `jetstream` SQL source ([`source`]), and decoding Jetstream v1 events into
//! [`skystream_model::PostData`] rows ([`decode`]).
//!
//! The decoder borrows strings from the input where it can and builds only the columns a
//! query reads. Events that are not post creates (likes, follows, deletes, identity and account
//! events) are counted as filtered; events that do not parse are reported as malformed.

pub mod client;
pub mod decode;
pub mod event;
pub mod format;
pub mod json;
pub mod server;
pub mod source;
pub mod zstd_dict;

pub use decode::{JetstreamDecoder, decode_post};
pub use format::{decoder_for, resolve_schema};
