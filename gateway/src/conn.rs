//! One connection: its socket, its phase (HTTP request, request body, WebSocket session,
//! closing, lingering) and the little state each phase needs.
//!
//! An idle open WebSocket keeps no buffer: reads go into the worker's shared buffer, and a
//! connection only holds bytes of its own (`inbuf`) when a frame or a request was cut between
//! two reads. Its outbox allocates only while something is queued.

use crate::auth::Grants;
use crate::limits::TokenBucket;
use crate::outbox::Outbox;
use bytes::BytesMut;
use mio::Interest;
use mio::net::TcpStream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a WebSocket session does with the messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// `/echo`: every data message goes back.
    Echo,
    /// `/ws`: the pub/sub envelope.
    PubSub,
}

/// A WebSocket session's state.
#[derive(Debug)]
pub(crate) struct Session {
    /// Echo or pub/sub.
    pub(crate) kind: SessionKind,
    /// The WebSocket protocol: frames in, pings, pongs, the close handshake, timers.
    pub(crate) session: wsgate_core::session::Session,
    /// Topics this connection subscribes to.
    pub(crate) topics: Vec<Arc<str>>,
    /// Publishes allowed by `publish-rate`.
    pub(crate) publish_bucket: TokenBucket,
    /// Publishes refused in a row for going over the rate.
    pub(crate) refused_in_a_row: u32,
    /// What the session's token allows, when authentication is on.
    pub(crate) grants: Option<Box<Grants>>,
}

/// A POST /publish body being received.
#[derive(Debug)]
pub(crate) struct PendingBody {
    /// The topic, percent-decoded.
    pub(crate) topic: String,
    /// `Content-Type: application/json`.
    pub(crate) json: bool,
    /// Body length from Content-Length.
    pub(crate) len: usize,
    /// Keep the connection open after answering.
    pub(crate) keep_alive: bool,
}

/// The phase of a connection.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading the PROXY protocol header a trusted load balancer sends first.
    Proxy,
    /// Reading an HTTP request head.
    Http,
    /// Reading the body of a POST /publish.
    Body(Box<PendingBody>),
    /// An open WebSocket session (including its closing handshake).
    Ws(Box<Session>),
    /// Everything is sent once the outbox drains; then the write side is shut and the
    /// connection lingers until the peer closes or the close timeout passes. A peer that does
    /// not take what is left within the close timeout (since the instant held) is dropped.
    Closing(Instant),
    /// Write side shut, waiting for the peer's EOF.
    Linger(Instant),
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket.
    pub(crate) stream: TcpStream,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// The client's address: the peer's, or the one a trusted proxy's PROXY header gave.
    pub(crate) client: std::net::IpAddr,
    /// The client's address is counted against `max-connections-per-ip`.
    pub(crate) ip_counted: bool,
    /// Distinguishes reuses of the same slab slot, for timers and subscriber lists.
    pub(crate) generation: u32,
    /// The phase.
    pub(crate) phase: Phase,
    /// Bytes received and not consumed yet (a cut frame or request). Empty when idle.
    pub(crate) inbuf: BytesMut,
    /// Frames and raw bytes waiting to be written.
    pub(crate) outbox: Outbox,
    /// The interest registered with the poller.
    pub(crate) interest: Interest,
    /// Reading stopped because the outbox is over its limit.
    pub(crate) read_paused: bool,
    /// The socket may have unread bytes (a read was cut short).
    pub(crate) readable: bool,
    /// When the current HTTP request started (for the handshake timeout).
    pub(crate) request_started: Instant,
    /// The earliest timer entry scheduled for this connection.
    pub(crate) timer_at: Option<Instant>,
    /// Listed in the worker's connections to flush this turn (listed once however many frames
    /// were queued).
    pub(crate) flush_listed: bool,
}

impl Conn {
    /// A new connection in the HTTP phase.
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, generation: u32, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            client: peer.ip(),
            ip_counted: false,
            generation,
            phase: Phase::Http,
            inbuf: BytesMut::new(),
            outbox: Outbox::new(),
            interest: Interest::READABLE,
            read_paused: false,
            readable: true,
            flush_listed: false,
            request_started: now,
            timer_at: None,
        }
    }

    /// The session, when the connection is an open WebSocket.
    pub(crate) fn session(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Ws(s) => Some(s),
            _ => None,
        }
    }

    /// When this connection next needs attention, given the timeouts.
    pub(crate) fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        match &self.phase {
            Phase::Proxy | Phase::Http | Phase::Body(_) => Some(self.request_started + t.handshake),
            Phase::Closing(since) => Some(*since + t.close),
            Phase::Linger(since) => Some(*since + t.close),
            Phase::Ws(s) => s.session.poll_timeout(),
        }
    }
}

/// The timeouts a connection's deadline depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To complete an HTTP request.
    pub(crate) handshake: Duration,
    /// For the peer to take the last bytes and close.
    pub(crate) close: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    #[test]
    fn idle_connection_holds_no_buffer() {
        let (s, _c) = pair();
        let conn = Conn::new(s, "127.0.0.1:1".parse().unwrap(), 0, Instant::now());
        assert_eq!(conn.inbuf.capacity(), 0);
        assert!(
            std::mem::size_of::<Conn>() < 512,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }
}
