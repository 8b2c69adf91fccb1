//! Keyword extraction for trend queries: the tokenizer behind the `keywords()` and
//! `hashtags()` SQL functions.
//!
//! * URLs (`https://…`, `www.…`, `host.tld/path`) and mentions (`@handle`) are removed.
//! * Words follow Unicode word segmentation (UAX #29), lowercased; a trailing possessive
//!   `'s` is dropped; numbers and one-letter Latin words are dropped.
//! * Han (Chinese/Japanese kanji) runs become overlapping character bigrams (a lone character
//!   stays a unigram), Katakana runs stay whole, Hiragana-only runs (mostly grammar) are
//!   dropped; Hangul words stay whole. CJK text is never split into bytes.
//! * Stopwords are removed for en, pt, es, de, fr, ja and ko (and a few more common ones).

use std::sync::LazyLock;

use hashbrown::HashMap;
use skystream_model::normalize_hashtag;
use unicode_segmentation::UnicodeSegmentation;

mod stopwords;

/// Languages with a stopword list.
pub const STOPWORD_LANGS: &[&str] = &["en", "pt", "es", "de", "fr", "it", "nl", "ja", "ko"];

/// Every stopword, with the languages (bits of [`STOPWORD_LANGS`]) whose list holds it, and
/// a filter that answers most words that are not stopwords without hashing them.
struct StopwordSet {
    words: HashMap<&'static str, u32>,
    /// One bit per [`filter_slot`], set for every stopword's.
    filter: Vec<u64>,
}

static STOPWORDS: LazyLock<StopwordSet> = LazyLock::new(|| {
    let mut set = StopwordSet {
        words: HashMap::new(),
        filter: vec![0u64; FILTER_SLOTS / 64],
    };
    for (lang, list) in stopwords::LISTS {
        let bit = lang_bit(lang);
        for w in list.split_whitespace() {
            *set.words.entry(w).or_default() |= bit;
            let slot = filter_slot(w.as_bytes());
            set.filter[slot / 64] |= 1 << (slot % 64);
        }
    }
    set
});

impl StopwordSet {
    /// False for most words that are not stopwords; true for every stopword.
    #[inline]
    fn may_hold(&self, w: &str) -> bool {
        let slot = filter_slot(w.as_bytes());
        self.filter[slot / 64] & (1 << (slot % 64)) != 0
    }
}

/// Slots of the stopword filter: 8 KiB, a few per cent of them set.
const FILTER_SLOTS: usize = 1 << 16;

/// A word's slot in the stopword filter, from its length and first eight bytes.
#[inline]
fn filter_slot(w: &[u8]) -> usize {
    let mut x = w.len() as u64;
    for (i, &c) in w.iter().take(8).enumerate() {
        x ^= u64::from(c) << (8 * i);
    }
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 16)) as usize
}

fn lang_bit(primary: &str) -> u32 {
    STOPWORD_LANGS
        .iter()
        .position(|l| *l == primary)
        .map_or(0, |i| 1 << i)
}

/// Which stopword lists apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopwords(u32);

impl Stopwords {
    /// Every list (when a post's languages are unknown).
    pub const ALL: Stopwords = Stopwords(u32::MAX);

    /// English plus the lists of these BCP-47 tags (`pt-BR` uses `pt`).
    pub fn for_langs<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        Stopwords(
            tags.into_iter()
                .fold(lang_bit("en"), |m, t| m | lang_bit(primary(t))),
        )
    }

    fn contains(self, w: &str) -> bool {
        let set = &*STOPWORDS;
        set.may_hold(w) && set.words.get(w).is_some_and(|langs| langs & self.0 != 0)
    }
}

fn primary(tag: &str) -> &str {
    tag.split(['-', '_']).next().unwrap_or(tag)
}

/// Whether a whitespace-separated chunk is a URL or a mention (removed whole).
fn is_url_or_mention(chunk: &str) -> bool {
    let b = chunk.as_bytes();
    if b.first() == Some(&b'@') || b.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"www.")) {
        return true;
    }
    // Every other URL form holds a '/'. Most chunks are a word of a few bytes: core's inlined
    // search costs less there than setting up the `memchr` crate's vectorised one.
    if !b.contains(&b'/') {
        return false;
    }
    chunk.contains("://")
        || chunk.split('/').next().is_some_and(|host| {
            host.contains('.')
                && host.rsplit('.').next().is_some_and(|tld| {
                    tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
                })
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Han,
    Hiragana,
    Katakana,
    Other,
}

fn script(c: char) -> Script {
    match c as u32 {
        0x3040..=0x309F => Script::Hiragana,
        0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Katakana,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => Script::Han,
        _ => Script::Other,
    }
}

/// Letters of the CJK blocks that are all letters (ideographs, kana), answered without the
/// Unicode tables: `char::is_alphanumeric` searches them for every character of CJK text.
fn is_cjk_letter(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3041..=0x3096 | 0x30A1..=0x30FA)
}

/// Calls `emit` with each keyword of `text`, in order (duplicates included).
pub fn for_each_keyword(text: &str, stop: Stopwords, emit: impl FnMut(&str)) {
    for_each_keyword_with(text, stop, &mut String::new(), emit);
}

/// [`for_each_keyword`] with a word buffer kept from call to call (one allocation per batch
/// of texts, not one per text).
pub fn for_each_keyword_with(
    text: &str,
    stop: Stopwords,
    buf: &mut String,
    mut emit: impl FnMut(&str),
) {
    if text.is_ascii() {
        for chunk in text.split_ascii_whitespace() {
            if !is_url_or_mention(chunk) {
                ascii_words(chunk, stop, buf, &mut emit);
            }
        }
        return;
    }
    for chunk in text.split_whitespace() {
        if is_url_or_mention(chunk) {
            continue;
        }
        if chunk.is_ascii() {
            ascii_words(chunk, stop, buf, &mut emit);
        } else if chunk.chars().any(|c| script(c) != Script::Other) {
            // UAX #29 would cut Han text into single characters: split on punctuation only and
            // let `unicode_word` form script runs and bigrams.
            for piece in chunk.split(|c: char| {
                !(is_cjk_letter(c) || c.is_alphanumeric() || c == '\'' || c == '_')
            }) {
                if !piece.is_empty() {
                    unicode_word(piece, stop, buf, &mut emit);
                }
            }
        } else {
            for word in chunk.unicode_words() {
                unicode_word(word, stop, buf, &mut emit);
            }
        }
    }
}

/// Words of an ASCII chunk: runs of letters, digits, `'` and `_`, trimmed of `'`/`_`; numbers
/// and one-letter words dropped; lowercased; possessive `'s` removed.
fn ascii_words(chunk: &str, stop: Stopwords, buf: &mut String, emit: &mut impl FnMut(&str)) {
    let b = chunk.as_bytes();
    // The usual chunk is one lowercase word: nothing to trim, lowercase or strip.
    if b.len() >= 2 && b.iter().all(u8::is_ascii_lowercase) {
        if !stop.contains(chunk) {
            emit(chunk);
        }
        return;
    }
    let word_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'\'' || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if !word_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && word_byte(b[i]) {
            i += 1;
        }
        // Trimmed of `'` and `_` (ASCII, so byte positions are character boundaries).
        let (mut a, mut z) = (start, i);
        while a < z && matches!(b[a], b'\'' | b'_') {
            a += 1;
        }
        while z > a && matches!(b[z - 1], b'\'' | b'_') {
            z -= 1;
        }
        let w = &chunk[a..z];
        if w.len() < 2 || w.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        // Most words are lowercase already: they are emitted where they lie, uncopied.
        let w = if w.bytes().any(|c| c.is_ascii_uppercase()) {
            buf.clear();
            buf.push_str(w);
            buf.make_ascii_lowercase();
            buf.as_str()
        } else {
            w
        };
        let w = match w.strip_suffix("'s") {
            Some(stem) if w.len() > 3 => stem,
            _ => w,
        };
        if !stop.contains(w) {
            emit(w);
        }
    }
}

fn finish_word(buf: &mut String, stop: Stopwords, emit: &mut impl FnMut(&str)) {
    for suffix in ["'s", "\u{2019}s"] {
        if buf.len() > suffix.len() + 1 && buf.ends_with(suffix) {
            buf.truncate(buf.len() - suffix.len());
        }
    }
    if buf.chars().count() < 2
        && buf
            .chars()
            .all(|c| c.is_ascii() || script(c) == Script::Other)
    {
        return;
    }
    if !stop.contains(buf) {
        emit(buf);
    }
}

fn unicode_word(word: &str, stop: Stopwords, buf: &mut String, emit: &mut impl FnMut(&str)) {
    if word.chars().all(|c| c.is_numeric()) {
        return;
    }
    let has_cjk = word.chars().any(|c| script(c) != Script::Other);
    if !has_cjk {
        buf.clear();
        for c in word.chars() {
            buf.extend(c.to_lowercase());
        }
        finish_word(buf, stop, emit);
        return;
    }
    // Split into script runs.
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let s = script(chars[i]);
        let mut j = i + 1;
        while j < chars.len() && script(chars[j]) == s {
            j += 1;
        }
        let run = &chars[i..j];
        match s {
            Script::Han => {
                if run.len() == 1 {
                    emit_chars(run, stop, buf, emit);
                } else {
                    for pair in run.windows(2) {
                        emit_chars(pair, stop, buf, emit);
                    }
                }
            }
            Script::Katakana => {
                if run.len() >= 2 {
                    emit_chars(run, stop, buf, emit);
                }
            }
            Script::Hiragana => {}
            Script::Other => {
                buf.clear();
                for c in run {
                    buf.extend(c.to_lowercase());
                }
                finish_word(buf, stop, emit);
            }
        }
        i = j;
    }
}

fn emit_chars(chars: &[char], stop: Stopwords, buf: &mut String, emit: &mut impl FnMut(&str)) {
    buf.clear();
    buf.extend(chars);
    if !stop.contains(buf) {
        emit(buf);
    }
}

/// The keywords of `text`, deduplicated within the text, in first-seen order.
pub fn keywords(text: &str, stop: Stopwords) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for_each_keyword(text, stop, |w| {
        if !out.iter().any(|o| o == w) {
            out.push(w.to_string());
        }
    });
    out
}

/// Calls `emit` with each `#hashtag` written in `text`, normalised.
pub fn for_each_hashtag(text: &str, mut emit: impl FnMut(&str)) {
    let mut rest = text;
    while let Some(pos) = rest.find(['#', '＃']) {
        let before = rest[..pos].chars().next_back();
        let hash_len = rest[pos..].chars().next().map(char::len_utf8).unwrap_or(1);
        let after = &rest[pos + hash_len..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let tag = &after[..end];
        // A tag starts a word: "a#b" is not a hashtag.
        if before.is_none_or(|c| !c.is_alphanumeric())
            && let Some(t) = normalize_hashtag(tag)
        {
            emit(&t);
        }
        rest = &after[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(t: &str) -> Vec<String> {
        keywords(t, Stopwords::ALL)
    }

    #[test]
    fn cjk_letters_are_alphanumeric() {
        // The shortcut must not change which characters split a chunk.
        let all = (0..=0x10FFFFu32).filter_map(char::from_u32);
        for c in all.filter(|&c| is_cjk_letter(c)) {
            assert!(c.is_alphanumeric(), "{c:?} (U+{:04X})", c as u32);
        }
    }

    #[test]
    fn english_stopwords_urls_and_mentions_go() {
        assert_eq!(
            kw(
                "The Eclipse is AMAZING today!! see https://x.com/a and @bob.bsky.social www.foo.com youtube.com/watch?v=1"
            ),
            vec!["eclipse", "amazing", "today"]
        );
        assert_eq!(kw("lol the good morning"), Vec::<String>::new());
    }

    #[test]
    fn possessives_numbers_and_single_letters() {
        assert_eq!(kw("Taylor's 2026 tour: a b c"), vec!["taylor", "tour"]);
    }

    #[test]
    fn other_languages() {
        assert_eq!(
            kw("O jogo de hoje foi incrível"),
            vec!["jogo", "hoje", "incrível"]
        );
        assert_eq!(
            kw("Die Regierung und der Kanzler"),
            vec!["regierung", "kanzler"]
        );
        assert_eq!(
            kw("Élection présidentielle"),
            vec!["élection", "présidentielle"]
        );
    }

    #[test]
    fn cjk_is_not_split_into_bytes() {
        // Kanji runs become bigrams, katakana stays whole, hiragana grammar is dropped.
        let k = kw("今日は地震がありました。トランプ大統領");
        assert!(k.contains(&"地震".to_string()), "{k:?}");
        assert!(k.contains(&"トランプ".to_string()), "{k:?}");
        assert!(
            k.contains(&"大統".to_string()) && k.contains(&"統領".to_string()),
            "{k:?}"
        );
        assert!(k.iter().all(|w| !w.is_empty() && w.chars().count() >= 1));
        // Korean words stay whole; common particles-only words are stopwords.
        let k = kw("오늘 날씨 정말 좋다");
        assert!(k.contains(&"날씨".to_string()), "{k:?}");
    }

    /// The filter in front of the stopword map lets every stopword through (to the map), and
    /// stops most other words before it.
    #[test]
    fn stopword_filter_keeps_every_stopword() {
        for (lang, list) in stopwords::LISTS {
            for w in list.split_whitespace() {
                assert!(Stopwords::ALL.contains(w), "{w}");
                assert!(Stopwords::for_langs([*lang]).contains(w), "{lang}: {w}");
            }
        }
        let passed = (0..10_000)
            .map(|i| format!("zq{i}x"))
            .filter(|w| STOPWORDS.may_hold(w))
            .count();
        assert!(
            passed < 1_000,
            "{passed} of 10000 non-stopwords passed the filter"
        );
    }

    #[test]
    fn language_specific_stopwords() {
        // "die" is a German stopword but an English word.
        assert_eq!(
            keywords("plants die", Stopwords::for_langs(["en"])),
            vec!["plants", "die"]
        );
        assert_eq!(
            keywords("plants die", Stopwords::for_langs(["de-DE"])),
            vec!["plants"]
        );
    }

    /// The words of an ASCII chunk as the rule says, the plain way: every word copied,
    /// trimmed with `trim_matches`, lowercased, then stripped of `'s`.
    fn plain_ascii_words(chunk: &str, stop: Stopwords) -> Vec<String> {
        let word_byte = |c: char| c.is_ascii_alphanumeric() || c == '\'' || c == '_';
        let mut out = Vec::new();
        for w in chunk.split(|c| !word_byte(c)) {
            let w = w.trim_matches(|c| c == '\'' || c == '_');
            if w.len() < 2 || w.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let mut w = w.to_ascii_lowercase();
            if w.len() > 3 && w.ends_with("'s") {
                w.truncate(w.len() - 2);
            }
            if !stop.contains(&w) {
                out.push(w);
            }
        }
        out
    }

    /// The tokenizer's ASCII path (words emitted uncopied when lowercase, trimmed by bytes,
    /// one buffer for every text) gives the words of the plain rule, over random chunks of
    /// letters of both cases, digits, quotes, underscores, slashes and punctuation.
    #[test]
    fn ascii_words_match_the_plain_rule() {
        let alphabet = b"aAbsSzZ09'_/.-!:@'sSthe";
        let mut seed = 11u64;
        let mut buf = String::new();
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            let chunk: String = (0..len)
                .map(|k| {
                    let r = seed.rotate_left(7 * k as u32 + 3) >> 40;
                    alphabet[r as usize % alphabet.len()] as char
                })
                .collect();
            for stop in [Stopwords::ALL, Stopwords::for_langs(["de"])] {
                let mut got = Vec::new();
                ascii_words(&chunk, stop, &mut buf, &mut |w: &str| {
                    got.push(w.to_string())
                });
                assert_eq!(got, plain_ascii_words(&chunk, stop), "{chunk:?}");
            }
        }
        assert_eq!(
            kw("Taylor's __Big__ 'quote' SHOUT's it's x_y"),
            vec!["taylor", "big", "quote", "shout", "x_y"]
        );
    }

    #[test]
    fn hashtags_in_text() {
        let mut tags = Vec::new();
        for_each_hashtag(
            "Go #Eclipse2026 and #日食! not a#b nor #123 #under_score",
            |t| tags.push(t.to_string()),
        );
        assert_eq!(tags, vec!["eclipse2026", "日食", "under_score"]);
    }
}
