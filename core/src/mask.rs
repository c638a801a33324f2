//! In-place unmasking of WebSocket payloads (RFC 6455 section 5.3).
//!
//! `offset` is the position of `buf[0]` within the frame's payload, so a payload that arrives
//! over several reads is unmasked piece by piece: byte `i` of `buf` is XORed with
//! `key[(offset + i) % 4]`.
#![allow(unsafe_code)]

/// Unmasks (or masks: the operation is its own inverse) `buf` in place with the fastest
/// implementation this CPU supports, chosen once.
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    unmask_words(buf, key, offset)
}

/// The reference implementation: one byte at a time.
pub fn unmask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

/// A portable word-at-a-time implementation: eight bytes per step.
pub fn unmask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotated_key(key, offset);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    unmask_scalar(chunks.into_remainder(), k, 0);
}

/// The key as seen from payload position `offset`: `rotated[i] == key[(offset + i) % 4]`.
pub fn rotated_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset & 3);
    k
}
