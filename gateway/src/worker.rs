//! One worker: a thread with its own `mio::Poll`, its own listening socket and the connections
//! the kernel gave it, owned in a slab. Nothing on its hot path takes a lock: the only shared
//! structures it touches while serving are the hub's atomics and lock-free inboxes.
//!
//! Each turn of the loop: wait for events (or the next timer), read every readable connection
//! into the worker's one read buffer and act on what arrived, take the deliveries other workers
//! queued, fire due timers, then flush every connection that got something to send, so that
//! many frames leave in one `writev`.

use crate::auth::{self, Grants, TokenSource};
use crate::conn::{Conn, PendingBody, Phase, Session, SessionKind, Timeouts};
use crate::dashboard;
use crate::drain::Drain;
use crate::http::{self, Route};
use crate::hub::{Delivery, Topic};
use crate::limits::{TokenBucket, origin_allowed};
use crate::metrics::{Counter, Failure, MessageKind, WorkerMetrics};
use crate::node::Node;
use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wsgate_core::close::CloseCode;
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::handshake::{self, Limits};
use wsgate_core::message::{self, Command};
use wsgate_core::session::{Event, SessionConfig};
use wsgate_core::timer::Timer;
use wsgate_core::{Error, Result};

/// The poll token of a worker's listening socket.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The poll token of a worker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// Publish-only topics a worker caches before it forgets them.
const TOPIC_CACHE_LIMIT: usize = 65_536;

/// Longest a subscribe's acknowledgement waits for Redis to confirm the node's subscription.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(1);
/// How often a worker holding acknowledgements looks at them when nothing else wakes it.
const ACK_POLL: Duration = Duration::from_millis(50);

/// Deliveries from other workers (and nodes) taken in one turn of the loop at most: a flood is
/// worked through between reads, writes and timers, not ahead of them.
const INBOX_BUDGET: usize = 1024;

/// How long after a connection closes the worker gives freed memory back to the system (at most
/// once per this interval, whatever the number of closes).
const COLLECT_DELAY: Duration = Duration::from_secs(1);

/// A subscribe's acknowledgement waiting for Redis ([`Worker::defer_ack`]).
struct DeferredAck {
    conn: u64,
    id: i64,
    topic: Arc<Topic>,
    since: Instant,
}

/// A worker's subscribers of one topic (or, with none, a cached entry for publishing).
struct LocalTopic {
    topic: Arc<Topic>,
    subscribers: HashSet<u64>,
}

/// Identifies a connection across slab slot reuse.
fn conn_id(key: usize, generation: u32) -> u64 {
    (key as u64) | (u64::from(generation) << 32)
}

/// One worker and everything it owns.
pub(crate) struct Worker {
    id: usize,
    poll: Poll,
    listener: TcpListener,
    node: Arc<Node>,
    metrics: Arc<WorkerMetrics>,
    conns: Slab<Conn>,
    readbuf: BytesMut,
    topics: HashMap<Arc<str>, LocalTopic>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    dirty: Vec<usize>,
    deferred_acks: Vec<DeferredAck>,
    /// When to give freed memory back to the system, after connections closed.
    collect_at: Option<Instant>,
    next_generation: u32,
    timeouts: Timeouts,
    session_config: Arc<SessionConfig>,
    limits: Limits,
    seen_state: Drain,
    now: Instant,
    accept_error_logged: Option<Instant>,
}

impl Worker {
    /// A worker over its poll (whose waker the hub holds) and its listening socket.
    pub(crate) fn new(
        id: usize,
        poll: Poll,
        listener: std::net::TcpListener,
        node: Arc<Node>,
    ) -> Worker {
        let c = &node.config;
        let timeouts = Timeouts {
            handshake: c.timeouts.handshake_timeout,
            close: c.timeouts.close_timeout,
        };
        let session_config = node.session.clone();
        let limits = Limits {
            max_head_bytes: c.limits.max_head_size,
        };
        Worker {
            id,
            poll,
            listener: TcpListener::from_std(listener),
            metrics: node.metrics[id].clone(),
            readbuf: BytesMut::with_capacity(c.limits.read_buffer_size),
            node,
            conns: Slab::new(),
            topics: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            deferred_acks: Vec::new(),
            collect_at: None,
            next_generation: 0,
            timeouts,
            session_config,
            limits,
            seen_state: Drain::Running,
            now: Instant::now(),
            accept_error_logged: None,
        }
    }

    /// Runs the event loop until the shared state says STOPPING.
    pub(crate) fn run(mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()));
            if !self.deferred_acks.is_empty() {
                // a held acknowledgement goes at the latest after ACK_WAIT
                timeout = Some(timeout.map_or(ACK_POLL, |t| t.min(ACK_POLL)));
            }
            if let Some(at) = self.collect_at {
                let wait = at.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }
            if self.node.hub.inbox_depth(self.id) > 0 || !self.dirty.is_empty() {
                // deliveries left from the last turn (no push will wake us for them), or
                // connections that queued more while being flushed (a resumed reader's answers):
                // no event may come for either
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable();
                        self.guarded(key, |w| {
                            if writable {
                                w.flush(key);
                            }
                            if readable {
                                if let Some(c) = w.conns.get_mut(key) {
                                    c.readable = true;
                                }
                                w.read(key);
                            }
                        });
                    }
                }
            }
            self.take_inbox();
            if !self.deferred_acks.is_empty() {
                self.send_deferred_acks();
            }
            if self.check_state() {
                return Ok(());
            }
            self.fire_timers();
            self.flush_dirty();
            if self.collect_at.is_some_and(|at| at <= self.now) {
                self.collect_at = None;
                crate::sys::release_free_memory();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    // behind a trusted proxy the client's address comes with the PROXY header
                    // or X-Forwarded-For, and is counted then; otherwise it is the peer's,
                    // counted now
                    let config = &self.node.config;
                    let via_proxy = config.proxy.expects_proxy_header(peer.ip())
                        || config.proxy.trusts_forwarded_for(peer.ip());
                    let admitted = self.node.limits.admit_total().and_then(|()| {
                        if via_proxy {
                            return Ok(false);
                        }
                        self.node
                            .limits
                            .admit_ip(peer.ip())
                            .inspect_err(|_| self.node.limits.release_total())
                    });
                    let ip_counted = match admitted {
                        Ok(counted) => counted,
                        Err(refusal) => {
                            // best effort: a short answer that fits any socket buffer, then close
                            let _ = std::io::Write::write(&mut stream, &http::refusal(refusal));
                            self.metrics.failure(refusal.failure());
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(key), Interest::READABLE)
                    {
                        tracing::warn!("cannot register connection: {e}");
                        self.node.limits.release_total();
                        if ip_counted {
                            self.node.limits.release_ip(peer.ip());
                        }
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    let mut conn = Conn::new(stream, peer, self.next_generation, self.now);
                    conn.ip_counted = ip_counted;
                    if self.node.config.proxy.expects_proxy_header(peer.ip()) {
                        conn.phase = Phase::Proxy;
                    }
                    entry.insert(conn);
                    self.metrics.connection_opened();
                    self.schedule(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // out of file descriptors, usually: say so at most once a minute
                    let quiet = self
                        .accept_error_logged
                        .is_some_and(|t| self.now < t + Duration::from_secs(60));
                    if !quiet {
                        tracing::warn!(worker = self.id, "accept failed: {e}");
                        self.accept_error_logged = Some(self.now);
                    }
                    return;
                }
            }
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    /// Reads everything the socket has (unless the connection's outbox is full) and acts on it.
    fn read(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.read_paused || !conn.readable {
                return;
            }
            let own = !conn.inbuf.is_empty();
            let (mut buf, max) = if own {
                let want = self.own_read_size(key);
                (std::mem::take(&mut self.conns[key].inbuf), want)
            } else {
                (
                    std::mem::take(&mut self.readbuf),
                    self.node.config.limits.read_buffer_size,
                )
            };
            let conn = &mut self.conns[key];
            match crate::sys::read_into(&conn.stream, &mut buf, max) {
                Ok(0) => {
                    self.put_back(key, buf, own);
                    self.close_now(key);
                    return;
                }
                Ok(_) => {
                    self.process(key, &mut buf);
                    self.put_back(key, buf, own);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    self.put_back(key, buf, own);
                    return;
                }
                Err(_) => {
                    self.put_back(key, buf, own);
                    self.close_now(key);
                    return;
                }
            }
        }
    }

    /// How much to read into a connection's own buffer. A large frame or body gets room for
    /// all of it in one allocation, but only once a 32nd of it has arrived: before that the
    /// buffer doubles as data comes, so a header that announces 2 GiB and sends nothing costs
    /// nothing, and what a peer can make the gateway reserve stays proportional to what it
    /// really sent. The buffers outgrown on the way add up to at most a 16th of the message, so
    /// the peak stays near one copy of it.
    fn own_read_size(&self, key: usize) -> usize {
        // a cut request head or a small frame's rest: a small read, not a whole read buffer
        // per connection (hundreds of slow clients must not each pin 64 KiB)
        const SMALL: usize = 4096;
        let base = self.node.config.limits.read_buffer_size;
        let conn = &self.conns[key];
        let have = conn.inbuf.len();
        let remaining = match &conn.phase {
            Phase::Ws(s) => usize::try_from(s.session.wanted()).unwrap_or(usize::MAX),
            Phase::Body(b) => b.len.saturating_sub(have),
            _ => 0,
        };
        if remaining <= base {
            remaining.max(SMALL)
        } else if have.saturating_mul(32) >= have.saturating_add(remaining) {
            remaining
        } else {
            have.max(base)
        }
    }

    /// Keeps what `process` left unconsumed with the connection, and returns the worker's
    /// buffer to the worker.
    fn put_back(&mut self, key: usize, mut buf: BytesMut, own: bool) {
        let conn = self.conns.get_mut(key);
        if own {
            if let Some(conn) = conn {
                // an emptied buffer is freed: an idle connection holds no memory
                conn.inbuf = if buf.is_empty() { BytesMut::new() } else { buf };
            }
            return;
        }
        if let Some(conn) = conn
            && !buf.is_empty()
            && !matches!(conn.phase, Phase::Closing(_) | Phase::Linger(_))
        {
            // a cut frame or request: the connection keeps a copy of just those bytes
            conn.inbuf = BytesMut::from(&buf[..]);
        }
        buf.clear();
        self.readbuf = buf;
    }

    /// Acts on the bytes at the front of `buf`, phase by phase, consuming what it used.
    fn process(&mut self, key: usize, buf: &mut BytesMut) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                buf.clear();
                return;
            };
            let before = buf.len();
            match conn.phase {
                Phase::Proxy => self.process_proxy(key, buf),
                Phase::Http => self.process_http(key, buf),
                Phase::Body(_) => self.process_body(key, buf),
                Phase::Ws(_) => {
                    self.process_ws(key, buf);
                    return;
                }
                Phase::Closing(_) | Phase::Linger(_) => {
                    buf.clear();
                    return;
                }
            }
            if buf.is_empty() || buf.len() == before {
                return;
            }
            if let Some(conn) = self.conns.get_mut(key)
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
    fn resume(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        conn.read_paused = false;
        if matches!(conn.phase, Phase::Http | Phase::Body(_)) && !conn.inbuf.is_empty() {
            let mut buf = std::mem::take(&mut conn.inbuf);
            self.process(key, &mut buf);
            self.put_back(key, buf, true);
        }
        self.read(key);
    }

    // ---- PROXY protocol --------------------------------------------------------------------

    /// Reads the PROXY header of a connection from a trusted proxy: the client's address, which
    /// per-address limits and logs then use.
    fn process_proxy(&mut self, key: usize, buf: &mut BytesMut) {
        let header = match wsgate_core::proxy::parse(buf) {
            Ok(None) => return,
            Ok(Some(h)) => h,
            Err(e) => {
                self.metrics.failure(Failure::BadProxyHeader);
                buf.clear();
                self.answer(key, Bytes::from(handshake::error_response(&e)), false);
                return;
            }
        };
        let (header, len) = header;
        buf.advance(len);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Http;
        // LOCAL or UNKNOWN: the proxy's own connection (a health check), not a client's
        let Some(source) = header.source else { return };
        conn.client = source.ip();
        match self.node.limits.admit_ip(conn.client) {
            Ok(counted) => conn.ip_counted = counted,
            Err(refusal) => {
                self.metrics.failure(refusal.failure());
                buf.clear();
                self.answer(key, http::refusal(refusal), false);
            }
        }
    }

    /// Takes the client's address from `X-Forwarded-For` (when there is none, the address known
    /// so far: the PROXY header's, or the proxy's own) and counts the connection against it. Each request of a kept-alive connection may come
    /// from another client. Returns the answer of a refusal.
    fn attribute_forwarded(
        &mut self,
        key: usize,
        req: &handshake::Request<'_>,
    ) -> std::result::Result<(), Bytes> {
        let items: Vec<&[u8]> = req.header_list("X-Forwarded-For").collect();
        let trusted = &self.node.config.proxy.trusted_proxies;
        let conn = &mut self.conns[key];
        let client = match crate::forwarded::client(items.into_iter(), trusted) {
            Ok(client) => client.unwrap_or(conn.client),
            Err(e) => {
                self.metrics.failure(Failure::of(&e));
                return Err(Bytes::from(handshake::error_response(&e)));
            }
        };
        if conn.ip_counted {
            if conn.client == client {
                return Ok(());
            }
            self.node.limits.release_ip(conn.client);
            conn.ip_counted = false;
        }
        conn.client = client;
        match self.node.limits.admit_ip(client) {
            Ok(counted) => {
                conn.ip_counted = counted;
                Ok(())
            }
            Err(refusal) => {
                self.metrics.failure(refusal.failure());
                Err(http::refusal(refusal))
            }
        }
    }

    // ---- HTTP ------------------------------------------------------------------------------

    fn process_http(&mut self, key: usize, buf: &mut BytesMut) {
        enum Action {
            Answer {
                response: Bytes,
                keep_alive: bool,
                reason: Option<Failure>,
            },
            Upgrade {
                response: Bytes,
                kind: SessionKind,
                topics: Vec<String>,
                grants: Option<Box<Grants>>,
            },
            Body(Box<PendingBody>),
        }
        let draining = self.node.drain.get().refuses_sessions();
        let node = self.node.clone();
        let config = &node.config;
        if config.proxy.proxy_protocol
            && (buf.starts_with(b"PROXY ")
                || buf.starts_with(&wsgate_core::proxy::V2_SIGNATURE[..4]))
        {
            // only trusted proxies may say who the client is
            self.metrics.failure(Failure::BadProxyHeader);
            buf.clear();
            let e = Error::BadProxyHeader("sent by a peer that is not a trusted proxy");
            self.answer(key, Bytes::from(handshake::error_response(&e)), false);
            return;
        }
        let (head_len, action) = match handshake::parse_request(buf, &self.limits) {
            Ok(None) => return,
            Err(e) => {
                self.metrics.failure(Failure::of(&e));
                let response = Bytes::from(handshake::error_response(&e));
                buf.clear();
                self.answer(key, response, false);
                return;
            }
            Ok(Some(req)) => {
                if config.proxy.trusts_forwarded_for(self.conns[key].peer.ip())
                    && let Err(response) = self.attribute_forwarded(key, &req)
                {
                    buf.clear();
                    self.answer(key, response, false);
                    return;
                }
                let keep_alive = http::keep_alive(&req);
                let action = match http::route(&req, config.server.echo, config.server.dashboard) {
                    Route::Upgrade(_) if draining => Action::Answer {
                        response: http::text(
                            503,
                            "draining: reconnect to another node",
                            false,
                            &[("Retry-After", "1")],
                        ),
                        keep_alive: false,
                        reason: Some(Failure::Draining),
                    },
                    Route::Upgrade(kind) => match req.validate_upgrade() {
                        Err(e) => Action::Answer {
                            response: Bytes::from(handshake::error_response(&e)),
                            keep_alive: false,
                            reason: Some(Failure::of(&e)),
                        },
                        Ok(up)
                            if !up.origin().is_none_or(|o| {
                                origin_allowed(o, &config.auth.allowed_origins)
                            }) =>
                        {
                            Action::Answer {
                                response: http::text(403, "origin not allowed", false, &[]),
                                keep_alive: false,
                                reason: Some(Failure::Origin),
                            }
                        }
                        Ok(up) => match self.authorize(&req) {
                            Err(why) => Action::Answer {
                                response: http::text(
                                    401,
                                    &why,
                                    false,
                                    &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                                ),
                                keep_alive: false,
                                reason: Some(Failure::Unauthorized),
                            },
                            Ok((grants, protocol)) => {
                                let topics = match (kind, up.query()) {
                                    (SessionKind::PubSub, Some(q)) => {
                                        message::parse_subscribe_query(
                                            q,
                                            config.limits.max_topics_per_connection,
                                        )
                                    }
                                    _ => Ok(Vec::new()),
                                };
                                let forbidden = topics.as_ref().ok().and_then(|t| {
                                    let g = grants.as_ref()?;
                                    t.iter().find(|t| !g.may_subscribe(t)).cloned()
                                });
                                match (topics, forbidden) {
                                    (Ok(_), Some(t)) => Action::Answer {
                                        response: http::text(
                                            403,
                                            &format!("the token does not allow subscribing to {t}"),
                                            false,
                                            &[],
                                        ),
                                        keep_alive: false,
                                        reason: Some(Failure::Forbidden),
                                    },
                                    (Ok(topics), None) => Action::Upgrade {
                                        response: Bytes::from(up.response(protocol, None)),
                                        kind,
                                        topics,
                                        grants,
                                    },
                                    (Err(e), _) => Action::Answer {
                                        response: http::text(400, &e.to_string(), false, &[]),
                                        keep_alive: false,
                                        reason: Some(Failure::BadRequest),
                                    },
                                }
                            }
                        },
                    },
                    Route::Healthz => Action::Answer {
                        response: http::text(200, "ok", keep_alive, &[]),
                        keep_alive,
                        reason: None,
                    },
                    Route::Readyz if draining => Action::Answer {
                        response: http::text(503, "draining", keep_alive, &[]),
                        keep_alive,
                        reason: None,
                    },
                    Route::Readyz => Action::Answer {
                        response: http::text(200, "ready", keep_alive, &[]),
                        keep_alive,
                        reason: None,
                    },
                    Route::Metrics => {
                        let body = self.node.metrics_text();
                        Action::Answer {
                            response: http::with_type(
                                200,
                                "text/plain; version=0.0.4; charset=utf-8",
                                body.as_bytes(),
                                keep_alive,
                            ),
                            keep_alive,
                            reason: None,
                        }
                    }
                    Route::Publish(raw_topic) => {
                        let framing = req
                            .body_framing()
                            .and_then(|f| f.check_max(config.limits.max_body_size as u64));
                        let topic = message::decode_topic_path(&raw_topic)
                            .and_then(|t| message::validate_topic(&t).map(|_| t));
                        match (framing, topic) {
                            _ if !http::authorized(&req, config.auth.api_key.as_deref()) => {
                                Action::Answer {
                                    response: http::text(
                                        401,
                                        "missing or wrong API key",
                                        false,
                                        &[("WWW-Authenticate", "Bearer")],
                                    ),
                                    keep_alive: false,
                                    reason: Some(Failure::Unauthorized),
                                }
                            }
                            (Err(e), _) => Action::Answer {
                                response: Bytes::from(handshake::error_response(&e)),
                                keep_alive: false,
                                reason: Some(Failure::of(&e)),
                            },
                            (Ok(handshake::BodyFraming::Chunked), _) => Action::Answer {
                                response: http::text(
                                    411,
                                    "send the body with Content-Length, not chunked",
                                    false,
                                    &[],
                                ),
                                keep_alive: false,
                                reason: Some(Failure::BadRequest),
                            },
                            (_, Err(e)) => Action::Answer {
                                response: http::text(400, &e.to_string(), false, &[]),
                                keep_alive: false,
                                reason: Some(Failure::BadRequest),
                            },
                            (Ok(framing), Ok(topic)) => {
                                let len = match framing {
                                    handshake::BodyFraming::Length(n) => n as usize,
                                    _ => 0,
                                };
                                Action::Body(Box::new(PendingBody {
                                    topic,
                                    json: http::is_json(&req),
                                    len,
                                    keep_alive,
                                }))
                            }
                        }
                    }
                    Route::Dashboard => Action::Answer {
                        response: http::with_type(
                            200,
                            "text/html; charset=utf-8",
                            dashboard::PAGE.as_bytes(),
                            keep_alive,
                        ),
                        keep_alive,
                        reason: None,
                    },
                    Route::ClientJs => Action::Answer {
                        response: http::with_type(
                            200,
                            "text/javascript; charset=utf-8",
                            dashboard::CLIENT_JS.as_bytes(),
                            keep_alive,
                        ),
                        keep_alive,
                        reason: None,
                    },
                    Route::Stats => {
                        let body = dashboard::stats(&self.node);
                        Action::Answer {
                            response: http::with_type(
                                200,
                                "application/json",
                                body.as_bytes(),
                                keep_alive,
                            ),
                            keep_alive,
                            reason: None,
                        }
                    }
                    Route::MethodNotAllowed(allow) => Action::Answer {
                        response: http::text(405, "method not allowed", false, &[("Allow", allow)]),
                        keep_alive: false,
                        reason: Some(Failure::MethodNotAllowed),
                    },
                    Route::NotFound => Action::Answer {
                        response: http::text(
                            404,
                            "no such endpoint (try /ws, /healthz, /metrics)",
                            keep_alive,
                            &[],
                        ),
                        keep_alive,
                        reason: Some(Failure::NotFound),
                    },
                };
                (req.head_len(), action)
            }
        };
        buf.advance(head_len);
        match action {
            Action::Answer {
                response,
                keep_alive,
                reason,
            } => {
                if let Some(reason) = reason {
                    self.metrics.failure(reason);
                    let conn = &self.conns[key];
                    tracing::debug!(client = %conn.client, peer = %conn.peer, reason = reason.text(), "refused");
                }
                self.metrics.inc(Counter::HttpRequests);
                if !keep_alive {
                    buf.clear();
                }
                self.answer(key, response, keep_alive);
            }
            Action::Body(body) => {
                self.conns[key].phase = Phase::Body(body);
            }
            Action::Upgrade {
                response,
                kind,
                topics,
                grants,
            } => self.open_session(key, response, kind, topics, grants),
        }
    }

    /// Checks the token of an upgrade when authentication is on: what it allows, and the
    /// subprotocol the answer must select (`bearer`, when the token came that way).
    fn authorize(
        &self,
        req: &handshake::Request<'_>,
    ) -> std::result::Result<(Option<Box<Grants>>, Option<&'static str>), String> {
        let Some(auth) = &self.node.auth else {
            return Ok((None, None));
        };
        let Some((token, source)) = auth::token_of(req) else {
            return Err(
                "a token is required (?token=, Authorization: Bearer, or the bearer subprotocol)"
                    .into(),
            );
        };
        let grants = auth.verify(&token, self.now)?;
        let protocol = (source == TokenSource::Subprotocol).then_some("bearer");
        Ok((Some(Box::new(grants)), protocol))
    }

    /// Queues an HTTP answer; keeps the connection for the next request or closes it after.
    fn answer(&mut self, key: usize, response: Bytes, keep_alive: bool) {
        let conn = &mut self.conns[key];
        conn.outbox.push_raw(response);
        if keep_alive {
            conn.phase = Phase::Http;
            conn.request_started = self.now;
        } else {
            conn.phase = Phase::Closing(self.now);
        }
        self.mark_dirty(key);
        self.schedule(key);
    }

    fn process_body(&mut self, key: usize, buf: &mut BytesMut) {
        let Phase::Body(pending) = &self.conns[key].phase else {
            return;
        };
        if buf.len() < pending.len {
            return;
        }
        let Phase::Body(pending) = std::mem::replace(&mut self.conns[key].phase, Phase::Http)
        else {
            unreachable!()
        };
        let body = buf.split_to(pending.len);
        self.metrics.inc(Counter::HttpRequests);
        let frame = if pending.json {
            message::json_body_delivery(&pending.topic, &body)
        } else {
            message::binary_body_delivery(&pending.topic, &body)
        };
        match frame {
            Ok(frame) => {
                let delivered = self.publish(&pending.topic, frame);
                let reply = format!("{{\"delivered\":{delivered}}}");
                let response = http::with_type(
                    202,
                    "application/json",
                    reply.as_bytes(),
                    pending.keep_alive,
                );
                self.answer(key, response, pending.keep_alive);
            }
            Err(e) => {
                self.metrics.failure(Failure::BadRequest);
                self.answer(key, http::text(400, &e.to_string(), false, &[]), false);
            }
        }
        if !pending.keep_alive {
            buf.clear();
        }
    }

    // ---- WebSocket -------------------------------------------------------------------------

    fn open_session(
        &mut self,
        key: usize,
        response: Bytes,
        kind: SessionKind,
        topics: Vec<String>,
        grants: Option<Box<Grants>>,
    ) {
        let conn = &mut self.conns[key];
        conn.outbox.push_raw(response);
        let mut session = wsgate_core::session::Session::new(self.session_config.clone(), self.now);
        if let Some(g) = &grants {
            session.set_token_expiry(g.expires);
        }
        tracing::debug!(
            client = %conn.client,
            peer = %conn.peer,
            subject = grants.as_ref().and_then(|g| g.subject.as_deref()),
            ?kind,
            "session opened"
        );
        conn.phase = Phase::Ws(Box::new(Session {
            kind,
            session,
            topics: Vec::new(),
            publish_bucket: TokenBucket::new(self.node.config.limits.publish_burst(), self.now),
            refused_in_a_row: 0,
            grants,
        }));
        self.metrics.inc(Counter::UpgradesTotal);
        self.node.sessions.fetch_add(1, Ordering::AcqRel);
        for topic in topics {
            // the query's topics were validated and counted by parse_subscribe_query
            let _ = self.subscribe(key, &topic);
        }
        self.mark_dirty(key);
        self.schedule(key);
        if self.node.drain.get().closes_sessions() {
            self.start_close(key, CloseCode::GOING_AWAY, "server draining");
        }
    }

    fn process_ws(&mut self, key: usize, buf: &mut BytesMut) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let Phase::Ws(ws) = &mut conn.phase else {
                buf.clear();
                return;
            };
            match ws.session.read(buf, self.now) {
                None => return,
                Some(event) => self.on_event(key, event),
            }
        }
    }

    /// Hands the frames the session wants sent (pongs, pings, closes) to the outbox.
    fn transmit(&mut self, key: usize) {
        while let Some(frame) = self
            .conns
            .get_mut(key)
            .and_then(Conn::session)
            .and_then(|s| s.session.poll_transmit())
        {
            self.send(key, frame);
        }
    }

    fn on_event(&mut self, key: usize, event: Event) {
        let kind = match &event {
            Event::Text(_) => MessageKind::Text,
            Event::Binary(_) => MessageKind::Binary,
            Event::Failed(_) | Event::Timeout(_) => {
                self.transmit(key);
                self.end_session(key);
                self.mark_dirty(key);
                return;
            }
            _ => MessageKind::Control,
        };
        if kind == MessageKind::Control {
            self.metrics.message_in(kind, 0);
        }
        match event {
            Event::Ping(_) | Event::Pong(_) => self.transmit(key),
            Event::Closed(received) => {
                self.metrics
                    .close_received(received.as_ref().map(|c| c.code));
                tracing::debug!(
                    client = %self.conns[key].client,
                    code = received.as_ref().map(|c| c.code.0),
                    reason = %received
                        .as_ref()
                        .map_or(std::borrow::Cow::Borrowed(""), |c| String::from_utf8_lossy(&c.reason)),
                    "close received"
                );
                self.transmit(key);
                self.end_session(key);
                self.mark_dirty(key);
            }
            Event::Text(payload) | Event::Binary(payload) => {
                let conn = &mut self.conns[key];
                let Phase::Ws(session) = &mut conn.phase else {
                    return;
                };
                if !session.session.is_open() {
                    return;
                }
                let session_kind = session.kind;
                self.metrics.message_in(kind, payload.len());
                #[cfg(feature = "fault-injection")]
                if &payload[..] == b"wsgate:panic" {
                    panic!("fault injection: a bug while handling a message");
                }
                match (session_kind, kind) {
                    (SessionKind::Echo, MessageKind::Text) => {
                        self.send(key, OutFrame::new(OpCode::Text, payload))
                    }
                    (SessionKind::Echo, _) => {
                        self.send(key, OutFrame::new(OpCode::Binary, payload))
                    }
                    (SessionKind::PubSub, MessageKind::Text) => self.on_control(key, &payload),
                    (SessionKind::PubSub, _) => self.on_binary_publish(key, payload),
                }
                let conn = &mut self.conns[key];
                if conn.outbox.queued_bytes() > self.node.config.limits.outbox_limit {
                    // stop reading from a peer that does not read its answers
                    conn.read_paused = true;
                }
            }
            Event::Failed(_) | Event::Timeout(_) => unreachable!("handled above"),
        }
    }

    fn on_control(&mut self, key: usize, text: &[u8]) {
        let reply = match message::parse_control(text) {
            Err(bad) => {
                self.metrics.inc(Counter::MessageErrors);
                bad.reply()
            }
            Ok(msg) => {
                let result = match &msg.command {
                    Command::Subscribe { topic } => self.subscribe(key, topic),
                    Command::Unsubscribe { topic } => {
                        self.unsubscribe(key, topic);
                        Ok(())
                    }
                    Command::Publish { topic, data } => self.may_publish(key, topic).map(|()| {
                        self.publish(topic, message::text_delivery(topic, data));
                    }),
                };
                match (result, msg.id) {
                    (Ok(()), Some(id)) => {
                        if let Command::Subscribe { topic } = &msg.command
                            && self.defer_ack(key, topic, id)
                        {
                            return;
                        }
                        message::ack_frame(id)
                    }
                    (Ok(()), None) => return,
                    (Err(e), id) => {
                        self.metrics.inc(Counter::MessageErrors);
                        message::error_frame(id, &e)
                    }
                }
            }
        };
        if self
            .conns
            .get_mut(key)
            .and_then(Conn::session)
            .is_some_and(|s| s.session.is_open())
        {
            self.send(key, reply);
        }
    }

    /// In a cluster, holds back the acknowledgement of a subscribe until Redis has confirmed
    /// the node's subscription to the topic (at most [`ACK_WAIT`]), so that an acknowledged
    /// subscriber receives what any node publishes after the acknowledgement. Returns whether
    /// the acknowledgement waits.
    fn defer_ack(&mut self, key: usize, topic: &str, id: i64) -> bool {
        let Some(local) = self.topics.get(topic) else {
            return false;
        };
        if !self.node.hub.awaits_uplink(&local.topic) {
            return false;
        }
        self.deferred_acks.push(DeferredAck {
            conn: conn_id(key, self.conns[key].generation),
            id,
            topic: local.topic.clone(),
            since: self.now,
        });
        true
    }

    /// Sends the acknowledgements whose subscriptions Redis has confirmed, or that waited
    /// [`ACK_WAIT`], or all of them when Redis is down.
    fn send_deferred_acks(&mut self) {
        let up = self.node.hub.uplink_up();
        let now = self.now;
        let (ready, waiting): (Vec<DeferredAck>, Vec<DeferredAck>) =
            std::mem::take(&mut self.deferred_acks)
                .into_iter()
                .partition(|d| {
                    !up || d.topic.remote_ready() || now.duration_since(d.since) >= ACK_WAIT
                });
        self.deferred_acks = waiting;
        for d in ready {
            let key = (d.conn & 0xFFFF_FFFF) as usize;
            let open = self.conns.get_mut(key).is_some_and(|c| {
                conn_id(key, c.generation) == d.conn
                    && c.session().is_some_and(|s| s.session.is_open())
            });
            if open {
                self.send(key, message::ack_frame(d.id));
            }
        }
    }

    fn on_binary_publish(&mut self, key: usize, payload: Bytes) {
        let topic = match message::parse_binary_publish(&payload)
            .and_then(|p| self.may_publish(key, p.topic).map(|()| p))
        {
            Ok(p) => p.topic.to_string(),
            Err(e) => {
                self.metrics.inc(Counter::MessageErrors);
                if self
                    .conns
                    .get_mut(key)
                    .and_then(Conn::session)
                    .is_some_and(|s| s.session.is_open())
                {
                    self.send(key, message::error_frame(None, &e));
                }
                return;
            }
        };
        self.publish(&topic, message::binary_delivery(payload));
    }

    /// Whether connection `key` may publish to `topic` now: its token allows the topic, and
    /// it is within `publish-rate`. A connection that keeps publishing through a whole burst's
    /// worth of refusals is closed with 1008.
    fn may_publish(&mut self, key: usize, topic: &str) -> Result<()> {
        let (rate, burst) = (
            self.node.config.limits.publish_rate,
            self.node.config.limits.publish_burst(),
        );
        let now = self.now;
        let Some(session) = self.conns.get_mut(key).and_then(Conn::session) else {
            return Ok(());
        };
        if session
            .grants
            .as_ref()
            .is_some_and(|g| !g.may_publish(topic))
        {
            self.metrics.inc(Counter::Forbidden);
            return Err(Error::Forbidden("publish to"));
        }
        if rate == 0 {
            return Ok(());
        }
        if session.publish_bucket.take(rate, burst, now) {
            session.refused_in_a_row = 0;
            return Ok(());
        }
        session.refused_in_a_row += 1;
        self.metrics.inc(Counter::RateLimited);
        if session.refused_in_a_row > burst {
            let reason = format!("publish rate over {rate}/s, persistently");
            self.start_close(key, CloseCode::POLICY, &reason);
        }
        Err(Error::RateLimited)
    }

    /// Queues a frame to one connection.
    fn send(&mut self, key: usize, frame: OutFrame) {
        let kind = match frame.header()[0] & 0x0F {
            0x1 => MessageKind::Text,
            0x2 => MessageKind::Binary,
            0x8 => {
                let code = match frame.payload()[..] {
                    [a, b, ..] => Some(CloseCode(u16::from_be_bytes([a, b]))),
                    _ => None,
                };
                self.metrics.close_sent(code);
                MessageKind::Control
            }
            _ => MessageKind::Control,
        };
        self.metrics.messages_out(kind, 1);
        self.conns[key].outbox.push(frame);
        self.mark_dirty(key);
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.flush_listed
        {
            conn.flush_listed = true;
            self.dirty.push(key);
        }
    }

    /// Starts a close handshake from the server side: the peer has the close timeout to answer.
    fn start_close(&mut self, key: usize, code: CloseCode, reason: &str) {
        let now = self.now;
        let Some(session) = self.conns.get_mut(key).and_then(Conn::session) else {
            return;
        };
        if !session.session.close(code, reason, now) {
            return;
        }
        self.unsubscribe_all(key);
        self.transmit(key);
        self.schedule(key);
    }

    /// Leaves the WebSocket phase: forgets subscriptions and counts the session closed.
    fn end_session(&mut self, key: usize) {
        if !matches!(self.conns[key].phase, Phase::Ws(_)) {
            return;
        }
        self.unsubscribe_all(key);
        self.node.sessions.fetch_sub(1, Ordering::AcqRel);
        self.conns[key].phase = Phase::Closing(self.now);
    }

    // ---- pub/sub ---------------------------------------------------------------------------

    fn subscribe(&mut self, key: usize, topic: &str) -> Result<()> {
        let max = self.node.config.limits.max_topics_per_connection;
        let conn = &mut self.conns[key];
        let id = conn_id(key, conn.generation);
        let Phase::Ws(session) = &mut conn.phase else {
            return Ok(());
        };
        if session.topics.iter().any(|t| &**t == topic) {
            return Ok(());
        }
        if session
            .grants
            .as_ref()
            .is_some_and(|g| !g.may_subscribe(topic))
        {
            self.metrics.inc(Counter::Forbidden);
            return Err(Error::Forbidden("subscribe to"));
        }
        if session.topics.len() >= max {
            return Err(Error::TooManyTopics(max));
        }
        let local = match self.topics.entry(Arc::from(topic)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let topic = self.node.hub.topic(topic);
                e.insert(LocalTopic {
                    topic,
                    subscribers: HashSet::new(),
                })
            }
        };
        session.topics.push(local.topic.name().clone());
        let first = local.subscribers.is_empty();
        local.subscribers.insert(id);
        self.node.hub.subscribed(self.id, &local.topic, first);
        Ok(())
    }

    fn unsubscribe(&mut self, key: usize, topic: &str) {
        let conn = &mut self.conns[key];
        let id = conn_id(key, conn.generation);
        let Phase::Ws(session) = &mut conn.phase else {
            return;
        };
        let Some(i) = session.topics.iter().position(|t| &**t == topic) else {
            return;
        };
        session.topics.swap_remove(i);
        self.forget_subscriber(topic, id);
    }

    fn unsubscribe_all(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let id = conn_id(key, conn.generation);
        let Phase::Ws(session) = &mut conn.phase else {
            return;
        };
        for topic in std::mem::take(&mut session.topics) {
            self.forget_subscriber(&topic, id);
        }
    }

    fn forget_subscriber(&mut self, topic: &str, id: u64) {
        let Some(local) = self.topics.get_mut(topic) else {
            return;
        };
        if local.subscribers.remove(&id) {
            let last = local.subscribers.is_empty();
            self.node.hub.unsubscribed(self.id, &local.topic, last);
            if last {
                let local = self.topics.remove(topic).expect("present");
                self.node.hub.release(local.topic);
            }
        }
    }

    /// Publishes a frame to a topic: to other workers by reference, to local subscribers
    /// directly. Returns the subscribers on this node.
    fn publish(&mut self, topic: &str, frame: OutFrame) -> usize {
        self.metrics.inc(Counter::Publishes);
        if !self.topics.contains_key(topic) {
            if self.topics.len() >= TOPIC_CACHE_LIMIT {
                self.sweep_topic_cache();
            }
            let shared = self.node.hub.topic(topic);
            self.topics.insert(
                shared.name().clone(),
                LocalTopic {
                    topic: shared,
                    subscribers: HashSet::new(),
                },
            );
        }
        let local = &self.topics[topic];
        let entry = local.topic.clone();
        self.node.hub.publish(self.id, &entry, &frame);
        self.deliver_local(topic, &frame);
        entry.subscribers()
    }

    fn sweep_topic_cache(&mut self) {
        let idle: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(_, l)| l.subscribers.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for name in idle {
            if let Some(local) = self.topics.remove(&name) {
                self.node.hub.release(local.topic);
            }
        }
    }

    /// Queues `frame` to every local subscriber of `topic`; closes the ones that fell behind.
    fn deliver_local(&mut self, topic: &str, frame: &OutFrame) {
        let Some(local) = self.topics.get(topic) else {
            return;
        };
        let limit = self.node.config.limits.outbox_limit;
        let kind = if frame.header()[0] & 0x0F == 0x1 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        for &id in &local.subscribers {
            let key = (id & 0xFFFF_FFFF) as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.outbox.push(frame.clone());
            delivered += 1;
            if !conn.flush_listed {
                conn.flush_listed = true;
                self.dirty.push(key);
            }
            if conn.outbox.queued_bytes() > limit {
                // A burst queued within one turn of the loop (a publisher's whole read, a full
                // inbox) is not the subscriber's fault: write what its socket takes now, and
                // judge it by what is left. A write error is handled by the flush after.
                if let Ok(done) = conn.outbox.flush(&mut conn.stream) {
                    self.metrics.add(Counter::BytesOut, done.bytes as u64);
                }
                if conn.outbox.queued_bytes() > limit {
                    slow.push(key);
                }
            }
        }
        self.metrics.delivered(kind, delivered);
        for key in slow {
            self.metrics.inc(Counter::SlowConsumerCloses);
            self.conns[key].outbox.drop_unstarted();
            let reason = format!(
                "slow consumer: more than {} queued",
                wsgate_core::units::format_size(limit as u64)
            );
            self.start_close(key, CloseCode::TRY_AGAIN_LATER, &reason);
        }
    }

    fn take_inbox(&mut self) {
        let node = self.node.clone();
        node.hub
            .drain_at_most(self.id, INBOX_BUDGET, |d: Delivery| {
                self.deliver_local(d.topic.name(), &d.frame)
            });
    }

    // ---- writing and closing ---------------------------------------------------------------

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flush_listed = false;
            }
            self.flush(key);
        }
        if self.dirty.is_empty() {
            // keep the allocation, unless a burst made it much larger than the connections
            if dirty.capacity() > 4 * self.conns.len().max(1024) {
                dirty.shrink_to(self.conns.len().max(1024));
            }
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.outbox.is_empty() && !matches!(conn.phase, Phase::Closing(_)) {
            return;
        }
        match conn.outbox.flush(&mut conn.stream) {
            Ok(done) => self.metrics.add(Counter::BytesOut, done.bytes as u64),
            Err(_) => {
                self.close_now(key);
                return;
            }
        }
        let limit = self.node.config.limits.outbox_limit;
        let conn = &mut self.conns[key];
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
                .reregister(&mut conn.stream, Token(key), interest)
                .is_err()
            {
                self.close_now(key);
                return;
            }
            conn.interest = interest;
        }
        if wants_write {
            if matches!(conn.phase, Phase::Closing(_)) {
                // the peer has the close timeout to take what is left
                self.schedule(key);
            }
            return;
        }
        if matches!(conn.phase, Phase::Closing(_)) {
            // everything is out: half-close and wait for the peer to close its side
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            conn.phase = Phase::Linger(self.now);
            self.schedule(key);
            self.read(key);
            return;
        }
        if conn.read_paused && conn.outbox.queued_bytes() <= limit / 2 {
            self.resume(key);
        }
    }

    /// Drops a connection at once.
    fn close_now(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.end_session(key);
        self.forget(key);
    }

    /// Removes a connection from the worker and gives back what it counted against the limits.
    fn forget(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.node.limits.release_total();
        if conn.ip_counted {
            self.node.limits.release_ip(conn.client);
        }
        self.metrics.connection_closed();
        drop(conn);
        self.collect_at.get_or_insert(self.now + COLLECT_DELAY);
    }

    // ---- timers and drain ------------------------------------------------------------------

    fn schedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(at) = conn.deadline(&self.timeouts) else {
            return;
        };
        if conn.timer_at.is_none_or(|t| at < t) {
            conn.timer_at = Some(at);
            self.timers.push(Reverse((at, key, conn.generation)));
        }
    }

    fn fire_timers(&mut self) {
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > self.now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation || conn.timer_at != Some(at) {
                continue; // stale entry
            }
            conn.timer_at = None;
            self.guarded(key, |w| w.on_timer(key));
        }
    }

    /// Runs `f` for connection `key`, containing a panic (a bug) to that connection: it is
    /// closed with 1011, counted in `wsgate_internal_errors_total`, and the worker goes on with
    /// its other connections. The panic hook logs the first one.
    fn guarded(&mut self, key: usize, f: impl FnOnce(&mut Worker)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_ok() {
            return;
        }
        self.metrics.inc(Counter::InternalErrors);
        if !self.conns.contains(key) {
            return;
        }
        // best effort: tell the peer, then drop the connection; if even that fails, forget it
        let close = OutFrame::close_with(CloseCode::INTERNAL_ERROR, "internal error");
        let cleaned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if matches!(self.conns[key].phase, Phase::Ws(_)) {
                self.metrics.close_sent(Some(CloseCode::INTERNAL_ERROR));
                let _ = std::io::Write::write(&mut self.conns[key].stream, &close.to_vec());
            }
            self.close_now(key);
        }));
        if cleaned.is_err() && self.conns.contains(key) {
            self.forget(key);
        }
    }

    fn on_timer(&mut self, key: usize) {
        let now = self.now;
        let conn = &mut self.conns[key];
        match conn.deadline(&self.timeouts) {
            None => {}
            Some(at) if at > now => self.schedule(key),
            Some(_) => match &mut conn.phase {
                Phase::Http | Phase::Body(_) => {
                    if conn.inbuf.is_empty() && matches!(conn.phase, Phase::Http) {
                        self.close_now(key); // an idle keep-alive or silent connection
                    } else {
                        self.metrics.failure(Failure::Timeout);
                        conn.inbuf = BytesMut::new();
                        self.answer(key, http::text(408, "request timeout", false, &[]), false);
                    }
                }
                Phase::Linger(_) | Phase::Closing(_) | Phase::Proxy => self.close_now(key),
                Phase::Ws(_) => {
                    while let Some(event) = self
                        .conns
                        .get_mut(key)
                        .and_then(Conn::session)
                        .and_then(|s| s.session.handle_timeout(now))
                    {
                        match event {
                            // the peer never answered our close
                            Event::Timeout(Timer::Close) => return self.close_now(key),
                            Event::Timeout(Timer::Idle | Timer::TokenExpiry) => {
                                self.unsubscribe_all(key)
                            }
                            _ => {}
                        }
                        self.transmit(key);
                    }
                    self.schedule(key);
                }
            },
        }
    }

    /// Follows the drain state; returns true when the worker must exit.
    fn check_state(&mut self) -> bool {
        let state = self.node.drain.get();
        if state == self.seen_state {
            return false;
        }
        self.seen_state = state;
        if state.closes_sessions() {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                match self.conns[key].phase {
                    Phase::Ws(_) => self.start_close(key, CloseCode::GOING_AWAY, "server draining"),
                    Phase::Http | Phase::Proxy
                        if self.conns[key].inbuf.is_empty()
                            && self.conns[key].outbox.is_empty() =>
                    {
                        self.close_now(key)
                    }
                    _ => {}
                }
            }
        }
        if state.is_stopping() {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.close_now(key);
            }
            return true;
        }
        false
    }
}
