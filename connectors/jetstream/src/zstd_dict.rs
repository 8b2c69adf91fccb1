//! Jetstream's `compress=true` encoding: each event is one zstd frame compressed with the
//! dictionary Jetstream ships (`legacy_subscribe.zdict`, id 1612007021).

use std::sync::OnceLock;

/// The dictionary, as published in the Jetstream repository (see testdata/jetstream/README.md).
pub const DICTIONARY: &[u8] = include_bytes!("../../../testdata/jetstream/legacy_subscribe.zdict");

/// Largest event accepted after decompression.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

fn decoder_dict() -> &'static zstd::dict::DecoderDictionary<'static> {
    static D: OnceLock<zstd::dict::DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| zstd::dict::DecoderDictionary::copy(DICTIONARY))
}

/// Decompresses events (reuses its zstd context).
pub struct Decompressor {
    inner: zstd::bulk::Decompressor<'static>,
}

impl Decompressor {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: zstd::bulk::Decompressor::with_prepared_dictionary(decoder_dict())?,
        })
    }

    /// One event's JSON from one Binary frame.
    pub fn decompress(&mut self, frame: &[u8]) -> Result<Vec<u8>, String> {
        let cap = match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n as usize <= MAX_EVENT_BYTES => n as usize,
            Ok(Some(n)) => return Err(format!("event of {n} bytes exceeds the limit")),
            Ok(None) => MAX_EVENT_BYTES,
            Err(_) => return Err("not a zstd frame".into()),
        };
        self.inner
            .decompress(frame, cap)
            .map_err(|e| format!("zstd: {e}"))
    }
}

/// Compresses events (the local server's side).
pub struct Compressor {
    inner: zstd::bulk::Compressor<'static>,
}

impl Compressor {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: zstd::bulk::Compressor::with_dictionary(3, DICTIONARY)?,
        })
    }

    pub fn compress(&mut self, event: &[u8]) -> std::io::Result<Vec<u8>> {
        self.inner.compress(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_the_dictionary() {
        let data = include_str!("../../../testdata/jetstream/expected_v1.jsonl");
        let (mut c, mut d) = (Compressor::new().unwrap(), Decompressor::new().unwrap());
        let (mut raw, mut packed) = (0, 0);
        for line in data.lines().filter(|l| !l.is_empty()) {
            let z = c.compress(line.as_bytes()).unwrap();
            // The frame names Jetstream's dictionary.
            assert_eq!(
                zstd::zstd_safe::get_dict_id_from_frame(&z).map(|n| n.get()),
                Some(1612007021)
            );
            raw += line.len();
            packed += z.len();
            assert_eq!(d.decompress(&z).unwrap(), line.as_bytes());
        }
        assert!(packed * 10 < raw * 7, "{packed} of {raw}");
        assert!(d.decompress(b"not zstd at all").is_err());
    }
}
