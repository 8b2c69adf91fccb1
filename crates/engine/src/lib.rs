//! The skystream streaming runtime.
//!
//! A pipeline is a set of [`source::Source`]s, a set of [`sink::Sink`]s and one [`pipeline::Flow`]
//! per `INSERT INTO`. A flow is a chain of [`pipeline::Stage`]s: DataFusion physical plans run on
//! each batch (projection, filter, UNNEST, scalar functions, and after a window the per-window
//! SQL such as HAVING and ROW_NUMBER top-N), and [`window::WindowAggregate`]s, which keep per-slide
//! panes of DataFusion accumulator state and emit a window when the watermark passes its end.
//!
//! The engine knows nothing of SQL text or of any particular connector: the planner
//! (`skystream-sql`) builds the flows, connectors implement [`connector::Connector`].

pub mod checkpoint;
pub mod connector;
pub mod error;
pub mod exec;
pub mod feed;
pub mod format;
pub mod metrics;
pub mod objstore;
pub mod options;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod time;
pub mod watermark;
pub mod window;

pub use error::{Error, Result};
