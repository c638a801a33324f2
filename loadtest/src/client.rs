//! One client WebSocket connection on a mio socket: the opening handshake, masked frames out,
//! server frames in, decoded with wsgate-core's client-role decoder.

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use wsgate_core::frame::{DecoderConfig, Message, MessageDecoder, OpCode, encode_client_frame};
use wsgate_core::handshake::accept_key;

/// Where to connect: the resolved address plus what goes in the request line and Host header.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Resolved server address.
    addr: SocketAddr,
    /// `host[:port]` for the Host header.
    host: String,
    /// The path, e.g. `/echo`.
    pub path: String,
    /// The query without `?`, if any.
    query: Option<String>,
}

impl Target {
    /// Parses a `ws://host:port/path?query` URL.
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        let url = url::Url::parse(s).map_err(|e| format!("bad --url '{s}': {e}"))?;
        if url.scheme() != "ws" {
            return Err(format!(
                "bad --url '{s}': only ws:// is supported (terminate TLS in front)"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("bad --url '{s}': no host"))?
            .to_string();
        let port = url.port().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        Ok(Target {
            addr,
            host: format!("{host}:{port}"),
            path: url.path().to_string(),
            query: url.query().map(str::to_string),
        })
    }

    /// The server's resolved address (all that `--raw-tcp` runs use of the URL).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same server with another path and query.
    pub(crate) fn with_path(&self, path: &str, query: Option<String>) -> Target {
        Target {
            path: path.to_string(),
            query,
            ..self.clone()
        }
    }

    fn request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why a connection ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// The server answered the upgrade with something else than 101.
    Refused(String),
    /// The server's frames broke the protocol.
    Protocol(String),
    /// The socket failed or closed early.
    Io(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Refused(s) => write!(f, "upgrade refused: {s}"),
            ClientError::Protocol(s) => write!(f, "protocol error from server: {s}"),
            ClientError::Io(s) => write!(f, "connection error: {s}"),
        }
    }
}

/// One client connection.
pub(crate) struct Client {
    /// The socket.
    pub stream: TcpStream,
    /// The 101 arrived.
    pub open: bool,
    /// WRITABLE interest is registered.
    pub wants_write: bool,
    accept: String,
    inbuf: BytesMut,
    decoder: MessageDecoder,
    out: Vec<u8>,
    out_pos: usize,
    rng: u64,
    sent: u64,
}

impl Client {
    /// Starts a non-blocking connect and queues the upgrade request.
    pub(crate) fn connect(
        target: &Target,
        source: Option<IpAddr>,
        seed: u64,
    ) -> io::Result<Client> {
        let stream = start_connect(target.addr, source)?;
        let mut rng = seed | 1;
        let mut key = [0u8; 16];
        for b in &mut key {
            *b = xorshift(&mut rng) as u8;
        }
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.request_target(),
            target.host
        );
        let decoder = DecoderConfig {
            max_frame_size: 2 << 30,
            max_message_size: 2 << 30,
            ..DecoderConfig::client()
        };
        Ok(Client {
            stream,
            open: false,
            wants_write: false,
            accept: accept_key(&key),
            inbuf: BytesMut::with_capacity(4096),
            decoder: MessageDecoder::new(decoder),
            out: request.into_bytes(),
            out_pos: 0,
            rng,
            sent: 0,
        })
    }

    /// Queues a masked message.
    pub(crate) fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        encode_client_frame(&mut self.out, true, opcode, payload, key);
        self.sent += 1;
    }

    /// Messages queued since the last call.
    pub(crate) fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    /// Queues a masked message of `len` bytes that `fill` writes in place (no separate copy of
    /// a large payload).
    pub(crate) fn send_with(&mut self, opcode: OpCode, len: usize, fill: impl FnOnce(&mut [u8])) {
        let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        let header = wsgate_core::frame::HeaderBuf::new(true, 0, opcode, len as u64, Some(key));
        self.out.extend_from_slice(header.as_bytes());
        let start = self.out.len();
        self.out.resize(start + len, 0);
        fill(&mut self.out[start..]);
        wsgate_core::mask::unmask(&mut self.out[start..], key, 0);
        self.sent += 1;
    }

    /// Bytes queued and not written yet.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what is queued; returns true when everything went out.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Reads everything available (through `scratch`, a thread's read buffer); hands each
    /// message to `on_message`. Returns `Ok(false)` when the server closed the connection.
    pub(crate) fn read(
        &mut self,
        scratch: &mut [u8],
        mut on_message: impl FnMut(Message),
    ) -> Result<bool, ClientError> {
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Io(e.to_string())),
            };
            if self.inbuf.is_empty() && self.inbuf.capacity() < n {
                let want = usize::try_from(self.decoder.wanted())
                    .unwrap_or(0)
                    .min(64 << 20);
                self.inbuf.reserve(n.max(want));
            }
            self.inbuf.extend_from_slice(&scratch[..n]);
            if !self.open && !self.read_response()? {
                continue;
            }
            while let Some(m) = self
                .decoder
                .decode(&mut self.inbuf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                on_message(m);
            }
            // a large frame in progress: make room for all of it at once rather than growing
            // (and copying) as it arrives
            let wanted = usize::try_from(self.decoder.wanted()).unwrap_or(usize::MAX);
            if wanted > self.inbuf.capacity() - self.inbuf.len() {
                self.inbuf.reserve(wanted.min(2 << 30));
            }
        }
    }

    /// Parses the upgrade answer; true once the session is open.
    fn read_response(&mut self) -> Result<bool, ClientError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&self.inbuf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.inbuf.len() < 16 * 1024 => return Ok(false),
            _ => {
                return Err(ClientError::Refused(
                    "not an HTTP answer: is this a WebSocket gateway?".into(),
                ));
            }
        };
        let code = resp.code.unwrap_or(0);
        if code != 101 {
            let reason = resp.reason.unwrap_or("").to_string();
            let body = String::from_utf8_lossy(&self.inbuf[len..])
                .trim()
                .to_string();
            return Err(ClientError::Refused(
                format!("{code} {reason} {body}").trim().to_string(),
            ));
        }
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"));
        if accept.is_none_or(|h| h.value != self.accept.as_bytes()) {
            return Err(ClientError::Refused("wrong Sec-WebSocket-Accept".into()));
        }
        self.inbuf.advance(len);
        self.open = true;
        Ok(true)
    }
}

/// Starts a non-blocking TCP connection to `addr` (from `source`, when given), with Nagle's
/// algorithm off. The connection is established when the socket first reports writable and
/// `peer_addr` answers.
pub(crate) fn start_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Checks, before a run, that the target answers a WebSocket upgrade: one blocking connection
/// with a short timeout. The error is one line that says what is wrong.
pub(crate) fn preflight(target: &Target, source: Option<IpAddr>) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    let timeout = Duration::from_secs(3);
    let mut s = connect_blocking(target.addr, source, timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    s.set_read_timeout(Some(timeout)).ok();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.request_target(),
        target.host
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to {}: {e}", target.addr))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) if resp.code == Some(101) => return Ok(()),
            Ok(httparse::Status::Complete(_)) => {
                return Err(format!(
                    "{} answered {} {} to a WebSocket upgrade of {}: is this a wsgate gateway, and the right path?",
                    target.addr,
                    resp.code.unwrap_or(0),
                    resp.reason.unwrap_or(""),
                    target.request_target()
                ));
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            _ => {
                return Err(format!(
                    "{} does not speak HTTP: is this a wsgate gateway?",
                    target.addr
                ));
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "{} closed the connection without answering the upgrade",
                    target.addr
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer from {}: {e}", target.addr)),
        }
    }
}

/// A blocking TCP connection to `addr` (from `source`, when given), waiting at most `timeout`.
pub(crate) fn connect_blocking(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// A small fast pseudo-random generator (xorshift64).
pub(crate) fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:9000/ws?subscribe=a").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.request_target(), "/ws?subscribe=a");
        assert!(
            Target::parse("http://127.0.0.1/")
                .unwrap_err()
                .contains("ws://")
        );
        assert!(Target::parse("not a url").unwrap_err().contains("--url"));
    }
}
