//! One connection: its socket, its phase (PROXY header, HTTP request, request body, WebSocket
//! session, the last bytes, lingering), its buffers, and the deadline of each phase. The
//! worker's connections live in a [`Connections`] slab behind generation-checked [`ConnId`]s.
//!
//! An idle open WebSocket keeps no buffer: reads go into the worker's shared buffer, and a
//! connection only holds bytes of its own (`inbuf`) when a frame or a request was cut between
//! two reads. Its outbox allocates only while something is queued.

mod batch;
mod send_many;
mod slots;
mod table;
mod transport;

pub(crate) use batch::Audience;
pub(crate) use table::{ConnId, Connections};
pub(crate) use transport::{Got, Transport};

use crate::http::PendingBody;
use crate::outbox::Outbox;
use crate::session::Ws;
use crate::sys::LARGE_BLOCK;
use bytes::BytesMut;
use mio::Interest;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use wsgate_core::framing::{FramingLimits, RequestFramer};
use wsgate_core::timer::Timer;

/// The phase of a connection. Each phase but the session's has one deadline, named by the
/// [`Timer`] it stands for ([`Conn::timer`]); a session has its own timers.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Requests: the PROXY header a trusted load balancer sends first, then heads and bodies
    /// ([`Timer::Handshake`]).
    Http(Box<HttpConn>),
    /// A WebSocket session, until its close handshake is over.
    Ws(Box<Ws>),
    /// Sending what is queued; then the write side is shut ([`Timer::Close`]: a peer that does
    /// not take the rest in time is dropped).
    Flushing {
        /// When the connection is dropped whatever is left.
        deadline: Instant,
    },
    /// Write side shut, waiting for the peer to close its side ([`Timer::Close`]).
    Linger {
        /// When the connection is dropped anyway.
        deadline: Instant,
    },
}

/// A connection while it speaks HTTP: where its requests begin and end, when the one in
/// progress must be complete, and what becomes of its body.
#[derive(Debug)]
pub(crate) struct HttpConn {
    /// The framing of the connection's requests (PROXY header, heads, bodies).
    pub(crate) framer: RequestFramer,
    /// When the request in progress (or the next one) must be complete.
    pub(crate) deadline: Instant,
    /// What is done with the body of the request in progress.
    pub(crate) body: Body,
    /// The peer's address (kept while the connection speaks HTTP: a session needs only the
    /// client's address).
    pub(crate) peer: SocketAddr,
}

/// What is done with a request's body.
#[derive(Debug)]
pub(crate) enum Body {
    /// Between requests, or a request without a body.
    None,
    /// Read and thrown away: the route takes no body (it is never read as a request).
    Discard,
    /// Read whole, then published.
    Publish(PendingBody),
}

impl HttpConn {
    /// A connection's HTTP phase at its start; `proxied`: it must begin with a PROXY header.
    pub(crate) fn new(
        limits: FramingLimits,
        proxied: bool,
        deadline: Instant,
        peer: SocketAddr,
    ) -> HttpConn {
        HttpConn {
            framer: RequestFramer::new(limits, proxied),
            deadline,
            body: Body::None,
            peer,
        }
    }
}

/// What a phase's passed deadline calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request cut short: answer 408, then close.
    RequestTimeout,
    /// Nothing to say: drop the connection (a silent peer, an idle kept-alive connection, a
    /// peer that did not take the last bytes or did not close).
    Drop,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket, plain or TLS.
    pub(crate) stream: Transport,
    /// The client's address: the peer's, or the one a trusted proxy gave.
    pub(crate) client: IpAddr,
    /// The client's address is counted against `max-connections-per-ip`.
    pub(crate) ip_counted: bool,
    /// Tells reuses of the same slab slot apart ([`ConnId`]).
    generation: u32,
    /// The phase.
    pub(crate) phase: Phase,
    /// Bytes received and not consumed yet (a cut frame or request). Empty when idle.
    pub(crate) inbuf: BytesMut,
    /// Frames and raw bytes waiting to be written.
    pub(crate) outbox: Outbox,
    /// The interest registered with the poller.
    pub(crate) interest: Interest,
    /// Reading stopped because the outbox is over its limit (until it is down to half).
    pub(crate) read_paused: bool,
    /// Reading stopped because an inbox this connection publishes to is over its bound (until
    /// they all have room).
    pub(crate) waiting_room: bool,
    /// The socket may have unread bytes.
    pub(crate) readable: bool,
    /// The poller reported the peer's half-close or an error: read until the end (or the
    /// error) is seen, even after a short read, since no further event will come for it.
    pub(crate) read_closed: bool,
    /// The earliest timer entry scheduled for this connection.
    pub(crate) timer_at: Option<Instant>,
    /// Listed in the connections to flush this turn (once however many frames were queued).
    flush_listed: bool,
    /// The session negotiated permessage-deflate with the window shared compressed frames
    /// are made with: it gets them instead of the plain ones.
    pub(crate) deflate: bool,
    /// The session speaks `wsgate.v2`: binary deliveries of topics with history come with
    /// their offset in front.
    pub(crate) v2: bool,
}

impl Conn {
    /// A new connection from `client` in `phase`.
    pub(crate) fn new(stream: Transport, client: IpAddr, phase: Phase) -> Conn {
        Conn {
            stream,
            client,
            ip_counted: false,
            generation: 0,
            phase,
            inbuf: BytesMut::new(),
            outbox: Outbox::new(),
            interest: Interest::READABLE,
            read_paused: false,
            waiting_room: false,
            readable: true,
            read_closed: false,
            flush_listed: false,
            deflate: false,
            v2: false,
            timer_at: None,
        }
    }

    /// Whether the connection may be read: neither its outbox nor an inbox it publishes to is
    /// full.
    pub(crate) fn may_read(&self) -> bool {
        !self.read_paused && !self.waiting_room
    }

    /// The peer's address, while the connection speaks HTTP.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Http(h) => Some(h.peer),
            _ => None,
        }
    }

    /// The session, when the connection is a WebSocket.
    pub(crate) fn ws(&mut self) -> Option<&mut Ws> {
        match &mut self.phase {
            Phase::Ws(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the connection is a WebSocket session that may still send data.
    pub(crate) fn is_open_session(&self) -> bool {
        matches!(&self.phase, Phase::Ws(s) if s.protocol.is_open())
    }

    /// The named deadline of the phase; `None` for a session (whose timers are its own).
    pub(crate) fn timer(&self) -> Option<(Timer, Instant)> {
        match &self.phase {
            Phase::Http(h) => Some((Timer::Handshake, h.deadline)),
            Phase::Flushing { deadline } | Phase::Linger { deadline } => {
                Some((Timer::Close, *deadline))
            }
            Phase::Ws(_) => None,
        }
    }

    /// When the connection next needs attention.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Ws(s) => s.protocol.poll_timeout(),
            _ => self.timer().map(|(_, at)| at),
        }
    }

    /// What the phase's deadline calls for once it has passed at `now` (`None` before, and
    /// for a session: its timers are handled by the session).
    pub(crate) fn expired(&self, now: Instant) -> Option<Expiry> {
        let (timer, at) = self.timer()?;
        if at > now {
            return None;
        }
        Some(match (timer, &self.phase) {
            // an idle kept-alive connection, or one that never said anything
            (Timer::Handshake, Phase::Http(h))
                if self.inbuf.is_empty()
                    && h.framer.at_request_boundary()
                    && matches!(h.body, Body::None) =>
            {
                Expiry::Drop
            }
            (Timer::Handshake, Phase::Http(_)) => Expiry::RequestTimeout,
            _ => Expiry::Drop,
        })
    }

    /// Waits for the next request, which has `handshake` to arrive.
    pub(crate) fn expect_request(&mut self, now: Instant, handshake: Duration) {
        if let Phase::Http(h) = &mut self.phase {
            h.deadline = now + handshake;
        }
    }

    /// Sends what is queued, then ends the connection; the peer has `close` to take it.
    pub(crate) fn finish(&mut self, now: Instant, close: Duration) {
        self.phase = Phase::Flushing {
            deadline: now + close,
        };
    }

    /// Whether the connection only sends what is left (its request or session is over).
    pub(crate) fn is_finishing(&self) -> bool {
        matches!(self.phase, Phase::Flushing { .. } | Phase::Linger { .. })
    }

    /// How much to read into the connection's own buffer (`inbuf`, which holds a cut frame or
    /// request), given the worker's read buffer size `base`. A large frame or body gets room
    /// for all of it in one allocation, but only once a 32nd of it has arrived: before that
    /// the buffer doubles as data comes, so a header that announces 2 GiB and sends nothing
    /// costs nothing, and what a peer can make the gateway reserve stays proportional to what
    /// it really sent. A frame of more than [`LARGE_BLOCK`] starts with a buffer of that size:
    /// a block of the gateway's allocator that is resident only where written and grows
    /// without a copy (see [`crate::sys::Allocator`]), so nothing is outgrown on the way and
    /// the peak is one copy of the message; smaller ones double through mimalloc's blocks.
    pub(crate) fn own_read_size(&self, base: usize) -> usize {
        // a cut request head or a small frame's rest: a small read, not a whole read buffer
        // per connection (hundreds of slow clients must not each pin 64 KiB)
        const SMALL: usize = 4096;
        let have = self.inbuf.len();
        let remaining = match &self.phase {
            Phase::Ws(s) => usize::try_from(s.protocol.wanted()).unwrap_or(usize::MAX),
            Phase::Http(h) if matches!(h.body, Body::Publish(_)) => {
                usize::try_from(h.framer.body_remaining())
                    .unwrap_or(usize::MAX)
                    .saturating_sub(have)
            }
            _ => 0,
        };
        if remaining <= base {
            remaining.max(SMALL)
        } else if have.saturating_mul(32) >= have.saturating_add(remaining) {
            remaining
        } else {
            have.max(base).max(LARGE_BLOCK.min(remaining))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(deadline: Instant) -> Phase {
        let limits = FramingLimits {
            max_head_bytes: 8192,
            max_body_bytes: 64 << 20,
        };
        Phase::Http(Box::new(HttpConn::new(
            limits,
            false,
            deadline,
            "127.0.0.1:1".parse().unwrap(),
        )))
    }

    fn conn(phase: Phase) -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, peer) = l.accept().unwrap();
        Conn::new(
            Transport::Plain(mio::net::TcpStream::from_std(server)),
            peer.ip(),
            phase,
        )
    }

    /// What an idle WebSocket costs the worker's heap: the slab entry and the boxed session.
    /// The session fits the allocator's 128-byte size class (one byte more is the next, 160),
    /// the entry is 200 bytes: with the timer entry, about 430 bytes of RSS per idle
    /// connection measured at 10,000 (`loadtest conns`).
    #[test]
    fn an_idle_session_stays_small() {
        let ws = std::mem::size_of::<Ws>();
        assert!(ws <= 128, "a session is {ws} bytes");
        assert!(std::mem::size_of::<Phase>() <= 24);
        let conn = std::mem::size_of::<Conn>();
        assert!(conn <= 200, "a connection is {conn} bytes");
    }

    #[test]
    fn idle_connection_holds_no_buffer() {
        let c = conn(http(Instant::now()));
        assert_eq!(c.inbuf.capacity(), 0);
        assert!(
            std::mem::size_of::<Conn>() < 512,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn each_phase_has_its_named_deadline_and_what_it_calls_for() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = conn(http(t0 + s));
        assert_eq!(c.timer(), Some((Timer::Handshake, t0 + s)));
        assert_eq!(c.expired(t0), None);
        assert_eq!(
            c.expired(t0 + s),
            Some(Expiry::Drop),
            "nothing asked: dropped"
        );
        c.expect_request(t0 + s, s);
        assert_eq!(c.timer(), Some((Timer::Handshake, t0 + 2 * s)));
        c.inbuf.extend_from_slice(b"GET / HT");
        assert_eq!(
            c.expired(t0 + 2 * s),
            Some(Expiry::RequestTimeout),
            "a cut request: 408"
        );
        c.finish(t0, 2 * s);
        assert_eq!(c.timer(), Some((Timer::Close, t0 + 2 * s)));
        assert!(c.is_finishing());
        assert_eq!(c.expired(t0 + 2 * s), Some(Expiry::Drop));
        assert_eq!(c.poll_timeout(), Some(t0 + 2 * s));
    }

    #[test]
    fn a_large_body_gets_its_buffer_once_a_32nd_has_arrived() {
        let mut c = conn(http(Instant::now()));
        let head = b"POST /publish/t HTTP/1.1\r\nContent-Length: 33554432\r\n\r\n";
        let Phase::Http(h) = &mut c.phase else {
            unreachable!()
        };
        let (_, used) = h.framer.next(head).unwrap().unwrap();
        assert_eq!(used, head.len());
        h.body = Body::Publish(PendingBody {
            topic: "t".into(),
            json: false,
            keep_alive: true,
        });
        let base = 64 << 10;
        assert_eq!(
            c.own_read_size(base),
            LARGE_BLOCK,
            "nothing yet: a block of its own, resident only where written"
        );
        c.inbuf = BytesMut::from(&vec![0u8; 300 << 10][..]);
        assert_eq!(
            c.own_read_size(base),
            LARGE_BLOCK,
            "less than a 32nd: still a block's worth"
        );
        c.inbuf = BytesMut::from(&vec![0u8; 1 << 20][..]);
        assert_eq!(
            c.own_read_size(base),
            (32 << 20) - (1 << 20),
            "the rest, at once"
        );
        let mut c = conn(http(Instant::now()));
        c.inbuf.extend_from_slice(b"GET / HT");
        assert_eq!(c.own_read_size(base), 4096, "a cut head: a small read");
    }
}
