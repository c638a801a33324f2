//! Reading, writing and closing: bytes from a socket go to the phase that reads them, queued
//! bytes go out with one `send` or `sendmsg`, and a connection ends with a flush, a half-close and a
//! linger, or at once.

use super::Worker;
use crate::conn::{ConnId, Got, Phase};
use crate::metrics::{Counter, MessageKind};
use bytes::{Bytes, BytesMut};
use mio::Interest;
use std::io;
use wsgate_core::deflate;
use wsgate_core::frame::{OpCode, OutFrame};

impl Worker {
    /// Reads what the socket has, up to a read buffer's worth (`read-buffer-size`) this turn
    /// (more if one read brings more, for a large frame read into a buffer of its own), unless
    /// the connection's outbox is full, and acts on it. What is left is read next turn: one
    /// peer never holds the loop, its timers, inboxes and other connections.
    ///
    /// A read that brings fewer bytes than asked for has emptied the socket's receive queue
    /// (a stream socket, epoll(7)): the next bytes come with a new edge, so the socket is not
    /// read again until then, which saves the `read` that would only say `EAGAIN` (one read
    /// per message on a request-response connection instead of two). Once the poller has
    /// reported the peer's half-close, reading goes on until the end is seen.
    pub(super) fn read(&mut self, id: ConnId) {
        let mut budget = self.node.config.limits.read_buffer_size;
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            if !conn.may_read() || !conn.readable {
                return;
            }
            if budget == 0 {
                self.conns.defer_read(id);
                return;
            }
            let own = !conn.inbuf.is_empty();
            let (mut buf, max) = if own {
                let want = conn.own_read_size(self.node.config.limits.read_buffer_size);
                (std::mem::take(&mut conn.inbuf), want)
            } else {
                (
                    std::mem::take(&mut self.readbuf),
                    self.node.config.limits.read_buffer_size,
                )
            };
            let conn = self.conns.get_mut(id).expect("present");
            let got = conn.stream.read_into(&mut buf, max);
            if conn.stream.wants_write() {
                // TLS records to send (the handshake's answers, an alert): this turn's flush
                self.conns.mark_dirty(id);
            }
            let conn = self.conns.get_mut(id).expect("present");
            match got {
                Ok(Got { bytes: 0, .. }) => {
                    self.put_back(id, buf, own);
                    self.close_now(id);
                    return;
                }
                Ok(Got { bytes: n, drained }) => {
                    budget = budget.saturating_sub(n);
                    if drained && !conn.read_closed {
                        conn.readable = false;
                    }
                    self.process(id, &mut buf, !own);
                    self.put_back(id, buf, own);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    self.put_back(id, buf, own);
                    return;
                }
                Err(_) => {
                    self.put_back(id, buf, own);
                    self.close_now(id);
                    return;
                }
            }
        }
    }

    /// Reads the connections whose budget ran out last turn.
    pub(super) fn read_deferred(&mut self) {
        for id in self.conns.take_deferred_reads() {
            self.guarded(id, |w| w.read(id));
        }
    }

    /// Keeps what `process` left unconsumed with the connection, and returns the worker's
    /// buffer to the worker.
    fn put_back(&mut self, id: ConnId, mut buf: BytesMut, own: bool) {
        let conn = self.conns.get_mut(id);
        if own {
            if let Some(conn) = conn {
                // an emptied buffer is freed: an idle connection holds no memory
                conn.inbuf = if buf.is_empty() { BytesMut::new() } else { buf };
            }
            return;
        }
        if let Some(conn) = conn
            && !buf.is_empty()
            && !conn.is_finishing()
        {
            // a cut frame or request: the connection keeps a copy of just those bytes
            conn.inbuf = BytesMut::from(&buf[..]);
        }
        buf.clear();
        self.readbuf = buf;
    }

    /// Acts on the bytes at the front of `buf`, phase by phase, consuming what it used, until
    /// they are all used, more are needed, or the connection holds more than its outbox limit
    /// (then the rest waits in its buffer until it has written its answers, see `resume`).
    /// `shared`: `buf` is the worker's read buffer (what is kept from it is copied out, or
    /// counted as holding all of it).
    fn process(&mut self, id: ConnId, buf: &mut BytesMut, shared: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                buf.clear();
                return;
            };
            let before = buf.len();
            match conn.phase {
                Phase::Http(_) => self.read_http(id, buf),
                Phase::Ws(_) => {
                    self.read_session(id, buf, shared);
                    return;
                }
                Phase::Flushing { .. } | Phase::Linger { .. } => {
                    buf.clear();
                    return;
                }
            }
            if buf.is_empty() || buf.len() == before {
                return;
            }
            if self.conns.get(id).is_none_or(|c| !c.may_read()) {
                // a peer that pipelines requests without reading the answers: the rest waits
                // (kept in `inbuf`) until the answers are out, see `resume`
                return;
            }
        }
    }

    /// Lets a connection whose reading was paused go on: first what it already holds
    /// (pipelined requests, frames), then the socket. Nothing happens while it still waits
    /// for something else (room in an inbox).
    pub(super) fn resume(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.read_paused = false;
        if !conn.may_read() {
            return;
        }
        if !conn.inbuf.is_empty() && !conn.is_finishing() {
            let mut buf = std::mem::take(&mut conn.inbuf);
            self.process(id, &mut buf, false);
            self.put_back(id, buf, true);
        }
        self.read(id);
    }

    /// Stops reading a connection that holds more than its outbox limit (an echo or control
    /// peer, or an HTTP client, that does not read its answers) until it is down to half.
    pub(super) fn pause_if_full(&mut self, id: ConnId, held: usize) {
        if held > self.node.config.limits.outbox_limit
            && let Some(conn) = self.conns.get_mut(id)
            && !conn.read_paused
        {
            conn.read_paused = true;
            self.metrics.inc(Counter::ReadersPaused);
        }
    }

    /// Queues a frame to one connection, and stops reading it when it holds more than its
    /// outbox limit. Returns what it then holds (`None`: it is gone).
    pub(super) fn send(&mut self, id: ConnId, frame: OutFrame) -> Option<usize> {
        self.send_retaining(id, frame, 0)
    }

    /// [`send`](Self::send) for a frame whose payload keeps a buffer of `buffer` bytes alive.
    pub(super) fn send_retaining(
        &mut self,
        id: ConnId,
        frame: OutFrame,
        buffer: usize,
    ) -> Option<usize> {
        let opcode = frame.opcode();
        let close = (opcode == OpCode::Close).then(|| frame.close_code());
        let (frame, buffer) = self.compress_for(id, frame, buffer);
        let held = self.conns.queue(id, frame, buffer)?;
        self.metrics.messages_out(MessageKind::of(opcode), 1);
        if let Some(code) = close {
            self.metrics.close_sent(code);
        }
        self.pause_if_full(id, held);
        Some(held)
    }

    /// A data frame for one session (an echo, an acknowledgement, an error), compressed when
    /// the session negotiated permessage-deflate and the payload is large enough and shrinks;
    /// with the buffer the frame then keeps alive.
    fn compress_for(&mut self, id: ConnId, frame: OutFrame, buffer: usize) -> (OutFrame, usize) {
        let data = matches!(frame.opcode(), OpCode::Text | OpCode::Binary);
        let (Some(compression), true) = (self.node.compression, data) else {
            return (frame, buffer);
        };
        if !self.conns.get(id).is_some_and(|c| c.deflate) {
            return (frame, buffer);
        }
        let before = frame.payload().len() as u64;
        let mut out = (frame, buffer);
        if compression.applies_to(before as usize) {
            self.metrics.inc(Counter::Compressions);
            if let Some(packed) = deflate::compress(out.0.payload(), compression.level) {
                out = (OutFrame::deflated(out.0.opcode(), Bytes::from(packed)), 0);
            }
        }
        self.metrics.add(Counter::DeflateBytesIn, before);
        self.metrics
            .add(Counter::DeflateBytesOut, out.0.payload().len() as u64);
        out
    }

    /// Flushes every connection that got something to send this turn.
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = self.conns.take_dirty();
        if dirty.len() > 1 {
            // one system call for the common queue of each (see `io-uring`); each flush below
            // then finds what its socket did not take
            let written = self.conns.write_at_once(&dirty);
            self.metrics.add(Counter::BytesOut, written);
        }
        for id in dirty.drain(..) {
            self.flush_conn(id, true);
        }
        self.conns.return_dirty(dirty);
    }

    /// Writes what the connection's socket takes (it became writable).
    pub(super) fn flush(&mut self, id: ConnId) {
        self.flush_conn(id, false);
    }

    /// Writes what the connection's socket takes; ends a finishing connection once all is out;
    /// lets a paused reader go on once its queue is down to half the limit. `listed`: the
    /// connection comes from the list of this turn's flushes, and leaves it.
    fn flush_conn(&mut self, id: ConnId, listed: bool) {
        let limit = self.node.config.limits.outbox_limit;
        let close = self.node.config.timeouts.close_timeout;
        let conn = if listed {
            self.conns.unlist(id)
        } else {
            self.conns.get_mut(id)
        };
        let Some(conn) = conn else {
            return;
        };
        let finishing = matches!(conn.phase, Phase::Flushing { .. });
        if conn.outbox.is_empty()
            && !finishing
            && !conn.stream.wants_write()
            && !conn.interest.is_writable()
            && !conn.read_paused
        {
            return; // nothing to write, to stop waiting for, or to go on with
        }
        match conn.outbox.flush(&mut conn.stream) {
            Ok(done) => self.metrics.add(Counter::BytesOut, done.bytes as u64),
            Err(_) => return self.close_now(id),
        }
        if conn.stream.send_pending().is_err() {
            return self.close_now(id);
        }
        let wants_write = !conn.outbox.is_empty() || conn.stream.wants_write();
        if wants_write != conn.interest.is_writable() {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, id.token(), interest)
                .is_err()
            {
                return self.close_now(id);
            }
            conn.interest = interest;
        }
        if wants_write || (finishing && conn.stream.is_handshaking()) {
            if finishing {
                // the peer has the close timeout to take what is left (an answer given before
                // the TLS handshake is done, a refusal after a PROXY header, goes once it is)
                self.schedule(id);
            }
            return;
        }
        if finishing {
            // everything is out: half-close and wait for the peer to close its side
            conn.stream.shutdown_write();
            conn.phase = Phase::Linger {
                deadline: self.now + close,
            };
            self.schedule(id);
            self.read(id);
            return;
        }
        if conn.read_paused && conn.outbox.held_bytes() <= limit / 2 {
            self.resume(id);
        }
    }

    /// Drops a connection at once.
    pub(super) fn close_now(&mut self, id: ConnId) {
        if !self.conns.contains(id) {
            return;
        }
        self.end_session(id);
        self.forget(id);
    }

    /// Removes a connection from the worker and gives back what it counted against the limits.
    pub(super) fn forget(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.node.limits.release_total();
        if conn.ip_counted {
            self.node.limits.release_ip(conn.client);
        }
        self.metrics.connection_closed();
        drop(conn);
        self.timers.memory_freed(self.now);
    }
}
