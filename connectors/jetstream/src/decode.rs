use std::borrow::Cow;

use crate::json::{self, Reader};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use skystream_engine::format::{Decoded, RecordDecoder};
use skystream_model::{EmbedKind, PostData, PostDataBuilder, PostRef, normalize_hashtag};

/// The post collection's NSID.
pub const POST_COLLECTION: &str = "app.bsky.feed.post";

struct Event<'a> {
    did: Cow<'a, str>,
    time_us: i64,
    kind: Cow<'a, str>,
    commit: Option<Commit<'a>>,
}

struct Commit<'a> {
    operation: Cow<'a, str>,
    collection: Cow<'a, str>,
    rkey: Cow<'a, str>,
    cid: Option<Cow<'a, str>>,
    /// Decoded for post creates only.
    record: Option<Record<'a>>,
}

#[derive(Default)]
struct Record<'a> {
    text: Cow<'a, str>,
    created_at: Option<Cow<'a, str>>,
    langs: Option<Vec<Cow<'a, str>>>,
    facets: Option<Vec<Facet<'a>>>,
    tags: Option<Vec<Cow<'a, str>>>,
    reply: Option<Reply<'a>>,
    embed: Option<Embed<'a>>,
}

struct Facet<'a> {
    features: Vec<Feature<'a>>,
}

#[derive(Default)]
struct Feature<'a> {
    kind: Cow<'a, str>,
    tag: Option<Cow<'a, str>>,
    did: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
}

struct Reply<'a> {
    parent: Option<StrongRef<'a>>,
    root: Option<StrongRef<'a>>,
}

struct StrongRef<'a> {
    uri: Cow<'a, str>,
}

struct Embed<'a> {
    kind: Option<Cow<'a, str>>,
}

/// What one line of Jetstream JSON is. Returned by value once per event: boxing the large
/// variant would cost an allocation per post.
#[allow(clippy::large_enum_variant)]
enum Parsed<'a> {
    Post(Event<'a>),
    Other,
}

/// Which parts of a post record a decoder needs (the rest is skipped unread).
#[derive(Debug, Clone, Copy)]
struct Want {
    created_at: bool,
    langs: bool,
    /// Facets and `tags` (hashtags, mentions, links).
    facets: bool,
    reply: bool,
    embed: bool,
}

impl Want {
    const ALL: Want = Want {
        created_at: true,
        langs: true,
        facets: true,
        reply: true,
        embed: true,
    };

    fn of(b: &PostDataBuilder) -> Want {
        Want {
            created_at: b.wants(5),
            langs: b.wants(7),
            facets: b.wants(8) || b.wants(9) || b.wants(10),
            reply: b.wants(11) || b.wants(12),
            embed: b.wants(13),
        }
    }
}

fn missing<T>(what: &str) -> Result<T, String> {
    Err(format!("missing field '{what}'"))
}

fn strings<'a>(r: &mut Reader<'a>) -> json::Result<Option<Vec<Cow<'a, str>>>> {
    if r.null()? {
        return Ok(None);
    }
    let mut v = Vec::new();
    r.array(|r| {
        v.push(r.string()?);
        Ok(())
    })?;
    Ok(Some(v))
}

fn strong_ref<'a>(r: &mut Reader<'a>) -> json::Result<Option<StrongRef<'a>>> {
    if r.null()? {
        return Ok(None);
    }
    let mut uri = None;
    r.object(|r, k| match k {
        b"uri" => {
            uri = Some(r.string()?);
            Ok(())
        }
        _ => r.skip(),
    })?;
    match uri {
        Some(uri) => Ok(Some(StrongRef { uri })),
        None => r.err("reply reference without 'uri'"),
    }
}

fn record<'a>(r: &mut Reader<'a>, want: Want) -> json::Result<Record<'a>> {
    let mut rec = Record::default();
    r.object(|r, k| {
        match k {
            b"text" => rec.text = r.string()?,
            b"createdAt" if want.created_at => rec.created_at = r.opt_string()?,
            b"langs" if want.langs => rec.langs = strings(r)?,
            b"tags" if want.facets => rec.tags = strings(r)?,
            b"facets" if want.facets => {
                if r.null()? {
                    return Ok(());
                }
                let mut facets = Vec::new();
                r.array(|r| {
                    let mut features = Vec::new();
                    r.object(|r, k| match k {
                        b"features" => r.array(|r| {
                            let mut f = Feature::default();
                            r.object(|r, k| {
                                match k {
                                    b"$type" => f.kind = r.string()?,
                                    b"tag" => f.tag = r.opt_string()?,
                                    b"did" => f.did = r.opt_string()?,
                                    b"uri" => f.uri = r.opt_string()?,
                                    _ => r.skip()?,
                                }
                                Ok(())
                            })?;
                            features.push(f);
                            Ok(())
                        }),
                        _ => r.skip(),
                    })?;
                    facets.push(Facet { features });
                    Ok(())
                })?;
                rec.facets = Some(facets);
            }
            b"reply" if want.reply => {
                if !r.null()? {
                    let (mut parent, mut root) = (None, None);
                    r.object(|r, k| {
                        match k {
                            b"parent" => parent = strong_ref(r)?,
                            b"root" => root = strong_ref(r)?,
                            _ => r.skip()?,
                        }
                        Ok(())
                    })?;
                    rec.reply = Some(Reply { parent, root });
                }
            }
            b"embed" if want.embed => {
                if !r.null()? {
                    let mut kind = None;
                    r.object(|r, k| match k {
                        b"$type" => {
                            kind = r.opt_string()?;
                            Ok(())
                        }
                        _ => r.skip(),
                    })?;
                    rec.embed = Some(Embed { kind });
                }
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(rec)
}

fn is_post_create(operation: Option<&str>, collection: Option<&str>) -> Option<bool> {
    Some(operation? == "create" && collection? == POST_COLLECTION)
}

fn commit<'a>(r: &mut Reader<'a>, want: Want) -> Result<Commit<'a>, String> {
    let (mut operation, mut collection, mut rkey, mut cid) = (None, None, None, None);
    let mut rec = None;
    // A record met before `operation`/`collection` is kept raw until they are known.
    let mut pending: Option<&'a [u8]> = None;
    r.object(|r, k| {
        match k {
            b"operation" => operation = Some(r.string()?),
            b"collection" => collection = Some(r.string()?),
            b"rkey" => rkey = Some(r.string()?),
            b"cid" => cid = r.opt_string()?,
            b"record" => match is_post_create(operation.as_deref(), collection.as_deref()) {
                Some(true) => {
                    rec = if r.null()? {
                        None
                    } else {
                        Some(record(r, want)?)
                    };
                }
                Some(false) => r.skip()?,
                None => pending = Some(r.capture()?),
            },
            _ => r.skip()?,
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let (Some(operation), Some(collection)) = (operation, collection) else {
        return missing("commit.operation / commit.collection");
    };
    let Some(rkey) = rkey else {
        return missing("commit.rkey");
    };
    if let Some(raw) = pending
        && operation == "create"
        && collection == POST_COLLECTION
    {
        let mut r = Reader::new(raw);
        rec = if r.null().map_err(|e| e.to_string())? {
            None
        } else {
            Some(record(&mut r, want).map_err(|e| format!("in commit.record: {e}"))?)
        };
    }
    Ok(Commit {
        operation,
        collection,
        rkey,
        cid,
        record: rec,
    })
}

fn event(line: &[u8], want: Want) -> Result<Event<'_>, String> {
    let mut r = Reader::new(line);
    let (mut did, mut time_us, mut kind, mut commit_value) = (None, None, None, None);
    let mut commit_err = None;
    r.object(|r, k| {
        match k {
            b"did" => did = Some(r.string()?),
            b"time_us" => time_us = Some(r.i64()?),
            b"kind" => kind = Some(r.string()?),
            b"commit" => {
                if !r.null()? {
                    match commit(r, want) {
                        Ok(c) => commit_value = Some(c),
                        Err(e) => {
                            commit_err = Some(e);
                            return r.err("invalid commit");
                        }
                    }
                }
            }
            _ => r.skip()?,
        }
        Ok(())
    })
    .and_then(|_| r.end())
    .map_err(|e| commit_err.take().unwrap_or_else(|| e.to_string()))?;
    let (Some(did), Some(time_us), Some(kind)) = (did, time_us, kind) else {
        return missing("did / time_us / kind");
    };
    Ok(Event {
        did,
        time_us,
        kind,
        commit: commit_value,
    })
}

fn parse(line: &[u8], want: Want) -> Result<Parsed<'_>, String> {
    let ev = event(line, want).map_err(|e| format!("invalid Jetstream event: {e}"))?;
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

/// The most items a list column (langs, hashtags, mentions, links) takes from one post.
pub const MAX_LIST_ITEMS: usize = 256;

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
        for l in r.langs.iter().flatten().take(MAX_LIST_ITEMS) {
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
        // Distinct tags, at most MAX_LIST_ITEMS of them (a crafted post may carry 200,000).
        let mut seen = std::collections::HashSet::new();
        for t in tags {
            if seen.len() == MAX_LIST_ITEMS {
                break;
            }
            if let Some(t) = normalize_hashtag(t)
                && !seen.contains(&t)
            {
                b.push_list_value(8, &t);
                seen.insert(t);
            }
        }
    }
    if b.wants(9) {
        for f in facets
            .clone()
            .filter(|f| f.kind == "app.bsky.richtext.facet#mention")
            .take(MAX_LIST_ITEMS)
        {
            if let Some(d) = &f.did {
                b.push_list_value(9, d);
            }
        }
    }
    if b.wants(10) {
        for f in facets
            .filter(|f| f.kind == "app.bsky.richtext.facet#link")
            .take(MAX_LIST_ITEMS)
        {
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
    let Parsed::Post(ev) = parse(line, Want::ALL)? else {
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
    let mut seen = std::collections::HashSet::new();
    for t in facets
        .iter()
        .filter(|f| f.kind == "app.bsky.richtext.facet#tag")
        .filter_map(|f| f.tag.as_deref())
        .chain(r.tags.iter().flatten().map(|t| t.as_ref()))
    {
        if hashtags.len() == MAX_LIST_ITEMS {
            break;
        }
        if let Some(t) = normalize_hashtag(t)
            && seen.insert(t.clone())
        {
            hashtags.push(t);
        }
    }
    let of_kind = |k: &str, get: fn(&Feature<'_>) -> Option<String>| -> Vec<String> {
        facets
            .iter()
            .filter(|f| f.kind == k)
            .filter_map(|f| get(f))
            .take(MAX_LIST_ITEMS)
            .collect()
    };
    Ok(Some(PostData {
        uri: format!("at://{}/{}/{}", ev.did, POST_COLLECTION, c.rkey),
        did: ev.did.to_string(),
        rkey: c.rkey.to_string(),
        cid: c.cid.as_ref().map(|s| s.to_string()),
        event_time_ns: ev.time_us.saturating_mul(1000),
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
        match parse(record, Want::of(&self.builder))? {
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

    /// The decoder agrees with a general JSON parser (serde_json) on every recorded event.
    #[test]
    fn recorded_events_match_a_general_json_parser() {
        use serde_json::Value;
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jetstream");
        let mut posts = 0;
        for file in ["expected_v1.jsonl", "golden_v1.jsonl"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap();
                let c = &v["commit"];
                let is_post = v["kind"] == "commit"
                    && c["collection"] == POST_COLLECTION
                    && c["operation"] == "create";
                let got = decode_post(line.as_bytes()).unwrap();
                assert_eq!(got.is_some(), is_post, "{line}");
                let Some(p) = got else { continue };
                posts += 1;
                let r = &c["record"];
                let s = |v: &Value| v.as_str().map(str::to_string);
                let list = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .map(|a| a.iter().filter_map(s).collect())
                        .unwrap_or_default()
                };
                let features: Vec<&Value> = r["facets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|f| f["features"].as_array().into_iter().flatten())
                    .collect();
                let of = |kind: &str, field: &str| -> Vec<String> {
                    features
                        .iter()
                        .filter(|f| f["$type"] == kind)
                        .filter_map(|f| s(&f[field]))
                        .collect()
                };
                assert_eq!(Some(p.did.clone()), s(&v["did"]));
                assert_eq!(Some(p.rkey.clone()), s(&c["rkey"]));
                assert_eq!(p.cid, s(&c["cid"]));
                assert_eq!(p.event_time_ns, v["time_us"].as_i64().unwrap() * 1000);
                assert_eq!(p.text, s(&r["text"]).unwrap_or_default());
                assert_eq!(p.langs, list(&r["langs"]));
                assert_eq!(p.mentions, of("app.bsky.richtext.facet#mention", "did"));
                assert_eq!(p.links, of("app.bsky.richtext.facet#link", "uri"));
                let mut tags: Vec<String> = Vec::new();
                for t in of("app.bsky.richtext.facet#tag", "tag")
                    .into_iter()
                    .chain(list(&r["tags"]))
                {
                    if let Some(t) = normalize_hashtag(&t)
                        && !tags.contains(&t)
                    {
                        tags.push(t);
                    }
                }
                assert_eq!(p.hashtags, tags);
                assert_eq!(p.reply_parent, s(&r["reply"]["parent"]["uri"]));
                assert_eq!(p.reply_root, s(&r["reply"]["root"]["uri"]));
                assert_eq!(
                    p.embed,
                    r["embed"]["$type"]
                        .as_str()
                        .and_then(EmbedKind::from_lexicon)
                );
                assert_eq!(
                    p.created_at_ns,
                    r["createdAt"]
                        .as_str()
                        .and_then(skystream_engine::time::parse_rfc3339_ns)
                );
            }
        }
        assert!(posts >= 17, "{posts}");
    }

    /// Damaged events (bytes replaced, lines cut short) are errors or other events, never a
    /// panic.
    #[test]
    fn damaged_events_never_panic() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jetstream");
        let text = std::fs::read(root.join("golden_v1.jsonl")).unwrap();
        let mut d = JetstreamDecoder::new(None);
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            for pos in (0..line.len()).step_by(3) {
                let _ = d.push(&line[..pos]);
                for b in [b'"', b'\\', b'{', b'}', b'[', b',', b':', 0xff, b'u', b'0'] {
                    let mut l = line.to_vec();
                    l[pos] = b;
                    let _ = d.push(&l);
                }
            }
        }
        let _ = d.flush().unwrap();
    }

    #[test]
    fn record_before_operation_and_escaped_keys() {
        // Key order is not fixed: a record that comes before `collection` is decoded once it is known.
        let line = r#"{"kind":"commit","time_us":5,"did":"did:plc:x","commit":{"record":{"text":"caf\u00e9 \"q\"","langs":["pt"]},"rkey":"r","collection":"app.bsky.feed.post","operation":"create"}}"#;
        let p = decode_post(line.as_bytes()).unwrap().unwrap();
        assert_eq!(p.text, "café \"q\"");
        assert_eq!(p.langs, vec!["pt"]);
        let escaped_key = r#"{"did":"d","time_us":5,"kin\u0064":"identity"}"#;
        assert!(decode_post(escaped_key.as_bytes()).unwrap().is_none());
        // A like's record is not read as a post.
        let like = r#"{"did":"d","time_us":5,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.like","rkey":"r","record":{"text":5}}}"#;
        assert!(decode_post(like.as_bytes()).unwrap().is_none());
        for bad in [
            r#"{"did":"d","time_us":"5","kind":"commit"}"#,
            r#"{"did":"d","kind":"commit"}"#,
            r#"{"did":"d","time_us":5,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.post","rkey":"r","record":{"text":5}}}"#,
            r#"{"did":"d","time_us":5,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.post","rkey":"r","record":{"reply":{"parent":{}}}}}"#,
        ] {
            assert!(decode_post(bad.as_bytes()).is_err(), "{bad}");
        }
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

    /// Found by the fuzzer: a `time_us` past i64::MAX / 1000 overflowed (a panic in a debug
    /// build, a wrapped time in 1969 in a release build). It saturates instead, so the event
    /// counts as far ahead of the wall clock.
    #[test]
    fn huge_event_times_saturate() {
        for t in [i64::MAX, 1773339719009157119] {
            let line = format!(
                r#"{{"did":"did:plc:a","time_us":{t},"kind":"commit","commit":{{"operation":"create","collection":"app.bsky.feed.post","rkey":"r","record":{{"text":"hi"}}}}}}"#
            );
            let p = decode_post(line.as_bytes()).unwrap().unwrap();
            assert_eq!(p.event_time_ns, i64::MAX, "{t}");
        }
        let before_1970 = r#"{"did":"did:plc:a","time_us":-5,"kind":"commit","commit":{"operation":"create","collection":"app.bsky.feed.post","rkey":"r","record":{"text":"hi"}}}"#;
        assert!(decode_post(before_1970.as_bytes()).is_err());
    }
}
