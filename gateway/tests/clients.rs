//! The PROTOCOL.md checks run with clients other than our own: the Python `websockets` library
//! (clients/python) and Node's `ws` (clients/node), each against a real gateway. clients/setup.sh
//! (run by ./run-tests.sh) installs them; when they are missing these tests fail and say so.
//!
//! Each suite runs twice: against a gateway with permessage-deflate on (its default; both
//! libraries offer it, so every check runs compressed) and against one started with
//! `--compression false` (every offer declined). The suite is told which (`--compression on|off`)
//! for its compression checks: the negotiated extension, echo round trips of 16 B to 1 MiB,
//! a compressible pub/sub delivery, and the deflate counters of /metrics.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one suite may run before it is killed (it takes a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

/// The gateway's message limit in these tests, as a flag and in bytes: the suites' too-big
/// check sends one byte more, so a small limit keeps that check cheap.
const MAX_MESSAGE_SIZE: &str = "2MiB";
const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Starts a gateway with two workers, permessage-deflate on or off, and runs `program ARGS...
/// --url http://ADDR --max-message-size N --compression on|off` from the workspace root,
/// killing it after [`SUITE_TIMEOUT`]. Panics, with everything the suite printed, unless it
/// exits 0.
fn run_suite(name: &str, program: &Path, args: &[PathBuf], compression: bool) {
    let gw = Gateway::start(&[
        "--workers",
        "2",
        "--max-message-size",
        MAX_MESSAGE_SIZE,
        "--compression",
        if compression { "true" } else { "false" },
    ]);
    let name = format!(
        "{name} (compression {})",
        if compression { "on" } else { "off" }
    );
    let url = format!("http://{}", gw.addr);
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .args(["--url", &url])
        .args(["--max-message-size", &MAX_MESSAGE_BYTES.to_string()])
        .args(["--compression", if compression { "on" } else { "off" }])
        .current_dir(root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let (status, output) = run_with_limit(command, SUITE_TIMEOUT);
    println!(
        "---- {name} suite ({:.1} s) ----\n{output}",
        started.elapsed().as_secs_f64()
    );
    match status {
        None => panic!(
            "the {name} suite did not finish within {SUITE_TIMEOUT:?} and was killed; its \
             output:\n{output}"
        ),
        Some(status) => assert!(
            status.success(),
            "the {name} suite failed ({status}); its output:\n{output}"
        ),
    }
    common::assert_suite_passed(&name, &output);
}

fn python_suite(compression: bool) {
    let root = root();
    let python = root.join("clients/python/.venv/bin/python");
    require_installed(&python, "the Python virtualenv (clients/python/.venv)");
    run_suite(
        "Python websockets",
        &python,
        &[root.join("clients/python/test_protocol.py")],
        compression,
    );
}

fn node_suite(compression: bool) {
    let root = root();
    require_installed(
        &root.join("clients/node/node_modules/ws/package.json"),
        "Node ws (clients/node/node_modules)",
    );
    run_suite(
        "Node ws",
        Path::new("node"),
        &[root.join("clients/node/test_protocol.mjs")],
        compression,
    );
}

#[test]
fn python_websockets_client_suite() {
    python_suite(true);
}

#[test]
fn python_websockets_client_suite_without_compression() {
    python_suite(false);
}

#[test]
fn node_ws_client_suite() {
    node_suite(true);
}

#[test]
fn node_ws_client_suite_without_compression() {
    node_suite(false);
}
