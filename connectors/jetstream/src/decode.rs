use std::borrow::Cow;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::Deserialize;
use skystream_engine::format::{Decoded, RecordDecoder};
use skystream_model::{EmbedKind, PostData, PostDataBuilder, PostRef, normalize_hashtag};

/// The post collection's NSID.
pub const POST_COLLECTION: &str = "app.bsky.feed.post";

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    commit: Option<Commit<'a>>,
}

#[derive(Deserialize)]
struct Commit<'a> {
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow)]
    collection: Cow<'a, str>,
    #[serde(borrow)]
    rkey: Cow<'a, str>,
    #[serde(borrow, default)]
    cid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    record: Option<Record<'a>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default, rename = "createdAt")]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    langs: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    facets: Option<Vec<Facet<'a>>>,
    #[serde(borrow, default)]
    tags: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    reply: Option<Reply<'a>>,
    #[serde(borrow, default)]
    embed: Option<Embed<'a>>,
}

#[derive(Deserialize)]
struct Facet<'a> {
    #[serde(borrow, default)]
    features: Vec<Feature<'a>>,
}

#[derive(Deserialize)]
struct Feature<'a> {
    #[serde(borrow, rename = "$type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    tag: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    did: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    parent: Option<StrongRef<'a>>,
    #[serde(borrow, default)]
    root: Option<StrongRef<'a>>,
}

#[derive(Deserialize)]
struct StrongRef<'a> {
    #[serde(borrow)]
    uri: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Embed<'a> {
    #[serde(borrow, rename = "$type", default)]
    kind: Option<Cow<'a, str>>,
}

/// What one line of Jetstream JSON is. Returned by value once per event: boxing the large
/// variant would cost an allocation per post.
#[allow(clippy::large_enum_variant)]
enum Parsed<'a> {
    Post(Event<'a>),
    Other,
}

fn parse(line: &[u8]) -> Result<Parsed<'_>, String> {
    let ev: Event<'_> =
        serde_json::from_slice(line).map_err(|e| format!("invalid Jetstream event: {e}"))?;
    match (ev.kind.as_ref(), &ev.commit) {
        ("commit", Some(c)) if c.collection == POST_COLLECTION && c.operation == "create" => {
            if c.record.is_none() {
                return Err("post create without a record".into());
            }
            if ev.time_us <= 0 {
                return Err(format!("invalid time_us {}", ev.time_us));
            }
            Ok(Parsed::Post(ev))
        }
        ("commit", None) => Err("commit event without 'commit'".into()),
        ("commit" | "identity" | "account", _) => Ok(Parsed::Other),
        (k, _) => Err(format!("unknown event kind '{k}'")),
    }
}

fn append(b: &mut PostDataBuilder, ev: &Event<'_>) {
    let c = ev.commit.as_ref().expect("checked");
    let r = c.record.as_ref().expect("checked");
    let created_at_ns = if b.wants(5) {
        r.created_at
            .as_deref()
            .and_then(skystream_engine::time::parse_rfc3339_ns)
    } else {
        None
    };
    let reply = r.reply.as_ref();
    b.append(&PostRef {
        did: &ev.did,
        rkey: &c.rkey,
        cid: c.cid.as_deref(),
        event_time_ns: ev.time_us.saturating_mul(1000),
        created_at_ns,
        text: &r.text,
        reply_parent: reply
            .and_then(|x| x.parent.as_ref())
            .map(|p| p.uri.as_ref()),
        reply_root: reply.and_then(|x| x.root.as_ref()).map(|p| p.uri.as_ref()),
        embed: r
            .embed
            .as_ref()
            .and_then(|e| e.kind.as_deref())
            .and_then(EmbedKind::from_lexicon),
    });
    if b.wants(7) {
        for l in r.langs.iter().flatten() {
            b.push_list_value(7, l);
        }
    }
    let facets = r.facets.iter().flatten().flat_map(|f| f.features.iter());
    if b.wants(8) {
        let tags = facets
            .clone()
            .filter(|f| f.kind == "app.bsky.richtext.facet#tag")
            .filter_map(|f| f.tag.as_deref())
            .chain(r.tags.iter().flatten().map(|t| t.as_ref()));
        for t in tags {
            if let Some(t) = normalize_hashtag(t)
                && !b.list_contains(8, &t)
            {
                b.push_list_value(8, &t);
            }
        }
    }
    if b.wants(9) {
        for f in facets
            .clone()
            .filter(|f| f.kind == "app.bsky.richtext.facet#mention")
        {
            if let Some(d) = &f.did {
                b.push_list_value(9, d);
            }
        }
    }
    if b.wants(10) {
        for f in facets.filter(|f| f.kind == "app.bsky.richtext.facet#link") {
            if let Some(u) = &f.uri {
                b.push_list_value(10, u);
            }
        }
    }
    b.finish_lists();
}

/// Decodes one Jetstream event into an owned [`PostData`] (`Ok(None)` for events that are not
/// post creates).
pub fn decode_post(line: &[u8]) -> Result<Option<PostData>, String> {
    let Parsed::Post(ev) = parse(line)? else {
        return Ok(None);
    };
    let c = ev.commit.as_ref().expect("checked");
    let r = c.record.as_ref().expect("checked");
    let facets: Vec<&Feature<'_>> = r
        .facets
        .iter()
        .flatten()
        .flat_map(|f| f.features.iter())
        .collect();
    let mut hashtags: Vec<String> = Vec::new();
    for t in facets
        .iter()
        .filter(|f| f.kind == "app.bsky.richtext.facet#tag")
        .filter_map(|f| f.tag.as_deref())
        .chain(r.tags.iter().flatten().map(|t| t.as_ref()))
    {
        if let Some(t) = normalize_hashtag(t)
            && !hashtags.contains(&t)
        {
            hashtags.push(t);
        }
    }
    let of_kind = |k: &str, get: fn(&Feature<'_>) -> Option<String>| -> Vec<String> {
        facets
            .iter()
            .filter(|f| f.kind == k)
            .filter_map(|f| get(f))
            .collect()
    };
    Ok(Some(PostData {
        uri: format!("at://{}/{}/{}", ev.did, POST_COLLECTION, c.rkey),
        did: ev.did.to_string(),
        rkey: c.rkey.to_string(),
        cid: c.cid.as_ref().map(|s| s.to_string()),
        event_time_ns: ev.time_us * 1000,
        created_at_ns: r
            .created_at
            .as_deref()
            .and_then(skystream_engine::time::parse_rfc3339_ns),
        text: r.text.to_string(),
        langs: r.langs.iter().flatten().map(|s| s.to_string()).collect(),
        hashtags,
        mentions: of_kind("app.bsky.richtext.facet#mention", |f| {
            f.did.as_ref().map(|s| s.to_string())
        }),
        links: of_kind("app.bsky.richtext.facet#link", |f| {
            f.uri.as_ref().map(|s| s.to_string())
        }),
        reply_parent: r
            .reply
            .as_ref()
            .and_then(|x| x.parent.as_ref())
            .map(|p| p.uri.to_string()),
        reply_root: r
            .reply
            .as_ref()
            .and_then(|x| x.root.as_ref())
            .map(|p| p.uri.to_string()),
        embed: r
            .embed
            .as_ref()
            .and_then(|e| e.kind.as_deref())
            .and_then(EmbedKind::from_lexicon),
    }))
}

/// `format = 'jetstream'`: Jetstream v1 events to [`skystream_model::post_schema`] rows.
pub struct JetstreamDecoder {
    builder: PostDataBuilder,
}

impl JetstreamDecoder {
    /// Builds the given columns of the post schema (all when `None`).
    pub fn new(projection: Option<&[usize]>) -> Self {
        Self {
            builder: PostDataBuilder::with_projection(projection),
        }
    }
}

impl RecordDecoder for JetstreamDecoder {
    fn schema(&self) -> SchemaRef {
        self.builder.schema()
    }

    fn push(&mut self, record: &[u8]) -> Result<Decoded, String> {
        match parse(record)? {
            Parsed::Post(ev) => {
                append(&mut self.builder, &ev);
                Ok(Decoded::Row)
            }
            Parsed::Other => Ok(Decoded::Filtered),
        }
    }

    fn len(&self) -> usize {
        self.builder.len()
    }

    fn flush(&mut self) -> skystream_engine::Result<Option<RecordBatch>> {
        if self.builder.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.builder.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    const POST: &str = r##"{"did":"did:plc:abc","time_us":1783175888090631,"kind":"commit","commit":{"rev":"r","operation":"create","collection":"app.bsky.feed.post","rkey":"3k1","record":{"$type":"app.bsky.feed.post","createdAt":"2026-07-04T14:38:06.240Z","text":"Hello #Rust and @bob","langs":["en"],"tags":["Extra","rust"],"facets":[{"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"Rust"}],"index":{"byteStart":6,"byteEnd":11}},{"features":[{"$type":"app.bsky.richtext.facet#mention","did":"did:plc:bob"}],"index":{"byteStart":16,"byteEnd":20}}],"reply":{"parent":{"cid":"c","uri":"at://p"},"root":{"cid":"c","uri":"at://r"}},"embed":{"$type":"app.bsky.embed.images","images":[]}},"cid":"bafy"}}"##;

    #[test]
    fn decodes_a_post() {
        let p = decode_post(POST.as_bytes()).unwrap().unwrap();
        assert_eq!(p.uri, "at://did:plc:abc/app.bsky.feed.post/3k1");
        assert_eq!(p.event_time_ns, 1783175888090631000);
        assert_eq!(p.hashtags, vec!["rust", "extra"]);
        assert_eq!(p.mentions, vec!["did:plc:bob"]);
        assert_eq!(p.reply_parent.as_deref(), Some("at://p"));
        assert_eq!(p.embed, Some(EmbedKind::Images));
        assert!(p.created_at_ns.is_some());
    }

    #[test]
    fn batch_matches_owned_decode() {
        let mut d = JetstreamDecoder::new(None);
        assert_eq!(d.push(POST.as_bytes()).unwrap(), Decoded::Row);
        let b = d.flush().unwrap().unwrap();
        let mut expected = PostDataBuilder::new();
        expected.append_post(&decode_post(POST.as_bytes()).unwrap().unwrap());
        assert_eq!(b, expected.finish());
        let tags = b.column(8).as_list::<i32>().value(0);
        assert_eq!(tags.len(), 2);
    }

    #[test]
    fn others_filtered_and_garbage_malformed() {
        let mut d = JetstreamDecoder::new(None);
        let like = r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.like","rkey":"x"}}"#;
        assert_eq!(d.push(like.as_bytes()).unwrap(), Decoded::Filtered);
        let del = r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"operation":"delete","collection":"app.bsky.feed.post","rkey":"x"}}"#;
        assert_eq!(d.push(del.as_bytes()).unwrap(), Decoded::Filtered);
        assert!(d.push(b"{not json").is_err());
        assert!(
            d.push(br#"{"did":"x","time_us":1,"kind":"weird"}"#)
                .is_err()
        );
        assert!(d.push(&[0xff, 0xfe]).is_err());
        assert!(d.flush().unwrap().is_none());
    }
}
