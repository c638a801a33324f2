//! Clients other than our own over TLS: the Python `websockets` library (clients/python) and
//! Node's `ws` (clients/node) speak wss:// and https:// to a real gateway started with
//! `--tls-cert`/`--tls-key`, its certificate (for `localhost` and 127.0.0.1) signed by a CA made
//! at test time (gateway/tests/tls_common). Each client trusts that CA and nothing else, and
//! checks hostname and address: the handshake (verified, and refused without the CA), echo of
//! text and binary, pub/sub between two clients both ways, messages of a few MB, https
//! endpoints and a clean close (clients/python/test_tls.py, clients/node/test_tls.mjs).
//! clients/setup.sh (run by ./run-tests.sh) installs the clients; when they are missing these
//! tests fail and say so.

mod common;
mod tls_common;

use common::{require_installed, root, run_with_limit};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tls_common::{TestPki, base64, path_str};

/// How long one suite may run before it is killed (it takes a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes a test CA and certificate, starts a TLS gateway with two workers, and runs `program
/// SCRIPT --url https://localhost:PORT --ca CA.pem` from the workspace root, killing it after
/// [`SUITE_TIMEOUT`]. Panics, with everything the suite printed and the gateway's log, unless
/// it exits 0 with its summary line.
fn run_suite(name: &str, program: &Path, script: &Path) {
    let pki = TestPki::new(&name.replace(' ', "-"));
    let gw = pki.start_gateway(&["--workers", "2"]);
    let url = format!("https://localhost:{}", gw.addr.port());
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .arg(script)
        .args(["--url", &url])
        .args(["--ca", path_str(&pki.ca())])
        .current_dir(root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let (status, output) = run_with_limit(command, SUITE_TIMEOUT);
    println!(
        "---- {name} over TLS ({:.1} s) ----\n{output}",
        started.elapsed().as_secs_f64()
    );
    match status {
        None => panic!(
            "the {name} TLS suite did not finish within {SUITE_TIMEOUT:?} and was killed; its \
             output:\n{output}\nthe gateway's log:\n{}",
            gw.log()
        ),
        Some(status) => assert!(
            status.success(),
            "the {name} TLS suite failed ({status}); its output:\n{output}\nthe gateway's \
             log:\n{}",
            gw.log()
        ),
    }
    common::assert_suite_passed(name, &output);
}

#[test]
fn python_websockets_over_tls() {
    let root = root();
    let python = root.join("clients/python/.venv/bin/python");
    require_installed(&python, "the Python virtualenv (clients/python/.venv)");
    run_suite(
        "Python websockets",
        &python,
        &root.join("clients/python/test_tls.py"),
    );
}

#[test]
fn node_ws_over_tls() {
    let root = root();
    require_installed(
        &root.join("clients/node/node_modules/ws/package.json"),
        "Node ws (clients/node/node_modules)",
    );
    run_suite(
        "Node ws",
        Path::new("node"),
        &root.join("clients/node/test_tls.mjs"),
    );
}

/// The helper that writes the SubjectPublicKeyInfo pin for Chromium (browser_tls.rs).
#[test]
fn base64_matches_rfc_4648() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want);
    }
}
