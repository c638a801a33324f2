//! End-to-end tests of the plain HTTP side of the port: the endpoints, and every malformed or
//! refused request getting a 4xx (or a close) rather than a hang.

mod common;

use common::{Gateway, closes, connect, get, http, read_response};
use std::io::Write;

/// The metric families the gateway documents in its HELP lines.
const METRICS: &[&str] = &[
    "wsgate_connections_open",
    "wsgate_connections_total",
    "wsgate_upgrades_total",
    "wsgate_bytes_out_total",
    "wsgate_publishes_total",
    "wsgate_slow_consumer_closes_total",
    "wsgate_message_errors_total",
    "wsgate_http_requests_total",
    "wsgate_handshake_failures_total",
    "wsgate_messages_in_total",
    "wsgate_bytes_in_total",
    "wsgate_messages_out_total",
    "wsgate_closes_sent_total",
    "wsgate_fanout_deliveries_total",
    "wsgate_io_uring_workers",
    "wsgate_inbox_depth",
    "wsgate_inbox_wakeups_total",
    "wsgate_topics",
    "wsgate_draining",
];

#[test]
fn health_readiness_and_metrics() {
    let gw = Gateway::start(&["--workers", "2"]);
    let r = get(gw.addr, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(gw.addr, "/readyz");
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(gw.addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{r:?}"
    );
    let text = r.text();
    for name in METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no {name} in /metrics:\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        assert!(series.starts_with("wsgate_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
    }
    assert_eq!(common::metric(&text, "wsgate_draining"), 0.0);
    // a session shows up in the counters
    let mut ws = common::ws(gw.addr, "/ws");
    common::ws_send(&mut ws, r#"{"type":"subscribe","topic":"m","id":1}"#);
    common::ws_text(&mut ws);
    let text = gw.metrics();
    assert!(common::metric(&text, "wsgate_upgrades_total") >= 1.0);
    assert!(common::metric(&text, "wsgate_connections_open") >= 1.0);
    assert!(common::metric(&text, "wsgate_messages_in_total{kind=\"text\"}") >= 1.0);
    assert!(common::metric(&text, "wsgate_topics") >= 1.0);
}

#[test]
fn the_io_uring_gauge_counts_the_workers_whose_sends_go_through_a_ring() {
    // each worker says so as it starts: both, or none and one log line where the kernel
    // refuses a ring
    let gw = Gateway::start(&["--workers", "2"]);
    let refused = || gw.log().contains("io_uring refused by the kernel");
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            gw.metric("wsgate_io_uring_workers") == 2.0 || refused()
        }),
        "neither both workers on io_uring nor a refusal logged:\n{}",
        gw.log()
    );
    let expected = if refused() { 0.0 } else { 2.0 };
    assert_eq!(gw.metric("wsgate_io_uring_workers"), expected);
    // turned off: none, and nothing to say about the kernel
    let off = Gateway::start(&["--workers", "2", "--io-uring", "false"]);
    assert_eq!(off.metric("wsgate_io_uring_workers"), 0.0);
    assert!(!off.log().contains("io_uring"), "{}", off.log());
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let gw = Gateway::start(&[]);
    let mut s = connect(gw.addr);
    // two pipelined requests in one write, then a third
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let a = read_response(&mut s, &mut buf).expect("first answer");
    let b = read_response(&mut s, &mut buf).expect("second answer");
    assert_eq!((a.status, b.status), (200, 200));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let c = read_response(&mut s, &mut buf).expect("third answer");
    assert_eq!(c.status, 200);
    assert!(closes(&mut s), "Connection: close is honoured");
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let gw = Gateway::start(&[]);
    let r = get(gw.addr, "/nope");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.body.is_empty());
    for (request, allow) in [
        (
            "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            "GET",
        ),
        ("DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n", "GET"),
        ("GET /publish/t HTTP/1.1\r\nHost: t\r\n\r\n", "POST"),
    ] {
        let mut s = connect(gw.addr);
        s.write_all(request.as_bytes()).unwrap();
        let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
        assert_eq!(r.status, 405, "{request:?}: {r:?}");
        assert_eq!(r.header("Allow"), Some(allow), "{request:?}");
        assert!(closes(&mut s), "{request:?}: connection left open");
    }
    // /ws without an upgrade is not a page
    let r = get(gw.addr, "/ws");
    assert_eq!(r.status, 404, "{r:?}");
}

fn upgrade_with(headers: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{headers}\r\n"
    )
}

#[test]
fn bad_upgrades_are_refused_with_the_right_status() {
    let gw = Gateway::start(&[]);
    let key = format!("Sec-WebSocket-Key: {}\r\n", common::KEY);

    let mut s = connect(gw.addr);
    s.write_all(upgrade_with(&format!("{key}Sec-WebSocket-Version: 8\r\n")).as_bytes())
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"), "{r:?}");
    assert!(closes(&mut s));

    for (what, headers) in [
        ("missing key", "Sec-WebSocket-Version: 13\r\n".to_string()),
        (
            "short key",
            "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n".to_string(),
        ),
    ] {
        let mut s = connect(gw.addr);
        s.write_all(upgrade_with(&headers).as_bytes()).unwrap();
        let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(closes(&mut s), "{what}: connection left open");
    }
    let r = http(
        gw.addr,
        format!(
            "POST /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(r.status == 405 || r.status == 400, "POST upgrade: {r:?}");
    let failures = gw.metric("wsgate_handshake_failures_total{reason=\"unsupported_version\"}");
    assert_eq!(failures, 1.0);
}

#[test]
fn a_head_over_8kib_gets_431() {
    let gw = Gateway::start(&[]);
    let mut s = connect(gw.addr);
    let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for _ in 0..9 {
        req.push_str(&filler);
    }
    req.push_str("\r\n");
    // the server may answer and close before reading it all: ignore write errors
    let _ = s.write_all(req.as_bytes());
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    assert_eq!(r.status, 431, "{r:?}");
    assert!(closes(&mut s));

    // a head that never ends is cut off at the limit too
    let mut s = connect(gw.addr);
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Long: ");
    let _ = s.write_all(&[b'b'; 9000]);
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    assert_eq!(r.status, 431, "{r:?}");
    assert!(closes(&mut s));
}

#[test]
fn garbage_gets_400_and_the_connection_is_closed() {
    let gw = Gateway::start(&[]);
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ] {
        let mut s = connect(gw.addr);
        s.write_all(garbage).unwrap();
        match read_response(&mut s, &mut Vec::new()) {
            Some(r) => {
                assert!((400..500).contains(&r.status), "{garbage:?}: {r:?}");
                assert!(!r.body.is_empty(), "{garbage:?}: a reason is given");
            }
            None => panic!("{garbage:?}: closed without an answer"),
        }
        assert!(closes(&mut s), "{garbage:?}: connection left open");
    }
    // the gateway is still fine
    assert_eq!(get(gw.addr, "/healthz").status, 200);
}

#[test]
fn a_client_that_stops_halfway_is_closed_after_the_handshake_timeout() {
    let gw = Gateway::start(&["--handshake-timeout", "1s"]);
    let mut s = connect(gw.addr);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgr").unwrap();
    let mut buf = Vec::new();
    // either a 408 and a close, or just a close, well within the read timeout
    if let Some(r) = read_response(&mut s, &mut buf) {
        assert_eq!(r.status, 408, "{r:?}");
    }
    assert!(closes(&mut s), "connection left open after the timeout");

    // a connection that sends nothing at all is dropped too
    let mut s = connect(gw.addr);
    assert!(closes(&mut s), "silent connection left open");

    // and a POST whose body never comes
    let mut s = connect(gw.addr);
    s.write_all(b"POST /publish/t HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    if let Some(r) = read_response(&mut s, &mut Vec::new()) {
        assert_eq!(r.status, 408, "{r:?}");
    }
    assert!(closes(&mut s));
}

#[test]
fn oversized_and_chunked_publish_bodies_are_refused() {
    let gw = Gateway::start(&["--max-body-size", "1KiB"]);
    let r = common::post(gw.addr, "/publish/t", "", &[b'x'; 1025]);
    assert_eq!(r.status, 413, "{r:?}");
    let r = common::post(gw.addr, "/publish/t", "", &[b'x'; 1024]);
    assert_eq!(r.status, 202, "{r:?}");
    let r = http(
        gw.addr,
        b"POST /publish/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 411, "{r:?}");
    let r = common::post(gw.addr, "/publish/%FF", "", b"x");
    assert_eq!(r.status, 400, "{r:?}");
}

/// Reads what the gateway sends within `wait`, all of it.
fn read_all_within(stream: &mut std::net::TcpStream, wait: std::time::Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(stream, &mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// A body is the body, whatever the route: a second request hidden in the body of a
/// `GET /healthz` (request smuggling behind a proxy that reuses connections) is thrown away,
/// never answered; the request after the body is.
#[test]
fn a_request_hidden_in_a_body_is_never_answered() {
    let gw = Gateway::start(&[]);
    let hidden = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = connect(gw.addr);
    let wire = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{hidden}\
         GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        hidden.len()
    );
    s.write_all(wire.as_bytes()).unwrap();
    let got =
        String::from_utf8(read_all_within(&mut s, std::time::Duration::from_secs(5))).unwrap();
    assert_eq!(got.matches("HTTP/1.1 ").count(), 2, "{got}");
    assert!(
        got.contains("\r\n\r\nok\n") && got.ends_with("\r\n\r\nready\n"),
        "{got}"
    );
    assert!(
        !got.contains("wsgate_"),
        "the hidden request was answered: {got}"
    );
}

/// `HEAD` gets the headers a `GET` would, and no body (the next response on the connection
/// would otherwise be read as that body).
#[test]
fn head_gets_headers_only() {
    let gw = Gateway::start(&[]);
    let mut s = connect(gw.addr);
    s.write_all(
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let got =
        String::from_utf8(read_all_within(&mut s, std::time::Duration::from_secs(5))).unwrap();
    let (head, rest) = got.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("Content-Length: 3"),
        "{got}"
    );
    assert!(rest.starts_with("HTTP/1.1 200"), "HEAD sent a body: {got}");
    assert!(rest.ends_with("\r\n\r\nok\n"), "{got}");
}

/// A zero-length `POST /publish` body and the request pipelined after it are answered at
/// once, not after the handshake timeout.
#[test]
fn a_pipelined_request_after_an_empty_publish_is_answered_at_once() {
    let gw = Gateway::start(&["--handshake-timeout", "30s"]);
    let mut s = connect(gw.addr);
    let started = std::time::Instant::now();
    s.write_all(
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let first = read_response(&mut s, &mut buf).expect("the publish's answer");
    assert_eq!(first.status, 202, "{first:?}");
    let second = read_response(&mut s, &mut buf).expect("the pipelined answer");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?}, the handshake timeout is 30 s",
        started.elapsed()
    );
}

/// Every route frames bodies the same way: chunked is 411, both length headers 400, a body
/// over max-body-size 413, whatever the method and path.
#[test]
fn body_framing_is_the_same_on_every_route() {
    let gw = Gateway::start(&["--max-body-size", "1KiB"]);
    for path in ["/healthz", "/metrics", "/publish/t", "/nope"] {
        for (method, extra, status) in [
            ("GET", "Transfer-Encoding: chunked\r\n", 411),
            ("POST", "Transfer-Encoding: chunked\r\n", 411),
            (
                "GET",
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                400,
            ),
            ("GET", "Content-Length: 2000\r\n", 413),
            ("POST", "Content-Length: 2000\r\n", 413),
        ] {
            let r = http(
                gw.addr,
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(),
            );
            assert_eq!(r.status, status, "{method} {path} with {extra:?}: {r:?}");
        }
    }
    assert!(gw.metric("wsgate_handshake_failures_total{reason=\"length_required\"}") >= 8.0);
}
