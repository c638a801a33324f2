//! End-to-end tests of the gateway's timers: pings to a silent client, the idle timeout, the
//! close-handshake timeout, the handshake timeout, and the end of a clean close. Only generous
//! upper bounds are asserted on time ("within 10 s"); the times seen are printed.

mod common;

use common::{
    Gateway, RawWs, client_frame, close_payload, closes_within, connect, odd_frame, read_response,
};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};

/// Pings after 1 s of silence, closes after 3 s, waits 1 s for the answer to a close.
const TIMERS: [&str; 6] = [
    "--ping-interval",
    "1s",
    "--idle-timeout",
    "3s",
    "--close-timeout",
    "1s",
];

/// The bound on anything that the timers above should end within a few seconds.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn a_silent_client_gets_a_ping() {
    let gw = Gateway::start(&TIMERS);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    let start = Instant::now();
    ws.stream.set_read_timeout(Some(BOUND)).unwrap();
    match ws.recv() {
        Message::Ping(_) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    let waited = start.elapsed();
    println!("first ping after {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "first ping after {waited:?}"
    );
}

#[test]
fn a_client_that_answers_pings_stays_open_past_the_idle_timeout() {
    let gw = Gateway::start(&TIMERS);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    let start = Instant::now();
    let mut pings = 0;
    // 5 s is well past the 3 s idle timeout: only the pongs keep the session open
    while start.elapsed() < Duration::from_secs(5) {
        match ws.recv() {
            Message::Ping(payload) => {
                pings += 1;
                ws.send(true, OpCode::Pong, &payload);
            }
            other => panic!(
                "after {:?}: expected a ping, got {other:?}",
                start.elapsed()
            ),
        }
    }
    assert!(pings >= 2, "only {pings} pings in 5 s");
    ws.send_text("still open");
    loop {
        match ws.recv() {
            Message::Ping(payload) => ws.send(true, OpCode::Pong, &payload),
            Message::Text(t) => {
                assert_eq!(&t[..], b"still open");
                break;
            }
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    println!("{pings} pings answered in {:?}", start.elapsed());
}

/// Reads until a close frame, skipping pings; returns its code and reason.
fn next_close(ws: &mut RawWs) -> (u16, String) {
    loop {
        match ws.recv() {
            Message::Ping(_) => {}
            Message::Close(Some(c)) => {
                return (c.code.0, String::from_utf8_lossy(&c.reason).into_owned());
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[test]
fn a_client_that_never_answers_is_closed_1001_then_dropped() {
    let gw = Gateway::start(&TIMERS);
    let mut ws = RawWs::connect(gw.addr, "/ws");
    let start = Instant::now();
    match ws.recv() {
        Message::Ping(_) => {} // not answered
        other => panic!("expected a ping, got {other:?}"),
    }
    let (code, reason) = next_close(&mut ws);
    let closed_at = start.elapsed();
    assert_eq!(code, 1001, "reason {reason:?}");
    assert!(reason.contains("idle"), "close reason {reason:?}");
    assert!(closed_at < BOUND, "idle close after {closed_at:?}");
    // the close is not answered either: the close timeout (1 s) ends the connection
    let before = Instant::now();
    assert!(
        closes_within(&mut ws.stream, BOUND),
        "the connection is still open {BOUND:?} after an unanswered close"
    );
    println!(
        "idle close {reason:?} after {closed_at:?}, TCP dropped {:?} later",
        before.elapsed()
    );
    assert_eq!(gw.metric("wsgate_closes_sent_total{code=\"1001\"}"), 1.0);
}

#[test]
fn an_unanswered_drain_close_is_dropped_after_the_close_timeout() {
    let mut gw = Gateway::start(&[
        "--drain-grace",
        "100ms",
        "--drain-timeout",
        "60s",
        "--close-timeout",
        "1s",
    ]);
    let mut ws = RawWs::connect(gw.addr, "/ws?subscribe=news");
    ws.send(true, OpCode::Ping, b"up");
    assert_eq!(ws.recv(), Message::Pong("up".into()));
    gw.sigterm();
    let (code, reason) = next_close(&mut ws);
    assert_eq!(code, 1001, "reason {reason:?}");
    let before = Instant::now();
    assert!(
        closes_within(&mut ws.stream, BOUND),
        "the connection is still open {BOUND:?} after an unanswered drain close"
    );
    println!(
        "drain close {reason:?}; TCP dropped {:?} later",
        before.elapsed()
    );
    // its last connection gone, the drain ends long before its 60 s timeout
    let status = gw
        .wait_exit(BOUND)
        .expect("did not exit after its last connection was dropped");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn connections_that_do_not_finish_a_request_are_dropped_after_the_handshake_timeout() {
    let gw = Gateway::start(&["--handshake-timeout", "1s"]);
    let start = Instant::now();
    // sends nothing at all
    let mut silent = connect(gw.addr);
    // sends half a request head
    let mut partial = connect(gw.addr);
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n")
        .unwrap();
    // finishes one keep-alive request, then goes quiet
    let mut kept = connect(gw.addr);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut kept_buf = Vec::new();
    let r = read_response(&mut kept, &mut kept_buf).expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    // an open WebSocket is past its handshake: the timeout no longer applies
    let mut ws = RawWs::connect(gw.addr, "/echo");

    // the silent one: closed without a word
    silent.set_read_timeout(Some(BOUND)).unwrap();
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(_) => panic!("the gateway said something to a connection that sent nothing"),
        Err(e) => panic!("the silent connection was not dropped within {BOUND:?}: {e}"),
    }
    println!("silent connection dropped after {:?}", start.elapsed());
    // the partial one: 408, then closed
    partial.set_read_timeout(Some(BOUND)).unwrap();
    let r = read_response(&mut partial, &mut Vec::new()).expect("a 408 answer");
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        closes_within(&mut partial, BOUND),
        "not closed after the 408"
    );
    println!("half a request: 408 and closed after {:?}", start.elapsed());
    // the idle keep-alive one: closed
    assert!(
        closes_within(&mut kept, BOUND),
        "an idle keep-alive connection was kept past the handshake timeout"
    );
    assert!(kept_buf.is_empty(), "unexpected bytes {kept_buf:?}");
    assert!(start.elapsed() < 2 * BOUND);

    // the WebSocket outlived the handshake timeout and still works
    assert!(start.elapsed() > Duration::from_secs(1));
    ws.send_text("still here");
    assert_eq!(ws.recv_text(), "still here");
}

#[test]
fn a_client_close_is_answered_and_then_the_server_closes_tcp() {
    // a long close timeout: an EOF within the bound can only be the server's own clean close
    let gw = Gateway::start(&["--close-timeout", "60s"]);
    for path in ["/echo", "/ws"] {
        let mut ws = RawWs::connect(gw.addr, path);
        ws.send(true, OpCode::Ping, b"up");
        assert_eq!(ws.recv(), Message::Pong("up".into()));
        ws.send(true, OpCode::Close, &close_payload(1000, "done"));
        let before = Instant::now();
        ws.expect_close_now(1000);
        // the client keeps its side open: the server must still end the TCP connection
        assert!(
            closes_within(&mut ws.stream, BOUND),
            "{path}: no EOF after the close reply"
        );
        println!("{path}: close answered, EOF after {:?}", before.elapsed());
    }
    // the server lets go of both connections once the clients close their side too
    assert!(
        common::eventually(BOUND, || gw.metric("wsgate_connections_open") <= 1.0),
        "connections still open after both sides closed"
    );
}

#[test]
fn a_server_close_answered_by_the_client_ends_tcp_at_once() {
    let gw = Gateway::start(&[
        "--ping-interval",
        "500ms",
        "--idle-timeout",
        "1s",
        "--close-timeout",
        "60s",
    ]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    let (code, _) = next_close(&mut ws);
    assert_eq!(code, 1001);
    ws.send(true, OpCode::Close, &close_payload(1001, ""));
    let before = Instant::now();
    assert!(
        closes_within(&mut ws.stream, BOUND),
        "no EOF after the client answered the server's close"
    );
    println!("answered server close: EOF after {:?}", before.elapsed());
}

#[test]
fn a_failed_session_whose_peer_does_not_read_is_dropped_after_the_close_timeout() {
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--outbox-limit",
        "64MiB",
        "--close-timeout",
        "1s",
    ]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    // 16 MiB of echoes that the client never reads, then a protocol error (an unmasked frame):
    // the gateway's close frame is queued behind echoes that cannot leave
    let frame = client_frame(true, OpCode::Binary, &vec![0x3c; 1 << 20]);
    let mut bytes = Vec::with_capacity(17 * frame.len());
    for _ in 0..16 {
        bytes.extend_from_slice(&frame);
    }
    bytes.extend_from_slice(&odd_frame(true, 0, OpCode::Text, b"unmasked", false));
    let mut writer = ws.stream.try_clone().unwrap();
    writer.set_write_timeout(Some(BOUND)).unwrap();
    writer
        .write_all(&bytes)
        .expect("the gateway read everything");
    assert!(
        common::eventually(BOUND, || gw
            .metric("wsgate_closes_sent_total{code=\"1002\"}")
            == 1.0),
        "the gateway did not fail the session"
    );
    let failed = Instant::now();
    // nothing read: the close never reaches the client, and the close timeout still applies
    assert!(
        common::eventually(BOUND, || gw.metric("wsgate_connections_open") <= 1.0),
        "the gateway still holds a failed connection {BOUND:?} after it gave up on it"
    );
    println!(
        "failed session with an unread outbox released after {:?}",
        failed.elapsed()
    );
    assert!(
        closes_within(&mut ws.stream, BOUND),
        "no end seen by the client"
    );
}
