//! Reading, writing and closing: bytes from a socket go to the phase that reads them, queued
//! bytes go out with one `writev`, and a connection ends with a flush, a half-close and a
//! linger, or at once.

use super::Worker;
use crate::conn::{ConnId, Phase};
use crate::metrics::{Counter, MessageKind};
use bytes::BytesMut;
use mio::Interest;
use std::io;
use wsgate_core::frame::{OpCode, OutFrame};

impl Worker {
    /// Reads everything the socket has (unless the connection's outbox is full) and acts on
    /// it.
    pub(super) fn read(&mut self, id: ConnId) {
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            if conn.read_paused || !conn.readable {
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
            match crate::sys::read_into(&conn.stream, &mut buf, max) {
                Ok(0) => {
                    self.put_back(id, buf, own);
                    self.close_now(id);
                    return;
                }
                Ok(_) => {
                    self.process(id, &mut buf);
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

    /// Acts on the bytes at the front of `buf`, phase by phase, consuming what it used.
    fn process(&mut self, id: ConnId, buf: &mut BytesMut) {
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                buf.clear();
                return;
            };
            let before = buf.len();
            match conn.phase {
                Phase::Proxy { .. } => self.read_proxy_header(id, buf),
                Phase::Request { .. } => self.read_request(id, buf),
                Phase::Body { .. } => self.read_body(id, buf),
                Phase::Ws(_) => {
                    self.read_session(id, buf);
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
            if let Some(conn) = self.conns.get_mut(id)
                && conn.outbox.queued_bytes() > self.node.config.limits.outbox_limit
            {
                // a peer that pipelines requests without reading the answers: the rest waits
                // (kept in `inbuf`) until the answers are out, see `resume`
                conn.read_paused = true;
                return;
            }
        }
    }

    /// Lets a connection whose reading was paused go on: first the pipelined requests it
    /// already holds, then the socket.
    fn resume(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.read_paused = false;
        if matches!(conn.phase, Phase::Request { .. } | Phase::Body { .. })
            && !conn.inbuf.is_empty()
        {
            let mut buf = std::mem::take(&mut conn.inbuf);
            self.process(id, &mut buf);
            self.put_back(id, buf, true);
        }
        self.read(id);
    }

    /// Queues a frame to one connection. Returns the bytes it then holds queued (`None`: it
    /// is gone).
    pub(super) fn send(&mut self, id: ConnId, frame: OutFrame) -> Option<usize> {
        let opcode = frame.opcode();
        let close = (opcode == OpCode::Close).then(|| frame.close_code());
        let queued = self.conns.queue(id, frame)?;
        self.metrics.messages_out(MessageKind::of(opcode), 1);
        if let Some(code) = close {
            self.metrics.close_sent(code);
        }
        Some(queued)
    }

    /// Flushes every connection that got something to send this turn.
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = self.conns.take_dirty();
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
        if conn.outbox.is_empty() && !finishing {
            return;
        }
        match conn.outbox.flush(&mut conn.stream) {
            Ok(done) => self.metrics.add(Counter::BytesOut, done.bytes as u64),
            Err(_) => return self.close_now(id),
        }
        let wants_write = !conn.outbox.is_empty();
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
        if wants_write {
            if finishing {
                // the peer has the close timeout to take what is left
                self.schedule(id);
            }
            return;
        }
        if finishing {
            // everything is out: half-close and wait for the peer to close its side
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            conn.phase = Phase::Linger {
                deadline: self.now + close,
            };
            self.schedule(id);
            self.read(id);
            return;
        }
        if conn.read_paused && conn.outbox.queued_bytes() <= limit / 2 {
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
