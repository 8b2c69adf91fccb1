use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::TIMESTAMP;

/// The kind of embed a post carries (`record.embed.$type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedKind {
    Images,
    Video,
    External,
    Record,
    RecordWithMedia,
}

impl EmbedKind {
    /// Maps a lexicon `$type` (`app.bsky.embed.images`, ...) to its kind.
    pub fn from_lexicon(t: &str) -> Option<Self> {
        Some(match t.strip_prefix("app.bsky.embed.")? {
            "images" => Self::Images,
            "video" => Self::Video,
            "external" => Self::External,
            "record" => Self::Record,
            "recordWithMedia" => Self::RecordWithMedia,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Images => "images",
            Self::Video => "video",
            Self::External => "external",
            Self::Record => "record",
            Self::RecordWithMedia => "record_with_media",
        }
    }
}

/// One post, as decoded from a Jetstream post-create event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostData {
    /// `at://{did}/app.bsky.feed.post/{rkey}`
    pub uri: String,
    pub did: String,
    pub rkey: String,
    pub cid: Option<String>,
    /// Event time in nanoseconds since the epoch (Jetstream `time_us` × 1000).
    pub event_time_ns: i64,
    /// The client-declared `createdAt`, in nanoseconds, when it parses.
    pub created_at_ns: Option<i64>,
    pub text: String,
    pub langs: Vec<String>,
    /// Facet `#tag`s and record `tags`, normalised (lowercase, no leading `#`, deduplicated).
    pub hashtags: Vec<String>,
    /// DIDs of mentioned accounts.
    pub mentions: Vec<String>,
    pub links: Vec<String>,
    pub reply_parent: Option<String>,
    pub reply_root: Option<String>,
    pub embed: Option<EmbedKind>,
}

static POST_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("uri", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("rkey", DataType::Utf8, false),
        Field::new("cid", DataType::Utf8, true),
        Field::new(crate::EVENT_TIME, TIMESTAMP, false),
        Field::new("created_at", TIMESTAMP, true),
        Field::new("text", DataType::Utf8, false),
        Field::new("langs", list(), false),
        Field::new("hashtags", list(), false),
        Field::new("mentions", list(), false),
        Field::new("links", list(), false),
        Field::new("reply_parent", DataType::Utf8, true),
        Field::new("reply_root", DataType::Utf8, true),
        Field::new("embed", DataType::Utf8, true),
    ]))
});

/// The Arrow schema of [`PostData`] rows.
pub fn post_schema() -> SchemaRef {
    POST_SCHEMA.clone()
}

/// Appends posts column by column and finishes them into a [`RecordBatch`] of [`post_schema`].
///
/// Only the columns named in `projection` (indices into [`post_schema`]) are built, so a
/// source that needs three columns does not pay for fourteen.
pub struct PostDataBuilder {
    projection: Vec<usize>,
    wanted: [bool; 14],
    uri: StringBuilder,
    did: StringBuilder,
    rkey: StringBuilder,
    cid: StringBuilder,
    event_time: TimestampNanosecondBuilder,
    created_at: TimestampNanosecondBuilder,
    text: StringBuilder,
    langs: ListBuilder<StringBuilder>,
    hashtags: ListBuilder<StringBuilder>,
    mentions: ListBuilder<StringBuilder>,
    links: ListBuilder<StringBuilder>,
    reply_parent: StringBuilder,
    reply_root: StringBuilder,
    embed: StringBuilder,
    rows: usize,
}

/// Borrowed view of one post, so decoders can append without allocating owned strings.
#[derive(Debug, Default, Clone)]
pub struct PostRef<'a> {
    pub did: &'a str,
    pub rkey: &'a str,
    pub cid: Option<&'a str>,
    pub event_time_ns: i64,
    pub created_at_ns: Option<i64>,
    pub text: &'a str,
    pub reply_parent: Option<&'a str>,
    pub reply_root: Option<&'a str>,
    pub embed: Option<EmbedKind>,
}

impl PostDataBuilder {
    /// A builder of every column.
    pub fn new() -> Self {
        Self::with_projection(None)
    }

    /// A builder of the given columns of [`post_schema`] (all when `None`).
    pub fn with_projection(projection: Option<&[usize]>) -> Self {
        let n = POST_SCHEMA.fields().len();
        let projection: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..n).collect(),
        };
        let mut wanted = [false; 14];
        for &i in &projection {
            wanted[i] = true;
        }
        let list = || ListBuilder::new(StringBuilder::new());
        Self {
            projection,
            wanted,
            uri: StringBuilder::new(),
            did: StringBuilder::new(),
            rkey: StringBuilder::new(),
            cid: StringBuilder::new(),
            event_time: TimestampNanosecondBuilder::new(),
            created_at: TimestampNanosecondBuilder::new(),
            text: StringBuilder::new(),
            langs: list(),
            hashtags: list(),
            mentions: list(),
            links: list(),
            reply_parent: StringBuilder::new(),
            reply_root: StringBuilder::new(),
            embed: StringBuilder::new(),
            rows: 0,
        }
    }

    /// The schema of the batches this builder produces.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(
            POST_SCHEMA
                .project(&self.projection)
                .expect("valid projection"),
        )
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether column `i` of [`post_schema`] is being built (decoders may skip work otherwise).
    pub fn wants(&self, i: usize) -> bool {
        self.wanted[i]
    }

    /// Appends one post. The list columns are appended with the `push_*` calls that must
    /// follow, in order: langs, hashtags, mentions, links (each closed by its `finish_*`).
    pub fn append(&mut self, p: &PostRef<'_>) {
        let w = &self.wanted;
        if w[0] {
            use std::fmt::Write;
            let _ = write!(self.uri, "at://{}/app.bsky.feed.post/{}", p.did, p.rkey);
            self.uri.append_value("");
        }
        if w[1] {
            self.did.append_value(p.did);
        }
        if w[2] {
            self.rkey.append_value(p.rkey);
        }
        if w[3] {
            self.cid.append_option(p.cid);
        }
        if w[4] {
            self.event_time.append_value(p.event_time_ns);
        }
        if w[5] {
            self.created_at.append_option(p.created_at_ns);
        }
        if w[6] {
            self.text.append_value(p.text);
        }
        if w[11] {
            self.reply_parent.append_option(p.reply_parent);
        }
        if w[12] {
            self.reply_root.append_option(p.reply_root);
        }
        if w[13] {
            self.embed.append_option(p.embed.map(EmbedKind::as_str));
        }
        self.rows += 1;
    }

    /// Appends one element to a list column (7 langs, 8 hashtags, 9 mentions, 10 links) of the
    /// row being built.
    pub fn push_list_value(&mut self, column: usize, value: &str) {
        if let Some(b) = self.list_builder(column) {
            b.values().append_value(value);
        }
    }

    /// Closes the open lists of the current row. Call once per [`Self::append`].
    pub fn finish_lists(&mut self) {
        for c in 7..=10 {
            if let Some(b) = self.list_builder(c) {
                b.append(true);
            }
        }
    }

    fn list_builder(&mut self, column: usize) -> Option<&mut ListBuilder<StringBuilder>> {
        if !self.wanted.get(column).copied().unwrap_or(false) {
            return None;
        }
        match column {
            7 => Some(&mut self.langs),
            8 => Some(&mut self.hashtags),
            9 => Some(&mut self.mentions),
            10 => Some(&mut self.links),
            _ => None,
        }
    }

    /// Appends an owned [`PostData`].
    pub fn append_post(&mut self, p: &PostData) {
        self.append(&PostRef {
            did: &p.did,
            rkey: &p.rkey,
            cid: p.cid.as_deref(),
            event_time_ns: p.event_time_ns,
            created_at_ns: p.created_at_ns,
            text: &p.text,
            reply_parent: p.reply_parent.as_deref(),
            reply_root: p.reply_root.as_deref(),
            embed: p.embed,
        });
        for (c, list) in [
            (7, &p.langs),
            (8, &p.hashtags),
            (9, &p.mentions),
            (10, &p.links),
        ] {
            for v in list {
                self.push_list_value(c, v);
            }
        }
        self.finish_lists();
    }

    /// Finishes the rows appended so far into a batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let schema = self.schema();
        let rows = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = self
            .projection
            .clone()
            .into_iter()
            .map(|i| -> ArrayRef {
                match i {
                    0 => Arc::new(self.uri.finish()),
                    1 => Arc::new(self.did.finish()),
                    2 => Arc::new(self.rkey.finish()),
                    3 => Arc::new(self.cid.finish()),
                    4 => Arc::new(self.event_time.finish()),
                    5 => Arc::new(self.created_at.finish()),
                    6 => Arc::new(self.text.finish()),
                    7 => Arc::new(self.langs.finish()),
                    8 => Arc::new(self.hashtags.finish()),
                    9 => Arc::new(self.mentions.finish()),
                    10 => Arc::new(self.links.finish()),
                    11 => Arc::new(self.reply_parent.finish()),
                    12 => Arc::new(self.reply_root.finish()),
                    _ => Arc::new(self.embed.finish()),
                }
            })
            .collect();
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, columns, &opts)
            .expect("builder columns match schema")
    }
}

impl Default for PostDataBuilder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn builds_projected_columns_only() {
        let mut b = PostDataBuilder::with_projection(Some(&[1, 6, 8]));
        let p = PostData {
            did: "did:plc:a".into(),
            rkey: "r1".into(),
            text: "hello #World".into(),
            hashtags: vec!["world".into()],
            ..Default::default()
        };
        b.append_post(&p);
        b.append_post(&p);
        let batch = b.finish();
        assert_eq!(batch.num_columns(), 3);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().field(2).name(), "hashtags");
        let tags = batch.column(2).as_list::<i32>();
        assert_eq!(tags.value(1).len(), 1);
    }

    #[test]
    fn uri_is_derived_from_did_and_rkey() {
        let mut b = PostDataBuilder::new();
        b.append_post(&PostData {
            did: "did:plc:x".into(),
            rkey: "3k".into(),
            ..Default::default()
        });
        let batch = b.finish();
        assert_eq!(
            batch.column(0).as_string::<i32>().value(0),
            "at://did:plc:x/app.bsky.feed.post/3k"
        );
        assert_eq!(batch.schema(), post_schema());
    }
}
