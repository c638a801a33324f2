//! permessage-deflate (RFC 7692) on the client side, for `--compression`: the offer, the
//! server's answer read and checked, compressed messages inflated and the client's own
//! messages compressed.
//!
//! The client offers what Chromium offers, `permessage-deflate; client_max_window_bits`. A
//! server message with RSV1 set is raw DEFLATE data whose last 4 bytes (`00 00 ff ff`, the
//! empty stored block of a sync flush) were cut off; the client appends them and inflates,
//! into at most the largest message the scenario expects. When the server answered
//! `server_no_context_takeover` every message stands alone: one inflater per thread serves
//! every connection of the thread (reset before each message), and since inflating is a pure
//! function of the compressed bytes, a message whose compressed bytes are the same as those of
//! one of the last messages inflated on the thread (a publish the server compressed once for
//! every subscriber, read on one subscriber after another) takes that result instead of
//! inflating again ([`Recent`]). Otherwise a connection keeps its own inflater, made at its
//! first compressed message.
//!
//! The client compresses its own data messages of [`MIN_SIZE`] bytes or more, at level 1 (the
//! load generator's CPU goes to sending and checking): one deflater per thread, reset before
//! each message, when the server answered `client_no_context_takeover`; otherwise one per
//! connection, made at its first compressed message, keeping its context. A server that
//! limited the client's window to 8 bits (which zlib cannot compress for) gets every message
//! uncompressed, which the extension always allows.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// The `Sec-WebSocket-Extensions` value the client offers (Chromium's).
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The extension's name.
const NAME: &str = "permessage-deflate";

/// The client's data messages shorter than this go out uncompressed (as the gateway's default
/// minimum size for its own).
pub(crate) const MIN_SIZE: usize = 128;

/// The end of a sync flush, cut off each compressed message and put back to inflate it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest message a connection inflates when the scenario does not say (`conns`,
/// `abuse`).
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// What `--compression` offers: permessage-deflate, and the largest message the scenario
/// expects from the server, the bound on inflation (a message inflating past it fails the
/// connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    /// The largest message, after inflation, that the scenario expects.
    pub(crate) max_message: usize,
}

/// The parameters of the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Agreed {
    /// Every server message is compressed on its own.
    pub(crate) server_no_context_takeover: bool,
    /// Every client message must be compressed on its own.
    pub(crate) client_no_context_takeover: bool,
    /// The server's window, when it named one (8 to 15).
    pub(crate) server_max_window_bits: Option<u8>,
    /// The window the client may compress with, when the server limited it (8 to 15).
    pub(crate) client_max_window_bits: Option<u8>,
}

impl std::fmt::Display for Agreed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NAME)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if let Some(b) = self.server_max_window_bits {
            write!(f, "; server_max_window_bits={b}")?;
        }
        if let Some(b) = self.client_max_window_bits {
            write!(f, "; client_max_window_bits={b}")?;
        }
        Ok(())
    }
}

/// Reads the server's answer to [`OFFER`]: every `Sec-WebSocket-Extensions` line of its 101,
/// in order. `Ok(None)` when there is none (the server declined); an error when it answers
/// something that was not offered or that RFC 7692 does not allow (another extension, two
/// answers, an unknown or repeated parameter, a window outside 8 to 15).
pub(crate) fn parse_answer(lines: &[&[u8]]) -> Result<Option<Agreed>, String> {
    let mut items = Vec::new();
    for line in lines {
        let line = std::str::from_utf8(line).map_err(|_| "not ASCII".to_string())?;
        items.extend(line.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    let item = match items.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => return Err("more than one extension, when one was offered".into()),
    };
    let mut parts = item.split(';').map(str::trim);
    let name = parts.next().unwrap_or("");
    if !name.eq_ignore_ascii_case(NAME) {
        return Err(format!("'{name}', which was not offered"));
    }
    let mut agreed = Agreed::default();
    let mut seen: Vec<String> = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("'{key}' twice"));
        }
        match (key.as_str(), value) {
            ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                agreed.server_max_window_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", Some(v)) => {
                agreed.client_max_window_bits = Some(window_bits(v)?);
            }
            _ => {
                return Err(format!(
                    "the parameter '{part}', which RFC 7692 does not allow"
                ));
            }
        }
        seen.push(key);
    }
    Ok(Some(agreed))
}

/// A window size parameter: 8 to 15, no leading zero.
fn window_bits(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(b) if (8..=15).contains(&b) && !v.starts_with('0') && !v.starts_with('+') => Ok(b),
        _ => Err(format!("a window of '{v}' bits (8 to 15 allowed)")),
    }
}

/// The first agreement a check before the run saw ([`note_agreed`]).
static AGREED: std::sync::OnceLock<Agreed> = std::sync::OnceLock::new();

/// Records the agreement a check before the run saw, for the report (the first one counts).
pub(crate) fn note_agreed(a: Agreed) {
    let _ = AGREED.set(a);
}

/// The agreement the check before the run saw, when permessage-deflate was agreed.
pub(crate) fn agreed_before_run() -> Option<Agreed> {
    AGREED.get().copied()
}

/// The compressors every connection of a thread shares when the agreement lets each message
/// stand alone, and the last messages inflated with them.
#[derive(Default)]
struct Shared {
    inflater: Option<Decompress>,
    /// By window bits.
    deflaters: Vec<(u8, Compress)>,
    /// The last messages inflated by `inflater`.
    recent: Recent,
    /// Where messages are compressed before they are framed.
    out: Vec<u8>,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
}

/// Messages inflated without context, by their compressed bytes, oldest forgotten first
/// past [`Recent::MAX_ENTRIES`] messages or [`Recent::MAX_BYTES`] bytes. A fanout's publishes
/// arrive on every subscriber in turn, each subscriber's socket holding a run of them and the
/// subscribers a few hundred publishes apart: each publish is inflated once per thread rather
/// than once per delivery. A hit is the same compressed bytes, compared in full.
#[derive(Default)]
struct Recent {
    /// By a hash of the compressed bytes: those bytes and the inflated message.
    map: HashMap<u64, (Vec<u8>, Bytes)>,
    /// The hashes, oldest first.
    order: VecDeque<u64>,
    /// Bytes held: compressed and inflated.
    bytes: usize,
}

impl Recent {
    /// Messages kept at most.
    const MAX_ENTRIES: usize = 4096;
    /// Bytes kept at most (a thread's share).
    const MAX_BYTES: usize = 32 << 20;
    /// Messages inflated to more than this are not kept.
    const MAX_KEPT: usize = 64 * 1024;

    fn hash(compressed: &[u8]) -> u64 {
        // FxHash-like: eight bytes a step
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = compressed.len() as u64;
        let mut words = compressed.chunks_exact(8);
        for w in &mut words {
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().expect("8 bytes")))
                .wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        h
    }

    /// The inflated message of `compressed`, if it is kept.
    fn get(&self, compressed: &[u8]) -> Option<Bytes> {
        match self.map.get(&Self::hash(compressed)) {
            Some((bytes, out)) if bytes[..] == *compressed => Some(out.clone()),
            _ => None,
        }
    }

    /// Keeps `out`, inflated from `compressed`, forgetting the oldest past the bounds.
    fn put(&mut self, compressed: &[u8], out: &Bytes) {
        if out.len() > Self::MAX_KEPT {
            return;
        }
        let h = Self::hash(compressed);
        let size = compressed.len() + out.len();
        match self.map.insert(h, (compressed.to_vec(), out.clone())) {
            // another message with the same hash: replaced, in its place in the order
            Some((b, o)) => self.bytes -= b.len() + o.len(),
            None => self.order.push_back(h),
        }
        self.bytes += size;
        while self.order.len() > Self::MAX_ENTRIES || self.bytes > Self::MAX_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((b, o)) = self.map.remove(&old) {
                self.bytes -= b.len() + o.len();
            }
        }
    }
}

/// permessage-deflate on one connection, as agreed in its 101.
pub(crate) struct Session {
    agreed: Agreed,
    max_message: usize,
    /// The connection's own inflater, when the server keeps its context.
    inflater: Option<Box<Decompress>>,
    /// The connection's own deflater, when the client may keep its context.
    deflater: Option<Box<Compress>>,
    /// The opcode of the message in progress when it arrived compressed (see
    /// [`Session::mark_compressed`]).
    compressed: Option<u8>,
}

impl Session {
    /// A connection with `agreed`, expecting messages of at most `max_message` bytes.
    pub(crate) fn new(agreed: Agreed, max_message: usize) -> Session {
        Session {
            agreed,
            max_message,
            inflater: None,
            deflater: None,
            compressed: None,
        }
    }

    /// Before the frame decoder reads the header at the front of `input` (a frame boundary,
    /// with no fragmented message open): when it starts a text or binary message with RSV1
    /// set, clears RSV1 and makes it binary (a compressed text message is not UTF-8 until it is
    /// inflated), and remembers its opcode for [`Session::take_compressed`]. Everything else
    /// is left for the decoder to judge (RSV1 on a control frame or a continuation, RSV2, RSV3).
    pub(crate) fn mark_compressed(&mut self, input: &mut [u8]) {
        let Some(b0) = input.first_mut() else { return };
        let opcode = *b0 & 0x0F;
        if *b0 & 0x40 != 0 && (opcode == 0x1 || opcode == 0x2) {
            self.compressed = Some(opcode);
            *b0 = (*b0 & !0x40 & 0xF0) | 0x2;
        }
    }

    /// Whether the data message just decoded arrived compressed: `Some(true)` when it was text,
    /// `Some(false)` when binary, `None` when it was not compressed.
    pub(crate) fn take_compressed(&mut self) -> Option<bool> {
        self.compressed.take().map(|op| op == 0x1)
    }

    /// Inflates the payload of a compressed message.
    pub(crate) fn inflate(&mut self, payload: &[u8]) -> Result<Bytes, String> {
        let max = self.max_message;
        if self.agreed.server_no_context_takeover {
            return SHARED.with_borrow_mut(|s| {
                if let Some(out) = s.recent.get(payload)
                    && out.len() <= max
                {
                    return Ok(out);
                }
                let d = s.inflater.get_or_insert_with(|| Decompress::new(false));
                d.reset(false);
                let (out, _) = inflate_with(d, payload, max)?;
                let out = Bytes::from(out);
                s.recent.put(payload, &out);
                Ok(out)
            });
        }
        let d = self
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        let (out, ended) = inflate_with(d, payload, max)?;
        if ended {
            // a final block ends the stream: the next message starts a new one
            d.reset(false);
        }
        Ok(Bytes::from(out))
    }

    /// Compresses `payload` and hands the compressed bytes (without the sync flush's last 4
    /// bytes) to `frame`; false, and nothing handed, when the message is to go uncompressed.
    pub(crate) fn deflate(&mut self, payload: &[u8], frame: impl FnOnce(&[u8])) -> bool {
        let bits = self.agreed.client_max_window_bits.unwrap_or(15);
        if payload.len() < MIN_SIZE || bits < 9 {
            return false;
        }
        let new = || Compress::new_with_window_bits(Compression::fast(), false, bits);
        SHARED.with_borrow_mut(|s| {
            let Shared { deflaters, out, .. } = s;
            let c = if self.agreed.client_no_context_takeover {
                let at = match deflaters.iter().position(|(b, _)| *b == bits) {
                    Some(at) => at,
                    None => {
                        deflaters.push((bits, new()));
                        deflaters.len() - 1
                    }
                };
                let c = &mut deflaters[at].1;
                c.reset();
                c
            } else {
                &mut **self.deflater.get_or_insert_with(|| Box::new(new()))
            };
            if deflate_with(c, payload, out).is_err() {
                // the context is unknown now: start again (a fresh one for the next message)
                self.deflater = None;
                return false;
            }
            frame(out);
            true
        })
    }
}

/// Inflates one message's `payload` (the sync flush's tail put back) with `d`, into at most
/// `max` bytes. Also says whether the data ended the DEFLATE stream (a final block).
fn inflate_with(d: &mut Decompress, payload: &[u8], max: usize) -> Result<(Vec<u8>, bool), String> {
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity(payload.len().saturating_mul(4).max(256).min(limit));
    for input in [payload, &TAIL[..]] {
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(too_large(max));
                }
                let want = out.capacity().saturating_mul(2).min(limit);
                out.reserve_exact(want - out.len());
            }
            let (in0, out0) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("a compressed message does not inflate: {e}"))?;
            pos += (d.total_in() - in0) as usize;
            if out.len() > max {
                return Err(too_large(max));
            }
            if status == Status::StreamEnd {
                // anything after the final block (the tail put back) is not part of it
                return Ok((out, true));
            }
            if pos == input.len() && out.len() < out.capacity() {
                break;
            }
            if pos < input.len() && out.len() == out0 && out.len() < out.capacity() {
                return Err("a compressed message does not inflate: no progress".into());
            }
        }
    }
    Ok((out, false))
}

fn too_large(max: usize) -> String {
    format!("a compressed message inflates past {max} bytes, the largest this run expects")
}

/// Compresses `payload` with `c` into `out` (cleared first), sync-flushed, without the
/// flush's last 4 bytes.
fn deflate_with(c: &mut Compress, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    out.reserve(payload.len() + payload.len() / 8 + 64);
    let in0 = c.total_in();
    loop {
        let pos = (c.total_in() - in0) as usize;
        c.compress_vec(&payload[pos..], out, FlushCompress::Sync)
            .map_err(|e| e.to_string())?;
        let pos = (c.total_in() - in0) as usize;
        if pos == payload.len() && out.len() < out.capacity() {
            break;
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
    }
    if !out.ends_with(&TAIL) {
        return Err("a sync flush that does not end in 00 00 ff ff".into());
    }
    out.truncate(out.len() - TAIL.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(answer: &str) -> Result<Option<Agreed>, String> {
        parse_answer(&[answer.as_bytes()])
    }

    #[test]
    fn answers_are_read_and_checked() {
        assert_eq!(parse_answer(&[]), Ok(None));
        assert_eq!(agreed("  "), Ok(None));
        assert_eq!(agreed("permessage-deflate"), Ok(Some(Agreed::default())));
        let a = agreed(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits=10; server_max_window_bits=\"12\"",
        )
        .unwrap()
        .unwrap();
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        assert_eq!(a.client_max_window_bits, Some(10));
        assert_eq!(a.server_max_window_bits, Some(12));
        assert_eq!(
            a.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=10"
        );
        // over two lines, as one list
        assert_eq!(
            parse_answer(&[b"permessage-deflate; server_no_context_takeover", b""])
                .map(|a| a.is_some()),
            Ok(true)
        );
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; x=1",
            "permessage-deflate;",
        ] {
            assert!(agreed(bad).is_err(), "{bad}");
        }
    }

    /// A message compressed by `c` as a server would send it.
    fn compress(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        deflate_with(c, data, &mut out).unwrap();
        out
    }

    fn sample(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| b"{\"price\":12.5,\"qty\":3}"[i % 22].wrapping_add((i / 500) as u8 ^ seed))
            .collect()
    }

    #[test]
    fn messages_round_trip_with_and_without_context() {
        for (server_nct, client_nct) in [(true, true), (false, false), (true, false)] {
            let a = Agreed {
                server_no_context_takeover: server_nct,
                client_no_context_takeover: client_nct,
                ..Agreed::default()
            };
            let mut client = Session::new(a, 1 << 20);
            // the server side: one deflater, reset per message when it takes no context over
            let mut server = Compress::new(Compression::default(), false);
            let mut server_in = Decompress::new(false);
            for k in 0..5u8 {
                let m = sample(3000 + k as usize * 1000, k);
                if server_nct {
                    server.reset();
                }
                let wire = compress(&mut server, &m);
                assert!(wire.len() < m.len() / 2, "{} of {}", wire.len(), m.len());
                assert_eq!(client.inflate(&wire).unwrap(), m);
                // the same compressed bytes again (from the cache when there is no context)
                if server_nct {
                    assert_eq!(client.inflate(&wire).unwrap(), m);
                }
                let mut sent = Vec::new();
                assert!(client.deflate(&m, |b| sent.extend_from_slice(b)));
                if client_nct {
                    server_in.reset(false);
                }
                let (back, _) = inflate_with(&mut server_in, &sent, 1 << 20).unwrap();
                assert_eq!(back, m);
            }
        }
    }

    #[test]
    fn recent_messages_are_found_by_their_bytes_only() {
        let mut r = Recent::default();
        assert_eq!(r.get(b"abc"), None);
        let msgs: Vec<Vec<u8>> = (0..=255u8).map(|k| sample(300, k)).collect();
        for m in &msgs {
            r.put(m, &Bytes::from(m.repeat(2)));
        }
        for m in &msgs {
            assert_eq!(r.get(m), Some(Bytes::from(m.repeat(2))));
            let mut other = m.clone();
            other[150] ^= 1;
            assert_eq!(r.get(&other), None);
        }
        r.put(b"big", &Bytes::from(vec![0; Recent::MAX_KEPT + 1]));
        assert_eq!(r.get(b"big"), None, "too large to keep");
        // the oldest go first past the bounds
        for k in 0..Recent::MAX_ENTRIES as u32 {
            r.put(&k.to_le_bytes(), &Bytes::from_static(b"x"));
        }
        assert_eq!(r.get(&msgs[0]), None);
        assert_eq!(r.get(&0u32.to_le_bytes()), Some(Bytes::from_static(b"x")));
        assert_eq!(r.order.len(), Recent::MAX_ENTRIES);
        assert_eq!(r.bytes, Recent::MAX_ENTRIES * 5);
        let big = Bytes::from(vec![1; Recent::MAX_KEPT]);
        for k in 0..1000u32 {
            r.put(&k.to_be_bytes(), &big);
        }
        assert!(r.bytes <= Recent::MAX_BYTES, "{}", r.bytes);
    }

    #[test]
    fn small_messages_and_narrow_windows_go_uncompressed() {
        let mut s = Session::new(Agreed::default(), 1 << 20);
        assert!(!s.deflate(&[7; MIN_SIZE - 1], |_| panic!("compressed")));
        assert!(s.deflate(&[7; MIN_SIZE], |b| assert!(b.len() < 20)));
        let mut narrow = Session::new(
            Agreed {
                client_max_window_bits: Some(8),
                ..Agreed::default()
            },
            1 << 20,
        );
        assert!(!narrow.deflate(&[7; 4096], |_| panic!("compressed")));
    }

    #[test]
    fn inflation_is_bounded_and_bad_data_is_an_error() {
        let mut c = Compress::new(Compression::default(), false);
        let wire = compress(&mut c, &[0u8; 100_000]);
        let a = Agreed {
            server_no_context_takeover: true,
            ..Agreed::default()
        };
        assert!(Session::new(a, 100_000).inflate(&wire).is_ok());
        let e = Session::new(a, 99_999).inflate(&wire).unwrap_err();
        assert!(e.contains("99999"), "{e}");
        let e = Session::new(a, 1 << 20)
            .inflate(&[0xff, 0xff, 0xff])
            .unwrap_err();
        assert!(e.contains("does not inflate"), "{e}");
        // an empty message: the tail alone
        let mut c = Compress::new(Compression::default(), false);
        let wire = compress(&mut c, b"");
        assert_eq!(Session::new(a, 10).inflate(&wire).unwrap(), Bytes::new());
    }

    #[test]
    fn a_final_block_ends_the_stream_and_the_next_message_starts_anew() {
        // BFINAL set: a whole stream finished with FlushCompress::Finish
        let data = sample(5000, 1);
        let mut c = Compress::new(Compression::default(), false);
        let mut wire = Vec::with_capacity(10_000);
        c.compress_vec(&data, &mut wire, FlushCompress::Finish)
            .unwrap();
        let mut s = Session::new(Agreed::default(), 1 << 20);
        assert_eq!(s.inflate(&wire).unwrap(), data);
        assert_eq!(
            s.inflate(&wire).unwrap(),
            data,
            "a new stream after the end"
        );
    }

    #[test]
    fn compressed_headers_are_marked_and_others_left_alone() {
        let mut s = Session::new(Agreed::default(), 1 << 20);
        // FIN + RSV1 + text
        let mut b = [0xC1, 0x05];
        s.mark_compressed(&mut b);
        assert_eq!(b, [0x82, 0x05]);
        assert_eq!(s.take_compressed(), Some(true));
        assert_eq!(s.take_compressed(), None);
        // RSV1 + binary, no FIN
        let mut b = [0x42, 0x05];
        s.mark_compressed(&mut b);
        assert_eq!(b, [0x02, 0x05]);
        assert_eq!(s.take_compressed(), Some(false));
        // plain, a ping with RSV1, a continuation with RSV1, RSV2: untouched
        for h in [0x82u8, 0xC9, 0x40, 0xA2] {
            let mut b = [h, 0x00];
            s.mark_compressed(&mut b);
            assert_eq!(b[0], h);
            assert_eq!(s.take_compressed(), None);
        }
    }
}
