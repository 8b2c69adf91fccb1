//! The skystream streaming runtime.
//!
//! A pipeline is a set of [`source::Source`]s, a set of [`sink::Sink`]s and one [`flow::Flow`]
//! per `INSERT INTO`. A flow runs DataFusion physical plans on each source batch (projection,
//! filter, UNNEST, scalar functions), feeds [`window::WindowAggregate`]s, which keep per-slide
//! panes of DataFusion accumulator state and emit a window when the watermark passes its end,
//! and runs the per-window SQL after them (HAVING, ROW_NUMBER top-N, joins of windowed results).
//!
//! The engine knows nothing of SQL text or of any particular connector: the planner
//! (`skystream-sql`) builds the flows, connectors implement [`connector::Connector`].

pub mod address;
pub mod checkpoint;
pub mod connector;
pub mod error;
pub mod exec;
pub mod feed;
pub mod flow;
pub mod format;
pub mod metrics;
pub mod objstore;
pub mod options;
pub mod pipeline;
pub mod sink;
pub mod source;
mod stage0;
pub mod stop;
pub mod time;
pub mod watermark;
pub mod window;

pub use error::{Error, Result};
