//! Admission limits against the real binary: each refusal, and a well-behaved client next to it
//! that is not affected. Connections in total and per address, origins, publish rate.

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use wsgate_core::frame::OpCode;

fn upgrade_with_origin(addr: SocketAddr, path: &str, origin: Option<&str>) -> HttpResponse {
    let mut s = connect(addr);
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = upgrade_request(path).replace("\r\n\r\n", &format!("\r\n{origin}\r\n"));
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new()).expect("an answer")
}

/// Connects from a given loopback source address.
fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn upgraded(mut s: TcpStream, path: &str) -> Result<RawWs, HttpResponse> {
    s.write_all(upgrade_request(path).as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf).expect("an answer");
    if r.status == 101 {
        Ok(RawWs::finish_upgrade_after(s, buf, r))
    } else {
        Err(r)
    }
}

#[test]
fn total_connections_are_capped_and_freed() {
    let gw = Gateway::start(&["--max-connections", "5", "--workers", "2"]);
    let mut held: Vec<RawWs> = (0..5).map(|_| RawWs::connect(gw.addr, "/echo")).collect();
    // the sixth is refused with a reason, the held ones keep working
    let refused = get(gw.addr, "/healthz");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.text().contains("too many connections"));
    held[0].send_text("still here");
    assert_eq!(held[0].recv_text(), "still here");
    // a closed one makes room
    drop(held.pop());
    assert!(eventually(IO_TIMEOUT, || get(gw.addr, "/healthz").status == 200));
    drop(held);
    let refusals = "wsgate_handshake_failures_total{reason=\"too_many_connections\"}";
    assert!(eventually(IO_TIMEOUT, || get(gw.addr, "/healthz").status == 200));
    assert!(gw.metric(refusals) >= 1.0);
}

#[test]
fn connections_per_address_are_capped_and_other_addresses_are_not() {
    let gw = Gateway::start(&["--max-connections-per-ip", "3", "--workers", "1"]);
    let mut held: Vec<RawWs> = (0..3)
        .map(|_| upgraded(connect_from(gw.addr, "127.0.0.1"), "/echo").expect("under the limit"))
        .collect();
    let refused = upgraded(connect_from(gw.addr, "127.0.0.1"), "/echo")
        .err()
        .expect("over the limit");
    assert_eq!(refused.status, 429);
    assert!(refused.text().contains("from this address"));
    // another address is unaffected
    let mut other = upgraded(connect_from(gw.addr, "127.0.0.2"), "/echo").expect("another address");
    other.send_text("hi");
    assert_eq!(other.recv_text(), "hi");
    held[2].send_text("ok");
    assert_eq!(held[2].recv_text(), "ok");
    drop(held.pop());
    assert!(eventually(IO_TIMEOUT, || upgraded(
        connect_from(gw.addr, "127.0.0.1"),
        "/echo"
    )
    .is_ok()));
    // from another address: 127.0.0.1 may still hold three (the probe that just got in is
    // closed on our side, but the gateway may not have seen it yet)
    let mut s = connect_from(gw.addr, "127.0.0.3");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    let series = "wsgate_handshake_failures_total{reason=\"too_many_from_address\"}";
    assert!(common::metric(&r.text(), series) >= 1.0);
}

#[test]
fn only_allowed_origins_may_open_a_session() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example.com,*.corp.test"]);
    assert_eq!(
        upgrade_with_origin(gw.addr, "/ws", Some("https://app.example.com")).status,
        101
    );
    assert_eq!(
        upgrade_with_origin(gw.addr, "/ws", Some("https://team.corp.test")).status,
        101
    );
    let refused = upgrade_with_origin(gw.addr, "/ws", Some("https://evil.example"));
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("origin"));
    assert_eq!(
        upgrade_with_origin(gw.addr, "/ws", Some("http://app.example.com")).status,
        403
    );
    // non-browser clients send no Origin: they are not what the check protects against
    assert_eq!(upgrade_with_origin(gw.addr, "/ws", None).status, 101);
    assert!(gw.metric("wsgate_handshake_failures_total{reason=\"origin\"}") >= 2.0);
}

#[test]
fn publishing_over_the_rate_gets_errors_then_close_1008() {
    let gw = Gateway::start(&[
        "--publish-rate",
        "5",
        "--publish-burst",
        "5",
        "--workers",
        "1",
    ]);
    let mut abuser = RawWs::connect(gw.addr, "/ws");
    let mut neighbour = RawWs::connect(gw.addr, "/ws");
    // the burst goes through, the next is refused with the id
    for id in 0..5 {
        abuser.send_text(&format!(
            r#"{{"type":"publish","topic":"t","data":{id},"id":{id}}}"#
        ));
        assert_eq!(abuser.recv_text(), format!(r#"{{"type":"ack","id":{id}}}"#));
    }
    abuser.send_text(r#"{"type":"publish","topic":"t","data":5,"id":5}"#);
    let refused = abuser.recv_text();
    assert!(
        refused.contains(r#""code":"rate_limited""#) && refused.contains(r#""id":5"#),
        "{refused}"
    );
    // binary publishes count too
    let mut bin = vec![1u8, b't'];
    bin.extend_from_slice(b"payload");
    abuser.send(true, OpCode::Binary, &bin);
    assert!(abuser.recv_text().contains("rate_limited"));
    // the neighbour has its own budget
    neighbour.send_text(r#"{"type":"publish","topic":"t","data":1,"id":1}"#);
    assert_eq!(neighbour.recv_text(), r#"{"type":"ack","id":1}"#);
    // keeping on: closed with 1008
    for id in 6..40 {
        abuser.send_text(&format!(r#"{{"type":"publish","topic":"t","data":{id}}}"#));
    }
    assert_eq!(abuser.expect_close(), Some(1008));
    assert!(gw.metric("wsgate_rate_limited_total") >= 6.0);
    neighbour.send_text(r#"{"type":"subscribe","topic":"t","id":2}"#);
    assert_eq!(neighbour.recv_text(), r#"{"type":"ack","id":2}"#);
}
