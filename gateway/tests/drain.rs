//! End-to-end tests of the drain on SIGTERM (shared/PROTOCOL.md, "Draining").

mod common;

use common::{Gateway, RawWs, close_payload, eventually, get};
use std::time::Duration;
use wsgate_core::frame::{Message, OpCode};

#[test]
fn sigterm_drains_then_exits_zero() {
    let mut gw = Gateway::start(&[
        "--workers",
        "2",
        "--drain-grace",
        "1s",
        "--drain-timeout",
        "5s",
    ]);
    let mut sessions: Vec<RawWs> = (0..3)
        .map(|i| {
            if i == 0 {
                RawWs::connect(gw.addr, "/echo")
            } else {
                RawWs::connect(gw.addr, "/ws?subscribe=d")
            }
        })
        .collect();
    for s in &mut sessions {
        s.send(true, OpCode::Ping, b"up");
        assert_eq!(s.recv(), Message::Pong("up".into()));
    }
    gw.sigterm();
    // at once: not ready, new sessions refused (the signal is handled asynchronously: poll)
    assert!(
        eventually(Duration::from_secs(5), || get(gw.addr, "/readyz").status
            == 503),
        "/readyz never turned 503"
    );
    let r = common::http(gw.addr, common::upgrade_request("/ws").as_bytes());
    assert_eq!(r.status, 503, "{r:?}");
    let r = common::http(gw.addr, common::upgrade_request("/echo").as_bytes());
    assert_eq!(r.status, 503, "{r:?}");
    // still alive, and saying so in /metrics
    assert_eq!(get(gw.addr, "/healthz").status, 200);
    assert_eq!(gw.metric("wsgate_draining"), 1.0);
    // the open sessions still work during the grace
    sessions[0].send_text("during the grace");
    assert_eq!(sessions[0].recv_text(), "during the grace");
    // after the grace: close 1001 to every session
    for s in &mut sessions {
        assert_eq!(s.expect_close(), Some(1001));
    }
    assert!(
        gw.wait_exit(Duration::from_millis(300)).is_none(),
        "exited before the sessions answered their close"
    );
    for s in &mut sessions {
        s.send(true, OpCode::Close, &close_payload(1001, ""));
        assert!(s.closes(), "the gateway did not end the connection");
    }
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit after the drain");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn the_drain_timeout_bounds_a_drain_whose_clients_never_answer() {
    let mut gw = Gateway::start(&[
        "--drain-grace",
        "100ms",
        "--drain-timeout",
        "1s",
        "--close-timeout",
        "30s",
    ]);
    let mut s = RawWs::connect(gw.addr, "/ws");
    gw.sigterm();
    assert_eq!(s.expect_close(), Some(1001));
    // the client never answers; the drain timeout ends it
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit at the drain timeout");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_second_sigterm_during_the_grace_exits_at_once() {
    let mut gw = Gateway::start(&["--drain-grace", "30s", "--drain-timeout", "60s"]);
    let mut s = RawWs::connect(gw.addr, "/echo");
    s.send_text("hi");
    assert_eq!(s.recv_text(), "hi");
    gw.sigterm();
    assert!(
        eventually(Duration::from_secs(5), || get(gw.addr, "/readyz").status
            == 503),
        "/readyz never turned 503"
    );
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("a second SIGTERM did not make it exit");
    assert!(!status.success(), "{status:?}");
}

#[test]
fn a_sigterm_right_after_the_listening_line_still_drains() {
    // the signal handlers must be in place before the gateway says it is listening
    for _ in 0..20 {
        let mut gw = Gateway::start(&["--drain-grace", "0s", "--drain-timeout", "2s"]);
        gw.sigterm();
        let status = gw
            .wait_exit(Duration::from_secs(10))
            .expect("did not exit after SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "killed instead of drained: {status:?}"
        );
    }
}
