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
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a WebSocket session does with the messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `/echo`: every data message goes back.
    Echo,
    /// `/ws`: the pub/sub envelope.
    PubSub,
}

/// A WebSocket session's state.
#[derive(Debug)]
pub struct Session {
    /// Echo or pub/sub.
    pub kind: SessionKind,
    /// The WebSocket protocol: frames in, pings, pongs, the close handshake, timers.
    pub session: wsgate_core::session::Session,
    /// Topics this connection subscribes to.
    pub topics: Vec<Arc<str>>,
    /// Publishes allowed by `publish-rate`.
    pub publish_bucket: TokenBucket,
    /// Publishes refused in a row for going over the rate.
    pub refused_in_a_row: u32,
    /// What the session's token allows, when authentication is on.
    pub grants: Option<Box<Grants>>,
}

/// A POST /publish body being received.
#[derive(Debug)]
pub struct PendingBody {
    /// The topic, percent-decoded.
    pub topic: String,
    /// `Content-Type: application/json`.
    pub json: bool,
    /// Body length from Content-Length.
    pub len: usize,
    /// Keep the connection open after answering.
    pub keep_alive: bool,
}

/// The phase of a connection.
#[derive(Debug)]
pub enum Phase {
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
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The client's address: the peer's, or the one a trusted proxy's PROXY header gave.
    pub client: std::net::IpAddr,
    /// The client's address is counted against `max-connections-per-ip`.
    pub ip_counted: bool,
    /// Distinguishes reuses of the same slab slot, for timers and subscriber lists.
    pub generation: u32,
    /// The phase.
    pub phase: Phase,
    /// Bytes received and not consumed yet (a cut frame or request). Empty when idle.
    pub inbuf: BytesMut,
    /// Frames and raw bytes waiting to be written.
    pub outbox: Outbox,
    /// The interest registered with the poller.
    pub interest: Interest,
    /// Reading stopped because the outbox is over its limit.
    pub read_paused: bool,
    /// The socket may have unread bytes (a read was cut short).
    pub readable: bool,
    /// When the current HTTP request started (for the handshake timeout).
    pub request_started: Instant,
    /// The earliest timer entry scheduled for this connection.
    pub timer_at: Option<Instant>,
    /// Listed in the worker's connections to flush this turn (listed once however many frames
    /// were queued).
    pub flush_listed: bool,
}

impl Conn {
    /// A new connection in the HTTP phase.
    pub fn new(stream: TcpStream, peer: SocketAddr, generation: u32, now: Instant) -> Conn {
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
    pub fn session(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Ws(s) => Some(s),
            _ => None,
        }
    }

    /// When this connection next needs attention, given the timeouts.
    pub fn deadline(&self, t: &Timeouts) -> Option<Instant> {
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
pub struct Timeouts {
    /// To complete an HTTP request.
    pub handshake: Duration,
    /// For the peer to take the last bytes and close.
    pub close: Duration,
}

/// Reads from `stream` into the spare capacity of `buf` (at most `max` bytes), without zeroing
/// that capacity first. Returns the bytes read; 0 means the peer closed.
pub fn read_into(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    if buf.capacity() - buf.len() < max {
        buf.reserve(max);
    }
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    loop {
        // SAFETY: `spare` is writable memory of at least `want` bytes owned by `buf`; read(2)
        // writes at most `want` bytes into it through a raw pointer (no reference to
        // uninitialised memory is formed), and we mark as initialised only the `n` bytes the
        // kernel reports written.
        let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = n as usize;
        // SAFETY: the kernel initialised `n <= want` bytes right after the current length.
        unsafe { buf.set_len(buf.len() + n) };
        return Ok(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    /// `read_into` gives exactly what the safe `Read::read` into a zeroed buffer gives, for
    /// random payloads and random read sizes.
    #[test]
    fn read_into_matches_safe_read() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let len = (rand() % 200_000) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            let (fast, mut client) = pair();
            let (slow, mut client2) = pair();
            client.write_all(&payload).unwrap();
            client2.write_all(&payload).unwrap();
            drop(client);
            drop(client2);
            let mut a = BytesMut::new();
            let mut b = Vec::new();
            let mut slow = slow;
            loop {
                let max = 1 + (rand() % 70_000) as usize;
                match read_into(&fast, &mut a, max) {
                    Ok(0) => break,
                    Ok(n) => assert!(n <= max),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            loop {
                let mut chunk = vec![0u8; 1 + (rand() % 70_000) as usize];
                match slow.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => b.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(&a[..], &payload[..]);
            assert_eq!(b, payload);
        }
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
