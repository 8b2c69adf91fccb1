use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::TIMESTAMP;

/// A keyword's count within one event-time window `[window_start, window_end)` and language
/// group (rows of `sql/keyword_counts.sql` and `sql/hashtag_counts.sql`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowedKeywordCount {
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// Language group: the primary subtag of the post's first language tag (`und`: none).
    pub lang: String,
    pub keyword: String,
    pub count: i64,
    /// Number of distinct authors (DIDs) who used the keyword in the window.
    pub distinct_authors: i64,
}

/// The Arrow schema of [`WindowedKeywordCount`] rows.
pub fn windowed_keyword_count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_start", TIMESTAMP, false),
        Field::new("window_end", TIMESTAMP, false),
        Field::new("lang", DataType::Utf8, false),
        Field::new("keyword", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("distinct_authors", DataType::Int64, false),
    ]))
}

/// A keyword rising unusually in a window, compared with its baseline (rows of
/// `sql/trends.sql`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendAlert {
    pub keyword: String,
    /// Language group (see [`WindowedKeywordCount::lang`]).
    pub lang: String,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// Posts using the keyword in the window.
    pub count: i64,
    /// Distinct authors of those posts.
    pub authors: i64,
    /// Count expected in this window from the baseline, scaled to the window's volume.
    pub expected: f64,
    /// The keyword's count over the baseline period.
    pub baseline: i64,
    pub score: f64,
    /// `count / expected`.
    pub growth: f64,
    /// 1 for the strongest trend of the window.
    pub rank: u64,
}

/// The Arrow schema of [`TrendAlert`] rows.
pub fn trend_alert_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("keyword", DataType::Utf8, false),
        Field::new("lang", DataType::Utf8, false),
        Field::new("window_start", TIMESTAMP, false),
        Field::new("window_end", TIMESTAMP, false),
        Field::new("count", DataType::Int64, false),
        Field::new("authors", DataType::Int64, false),
        Field::new("expected", DataType::Float64, false),
        Field::new("baseline", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("growth", DataType::Float64, false),
        Field::new("rank", DataType::UInt64, false),
    ]))
}
