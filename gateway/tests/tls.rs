//! TLS on the listening port: the real binary with a certificate made at test time (rcgen, a
//! test CA), reached by a rustls client under tungstenite: wss:// echo and pub/sub, https://
//! endpoints, a live certificate reload (SIGHUP and a changed file) that keeps established
//! connections, each bad configuration refused at start with exit 2, and what a peer that does
//! not speak TLS gets.

mod common;

use common::Gateway;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
type Wss = tungstenite::WebSocket<TlsStream>;

/// A test CA and the files of a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("wsgate-tls-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Writes a new server certificate and key as `cert.pem` and `key.pem`; returns the
    /// certificate's DER.
    fn issue(&self, alg: &'static rcgen::SignatureAlgorithm) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test server");
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        // written beside and renamed: a reader never sees half a file
        for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
            let tmp = self.dir.join(format!("{name}.new"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        }
        cert.der().clone()
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a gateway serving TLS with the files of `pki`.
fn start(pki: &Pki, extra: &[&str]) -> Gateway {
    let (cert, key) = (pki.cert(), pki.key());
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// A TLS connection to `addr`, handshake done.
fn tls_connect(pki: &Pki, addr: SocketAddr) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("a TLS handshake");
    }
    stream
}

/// A WebSocket over TLS to `path`.
fn wss(pki: &Pki, addr: SocketAddr, path: &str) -> Wss {
    let stream = tls_connect(pki, addr);
    let (ws, _) = tungstenite::client(format!("wss://localhost:{}{path}", addr.port()), stream)
        .expect("an upgrade over TLS");
    ws
}

fn text(ws: &mut Wss) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.as_str().to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// GET `path` over TLS; the status and body.
fn https_get(pki: &Pki, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tls_connect(pki, addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn wss_echo_and_pubsub_and_https_endpoints() {
    let pki = Pki::new("basic");
    let served = pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(&pki, &[]);

    let mut echo = wss(&pki, gw.addr, "/echo");
    assert_eq!(
        echo.get_ref().conn.peer_certificates().unwrap()[0],
        served,
        "the certificate of the files"
    );
    assert_eq!(echo.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    echo.send(Message::text("héllo over tls")).unwrap();
    assert_eq!(text(&mut echo), "héllo over tls");
    // a message larger than a TLS record and than the send buffer; large enough that reading
    // it must not cost more than its size (a frame's room is not zeroed read after read)
    let big: Vec<u8> = (0..15_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    echo.send(Message::binary(big.clone())).unwrap();
    match echo.read().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "15 MB echoed byte for byte"),
        other => panic!("{other:?}"),
    }

    let mut sub = wss(&pki, gw.addr, "/ws");
    sub.send(Message::text(r#"{"type":"subscribe","topic":"t","id":1}"#))
        .unwrap();
    assert_eq!(text(&mut sub), r#"{"type":"ack","id":1}"#);
    let mut publisher = wss(&pki, gw.addr, "/ws");
    for i in 0..100 {
        publisher
            .send(Message::text(format!(
                r#"{{"type":"publish","topic":"t","data":{i}}}"#
            )))
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            text(&mut sub),
            format!(r#"{{"type":"message","topic":"t","data":{i}}}"#)
        );
    }
    let (status, body) = https_get(&pki, gw.addr, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = https_get(&pki, gw.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("wsgate_upgrades_total"), "{body}");
}

#[test]
fn what_is_not_tls_gets_a_clear_end() {
    let pki = Pki::new("not-tls");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(&pki, &["--handshake-timeout", "1s"]);

    // a plain HTTP request: a plain answer that says what the port speaks, then the end
    let mut plain = TcpStream::connect(gw.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("speaks TLS"),
        "{answer:?}"
    );

    // garbage instead of a ClientHello: a TLS alert (content type 21), then the end
    let mut junk = TcpStream::connect(gw.addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // a handshake record holding a message of an unknown type
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xEE, 0x00, 0x00, 0x00])
        .unwrap();
    let mut got = Vec::new();
    let _ = junk.read_to_end(&mut got);
    assert_eq!(got.first(), Some(&21), "an alert record: {got:?}");

    // a handshake that never finishes is dropped after the handshake timeout
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01]).unwrap(); // the start of a record, then silence
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    assert!(gw.log().is_empty() || !gw.log().contains("panicked"));
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_keeps_established_ones() {
    let pki = Pki::new("reload");
    let first = pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(&pki, &[]);
    let mut old = wss(&pki, gw.addr, "/echo");
    old.send(Message::text("before")).unwrap();
    assert_eq!(text(&mut old), "before");
    // load: connections echoing without pause all through the reloads below
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..8)
        .map(|i| {
            let mut ws = wss(&pki, gw.addr, "/echo");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let msg = format!("{i}:{n}");
                    ws.send(Message::text(msg.clone()))
                        .expect("send during the reload");
                    assert_eq!(text(&mut ws), msg, "echo during the reload");
                    n += 1;
                }
                n
            })
        })
        .collect();

    // SIGHUP
    let second = pki.issue(&rcgen::PKCS_ECDSA_P384_SHA384);
    gw.signal(libc_sighup());
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let s = tls_connect(&pki, gw.addr);
        seen = Some(s.conn.peer_certificates().unwrap()[0].clone());
        if seen.as_ref() == Some(&second) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen.as_ref(),
        Some(&second),
        "new connections get the new certificate"
    );
    assert_ne!(first, second);
    old.send(Message::text("after")).unwrap();
    assert_eq!(
        text(&mut old),
        "after",
        "the established connection goes on"
    );

    // a bad file: the current certificate stays
    std::fs::write(pki.key(), b"not a key").unwrap();
    gw.signal(libc_sighup());
    assert!(
        common::eventually(Duration::from_secs(5), || gw.log().contains("not reloaded")),
        "{}",
        gw.log()
    );
    let s = tls_connect(&pki, gw.addr);
    assert_eq!(s.conn.peer_certificates().unwrap()[0], second);

    // a changed file, without a signal
    let third = pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(
        common::eventually(Duration::from_secs(10), || {
            tls_connect(&pki, gw.addr).conn.peer_certificates().unwrap()[0] == third
        }),
        "a changed file is loaded by itself: {}",
        gw.log()
    );
    old.send(Message::text("still")).unwrap();
    assert_eq!(text(&mut old), "still");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in busy {
        let echoed = t
            .join()
            .expect("a busy connection failed during the reloads");
        assert!(echoed > 0);
    }
}

fn libc_sighup() -> i32 {
    1
}

/// Runs the binary with `args` (it must not start); its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn each_bad_configuration_is_refused_with_exit_2_naming_the_setting() {
    let pki = Pki::new("bad");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (cert, key) = (pki.cert(), pki.key());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let other = Pki::new("bad-other");
    other.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other_key = other.key();
    let missing = Path::new("/nonexistent/cert.pem").to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--tls-cert", cert], "--tls-cert", "needs --tls-key"),
        (vec!["--tls-key", key], "--tls-key", "needs --tls-cert"),
        (
            vec!["--tls-cert", missing, "--tls-key", key],
            "--tls-cert",
            "cannot read",
        ),
        (
            vec!["--tls-cert", key, "--tls-key", key],
            "--tls-cert",
            "no certificate",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", cert],
            "--tls-key",
            "no private key",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()],
            "--tls-key",
            "does not match",
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-min-version",
                "1.1",
            ],
            "--tls-min-version",
            "1.2 or 1.3",
        ),
        (
            vec!["--plain-listen", "127.0.0.1:0"],
            "--plain-listen",
            "beside a TLS one",
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--admin-on-plain",
                "true",
            ],
            "--admin-on-plain",
            "needs --plain-listen",
        ),
    ];
    for (args, setting, why) in cases {
        let (code, stderr) = refused(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(setting) && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_plain_port_beside_the_tls_one_serves_the_same_node() {
    let pki = Pki::new("plain");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(&pki, &["--plain-listen", "127.0.0.1:0"]);
    let plain = gw
        .plain_addr
        .expect("`plain on ADDR` in the listening line");
    assert_ne!(plain, gw.addr);
    let r = common::get(plain, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");

    // a subscriber over TLS gets what a plain publisher sends, and the other way round
    let mut secure = wss(&pki, gw.addr, "/ws");
    secure
        .send(Message::text(r#"{"type":"subscribe","topic":"t","id":1}"#))
        .unwrap();
    assert_eq!(text(&mut secure), r#"{"type":"ack","id":1}"#);
    let mut clear = common::ws(plain, "/ws");
    common::ws_send(&mut clear, r#"{"type":"subscribe","topic":"t","id":1}"#);
    assert_eq!(common::ws_text(&mut clear), r#"{"type":"ack","id":1}"#);
    common::ws_send(
        &mut clear,
        r#"{"type":"publish","topic":"t","data":"from plain"}"#,
    );
    let want = r#"{"type":"message","topic":"t","data":"from plain"}"#;
    assert_eq!(text(&mut secure), want);
    assert_eq!(common::ws_text(&mut clear), want);
    secure
        .send(Message::text(
            r#"{"type":"publish","topic":"t","data":"from tls"}"#,
        ))
        .unwrap();
    let want = r#"{"type":"message","topic":"t","data":"from tls"}"#;
    assert_eq!(common::ws_text(&mut clear), want);
    assert_eq!(text(&mut secure), want);

    // the TLS port stays TLS only
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("speaks TLS"), "{answer:?}");
}

#[test]
fn tls_handshakes_per_address_are_limited() {
    let pki = Pki::new("rate");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    // 1 a second, a burst of 4
    let gw = start(&pki, &["--tls-handshakes-per-ip", "1"]);
    let try_handshake = || {
        let tcp = TcpStream::connect(gw.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut ok = true;
        while s.conn.is_handshaking() {
            if s.conn.complete_io(&mut s.sock).is_err() {
                ok = false;
                break;
            }
        }
        ok
    };
    let started = Instant::now();
    let results: Vec<bool> = (0..10).map(|_| try_handshake()).collect();
    let done = results.iter().filter(|&&ok| ok).count();
    // 4 from the burst, and at most one more per second that passed
    let allowed = 4 + started.elapsed().as_secs() as usize + 1;
    assert!(
        done >= 4 && done <= allowed,
        "{results:?} in {:?}",
        started.elapsed()
    );
    // the metrics over TLS: wait for the bucket to have a token again
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = https_get(&pki, gw.addr, "/metrics");
    assert_eq!(status, 200);
    let refused = common::metric(
        &body,
        "wsgate_handshake_failures_total{reason=\"tls_rate\"}",
    );
    assert_eq!(refused, (10 - done) as f64, "{body}");
}

#[test]
fn a_large_message_over_tls_costs_one_copy() {
    // 64 MiB echoed over TLS: the gateway holds the message once, as on a plain socket
    // (rustls' buffers are bounded; the plaintext goes straight into the frame's room)
    const SIZE: usize = 64 << 20;
    let pki = Pki::new("large");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (cert, key) = (pki.cert(), pki.key());
    let gw = Gateway::start_without_huge_pages(&[
        "--workers",
        "1",
        "--max-message-size",
        "128MiB",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let stream = tls_connect(&pki, gw.addr);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(128 << 20))
        .max_frame_size(Some(128 << 20));
    let (mut ws, _) = tungstenite::client::client_with_config(
        format!("wss://localhost:{}/echo", gw.addr.port()),
        stream,
        Some(config),
    )
    .expect("an upgrade over TLS");
    ws.send(Message::text("warm up")).unwrap();
    assert_eq!(text(&mut ws), "warm up");
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.rss();
    let payload: Vec<u8> = (0..SIZE as u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(payload.clone())).unwrap();
    match ws.read().expect("the echo") {
        Message::Binary(b) => assert!(b[..] == payload[..], "64 MiB echoed byte for byte"),
        other => panic!("{other:?}"),
    }
    let growth = gw.peak_rss().saturating_sub(before) as f64 / SIZE as f64;
    assert!(
        growth <= 1.3,
        "the resident set grew {growth:.3}x the message"
    );
}

#[test]
fn behind_a_trusted_proxy_the_handshake_rate_counts_the_client_of_the_proxy_header() {
    let pki = Pki::new("rate-proxy");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(
        &pki,
        &[
            "--tls-handshakes-per-ip",
            "1",
            "--proxy-protocol",
            "true",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    // a PROXY v1 header for `client`, in the clear, then the TLS handshake
    let handshake_as = |client: &str| {
        let mut tcp = TcpStream::connect(gw.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(tcp, "PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            if s.conn.complete_io(&mut s.sock).is_err() {
                return false;
            }
        }
        true
    };
    let started = Instant::now();
    let first: Vec<bool> = (0..8).map(|_| handshake_as("10.9.8.7")).collect();
    let done = first.iter().filter(|&&ok| ok).count();
    let allowed = 4 + started.elapsed().as_secs() as usize + 1;
    assert!(done >= 4 && done <= allowed, "{first:?}");
    // another client behind the same proxy has its own bucket
    assert!(
        handshake_as("10.9.8.6"),
        "the proxy's other clients are not refused"
    );
}

#[test]
fn admin_endpoints_can_be_kept_to_the_plain_port() {
    let pki = Pki::new("admin");
    pki.issue(&rcgen::PKCS_ECDSA_P256_SHA256);
    let gw = start(
        &pki,
        &["--plain-listen", "127.0.0.1:0", "--admin-on-plain", "true"],
    );
    let plain = gw.plain_addr.expect("a plain port");
    for path in ["/metrics", "/stats", "/"] {
        assert_eq!(https_get(&pki, gw.addr, path).0, 404, "{path} over TLS");
        assert_eq!(
            common::get(plain, path).status,
            200,
            "{path} on the plain port"
        );
    }
    for path in ["/healthz", "/readyz", "/client.js"] {
        assert_eq!(https_get(&pki, gw.addr, path).0, 200, "{path} over TLS");
    }
    // sessions are unchanged on the TLS port
    let mut echo = wss(&pki, gw.addr, "/echo");
    echo.send(Message::text("still here")).unwrap();
    assert_eq!(text(&mut echo), "still here");
}
