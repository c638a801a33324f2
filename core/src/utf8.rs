//! Incremental, fail-fast UTF-8 validation of a text message that arrives in pieces.
//!
//! A text message may be split into fragments, and each fragment into many reads, at any byte:
//! even in the middle of a multi-byte character. [`Utf8Validator`] takes the pieces in order.
//! A character cut at the end of a piece waits (at most three bytes are kept) for the next
//! piece; a byte that can never start or continue valid UTF-8 fails at once, before the message
//! ends, as RFC 6455 section 8.1 asks and Autobahn cases 6.4.x check.
//!
//! The bulk of each piece goes through `simdutf8`'s SIMD validator. Before it, on CPUs with
//! AVX-512BW, a scan 512 bytes at a time skips the pure-ASCII prefix (most text on the wire: JSON
//! envelopes, chat in Latin script), which runs near the L1 cache's load bandwidth. The
//! possibly-incomplete character at the end is split off first, so a piece that ends
//! mid-character costs no second pass.

use crate::{Error, Result};

/// The state of a text message being validated piece by piece.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a character cut at the end of the previous piece.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Validates the next piece of the message.
    ///
    /// Returns [`Error::InvalidUtf8`] as soon as the bytes seen so far cannot be the start of
    /// valid UTF-8. After an error the validator must be [`reset`](Self::reset) before reuse.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<()> {
        if self.pending_len > 0 {
            input = self.complete_pending(input)?;
            if self.pending_len > 0 {
                return Ok(()); // the piece was too short to finish the character
            }
        }
        let tail = incomplete_tail_len(input);
        let (body, tail_bytes) = input.split_at(input.len() - tail);
        validate(body)?;
        if tail > 0 {
            check_prefix(tail_bytes)?;
            self.pending[..tail].copy_from_slice(tail_bytes);
            self.pending_len = tail as u8;
        }
        Ok(())
    }

    /// Ends the message: a character still waiting for its last bytes is an error.
    /// The validator is reset for the next message either way.
    pub fn finish(&mut self) -> Result<()> {
        let complete = self.pending_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(Error::InvalidUtf8)
        }
    }

    /// Whether the bytes fed so far end on a character boundary.
    pub fn is_at_boundary(&self) -> bool {
        self.pending_len == 0
    }

    /// Forgets any state, ready for a new message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Adds bytes from `input` to the pending character; returns the rest of `input`.
    fn complete_pending<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8]> {
        let have = self.pending_len as usize;
        let need = sequence_len(self.pending[0]).saturating_sub(have);
        let take = need.min(input.len());
        self.pending[have..have + take].copy_from_slice(&input[..take]);
        let seq = &self.pending[..have + take];
        match std::str::from_utf8(seq) {
            Ok(_) => self.pending_len = 0,
            Err(e) if e.error_len().is_none() => self.pending_len = seq.len() as u8,
            Err(_) => return Err(Error::InvalidUtf8),
        }
        Ok(&input[take..])
    }
}

/// Validates a whole text in one go.
pub fn validate(text: &[u8]) -> Result<()> {
    let ascii = ascii::prefix_len(text);
    simdutf8::basic::from_utf8(&text[ascii..])
        .map(|_| ())
        .map_err(|_| Error::InvalidUtf8)
}

/// The ASCII prefix scan: explicit SIMD, hence the only `unsafe` of this module.
#[allow(unsafe_code)]
mod ascii {
    /// Below this, the scan costs more than it saves.
    const MIN_LEN: usize = 256;

    /// The length of a prefix of `b` that is pure ASCII, in whole 64-byte blocks: every byte
    /// before it is below 0x80, and the block after it (if a whole one remains) is not pure
    /// ASCII. 0 where the CPU lacks AVX-512BW or `b` is short; the caller validates the rest.
    pub(super) fn prefix_len(b: &[u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if b.len() >= MIN_LEN && std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512F and AVX-512BW (checked just above).
            return unsafe { prefix_len_avx512(b) };
        }
        let _ = b;
        0
    }

    /// The same, one block at a time without SIMD: the reference the tests compare with.
    #[cfg(test)]
    pub(super) fn prefix_len_reference(b: &[u8]) -> usize {
        b.chunks_exact(64).take_while(|c| c.is_ascii()).count() * 64
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn prefix_len_avx512(b: &[u8]) -> usize {
        use std::arch::x86_64::*;
        let len = b.len();
        let p = b.as_ptr();
        let mut i = 0;
        // SAFETY (every load below): a load reads the 64 bytes at `p + at` with
        // `at + 64 <= len`, inside `b`; unaligned loads have no alignment requirement.
        unsafe {
            let load = |at: usize| _mm512_loadu_si512(p.add(at).cast());
            // 512 bytes a turn: three-way ORs (ternary logic 0xFE) fold eight vectors into one
            while i + 512 <= len {
                let t1 = _mm512_ternarylogic_epi64(load(i), load(i + 64), load(i + 128), 0xFE);
                let t2 =
                    _mm512_ternarylogic_epi64(load(i + 192), load(i + 256), load(i + 320), 0xFE);
                let t3 = _mm512_ternarylogic_epi64(load(i + 384), load(i + 448), t1, 0xFE);
                if _mm512_movepi8_mask(_mm512_or_si512(t2, t3)) != 0 {
                    break;
                }
                i += 512;
            }
            while i + 64 <= len {
                if _mm512_movepi8_mask(load(i)) != 0 {
                    break;
                }
                i += 64;
            }
        }
        i
    }
}

/// The length a sequence starting with `lead` would have (1 for bytes that cannot start one,
/// which the validator then rejects).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// How many bytes at the end of `input` start a character that the piece does not finish.
fn incomplete_tail_len(input: &[u8]) -> usize {
    let n = input.len();
    for back in 1..=n.min(3) {
        let b = input[n - back];
        if b & 0xC0 != 0x80 {
            // `b` starts a character (or is ASCII, or is invalid: then length 1).
            return if sequence_len(b) > back { back } else { 0 };
        }
    }
    0
}

/// Checks that `bytes` (shorter than a whole character) can still become valid UTF-8.
fn check_prefix(bytes: &[u8]) -> Result<()> {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => Ok(()),
        _ => Err(Error::InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `pieces` in order; returns the index of the piece that failed, or `pieces.len()`
    /// when `finish` failed, or `None` when the whole message is valid.
    fn run(pieces: &[&[u8]]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        for (i, p) in pieces.iter().enumerate() {
            if v.feed(p).is_err() {
                return Some(i);
            }
        }
        v.finish().err().map(|_| pieces.len())
    }

    /// Where a correct fail-fast validator must fail when `bytes` arrive one byte per piece, in
    /// the numbering of [`run`]: the index of the first byte after which the prefix can no longer
    /// become valid UTF-8, or `bytes.len()` when only `finish` can tell (a cut character at the
    /// end), or `None` for valid input.
    fn expected_failure(bytes: &[u8]) -> Option<usize> {
        match std::str::from_utf8(bytes) {
            Ok(_) => None,
            Err(e) if e.error_len().is_none() => Some(bytes.len()),
            Err(_) => (1..=bytes.len())
                .find(|&n| std::str::from_utf8(&bytes[..n]).is_err_and(|e| e.error_len().is_some()))
                .map(|n| n - 1),
        }
    }

    /// The classic stress vectors (Markus Kuhn's UTF-8 decoder capability and stress test, and
    /// the Autobahn 6.x cases), labelled with whether they are valid.
    fn vectors() -> Vec<(&'static str, Vec<u8>, bool)> {
        let mut v: Vec<(&'static str, Vec<u8>, bool)> = vec![
            ("empty", vec![], true),
            (
                "ascii",
                b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!".to_vec(),
                true,
            ),
            ("kosme", "κόσμε".as_bytes().to_vec(), true),
            ("first 1-byte", vec![0x00], true),
            ("first 2-byte", vec![0xc2, 0x80], true),
            ("first 3-byte", vec![0xe0, 0xa0, 0x80], true),
            ("first 4-byte", vec![0xf0, 0x90, 0x80, 0x80], true),
            ("last 1-byte", vec![0x7f], true),
            ("last 2-byte", vec![0xdf, 0xbf], true),
            ("last 3-byte", vec![0xef, 0xbf, 0xbf], true),
            ("last 4-byte U+10FFFF", vec![0xf4, 0x8f, 0xbf, 0xbf], true),
            ("U+D7FF", vec![0xed, 0x9f, 0xbf], true),
            ("U+E000", vec![0xee, 0x80, 0x80], true),
            ("U+FFFD", vec![0xef, 0xbf, 0xbd], true),
            ("noncharacter U+FFFE", vec![0xef, 0xbf, 0xbe], true),
            ("above U+10FFFF", vec![0xf4, 0x90, 0x80, 0x80], false),
            ("5-byte form", vec![0xf8, 0x88, 0x80, 0x80, 0x80], false),
            (
                "6-byte form",
                vec![0xfc, 0x84, 0x80, 0x80, 0x80, 0x80],
                false,
            ),
            ("lone continuation 0x80", vec![0x80], false),
            ("lone continuation 0xbf", vec![0xbf], false),
            ("continuations", vec![0x80, 0xbf, 0x80, 0xbf], false),
            ("lonely start 2-byte", vec![0xc0, 0x20], false),
            ("lonely start 3-byte", vec![0xe0, 0x20], false),
            ("lonely start 4-byte", vec![0xf0, 0x20], false),
            ("last byte missing 2", vec![0xc2], false),
            ("last byte missing 3", vec![0xe0, 0xa0], false),
            ("last byte missing 4", vec![0xf0, 0x90, 0x80], false),
            (
                "truncated sequences concatenated",
                vec![0xc2, 0xe0, 0xa0, 0xf0, 0x90, 0x80],
                false,
            ),
            ("impossible fe", vec![0xfe], false),
            ("impossible ff", vec![0xff], false),
            ("impossible fefeffff", vec![0xfe, 0xfe, 0xff, 0xff], false),
            ("overlong slash 2", vec![0xc0, 0xaf], false),
            ("overlong slash 3", vec![0xe0, 0x80, 0xaf], false),
            ("overlong slash 4", vec![0xf0, 0x80, 0x80, 0xaf], false),
            ("max overlong 2", vec![0xc1, 0xbf], false),
            ("max overlong 3", vec![0xe0, 0x9f, 0xbf], false),
            ("max overlong 4", vec![0xf0, 0x8f, 0xbf, 0xbf], false),
            ("overlong NUL 2", vec![0xc0, 0x80], false),
            ("overlong NUL 3", vec![0xe0, 0x80, 0x80], false),
            ("overlong NUL 4", vec![0xf0, 0x80, 0x80, 0x80], false),
            ("surrogate U+D800", vec![0xed, 0xa0, 0x80], false),
            ("surrogate U+DB7F", vec![0xed, 0xad, 0xbf], false),
            ("surrogate U+DFFF", vec![0xed, 0xbf, 0xbf], false),
            (
                "surrogate pair",
                vec![0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80],
                false,
            ),
            ("f5 lead", vec![0xf5, 0x80, 0x80, 0x80], false),
            (
                "autobahn 6.4.1",
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited".to_vec(),
                false,
            ),
            (
                "autobahn 6.3.1",
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited".to_vec(),
                false,
            ),
        ];
        // each vector again behind a valid multi-byte prefix, to shift its alignment
        let shifted: Vec<_> = v
            .iter()
            .map(|(n, b, ok)| {
                let mut s = "añ€".as_bytes().to_vec();
                s.extend_from_slice(b);
                (*n, s, *ok)
            })
            .collect();
        v.extend(shifted);
        v
    }

    #[test]
    fn stress_vectors_whole() {
        for (name, bytes, valid) in vectors() {
            assert_eq!(run(&[&bytes]).is_none(), valid, "{name}");
            assert_eq!(validate(&bytes).is_ok(), valid, "{name}");
        }
    }

    #[test]
    fn stress_vectors_split_at_every_position() {
        for (name, bytes, valid) in vectors() {
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                assert_eq!(run(&[a, b]).is_none(), valid, "{name} cut at {cut}");
                for cut2 in cut..=bytes.len() {
                    let (b1, b2) = b.split_at(cut2 - cut);
                    assert_eq!(
                        run(&[a, b1, b2]).is_none(),
                        valid,
                        "{name} cut at {cut},{cut2}"
                    );
                }
            }
        }
    }

    #[test]
    fn stress_vectors_fail_fast_byte_by_byte() {
        for (name, bytes, _) in vectors() {
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(
                run(&pieces),
                expected_failure(&bytes),
                "{name}: must fail at the first impossible byte"
            );
        }
    }

    #[test]
    fn autobahn_6_4_fragments_fail_before_the_message_ends() {
        // 6.4.1: the second fragment is U+110000 and must fail there, not at the third.
        let frags: [&[u8]; 3] = [
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
            b"\xf4\x90\x80\x80",
            b"edited",
        ];
        assert_eq!(run(&frags), Some(1));
        // 6.4.2: a lone 0xF4 ends the first fragment; the next byte 0x90 makes it impossible.
        let frags: [&[u8]; 3] = [
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
            b"\x90\x80\x80",
            b"edited",
        ];
        assert_eq!(run(&frags), Some(1));
    }

    #[test]
    fn pending_state_is_bounded_and_reset() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xf0]).unwrap();
        v.feed(&[0x9f]).unwrap();
        v.feed(&[0x98]).unwrap();
        assert!(!v.is_at_boundary());
        v.feed(&[0x80]).unwrap(); // U+1F600
        assert!(v.is_at_boundary());
        v.feed(&[0xe2, 0x82]).unwrap();
        assert!(
            v.finish().is_err(),
            "cut character at the end of the message"
        );
        assert!(v.is_at_boundary(), "finish resets");
        v.feed(b"ok").unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn ascii_scan_matches_the_reference_at_every_position() {
        for len in [0usize, 63, 64, 255, 256, 511, 512, 513, 1000, 4096, 5000] {
            let clean = vec![b'a'; len];
            assert_eq!(super::ascii::prefix_len(&clean) % 64, 0);
            if len >= 256 {
                assert!(
                    super::ascii::prefix_len(&clean) + 64 > len,
                    "all-ASCII scans to the last whole block"
                );
            }
            for pos in 0..len {
                let mut b = clean.clone();
                b[pos] = 0xC3;
                let got = super::ascii::prefix_len(&b);
                assert!(
                    got <= pos,
                    "len {len}: scanned past a non-ASCII byte at {pos}"
                );
                if got > 0 {
                    assert_eq!(
                        got,
                        super::ascii::prefix_len_reference(&b),
                        "len {len} pos {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_texts_validate_like_std() {
        let mut text = "a".repeat(3000).into_bytes();
        for pos in (0..3000).step_by(7) {
            for bad in [&[0xffu8][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0xc3, 0xa9]] {
                let mut t = text.clone();
                t.splice(pos..pos, bad.iter().copied());
                assert_eq!(
                    validate(&t).is_ok(),
                    std::str::from_utf8(&t).is_ok(),
                    "{bad:x?} at {pos}"
                );
                assert_eq!(
                    run(&[&t[..pos / 2], &t[pos / 2..]]).is_none(),
                    std::str::from_utf8(&t).is_ok()
                );
            }
        }
        text.truncate(0);
    }

    proptest! {
        #[test]
        fn ascii_scan_agrees_with_the_reference(
            len in 0usize..3000,
            highs in proptest::collection::vec((0usize..3000, 0x80u8..=0xff), 0..3),
            offset in 0usize..64,
        ) {
            let mut buf = vec![b'x'; len + offset];
            for (at, byte) in highs {
                if at < len { buf[offset + at] = byte; }
            }
            let b = &buf[offset..];
            let got = super::ascii::prefix_len(b);
            let reference = super::ascii::prefix_len_reference(b);
            prop_assert!(got == reference || got == 0, "got {} reference {}", got, reference);
            prop_assert!(b[..got].is_ascii());
        }

        #[test]
        fn long_random_texts_agree_with_std(text in "\\PC{0,600}", junk in proptest::collection::vec(any::<u8>(), 0..3), at in 0usize..2000) {
            let mut bytes = "ascii ".repeat(60).into_bytes();
            bytes.extend_from_slice(text.as_bytes());
            let at = at.min(bytes.len());
            bytes.splice(at..at, junk);
            prop_assert_eq!(validate(&bytes).is_ok(), std::str::from_utf8(&bytes).is_ok());
            prop_assert_eq!(run(&[&bytes]).is_none(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn random_pieces_agree_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                        cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts { pieces.push(&bytes[start..c]); start = c; }
            pieces.push(&bytes[start..]);
            prop_assert_eq!(run(&pieces).is_none(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn random_text_in_random_pieces_is_valid(text in "\\PC{0,80}", cut in 0usize..400) {
            let bytes = text.as_bytes();
            let cut = cut.min(bytes.len());
            prop_assert_eq!(run(&[&bytes[..cut], &bytes[cut..]]), None);
        }
    }
}
