//! Inflating a client's compressed message as its bytes arrive, within the message limit.

use crate::{Error, Result};
use flate2::{Decompress, FlushDecompress, Status};
use std::cell::RefCell;

/// What RFC 7692 section 7.2.2 appends to a message's payload before inflating it: the end of
/// the empty stored block the sender's sync flush wrote and removed.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A final fixed-Huffman block holding only its end code. After [`TAIL`] a whole message
/// leaves the inflater between two blocks, where this ends the stream; a truncated message
/// leaves it inside a block, where it does not.
const END_OF_STREAM: [u8; 2] = [0x03, 0x00];

/// The first buffer an inflated message gets, before it doubles as the output grows.
const FIRST_OUTPUT: usize = 4096;

/// At most this many idle inflaters are kept per thread for the next compressed message.
const POOLED: usize = 8;

thread_local! {
    // boxed: an inflater moves between the pool and a decoder without being boxed again
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Inflater>>> = const { RefCell::new(Vec::new()) };
}

/// The inflater of one connection's compressed messages: raw deflate (no zlib header), a
/// window of 2^15 bytes, which reads any window a client compresses with.
///
/// An inflater is held only while a message arrives, unless the client keeps its context
/// across messages; [`Inflater::take`] and [`Inflater::give_back`] reuse them per thread.
pub struct Inflater {
    raw: Decompress,
    /// The client's deflate stream ended (a block with BFINAL): what follows in this message
    /// is ignored, and the next message starts a new stream.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("total_in", &self.raw.total_in())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater::new()
    }
}

impl Inflater {
    /// A new inflater at the start of a stream.
    pub fn new() -> Inflater {
        Inflater {
            raw: Decompress::new(false),
            ended: false,
        }
    }

    /// An inflater at the start of a stream, from this thread's pool when it has one.
    pub fn take() -> Box<Inflater> {
        POOL.with(|pool| pool.borrow_mut().pop())
            .unwrap_or_else(|| Box::new(Inflater::new()))
    }

    /// Resets `inflater` and keeps it for this thread's next [`take`](Self::take) (a few are
    /// kept; the rest are freed).
    pub fn give_back(mut inflater: Box<Inflater>) {
        inflater.reset();
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED {
                pool.push(inflater);
            }
        });
    }

    /// Back to the start of a stream, forgetting the context.
    pub fn reset(&mut self) {
        self.raw.reset(false);
        self.ended = false;
    }

    /// Inflates the next compressed bytes of a message onto `out`. Fails with
    /// [`Error::MessageTooBig`] as soon as `out` would hold more than `limit` bytes (a deflate
    /// bomb is never inflated past the limit), and with [`Error::BadCompressedData`] when the
    /// bytes are not deflate. `out` grows by doubling, never past `limit` + 1 bytes.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
        while !self.ended {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(Error::MessageTooBig);
                }
                let grow = out.len().max(FIRST_OUTPUT).min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (self.raw.total_in(), out.len());
            let status = self
                .raw
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| Error::BadCompressedData)?;
            let used = (self.raw.total_in() - in_before) as usize;
            input = &input[used..];
            if out.len() > limit {
                return Err(Error::MessageTooBig);
            }
            match status {
                Status::StreamEnd => self.ended = true,
                // output space left over with input used up: the inflater wants more input
                _ if input.is_empty() && out.len() < out.capacity() => break,
                // no progress with room and input left cannot happen with a valid stream
                _ if used == 0 && out.len() == out_before && out.len() < out.capacity() => {
                    return Err(Error::BadCompressedData);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the tail its sender removed onto `out` (within `limit`), and
    /// checks that the message ended between two deflate blocks ([`Error::BadCompressedData`]
    /// for a truncated one). With `keep_context` the stream goes on into the next message (a
    /// cut there cannot be told from a block boundary: the next message then fails to inflate);
    /// without, the inflater is reset.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize, keep_context: bool) -> Result<()> {
        if self.raw.total_in() == 0 && !self.ended {
            // an empty payload with RSV1: an empty message (RFC 7692 section 7.2.3.6 writes it
            // as one 0x00 byte, which inflates as usual; some senders send nothing at all)
            return Ok(());
        }
        self.push(&TAIL, out, limit)?;
        if keep_context && !self.ended {
            return Ok(());
        }
        let whole = self.ended || {
            let mut scratch = [0u8; 16];
            let before = self.raw.total_out();
            let status = self
                .raw
                .decompress(&END_OF_STREAM, &mut scratch, FlushDecompress::Finish)
                .map_err(|_| Error::BadCompressedData)?;
            status == Status::StreamEnd && self.raw.total_out() == before
        };
        self.reset();
        if whole {
            Ok(())
        } else {
            Err(Error::BadCompressedData)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::compress;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"{\"price\":42,\"symbol\":\"ACME\"} "[i % 29] ^ ((i / 997) as u8 % 3))
            .collect()
    }

    fn inflate_all(pieces: &[&[u8]], limit: usize) -> Result<Vec<u8>> {
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        for piece in pieces {
            inflater.push(piece, &mut out, limit)?;
        }
        inflater.finish(&mut out, limit, false)?;
        Ok(out)
    }

    #[test]
    fn what_the_compressor_makes_inflates_back_whatever_the_cuts() {
        for n in [1, 100, 5000, 70_000, 300_000] {
            let plain = text(n);
            let Some(packed) = compress::compress(&plain, 6) else {
                assert!(n < 20, "{n} bytes of text should shrink");
                continue;
            };
            assert_eq!(inflate_all(&[&packed], n).unwrap(), plain, "{n} whole");
            let pieces: Vec<&[u8]> = packed.chunks(7).collect();
            assert_eq!(
                inflate_all(&pieces, n).unwrap(),
                plain,
                "{n} in 7-byte pieces"
            );
        }
    }

    #[test]
    fn an_empty_message_is_one_zero_byte_or_nothing() {
        assert_eq!(inflate_all(&[&[0x00]], 10), Ok(Vec::new()));
        assert_eq!(inflate_all(&[], 10), Ok(Vec::new()));
        assert_eq!(inflate_all(&[&[]], 10), Ok(Vec::new()));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_with_bounded_memory() {
        let zeros = vec![0u8; 8 << 20];
        let packed = compress::compress(&zeros, 9).unwrap();
        assert!(packed.len() < 10_000, "{} bytes", packed.len());
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        let limit = 1 << 20;
        assert_eq!(
            inflater.push(&packed, &mut out, limit),
            Err(Error::MessageTooBig)
        );
        assert!(out.capacity() <= limit + 1, "capacity {}", out.capacity());
        // exactly at the limit is fine
        let exact = compress::compress(&zeros[..limit], 9).unwrap();
        assert_eq!(inflate_all(&[&exact], limit).unwrap().len(), limit);
        assert_eq!(inflate_all(&[&exact], limit - 1), Err(Error::MessageTooBig));
    }

    #[test]
    fn garbage_and_truncated_streams_are_refused() {
        assert_eq!(
            inflate_all(&[&[0xff, 0xff, 0xff, 0xff]], 1000),
            Err(Error::BadCompressedData)
        );
        let plain = text(50_000);
        let packed = compress::compress(&plain, 6).unwrap();
        for cut in [packed.len() / 3, packed.len() / 2, packed.len() - 3] {
            let result = inflate_all(&[&packed[..cut]], 1 << 20);
            assert!(result.is_err(), "cut at {cut} of {}", packed.len());
        }
    }

    #[test]
    fn a_final_block_ends_the_message_and_the_next_starts_fresh() {
        // a sender may end a message with BFINAL (a whole raw deflate stream)
        let plain = text(3000);
        let mut raw = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut packed = Vec::with_capacity(4000);
        raw.compress_vec(&plain, &mut packed, flate2::FlushCompress::Finish)
            .unwrap();
        let mut inflater = Inflater::new();
        let mut out = Vec::new();
        inflater.push(&packed, &mut out, 1 << 20).unwrap();
        inflater.finish(&mut out, 1 << 20, true).unwrap();
        assert_eq!(out, plain);
        let again = compress::compress(&plain, 6).unwrap();
        let mut out = Vec::new();
        inflater.push(&again, &mut out, 1 << 20).unwrap();
        inflater.finish(&mut out, 1 << 20, true).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn a_kept_context_reads_messages_that_refer_back() {
        // a client that takes its context over: one stream, sync flushed per message
        let mut raw = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut inflater = Inflater::new();
        let message = text(2000);
        for round in 0..3 {
            let mut packed = Vec::with_capacity(4000);
            raw.compress_vec(&message, &mut packed, flate2::FlushCompress::Sync)
                .unwrap();
            assert_eq!(&packed[packed.len() - 4..], &TAIL);
            packed.truncate(packed.len() - 4);
            if round > 0 {
                assert!(packed.len() < 100, "refers back: {} bytes", packed.len());
            }
            let mut out = Vec::new();
            inflater.push(&packed, &mut out, 1 << 20).unwrap();
            inflater.finish(&mut out, 1 << 20, true).unwrap();
            assert_eq!(out, message, "round {round}");
        }
    }

    #[test]
    fn the_pool_hands_back_fresh_inflaters() {
        let plain = text(2000);
        let packed = compress::compress(&plain, 6).unwrap();
        let mut used = Inflater::take();
        let mut out = Vec::new();
        used.push(&packed[..packed.len() / 2], &mut out, 1 << 20)
            .unwrap();
        Inflater::give_back(used);
        let mut again = Inflater::take();
        let mut out = Vec::new();
        again.push(&packed, &mut out, 1 << 20).unwrap();
        again.finish(&mut out, 1 << 20, false).unwrap();
        assert_eq!(out, plain);
    }
}
