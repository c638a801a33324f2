//! Deadlines: each connection's next one in a heap, what passing it calls for, the node's
//! drain as seen by this worker, and giving freed memory back to the system.

use super::Worker;
use crate::conn::{ConnId, Expiry, Phase};
use crate::http::{Answer, text};
use crate::metrics::Failure;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};
use wsgate_core::close::CloseCode;

/// How long after a connection closes the worker gives freed memory back to the system (at
/// most once per this interval, whatever the number of closes).
const COLLECT_DELAY: Duration = Duration::from_secs(1);

/// A worker's deadlines.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Each connection's earliest deadline when it was scheduled (stale entries are skipped:
    /// an entry counts only while it matches the connection's `timer_at`).
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// When to give freed memory back to the system, after connections closed.
    collect_at: Option<Instant>,
    /// When to forget the topics whose history expired (worker 0, with history rules).
    history_at: Option<Instant>,
}

/// How often worker 0 forgets the topics whose history has expired.
const HISTORY_SWEEP: Duration = Duration::from_secs(1);

impl Timers {
    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let next = self.heap.peek().map(|Reverse((at, _))| *at);
        [next, self.collect_at, self.history_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sweeps the expired histories from `now` on, every [`HISTORY_SWEEP`].
    pub(super) fn sweep_history_from(&mut self, now: Instant) {
        self.history_at = Some(now + HISTORY_SWEEP);
    }

    /// A connection closed at `now`: its memory goes back to the system soon.
    pub(super) fn memory_freed(&mut self, now: Instant) {
        self.collect_at.get_or_insert(now + COLLECT_DELAY);
    }
}

impl Worker {
    /// Makes sure the connection's next deadline is in the heap.
    pub(super) fn schedule(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(at) = conn.poll_timeout() else {
            return;
        };
        if conn.timer_at.is_none_or(|t| at < t) {
            conn.timer_at = Some(at);
            self.timers.heap.push(Reverse((at, id)));
        }
    }

    /// Acts on every deadline that has passed.
    pub(super) fn fire_timers(&mut self) {
        while let Some(&Reverse((at, id))) = self.timers.heap.peek() {
            if at > self.now {
                return;
            }
            self.timers.heap.pop();
            let Some(conn) = self.conns.get_mut(id) else {
                continue; // the connection is gone
            };
            if conn.timer_at != Some(at) {
                continue; // stale entry
            }
            conn.timer_at = None;
            self.guarded(id, |w| w.on_timer(id));
        }
    }

    fn on_timer(&mut self, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.ws().is_none() {
            match conn.expired(now) {
                None => {}
                Some(Expiry::Drop) => return self.close_now(id),
                Some(Expiry::RequestTimeout) => {
                    conn.inbuf = bytes::BytesMut::new();
                    let answer =
                        Answer::refuse(Failure::Timeout, text(408, "request timeout", false, &[]));
                    self.answer(id, answer);
                }
            }
            return self.schedule(id);
        }
        while let Some(event) = self
            .conns
            .get_mut(id)
            .and_then(|c| c.ws())
            .and_then(|ws| ws.protocol.handle_timeout(now))
        {
            if let wsgate_core::session::Event::Timeout(timer) = event {
                self.on_session_timeout(id, timer);
            }
        }
        self.schedule(id);
    }

    /// Follows the node's drain: closes sessions with 1001 once it is time, and says when the
    /// worker must exit.
    pub(super) fn follow_drain(&mut self) -> bool {
        let drain = self.node.drain.get();
        if drain == self.drain {
            return false;
        }
        self.drain = drain;
        if drain.closes_sessions() {
            for id in self.conns.ids() {
                let Some(conn) = self.conns.get_mut(id) else {
                    continue;
                };
                if conn.ws().is_some() {
                    self.close_session(id, CloseCode::GOING_AWAY, "server draining");
                } else if matches!(&conn.phase, Phase::Http(h) if h.framer.at_request_boundary())
                    && conn.inbuf.is_empty()
                    && conn.outbox.is_empty()
                {
                    self.close_now(id);
                }
            }
        }
        if drain.is_stopping() {
            for id in self.conns.ids() {
                self.close_now(id);
            }
            return true;
        }
        false
    }

    /// Forgets the topics whose history expired, when it is time (worker 0 only).
    pub(super) fn sweep_history_if_due(&mut self) {
        if self.timers.history_at.is_some_and(|at| at <= self.now) {
            self.timers.history_at = Some(self.now + HISTORY_SWEEP);
            self.node.hub.forget_expired(self.now);
        }
    }

    /// Gives freed memory back to the system a moment after connections closed.
    pub(super) fn release_memory_if_due(&mut self) {
        if self.timers.collect_at.is_some_and(|at| at <= self.now) {
            self.timers.collect_at = None;
            crate::outbox::release_spares();
            crate::sys::release_free_memory();
        }
    }
}
