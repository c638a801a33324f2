//! Sizes and durations as people write them on a command line or in a config file: one syntax
//! for the gateway's settings and the load generator's flags.
//!
//! - A size is a whole number of bytes (`65536`) or a number with a unit: binary units `KiB`,
//!   `MiB`, `GiB` (powers of 1024) or decimal ones `KB`, `MB`, `GB` (powers of 1000), case
//!   insensitive, with or without a space (`64KiB`, `8 MiB`, `1.5GiB`).
//! - A duration is a whole number of seconds (`10`) or numbers with units (`500ms`, `10s`, `2m`,
//!   `1h`, `1m 30s`).
//!
//! Both are printed back in a form they parse from.

use std::time::Duration;

/// Parses a size such as `65536`, `64KiB`, `8 MiB` or `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    if t.starts_with('-') {
        return Err(format!(
            "'{s}' is not a size (examples: 65536, 64KiB, 8MiB)"
        ));
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("'{s}' is not a size (examples: 65536, 64KiB, 8MiB)"))
}

/// Parses a duration such as `10s`, `500ms` or `2m`; a plain number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("'{s}' is not a duration (examples: 10s, 500ms, 2m)"))
}

/// Formats a size in the largest binary unit that divides it (`64MiB`, `1000B`).
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// Formats a duration as [`parse_duration`] reads it back (`1m 30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("8 MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8mib"), Ok(8 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size(" 2GiB "), Ok(2 << 30));
        for bad in ["-1", "lots", "", "5 parsecs"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("not a size"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn what_is_printed_parses_back() {
        for n in [0u64, 1000, 1024, 64 << 20, 3 << 30, (1 << 20) + 1] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{}", format_size(n));
        }
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
        for d in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(90),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
