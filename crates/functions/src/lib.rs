//! The SQL functions skystream adds to DataFusion's (`keywords`, `hashtags`, `hop`, `tumble`)
//! and the tokenizer behind `keywords`. They run once per row, so this crate is built with full
//! optimisation; the planner (`skystream-sql`), which runs once per query, is not.

pub mod text;
pub mod udf;
