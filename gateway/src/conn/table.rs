//! The worker's connections: a slab, the ids that name its entries across reuse, and the list
//! of connections with something to send this turn.

use super::Conn;
use super::slots::Slots;
use mio::Token;
use wsgate_core::frame::OutFrame;

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
}

impl Connections {
    /// No connections.
    pub(crate) fn new() -> Connections {
        Connections::default()
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

    /// Queues `frame` to each of `subscribers` that is still there and marks it to flush.
    /// Returns how many got it, and those whose outbox now holds more than `limit` bytes.
    pub(crate) fn deliver<'a>(
        &mut self,
        subscribers: impl IntoIterator<Item = &'a ConnId>,
        frame: &OutFrame,
        limit: usize,
    ) -> (u64, Vec<ConnId>) {
        let mut delivered = 0;
        let mut over = Vec::new();
        for &id in subscribers {
            let Some(conn) = self
                .slab
                .get_mut(id.key())
                .filter(|c| c.generation == id.generation())
            else {
                continue;
            };
            conn.outbox.push_shared(frame);
            delivered += 1;
            if conn.outbox.held_bytes() > limit {
                over.push(id);
            }
            if !conn.flush_listed {
                conn.flush_listed = true;
                self.dirty.push(id);
            }
        }
        (delivered, over)
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
            mio::net::TcpStream::from_std(s),
            peer,
            Phase::Flushing {
                deadline: Instant::now(),
            },
        )
    }

    #[test]
    fn an_old_id_never_reaches_the_next_connection_in_its_slot() {
        let mut conns = Connections::new();
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
        let frame = OutFrame::new(OpCode::Text, Bytes::from_static(b"x"));
        assert_eq!(conns.deliver(&[a], &frame, 1 << 20), (0, vec![]));
        assert_eq!(conns.deliver(&[b], &frame, 1 << 20), (1, vec![]));
        assert_eq!(conns.get(b).unwrap().outbox.queued_bytes(), 3);
    }

    #[test]
    fn a_connection_is_listed_to_flush_once_per_turn() {
        let mut conns = Connections::new();
        let a = conns.vacant_id();
        conns.insert(a, conn());
        // too large to be copied: each delivery is an item of its own
        let frame = OutFrame::new(OpCode::Binary, Bytes::from(vec![0u8; 2000]));
        let per = 2004 + crate::outbox::ENTRY_COST;
        let (n, over) = conns.deliver(&[a, a, a], &frame, 2 * per + 1);
        assert_eq!((n, over), (3, vec![a]), "the third passes the limit");
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
