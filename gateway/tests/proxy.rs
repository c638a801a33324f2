//! The PROXY protocol on the listener: a trusted proxy's header gives the client's address
//! (seen here through the per-address limit), a header from an untrusted peer or a malformed one
//! is refused.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;

fn v1(client: &str) -> String {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n")
}

fn v2(client: [u8; 4]) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v.extend_from_slice(&client);
    v.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
    v
}

fn upgrade_after(addr: SocketAddr, prefix: &[u8]) -> HttpResponse {
    let mut s = connect(addr);
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(upgrade_request("/echo").as_bytes());
    s.write_all(&bytes).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf).expect("an answer");
    if r.status == 101 {
        // keep the session open for the rest of the test
        std::mem::forget(s);
    }
    r
}

#[test]
fn a_trusted_proxy_tells_the_client_address() {
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "true",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "1",
    ]);
    assert_eq!(
        upgrade_after(gw.addr, v1("203.0.113.1").as_bytes()).status,
        101
    );
    assert_eq!(
        upgrade_after(gw.addr, v1("203.0.113.2").as_bytes()).status,
        101,
        "another client"
    );
    let again = upgrade_after(gw.addr, v1("203.0.113.1").as_bytes());
    assert_eq!(
        again.status, 429,
        "the same client address: the limit sees through the proxy"
    );
    assert_eq!(
        upgrade_after(gw.addr, &v2([198, 51, 100, 9])).status,
        101,
        "version 2"
    );
    assert_eq!(upgrade_after(gw.addr, &v2([203, 0, 113, 2])).status, 429);
    // every connection from a trusted proxy must carry a header
    let plain = upgrade_after(gw.addr, b"");
    assert_eq!(plain.status, 400);
    let broken = upgrade_after(gw.addr, b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n");
    assert_eq!(broken.status, 400);
    assert!(broken.text().contains("PROXY"), "{broken:?}");
    // a health check through the proxy (PROXY UNKNOWN) works
    let mut s = connect(gw.addr);
    s.write_all(b"PROXY UNKNOWN\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new()).unwrap().status, 200);
    // /metrics through the proxy too
    let mut s = connect(gw.addr);
    s.write_all(b"PROXY UNKNOWN\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = read_response(&mut s, &mut Vec::new()).unwrap().text();
    assert!(
        metric(
            &text,
            "wsgate_handshake_failures_total{reason=\"bad_proxy_header\"}"
        ) >= 2.0
    );
}

#[test]
fn a_header_from_an_untrusted_peer_is_refused() {
    // loopback is not in the trusted networks: its connections are direct clients
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "true",
        "--trusted-proxies",
        "10.0.0.0/8,192.168.1.1",
    ]);
    let forged = upgrade_after(gw.addr, v1("203.0.113.1").as_bytes());
    assert_eq!(forged.status, 400);
    assert!(forged.text().contains("not a trusted proxy"), "{forged:?}");
    assert_eq!(upgrade_after(gw.addr, &v2([1, 2, 3, 4])).status, 400);
    // a direct client without a header is served
    assert_eq!(upgrade_after(gw.addr, b"").status, 101);
}

#[test]
fn bad_trusted_networks_exit_2() {
    let out = std::process::Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxies",
            "10.0.0.0/33",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trusted-proxies"));
}

/// An upgrade with an `X-Forwarded-For` header, from local address `from`.
fn upgrade_forwarded(addr: SocketAddr, from: &str, forwarded_for: Option<&str>) -> HttpResponse {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let request = upgrade_request("/echo");
    let request = match forwarded_for {
        Some(v) => request.replacen("\r\n", &format!("\r\nX-Forwarded-For: {v}\r\n"), 1),
        None => request,
    };
    s.write_all(request.as_bytes()).unwrap();
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    if r.status == 101 {
        std::mem::forget(s);
    }
    r
}

#[test]
fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let gw = Gateway::start(&[
        "--forwarded-for",
        "true",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "1",
    ]);
    // 127.0.0.1 is the proxy: its many clients are told apart by the header
    let via = |xff: &str| upgrade_forwarded(gw.addr, "127.0.0.1", Some(xff)).status;
    assert_eq!(via("203.0.113.1"), 101);
    assert_eq!(via("203.0.113.2"), 101, "another client of the same proxy");
    assert_eq!(
        via("203.0.113.1"),
        429,
        "the same client again: over its limit"
    );
    assert_eq!(
        via("203.0.113.1, 203.0.113.3"),
        101,
        "the rightmost untrusted hop is the client; the rest may be forged"
    );
    assert_eq!(
        via("198.51.100.4, 127.0.0.1"),
        101,
        "our own hops are skipped"
    );
    let bad = upgrade_forwarded(gw.addr, "127.0.0.1", Some("not-an-address"));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("X-Forwarded-For"), "{bad:?}");

    // 127.0.0.2 is not a trusted proxy: its header is ignored and it is the client itself
    let direct = |xff: &str| upgrade_forwarded(gw.addr, "127.0.0.2", Some(xff)).status;
    assert_eq!(direct("192.0.2.50"), 101);
    assert_eq!(
        direct("192.0.2.51"),
        429,
        "a forged header does not get an untrusted peer past its limit"
    );
}
