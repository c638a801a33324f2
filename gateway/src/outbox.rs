//! A connection's write queue: (inline header, shared payload) pairs flushed with `writev`.
//!
//! Pushing a frame never copies its payload: a fanout of one message to ten thousand
//! connections queues ten thousand references to one buffer. A flush gathers up to
//! [`MAX_IOVECS`] slices into one `writev` call and resumes a partial write where it stopped.
//!
//! The queue counts what it makes the node hold ([`Outbox::held_bytes`]): each item's bytes,
//! its slot ([`ENTRY_COST`]), and a larger buffer its payload keeps alive
//! ([`Outbox::push_retaining`]), until the item is written and dropped. That, not the bytes on
//! the wire, is what a connection's limit is checked against: a flood of empty pongs costs what
//! it really costs.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use wsgate_core::frame::OutFrame;

thread_local! {
    /// Where a small queue is copied for its single `write`: one per worker thread, reused, so
    /// the copy costs neither an allocation nor zeroing a buffer.
    static STAGING: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(COALESCE_MAX));
}

/// One queued item: a WebSocket frame (and the size of a buffer its payload keeps alive, when
/// larger than the payload), or raw bytes (an HTTP answer).
#[derive(Debug, Clone)]
enum Chunk {
    Frame(OutFrame),
    Retaining(OutFrame, usize),
    Raw(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Frame(f) | Chunk::Retaining(f, _) => f.wire_len(),
            Chunk::Raw(b) => b.len(),
        }
    }

    /// What the item makes the node hold while it is queued.
    fn held(&self) -> usize {
        let retained = match self {
            Chunk::Retaining(f, buffer) => buffer.saturating_sub(f.payload().len()),
            _ => 0,
        };
        self.len() + ENTRY_COST + retained
    }

    fn parts(&self) -> [&[u8]; 2] {
        match self {
            Chunk::Frame(f) | Chunk::Retaining(f, _) => [f.header(), &f.payload()[..]],
            Chunk::Raw(b) => [&b[..], &[]],
        }
    }
}

/// What one queued item costs beyond its bytes: its slot in the queue and the allocator's
/// rounding of its buffers.
pub const ENTRY_COST: usize = 64;

/// The most slices handed to one `writev` (two per frame: header and payload).
pub const MAX_IOVECS: usize = 128;

/// At most this many bytes queued in several pieces are copied into one buffer and written
/// with a single `write` instead of a `writev`: the kernel's cost per slice is higher than
/// copying a few small frames (measured in `benches/benches/outbox.rs`: 16 frames of 20 B,
/// 1.45 us copied against 5.4 us gathered). Payloads of larger queues are never copied.
pub const COALESCE_MAX: usize = 16 * 1024;

/// The write queue of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Chunk>,
    /// Bytes of the front frame already written.
    head_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// What the queued items make the node hold ([`Outbox::held_bytes`]).
    held: usize,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes written.
    pub bytes: usize,
    /// Frames completely written.
    pub frames: usize,
}

impl Outbox {
    /// An empty outbox (no allocation until the first push).
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues a frame.
    pub fn push(&mut self, frame: OutFrame) {
        self.push_chunk(Chunk::Frame(frame));
    }

    /// Queues a frame whose payload keeps a buffer of `buffer` bytes alive (a slice of a
    /// larger buffer): it counts as holding the whole buffer.
    pub fn push_retaining(&mut self, frame: OutFrame, buffer: usize) {
        self.push_chunk(Chunk::Retaining(frame, buffer));
    }

    /// Queues raw bytes (an HTTP answer).
    pub fn push_raw(&mut self, bytes: Bytes) {
        self.push_chunk(Chunk::Raw(bytes));
    }

    fn push_chunk(&mut self, chunk: Chunk) {
        self.queued += chunk.len();
        self.held += chunk.held();
        self.frames.push_back(chunk);
    }

    /// Drops every item not started yet, keeping a partly written one so the stream stays
    /// well-formed. Used before closing a slow consumer: its close goes out next.
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.frames.len() > keep {
            let dropped = self.frames.pop_back().expect("non-empty");
            self.queued -= dropped.len();
            self.held -= dropped.held();
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// What the queue makes the node hold: every item's bytes (written or not, until the item
    /// is done), its slot, and the buffers its payloads keep alive.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.head_written = 0;
        self.queued = 0;
        self.held = 0;
    }

    /// Writes as much as `out` takes. Stops at `WouldBlock` (returning what was written) or when
    /// the queue is empty; any other error is returned.
    pub fn flush<W: Write>(&mut self, out: &mut W) -> io::Result<Flushed> {
        let mut total = Flushed {
            bytes: 0,
            frames: 0,
        };
        while !self.frames.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.gather(&mut slices);
                let result = if count > 1 && self.queued <= COALESCE_MAX {
                    STAGING.with_borrow_mut(|staging| {
                        staging.clear();
                        for s in &slices[..count] {
                            staging.extend_from_slice(s);
                        }
                        out.write(staging)
                    })
                } else {
                    out.write_vectored(&slices[..count])
                };
                match result {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            total.bytes += n;
            total.frames += self.advance(n);
        }
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            // an idle connection holds no queue: its slots (a quarter KiB at the least) would
            // otherwise stay with every connection that ever sent something, which is all of
            // them after the upgrade's answer
            self.frames = VecDeque::new();
        }
        Ok(total)
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many were filled.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        let mut skip = self.head_written;
        for chunk in &self.frames {
            for part in chunk.parts() {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                if count == MAX_IOVECS {
                    return count;
                }
                slices[count] = IoSlice::new(&part[skip..]);
                skip = 0;
                count += 1;
            }
        }
        count
    }

    /// Marks `n` bytes written; returns the number of frames completed.
    fn advance(&mut self, mut n: usize) -> usize {
        self.queued -= n;
        let mut done = 0;
        while n > 0 {
            let front = self.frames.front().expect("wrote more than queued").len();
            let left = front - self.head_written;
            if n < left {
                self.head_written += n;
                return done;
            }
            n -= left;
            self.head_written = 0;
            let written = self.frames.pop_front().expect("non-empty");
            self.held -= written.held();
            done += 1;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wsgate_core::frame::OpCode;

    /// A writer that takes at most `chunk` bytes per call and blocks after `budget` bytes.
    struct Trickle {
        got: Vec<u8>,
        chunk: usize,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.chunk - n).min(self.budget);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.chunk || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames() -> Vec<OutFrame> {
        (0..300)
            .map(|i| OutFrame::new(OpCode::Binary, Bytes::from(vec![i as u8; i * 7 % 200])))
            .collect()
    }

    #[test]
    fn an_emptied_outbox_holds_no_allocation() {
        let mut outbox = Outbox::new();
        outbox.push_raw(Bytes::from_static(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ));
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"hello")));
        assert!(outbox.frames.capacity() > 0);
        outbox.flush(&mut Vec::new()).unwrap();
        assert!(outbox.is_empty());
        assert_eq!(
            outbox.frames.capacity(),
            0,
            "an idle connection's queue is freed"
        );
    }

    #[test]
    fn partial_writes_resume_exactly() {
        for chunk in [1, 3, 100, 4096, 1 << 20] {
            let mut outbox = Outbox::new();
            let mut expected = Vec::new();
            for f in frames() {
                expected.extend(f.to_vec());
                outbox.push(f);
            }
            assert_eq!(outbox.queued_bytes(), expected.len());
            let mut w = Trickle {
                got: Vec::new(),
                chunk,
                budget: expected.len() / 2,
                calls: 0,
            };
            let first = outbox.flush(&mut w).unwrap();
            assert_eq!(first.bytes, expected.len() / 2);
            assert_eq!(outbox.queued_bytes(), expected.len() - first.bytes);
            w.budget = usize::MAX;
            outbox.flush(&mut w).unwrap();
            assert!(outbox.is_empty());
            assert_eq!(outbox.queued_bytes(), 0);
            assert_eq!(w.got, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn many_frames_go_out_in_few_calls() {
        let mut outbox = Outbox::new();
        for _ in 0..1000 {
            outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"hello")));
        }
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        let done = outbox.flush(&mut w).unwrap();
        assert_eq!(done.frames, 1000);
        assert_eq!(
            w.calls,
            1000 * 2 / MAX_IOVECS + 1,
            "one call per {MAX_IOVECS} slices"
        );
        // a queue this small goes out in a single write of one copied buffer
        let mut small = Outbox::new();
        for _ in 0..10 {
            small.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"hello")));
        }
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        small.flush(&mut w).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.got, [0x81, 5, b'h', b'e', b'l', b'l', b'o'].repeat(10));
    }

    #[test]
    fn large_payloads_are_gathered_not_copied() {
        struct Slices(Vec<usize>);
        impl Write for Slices {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(1);
                Ok(buf.len())
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.0.push(bufs.len());
                Ok(bufs.iter().map(|b| b.len()).sum())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut outbox = Outbox::new();
        outbox.push(OutFrame::new(
            OpCode::Binary,
            Bytes::from(vec![0u8; COALESCE_MAX + 1]),
        ));
        let mut w = Slices(Vec::new());
        outbox.flush(&mut w).unwrap();
        assert_eq!(
            w.0,
            vec![2],
            "header and payload as two slices of one writev"
        );
    }

    #[test]
    fn pushing_shares_the_payload() {
        let payload = Bytes::from(vec![1u8; 1 << 20]);
        let mut boxes: Vec<Outbox> = (0..100).map(|_| Outbox::new()).collect();
        let frame = OutFrame::new(OpCode::Binary, payload.clone());
        for b in &mut boxes {
            b.push(frame.clone());
        }
        for b in &boxes {
            let Chunk::Frame(f) = &b.frames[0] else {
                panic!()
            };
            assert_eq!(f.payload().as_ptr(), payload.as_ptr());
        }
    }

    #[test]
    fn slow_consumer_queue_is_cut_but_stays_well_formed() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let mut outbox = Outbox::new();
        outbox.push_raw(Bytes::from_static(head));
        for _ in 0..10 {
            outbox.push(OutFrame::new(OpCode::Binary, Bytes::from(vec![0u8; 1000])));
        }
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: head.len() + 500,
            calls: 0,
        };
        outbox.flush(&mut w).unwrap();
        outbox.drop_unstarted();
        let close = OutFrame::close_with(wsgate_core::close::CloseCode::TRY_AGAIN_LATER, "slow");
        outbox.push(close.clone());
        w.budget = usize::MAX;
        outbox.flush(&mut w).unwrap();
        let mut expected = head.to_vec();
        expected.extend(OutFrame::new(OpCode::Binary, Bytes::from(vec![0u8; 1000])).to_vec());
        expected.extend(close.to_vec());
        assert_eq!(
            w.got, expected,
            "the started frame completes, then the close"
        );
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn what_is_held_counts_slots_and_retained_buffers_until_written() {
        let mut outbox = Outbox::new();
        for _ in 0..1000 {
            // an empty pong: 2 bytes on the wire, far more in memory
            outbox.push(OutFrame::new(OpCode::Pong, Bytes::new()));
        }
        assert_eq!(outbox.queued_bytes(), 2000);
        assert_eq!(outbox.held_bytes(), 1000 * (2 + ENTRY_COST));
        let slice = Bytes::from(vec![7u8; 65536]).slice(0..100);
        outbox.push_retaining(OutFrame::new(OpCode::Binary, slice), 65536);
        assert_eq!(
            outbox.held_bytes(),
            1000 * (2 + ENTRY_COST) + 102 + ENTRY_COST + 65436
        );
        // a partial write frees nothing; a written item frees all it held
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: 2001,
            calls: 0,
        };
        outbox.flush(&mut w).unwrap();
        assert_eq!(outbox.held_bytes(), 102 + ENTRY_COST + 65436);
        outbox.drop_unstarted();
        assert_eq!(
            outbox.held_bytes(),
            102 + ENTRY_COST + 65436,
            "started: kept"
        );
        w.budget = usize::MAX;
        outbox.flush(&mut w).unwrap();
        assert_eq!((outbox.held_bytes(), outbox.queued_bytes()), (0, 0));
        outbox.push_raw(Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"));
        outbox.drop_unstarted();
        assert_eq!(outbox.held_bytes(), 0);
    }

    #[test]
    fn errors_other_than_would_block_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut outbox = Outbox::new();
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"x")));
        assert_eq!(
            outbox.flush(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
