//! `wss://`: TLS under the WebSocket of every connection to a `wss://` URL.
//!
//! Each connection is a rustls client connection (aws-lc-rs, ALPN `http/1.1`, SNI from the
//! URL's host) driven by the thread's mio loop, as the gateway drives its side: what the socket
//! brings is read through the thread's scratch buffer and handed to `read_tls`,
//! `process_new_packets` decrypts it (and answers the handshake), and the plaintext goes into
//! the connection's buffer; a write hands the queued plaintext to rustls (the one copy
//! encryption needs) and `write_tls` sends the records. While rustls has records to send
//! ([`Session::wants_write`]) the connection wants the socket's writability. A `ws://`
//! connection has no [`Session`] and pays for none of this.
//!
//! Trust is explicit: `--ca FILE` (the certificates of a PEM file, and only those) or
//! `--insecure` (any certificate, its handshake signature still checked with the provider's
//! algorithms, so that the cost of a handshake is the real one). Neither: the run stops before
//! it starts. Session resumption is on (rustls' in-memory client session cache, shared by all
//! the connections of a run: at most 8 TLS 1.3 tickets a server, each used once, so a burst of
//! new connections resumes only as far as tickets come back); `--no-resumption` makes every
//! handshake a full one.
//!
//! What a run counts stays WebSocket bytes: the wire bytes of the report are the plaintext
//! frames, not the TLS records.

use clap::Args;
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ClientConnection, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The TLS options of every subcommand that takes `--url` (used by `wss://` URLs only).
#[derive(Args, Clone, Default)]
pub(crate) struct TlsArgs {
    /// For wss:// URLs: trust the certificates of this PEM file (the CA that signed the
    /// gateway's certificate, or that certificate itself), and no other.
    #[arg(long, value_name = "FILE.pem", conflicts_with = "insecure")]
    pub(crate) ca: Option<PathBuf>,
    /// For wss:// URLs: accept any server certificate, whoever signed it and whatever names it
    /// holds (for loopback tests: the handshake's signature is still checked, so a handshake
    /// costs what it does with a trusted certificate).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// For wss:// URLs: no TLS session resumption, every connection makes a full handshake
    /// (resumption from rustls' client session cache is on by default).
    #[arg(long)]
    pub(crate) no_resumption: bool,
    /// The client configuration, made once for all the run's `wss://` targets (they share its
    /// session cache).
    #[arg(skip)]
    config: OnceLock<Arc<ClientConfig>>,
}

impl TlsArgs {
    /// The client configuration of this run's `wss://` connections; the error names the option
    /// at fault.
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, String> {
        if let Some(c) = self.config.get() {
            return Ok(c.clone());
        }
        let made = Arc::new(self.make()?);
        Ok(self.config.get_or_init(|| made).clone())
    }

    /// Whether a `wss://` target was made (the run speaks TLS).
    pub(crate) fn in_use(&self) -> bool {
        self.config.get().is_some()
    }

    fn make(&self) -> Result<ClientConfig, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = match (&self.ca, self.insecure) {
            (Some(path), _) => builder
                .with_root_certificates(roots(path)?)
                .with_no_client_auth(),
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            (None, false) => {
                return Err(
                    "a wss:// URL needs a trust setting: --ca FILE (the PEM of the CA \
                            that signed the gateway's certificate) or --insecure (accept any \
                            certificate)"
                        .into(),
                );
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if self.no_resumption {
            config.resumption = Resumption::disabled();
        }
        Ok(config)
    }
}

/// The crypto provider: aws-lc-rs, as the gateway's.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of the PEM file of `--ca`, as the only roots.
fn roots(path: &PathBuf) -> Result<rustls::RootCertStore, String> {
    let bad = |why: String| format!("invalid value for --ca: {}: {why}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| bad(format!("a certificate rustls cannot use as a root ({e})")))?;
    }
    Ok(roots)
}

/// `--insecure`: any certificate passes, but the handshake's signature is checked with the
/// provider's algorithms against the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The TLS side of a `wss://` target: the configuration and the name the server is checked
/// against (and sent as SNI when it is a DNS name).
#[derive(Debug)]
pub(crate) struct Endpoint {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Endpoint {
    /// TLS to `host` (a URL's host) with `config`.
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        host: &url::Host<&str>,
    ) -> Result<Endpoint, String> {
        let name = match host {
            url::Host::Domain(d) => ServerName::try_from(d.to_string())
                .map_err(|e| format!("'{d}' is not a TLS server name: {e}"))?,
            url::Host::Ipv4(ip) => ServerName::IpAddress(std::net::IpAddr::V4(*ip).into()),
            url::Host::Ipv6(ip) => ServerName::IpAddress(std::net::IpAddr::V6(*ip).into()),
        };
        Ok(Endpoint { config, name })
    }

    /// A new client connection (its ClientHello queued).
    pub(crate) fn connect(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(io::Error::other)
    }
}

/// What rustls may hold for a connection beyond what the socket took: plaintext waiting for the
/// handshake to end, records waiting for the socket. Past it the rest waits in the client's
/// queue. As large as a thread's read buffer, so that a large message goes out in writes of
/// that size, as on a plain connection.
const SEND_BUFFER: usize = 256 << 10;

/// TLS over one connection's socket.
pub(crate) struct Session {
    conn: ClientConnection,
    /// When the socket took the ClientHello (the TCP connection was up).
    started: Option<Instant>,
    /// How long the handshake took, from the ClientHello to the server's Finished.
    handshake: Option<Duration>,
    /// The peer ended the stream (close_notify, or the socket's end).
    ended: bool,
}

impl Session {
    /// A session for a connection to `endpoint`.
    pub(crate) fn new(endpoint: &Endpoint) -> io::Result<Session> {
        let mut conn = endpoint.connect()?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Session {
            conn,
            started: None,
            handshake: None,
            ended: false,
        })
    }

    /// Whether records wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The handshake's duration, once it is done.
    pub(crate) fn handshake_time(&self) -> Option<Duration> {
        self.handshake
    }

    /// Whether the handshake resumed a session (`None` while it is not done).
    pub(crate) fn resumed(&self) -> Option<bool> {
        self.conn
            .handshake_kind()
            .filter(|_| !self.conn.is_handshaking())
            .map(|k| k == HandshakeKind::Resumed)
    }

    /// Hands `data` (plaintext) to rustls as far as it takes it and writes the records, as far
    /// as the socket takes them: how many bytes of `data` were taken, and whether everything
    /// went out (no record waits). Before the handshake ends, the plaintext waits in rustls
    /// and goes out when it does ([`Session::fill`]).
    pub(crate) fn write(
        &mut self,
        socket: &mut TcpStream,
        data: &[u8],
    ) -> io::Result<(usize, bool)> {
        let mut taken = 0;
        loop {
            if !self.send(socket)? {
                return Ok((taken, false));
            }
            if taken == data.len() {
                return Ok((taken, true));
            }
            let n = self.conn.writer().write(&data[taken..])?;
            if n == 0 {
                // rustls holds all it may until the handshake ends
                return Ok((taken, false));
            }
            taken += n;
        }
    }

    /// Writes the waiting records until none are left (true) or the socket is full (false).
    pub(crate) fn send(&mut self, socket: &mut TcpStream) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {
                    if self.started.is_none() {
                        self.started = Some(Instant::now());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what the socket has (one read, through `scratch`), decrypts it and hands the
    /// plaintext to `sink`, chunk by chunk. `Ok(Some(n))`: `n` bytes of plaintext (0 when the
    /// records were the handshake's); `Ok(None)`: the peer ended the stream; `WouldBlock`: the
    /// socket has nothing more now. The handshake's answers, and the plaintext queued before
    /// it ended, are sent on the way.
    pub(crate) fn fill(
        &mut self,
        socket: &mut TcpStream,
        scratch: &mut [u8],
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<Option<usize>> {
        if self.ended {
            return Ok(None);
        }
        let n = socket.read(scratch)?;
        let mut records = &scratch[..n];
        let mut got = 0;
        loop {
            // an empty read tells rustls that the socket's stream ended
            let fed = self.conn.read_tls(&mut records)?;
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued the alert that says why: it goes out before the end
                let _ = self.send(socket);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {e}"),
                ));
            }
            if self.handshake.is_none() && !self.conn.is_handshaking() {
                self.handshake = self.started.map(|t| t.elapsed());
            }
            let mut reader = self.conn.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => {
                        self.ended = true; // close_notify
                        break;
                    }
                    Ok(chunk) => {
                        let len = chunk.len();
                        sink(chunk);
                        reader.consume(len);
                        got += len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.ended = true; // the socket's end without close_notify
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.conn.wants_write() {
                self.send(socket)?;
            }
            if self.ended || records.is_empty() || fed == 0 {
                break;
            }
        }
        if got > 0 {
            Ok(Some(got))
        } else if self.ended {
            Ok(None)
        } else {
            Ok(Some(0))
        }
    }
}

/// A blocking TLS connection over `socket` to `endpoint`, its handshake done; the error says
/// what to check.
pub(crate) fn connect_blocking(
    endpoint: &Endpoint,
    socket: std::net::TcpStream,
) -> Result<rustls::StreamOwned<ClientConnection, std::net::TcpStream>, String> {
    let conn = endpoint.connect().map_err(|e| format!("TLS: {e}"))?;
    let mut s = rustls::StreamOwned::new(conn, socket);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            return Err(handshake_error(&e));
        }
    }
    note_negotiated(&s.conn);
    Ok(s)
}

/// Why a handshake failed, and what to check.
fn handshake_error(e: &io::Error) -> String {
    let hint = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => {
            ": --ca must name the CA that signed the gateway's certificate (or use --insecure)"
        }
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. },
        ) => ": does the gateway serve TLS on this port (--tls-cert)?",
        _ => "",
    };
    format!("TLS handshake failed: {e}{hint}")
}

/// What the check before the run negotiated: version, cipher suite, ALPN.
static NEGOTIATED: OnceLock<String> = OnceLock::new();

fn note_negotiated(conn: &ClientConnection) {
    let version = conn
        .protocol_version()
        .map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
    let suite = conn
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
    let alpn = conn.alpn_protocol().map_or_else(
        || "no ALPN".to_string(),
        |p| String::from_utf8_lossy(p).into_owned(),
    );
    let _ = NEGOTIATED.set(format!("{version} {suite} {alpn}"));
}

/// The version, cipher suite and ALPN the check before the run negotiated, when it did.
pub(crate) fn negotiated() -> Option<&'static str> {
    NEGOTIATED.get().map(String::as_str)
}
