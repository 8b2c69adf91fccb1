//! Data models shared by every skystream crate, each with its Arrow schema.
//!
//! * [`PostData`]: one Bluesky post, decoded from a Jetstream `app.bsky.feed.post` create event.
//! * [`WindowedKeywordCount`]: a keyword's count within one event-time window.
//! * [`TrendAlert`]: a keyword that rises unusually within a window, with its score.
//!
//! This crate holds schemas and plain types only: no I/O, no SQL.

mod post;
mod results;

pub use post::{EmbedKind, PostData, PostDataBuilder, PostRef, post_schema};
pub use results::{
    TrendAlert, WindowedKeywordCount, trend_alert_schema, windowed_keyword_count_schema,
};

use arrow::datatypes::{DataType, TimeUnit};

/// The Arrow type of every event-time column in skystream: nanoseconds since the Unix epoch,
/// no time zone (values are UTC). It is what DataFusion's SQL `TIMESTAMP` maps to.
pub const TIMESTAMP: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

/// Name of the column carrying a post's event time (Jetstream `time_us`).
pub const EVENT_TIME: &str = "event_time";

/// Normalises a hashtag (from a facet, a record's `tags`, or `#text`): no leading `#`,
/// trimmed, lowercase. `None` when nothing is left or it is only digits (`#1` is not a tag).
pub fn normalize_hashtag(tag: &str) -> Option<String> {
    let t = tag.trim().trim_start_matches(['#', '＃']).trim();
    if t.is_empty() || t.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(t.to_lowercase())
}
