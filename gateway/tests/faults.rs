//! A bug while handling one connection stays with that connection: it is closed with 1011 and
//! counted, the worker and the other connections go on, and the log says it once. Needs the
//! test-only `fault-injection` feature (a text "wsgate:panic" on /echo panics):
//! `cargo test -p wsgate --features fault-injection --test faults`.
#![cfg(feature = "fault-injection")]

mod common;

use common::*;

#[test]
fn a_panic_closes_only_its_connection_with_1011() {
    let gw = Gateway::start(&["--workers", "1"]);
    let mut bystander = RawWs::connect(gw.addr, "/echo");
    for round in 0..3 {
        let mut victim = RawWs::connect(gw.addr, "/echo");
        victim.send_text("before");
        assert_eq!(victim.recv_text(), "before");
        victim.send_text("wsgate:panic");
        assert_eq!(victim.expect_close(), Some(1011), "round {round}");
        assert!(victim.closes());
        // the same worker still serves its other connections
        bystander.send_text(&format!("still here {round}"));
        assert_eq!(bystander.recv_text(), format!("still here {round}"));
    }
    assert_eq!(gw.metric("wsgate_internal_errors_total"), 3.0);
    assert_eq!(get(gw.addr, "/healthz").status, 200);
    // the log is read from the process' stderr by another thread: wait for the line to be there
    let logged = |gw: &Gateway| gw.log().matches("internal error (a bug)").count();
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || logged(&gw) >= 1),
        "never logged:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert_eq!(
        log.matches("internal error (a bug)").count(),
        1,
        "logged once:\n{log}"
    );
}
