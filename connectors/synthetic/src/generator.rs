//! The synthetic Jetstream firehose: deterministic, multi-language, Zipf-distributed words,
//! realistic post shapes, and planted bursts recorded in a ground truth.

use std::io::Write;

use serde::Serialize;

use crate::rng::{Rng, Zipf};
use crate::vocab::{Language, content_words, default_mix, function_words};

/// A planted burst: during `[start, start + duration)` the keyword appears in `intensity` times
/// as many posts (of its language) as it does otherwise. With `authors`, the extra posts all
/// come from that many accounts (a spammer: not a trend).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Burst {
    pub keyword: String,
    /// Offset from the stream's start, in nanoseconds.
    pub start_ns: i64,
    pub duration_ns: i64,
    pub intensity: f64,
    /// Vocabulary the keyword belongs to (`en`, `ja`, ...).
    pub lang: String,
    /// The accounts the burst's extra posts come from (`None`: any).
    pub authors: Option<usize>,
}

impl Burst {
    /// Parses `keyword:start:duration:intensity[:lang[:authors]]`, e.g. `eclipse:30m:10m:5`,
    /// `spam:30m:10m:20:en:1`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.trim().split(':').collect();
        if parts.len() < 4 || parts.len() > 6 || parts[0].is_empty() {
            return Err(format!(
                "burst '{spec}': expected keyword:start:duration:intensity[:lang[:authors]], e.g. eclipse:30m:10m:5"
            ));
        }
        let authors = match parts.get(5) {
            None => None,
            Some(a) => match a.parse::<usize>() {
                Ok(n) if n > 0 && n <= 10_000_000 => Some(n),
                _ => {
                    return Err(format!(
                        "burst '{spec}': authors must be a number of accounts from 1 to 10000000"
                    ));
                }
            },
        };
        let d = |s: &str| {
            skystream_engine::time::parse_duration(s)
                .map(|d| d.as_nanos() as i64)
                .map_err(|e| format!("burst '{spec}': {e}"))
        };
        let intensity: f64 = parts[3]
            .parse()
            .map_err(|_| format!("burst '{spec}': intensity must be a number"))?;
        if !(1.0..=1000.0).contains(&intensity) {
            return Err(format!(
                "burst '{spec}': intensity must be a number from 1 to 1000"
            ));
        }
        Ok(Burst {
            keyword: parts[0].to_lowercase(),
            start_ns: d(parts[1])?,
            duration_ns: d(parts[2])?,
            intensity,
            lang: parts.get(4).unwrap_or(&"en").to_string(),
            authors,
        })
    }
}

/// Settings of the generator.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Posts per second of event time.
    pub rate: f64,
    /// Event time of the first post (ns since the epoch).
    pub start_ns: i64,
    /// Stop after this much event time.
    pub duration_ns: Option<i64>,
    /// Stop after this many posts.
    pub count: Option<u64>,
    pub bursts: Vec<Burst>,
    /// Distinct authors (activity is Zipf-distributed among them).
    pub authors: usize,
    /// Event times are moved back by up to this much, so arrival order is not time order.
    pub out_of_order_ns: i64,
    /// Non-post events (likes, follows) per post, as a firehose carries.
    pub other_events: f64,
    /// Generated words per language beyond the real head words.
    pub tail_words: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rate: 30.0,
            start_ns: 1_783_166_400_000_000_000, // 2026-07-04T12:00:00Z
            duration_ns: None,
            count: None,
            bursts: Vec::new(),
            authors: 20_000,
            out_of_order_ns: 0,
            other_events: 0.0,
            tail_words: 20_000,
        }
    }
}

struct LangModel {
    lang: Language,
    words: Vec<String>,
    zipf: Zipf,
    function: Vec<&'static str>,
}

/// What the ground truth file records about a burst.
#[derive(Debug, Clone, Serialize)]
pub struct BurstTruth {
    pub keyword: String,
    pub lang: String,
    pub start: String,
    pub end: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub intensity: f64,
    /// Expected posts per minute containing the keyword outside the burst.
    pub baseline_per_min: f64,
    /// Expected posts per minute containing it during the burst.
    pub burst_per_min: f64,
    /// The accounts the burst's extra posts come from (absent: any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authors: Option<usize>,
}

/// Generates Jetstream v1 JSON events, one per call.
pub struct Generator {
    cfg: GeneratorConfig,
    rng: Rng,
    langs: Vec<LangModel>,
    lang_cdf: Vec<f64>,
    authors: Zipf,
    tags: Zipf,
    tag_words: Vec<String>,
    /// (burst, language model index, per-post baseline probability)
    bursts: Vec<(Burst, usize, f64)>,
    clock_ns: f64,
    posts: u64,
    seq: u64,
    pending_other: f64,
}

const MEAN_CONTENT_WORDS: f64 = 7.0;

impl GeneratorConfig {
    /// What [`Generator::new`] would refuse, without building the vocabularies (planning
    /// checks options with it; building takes a while).
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err("rate must be a positive number of posts per second".into());
        }
        let mix = default_mix();
        for b in &self.bursts {
            if !mix.iter().any(|l| l.vocab == b.lang && l.tag.is_some()) {
                return Err(format!(
                    "burst '{}': unknown language '{}'",
                    b.keyword, b.lang
                ));
            }
        }
        Ok(())
    }
}

impl Generator {
    pub fn new(cfg: GeneratorConfig) -> Result<Self, String> {
        cfg.check()?;
        let mut rng = Rng::new(cfg.seed);
        let mut langs: Vec<LangModel> = default_mix()
            .into_iter()
            .map(|lang| {
                let words = content_words(lang.vocab, cfg.tail_words, &mut rng);
                let zipf = Zipf::mandelbrot(words.len(), 1.07, 20.0);
                let function = function_words(lang.vocab);
                LangModel {
                    lang,
                    words,
                    zipf,
                    function,
                }
            })
            .collect();
        let mut acc = 0.0;
        let total: f64 = langs.iter().map(|l| l.lang.share).sum();
        let lang_cdf = langs
            .iter()
            .map(|l| {
                acc += l.lang.share / total;
                acc
            })
            .collect();
        let mut bursts = Vec::new();
        for b in &cfg.bursts {
            let li = langs
                .iter()
                .position(|l| l.lang.vocab == b.lang && l.lang.tag.is_some())
                .expect("checked: a burst's language is in the mix");
            // A keyword outside the vocabulary takes a mid-frequency rank, so it has a baseline.
            let m = &mut langs[li];
            let rank = match m.words.iter().position(|w| *w == b.keyword) {
                Some(r) => r,
                None => {
                    let r = 150.min(m.words.len() - 1);
                    m.words[r] = b.keyword.clone();
                    r
                }
            };
            let p = 1.0 - (1.0 - m.zipf.p(rank)).powf(MEAN_CONTENT_WORDS);
            bursts.push((b.clone(), li, p));
        }
        let tag_words: Vec<String> = {
            let mut r = Rng::new(cfg.seed ^ 0x7A6);
            let mut t: Vec<String> = [
                "art",
                "photography",
                "music",
                "news",
                "bookstodon",
                "gaming",
                "science",
                "politics",
                "nature",
                "caturday",
                "writing",
                "anime",
                "furry",
                "nba",
                "nfl",
                "f1",
                "blacksky",
                "vtuber",
                "indiedev",
                "gardening",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            t.extend(content_words("en", 300, &mut r).into_iter().skip(200));
            t
        };
        Ok(Self {
            authors: Zipf::new(cfg.authors.max(1), 1.0),
            tags: Zipf::new(tag_words.len(), 1.1),
            tag_words,
            rng,
            langs,
            lang_cdf,
            bursts,
            clock_ns: cfg.start_ns as f64,
            posts: 0,
            seq: 0,
            pending_other: 0.0,
            cfg,
        })
    }

    /// What was planted, for the ground-truth file.
    pub fn ground_truth(&self) -> Vec<BurstTruth> {
        let total: f64 = self.langs.iter().map(|l| l.lang.share).sum();
        self.bursts
            .iter()
            .map(|(b, _, p)| {
                let share: f64 = self
                    .langs
                    .iter()
                    .filter(|l| l.lang.vocab == b.lang)
                    .map(|l| l.lang.share)
                    .sum::<f64>()
                    / total;
                let base = self.cfg.rate * 60.0 * share * p;
                let start = self.cfg.start_ns + b.start_ns;
                BurstTruth {
                    keyword: b.keyword.clone(),
                    lang: b.lang.clone(),
                    start: skystream_engine::time::format_ns(start),
                    end: skystream_engine::time::format_ns(start + b.duration_ns),
                    start_ns: start,
                    end_ns: start + b.duration_ns,
                    intensity: b.intensity,
                    baseline_per_min: base,
                    burst_per_min: base * b.intensity,
                    authors: b.authors,
                }
            })
            .collect()
    }

    /// Event time the stream has reached.
    pub fn clock_ns(&self) -> i64 {
        self.clock_ns as i64
    }

    fn done(&self) -> bool {
        self.cfg.count.is_some_and(|c| self.posts >= c)
            || self
                .cfg
                .duration_ns
                .is_some_and(|d| self.clock_ns as i64 >= self.cfg.start_ns + d)
    }

    fn did(&self, author: usize) -> String {
        const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut x =
            (author as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.cfg.seed.rotate_left(17);
        let mut s = String::from("did:plc:");
        for _ in 0..24 {
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            s.push(B32[(x >> 59) as usize] as char);
        }
        s
    }

    fn rkey(&mut self) -> String {
        const B32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
        let mut v = (self.clock_ns as u64 / 1000) << 10 | (self.seq & 0x3ff);
        let mut s = [b'2'; 13];
        for c in s.iter_mut().rev() {
            *c = B32[(v & 31) as usize];
            v >>= 5;
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// Writes the next event (one JSON line, no newline) into `out`; returns its `time_us`, or
    /// `None` when the stream is over.
    pub fn next_event(&mut self, out: &mut Vec<u8>) -> Option<i64> {
        if self.done() {
            return None;
        }
        out.clear();
        self.seq += 1;
        if self.pending_other >= 1.0 {
            self.pending_other -= 1.0;
            return Some(self.write_like(out));
        }
        self.pending_other += self.cfg.other_events;
        self.clock_ns += self.rng.exp(1e9 / self.cfg.rate);
        self.posts += 1;
        Some(self.write_post(out))
    }

    fn time_us(&mut self) -> i64 {
        let jitter = if self.cfg.out_of_order_ns > 0 {
            (self.rng.f64() * self.cfg.out_of_order_ns as f64) as i64
        } else {
            0
        };
        (self.clock_ns as i64 - jitter) / 1000
    }

    fn write_like(&mut self, out: &mut Vec<u8>) -> i64 {
        let author = self.authors.sample(&mut self.rng);
        let did = self.did(author);
        let other = self.authors.sample(&mut self.rng);
        let subject = self.did(other);
        let rkey = self.rkey();
        let t = self.time_us();
        let _ = write!(
            out,
            r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rkey}","operation":"create","collection":"app.bsky.feed.like","rkey":"{rkey}","record":{{"$type":"app.bsky.feed.like","createdAt":"{}","subject":{{"cid":"bafyreisynthetic","uri":"at://{subject}/app.bsky.feed.post/{rkey}"}}}},"cid":"bafyreisynthetic{}"}}}}"#,
            skystream_engine::time::format_ns(t * 1000),
            self.seq
        );
        t
    }

    fn write_post(&mut self, out: &mut Vec<u8>) -> i64 {
        let u = self.rng.f64();
        let li = self
            .lang_cdf
            .partition_point(|&c| c < u)
            .min(self.langs.len() - 1);
        let author = self.authors.sample(&mut self.rng);
        let mut did = self.did(author);
        let rkey = self.rkey();
        let t = self.time_us();
        let now_rel = self.clock_ns as i64 - self.cfg.start_ns;

        // Words: content words from the language's Zipf vocabulary, mixed with function words.
        let m = &self.langs[li];
        let n_words = ((2.2 + 0.6 * self.rng.normal()).exp().round() as usize).clamp(1, 45);
        let cjk = matches!(m.lang.vocab, "ja");
        let mut text = String::with_capacity(n_words * 7);
        let mut planted: Vec<String> = Vec::new();
        let mut spammer = None;
        for (spammer_base, (b, bl, p)) in self.bursts.iter().enumerate() {
            if *bl == li || (self.langs[*bl].lang.vocab == m.lang.vocab) {
                let active = now_rel >= b.start_ns && now_rel < b.start_ns + b.duration_ns;
                if active && self.rng.chance(((b.intensity - 1.0) * p).min(1.0)) {
                    planted.push(b.keyword.clone());
                    if let Some(k) = b.authors {
                        // One of the burst's own accounts, outside the regular authors.
                        spammer = Some(
                            self.cfg.authors + 1_000_000 * (spammer_base + 1) + self.rng.below(k),
                        );
                    }
                }
            }
        }
        if let Some(a) = spammer {
            did = self.did(a);
        }
        let plant_at = if planted.is_empty() {
            usize::MAX
        } else {
            self.rng.below(n_words)
        };
        for i in 0..n_words {
            if i == plant_at {
                for w in &planted {
                    push_word(&mut text, w, cjk);
                }
            }
            let is_function = !m.function.is_empty() && self.rng.chance(0.45);
            if is_function {
                let f = m.function[self.rng.below(m.function.len())];
                push_word(&mut text, f, cjk);
            } else {
                let r = m.zipf.sample(&mut self.rng);
                let w = &m.words[r];
                if i == 0 && !cjk && self.rng.chance(0.5) {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        let cap: String = f.to_uppercase().chain(c).collect();
                        push_word(&mut text, &cap, cjk);
                        continue;
                    }
                }
                push_word(&mut text, w, cjk);
            }
        }
        if cjk {
            text.push('。');
        } else if self.rng.chance(0.3) {
            text.push(['!', '.', '?'][self.rng.below(3)]);
        }

        // Facets: hashtags, a mention, a link (byte offsets, as Bluesky records them).
        let mut facets: Vec<String> = Vec::new();
        let mut tags: Vec<String> = Vec::new();
        if self.rng.chance(0.08) {
            for _ in 0..1 + self.rng.below(2) {
                let tag = self.tag_words[self.tags.sample(&mut self.rng)].clone();
                text.push_str(" #");
                let start = text.len() - 1;
                text.push_str(&tag);
                facets.push(format!(
                    r#"{{"features":[{{"$type":"app.bsky.richtext.facet#tag","tag":{}}}],"index":{{"byteEnd":{},"byteStart":{start}}}}}"#,
                    json_str(&tag),
                    text.len()
                ));
                tags.push(tag);
            }
        }
        if self.rng.chance(0.10) {
            let other = self.authors.sample(&mut self.rng);
            let handle = format!("user{other}.bsky.social");
            text.push_str(" @");
            let start = text.len() - 1;
            text.push_str(&handle);
            facets.push(format!(
                r#"{{"features":[{{"$type":"app.bsky.richtext.facet#mention","did":"{}"}}],"index":{{"byteEnd":{},"byteStart":{start}}}}}"#,
                self.did(other),
                text.len()
            ));
        }
        let mut embed = String::new();
        if self.rng.chance(0.18) {
            let url = format!(
                "https://example.com/{}/{}",
                ["news", "blog", "watch", "p"][self.rng.below(4)],
                self.seq
            );
            text.push(' ');
            let start = text.len();
            text.push_str(&url);
            facets.push(format!(
                r#"{{"features":[{{"$type":"app.bsky.richtext.facet#link","uri":"{url}"}}],"index":{{"byteEnd":{},"byteStart":{start}}}}}"#,
                text.len()
            ));
            embed = format!(
                r#","embed":{{"$type":"app.bsky.embed.external","external":{{"description":"","title":"A link","uri":"{url}"}}}}"#
            );
        } else if self.rng.chance(0.17) {
            embed = r#","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":"bafkreisynthetic"},"mimeType":"image/jpeg","size":1000}}]}"#.to_string();
        }
        let mut reply = String::new();
        if self.rng.chance(0.42) {
            let a = self.authors.sample(&mut self.rng);
            let p = self.did(a);
            reply = format!(
                r#","reply":{{"parent":{{"cid":"bafyreiparent","uri":"at://{p}/app.bsky.feed.post/3kparent{}"}},"root":{{"cid":"bafyreiroot","uri":"at://{p}/app.bsky.feed.post/3kroot{}"}}}}"#,
                self.seq % 9973,
                self.seq % 7919
            );
        }
        let langs = match m.lang.tag {
            Some(tag) => format!(r#","langs":["{tag}"]"#),
            None => String::new(),
        };
        let facets = if facets.is_empty() {
            String::new()
        } else {
            format!(r#","facets":[{}]"#, facets.join(","))
        };
        let _ = write!(
            out,
            r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"{rkey}","operation":"create","collection":"app.bsky.feed.post","rkey":"{rkey}","record":{{"$type":"app.bsky.feed.post","createdAt":"{}"{embed}{facets}{langs}{reply},"text":{}}},"cid":"bafyreisynthetic{}"}}}}"#,
            skystream_engine::time::format_ns(t * 1000),
            json_str(&text),
            self.seq
        );
        t
    }
}

fn push_word(text: &mut String, w: &str, cjk: bool) {
    if !cjk && !text.is_empty() {
        text.push(' ');
    }
    text.push_str(w);
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_lines(cfg: GeneratorConfig, n: usize) -> Vec<String> {
        let mut g = Generator::new(cfg).unwrap();
        let mut out = Vec::new();
        let mut v = Vec::new();
        for _ in 0..n {
            g.next_event(&mut out).unwrap();
            v.push(String::from_utf8(out.clone()).unwrap());
        }
        v
    }

    #[test]
    fn same_seed_same_stream() {
        let a = gen_lines(GeneratorConfig::default(), 200);
        let b = gen_lines(GeneratorConfig::default(), 200);
        assert_eq!(a, b);
        let c = gen_lines(
            GeneratorConfig {
                seed: 43,
                ..Default::default()
            },
            200,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn events_are_valid_jetstream_posts() {
        for line in gen_lines(
            GeneratorConfig {
                other_events: 0.5,
                ..Default::default()
            },
            500,
        ) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["kind"], "commit");
            if v["commit"]["collection"] == "app.bsky.feed.post" {
                let text = v["commit"]["record"]["text"].as_str().unwrap();
                assert!(!text.is_empty());
                for f in v["commit"]["record"]["facets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let s = f["index"]["byteStart"].as_u64().unwrap() as usize;
                    let e = f["index"]["byteEnd"].as_u64().unwrap() as usize;
                    assert!(text.is_char_boundary(s) && text.is_char_boundary(e) && s < e);
                }
            }
        }
    }

    #[test]
    fn language_mix_and_post_length_are_realistic() {
        let lines = gen_lines(GeneratorConfig::default(), 5000);
        let en = lines
            .iter()
            .filter(|l| l.contains(r#""langs":["en"]"#))
            .count() as f64
            / 5000.0;
        let ja = lines
            .iter()
            .filter(|l| l.contains(r#""langs":["ja"]"#))
            .count() as f64
            / 5000.0;
        assert!((0.55..0.67).contains(&en), "en share {en}");
        assert!((0.09..0.16).contains(&ja), "ja share {ja}");
        let mean_len: f64 = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["commit"]["record"]["text"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .count() as f64
            })
            .sum::<f64>()
            / 5000.0;
        assert!(
            (30.0..160.0).contains(&mean_len),
            "mean text length {mean_len}"
        );
    }

    #[test]
    fn bursts_multiply_a_keywords_rate() {
        let burst = Burst::parse("eclipse:10m:10m:6").unwrap();
        let cfg = GeneratorConfig {
            rate: 50.0,
            duration_ns: Some(30 * 60 * 1_000_000_000),
            bursts: vec![burst],
            ..Default::default()
        };
        let start = cfg.start_ns;
        let mut g = Generator::new(cfg).unwrap();
        let truth = g.ground_truth();
        assert_eq!(truth[0].keyword, "eclipse");
        let mut out = Vec::new();
        let (mut inside, mut outside) = (0usize, 0usize);
        while let Some(t) = g.next_event(&mut out) {
            if String::from_utf8_lossy(&out)
                .to_lowercase()
                .contains("eclipse")
            {
                let rel = t * 1000 - start;
                if (600_000_000_000..1_200_000_000_000).contains(&rel) {
                    inside += 1
                } else {
                    outside += 1
                }
            }
        }
        // 10 minutes inside vs 20 minutes outside: per-minute rate should rise about 6x.
        let ratio = (inside as f64 / 10.0) / (outside as f64 / 20.0).max(0.1);
        assert!(
            ratio > 3.5 && ratio < 10.0,
            "inside {inside} outside {outside} ratio {ratio}"
        );
    }

    #[test]
    fn burst_spec_errors() {
        assert!(Burst::parse("x:1m").is_err());
        assert!(Burst::parse("x:1m:1m:0.5").is_err());
        assert!(Burst::parse("x:1q:1m:2").is_err());
    }
}
