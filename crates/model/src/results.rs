use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::TIMESTAMP;

/// A keyword's count within one event-time window `[window_start, window_end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowedKeywordCount {
    pub window_start_ns: i64,
    pub window_end_ns: i64,
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
        Field::new("keyword", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("distinct_authors", DataType::Int64, false),
    ]))
}

/// A keyword rising unusually in a window, compared with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendAlert {
    pub keyword: String,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    pub count: i64,
    /// Count expected in this window from the baseline, scaled to the window's volume.
    pub expected: f64,
    /// The keyword's count over the baseline period.
    pub baseline: f64,
    pub score: f64,
    /// `count / expected`.
    pub growth: f64,
    /// 1 for the strongest trend of the window.
    pub rank: i64,
    pub detected_at_ns: i64,
}

/// The Arrow schema of [`TrendAlert`] rows.
pub fn trend_alert_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("keyword", DataType::Utf8, false),
        Field::new("window_start", TIMESTAMP, false),
        Field::new("window_end", TIMESTAMP, false),
        Field::new("count", DataType::Int64, false),
        Field::new("expected", DataType::Float64, false),
        Field::new("baseline", DataType::Float64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("growth", DataType::Float64, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("detected_at", TIMESTAMP, false),
    ]))
}
