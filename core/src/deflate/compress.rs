//! Compressing one whole message on its own, for every client that takes compressed frames.

use flate2::{Compress, Compression, FlushCompress};
use std::cell::RefCell;

/// The end of the empty stored block a sync flush writes, which RFC 7692 section 7.2.1 has the
/// sender remove (the receiver puts it back).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// This thread's compressor and its level: deflate's state is about 300 KiB, made once per
    /// thread and reset for each message.
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// `payload` compressed as one permessage-deflate message with no context (raw deflate with
/// a window of 2^15 bytes, sync flushed, the tail removed), at `level` (0 to 9). `None` when
/// the result would not be smaller than `payload`: the message then goes out uncompressed.
pub fn compress(payload: &[u8], level: u32) -> Option<Vec<u8>> {
    let level = level.min(9);
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            slot => {
                &mut slot
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        compress_with(compressor, payload)
    })
}

fn compress_with(compressor: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    // room for the payload and the tail: more would not be smaller anyway
    let mut out = Vec::with_capacity(payload.len() + TAIL.len());
    let status = compressor.compress_vec(payload, &mut out, FlushCompress::Sync);
    let whole = status.is_ok()
        && compressor.total_in() == payload.len() as u64
        && out.len() < out.capacity()
        && out.ends_with(&TAIL);
    if !whole {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    if out.len() >= payload.len() {
        return None;
    }
    if out.capacity() - out.len() > 4096 {
        out.shrink_to_fit(); // a large message that shrank: give the rest back
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    #[test]
    fn compressible_messages_shrink_and_inflate_back_at_every_level() {
        let json: Vec<u8> = (0..200)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 7).into_bytes())
            .collect();
        for level in 0..=9 {
            let Some(packed) = compress(&json, level) else {
                assert_eq!(level, 0, "stored blocks do not shrink");
                continue;
            };
            assert!(
                packed.len() < json.len() / 3,
                "level {level}: {}",
                packed.len()
            );
            let mut out = Vec::new();
            let mut inflater = Inflater::new();
            inflater.push(&packed, &mut out, json.len()).unwrap();
            inflater.finish(&mut out, json.len(), false).unwrap();
            assert_eq!(out, json, "level {level}");
        }
    }

    #[test]
    fn what_does_not_shrink_stays_plain() {
        assert_eq!(compress(b"", 6), None);
        assert_eq!(compress(b"x", 6), None);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(compress(&noise, 6), None);
        assert!(
            compress(&[b'a'; 1000], 6).is_some(),
            "the compressor is reusable"
        );
    }
}
