//! `wss://`: loadtest against the real gateway serving TLS, with a test CA and a server
//! certificate for `localhost` and 127.0.0.1 made at test time (rcgen). `echo`, `fanout` and
//! `conns` trusting the CA (`--ca`) must lose nothing and report `tls: true`; `--insecure`
//! works without the CA; a wss:// URL with neither, or a CA that did not sign the gateway's
//! certificate, is refused before the run with exit 2 and a message naming `--ca`.

mod common;

use common::{Server, loadtest};
use std::path::PathBuf;

/// A test CA, and the files of a server certificate it signed, in a folder of their own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("loadtest-tls-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "loadtest test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test server");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        for (name, text) in [
            ("ca.pem", ca.pem()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// A gateway serving TLS with this certificate: `wss://localhost:PORT`.
    fn gateway(&self) -> (Server, String) {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let gw = common::gateway(&[
            "--workers",
            "2",
            "--publish-rate",
            "0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ]);
        let port = gw.addr.rsplit(':').next().unwrap().to_string();
        (gw, format!("wss://localhost:{port}"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs loadtest with `args` and `--json`: it must exit 0 with nothing lost, over TLS.
fn json_run(args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, stdout, stderr) = loadtest(&args);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
    assert_eq!(v["ok"], true, "{stdout}");
    for k in [
        "lost",
        "reordered",
        "mismatched",
        "unexpected",
        "connection_errors",
    ] {
        assert_eq!(v[k], 0, "{k} in {args:?}: {stdout}");
    }
    assert_eq!(v["tls"], true, "{stdout}");
    let negotiated = v["tls_negotiated"].as_str().unwrap_or("");
    assert!(negotiated.contains("http/1.1"), "{stdout}");
    v
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .or_else(|| v[key].as_f64().map(|x| x as u64))
        .unwrap_or_else(|| panic!("no {key}: {v}"))
}

#[test]
fn echo_fanout_and_conns_over_wss_trusting_the_ca() {
    let pki = Pki::new("ca");
    let (_gw, url) = pki.gateway();
    let ca = pki.ca();
    let with_ca = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--url", &url, "--ca", &ca]);
        json_run(&a)
    };

    // every echo came back, and the bytes counted are the WebSocket frames' (a 1000-byte
    // binary message from the server has a 4-byte header), not the TLS records'
    let v = with_ca(&[
        "echo",
        "--duration",
        "1s",
        "--conns",
        "4",
        "--window",
        "4",
        "--size",
        "1000",
        "--threads",
        "2",
    ]);
    let received = count(&v, "received");
    assert!(received > 0, "{v}");
    assert_eq!(count(&v, "sent"), received, "{v}");
    assert_eq!(count(&v, "payload_bytes_received"), received * 1000, "{v}");
    assert_eq!(count(&v, "wire_bytes_received"), received * 1004, "{v}");
    assert_eq!(v["tls_resumption"], true, "{v}");

    // every publish reached every subscriber of its one topic
    let v = with_ca(&[
        "fanout",
        "--duration",
        "1s",
        "--subscribers",
        "20",
        "--publishers",
        "2",
        "--topics",
        "1",
    ]);
    let published = count(&v, "published");
    assert!(published > 0, "{v}");
    assert_eq!(count(&v, "received"), published * 20, "{v}");

    // publishers on another wss:// URL (the same gateway by its address)
    let by_ip = url.replace("localhost", "127.0.0.1");
    let v = with_ca(&[
        "fanout",
        "--duration",
        "500ms",
        "--subscribers",
        "5",
        "--publish-url",
        &by_ip,
    ]);
    assert_eq!(count(&v, "received"), count(&v, "published") * 5, "{v}");

    // every connection opened, each TLS handshake timed, resumed or full
    let v = with_ca(&[
        "conns",
        "--duration",
        "200ms",
        "--count",
        "100",
        "--rate",
        "0",
    ]);
    assert_eq!(count(&v, "opened"), 100, "{v}");
    assert_eq!(
        count(&v, "tls_resumed") + count(&v, "tls_full_handshakes"),
        100,
        "{v}"
    );
    let handshake = &v["tls_handshake_us"];
    assert!(handshake["p50"].as_u64().is_some(), "{v}");
    assert!(
        handshake["max"].as_u64().unwrap() <= v["latency_us"]["max"].as_u64().unwrap(),
        "the TLS handshake is part of the connection's: {v}"
    );
}

#[test]
fn insecure_accepts_the_certificate_and_no_resumption_makes_full_handshakes() {
    let pki = Pki::new("insecure");
    let (_gw, url) = pki.gateway();
    let v = json_run(&[
        "echo",
        "--url",
        &url,
        "--insecure",
        "--duration",
        "500ms",
        "--conns",
        "2",
        "--text",
        "--size",
        "100",
    ]);
    assert!(count(&v, "received") > 0, "{v}");
    assert_eq!(count(&v, "sent"), count(&v, "received"), "{v}");

    let v = json_run(&[
        "conns",
        "--url",
        &url,
        "--insecure",
        "--no-resumption",
        "--duration",
        "100ms",
        "--count",
        "20",
        "--rate",
        "0",
    ]);
    assert_eq!(count(&v, "opened"), 20, "{v}");
    assert_eq!(count(&v, "tls_resumed"), 0, "{v}");
    assert_eq!(count(&v, "tls_full_handshakes"), 20, "{v}");
    assert_eq!(v["tls_resumption"], false, "{v}");
}

#[test]
fn wss_without_trust_or_with_the_wrong_ca_is_refused_before_the_run() {
    // neither --ca nor --insecure: refused before connecting
    let (code, stdout, stderr) = loadtest(&[
        "echo",
        "--url",
        "wss://127.0.0.1:1/echo",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--ca") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // a CA that did not sign the gateway's certificate: the check before the run says so
    let pki = Pki::new("wrong-ca");
    let other = Pki::new("other-ca");
    let (_gw, url) = pki.gateway();
    let (code, stdout, stderr) = loadtest(&[
        "echo",
        "--url",
        &url,
        "--ca",
        &other.ca(),
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("--ca"),
        "{stderr}"
    );

    // a --ca file without a certificate
    let empty = other.path("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (code, _, stderr) = loadtest(&["conns", "--url", &url, "--ca", &empty]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--ca") && stderr.contains("no certificate"),
        "{stderr}"
    );

    // --raw-tcp is plain TCP
    let (code, _, stderr) = loadtest(&["echo", "--raw-tcp", "--url", &url, "--insecure"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ws://"), "{stderr}");
}
