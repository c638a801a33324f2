//! Criterion benchmarks of wsgate live in `benches/`; this library only holds input generators
//! they share, so every bench measures the same data.

/// `len` bytes of printable ASCII text.
pub fn ascii_text(len: usize) -> String {
    let words = "the quick brown fox jumps over the lazy dog; ";
    words.chars().cycle().take(len).collect()
}

/// About `len` bytes of text mixing ASCII with two-, three- and four-byte characters, as a
/// European chat message with the odd emoji would.
pub fn mixed_text(len: usize) -> String {
    let words = "Grüße aus Köln, ça va? naïve café — 5€ 👍 ";
    take_chars(words, len)
}

/// About `len` bytes of CJK text (three bytes per character).
pub fn cjk_text(len: usize) -> String {
    let words = "我能吞下玻璃而不伤身体。私はガラスを食べられます。유리를 먹을 수 있어요. ";
    take_chars(words, len)
}

fn take_chars(pattern: &str, len: usize) -> String {
    let mut s = String::with_capacity(len + 4);
    for c in pattern.chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_make_the_length_asked() {
        for len in [0, 1, 100, 4096, 65536] {
            assert_eq!(ascii_text(len).len(), len);
            assert!(mixed_text(len).len() + 4 > len && mixed_text(len).len() <= len);
            assert!(cjk_text(len).len() + 4 > len && cjk_text(len).len() <= len);
        }
        assert!(!cjk_text(1000).is_ascii());
    }
}
