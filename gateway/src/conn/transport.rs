//! The bytes of one connection: a TCP socket, or TLS over it.
//!
//! [`Transport`] is what the worker reads from and writes to; HTTP, the session, pub/sub and the
//! outbox do not know which it is. TLS is rustls' sans-IO server connection driven by the
//! worker's loop, as in rustls' `tlsserver-mio` example: the socket's bytes go to `read_tls`,
//! `process_new_packets` decrypts them (and answers the handshake), and the plaintext is read out
//! into the worker's buffer; a write hands plaintext to rustls (the one copy encryption needs)
//! and `write_tls` sends the records. What rustls holds to send is bounded
//! ([`crate::tls::SEND_BUFFER`]): past it the writer takes nothing more and the rest waits in
//! the outbox, where it counts against the outbox limit. While rustls has records to send
//! ([`Transport::wants_write`]), the connection wants the socket's writability, even with an
//! empty outbox (the handshake's answers).
//!
//! A peer that sends something other than TLS gets rustls' alert, or, when its first bytes are
//! a plain HTTP request, a plain `400` that says the port speaks TLS; either way the connection
//! then ends.
//!
//! Behind a load balancer that passes TLS through (HAProxy `mode tcp` with `send-proxy-v2`),
//! the PROXY protocol header comes before the TLS bytes, in the clear: a connection that
//! expects one reads exactly the header's bytes from the socket first and hands them up as
//! they are (the HTTP room reads the header, as on a plain port), then speaks TLS.

use bytes::BytesMut;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

/// What a read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Got {
    /// Bytes of plaintext appended to the buffer; 0 at the end of the stream.
    pub(crate) bytes: usize,
    /// The socket's receive queue was emptied: the next bytes come with a new readiness edge.
    pub(crate) drained: bool,
}

/// A connection's socket, plain or encrypted.
#[derive(Debug)]
pub(crate) enum Transport {
    /// The socket itself.
    Plain(TcpStream),
    /// TLS over the socket.
    Tls(Box<Tls>),
}

/// TLS over a socket.
pub(crate) struct Tls {
    socket: TcpStream,
    session: ServerConnection,
    /// Whether the peer's first bytes were seen, and were they a plain HTTP request.
    first: First,
    /// A PROXY protocol header is expected before the TLS bytes, and not read yet.
    proxy_header: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.is_handshaking())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    Unseen,
    Tls,
    PlainHttp,
}

/// The answer to a plain HTTP request on the TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 46\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// or wss://\r\n";

impl Transport {
    /// TLS over `socket`, with `config`.
    /// TLS over `socket`, with `config`; `proxy_header`: a PROXY protocol header comes first,
    /// in the clear.
    pub(crate) fn tls(
        socket: TcpStream,
        config: Arc<rustls::ServerConfig>,
        proxy_header: bool,
    ) -> io::Result<Transport> {
        let mut session = ServerConnection::new(config).map_err(io::Error::other)?;
        session.set_buffer_limit(Some(crate::tls::SEND_BUFFER));
        Ok(Transport::Tls(Box::new(Tls {
            socket,
            session,
            first: First::Unseen,
            proxy_header,
        })))
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.socket,
        }
    }

    /// Reads at most `max` bytes of plaintext into `buf`'s spare capacity.
    pub(crate) fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<Got> {
        match self {
            Transport::Plain(s) => {
                let n = crate::sys::read_into(s, buf, max)?;
                Ok(Got {
                    bytes: n,
                    drained: n < max,
                })
            }
            Transport::Tls(t) => t.read_into(buf, max),
        }
    }

    /// Whether the connection speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Whether a TLS handshake is under way (what is written now waits in rustls until it is
    /// done).
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.session.is_handshaking(),
        }
    }

    /// Whether records wait to be written (the handshake's answers, encrypted data, an alert).
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.session.wants_write(),
        }
    }

    /// Writes what records wait, as far as the socket takes them.
    pub(crate) fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.send_records(),
        }
    }

    /// Ends the sending side: for TLS, a `close_notify` alert first (as far as the socket
    /// takes it), then the socket's half-close.
    pub(crate) fn shutdown_write(&mut self) {
        if let Transport::Tls(t) = self {
            t.session.send_close_notify();
            let _ = t.send_records();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}

impl Tls {
    fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<Got> {
        if self.proxy_header
            && let Some(got) = self.read_proxy_header(buf)?
        {
            return Ok(got);
        }
        let mut drained = false;
        loop {
            let n = self.read_plaintext(buf, max)?;
            if n > 0 {
                return Ok(Got { bytes: n, drained });
            }
            if drained {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.first == First::Unseen {
                self.look_at_first_bytes()?;
                if self.first == First::PlainHttp {
                    let _ = (&self.socket).write(PLAIN_HTTP_ANSWER);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a plain HTTP request on the TLS port",
                    ));
                }
            }
            match self.session.read_tls(&mut &self.socket) {
                Ok(0) => {
                    return Ok(Got {
                        bytes: 0,
                        drained: true,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.session.process_new_packets() {
                // rustls queued the alert that says why: it goes out before the close
                let _ = self.send_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.session.wants_write() {
                // the handshake's answers go out now, not after the peer's next bytes
                self.send_records()?;
            }
        }
    }

    /// Appends at most `max` decrypted bytes to `buf`; 0 when there are none now (or the peer
    /// closed). Taken from rustls' buffer as it is (`fill_buf`): nothing is zeroed beforehand,
    /// however much a large frame asks for.
    fn read_plaintext(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        if buf.capacity() - buf.len() < max {
            // the room a large frame was given, at once, as on a plain socket
            buf.reserve(max);
        }
        let mut reader = self.session.reader();
        let mut n = 0;
        while n < max {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // the socket closed without close_notify: the end, as a plain socket's
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break; // close_notify
            }
            let take = chunk.len().min(max - n);
            buf.extend_from_slice(&chunk[..take]);
            reader.consume(take);
            n += take;
        }
        Ok(n)
    }

    /// Reads the PROXY protocol header that comes before the TLS bytes, whole, into `buf`, as
    /// it is; nothing until all of it has arrived (`WouldBlock`). `None`: the bytes are no
    /// PROXY header, and are left for TLS (the HTTP room then refuses the connection for the
    /// header it lacks).
    fn read_proxy_header(&mut self, buf: &mut BytesMut) -> io::Result<Option<Got>> {
        const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
        /// Longest header read: v1's 107 bytes; v2's 16 and addresses and a few TLVs.
        const LONGEST: usize = 1024;
        let mut head = [0u8; LONGEST];
        let n = self.socket.peek(&mut head)?;
        if n == 0 {
            return Ok(Some(Got {
                bytes: 0,
                drained: true,
            }));
        }
        let seen = &head[..n];
        let too_long = || io::Error::new(io::ErrorKind::InvalidData, "PROXY header too long");
        let len = if seen.len() >= 16 && seen.starts_with(V2) {
            16 + u16::from_be_bytes([seen[14], seen[15]]) as usize
        } else if V2.starts_with(seen) || b"PROXY ".starts_with(seen) {
            return Err(io::ErrorKind::WouldBlock.into()); // too little to tell yet
        } else if seen.starts_with(b"PROXY ") {
            match seen.windows(2).position(|w| w == b"\r\n") {
                Some(end) => end + 2,
                None if seen.len() >= 107 => return Err(too_long()),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        } else {
            self.proxy_header = false;
            return Ok(None);
        };
        if len > LONGEST {
            return Err(too_long());
        }
        if len > n {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        (&self.socket).read_exact(&mut buf[start..])?;
        self.proxy_header = false;
        Ok(Some(Got {
            bytes: len,
            drained: false,
        }))
    }

    /// Peeks at the peer's first byte: a TLS record starts with its content type (0x14 to
    /// 0x18); a plain HTTP request with a method's capital letter.
    fn look_at_first_bytes(&mut self) -> io::Result<()> {
        let mut head = [0u8; 1];
        match self.socket.peek(&mut head) {
            Ok(0) => Ok(()),
            Ok(_) => {
                self.first = if head[0].is_ascii_uppercase() {
                    First::PlainHttp
                } else {
                    First::Tls
                };
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes waiting records until none are left or the socket is full.
    fn send_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut &self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Plain writes are `send(2)` and `sendmsg(2)`, not `write(2)` and `writev(2)`: the socket calls
/// skip the file layer (the position lock, the area check, the notification hook), a tenth of
/// the server's CPU in a fanout to 1,000 subscribers on loopback.
impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            // std's TcpStream::write is send(2) with MSG_NOSIGNAL
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(_) => self.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => {
                socket2::SockRef::from(&*s).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
            }
            Transport::Tls(t) => {
                // room first: what rustls holds is bounded
                t.send_records()?;
                let n = t.session.writer().write_vectored(bufs)?;
                t.send_records()?;
                if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl Source for Transport {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.register(registry, token, interest),
            Transport::Tls(t) => t.socket.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.reregister(registry, token, interest),
            Transport::Tls(t) => t.socket.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.deregister(registry),
            Transport::Tls(t) => t.socket.deregister(registry),
        }
    }
}
