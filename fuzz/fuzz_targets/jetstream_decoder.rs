//! The Jetstream decoder: an event as it comes off the network, a JSON text or (first byte 1)
//! a zstd frame compressed with Jetstream's dictionary, decoded into post rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skystream_engine::format::RecordDecoder;
use skystream_jetstream::JetstreamDecoder;
use skystream_jetstream::zstd_dict::Decompressor;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, event)) = data.split_first() else {
        return;
    };
    let json = if mode == 1 {
        match Decompressor::new().unwrap().decompress(event) {
            Ok(j) => j,
            Err(_) => return,
        }
    } else {
        event.to_vec()
    };
    let mut d = JetstreamDecoder::new(None);
    for line in json.split(|&b| b == b'\n') {
        let _ = d.push(line);
    }
    let _ = d.flush();
    let _ = skystream_jetstream::decode_post(&json);
});
