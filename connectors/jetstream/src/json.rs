//! A small pull reader for JSON objects, made for decoding a few fields out of large events.
//!
//! The Jetstream decoder reads a handful of fields of each event and steps over the rest. A
//! general deserializer builds or validates everything it passes; this reader finds the fields
//! asked for and skips other values structurally (strings with `memchr`, nested containers in
//! one loop over a stack of bits), so an event costs about one pass over its bytes.
//!
//! What it checks: the JSON structure of the whole text (objects, arrays, strings, numbers,
//! literals, nothing after the top-level value), and, for every string it returns, UTF-8
//! validity, escapes (`\uXXXX` with surrogate pairs) and the absence of raw control characters.
//! Strings it skips are checked for structure only.

use std::borrow::Cow;

/// Deepest nesting accepted (deeper input is rejected rather than risking the stack).
const MAX_DEPTH: usize = 64;
// `skip` keeps one bit per open container in a u64.
const _: () = assert!(MAX_DEPTH <= 64);

/// Why a text is not what the decoder expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    /// Byte offset where the problem was found.
    pub offset: usize,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

pub type Result<T> = std::result::Result<T, JsonError>;

/// A cursor over one JSON text.
pub struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }

    pub fn err<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(JsonError {
            message: message.into(),
            offset: self.i,
        })
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Result<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.expected(c)
        }
    }

    #[cold]
    fn expected(&self, c: u8) -> Result<()> {
        match self.b.get(self.i) {
            Some(&got) => self.err(format!(
                "expected '{}', found '{}'",
                c as char,
                (got as char).escape_default()
            )),
            None => self.err(format!("expected '{}', found the end", c as char)),
        }
    }

    /// Whether the next value is `null` (consumed if so).
    #[inline]
    pub fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// The raw bytes of the string starting here (after its opening quote is consumed), and
    /// whether it holds escapes.
    #[inline(always)]
    fn raw_string(&mut self) -> Result<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        // Most keys and many values end within a few bytes: eight at a time over the first
        // 32 costs less than setting up a vectorised search. This part is inlined where
        // strings are read; the rest is a call of its own.
        let b = self.b;
        let near = (start + 32).min(b.len());
        let mut j = start;
        while j + 8 <= near {
            let w = word(&b[j..j + 8]);
            let quote = has_byte(w, b'"');
            let m = quote | has_byte(w, b'\\');
            if m != 0 {
                // The lowest flag is exact; when it is also a quote flag, it is the quote's
                // lowest, so exact too.
                let lowest = m & m.wrapping_neg();
                if quote & lowest != 0 {
                    let k = j + (lowest.trailing_zeros() / 8) as usize;
                    self.i = k + 1;
                    return Ok((&b[start..k], false));
                }
                break;
            }
            j += 8;
        }
        self.raw_string_rest(start, j)
    }

    /// [`raw_string`](Self::raw_string) past its first bytes: `start` is the string's first
    /// byte, `from` where the search goes on (no quote or backslash before it).
    #[inline(never)]
    fn raw_string_rest(&mut self, start: usize, from: usize) -> Result<(&'a [u8], bool)> {
        self.i = from;
        let mut escaped = false;
        loop {
            let Some(k) = memchr::memchr2(b'"', b'\\', &self.b[self.i..]) else {
                self.i = self.b.len();
                return self.err("unterminated string");
            };
            self.i += k;
            if self.b[self.i] == b'"' {
                let s = &self.b[start..self.i];
                self.i += 1;
                return Ok((s, escaped));
            }
            escaped = true;
            // A backslash and the character it escapes.
            self.i += 2;
            if self.i > self.b.len() {
                return self.err("unterminated string");
            }
        }
    }

    /// A string value.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        let at = self.i;
        let (raw, escaped) = self.raw_string()?;
        if !escaped {
            if has_control(raw) {
                return Err(JsonError {
                    message: "control character in string".into(),
                    offset: at,
                });
            }
            return std::str::from_utf8(raw)
                .map(Cow::Borrowed)
                .map_err(|e| JsonError {
                    message: format!("invalid UTF-8 in string: {e}"),
                    offset: at,
                });
        }
        unescape(raw).map(Cow::Owned).map_err(|m| JsonError {
            message: m,
            offset: at,
        })
    }

    /// A string value, or `None` for `null`.
    pub fn opt_string(&mut self) -> Result<Option<Cow<'a, str>>> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// An integer value (no fraction or exponent).
    pub fn i64(&mut self) -> Result<i64> {
        self.ws();
        let start = self.i;
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let digits = self.i;
        // Summed below zero, so that i64::MIN fits; None once it overflows.
        let mut sum = Some(0i64);
        while let Some(&c) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
            sum = sum.and_then(|s| s.checked_mul(10)?.checked_sub(i64::from(c - b'0')));
            self.i += 1;
        }
        let value = match sum {
            _ if self.i == digits => None,
            Some(s) if negative => Some(s),
            Some(s) => s.checked_neg(),
            None => None,
        };
        match (value, self.b.get(self.i)) {
            (Some(v), next) if !matches!(next, Some(b'.' | b'e' | b'E')) => Ok(v),
            _ => {
                self.i = start;
                self.err("expected an integer")
            }
        }
    }

    /// Calls `field` with each key of the object starting here; `field` must read or
    /// [`skip`](Self::skip) the key's value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Result<()>) -> Result<()> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            field(self, &key)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}' in an object"),
            }
        }
    }

    /// Calls `item` for each element of the array starting here (or nothing for `null`);
    /// `item` must read or skip the element.
    pub fn array(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.null()? {
            return Ok(());
        }
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or ']' in an array"),
            }
        }
    }

    /// Skips one value of any kind, checking its structure. Containers are walked with an
    /// explicit stack (a bit per level: object or array), not by recursion through
    /// [`object`](Self::object) and [`array`](Self::array): a skipped embed, reply or facet
    /// list (most of a post's bytes) is one loop with the string scan inlined in it.
    pub fn skip(&mut self) -> Result<()> {
        // Bit d is set when the container d levels down is an object.
        let mut objects: u64 = 0;
        let mut depth: usize = 0;
        loop {
            // A value starts here.
            match self.peek() {
                Some(b'"') => {
                    self.raw_string()?;
                }
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    let object = open == b'{';
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.i += 1;
                    } else {
                        // A container holding something may not sit MAX_DEPTH levels down.
                        if depth >= MAX_DEPTH {
                            return self.err("nested too deeply");
                        }
                        objects = (objects & !(1 << depth)) | (u64::from(object) << depth);
                        depth += 1;
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return self.err("expected a value"),
                None => return self.err("unexpected end of input"),
            }
            // A value ended: close the containers it ends, or go on to the next element.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = objects >> (depth - 1) & 1 == 1;
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.i += 1;
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        depth -= 1;
                    }
                    (_, true) => return self.err("expected ',' or '}' in an object"),
                    (_, false) => return self.err("expected ',' or ']' in an array"),
                }
            }
        }
    }

    /// An object's key (its escapes decoded: a copy only then) and the colon after it.
    /// Inlined: every key of an event passes here.
    #[inline(always)]
    fn key(&mut self) -> Result<Cow<'a, [u8]>> {
        let at = self.i;
        let (raw, escaped) = self.raw_string()?;
        let key = if escaped {
            let text = unescape(raw).map_err(|m| JsonError {
                message: m,
                offset: at,
            })?;
            Cow::Owned(text.into_bytes())
        } else {
            Cow::Borrowed(raw)
        };
        self.eat(b':')?;
        Ok(key)
    }

    /// Skips one value and returns the bytes it spans.
    pub fn capture(&mut self) -> Result<&'a [u8]> {
        self.ws();
        let start = self.i;
        self.skip()?;
        Ok(&self.b[start..self.i])
    }

    /// Steps over a number, checking JSON's grammar:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<()> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let ok = match b.get(i) {
            Some(b'0') => {
                i += 1;
                true
            }
            Some(b'1'..=b'9') => digits(&mut i),
            _ => false,
        } && (b.get(i) != Some(&b'.') || {
            i += 1;
            digits(&mut i)
        }) && (!matches!(b.get(i), Some(b'e' | b'E')) || {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            digits(&mut i)
        }) && !b
            .get(i)
            .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'));
        if ok {
            self.i = i;
            Ok(())
        } else {
            self.i = start;
            self.err("invalid number")
        }
    }

    /// Fails unless only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        if self.peek().is_some() {
            return self.err("trailing characters after the JSON value");
        }
        Ok(())
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Eight bytes as one word, first byte lowest.
#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The high bit of each byte of `x` equal to `c` (exact for the lowest; a flag above a match
/// may be spurious).
#[inline]
fn has_byte(x: u64, c: u8) -> u64 {
    let y = x ^ (LO * c as u64);
    y.wrapping_sub(LO) & !y & HI
}

/// Whether `raw` holds a byte below 0x20 (a raw control character), eight bytes at a time.
#[inline]
fn has_control(raw: &[u8]) -> bool {
    let mut chunks = raw.chunks_exact(8);
    for c in &mut chunks {
        let w = word(c);
        // Bytes of 0x80 and above become at least 0x20 without their high bit, so the test
        // (exact for bytes below 0x80) neither flags them nor borrows from them.
        let low = (w & !HI) | ((w & HI) >> 2);
        if low.wrapping_sub(LO * 0x20) & !low & HI != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&c| c < 0x20)
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    let s = std::str::from_utf8(&b[..4]).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Decodes the escapes of a string's raw bytes.
fn unescape(raw: &[u8]) -> std::result::Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c < 0x20 {
            return Err("control character in string".into());
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1).ok_or("unterminated escape")?;
        i += 2;
        let ch = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(&raw[i..]).ok_or("invalid \\u escape")?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    let lo = (raw.get(i..i + 2) == Some(b"\\u"))
                        .then(|| hex4(&raw[i + 2..]))
                        .flatten()
                        .filter(|lo| (0xDC00..0xE000).contains(lo))
                        .ok_or("unpaired surrogate in \\u escape")?;
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err("unpaired surrogate in \\u escape".into());
                } else {
                    hi
                };
                char::from_u32(code).ok_or("invalid \\u escape")?
            }
            other => return Err(format!("invalid escape '\\{}'", other as char)),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8(out).map_err(|e| format!("invalid UTF-8 in string: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_obj(text: &str) -> Result<Vec<(String, String)>> {
        let mut r = Reader::new(text.as_bytes());
        let mut out = Vec::new();
        r.object(|r, k| {
            let key = String::from_utf8_lossy(k).to_string();
            if key.starts_with('s') {
                out.push((key, r.string()?.into_owned()));
            } else {
                let raw = r.capture()?;
                out.push((key, String::from_utf8_lossy(raw).to_string()));
            }
            Ok(())
        })?;
        r.end()?;
        Ok(out)
    }

    #[test]
    fn reads_strings_and_skips_the_rest() {
        let v = read_obj(
            r#"{"s1":"plain","x":{"a":[1,2.5e3,-3,true,false,null,{"b":"}"}]},"s2":"q\"\\\/\n\u00e9\ud83d\ude00"}"#,
        )
        .unwrap();
        assert_eq!(v[0], ("s1".into(), "plain".into()));
        assert_eq!(
            v[1].1,
            r#"{"a":[1,2.5e3,-3,true,false,null,{"b":"}"}]}"#.to_string()
        );
        assert_eq!(v[2], ("s2".into(), "q\"\\/\né😀".into()));
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bad in [
            "",
            "{",
            r#"{"s":"unterminated}"#,
            r#"{"s":"bad \x escape"}"#,
            r#"{"s":"\ud800 alone"}"#,
            r#"{"s":"\u12"}"#,
            r#"{"x":tru}"#,
            r#"{"x":1.2.3}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":.5}"#,
            r#"{"x":+1}"#,
            r#"{"x":1e}"#,
            r#"{"x":-}"#,
            r#"{"x":[1 2]}"#,
            r#"{"x":1} trailing"#,
            r#"{"x" 1}"#,
            "{\"s\":\"raw\ncontrol\"}",
            r#"{"s":"\"#,
        ] {
            assert!(read_obj(bad).is_err(), "accepted {bad:?}");
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(read_obj(&deep).is_err());
        let mut r = Reader::new(&[b'{', b'"', b's', b'"', b':', b'"', 0xff, b'"', b'}']);
        assert!(r.object(|r, _| r.string().map(|_| ())).is_err());
    }

    #[test]
    fn word_scans_match_bytewise_scans() {
        let mut s = 1u64;
        for len in 0..80 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                        [
                            b'a', b'"', b'\\', 0x1f, 0x00, 0x20, 0x7f, 0x80, 0x9f, 0xa0, 0xff,
                        ][(s >> 33) as usize % 11]
                    })
                    .collect();
                assert_eq!(has_control(&bytes), bytes.iter().any(|&c| c < 0x20));
                let mut text = vec![b'"'];
                text.extend(&bytes);
                text.push(b'"');
                let mut r = Reader::new(&text);
                let first = bytes.iter().position(|&c| c == b'"' || c == b'\\');
                match r.raw_string() {
                    Ok((raw, escaped)) => {
                        if !escaped {
                            assert_eq!(Some(raw.len()), first.or(Some(len)));
                        }
                    }
                    Err(_) => assert!(first.is_some()),
                }
            }
        }
    }

    /// Random JSON texts, some with a byte deleted, inserted, replaced or swapped: skipping a
    /// value and requiring the end must accept exactly what serde_json accepts. (ASCII without
    /// backslashes or control characters: the only places where skipping checks less.)
    #[test]
    fn skip_accepts_what_serde_accepts() {
        fn value(rng: &mut impl FnMut() -> usize, depth: usize, out: &mut String) {
            match rng() % if depth > 6 { 4 } else { 6 } {
                0 => out.push_str(["0", "-12", "3.5e-2", "1E9", "-0.0", "42"][rng() % 6]),
                1 => out.push_str(["true", "false", "null"][rng() % 3]),
                2 | 3 => {
                    out.push('"');
                    (0..rng() % 12).for_each(|_| out.push(b"ab} ]x:,{["[rng() % 10] as char));
                    out.push('"');
                }
                k => {
                    let object = k == 4;
                    out.push(if object { '{' } else { '[' });
                    for i in 0..rng() % 4 {
                        if i > 0 {
                            out.push_str([",", " , "][rng() % 2]);
                        }
                        if object {
                            out.push_str(["\"k\":", "\"\" : "][rng() % 2]);
                        }
                        value(rng, depth + 1, out);
                    }
                    out.push(if object { '}' } else { ']' });
                }
            }
        }
        let mut s = 7u64;
        let mut rng = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        let mut accepted = 0;
        for n in 0..20_000 {
            let mut text = String::new();
            value(&mut rng, 0, &mut text);
            let mut bytes = text.into_bytes();
            for _ in 0..n % 3 {
                let at = rng() % (bytes.len() + 1);
                let c = b"{}[],:\"0-.eE+tfnul 1a"[rng() % 21];
                match rng() % 4 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 if at + 1 < bytes.len() => bytes.swap(at, at + 1),
                    2 if at < bytes.len() => bytes[at] = c,
                    _ => bytes.insert(at, c),
                }
            }
            let ours = {
                let mut r = Reader::new(&bytes);
                r.skip().and_then(|_| r.end()).is_ok()
            };
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
            assert_eq!(ours, serde, "{}", String::from_utf8_lossy(&bytes));
            accepted += usize::from(ours);
        }
        // Both verdicts occur often enough to mean something.
        assert!((2_000..18_000).contains(&accepted), "{accepted} accepted");
    }

    #[test]
    fn skips_every_json_number() {
        for ok in ["0", "-0", "-0.5e-3", "10E+2", "123", "1e9", "0.25"] {
            let text = format!(r#"{{"x":{ok},"y":[{ok}]}}"#);
            assert!(read_obj(&text).is_ok(), "rejected {ok}");
        }
    }

    #[test]
    fn integers() {
        let mut r = Reader::new(b" -1783175888090631 ");
        assert_eq!(r.i64().unwrap(), -1783175888090631);
        assert!(Reader::new(b"1.5").i64().is_err());
        assert!(Reader::new(b"99999999999999999999").i64().is_err());
        assert!(Reader::new(b"\"1\"").i64().is_err());
        assert_eq!(Reader::new(b"9223372036854775807").i64(), Ok(i64::MAX));
        assert_eq!(Reader::new(b"-9223372036854775808").i64(), Ok(i64::MIN));
        assert_eq!(Reader::new(b"-0").i64(), Ok(0));
        for bad in [
            "9223372036854775808",
            "-9223372036854775809",
            "-",
            "",
            "+1",
            "1e3",
        ] {
            assert!(
                Reader::new(bad.as_bytes()).i64().is_err(),
                "accepted {bad:?}"
            );
        }
    }
}
