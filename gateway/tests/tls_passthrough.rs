//! TLS passthrough: wsgate nodes that terminate TLS themselves behind a real HAProxy in TCP
//! mode (`send-proxy-v2`: the PROXY header in the clear before the client's ClientHello, health
//! checks of `/readyz` on each node's `--plain-listen` port, with a PROXY header too), and the
//! files of a Kubernetes TLS Secret renewed under a running node.
//!
//! What is checked: the TLS session is the node's (the certificate a client verifies is the one
//! of the node it reached, HAProxy has none), WebSocket echo works through HAProxy, the node
//! sees each client's own loopback address (with `--max-connections-per-ip 1`, two clients
//! hold a session each on the same node, a client's further session on a node is refused, and
//! the node's log names the client of each session and refusal, with HAProxy as the peer), a
//! connection from the trusted proxy's address without a PROXY header is refused on both
//! ports, a draining node leaves rotation by its plain-port check; the HAProxy
//! configuration of `deploy/` is valid and, run with two local nodes, checks them UP and
//! forwards to them; a renewed Secret (kubelet's `..data` symlink swapped) is served to new
//! connections without a restart while an established one goes on.
//!
//! haproxy must be installed (deploy/test-setup.sh does it).

mod common;
mod lb;

use common::{Gateway, eventually, read_response};
use lb::{Haproxy, TempDir, connect_from, lo, require};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tungstenite::Message;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;
type Wss = tungstenite::WebSocket<TlsStream>;

/// A test CA that signs the certificate of each node, for `localhost` and 127.0.0.1.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate passthrough test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            dir: TempDir::new("tls-passthrough"),
            ca,
            ca_key,
        }
    }

    /// A new key and certificate named `name`, as `tls.crt` and `tls.key` (the names of a
    /// Kubernetes TLS Secret) in `dir`; returns the certificate's DER.
    fn issue_into(&self, dir: &Path, name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("wsgate {name}"));
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    /// The client's configuration: the test CA as the only root, ALPN http/1.1.
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

/// A node serving TLS with a certificate of its own, and a plain port.
struct Node {
    gw: Gateway,
    cert: CertificateDer<'static>,
}

impl Node {
    /// `--tls-cert`, `--tls-key`, `--plain-listen 127.0.0.1:0`, two workers, then `extra`.
    fn start(pki: &Pki, name: &str, extra: &[&str]) -> Node {
        let dir = pki.dir.path().join(name);
        let cert = pki.issue_into(&dir, name);
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let mut args = vec![
            "--workers",
            "2",
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--plain-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Node {
            gw: Gateway::start(&args),
            cert,
        }
    }

    fn plain(&self) -> SocketAddr {
        self.gw
            .plain_addr
            .expect("`plain on ADDR` in the listening line")
    }

    /// (TLS address, plain address), for HAProxy.
    fn ports(&self) -> (SocketAddr, SocketAddr) {
        (self.gw.addr, self.plain())
    }

    /// A series of its /metrics, read on the plain port from an address of 127.0.0.100 to
    /// 127.0.0.249 that is not a trusted proxy (a plain client: no PROXY header) and new to
    /// the node: the connection of the last read may not have been let go yet, and one
    /// connection per address is allowed.
    fn metric(&self, series: &str) -> f64 {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let src = lo(100 + NEXT.fetch_add(1, Ordering::Relaxed) % 150);
        let mut s = connect_from(src, self.plain());
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut Vec::new()).expect("an answer to GET /metrics");
        assert_eq!(r.status, 200, "{r:?}");
        common::metric(&r.text(), series)
    }
}

/// The settings of the nodes behind HAProxy: PROXY headers from 127.0.0.1 (HAProxy's
/// address), one connection per client address, and the debug log, whose `session opened`
/// and `refused` lines name each connection's client and peer.
const BEHIND_HAPROXY: &[&str] = &[
    "--proxy-protocol",
    "true",
    "--trusted-proxies",
    "127.0.0.1/32",
    "--max-connections-per-ip",
    "1",
    "--log",
    "debug",
];

const TOO_MANY: &str = "wsgate_handshake_failures_total{reason=\"too_many_from_address\"}";
const BAD_PROXY_HEADER: &str = "wsgate_handshake_failures_total{reason=\"bad_proxy_header\"}";

/// A TLS connection from `src` to `dst`, handshake done (the certificate verified against the
/// test CA for `localhost`), or why the handshake failed.
fn try_tls_from(pki: &Pki, src: IpAddr, dst: SocketAddr) -> Result<TlsStream, std::io::Error> {
    let tcp = connect_from(src, dst);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

fn tls_from(pki: &Pki, src: IpAddr, dst: SocketAddr) -> TlsStream {
    try_tls_from(pki, src, dst).unwrap_or_else(|e| panic!("TLS handshake {src} -> {dst}: {e}"))
}

/// The certificates of `nodes`, in order.
fn certs<'a>(nodes: &[&'a Node]) -> Vec<&'a CertificateDer<'static>> {
    nodes.iter().map(|n| &n.cert).collect()
}

/// What a wss:// upgrade got.
enum Got {
    /// A session with node `.0` (the index of the certificate the client verified).
    Session(usize, Box<Wss>),
    /// An HTTP answer other than 101 from node `.0`, over TLS.
    Refused(usize, u16),
    /// The connection ended without an HTTP answer: during the TLS handshake (no node known)
    /// or after it.
    Ended(Option<usize>, String),
}

/// A wss:// upgrade to `/echo` from `src` through `dst`; `certs`: the certificate of each node.
fn try_wss_from(
    pki: &Pki,
    src: IpAddr,
    dst: SocketAddr,
    certs: &[&CertificateDer<'static>],
) -> Got {
    let stream = match try_tls_from(pki, src, dst) {
        Ok(s) => s,
        Err(e) => return Got::Ended(None, format!("TLS handshake: {e}")),
    };
    let seen = stream.conn.peer_certificates().expect("a certificate")[0].clone();
    let node = certs
        .iter()
        .position(|c| **c == seen)
        .unwrap_or_else(|| panic!("{src} -> {dst}: a certificate of no node (HAProxy's?)"));
    assert_eq!(
        stream.conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN agreed with the node"
    );
    let url = format!("wss://localhost:{}/echo", dst.port());
    match tungstenite::client(url, stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Got::Session(node, Box::new(ws))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Got::Refused(node, r.status().as_u16())
        }
        Err(e) => Got::Ended(Some(node), format!("upgrade: {e}")),
    }
}

/// A wss:// upgrade that must be answered: the node, and the session or the refusal's status.
fn wss_from(
    pki: &Pki,
    src: IpAddr,
    dst: SocketAddr,
    certs: &[&CertificateDer<'static>],
) -> (usize, Result<Wss, u16>) {
    match try_wss_from(pki, src, dst, certs) {
        Got::Session(n, ws) => (n, Ok(*ws)),
        Got::Refused(n, status) => (n, Err(status)),
        Got::Ended(n, why) => panic!("{src} -> {dst} (node {n:?}) ended: {why}"),
    }
}

/// Sends `text` and reads it back.
fn echo(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text)).expect("send");
    loop {
        match ws.read().expect("an echo") {
            Message::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
}

/// Checks a connection refused for `src`'s address being over `--max-connections-per-ip`;
/// returns the node that refused when the client can tell.
///
/// The answer is a 429 over TLS. Behind HAProxy the PROXY header usually comes alone first
/// (HAProxy sends it as soon as it has connected to the node, the ClientHello when the
/// client's arrives): the node refuses on the header, before the TLS handshake has begun, and
/// its answer goes once the handshake is done.
fn over_the_limit(src: IpAddr, got: Got) -> Option<usize> {
    match got {
        Got::Refused(n, 429) => Some(n),
        Got::Refused(n, status) => panic!("{src} refused by node {n} with {status}, not 429"),
        Got::Session(n, _) => panic!("node {n} took a session of {src} over its limit"),
        Got::Ended(n, why) => panic!("{src}: refused by node {n:?} without the 429: {why}"),
    }
}

/// GET `path` on a plain port from `src`, with `prefix` sent first (a PROXY header, or
/// nothing).
fn plain_get_from(src: IpAddr, dst: SocketAddr, prefix: &[u8], path: &str) -> common::HttpResponse {
    let mut s = connect_from(src, dst);
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    s.write_all(&bytes).unwrap();
    read_response(&mut s, &mut Vec::new()).expect("an answer")
}

#[test]
fn wss_passes_through_haproxy_to_the_node_which_sees_the_client() {
    let pki = Pki::new();
    let a = Node::start(&pki, "node-a", BEHIND_HAPROXY);
    let b = Node::start(&pki, "node-b", BEHIND_HAPROXY);
    assert_ne!(a.cert, b.cert);
    let nodes = [&a, &b];
    let certs = certs(&nodes);
    // returns once both servers are UP after a passed check: HAProxy's checks of /readyz on
    // the plain ports, from a trusted proxy, carry a PROXY header (a check without one would
    // get 400 and the node would be DOWN)
    let mut haproxy = Haproxy::start_tls_passthrough(&[a.ports(), b.ports()]);

    // Clients from 127.0.0.2 and 127.0.0.3 through HAProxy, until each holds a session on
    // each node. With one connection per address allowed, a node that saw HAProxy's address
    // (127.0.0.1) for every client would refuse the second session it gets; a node that sees
    // the client refuses exactly the sessions of a client it already holds.
    let mut held: Vec<(IpAddr, usize, Wss)> = Vec::new();
    let mut refused = 0;
    for src in [lo(2), lo(3)] {
        let mut attempts = 0;
        while (0..2).any(|n| !held.iter().any(|h| h.0 == src && h.1 == n)) {
            attempts += 1;
            assert!(
                attempts <= 8,
                "{src} never reached both nodes through HAProxy"
            );
            match try_wss_from(&pki, src, haproxy.addr, &certs) {
                Got::Session(n, ws) => {
                    assert!(
                        !held.iter().any(|h| h.0 == src && h.1 == n),
                        "node {n} took a second session of {src} over \
                         --max-connections-per-ip 1: it does not see {src}"
                    );
                    held.push((src, n, *ws));
                }
                refusal => {
                    let node = over_the_limit(src, refusal);
                    assert!(
                        node.is_none_or(|n| held.iter().any(|h| h.0 == src && h.1 == n)),
                        "node {node:?} refused the first session of {src}: it counts another \
                         address (HAProxy's?)"
                    );
                    refused += 1;
                }
            }
        }
        // once more: both nodes hold a session of this client, whichever it reaches refuses
        over_the_limit(src, try_wss_from(&pki, src, haproxy.addr, &certs));
        refused += 1;
    }
    assert_eq!(held.len(), 4, "two clients on each of two nodes");
    // every session works end to end, a message larger than a TLS record too
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (src, n, ws) in &mut held {
        echo(ws, &format!("from {src} to node {n}"));
        ws.send(Message::binary(big.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Binary(got) => assert!(got[..] == big[..], "100 kB echoed"),
            other => panic!("{other:?}"),
        }
    }
    // what the nodes say: each session opened for its client's address, with HAProxy's as
    // the peer; each refusal counted for the client that made it
    for (src, n, _) in &held {
        let line = format!("session opened client={src} peer=Some(127.0.0.1:");
        let node = nodes[*n];
        assert!(
            eventually(Duration::from_secs(5), || node.gw.log().contains(&line)),
            "node {n} has no {line:?}:\n{}",
            node.gw.log()
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let refusals = |src: IpAddr| -> usize {
                let line = format!("refused client={src} peer=Some(127.0.0.1:");
                let of = |n: &Node| n.gw.log().matches(&line).count();
                of(&a) + of(&b)
            };
            let (two, three) = (refusals(lo(2)), refusals(lo(3)));
            two + three == refused && two >= 1 && three >= 1
        }),
        "the nodes' logs do not name the {refused} refused clients:\n{}\n{}",
        a.gw.log(),
        b.gw.log()
    );
    assert_eq!(a.metric(TOO_MANY) + b.metric(TOO_MANY), refused as f64);
    for (n, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.metric(BAD_PROXY_HEADER),
            0.0,
            "node {n}: HAProxy's connections and checks all carried a good header"
        );
    }

    // Straight to a node from the trusted proxy's address, without a PROXY header: refused,
    // on the TLS port (a 400 over TLS, after the handshake) and on the plain port.
    let (n, bare) = wss_from(&pki, lo(1), a.gw.addr, &certs);
    assert_eq!((n, bare.err()), (0, Some(400)), "no header on the TLS port");
    let r = plain_get_from(lo(1), a.plain(), b"", "/readyz");
    assert_eq!(r.status, 400, "no header on the plain port: {r:?}");
    assert!(r.text().contains("PROXY"), "{r:?}");
    assert_eq!(
        plain_get_from(lo(1), a.plain(), b"PROXY UNKNOWN\r\n", "/readyz").status,
        200,
        "the same request with a header"
    );
    assert_eq!(a.metric(BAD_PROXY_HEADER), 2.0);
    // a client that is not a proxy reaches the TLS port directly, without a header
    let (_, direct) = wss_from(&pki, lo(9), a.gw.addr, &certs);
    echo(&mut direct.expect("a direct client"), "direct");

    // A draining node leaves rotation by its plain-port check (/readyz 503 from SIGTERM on),
    // and new clients go to the other node.
    b.gw.sigterm();
    haproxy.wait_status(1, "DOWN");
    for src in [lo(6), lo(7), lo(8)] {
        let (n, got) = wss_from(&pki, src, haproxy.addr, &certs);
        assert_eq!(n, 0, "{src} sent to the draining node");
        echo(
            &mut got.expect("a session on node 0"),
            "after the drain began",
        );
    }
    haproxy.assert_running();
}

/// The `defaults` and `backend wsgate` sections of an HAProxy configuration, without comments,
/// blank lines and `server` lines, with `maxconn` values that fit a test (as deploy/demo.sh
/// does).
fn deploy_sections(config: &str) -> (String, String) {
    let (mut defaults, mut backend) = (String::new(), String::new());
    let mut section = None;
    for line in config.lines() {
        if !line.starts_with([' ', '\t', '#']) && !line.is_empty() {
            let words: Vec<&str> = line.split_whitespace().collect();
            section = match words[..] {
                ["defaults"] => Some(0),
                ["backend", "wsgate"] => Some(1),
                _ => None,
            };
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("server ") {
            continue;
        }
        let t = t
            .replace("maxconn 500000", "maxconn 4096")
            .replace("maxconn 250000", "maxconn 2048");
        match section {
            Some(0) => defaults.push_str(&format!("    {t}\n")),
            Some(1) => backend.push_str(&format!("    {t}\n")),
            _ => {}
        }
    }
    (defaults, backend)
}

#[test]
fn the_deploy_passthrough_config_is_valid_and_checks_and_forwards_to_tls_nodes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy-tls-passthrough.cfg");
    let check = Command::new(require("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "haproxy -c -f {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let (defaults, mut backend) = deploy_sections(&text);
    assert!(defaults.contains("mode tcp"), "{defaults}");
    assert!(backend.contains("send-proxy-v2"), "{backend}");

    // its production defaults and backend (checks every 500 ms, two to rise) in front of two
    // local nodes, each checked on its plain port as the file's server lines say
    let pki = Pki::new();
    let a = Node::start(&pki, "deploy-a", BEHIND_HAPROXY);
    let b = Node::start(&pki, "deploy-b", BEHIND_HAPROXY);
    let nodes = [&a, &b];
    for (i, n) in nodes.iter().enumerate() {
        backend.push_str(&format!(
            "    server n{i} {} port {}\n",
            n.gw.addr,
            n.plain().port()
        ));
    }
    let haproxy = Haproxy::start_sections(&defaults, &backend, 2);
    // (which node each reaches is leastconn's choice, weighed by slowstart: not asserted)
    let certs = certs(&nodes);
    for (i, src) in [lo(2), lo(3), lo(4), lo(6)].into_iter().enumerate() {
        let (_, got) = wss_from(&pki, src, haproxy.addr, &certs);
        echo(&mut got.expect("a session"), &format!("deploy config {i}"));
    }
    for n in nodes {
        assert_eq!(n.metric(BAD_PROXY_HEADER), 0.0);
    }
}

/// What the kubelet makes of a mounted Secret: the files in a directory named after the time
/// of the update, `..data` a symlink to it, and `tls.crt` and `tls.key` symlinks through
/// `..data`. An update writes a new directory and swaps `..data` in one rename.
struct SecretVolume {
    dir: TempDir,
    generation: u32,
}

impl SecretVolume {
    /// The volume with the Secret's first version.
    fn new(pki: &Pki) -> (SecretVolume, CertificateDer<'static>) {
        let mut v = SecretVolume {
            dir: TempDir::new("secret-volume"),
            generation: 0,
        };
        let first = v.update(pki);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), v.dir.path().join(f)).unwrap();
        }
        (v, first)
    }

    /// Writes a renewed key and certificate and swaps them in as kubelet does; returns the new
    /// certificate's DER.
    fn update(&mut self, pki: &Pki) -> CertificateDer<'static> {
        self.generation += 1;
        let old = format!("..2025_01_01_00_00_0{}.000000001", self.generation - 1);
        let new = format!("..2025_01_01_00_00_0{}.000000001", self.generation);
        let cert = pki.issue_into(
            &self.dir.path().join(&new),
            &format!("secret {}", self.generation),
        );
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.path().join(old));
        cert
    }
}

/// The container's `args` of deploy/k8s/tls/deployment.yaml, read from the file's text (the
/// `- ` items under `args:`, quotes taken off), and the file's text.
fn manifest_args() -> (Vec<String>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/tls/deployment.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut args = Vec::new();
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:");
    assert!(lines.next().is_some(), "no `args:` in {}", path.display());
    for line in lines {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some(item) = t.strip_prefix("- ") else {
            break;
        };
        args.push(item.trim_matches('"').to_string());
    }
    (args, text)
}

/// The value of `flag` in `args`.
fn arg<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in the manifest's args {args:?}"));
    &args[i + 1]
}

#[test]
fn a_renewed_kubernetes_secret_is_served_without_a_restart() {
    let pki = Pki::new();
    let (mut volume, first) = SecretVolume::new(&pki);
    // the container's arguments in deploy/k8s/tls/deployment.yaml, with the Secret's mount
    // point in the test's volume, the ports on loopback, and neither the ConfigMap's file nor
    // Redis
    let (manifest, text) = manifest_args();
    let mount = Path::new(arg(&manifest, "--tls-cert"))
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(arg(&manifest, "--tls-cert"), format!("{mount}/tls.crt"));
    assert_eq!(arg(&manifest, "--tls-key"), format!("{mount}/tls.key"));
    assert!(
        text.contains(&format!("mountPath: {mount}\n")),
        "the Secret is mounted where --tls-cert and --tls-key read"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("subPath:")),
        "a subPath mount is never updated by the kubelet"
    );
    // the probes go to the plain port, the container's ports are the two listening ones
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    let (plain_port, tls_port) = (
        port_of(arg(&manifest, "--plain-listen")),
        port_of(arg(&manifest, "--listen")),
    );
    let mut ports = std::collections::HashMap::new();
    let mut name = "";
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- name: ") {
            name = n;
        } else if let Some(p) = line.strip_prefix("containerPort: ") {
            ports.insert(name, p);
        }
    }
    assert!(ports.values().any(|p| *p == tls_port), "{ports:?}");
    for probe in ["readinessProbe:", "livenessProbe:"] {
        let port = text
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != probe)
            .find_map(|l| l.strip_prefix("port: "))
            .unwrap_or_else(|| panic!("no {probe} with a port"));
        assert_eq!(ports.get(port), Some(&plain_port.as_str()), "{probe}");
    }
    let mut args: Vec<String> = Vec::new();
    let mut items = manifest.iter();
    while let Some(a) = items.next() {
        match a.as_str() {
            "--config" | "--redis" => {
                items.next();
            }
            "--listen" | "--plain-listen" => {
                items.next();
                args.extend([a.clone(), "127.0.0.1:0".to_string()]);
            }
            _ => args.push(
                a.replace(&mount, volume.dir.path().to_str().unwrap())
                    .replace("$(POD_NAME)", "wsgate-test"),
            ),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Gateway::start_raw(&args);
    assert!(gw.plain_addr.is_some(), "a plain port for the probes");
    let (_, got) = wss_from(&pki, lo(1), gw.addr, &[&first]);
    let mut established = got.expect("a session with the first certificate");
    echo(&mut established, "before the renewal");

    let second = volume.update(&pki);
    assert_ne!(first, second);
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = tls_from(&pki, lo(1), gw.addr);
            s.conn.peer_certificates().unwrap()[0] == second
        }),
        "new connections still get the first certificate: {}",
        gw.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || gw
            .log()
            .contains("a changed file")),
        "{}",
        gw.log()
    );
    let (_, got) = wss_from(&pki, lo(1), gw.addr, &[&second]);
    echo(
        &mut got.expect("a session with the renewed certificate"),
        "renewed",
    );
    echo(
        &mut established,
        "after the renewal, on the first certificate",
    );
}
