//! What fills a message after its head (`--payload`): one repeated byte (`fill`, the default:
//! cheap to check, and compressed to almost nothing), or JSON-like text (`json`: the records
//! of a market data feed, as compressible as real JSON, for measuring permessage-deflate).
//!
//! A JSON body starts with the key (connection or publisher) and the sequence number of its
//! message, `{"key":K,"seq":S,"items":[`, then goes on with the same text in every message: a
//! body delivered to the wrong receiver or out of order is caught by its start, a corrupted
//! byte anywhere by comparing the rest with the text, at memory speed.

use crate::client::xorshift;
use std::io::Write as _;

/// How a message is filled after its head.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Payload {
    /// One byte repeated, derived from the message's key and sequence number.
    #[default]
    Fill,
    /// JSON-like text: market data records.
    Json,
}

/// The JSON-like bodies of a run, for messages of up to the length given to [`JsonBody::new`].
#[derive(Debug, Clone)]
pub(crate) struct JsonBody {
    text: Vec<u8>,
}

/// The longest start of a body: `{"key":` and `,"seq":` with two u64s, and `,"items":[`.
const HEAD_MAX: usize = 80;

impl JsonBody {
    /// Bodies of up to `len` bytes.
    pub(crate) fn new(len: usize) -> JsonBody {
        JsonBody {
            text: json_text(len),
        }
    }

    /// The start of the body of message `seq` of `key`, in `buf`; returns its length.
    fn head(buf: &mut [u8; HEAD_MAX], key: u64, seq: u64) -> usize {
        let mut w = &mut buf[..];
        write!(w, "{{\"key\":{key},\"seq\":{seq},\"items\":[").expect("fits");
        HEAD_MAX - w.len()
    }

    /// Appends the body of `len` bytes of message `seq` of `key` to `out` (`len` at most the
    /// length this was made for).
    pub(crate) fn put(&self, out: &mut Vec<u8>, len: usize, key: u64, seq: u64) {
        let mut buf = [0u8; HEAD_MAX];
        let h = Self::head(&mut buf, key, seq).min(len);
        out.extend_from_slice(&buf[..h]);
        out.extend_from_slice(&self.text[..len - h]);
    }

    /// Whether `data` is exactly the body of message `seq` of `key` (of `data.len()` bytes).
    pub(crate) fn check(&self, data: &[u8], key: u64, seq: u64) -> bool {
        let mut buf = [0u8; HEAD_MAX];
        let h = Self::head(&mut buf, key, seq).min(data.len());
        data.len() - h <= self.text.len()
            && data[..h] == buf[..h]
            && data[h..] == self.text[..data.len() - h]
    }
}

/// `len` bytes of JSON-like text, the same on every call: records of a market data feed
/// (`{"id":..,"sym":"AAPL","px":187.25,"qty":300,"side":"buy","venue":"XNAS","ts":..},`),
/// the values drawn from a fixed seed, cut at `len`.
pub(crate) fn json_text(len: usize) -> Vec<u8> {
    const SYMS: [&str; 8] = [
        "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "NFLX",
    ];
    const VENUES: [&str; 4] = ["XNAS", "XNYS", "ARCX", "BATS"];
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut out = Vec::with_capacity(len + 160);
    let mut id = 100_000u64;
    let mut ts = 1_700_000_000_000u64;
    while out.len() < len {
        let r = xorshift(&mut rng);
        id += 1 + r % 7;
        ts += r % 50;
        let px = 1_000 + (r >> 8) % 90_000;
        let _ = write!(
            out,
            "{{\"id\":{id},\"sym\":\"{}\",\"px\":{}.{:02},\"qty\":{},\"side\":\"{}\",\
             \"venue\":\"{}\",\"ts\":{ts}}},",
            SYMS[(r >> 20) as usize % SYMS.len()],
            px / 100,
            px % 100,
            100 * (1 + (r >> 28) % 50),
            if (r >> 40) & 1 == 0 { "buy" } else { "sell" },
            VENUES[(r >> 44) as usize % VENUES.len()],
        );
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_byte_for_byte() {
        let j = JsonBody::new(4096);
        for len in [0, 5, 30, 1000, 4096] {
            let mut b = Vec::new();
            j.put(&mut b, len, 7, 42);
            assert_eq!(b.len(), len);
            assert!(j.check(&b, 7, 42), "{len}");
            if len > 30 {
                assert!(!j.check(&b, 8, 42), "another key");
                assert!(!j.check(&b, 7, 43), "another message");
                let mut c = b.clone();
                c[len - 1] ^= 1;
                assert!(!j.check(&c, 7, 42), "a flipped bit");
            }
        }
        let mut b = Vec::new();
        j.put(&mut b, 100, u64::MAX, u64::MAX);
        assert!(b.starts_with(b"{\"key\":18446744073709551615,\"seq\":18446744073709551615,"));
        assert!(std::str::from_utf8(&b).is_ok());
    }

    #[test]
    fn the_text_is_like_json_and_compresses_like_it() {
        let t = json_text(16 * 1024);
        assert_eq!(t.len(), 16 * 1024);
        assert_eq!(json_text(1024), t[..1024]);
        assert!(t.starts_with(b"{\"id\":"));
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut z = Vec::with_capacity(t.len());
        c.compress_vec(&t[..1024], &mut z, flate2::FlushCompress::Sync)
            .unwrap();
        // real JSON of this kind shrinks 2x to 5x at 1 KiB: not one repeated byte
        let ratio = 1024.0 / z.len() as f64;
        assert!((2.0..5.0).contains(&ratio), "{ratio}");
    }
}
