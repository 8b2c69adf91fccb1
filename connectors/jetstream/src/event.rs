//! The envelope of a Jetstream event: who, when, what kind — read without decoding the record.
//! Used by the client (cursor, de-duplication, filters), the local server and `ingest`.

use crate::json::Reader;

/// An event's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Identity,
    Account,
}

/// A commit's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// The fields of an event that route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub did: String,
    pub time_us: i64,
    pub kind: Kind,
    /// Commits only.
    pub operation: Option<Operation>,
    pub collection: Option<String>,
    pub rkey: Option<String>,
}

impl Envelope {
    /// Reads the envelope of one event. Errors name what is wrong; unknown kinds and
    /// operations are errors too (a client counts and skips them).
    pub fn parse(event: &[u8]) -> Result<Envelope, String> {
        let mut r = Reader::new(event);
        let (mut did, mut time_us, mut kind) = (None, None, None);
        let (mut operation, mut collection, mut rkey) = (None, None, None);
        r.object(|r, k| {
            match k {
                b"did" => did = Some(r.string()?.into_owned()),
                b"time_us" => time_us = Some(r.i64()?),
                b"kind" => kind = Some(r.string()?.into_owned()),
                b"commit" => {
                    if !r.null()? {
                        r.object(|r, k| {
                            match k {
                                b"operation" => operation = Some(r.string()?.into_owned()),
                                b"collection" => collection = Some(r.string()?.into_owned()),
                                b"rkey" => rkey = Some(r.string()?.into_owned()),
                                _ => r.skip()?,
                            }
                            Ok(())
                        })?;
                    }
                }
                _ => r.skip()?,
            }
            Ok(())
        })
        .and_then(|_| r.end())
        .map_err(|e| e.to_string())?;
        let did = did.ok_or("missing field 'did'")?;
        let time_us = time_us.ok_or("missing field 'time_us'")?;
        let kind = match kind.as_deref() {
            Some("commit") => Kind::Commit,
            Some("identity") => Kind::Identity,
            Some("account") => Kind::Account,
            Some(other) => return Err(format!("unknown event kind '{other}'")),
            None => return Err("missing field 'kind'".into()),
        };
        let operation = match (kind, operation.as_deref()) {
            (Kind::Commit, Some("create")) => Some(Operation::Create),
            (Kind::Commit, Some("update")) => Some(Operation::Update),
            (Kind::Commit, Some("delete")) => Some(Operation::Delete),
            (Kind::Commit, Some(other)) => {
                return Err(format!("unknown commit operation '{other}'"));
            }
            (Kind::Commit, None) => return Err("commit without 'operation'".into()),
            _ => None,
        };
        if kind == Kind::Commit && collection.is_none() {
            return Err("commit without 'collection'".into());
        }
        Ok(Envelope {
            did,
            time_us,
            kind,
            operation,
            collection,
            rkey,
        })
    }

    /// Whether the event passes a `wantedCollections` filter (exact NSIDs or `prefix.*`);
    /// identity and account events always pass, as on Jetstream.
    pub fn wanted_collection(&self, wanted: &[String]) -> bool {
        if wanted.is_empty() || self.kind != Kind::Commit {
            return true;
        }
        let c = self.collection.as_deref().unwrap_or("");
        wanted.iter().any(|w| match w.strip_suffix(".*") {
            Some(prefix) => c.starts_with(prefix) && c[prefix.len()..].starts_with('.'),
            None => c == w,
        })
    }

    /// Whether the event passes a `wantedDids` filter.
    pub fn wanted_did(&self, wanted: &[String]) -> bool {
        wanted.is_empty() || wanted.iter().any(|d| d == &self.did)
    }

    /// Whether this is the deletion of a post.
    pub fn is_post_delete(&self) -> bool {
        self.operation == Some(Operation::Delete)
            && self.collection.as_deref() == Some(crate::decode::POST_COLLECTION)
    }

    /// An identity of the event within its microsecond, for de-duplicating a replayed overlap.
    pub fn identity(&self) -> (String, Option<String>, Option<String>) {
        (self.did.clone(), self.collection.clone(), self.rkey.clone())
    }
}

/// Checks an NSID pattern as Jetstream does for `wantedCollections`: dot-separated segments of
/// letters, digits and hyphens (at least three segments), optionally ending in `.*`.
pub fn valid_collection_pattern(p: &str) -> bool {
    let body = p.strip_suffix(".*").unwrap_or(p);
    let segs: Vec<&str> = body.split('.').collect();
    let min = if p.ends_with(".*") { 1 } else { 3 };
    segs.len() >= min
        && segs
            .iter()
            .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_of_recorded_events() {
        let data = include_str!("../../../testdata/jetstream/golden_v1.jsonl");
        let mut kinds = std::collections::BTreeMap::new();
        for line in data.lines().filter(|l| !l.trim().is_empty()) {
            let e = Envelope::parse(line.as_bytes()).unwrap();
            assert!(e.time_us > 1_600_000_000_000_000);
            *kinds.entry(format!("{:?}", e.kind)).or_insert(0) += 1;
        }
        assert!(kinds.len() >= 2, "{kinds:?}");
    }

    #[test]
    fn filters() {
        let e = Envelope::parse(
            br#"{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{"operation":"delete","collection":"app.bsky.feed.post","rkey":"x"}}"#,
        )
        .unwrap();
        assert!(e.is_post_delete());
        assert!(e.wanted_collection(&["app.bsky.feed.post".into()]));
        assert!(e.wanted_collection(&["app.bsky.*".into()]));
        assert!(!e.wanted_collection(&["app.bsky.feed.like".into()]));
        assert!(!e.wanted_collection(&["app.bsk.*".into()]));
        assert!(e.wanted_did(&[]) && !e.wanted_did(&["did:plc:b".into()]));
        let id =
            Envelope::parse(br#"{"did":"did:plc:a","time_us":6,"kind":"identity","identity":{}}"#)
                .unwrap();
        assert!(id.wanted_collection(&["app.bsky.feed.like".into()]));
        assert!(Envelope::parse(br#"{"did":"d","time_us":1,"kind":"weird"}"#).is_err());
        assert!(Envelope::parse(br#"{"did":"d","kind":"commit"}"#).is_err());
        assert!(Envelope::parse(b"{\"did\":\"d\"").is_err());
        assert!(valid_collection_pattern("app.bsky.feed.post"));
        assert!(valid_collection_pattern("app.bsky.*"));
        assert!(!valid_collection_pattern("app bsky"));
        assert!(!valid_collection_pattern("post"));
    }
}
