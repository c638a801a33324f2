//! The worker's connections: a slab, the ids that name its entries across reuse, and the list
//! of connections with something to send this turn.

use super::batch::{Audience, Batch, Reached};
use super::send_many::SendMany;
use super::slots::Slots;
use super::{Conn, Phase};
use crate::outbox::COPY_MAX;
use mio::Token;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use wsgate_core::deflate::SharedFrame;
use wsgate_core::frame::{OpCode, OutFrame};

/// A connection's identity: its slot in the slab and the generation of that slot. An id kept
/// past the connection's end (in a subscriber list, a timer, a held acknowledgement, a poll
/// event) never reaches the next connection in the same slot: every lookup checks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(u64);

impl ConnId {
    fn new(key: usize, generation: u32) -> ConnId {
        debug_assert!(
            key < u32::MAX as usize - 2,
            "slot {key} collides with fixed tokens"
        );
        ConnId(key as u64 | u64::from(generation) << 32)
    }

    fn key(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The poll token of the connection's socket: its id, so events carry the generation too.
    pub(crate) fn token(self) -> Token {
        Token(self.0 as usize)
    }

    /// The id a poll event's token names.
    pub(crate) fn from_token(token: Token) -> ConnId {
        ConnId(token.0 as u64)
    }
}

/// The connections of one worker.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    slab: Slots<Conn>,
    next_generation: u32,
    dirty: Vec<ConnId>,
    /// Connections with bytes left to read after their budget of this turn.
    deferred_reads: Vec<ConnId>,
    /// Publishers waiting for room in the inboxes they publish to.
    waiting_room: Vec<ConnId>,
    /// Small frames published in a row to one subscriber set, not queued yet.
    batch: Option<Batch>,
    /// What the deliveries queued since the worker last asked reached.
    reached: Reached,
    /// Writes a batch to all its idle subscribers with one system call.
    send_many: SendMany,
    /// Scratch of [`finish_batch`](Self::finish_batch): the idle subscribers written at once,
    /// their sockets, what each send did.
    direct: Vec<ConnId>,
    direct_fds: Vec<RawFd>,
    direct_results: Vec<io::Result<usize>>,
}

impl Connections {
    /// No connections. `io_uring`: write a batch to its idle subscribers with one io_uring
    /// submission where the kernel allows it (see [`SendMany`]).
    pub(crate) fn new(io_uring: bool) -> Connections {
        Connections {
            send_many: SendMany::new(io_uring),
            ..Connections::default()
        }
    }

    /// Whether batches go out with one submission for all their idle subscribers: sets the
    /// ring up, on the calling thread, which must be the one that uses the connections.
    pub(crate) fn sends_at_once(&mut self) -> bool {
        self.send_many.available()
    }

    /// The id the next [`insert`](Self::insert) takes (to register the socket under it first).
    pub(crate) fn vacant_id(&mut self) -> ConnId {
        self.next_generation = self.next_generation.wrapping_add(1);
        ConnId::new(self.slab.vacant_key(), self.next_generation)
    }

    /// Inserts `conn` under `id`, which [`vacant_id`](Self::vacant_id) just gave.
    pub(crate) fn insert(&mut self, id: ConnId, mut conn: Conn) {
        conn.generation = id.generation();
        let key = self.slab.insert(conn);
        assert_eq!(key, id.key(), "inserted where vacant_id said");
    }

    /// The connection `id` names, if it is still there.
    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slab
            .get(id.key())
            .filter(|c| c.generation == id.generation())
    }

    /// The connection `id` names, if it is still there.
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slab
            .get_mut(id.key())
            .filter(|c| c.generation == id.generation())
    }

    /// Whether `id` names a connection.
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Takes the connection `id` names out.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        if !self.contains(id) {
            return None;
        }
        self.slab.remove(id.key())
    }

    /// Every connection's id.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.slab
            .iter()
            .map(|(key, c)| ConnId::new(key, c.generation))
            .collect()
    }

    /// Lists `id` among the connections to flush this turn (once).
    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id)
            && !conn.flush_listed
        {
            conn.flush_listed = true;
            self.dirty.push(id);
        }
    }

    /// Whether a connection waits to be flushed.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Lists `id` to be read again next turn (its read budget ran out).
    pub(crate) fn defer_read(&mut self, id: ConnId) {
        self.deferred_reads.push(id);
    }

    /// Whether a connection waits to be read next turn.
    pub(crate) fn has_deferred_reads(&self) -> bool {
        !self.deferred_reads.is_empty()
    }

    /// Stops reading `id` until the inboxes have room ([`take_waiting_room`]).
    ///
    /// [`take_waiting_room`]: Self::take_waiting_room
    pub(crate) fn wait_for_room(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.get_mut(id) else {
            return false;
        };
        if conn.waiting_room {
            return false;
        }
        conn.waiting_room = true;
        self.waiting_room.push(id);
        true
    }

    /// Whether a publisher waits for room.
    pub(crate) fn has_waiting_room(&self) -> bool {
        !self.waiting_room.is_empty()
    }

    /// Takes the publishers that waited for room, no longer waiting.
    pub(crate) fn take_waiting_room(&mut self) -> Vec<ConnId> {
        let ids = std::mem::take(&mut self.waiting_room);
        for &id in &ids {
            if let Some(conn) = self.get_mut(id) {
                conn.waiting_room = false;
            }
        }
        ids
    }

    /// Takes the connections to read again.
    pub(crate) fn take_deferred_reads(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.deferred_reads)
    }

    /// Takes the list of connections to flush. Each stays listed until
    /// [`unlist`](Self::unlist) (which the flush does as it looks the connection up): hand the
    /// list back with [`return_dirty`](Self::return_dirty) to keep its allocation.
    pub(crate) fn take_dirty(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.dirty)
    }

    /// The connection `id` names, no longer listed to flush (it may be listed again).
    pub(crate) fn unlist(&mut self, id: ConnId) -> Option<&mut Conn> {
        let conn = self.get_mut(id)?;
        conn.flush_listed = false;
        Some(conn)
    }

    /// Gives back a list taken by [`take_dirty`](Self::take_dirty), emptied, unless more were
    /// listed meanwhile; a list a burst made much larger than the connections is shrunk.
    pub(crate) fn return_dirty(&mut self, mut list: Vec<ConnId>) {
        list.clear();
        if self.dirty.is_empty() {
            let keep = self.slab.len().max(1024);
            if list.capacity() > 4 * keep {
                list.shrink_to(keep);
            }
            self.dirty = list;
        }
    }

    /// Queues `frame` to connection `id` and lists it to flush; `buffer`, when not 0, is the
    /// size of a larger buffer the payload keeps alive. Returns what the connection's outbox
    /// then holds; `None` when it is gone.
    pub(crate) fn queue(&mut self, id: ConnId, frame: OutFrame, buffer: usize) -> Option<usize> {
        self.finish_batch();
        let conn = self
            .slab
            .get_mut(id.key())
            .filter(|c| c.generation == id.generation())?;
        if buffer > 0 {
            conn.outbox.push_retaining(frame, buffer);
        } else {
            conn.outbox.push(frame);
        }
        if !conn.flush_listed {
            conn.flush_listed = true;
            self.dirty.push(id);
        }
        Some(conn.outbox.held_bytes())
    }

    /// Delivers `frame` to each of `subscribers` (the set `audience` names) that is still
    /// there, and lists them to flush. A small frame joins the batch of small frames published
    /// to the same set just before (see [`Batch`]), queued to all of them as one shared buffer
    /// when something else is queued, the set changes, or the turn ends
    /// ([`finish_batch`](Self::finish_batch)); a larger one is queued at once, by reference.
    /// What the deliveries reached is collected for [`take_reached`](Self::take_reached).
    /// `v2`: the frame for `wsgate.v2` sessions, when theirs differs (never batched).
    pub(crate) fn deliver(
        &mut self,
        subscribers: &HashSet<ConnId>,
        audience: Audience,
        shared: &SharedFrame,
        v2: Option<&SharedFrame>,
        limit: usize,
    ) {
        let frame = shared.plain();
        if frame.wire_len() <= COPY_MAX && v2.is_none() {
            if let Some(batch) = &mut self.batch
                && batch.takes(audience, shared)
            {
                batch.push(shared);
                return;
            }
            self.finish_batch();
            if !subscribers.is_empty() {
                let mut batch = Batch::new(audience, subscribers, limit);
                batch.push(shared);
                self.batch = Some(batch);
            }
            return;
        }
        self.finish_batch();
        let mut delivered = 0;
        for &id in subscribers {
            let Some(conn) = self
                .slab
                .get_mut(id.key())
                .filter(|c| c.generation == id.generation())
            else {
                continue;
            };
            let shared = match v2 {
                Some(v2) if conn.v2 => v2,
                _ => shared,
            };
            let frame = shared.plain();
            if conn.deflate {
                let (deflated, made) = shared.deflated();
                self.reached.compressions += u64::from(made);
                self.reached.deflate_before += frame.payload().len() as u64;
                self.reached.deflate_after += deflated.payload().len() as u64;
                conn.outbox.push_shared(deflated);
            } else {
                conn.outbox.push_shared(frame);
            }
            delivered += 1;
            if conn.outbox.held_bytes() > limit {
                self.reached.over.push(id);
            }
            if !conn.flush_listed {
                conn.flush_listed = true;
                self.dirty.push(id);
            }
        }
        if frame.opcode() == OpCode::Text {
            self.reached.text += delivered;
        } else {
            self.reached.binary += delivered;
        }
    }

    /// Queues the batch of small frames, if any, to each of its subscribers still there: one
    /// shared buffer each, listed to flush.
    pub(crate) fn finish_batch(&mut self) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        let bytes = batch.take_bytes();
        let mut deflated = None;
        let mut reached = 0;
        let at_once = !bytes.is_empty() && self.send_many.available();
        for &id in &batch.subscribers {
            let Some(conn) = self
                .slab
                .get_mut(id.key())
                .filter(|c| c.generation == id.generation())
            else {
                continue;
            };
            reached += 1;
            if conn.deflate {
                let d = deflated.get_or_insert_with(|| {
                    let d = batch.deflated(&bytes);
                    self.reached.compressions += d.compressed;
                    d
                });
                self.reached.deflate_before += batch.payload as u64;
                self.reached.deflate_after += d.payload as u64;
                conn.outbox.push_frames(d.frames.clone());
            } else if !conn.stream.is_tls() && matches!(conn.phase, Phase::Ws(_)) {
                if at_once && conn.outbox.is_empty() {
                    // written below with the other idle subscribers, one system call for all
                    self.direct.push(id);
                    self.direct_fds.push(conn.stream.socket().as_raw_fd());
                    continue;
                }
                // an idle plain subscriber gets the batch straight away, one send and nothing
                // queued; a write error leaves it queued, for the flush to meet
                if let Ok(n) = conn.outbox.write_frames(&bytes, &mut conn.stream) {
                    self.reached.bytes_out += n as u64;
                }
                if conn.outbox.is_empty() {
                    continue;
                }
            } else {
                conn.outbox.push_frames(bytes.clone());
            }
            if conn.outbox.held_bytes() > batch.limit {
                self.reached.over.push(id);
            }
            if !conn.flush_listed {
                conn.flush_listed = true;
                self.dirty.push(id);
            }
        }
        if !self.direct.is_empty() {
            self.send_many
                .send_same(&bytes, &self.direct_fds, &mut self.direct_results);
            for (k, id) in self.direct.drain(..).enumerate() {
                let result = std::mem::replace(&mut self.direct_results[k], Ok(0));
                let conn = self.slab.get_mut(id.key()).expect("listed above");
                if let Ok(n) = conn.outbox.after_write(&bytes, result) {
                    self.reached.bytes_out += n as u64;
                }
                if conn.outbox.is_empty() {
                    continue;
                }
                if conn.outbox.held_bytes() > batch.limit {
                    self.reached.over.push(id);
                }
                if !conn.flush_listed {
                    conn.flush_listed = true;
                    self.dirty.push(id);
                }
            }
            self.direct_fds.clear();
            self.direct_results.clear();
        }
        self.reached.text += batch.text * reached;
        self.reached.binary += batch.binary * reached;
    }

    /// Writes, with one io_uring submission, what each plain connection of `ids` has queued
    /// when it lies in one piece, and marks what each socket took as written; returns the
    /// bytes written. The rest (TLS, several pieces, what a socket did not take, an error to
    /// meet) is left for each connection's own flush. Nothing is done without a ring.
    pub(crate) fn write_at_once(&mut self, ids: &[ConnId]) -> u64 {
        if !self.send_many.available() {
            return 0;
        }
        let Connections {
            slab,
            send_many,
            direct,
            direct_results,
            ..
        } = self;
        let mut sends = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(conn) = slab
                .get(id.key())
                .filter(|c| c.generation == id.generation())
            else {
                continue;
            };
            if conn.stream.is_tls() {
                continue;
            }
            if let Some(piece) = conn.outbox.single_piece() {
                direct.push(id);
                sends.push((conn.stream.socket().as_raw_fd(), piece));
            }
        }
        if sends.len() > 1 {
            send_many.send_each(&sends, direct_results);
        }
        drop(sends);
        let mut written = 0;
        for (k, id) in direct.drain(..).enumerate() {
            if let Some(Ok(n)) = direct_results.get(k)
                && *n > 0
            {
                let conn = slab.get_mut(id.key()).expect("listed above");
                written += conn.outbox.wrote(*n).bytes as u64;
            }
        }
        direct_results.clear();
        written
    }

    /// What the deliveries queued since the last call reached (a batch still open is not
    /// counted yet).
    pub(crate) fn take_reached(&mut self) -> Reached {
        std::mem::take(&mut self.reached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Phase;
    use bytes::Bytes;
    use std::time::Instant;
    use wsgate_core::frame::OpCode;

    fn conn() -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        Conn::new(
            crate::conn::Transport::Plain(mio::net::TcpStream::from_std(s)),
            peer.ip(),
            Phase::Flushing {
                deadline: Instant::now(),
            },
        )
    }

    /// An open pub/sub connection over a loopback pair, and the peer's end.
    fn subscriber() -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer_end = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap(); // as the worker's sockets are
        let now = Instant::now();
        let config = std::sync::Arc::new(wsgate_core::session::SessionConfig::default());
        let policy = crate::session::Policy {
            max_topics: 10,
            publish_rate: 0,
            publish_burst: 0,
        };
        let ws = crate::session::Ws::new(
            wsgate_core::session::Session::new(config, now),
            crate::session::SessionKind::PubSub,
            None,
            &policy,
            now,
        );
        let conn = Conn::new(
            crate::conn::Transport::Plain(mio::net::TcpStream::from_std(s)),
            peer.ip(),
            Phase::Ws(Box::new(ws)),
        );
        (conn, peer_end)
    }

    #[test]
    fn a_batch_goes_straight_to_an_idle_subscriber_and_after_what_a_busy_one_holds() {
        straight_to_the_idle(true);
    }

    #[test]
    fn without_io_uring_a_batch_goes_straight_to_an_idle_subscriber_all_the_same() {
        straight_to_the_idle(false);
    }

    fn straight_to_the_idle(io_uring: bool) {
        use std::io::Read;
        let mut conns = Connections::new(io_uring);
        let idle = conns.vacant_id();
        let (conn, mut idle_end) = subscriber();
        conns.insert(idle, conn);
        let busy = conns.vacant_id();
        let (conn, mut busy_end) = subscriber();
        conns.insert(busy, conn);
        let first = OutFrame::new(OpCode::Text, Bytes::from_static(b"first"));
        conns.queue(busy, first.clone(), 0).unwrap();
        conns.take_dirty(); // as a flush would leave it: `first` still queued
        let both = HashSet::from([idle, busy]);
        let frames: Vec<SharedFrame> = ["x", "yy"]
            .iter()
            .map(|t| OutFrame::new(OpCode::Text, Bytes::from_static(t.as_bytes())).into())
            .collect();
        for f in &frames {
            conns.deliver(&both, Audience::of(&both, 0), f, None, 1 << 20);
        }
        conns.finish_batch();
        let batch: Vec<u8> = frames.iter().flat_map(|f| f.plain().to_vec()).collect();
        // the idle one: written at once, nothing queued, nothing to flush
        let c = conns.get(idle).unwrap();
        assert!(c.outbox.is_empty() && !c.flush_listed);
        let mut got = vec![0u8; batch.len()];
        idle_end.read_exact(&mut got).unwrap();
        assert_eq!(got, batch);
        // the busy one: queued behind what it held, listed to flush
        let c = conns.get(busy).unwrap();
        assert_eq!(c.outbox.queued_bytes(), first.wire_len() + batch.len());
        assert!(c.flush_listed);
        let reached = conns.take_reached();
        assert_eq!((reached.text, reached.bytes_out), (4, batch.len() as u64));
        let c = conns.get_mut(busy).unwrap();
        c.outbox.flush(&mut c.stream).unwrap();
        let mut got = vec![0u8; first.wire_len() + batch.len()];
        busy_end.read_exact(&mut got).unwrap();
        let mut expected = first.to_vec();
        expected.extend_from_slice(&batch);
        assert_eq!(got, expected, "in order");
    }

    #[test]
    fn a_batch_reaches_each_of_many_idle_subscribers_once_and_waits_where_a_socket_is_full() {
        for io_uring in [true, false] {
            many_idle_and_one_full(io_uring);
        }
    }

    /// 1,100 idle subscribers (more than one ring's worth of entries) and one whose socket takes
    /// nothing: each idle one reads the batch exactly once; the full one has it queued, listed
    /// to flush, and gets it after what filled its socket once its peer reads.
    fn many_idle_and_one_full(io_uring: bool) {
        use std::io::{Read, Write};
        let mut conns = Connections::new(io_uring);
        let mut ids = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..1100 {
            let id = conns.vacant_id();
            let (conn, end) = subscriber();
            conns.insert(id, conn);
            ids.push(id);
            ends.push(end);
        }
        let full = conns.vacant_id();
        let (mut conn, mut full_end) = subscriber();
        conn.stream.socket().set_nodelay(true).unwrap();
        let mut filled = 0usize;
        loop {
            match conn.stream.write(&[7u8; 65536]) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        conns.insert(full, conn);
        let set: HashSet<ConnId> = ids.iter().copied().chain([full]).collect();
        let frame: SharedFrame = OutFrame::new(OpCode::Binary, Bytes::from_static(b"batch")).into();
        conns.deliver(&set, Audience::of(&set, 0), &frame, None, 1 << 20);
        conns.finish_batch();
        let wire = frame.plain().to_vec();
        for (id, end) in ids.iter().zip(&mut ends) {
            let c = conns.get(*id).unwrap();
            assert!(
                c.outbox.is_empty() && !c.flush_listed,
                "io_uring {io_uring}"
            );
            let mut got = vec![0u8; wire.len()];
            end.read_exact(&mut got).unwrap();
            assert_eq!(got, wire);
            end.set_nonblocking(true).unwrap();
            assert_eq!(
                end.read(&mut [0u8; 16]).unwrap_err().kind(),
                io::ErrorKind::WouldBlock,
                "once only"
            );
        }
        let c = conns.get_mut(full).unwrap();
        assert!(c.flush_listed);
        assert_eq!(c.outbox.queued_bytes(), wire.len());
        let reached = conns.take_reached();
        assert_eq!(reached.binary, 1101);
        assert_eq!(reached.bytes_out, 1100 * wire.len() as u64);
        // the peer reads what filled the socket; the flush then sends the batch after it
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; filled + 7];
            full_end.read_exact(&mut got).unwrap();
            got
        });
        let c = conns.get_mut(full).unwrap();
        while !c.outbox.is_empty() {
            c.outbox.flush(&mut c.stream).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let got = reader.join().unwrap();
        assert!(got[..filled].iter().all(|&b| b == 7));
        assert_eq!(&got[filled..], &wire[..]);
    }

    #[test]
    fn queues_in_one_piece_are_written_at_once_and_the_rest_left_to_each_flush() {
        use std::io::{Read, Write};
        let mut conns = Connections::new(true);
        if !conns.sends_at_once() {
            eprintln!("skipped: this kernel refuses io_uring");
            return;
        }
        let add = |conns: &mut Connections| {
            let id = conns.vacant_id();
            let (conn, end) = subscriber();
            conns.insert(id, conn);
            (id, end)
        };
        let (small, mut small_end) = add(&mut conns);
        let (other, mut other_end) = add(&mut conns);
        let (large, _large_end) = add(&mut conns);
        let (full, _full_end) = add(&mut conns);
        let frame = |p: &'static [u8]| OutFrame::new(OpCode::Text, Bytes::from_static(p));
        conns.queue(small, frame(b"one"), 0).unwrap();
        conns.queue(other, frame(b"two"), 0).unwrap();
        let big = OutFrame::new(OpCode::Binary, Bytes::from(vec![1u8; COPY_MAX + 1]));
        conns.queue(large, big.clone(), 0).unwrap();
        let c = conns.get_mut(full).unwrap();
        while c.stream.write(&[7u8; 65536]).is_ok() {}
        conns.queue(full, frame(b"four"), 0).unwrap();
        let dirty = conns.take_dirty();
        let written = conns.write_at_once(&dirty);
        assert_eq!(written, 2 * frame(b"one").wire_len() as u64);
        for (id, end, f) in [
            (small, &mut small_end, b"one"),
            (other, &mut other_end, b"two"),
        ] {
            assert!(conns.get(id).unwrap().outbox.is_empty());
            let mut got = vec![0u8; frame(f).wire_len()];
            end.read_exact(&mut got).unwrap();
            assert_eq!(got, frame(f).to_vec());
        }
        // two pieces, and a socket that took nothing: left queued, whole
        assert_eq!(
            conns.get(large).unwrap().outbox.queued_bytes(),
            big.wire_len()
        );
        assert_eq!(
            conns.get(full).unwrap().outbox.queued_bytes(),
            frame(b"four").wire_len()
        );
    }

    #[test]
    fn an_old_id_never_reaches_the_next_connection_in_its_slot() {
        let mut conns = Connections::new(true);
        let a = conns.vacant_id();
        conns.insert(a, conn());
        assert!(conns.contains(a));
        assert_eq!(ConnId::from_token(a.token()), a);
        conns.remove(a).unwrap();
        let b = conns.vacant_id();
        conns.insert(b, conn());
        assert_eq!(a.key(), b.key(), "the same slot");
        assert!(conns.get(a).is_none() && conns.get_mut(a).is_none());
        assert!(conns.remove(a).is_none(), "the old id removes nothing");
        assert!(conns.contains(b));
        assert_eq!(conns.ids(), vec![b]);
        // a delivery to a list holding the old id reaches nobody
        let frame: SharedFrame = OutFrame::new(OpCode::Text, Bytes::from_static(b"x")).into();
        let old = HashSet::from([a]);
        conns.deliver(&old, Audience::of(&old, 0), &frame, None, 1 << 20);
        conns.finish_batch();
        assert!(conns.take_reached().is_empty());
        let new = HashSet::from([b]);
        conns.deliver(&new, Audience::of(&new, 0), &frame, None, 1 << 20);
        conns.finish_batch();
        assert_eq!(conns.take_reached().text, 1);
        assert_eq!(conns.get(b).unwrap().outbox.queued_bytes(), 3);
    }

    #[test]
    fn small_deliveries_to_one_set_share_one_buffer_and_keep_each_connection_in_order() {
        let mut conns = Connections::new(true);
        let ids: Vec<ConnId> = (0..3)
            .map(|_| {
                let id = conns.vacant_id();
                conns.insert(id, conn());
                id
            })
            .collect();
        let all: HashSet<ConnId> = ids.iter().copied().collect();
        let two: HashSet<ConnId> = ids[..2].iter().copied().collect();
        let frame = |b: &'static [u8]| OutFrame::new(OpCode::Text, Bytes::from_static(b));
        conns.deliver(
            &all,
            Audience::of(&all, 1),
            &frame(b"a").into(),
            None,
            1 << 20,
        );
        conns.deliver(
            &all,
            Audience::of(&all, 1),
            &frame(b"b").into(),
            None,
            1 << 20,
        );
        assert!(
            conns.take_reached().is_empty(),
            "batched: nothing queued yet"
        );
        assert_eq!(conns.get(ids[0]).unwrap().outbox.queued_bytes(), 0);
        // something else queued to any connection: the batch goes first
        conns.queue(ids[2], frame(b"ack"), 0);
        assert_eq!(conns.take_reached().text, 6, "two frames to three");
        // another set, then the first set again at a newer generation: three batches
        conns.deliver(
            &two,
            Audience::of(&two, 1),
            &frame(b"c").into(),
            None,
            1 << 20,
        );
        conns.deliver(
            &all,
            Audience::of(&all, 2),
            &frame(b"d").into(),
            None,
            1 << 20,
        );
        conns.deliver(
            &all,
            Audience::of(&all, 2),
            &frame(b"e").into(),
            None,
            1 << 20,
        );
        conns.finish_batch();
        assert_eq!(conns.take_reached().text, 2 + 6);
        let sent = |conns: &mut Connections, id: ConnId| {
            let mut out = Vec::new();
            conns.get_mut(id).unwrap().outbox.flush(&mut out).unwrap();
            out
        };
        let wire =
            |parts: &[&[u8]]| -> Vec<u8> { parts.iter().flat_map(|p| frame_bytes(p)).collect() };
        assert_eq!(
            sent(&mut conns, ids[0]),
            wire(&[b"a", b"b", b"c", b"d", b"e"])
        );
        assert_eq!(
            sent(&mut conns, ids[2]),
            wire(&[b"a", b"b", b"ack", b"d", b"e"])
        );
        // a large frame is not batched, and goes after the batch before it
        let large = OutFrame::new(OpCode::Binary, Bytes::from(vec![9u8; 5000]));
        conns.deliver(
            &all,
            Audience::of(&all, 2),
            &frame(b"f").into(),
            None,
            1 << 20,
        );
        conns.deliver(
            &all,
            Audience::of(&all, 2),
            &large.clone().into(),
            None,
            1 << 20,
        );
        let reached = conns.take_reached();
        assert_eq!((reached.text, reached.binary), (3, 3));
        let mut expected = wire(&[b"a", b"b", b"c", b"d", b"e", b"f"]);
        expected.extend(large.to_vec());
        assert_eq!(sent(&mut conns, ids[1]), expected);
    }

    fn frame_bytes(payload: &[u8]) -> Vec<u8> {
        OutFrame::new(OpCode::Text, Bytes::copy_from_slice(payload)).to_vec()
    }

    #[test]
    fn a_connection_is_listed_to_flush_once_per_turn() {
        let mut conns = Connections::new(true);
        let a = conns.vacant_id();
        conns.insert(a, conn());
        // too large to be copied: each delivery is an item of its own
        let frame = OutFrame::new(OpCode::Binary, Bytes::from(vec![0u8; 2000]));
        let per = 2004 + crate::outbox::ENTRY_COST;
        let set = HashSet::from([a]);
        for _ in 0..3 {
            conns.deliver(
                &set,
                Audience::of(&set, 0),
                &frame.clone().into(),
                None,
                2 * per + 1,
            );
        }
        let reached = conns.take_reached();
        assert_eq!(
            (reached.binary, reached.over),
            (3, vec![a]),
            "the third passes the limit"
        );
        conns.mark_dirty(a);
        let listed = conns.take_dirty();
        assert_eq!(listed, vec![a]);
        assert!(!conns.has_dirty());
        conns.mark_dirty(a);
        assert!(!conns.has_dirty(), "still listed until unlisted");
        conns.unlist(a);
        conns.mark_dirty(a);
        assert!(conns.has_dirty(), "listed again after being unlisted");
        conns.return_dirty(listed);
        assert_eq!(conns.take_dirty(), vec![a], "the newer list is kept");
    }
}
