//! One client WebSocket connection on a mio socket: the opening handshake, masked frames out,
//! server frames in, decoded with wsgate-core's client-role decoder; with `--compression`,
//! permessage-deflate offered, checked in the answer, and applied both ways ([`deflate`]); for
//! a `wss://` URL, over TLS ([`tls`]).

use crate::deflate::{self, Offer};
use crate::stats::Traffic;
use crate::tls::{self, Endpoint, Session, TlsArgs};
use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wsgate_core::frame::{
    DecoderConfig, Message, MessageDecoder, OpCode, RSV1, encode_client_frame,
};
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
    /// permessage-deflate to offer and require (`--compression`).
    deflate: Option<Offer>,
    /// TLS, for a `wss://` URL.
    tls: Option<Arc<Endpoint>>,
}

impl Target {
    /// Parses a `ws://host:port/path?query` or `wss://host:port/path?query` URL; a `wss://`
    /// one takes its trust and resumption settings from `tls`.
    pub(crate) fn parse(s: &str, tls: &TlsArgs) -> Result<Target, String> {
        let url = url::Url::parse(s).map_err(|e| format!("bad --url '{s}': {e}"))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            _ => {
                return Err(format!(
                    "bad --url '{s}': only ws:// and wss:// are supported"
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("bad --url '{s}': no host"))?
            .to_string();
        let port = url.port().unwrap_or(if secure { 443 } else { 80 });
        let tls = match (secure, url.host()) {
            (true, Some(h)) => Some(Arc::new(Endpoint::new(tls.config()?, &h)?)),
            _ => None,
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        Ok(Target {
            addr,
            host: format!("{host}:{port}"),
            path: url.path().to_string(),
            query: url.query().map(str::to_string),
            deflate: None,
            tls,
        })
    }

    /// The same server, offering permessage-deflate (and requiring the server to accept it)
    /// when `offer` is given.
    pub(crate) fn offering(self, offer: Option<Offer>) -> Target {
        Target {
            deflate: offer,
            ..self
        }
    }

    /// The same server, with `max_message` as the largest message it is expected to send
    /// (the bound on inflating one), when permessage-deflate is offered.
    pub(crate) fn expecting(self, max_message: usize) -> Target {
        Target {
            deflate: self.deflate.map(|_| Offer { max_message }),
            ..self
        }
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

    /// The upgrade request with `key`.
    fn request(&self, key: &str) -> String {
        let extensions = match self.deflate {
            Some(_) => format!("Sec-WebSocket-Extensions: {}\r\n", deflate::OFFER),
            None => String::new(),
        };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n",
            self.request_target(),
            self.host
        )
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
    /// The socket (registered with the thread's poll, also under TLS).
    pub stream: TcpStream,
    /// The 101 arrived.
    pub open: bool,
    /// WRITABLE interest is registered.
    pub wants_write: bool,
    /// TLS over the socket, for a `wss://` target; `None`: the bytes go to the socket as
    /// they are.
    tls: Option<Box<Session>>,
    accept: String,
    inbuf: BytesMut,
    decoder: MessageDecoder,
    out: Vec<u8>,
    out_pos: usize,
    rng: u64,
    sent: u64,
    /// permessage-deflate offered (`--compression`).
    offer: Option<Offer>,
    /// permessage-deflate as agreed in the 101.
    deflate: Option<Box<deflate::Session>>,
    /// Bytes and messages since the last [`Client::take_traffic`].
    traffic: Traffic,
}

impl Client {
    /// Starts a non-blocking connect and queues the upgrade request.
    pub(crate) fn connect(
        target: &Target,
        source: Option<IpAddr>,
        seed: u64,
    ) -> io::Result<Client> {
        let stream = start_connect(target.addr, source)?;
        let tls = match &target.tls {
            Some(endpoint) => Some(Box::new(Session::new(endpoint)?)),
            None => None,
        };
        let mut rng = seed | 1;
        let mut key = [0u8; 16];
        for b in &mut key {
            *b = xorshift(&mut rng) as u8;
        }
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        let request = target.request(&key);
        let decoder = DecoderConfig {
            max_frame_size: 2 << 30,
            max_message_size: 2 << 30,
            ..DecoderConfig::client()
        };
        Ok(Client {
            stream,
            open: false,
            wants_write: false,
            tls,
            accept: accept_key(&key),
            inbuf: BytesMut::with_capacity(4096),
            decoder: MessageDecoder::new(decoder),
            out: request.into_bytes(),
            out_pos: 0,
            rng,
            sent: 0,
            offer: target.deflate,
            deflate: None,
            traffic: Traffic::default(),
        })
    }

    /// Queues a masked message: compressed (RSV1) when permessage-deflate was agreed and the
    /// message is a text or binary one of at least [`deflate::MIN_SIZE`] bytes.
    pub(crate) fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        let before = self.out.len();
        let data = matches!(opcode, OpCode::Text | OpCode::Binary);
        let out = &mut self.out;
        let compressed = data
            && self.deflate.as_mut().is_some_and(|d| {
                d.deflate(payload, |z| {
                    let header = wsgate_core::frame::HeaderBuf::new(
                        true,
                        RSV1,
                        opcode,
                        z.len() as u64,
                        Some(key),
                    );
                    out.extend_from_slice(header.as_bytes());
                    let start = out.len();
                    out.extend_from_slice(z);
                    wsgate_core::mask::unmask(&mut out[start..], key, 0);
                })
            });
        if !compressed {
            encode_client_frame(&mut self.out, true, opcode, payload, key);
        }
        self.count_sent(before, data, payload.len(), compressed);
    }

    fn count_sent(&mut self, before: usize, data: bool, len: usize, compressed: bool) {
        self.sent += 1;
        if self.open {
            let t = &mut self.traffic;
            t.wire_out += (self.out.len() - before) as u64;
            if data {
                t.messages_out += 1;
                t.payload_out += len as u64;
                t.compressed_out += u64::from(compressed);
            }
        }
    }

    /// Bytes and messages counted since the last call.
    pub(crate) fn take_traffic(&mut self) -> Traffic {
        std::mem::take(&mut self.traffic)
    }

    /// Messages queued since the last call.
    pub(crate) fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    /// Queues a masked message of `len` bytes that `fill` writes in place (no separate copy of
    /// a large payload).
    /// With permessage-deflate agreed, the message is built apart and compressed ([`Client::send`]).
    pub(crate) fn send_with(&mut self, opcode: OpCode, len: usize, fill: impl FnOnce(&mut [u8])) {
        if self.deflate.is_some() && len >= deflate::MIN_SIZE {
            let mut m = vec![0; len];
            fill(&mut m);
            return self.send(opcode, &m);
        }
        let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        let before = self.out.len();
        let header = wsgate_core::frame::HeaderBuf::new(true, 0, opcode, len as u64, Some(key));
        self.out.extend_from_slice(header.as_bytes());
        let start = self.out.len();
        self.out.resize(start + len, 0);
        fill(&mut self.out[start..]);
        wsgate_core::mask::unmask(&mut self.out[start..], key, 0);
        let data = matches!(opcode, OpCode::Text | OpCode::Binary);
        self.count_sent(before, data, len, false);
    }

    /// Bytes queued and not written yet (not counting TLS records waiting).
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether [`Client::flush`] has something to write: bytes queued, or TLS records (the
    /// handshake's, or what a read answered).
    pub(crate) fn has_output(&self) -> bool {
        self.pending() > 0 || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The TLS handshake's duration (from the ClientHello sent to the server's Finished read),
    /// and whether it resumed a session; `None` without TLS or before the handshake ended.
    pub(crate) fn tls_handshake(&self) -> Option<(Duration, bool)> {
        let t = self.tls.as_ref()?;
        Some((t.handshake_time()?, t.resumed()?))
    }

    /// Writes what is queued; returns true when everything went out (TLS records included).
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_deref_mut() {
            let (n, done) = tls.write(&mut self.stream, &self.out[self.out_pos..])?;
            self.out_pos += n;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
            return Ok(done);
        }
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
            let read = match self.tls.as_deref_mut() {
                None => self.stream.read(scratch).map(|n| {
                    if n > 0 {
                        append(&mut self.inbuf, &self.decoder, &scratch[..n]);
                    }
                    (n > 0).then_some(n)
                }),
                Some(tls) => tls.fill(&mut self.stream, scratch, |chunk| {
                    append(&mut self.inbuf, &self.decoder, chunk)
                }),
            };
            let n = match read {
                Ok(None) => return Ok(false),
                // TLS records that carried no data (the handshake's)
                Ok(Some(0)) => continue,
                Ok(Some(n)) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Io(e.to_string())),
            };
            if self.open {
                self.traffic.wire_in += n as u64;
            } else {
                if !self.read_response()? {
                    continue;
                }
                // what came after the 101 in the same read
                self.traffic.wire_in += self.inbuf.len() as u64;
            }
            loop {
                if let Some(d) = self.deflate.as_mut()
                    && self.decoder.frames().current_header().is_none()
                    && self.decoder.frames().open_message().is_none()
                {
                    // a frame boundary: the next header may start a compressed message
                    d.mark_compressed(&mut self.inbuf);
                }
                let Some(m) = self
                    .decoder
                    .decode(&mut self.inbuf)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                else {
                    break;
                };
                let m = match m {
                    Message::Text(b) => self.received(b, false)?,
                    Message::Binary(b) => self.received(b, true)?,
                    other => other,
                };
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

    /// A data message as decoded (`binary` as the decoder saw it): inflated when it arrived
    /// compressed, counted.
    fn received(&mut self, payload: bytes::Bytes, binary: bool) -> Result<Message, ClientError> {
        let compressed = self.deflate.as_mut().and_then(|d| d.take_compressed());
        let (payload, text) = match (compressed, &mut self.deflate) {
            (Some(text), Some(d)) => {
                let inflated = d.inflate(&payload).map_err(ClientError::Protocol)?;
                if text && std::str::from_utf8(&inflated).is_err() {
                    return Err(ClientError::Protocol(
                        "a compressed text message is not UTF-8 once inflated".into(),
                    ));
                }
                (inflated, text)
            }
            _ => (payload, !binary),
        };
        let t = &mut self.traffic;
        t.messages_in += 1;
        t.payload_in += payload.len() as u64;
        t.compressed_in += u64::from(compressed.is_some());
        Ok(if text {
            Message::Text(payload)
        } else {
            Message::Binary(payload)
        })
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
        let lines = extension_lines(resp.headers);
        if let Some(agreed) = agreement(self.offer, &lines).map_err(ClientError::Refused)? {
            let max = self
                .offer
                .map_or(deflate::DEFAULT_MAX_MESSAGE, |o| o.max_message);
            // RSV1 never reaches the decoder: Session::mark_compressed clears it
            self.deflate = Some(Box::new(deflate::Session::new(agreed, max)));
        }
        self.inbuf.advance(len);
        self.open = true;
        Ok(true)
    }
}

/// Adds `bytes` read to a connection's buffer, making room for all of a large frame at once
/// when the buffer is empty.
fn append(inbuf: &mut BytesMut, decoder: &MessageDecoder, bytes: &[u8]) {
    let n = bytes.len();
    if inbuf.is_empty() && inbuf.capacity() < n {
        let want = usize::try_from(decoder.wanted()).unwrap_or(0).min(64 << 20);
        inbuf.reserve(n.max(want));
    }
    inbuf.extend_from_slice(bytes);
}

/// The `Sec-WebSocket-Extensions` lines of an answer's headers.
fn extension_lines<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| h.value)
        .collect()
}

/// What the server's `Sec-WebSocket-Extensions` answer (`lines`) means for a connection that
/// made `offer`: the agreement when permessage-deflate was offered and accepted, `None` when
/// nothing was offered nor answered; otherwise why the connection cannot go on.
fn agreement(offer: Option<Offer>, lines: &[&[u8]]) -> Result<Option<deflate::Agreed>, String> {
    let answer = || {
        let joined: Vec<_> = lines.iter().map(|l| String::from_utf8_lossy(l)).collect();
        joined.join(", ")
    };
    match (offer, deflate::parse_answer(lines)) {
        (Some(_), Ok(Some(agreed))) => Ok(Some(agreed)),
        (None, Ok(None)) => Ok(None),
        (Some(_), Ok(None)) => Err(
            "--compression: the server did not accept permessage-deflate (no \
             Sec-WebSocket-Extensions in its 101): it would send everything uncompressed, so \
             the run would not measure compression; turn compression on in the server or drop \
             --compression"
                .into(),
        ),
        (None, _) => Err(format!(
            "the server answered 'Sec-WebSocket-Extensions: {}' when no extension was offered",
            answer()
        )),
        (Some(_), Err(e)) => Err(format!(
            "--compression: the server answered the permessage-deflate offer with \
             'Sec-WebSocket-Extensions: {}': {e}",
            answer()
        )),
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

/// Checks, before a run, that the target answers a WebSocket upgrade (and, when the target
/// offers permessage-deflate, that the server accepts it: a run with `--compression` never
/// measures the uncompressed path by mistake): one blocking connection with a short timeout,
/// over TLS for a `wss://` target (its handshake checks the trust settings). Returns the
/// permessage-deflate agreement, when there is one; the error is one line that says what is
/// wrong.
pub(crate) fn preflight(
    target: &Target,
    source: Option<IpAddr>,
) -> Result<Option<deflate::Agreed>, String> {
    let timeout = Duration::from_secs(3);
    let s = connect_blocking(target.addr, source, timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    match &target.tls {
        None => upgrade_blocking(target, s),
        Some(endpoint) => {
            let s = tls::connect_blocking(endpoint, s).map_err(|e| {
                let name = target.host.rsplit_once(':').map_or("", |(h, _)| h);
                if target.addr.ip().to_string() == name {
                    format!("{}: {e}", target.addr)
                } else {
                    format!("{} ({}): {e}", target.host, target.addr)
                }
            })?;
            upgrade_blocking(target, s)
        }
    }
}

/// The upgrade of [`preflight`] over `s`, a connection made.
fn upgrade_blocking(
    target: &Target,
    mut s: impl Read + Write,
) -> Result<Option<deflate::Agreed>, String> {
    let request = target.request("dGhlIHNhbXBsZSBub25jZQ==");
    s.write_all(request.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("cannot send to {}: {e}", target.addr))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) if resp.code == Some(101) => {
                let agreed =
                    agreement(target.deflate, &extension_lines(resp.headers)).map_err(|e| {
                        format!(
                            "{} ({} upgrade of {})",
                            e,
                            target.addr,
                            target.request_target()
                        )
                    })?;
                if let Some(a) = agreed {
                    deflate::note_agreed(a);
                }
                return Ok(agreed);
            }
            Ok(httparse::Status::Complete(len)) => {
                // a gateway serving TLS answers a plain request with a plain 400 that says so
                let body = String::from_utf8_lossy(&buf[len..]);
                let hint = if body.contains("speaks TLS") {
                    ": the port speaks TLS, use a wss:// URL"
                } else {
                    ": is this a wsgate gateway, and the right path?"
                };
                return Err(format!(
                    "{} answered {} {} to a WebSocket upgrade of {}{hint}",
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
        let t = Target::parse("ws://127.0.0.1:9000/ws?subscribe=a", &TlsArgs::default()).unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.request_target(), "/ws?subscribe=a");
        assert!(
            Target::parse("http://127.0.0.1/", &TlsArgs::default())
                .unwrap_err()
                .contains("ws://")
        );
        assert!(
            Target::parse("not a url", &TlsArgs::default())
                .unwrap_err()
                .contains("--url")
        );
    }

    #[test]
    fn wss_urls_need_a_trust_setting() {
        let e = Target::parse("wss://localhost/ws", &TlsArgs::default()).unwrap_err();
        assert!(e.contains("--ca") && e.contains("--insecure"), "{e}");
        let mut insecure = TlsArgs::default();
        insecure.insecure = true;
        let t = Target::parse("wss://127.0.0.1/ws", &insecure).unwrap();
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert!(t.tls.is_some() && insecure.in_use());
        let t = Target::parse("ws://127.0.0.1/ws", &TlsArgs::default()).unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert!(t.tls.is_none());
    }

    /// A server frame (unmasked) with `rsv` bits.
    fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let h = wsgate_core::frame::HeaderBuf::new(fin, rsv, opcode, payload.len() as u64, None);
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// `data` compressed on its own, the sync flush's tail cut off.
    fn compressed(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// A client offering `offer` to a server on loopback that answers the upgrade with
    /// `extensions` then sends `frames`; the messages the client read, or its error.
    fn exchange(
        offer: Option<Offer>,
        extensions: Option<&str>,
        frames: &[u8],
    ) -> Result<Vec<Message>, ClientError> {
        use std::io::{BufRead, BufReader};
        use std::time::{Duration, Instant};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/echo", listener.local_addr().unwrap());
        let target = Target::parse(&url, &TlsArgs::default())
            .unwrap()
            .offering(offer);
        let mut c = Client::connect(&target, None, 7).unwrap();
        let (server, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.flush().unwrap() {
            assert!(Instant::now() < deadline, "the request never went out");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut reader = BufReader::new(server.try_clone().unwrap());
        let (mut key, mut offered) = (String::new(), None);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(k) = line.strip_prefix("Sec-WebSocket-Key: ") {
                key = k.trim().to_string();
            }
            if let Some(e) = line.strip_prefix("Sec-WebSocket-Extensions: ") {
                offered = Some(e.trim().to_string());
            }
            if line == "\r\n" {
                break;
            }
        }
        assert_eq!(offered.is_some(), offer.is_some());
        if offer.is_some() {
            assert_eq!(offered.as_deref(), Some(deflate::OFFER));
        }
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            accept_key(&key)
        );
        if let Some(e) = extensions {
            answer.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        answer.push_str("\r\n");
        let mut bytes = answer.into_bytes();
        bytes.extend_from_slice(frames);
        // byte by byte after the first few: every cut of a header and of a payload
        let mut server = server;
        server.write_all(&bytes[..8]).unwrap();
        for b in &bytes[8..] {
            server.write_all(std::slice::from_ref(b)).unwrap();
        }
        drop((server, reader));
        let mut got = Vec::new();
        let mut scratch = vec![0u8; 7];
        loop {
            match c.read(&mut scratch, |m| got.push(m)) {
                Ok(false) => return Ok(got),
                Ok(true) => {
                    assert!(Instant::now() < deadline, "no end");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[test]
    fn compressed_messages_are_inflated_whatever_their_framing() {
        let text = "{\"price\":12.5,\"qty\":300,\"side\":\"buy\"},".repeat(40);
        let binary: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let z = compressed(text.as_bytes());
        let (a, b) = z.split_at(z.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        let mut frames = frame(true, RSV1, OpCode::Binary, &compressed(&binary));
        // a compressed text message in three fragments, a ping between two of them
        frames.extend(frame(false, RSV1, OpCode::Text, a));
        frames.extend(frame(false, 0, OpCode::Continuation, b));
        frames.extend(frame(true, 0, OpCode::Ping, b"p"));
        frames.extend(frame(true, 0, OpCode::Continuation, c));
        // plain messages go on as they are; an empty compressed one
        frames.extend(frame(true, 0, OpCode::Text, b"plain"));
        frames.extend(frame(true, RSV1, OpCode::Binary, &compressed(b"")));
        frames.extend(frame(true, 0, OpCode::Close, &[0x03, 0xe8]));
        let offer = Some(Offer {
            max_message: 1 << 20,
        });
        let answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let got = exchange(offer, Some(answer), &frames).expect("clean");
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], Message::Binary(binary.into()));
        assert_eq!(got[1], Message::Ping(bytes::Bytes::from_static(b"p")));
        assert_eq!(got[2], Message::Text(text.into()));
        assert_eq!(got[3], Message::Text(bytes::Bytes::from_static(b"plain")));
        assert_eq!(got[4], Message::Binary(bytes::Bytes::new()));
        assert!(matches!(got[5], Message::Close(_)));
    }

    #[test]
    fn broken_compression_and_unasked_answers_end_the_connection() {
        let offer = Some(Offer { max_message: 1000 });
        let pmd = Some("permessage-deflate");
        let err = |offer, answer, frames: Vec<u8>| match exchange(offer, answer, &frames) {
            Err(e) => e.to_string(),
            Ok(m) => panic!("accepted: {m:?}"),
        };
        // RSV1 on a continuation, or on a control frame
        let mut f = frame(false, RSV1, OpCode::Binary, &compressed(b"abc"));
        f.extend(frame(true, RSV1, OpCode::Continuation, b""));
        assert!(err(offer, pmd, f).contains("protocol error"));
        let f = frame(true, RSV1, OpCode::Ping, b"");
        assert!(err(offer, pmd, f).contains("protocol error"));
        // RSV1 without the extension
        let f = frame(true, RSV1, OpCode::Binary, &compressed(b"abc"));
        assert!(err(None, None, f).contains("protocol error"));
        // past what the run expects, or not DEFLATE at all
        let f = frame(true, RSV1, OpCode::Binary, &compressed(&[1; 1001]));
        assert!(err(offer, pmd, f).contains("inflates past 1000 bytes"));
        let f = frame(true, RSV1, OpCode::Binary, &[0xff; 10]);
        assert!(err(offer, pmd, f).contains("does not inflate"));
        // compressed text that is not UTF-8 once inflated
        let f = frame(true, RSV1, OpCode::Text, &compressed(&[0xff, 0xfe]));
        assert!(err(offer, pmd, f).contains("not UTF-8"));
        // declined, answered without an offer, answered wrong
        let e = err(offer, None, vec![]);
        assert!(e.contains("did not accept permessage-deflate"), "{e}");
        let e = err(None, pmd, vec![]);
        assert!(e.contains("when no extension was offered"), "{e}");
        let e = err(
            offer,
            Some("permessage-deflate; client_max_window_bits=99"),
            vec![],
        );
        assert!(e.contains("client_max_window_bits=99"), "{e}");
    }
}
