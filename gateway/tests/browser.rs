//! Browser tests: headless Debian Chromium (`/usr/bin/chromium`, driven by playwright-core
//! from `browser/`) against the real gateway. Each test starts a gateway with the flags it
//! needs and runs one of `browser/run.mjs`'s tests against it; the scripts check what the page
//! saw and exit non-zero on any failure. `browser/setup.sh` installs Chromium and
//! playwright-core (`./run-tests.sh` runs it first); without them these tests fail, never skip.
//!
//! The tests take turns (one Chromium at a time): the machine has two cores.

mod browser_common;
mod common;
use browser_common::{browser_dir, require_setup};
use common::*;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// One browser at a time.
static BROWSER: Mutex<()> = Mutex::new(());

/// Runs `node browser/run.mjs ARGS...`, killed after `limit`; panics with its output unless it
/// exits 0. Returns its output.
fn run_node(args: &[String], limit: Duration) -> String {
    require_setup();
    let dir = browser_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join("run.mjs"))
        .args(args)
        .current_dir(&dir);
    let (status, output) = run_with_limit(command, limit);
    match status {
        Some(s) if s.success() => {
            println!("{output}");
            output
        }
        Some(s) => panic!("node browser/run.mjs {args:?} failed ({s}):\n{output}"),
        None => {
            panic!("node browser/run.mjs {args:?} ran past {limit:?} and was killed:\n{output}")
        }
    }
}

/// Runs browser test `name` against `gw`.
fn run_against(gw: &Gateway, name: &str, extra: &[String]) -> String {
    let mut args = vec![
        "--url".to_string(),
        format!("http://{}", gw.addr),
        "--only".to_string(),
        name.to_string(),
    ];
    args.extend_from_slice(extra);
    run_node(&args, Duration::from_secs(120))
}

/// `--compression false`: this test checks that Chromium's permessage-deflate offer is
/// declined (browser_permessage_deflate_... checks it accepted, the gateway's default).
#[test]
fn browser_websocket_pubsub_binary_deflate_200_sockets_and_close_codes() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let gw = Gateway::start(&["--workers", "2", "--compression", "false"]);
    let out = run_against(&gw, "websocket", &[]);
    assert!(out.contains("PASS websocket"), "{out}");
}

#[test]
fn browser_large_messages_from_the_page_and_a_worker() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let gw = Gateway::start(&["--workers", "2", "--max-message-size", "64MiB"]);
    let out = run_against(&gw, "large", &[]);
    assert!(out.contains("PASS large"), "{out}");
}

/// permessage-deflate with Chromium against the default gateway (compression on): the
/// negotiated extension, round trips of 16 B to 32 MiB (text and binary, repetitive and
/// random, from the page and a Worker) byte for byte, compressed on the wire both ways, and
/// counted in /metrics; and the offer declined by a gateway with `--compression false`, which
/// the test starts itself.
#[test]
fn browser_permessage_deflate_round_trips_from_the_page_and_a_worker() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let gw = Gateway::start(&["--workers", "2", "--max-message-size", "64MiB"]);
    let out = run_against(&gw, "compression", &["--bin".into(), BIN.to_string()]);
    assert!(out.contains("PASS compression"), "{out}");
}

/// The promise for a large message from a real browser: Chromium sends 256 MiB
/// through `/echo` (as frames of 131,000 bytes), it comes back byte for byte, and the gateway's
/// resident set grows by one copy of it at most, plus 10% (it grew 2.1x to 3.1x when the
/// message's buffer grew in steps, each a copy).
#[test]
fn browser_256_mib_message_costs_the_gateway_one_copy() {
    const SIZE: u64 = 256 << 20;
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // one worker, so that one process holds the message; 4 KiB pages, so that its resident
    // set grows by what it writes
    let gw = Gateway::start_without_huge_pages(&["--workers", "1", "--max-message-size", "512MiB"]);
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.rss();
    let out = run_against(&gw, "huge", &["--size".into(), SIZE.to_string()]);
    assert!(out.contains("PASS huge"), "{out}");
    let peak = gw.peak_rss();
    let growth = peak.saturating_sub(before) as f64 / SIZE as f64;
    println!(
        "gateway RSS before {:.1} MiB, peak {:.1} MiB: growth {growth:.3}x the 256 MiB message",
        before as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        growth <= 1.10,
        "the gateway's resident set grew {growth:.3}x the message (bound 1.1x)"
    );
}

#[test]
fn browser_sees_the_gateways_close_codes() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut gw = Gateway::start(&[
        "--workers",
        "1",
        "--max-message-size",
        "64KiB",
        "--drain-grace",
        "1s",
        "--drain-timeout",
        "5s",
    ]);
    let out = run_against(&gw, "close", &["--pid".into(), gw.pid().to_string()]);
    assert!(out.contains("PASS close"), "{out}");
    // the test sent SIGTERM: the drain ends with exit 0
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("the gateway exits after the drain");
    assert!(status.success(), "{status}");
}

#[test]
fn browser_client_js_promises_events_and_reconnect() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // this test starts (and restarts) its own gateways
    let out = run_node(
        &[
            "--only".into(),
            "client".into(),
            "--bin".into(),
            BIN.to_string(),
        ],
        Duration::from_secs(120),
    );
    assert!(out.contains("PASS client"), "{out}");
}

/// Issue 15's client side: `client.js` in Chromium recovers what a drop made it miss on a
/// history topic (exactly the missed messages, in order, no duplicate, a `recovered` event with
/// their count, also with a publisher racing the reconnect), drops repeated offsets and reports
/// skipped ones, and emits `gap` with reason "epoch" after the gateway restarts; `/stats` and
/// the dashboard's history card count the recoveries. The test starts (and restarts) its own
/// gateways with a `--history` rule, behind a TCP relay that cuts the page's connection.
#[test]
fn browser_client_js_recovers_history_and_reports_gaps() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_node(
        &[
            "--only".into(),
            "recovery".into(),
            "--bin".into(),
            BIN.to_string(),
        ],
        Duration::from_secs(120),
    );
    assert!(out.contains("PASS recovery"), "{out}");
}

#[test]
fn browser_dashboard_shows_what_happened() {
    let _turn = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let gw = Gateway::start(&["--workers", "2", "--outbox-limit", "1MiB"]);
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("target")
        .join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = run_against(
        &gw,
        "dashboard",
        &["--screenshot".into(), screenshot.display().to_string()],
    );
    assert!(out.contains("PASS dashboard"), "{out}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    println!("screenshot: {}", screenshot.display());
}
