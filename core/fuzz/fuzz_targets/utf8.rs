//! `utf8::Utf8Validator` fed arbitrary pieces, against `std::str::from_utf8`.
//!
//! Input: `[n][n piece sizes][text...]`; the text is fed in pieces whose sizes cycle through the
//! piece sizes (0 is an empty piece).
//!
//! Invariants: the validator accepts (every `feed` and `finish` succeed) exactly when std
//! accepts the whole text; it fails in the piece holding the first byte after which the bytes
//! seen can no longer begin valid UTF-8 (fail-fast: not later, and not earlier either); a cut
//! character at the end fails only in `finish`; `is_at_boundary` says whether the bytes so far
//! are complete UTF-8; `utf8::validate` agrees with std; a validator is reusable after `finish`
//! and after `reset`.
#![no_main]

mod common;

use common::{Params, pieces};
use libfuzzer_sys::fuzz_target;
use wsgate_core::utf8::{self, Utf8Validator};

/// Where a fail-fast validator must fail: the length of the shortest prefix that is not the
/// start of valid UTF-8, or `None` when every prefix is (the text is valid, or valid up to a cut
/// character at the end).
fn first_bad_prefix(text: &[u8]) -> Option<usize> {
    let err = std::str::from_utf8(text).err()?;
    err.error_len()?;
    let start = err.valid_up_to();
    // The bytes before `start` are valid, so only the sequence at `start` matters; an invalid
    // sequence shows itself within 4 bytes.
    let end = (start + 4).min(text.len());
    let bad = (start + 1..=end)
        .find(|&n| std::str::from_utf8(&text[start..n]).is_err_and(|e| e.error_len().is_some()))
        .expect("std reported an invalid sequence at valid_up_to");
    Some(bad)
}

fuzz_target!(|data: &[u8]| {
    let mut p = Params::new(data);
    let sizes = p.sizes(16);
    let text = p.rest();

    let std_ok = std::str::from_utf8(text).is_ok();
    assert_eq!(
        utf8::validate(text).is_ok(),
        std_ok,
        "validate disagrees with std"
    );
    let bad = first_bad_prefix(text);

    let mut v = Utf8Validator::new();
    let mut end = 0;
    let mut failed_in: Option<(usize, usize)> = None;
    for piece in pieces(text, sizes) {
        let start = end;
        end += piece.len();
        if v.feed(piece).is_err() {
            failed_in = Some((start, end));
            break;
        }
        let complete = std::str::from_utf8(&text[..end]).is_ok();
        assert_eq!(
            v.is_at_boundary(),
            complete,
            "is_at_boundary after {end} bytes"
        );
    }
    match (bad, failed_in) {
        (Some(bad), Some((start, end))) => assert!(
            start < bad && bad <= end,
            "failed in piece {start}..{end}; the first bad prefix is {bad} bytes"
        ),
        (Some(bad), None) => panic!("never failed; the first bad prefix is {bad} bytes"),
        (None, Some((start, end))) => {
            panic!("failed in piece {start}..{end}, yet every prefix can become valid UTF-8")
        }
        (None, None) => {
            assert_eq!(v.finish().is_ok(), std_ok, "finish disagrees with std");
            assert!(v.is_at_boundary(), "finish resets");
        }
    }

    // Reuse: after reset, the whole text at once gives std's answer; a new message starts clean.
    v.reset();
    let whole = v.feed(text).and_then(|()| v.finish());
    assert_eq!(whole.is_ok(), std_ok, "reused validator, one piece");
    v.reset();
    assert!(v.feed("é".as_bytes()).and_then(|()| v.finish()).is_ok());
});
