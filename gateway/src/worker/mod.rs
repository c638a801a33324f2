//! One worker: a thread with its own `mio::Poll`, its own listening socket and the connections
//! the kernel gave it. Nothing on its hot path takes a lock: the only shared structures it
//! touches while serving are the hub's atomics and lock-free inboxes.
//!
//! The worker is the loop and the hands; the rooms decide. Each turn it waits for events (or
//! the next deadline), reads every readable connection into its one read buffer and asks what
//! the bytes mean (the HTTP room for a request, the session for frames, pub/sub for a
//! publish), does what they say, takes the deliveries other workers queued, fires due timers,
//! then flushes every connection that got something to send, so that many frames leave in one
//! `send`. Its files:
//!
//! - [`accept`]: new connections, their admission, and who they come from (PROXY header,
//!   `X-Forwarded-For`);
//! - [`io`]: reading, writing, closing;
//! - [`http`]: acting on the HTTP room's answers;
//! - [`ws`]: acting on session events and pub/sub;
//! - [`timers`]: deadlines, the drain, and giving memory back.

mod accept;
mod history;
mod http;
mod io;
mod timers;
mod ws;

use crate::conn::{ConnId, Connections};
use crate::drain::Drain;
use crate::metrics::{Counter, WorkerMetrics};
use crate::node::Node;
use crate::pubsub::PubSub;
use accept::Acceptor;
use bytes::BytesMut;
use mio::{Events, Poll, Token};
use std::io as stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::Timers;
use wsgate_core::close::CloseCode;
use wsgate_core::frame::OutFrame;

/// The poll token of a worker's listening socket.
const LISTENER: Token = Token(usize::MAX - 1);
/// The poll token of a worker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// The token of the `plain-listen` socket.
const PLAIN_LISTENER: Token = Token(usize::MAX - 3);

/// Deliveries from other workers (and nodes) taken in one turn of the loop at most: a flood is
/// worked through between reads, writes and timers, not ahead of them.
const INBOX_BUDGET: usize = 1024;

/// One worker and everything it owns.
pub(crate) struct Worker {
    poll: Poll,
    /// The worker's listening sockets: `listen`'s, and `plain-listen`'s when set.
    acceptors: Vec<Acceptor>,
    node: Arc<Node>,
    metrics: Arc<WorkerMetrics>,
    conns: Connections,
    pubsub: PubSub<ConnId>,
    timers: Timers,
    /// The buffer every connection reads into (a connection keeps bytes of its own only when
    /// a frame or request was cut).
    readbuf: BytesMut,
    /// The time of this turn of the loop.
    now: Instant,
    /// The drain state the worker last acted on.
    drain: Drain,
    /// The outages of the link to other nodes this worker has told its subscribers of.
    outages_told: u64,
    /// Subscribes to topics with history waiting for their mirror to be primed.
    joins: history::Joins,
}

impl Worker {
    /// Worker `id` over its poll (whose waker the hub holds) and its listening sockets, each
    /// with whether it speaks TLS (`listen`'s first, then `plain-listen`'s).
    pub(crate) fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<(std::net::TcpListener, bool)>,
        node: Arc<Node>,
    ) -> Worker {
        let outages_told = node.hub.uplink_outages();
        let mut timers = Timers::default();
        if id == 0 && !node.config.history.is_empty() {
            timers.sweep_history_from(Instant::now());
        }
        let io_uring = node.config.server.io_uring;
        Worker {
            poll,
            acceptors: listeners
                .into_iter()
                .map(|(listener, tls)| Acceptor::new(id, listener, tls))
                .collect(),
            metrics: node.metrics[id].clone(),
            readbuf: BytesMut::with_capacity(node.config.limits.read_buffer_size),
            pubsub: PubSub::new(id, node.hub.clone()),
            node,
            conns: Connections::new(io_uring),
            timers,
            now: Instant::now(),
            drain: Drain::Running,
            outages_told,
            joins: history::Joins::default(),
        }
    }

    /// Runs the event loop until the node stops.
    pub(crate) fn run(mut self) -> stdio::Result<()> {
        for (i, acceptor) in self.acceptors.iter_mut().enumerate() {
            acceptor.register(self.poll.registry(), [LISTENER, PLAIN_LISTENER][i])?;
        }
        if self.node.config.server.io_uring {
            // the ring is made here, on the thread that submits to it
            static TOLD: std::sync::Once = std::sync::Once::new();
            let ring = self.conns.sends_at_once();
            self.metrics.set_io_uring(ring);
            if !ring {
                TOLD.call_once(|| {
                    tracing::info!("io_uring refused by the kernel: fanout sends go one by one");
                });
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != stdio::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.now = Instant::now();
            // before anything this turn brings: what comes after a gap notice is after it
            self.tell_gaps();
            self.read_deferred();
            for which in 0..self.acceptors.len() {
                if self.acceptors[which].has_more() {
                    self.accept(which);
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(0),
                    PLAIN_LISTENER => self.accept(1),
                    WAKER => {}
                    token => {
                        let id = ConnId::from_token(token);
                        let closed = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable() || closed;
                        let writable = event.is_writable();
                        self.guarded(id, |w| {
                            if writable {
                                w.flush(id);
                            }
                            if readable {
                                if let Some(c) = w.conns.get_mut(id) {
                                    c.readable = true;
                                    c.read_closed |= closed;
                                }
                                w.read(id);
                            }
                        });
                    }
                }
            }
            self.take_inbox();
            self.resume_publishers();
            self.send_due_acks();
            self.send_answers();
            self.settle_joins();
            if self.follow_drain() {
                return Ok(());
            }
            self.fire_timers();
            self.conns.finish_batch();
            self.settle_deliveries();
            self.flush_dirty();
            self.release_memory_if_due();
            self.sweep_history_if_due();
        }
    }

    /// How long the next poll may wait: until the next deadline, or not at all when
    /// deliveries or flushes are left over from this turn (no event may come for them).
    fn poll_timeout(&self) -> Option<Duration> {
        let worker = self.pubsub.worker();
        if self.node.hub.inbox_depth(worker) > 0
            || self.conns.has_dirty()
            || self.conns.has_deferred_reads()
            || self.acceptors.iter().any(Acceptor::has_more)
        {
            // work left from this turn, for which no event may come
            return Some(Duration::ZERO);
        }
        // publishers waiting for room are woken by the worker that makes it; the poll comes
        // back anyway now and then, should that wake be missed
        let room = self
            .conns
            .has_waiting_room()
            .then(|| self.now + Duration::from_millis(10));
        let next = [
            self.timers.next_deadline(),
            self.pubsub.next_ack_deadline(self.now),
            self.joins.deadline(self.now),
            room,
        ]
        .into_iter()
        .flatten()
        .min();
        next.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Runs `f` for connection `id`, containing a panic (a bug) to that connection: it is
    /// closed with 1011, counted in `wsgate_internal_errors_total`, and the worker goes on with
    /// its other connections. The panic hook logs the first one.
    fn guarded(&mut self, id: ConnId, f: impl FnOnce(&mut Worker)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_ok() {
            return;
        }
        self.metrics.inc(Counter::InternalErrors);
        if !self.conns.contains(id) {
            return;
        }
        // best effort: tell the peer, then drop the connection; if even that fails, forget it
        let cleaned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(conn) = self.conns.get_mut(id)
                && conn.ws().is_some()
            {
                let close = OutFrame::close_with(CloseCode::INTERNAL_ERROR, "internal error");
                self.metrics.close_sent(Some(CloseCode::INTERNAL_ERROR));
                let _ = std::io::Write::write(&mut conn.stream, &close.to_vec());
            }
            self.close_now(id);
        }));
        if cleaned.is_err() && self.conns.contains(id) {
            self.forget(id);
        }
    }
}
