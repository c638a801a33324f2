//! A connection's write queue: small frames copied into a buffer of the connection, large
//! ones as (inline header, shared payload) pairs, flushed with one `write` or a vectored write
//! (on a plain socket `send` and `sendmsg`).
//!
//! A frame of at most [`COPY_MAX`] bytes is copied, header and payload, onto the end of the
//! queue's last buffer (uWebSockets calls this corking): sixteen echoed messages or deliveries
//! of a burst are one buffer and one `write`, with no allocation, reference count or queue
//! slot of their own. The buffers come from, and go back to, a small pool of the worker
//! thread. A larger frame is never copied: a fanout of one large message to ten thousand
//! connections queues ten thousand references to one buffer. A flush gathers up to
//! [`MAX_IOVECS`] slices into one vectored write and resumes a partial write where it stopped.
//! A batch of deliveries to a connection with nothing queued is written at once
//! ([`Outbox::write_frames`]), and only what the socket does not take is queued.
//!
//! The queue counts what it makes the node hold ([`Outbox::held_bytes`]): each item's bytes
//! (a buffer's capacity), its slot ([`ENTRY_COST`]), and a larger buffer its payload keeps
//! alive ([`Outbox::push_retaining`]), until the item is written and dropped. That, not the
//! bytes on the wire, is what a connection's limit is checked against: a flood of empty pongs
//! costs what it really costs.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use wsgate_core::frame::{FrameHeader, HeaderBuf, OpCode, OutFrame};

thread_local! {
    /// Where a small queue is copied for its single `write`: one per worker thread, reused, so
    /// the copy costs neither an allocation nor zeroing a buffer.
    static STAGING: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(COALESCE_MAX));
}

thread_local! {
    /// Emptied copy buffers of this worker thread, for the next queue to fill: at most
    /// [`SPARE_MAX`] of them, none larger than [`SPARE_CAPACITY_MAX`].
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frames of at most this many bytes (header and payload) are copied into the queue's buffer
/// instead of queued by reference.
pub const COPY_MAX: usize = 1024;

/// The capacity of a new copy buffer: a burst of small frames, or one [`COPY_MAX`] frame.
const COPY_BUFFER: usize = 2048;

/// Emptied copy buffers kept per worker thread for reuse.
const SPARE_MAX: usize = 2048;

/// The largest copy buffer kept for reuse (a burst grows some): with [`SPARE_MAX`], at most
/// 8 MiB of spares per worker thread, given back when the worker goes quiet
/// ([`release_spares`]).
const SPARE_CAPACITY_MAX: usize = 2 * COPY_BUFFER;

/// A copy buffer from the thread's spares, or a new one.
fn take_buffer() -> Vec<u8> {
    SPARE
        .with_borrow_mut(|spare| spare.pop())
        .unwrap_or_else(|| Vec::with_capacity(COPY_BUFFER))
}

/// Frees this thread's spare copy buffers (a worker does when connections have closed and it
/// gives memory back).
pub fn release_spares() {
    SPARE.with_borrow_mut(|spare| *spare = Vec::new());
}

/// Gives a written copy buffer back to the thread's spares (or frees it when they are full,
/// or it grew large).
fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() <= SPARE_CAPACITY_MAX {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_MAX {
                buffer.clear();
                spare.push(buffer);
            }
        });
    }
}

/// Where the frame that holds byte `at` of `frames` (whole server frames, back to back) ends.
fn end_of_frame_at(frames: &[u8], at: usize) -> usize {
    let mut start = 0;
    while start < frames.len() {
        let Ok(Some((header, len))) = FrameHeader::parse(&frames[start..]) else {
            return frames.len(); // not reached: the buffer holds whole frames only
        };
        let end = start + len + header.payload_len as usize;
        if at < end {
            return end;
        }
        start = end;
    }
    frames.len()
}

/// One queued item: small frames copied into one buffer, a WebSocket frame (and the size of a
/// buffer its payload keeps alive, when larger than the payload), or raw bytes (an HTTP
/// answer).
#[derive(Debug, Clone)]
enum Chunk {
    Copied(Vec<u8>),
    /// Whole frames in a buffer shared with other outboxes (a batch of deliveries).
    Frames(Bytes),
    Frame(OutFrame),
    Retaining(OutFrame, usize),
    Raw(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Copied(v) => v.len(),
            Chunk::Frames(b) => b.len(),
            Chunk::Frame(f) | Chunk::Retaining(f, _) => f.wire_len(),
            Chunk::Raw(b) => b.len(),
        }
    }

    /// What the item makes the node hold while it is queued.
    fn held(&self) -> usize {
        match self {
            Chunk::Copied(v) => v.capacity() + ENTRY_COST,
            Chunk::Retaining(f, buffer) => {
                f.wire_len() + ENTRY_COST + buffer.saturating_sub(f.payload().len())
            }
            Chunk::Frame(_) | Chunk::Frames(_) | Chunk::Raw(_) => self.len() + ENTRY_COST,
        }
    }

    fn parts(&self) -> [&[u8]; 2] {
        match self {
            Chunk::Copied(v) => [&v[..], &[]],
            Chunk::Frame(f) | Chunk::Retaining(f, _) => [f.header(), &f.payload()[..]],
            Chunk::Frames(b) | Chunk::Raw(b) => [&b[..], &[]],
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
    /// Items in order; the copy buffer `tail` goes after all of them.
    frames: VecDeque<Chunk>,
    /// Small frames copied after every item of `frames`: allocated (from the thread's spares)
    /// only while it holds bytes.
    tail: Vec<u8>,
    /// Bytes of the front item already written (of `tail` when `frames` is empty).
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
    /// Queued items completely written (a buffer of small frames counts once).
    pub items: usize,
}

impl Outbox {
    /// An empty outbox (no allocation until the first push).
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues a frame: copied when it is small ([`COPY_MAX`]), else by reference.
    pub fn push(&mut self, frame: OutFrame) {
        if frame.wire_len() <= COPY_MAX {
            self.copy(&frame);
        } else {
            self.push_chunk(Chunk::Frame(frame));
        }
    }

    /// Queues a frame shared with other queues (a delivery): copied when it is small
    /// ([`COPY_MAX`]), else another reference to its payload.
    pub fn push_shared(&mut self, frame: &OutFrame) {
        if frame.wire_len() <= COPY_MAX {
            self.copy(frame);
        } else {
            self.push_chunk(Chunk::Frame(frame.clone()));
        }
    }

    /// Queues a frame whose payload keeps a buffer of `buffer` bytes alive (a slice of a
    /// larger buffer): it counts as holding the whole buffer. A small frame is copied, and
    /// keeps nothing alive.
    pub fn push_retaining(&mut self, frame: OutFrame, buffer: usize) {
        if frame.wire_len() <= COPY_MAX {
            self.copy(&frame);
        } else {
            self.push_chunk(Chunk::Retaining(frame, buffer));
        }
    }

    /// Queues whole frames in a buffer shared with other outboxes (a batch of deliveries).
    pub fn push_frames(&mut self, frames: Bytes) {
        self.push_chunk(Chunk::Frames(frames));
    }

    /// [`push_frames`](Self::push_frames), but written to `out` at once when nothing is
    /// queued before them (an idle subscriber): what `out` takes is never queued, so the
    /// common delivery costs one `send` and no queue entry. What it does not take (it would
    /// block, or took a part) is queued as after a partial flush. Returns the bytes written;
    /// an error is returned with the frames queued, for the next flush to meet again.
    pub fn write_frames<W: Write>(&mut self, frames: &Bytes, out: &mut W) -> io::Result<usize> {
        if !self.is_empty() || frames.is_empty() {
            self.push_frames(frames.clone());
            return Ok(0);
        }
        let written = loop {
            match out.write(frames) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => break result,
            }
        };
        self.after_write(frames, written)
    }

    /// What [`write_frames`](Self::write_frames) does after its write, for frames written to
    /// the socket elsewhere (one of many sends made at once) while nothing was queued:
    /// `written` is what the write returned. What it did not take is queued; returns the
    /// bytes written, or the error, with the frames queued for the next flush to meet again.
    pub fn after_write(&mut self, frames: &Bytes, written: io::Result<usize>) -> io::Result<usize> {
        debug_assert!(self.is_empty(), "written past queued bytes");
        match written {
            Ok(n) if n >= frames.len() => Ok(frames.len()),
            Ok(n) => {
                self.push_frames(frames.clone());
                self.advance(n);
                Ok(n)
            }
            Err(e) => {
                self.push_frames(frames.clone());
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    Ok(0)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Queues raw bytes (an HTTP answer).
    pub fn push_raw(&mut self, bytes: Bytes) {
        self.push_chunk(Chunk::Raw(bytes));
    }

    fn push_chunk(&mut self, chunk: Chunk) {
        self.seal_tail();
        self.queued += chunk.len();
        self.held += chunk.held();
        self.frames.push_back(chunk);
    }

    /// Moves the copy buffer into the queue of items, so that what is pushed next goes after
    /// it. What it holds is unchanged.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            // `head_written` stays with the same bytes: it counts in the front item
            self.frames
                .push_back(Chunk::Copied(std::mem::take(&mut self.tail)));
        }
    }

    /// Queues a frame of `opcode` carrying a copy of `payload`, which must be small: its frame
    /// at most [`COPY_MAX`] bytes (an echo, straight from the read buffer).
    pub fn push_copy(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = HeaderBuf::server(opcode, payload.len());
        debug_assert!(header.as_bytes().len() + payload.len() <= COPY_MAX);
        self.copy_parts(header.as_bytes(), payload);
    }

    /// Copies `frame` onto the end of the copy buffer.
    fn copy(&mut self, frame: &OutFrame) {
        self.copy_parts(frame.header(), frame.payload());
    }

    /// Copies a frame's header and payload onto the end of the copy buffer; a full one
    /// ([`COALESCE_MAX`]) is sealed and a new one begun.
    fn copy_parts(&mut self, header: &[u8], payload: &[u8]) {
        let n = header.len() + payload.len();
        if !self.tail.is_empty() && self.tail.len() + n > COALESCE_MAX {
            self.seal_tail();
        }
        if self.tail.capacity() == 0 {
            self.tail = take_buffer();
            self.held += self.tail.capacity() + ENTRY_COST;
        }
        let capacity = self.tail.capacity();
        self.tail.extend_from_slice(header);
        self.tail.extend_from_slice(payload);
        self.held += self.tail.capacity() - capacity;
        self.queued += n;
    }

    /// Drops every frame not started yet, keeping a partly written one so the stream stays
    /// well-formed. Used before closing a slow consumer: its close goes out next.
    pub fn drop_unstarted(&mut self) {
        if self.head_written == 0 {
            self.clear();
            return;
        }
        if self.frames.is_empty() {
            // the copy buffer was started: it ends with the frame being written
            let end = end_of_frame_at(&self.tail, self.head_written);
            self.queued -= self.tail.len() - end;
            self.tail.truncate(end);
            return;
        }
        self.drop_tail();
        while self.frames.len() > 1 {
            let dropped = self.frames.pop_back().expect("non-empty");
            self.queued -= dropped.len();
            self.held -= dropped.held();
        }
        match self.frames.front_mut() {
            Some(Chunk::Copied(buffer)) => {
                let end = end_of_frame_at(buffer, self.head_written);
                self.queued -= buffer.len() - end;
                buffer.truncate(end);
            }
            Some(Chunk::Frames(frames)) => {
                let end = end_of_frame_at(frames, self.head_written);
                self.queued -= frames.len() - end;
                self.held -= frames.len() - end;
                frames.truncate(end);
            }
            _ => {}
        }
    }

    /// Gives the copy buffer back, unwritten.
    fn drop_tail(&mut self) {
        if self.tail.capacity() > 0 {
            self.queued -= self.tail.len();
            self.held -= self.tail.capacity() + ENTRY_COST;
            give_back(std::mem::take(&mut self.tail));
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
        self.frames.is_empty() && self.tail.is_empty()
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&mut self) {
        self.drop_tail();
        self.frames = VecDeque::new();
        self.head_written = 0;
        self.queued = 0;
        self.held = 0;
    }

    /// Writes as much as `out` takes. Stops at `WouldBlock` (returning what was written) or when
    /// the queue is empty; any other error is returned.
    pub fn flush<W: Write>(&mut self, out: &mut W) -> io::Result<Flushed> {
        let mut total = Flushed { bytes: 0, items: 0 };
        while !self.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.gather(&mut slices);
                let result = if count == 1 {
                    out.write(&slices[0])
                } else if self.queued <= COALESCE_MAX {
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
            total.items += self.advance(n);
        }
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            // an idle connection holds no queue: its slots (a quarter KiB at the least) would
            // otherwise stay with every connection that ever sent something, which is all of
            // them after the upgrade's answer
            self.frames = VecDeque::new();
        }
        Ok(total)
    }

    /// The unwritten bytes when they lie in one piece (the common small queue: copied frames
    /// only, or one buffer of frames): what one `send` can take whole. `None` when nothing is
    /// queued, or it lies in several pieces (then [`flush`](Self::flush) writes it).
    pub fn single_piece(&self) -> Option<&[u8]> {
        let piece = match (self.frames.len(), self.frames.front()) {
            (0, _) => &self.tail[..],
            (1, Some(chunk)) if self.tail.is_empty() => match chunk.parts() {
                [only, []] => only,
                _ => return None,
            },
            _ => return None,
        };
        let left = piece.get(self.head_written..).unwrap_or_default();
        (!left.is_empty()).then_some(left)
    }

    /// Marks the first `n` bytes of [`single_piece`](Self::single_piece), sent elsewhere (one
    /// of many sends made at once), as written.
    pub fn wrote(&mut self, n: usize) -> Flushed {
        debug_assert!(self.single_piece().is_some_and(|p| n <= p.len()));
        let items = self.advance(n);
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new(); // as `flush` leaves it
        }
        Flushed { bytes: n, items }
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many were filled.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        let mut skip = self.head_written;
        let parts = self
            .frames
            .iter()
            .flat_map(|chunk| chunk.parts())
            .chain(std::iter::once(&self.tail[..]));
        for part in parts {
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
        count
    }

    /// Marks `n` bytes written; returns the number of items completed.
    fn advance(&mut self, mut n: usize) -> usize {
        self.queued -= n;
        let mut done = 0;
        while n > 0 {
            let front = match self.frames.front() {
                Some(chunk) => chunk.len(),
                None => self.tail.len(),
            };
            let left = front - self.head_written;
            if n < left {
                self.head_written += n;
                return done;
            }
            n -= left;
            self.head_written = 0;
            done += 1;
            match self.frames.pop_front() {
                Some(written) => {
                    self.held -= written.held();
                    if let Chunk::Copied(buffer) = written {
                        give_back(buffer);
                    }
                }
                None => {
                    self.held -= self.tail.capacity() + ENTRY_COST;
                    give_back(std::mem::take(&mut self.tail));
                }
            }
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
            .map(|i| OutFrame::new(OpCode::Binary, Bytes::from(vec![i as u8; i * 37 % 3000])))
            .collect()
    }

    #[test]
    fn frames_written_straight_leave_only_what_the_socket_did_not_take() {
        let one = OutFrame::new(OpCode::Binary, Bytes::from(vec![1u8; 100]));
        let two = OutFrame::new(OpCode::Binary, Bytes::from(vec![2u8; 100]));
        let mut batch = one.to_vec();
        batch.extend(two.to_vec());
        let batch = Bytes::from(batch);
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        // all taken: nothing queued
        let mut outbox = Outbox::new();
        assert_eq!(outbox.write_frames(&batch, &mut w).unwrap(), batch.len());
        assert!(outbox.is_empty() && outbox.held_bytes() == 0);
        assert_eq!(w.got, batch);
        // a part taken: the rest queued as if flushed that far; cut for a slow consumer, the
        // started frame still completes
        w.got.clear();
        w.budget = 30;
        assert_eq!(outbox.write_frames(&batch, &mut w).unwrap(), 30);
        assert_eq!(outbox.queued_bytes(), batch.len() - 30);
        outbox.drop_unstarted();
        w.budget = usize::MAX;
        outbox.flush(&mut w).unwrap();
        assert_eq!(w.got, one.to_vec(), "the started frame, whole");
        // nothing taken (it would block): all queued; something queued before: no write
        let mut outbox = Outbox::new();
        w.budget = 0;
        let calls = w.calls;
        assert_eq!(outbox.write_frames(&batch, &mut w).unwrap(), 0);
        assert_eq!(outbox.queued_bytes(), batch.len());
        assert_eq!(outbox.write_frames(&batch, &mut w).unwrap(), 0);
        assert_eq!(w.calls, calls + 1, "queued behind, not written");
        w.got.clear();
        w.budget = usize::MAX;
        outbox.flush(&mut w).unwrap();
        assert_eq!(w.got, [&batch[..], &batch[..]].concat());
    }

    #[test]
    fn spare_buffers_are_bounded_and_given_back() {
        release_spares();
        give_back(Vec::with_capacity(COPY_BUFFER));
        give_back(Vec::with_capacity(COALESCE_MAX)); // grew in a burst: freed
        assert_eq!(SPARE.with_borrow(|s| s.len()), 1);
        for _ in 0..SPARE_MAX + 10 {
            give_back(Vec::with_capacity(COPY_BUFFER));
        }
        assert_eq!(SPARE.with_borrow(|s| s.len()), SPARE_MAX);
        release_spares();
        assert_eq!(SPARE.with_borrow(|s| (s.len(), s.capacity())), (0, 0));
    }

    #[test]
    fn an_emptied_outbox_holds_no_allocation() {
        let mut outbox = Outbox::new();
        outbox.push_raw(Bytes::from_static(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ));
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"hello")));
        assert!(outbox.frames.capacity() > 0 && outbox.tail.capacity() > 0);
        outbox.flush(&mut Vec::new()).unwrap();
        assert_eq!(outbox.tail.capacity(), 0, "the copy buffer went back");
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
        assert_eq!(done.bytes, 7000);
        assert_eq!(w.calls, 1, "copied into one buffer, written at once");
        // frames too large to copy: one call per MAX_IOVECS slices
        let mut outbox = Outbox::new();
        let large = OutFrame::new(OpCode::Binary, Bytes::from(vec![1u8; COPY_MAX]));
        for _ in 0..1000 {
            outbox.push(large.clone());
        }
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        let done = outbox.flush(&mut w).unwrap();
        assert_eq!(done.items, 1000);
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
    fn pushes_between_partial_writes_keep_their_order() {
        // small (copied), large (shared) and raw items, pushed while earlier ones are half
        // written, in every proportion of write sizes
        for chunk in [7, 100, 1500, 5000, 1 << 20] {
            let mut outbox = Outbox::new();
            let mut expected = Vec::new();
            let mut w = Trickle {
                got: Vec::new(),
                chunk,
                budget: 0,
                calls: 0,
            };
            for (i, f) in frames().into_iter().enumerate() {
                if i % 13 == 0 {
                    let raw = Bytes::from(format!("raw {i};"));
                    expected.extend_from_slice(&raw);
                    outbox.push_raw(raw);
                }
                expected.extend(f.to_vec());
                if i % 2 == 0 {
                    outbox.push_shared(&f);
                } else {
                    outbox.push(f);
                }
                w.budget = i * 131 % 2000;
                outbox.flush(&mut w).unwrap();
                assert_eq!(outbox.queued_bytes(), expected.len() - w.got.len());
            }
            w.budget = usize::MAX;
            outbox.flush(&mut w).unwrap();
            assert!(w.got == expected, "chunk {chunk}: the bytes in order");
            assert!(outbox.is_empty());
            assert_eq!((outbox.queued_bytes(), outbox.held_bytes()), (0, 0));
        }
    }

    #[test]
    fn a_cut_queue_of_copied_frames_ends_with_the_started_one() {
        let mut outbox = Outbox::new();
        let frames: Vec<OutFrame> = (0..10u8)
            .map(|i| OutFrame::new(OpCode::Binary, Bytes::from(vec![i; 100])))
            .collect();
        for f in &frames {
            outbox.push_shared(f);
        }
        assert!(
            outbox.frames.is_empty() && outbox.tail.len() == 1020,
            "one copy buffer"
        );
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: 150,
            calls: 0,
        };
        outbox.flush(&mut w).unwrap();
        outbox.drop_unstarted();
        let close = OutFrame::close_with(wsgate_core::close::CloseCode::TRY_AGAIN_LATER, "slow");
        outbox.push(close.clone());
        w.budget = usize::MAX;
        outbox.flush(&mut w).unwrap();
        let mut expected = frames[0].to_vec();
        expected.extend(frames[1].to_vec());
        expected.extend(close.to_vec());
        assert_eq!(
            w.got, expected,
            "the second frame was started: it completes"
        );
        assert_eq!((outbox.queued_bytes(), outbox.held_bytes()), (0, 0));
    }

    #[test]
    fn what_is_held_counts_slots_and_retained_buffers_until_written() {
        let mut outbox = Outbox::new();
        for _ in 0..1000 {
            // empty pongs: 2 bytes each on the wire, copied into one buffer
            outbox.push(OutFrame::new(OpCode::Pong, Bytes::new()));
        }
        assert_eq!(outbox.queued_bytes(), 2000);
        let copied = outbox.tail.capacity() + ENTRY_COST;
        assert!(
            outbox.tail.len() == 2000 && outbox.frames.is_empty(),
            "copied"
        );
        assert_eq!(
            outbox.held_bytes(),
            copied,
            "the buffer's capacity and a slot"
        );
        // a large slice of a larger buffer counts the whole buffer
        let slice = Bytes::from(vec![7u8; 65536]).slice(0..2000);
        outbox.push_retaining(OutFrame::new(OpCode::Binary, slice), 65536);
        let retained = 2004 + ENTRY_COST + 63536;
        assert_eq!(outbox.held_bytes(), copied + retained);
        // a small one is copied and keeps nothing alive
        let mut other = Outbox::new();
        let small = Bytes::from(vec![7u8; 65536]).slice(0..100);
        other.push_retaining(OutFrame::new(OpCode::Binary, small), 65536);
        assert!(other.held_bytes() < 4096);
        // a partial write frees nothing; a written item frees all it held
        let mut w = Trickle {
            got: Vec::new(),
            chunk: usize::MAX,
            budget: 2001,
            calls: 0,
        };
        outbox.flush(&mut w).unwrap();
        assert_eq!(outbox.held_bytes(), retained);
        outbox.drop_unstarted();
        assert_eq!(outbox.held_bytes(), retained, "started: kept");
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

    #[test]
    fn a_queue_in_one_piece_is_offered_whole_and_marked_written_as_sent_elsewhere() {
        let mut outbox = Outbox::new();
        assert_eq!(outbox.single_piece(), None, "nothing queued");
        // copied frames: one piece, the copy buffer
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"ab")));
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"cd")));
        let wire: Vec<u8> = [b"ab", b"cd"]
            .iter()
            .flat_map(|p| OutFrame::new(OpCode::Text, Bytes::from_static(*p)).to_vec())
            .collect();
        assert_eq!(outbox.single_piece(), Some(&wire[..]));
        assert_eq!(outbox.wrote(3), Flushed { bytes: 3, items: 0 });
        assert_eq!(
            outbox.single_piece(),
            Some(&wire[3..]),
            "resumed where it stopped"
        );
        assert_eq!(outbox.wrote(wire.len() - 3), Flushed { bytes: 5, items: 1 });
        assert!(outbox.is_empty() && outbox.single_piece().is_none());
        assert_eq!(outbox.held_bytes(), 0);
        // one shared buffer of frames: one piece
        let batch = Bytes::from_static(b"\x82\x01z");
        outbox.push_frames(batch.clone());
        assert_eq!(outbox.single_piece(), Some(&batch[..]));
        // and something copied after it: two pieces, for `flush`
        outbox.push(OutFrame::new(OpCode::Text, Bytes::from_static(b"e")));
        assert_eq!(outbox.single_piece(), None);
        outbox.flush(&mut Vec::new()).unwrap();
        // a large frame: its header and its payload are two pieces
        outbox.push(OutFrame::new(
            OpCode::Binary,
            Bytes::from(vec![0u8; COPY_MAX + 1]),
        ));
        assert_eq!(outbox.single_piece(), None);
    }
}
