//! Streaming SQL for skystream.
//!
//! A pipeline is a script of statements:
//!
//! ```sql
//! CREATE TABLE posts (
//!   WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
//! ) WITH (connector = 'synthetic', rate = '100');
//!
//! CREATE TABLE out WITH (connector = 'stdout');
//!
//! INSERT INTO out
//! SELECT kw, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
//! FROM (SELECT unnest(keywords(text)) AS kw, event_time FROM posts)
//! GROUP BY kw, win;
//! ```
//!
//! [`plan_script`] turns it into a runnable [`skystream_engine::pipeline::Pipeline`], reusing
//! DataFusion's parser, planner, optimizer, expressions and accumulators; this crate adds the
//! streaming parts: connector tables, watermarks, windows, and the rules of what may run on an
//! unbounded stream.

mod cut;
mod embed;
pub mod error;
pub mod limits;
pub mod params;
pub mod planner;
mod pushdown;
pub mod rewrite;
pub mod script;
pub mod table;
pub mod validate;

// The functions live in their own crate (built for speed); their paths stay as they were.
pub use skystream_functions::{text, udf};

pub use error::SqlError;
pub use planner::{
    PlanOptions, PlannedPipeline, TableCheck, new_session, new_session_with, plan_script,
    plan_script_isolated, plan_script_with,
};
