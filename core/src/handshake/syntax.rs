//! The token and list syntax of RFC 7230 that the header checks share: `tchar`, `token`,
//! optional whitespace and comma-separated lists.

/// RFC 7230 `tchar`, as a table: `!#$%&'*+-.^_`|~`, digits and letters.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        i += 1;
    }
    table
};

pub(super) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// RFC 7230 `token`: one or more `tchar`.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The items of one comma-separated list value, trimmed, empty ones skipped.
pub(super) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}
