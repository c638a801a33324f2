//! Chromium over TLS: headless Debian Chromium (`/usr/bin/chromium`, driven by playwright-core
//! from `browser/`, as in browser.rs) speaks wss:// from a page and a dedicated Worker and loads
//! the dashboard over https:// from a gateway started with `--tls-cert`/`--tls-key`, its
//! certificate (for `localhost`) signed by a CA made at test time (gateway/tests/tls_common).
//!
//! Chromium is told to accept that certificate's key and nothing else:
//! `--ignore-certificate-errors-spki-list=<base64 SHA-256 of its SubjectPublicKeyInfo>`,
//! computed here from the rcgen key. A second TLS gateway, with a key of its own, must be
//! refused (page and socket): verification stays on. browser/tests/tls.mjs holds the checks;
//! `browser/setup.sh` installs Chromium and playwright-core (`./run-tests.sh` runs it first);
//! without them this test fails, never skips.

mod browser_common;
mod common;
mod tls_common;

use browser_common::{browser_dir, require_setup};
use common::run_with_limit;
use std::process::Command;
use std::time::{Duration, Instant};
use tls_common::TestPki;

#[test]
fn browser_wss_from_a_page_and_a_worker_and_the_dashboard_over_https() {
    require_setup();
    let pki = TestPki::new("browser");
    let other = TestPki::new("browser-untrusted");
    let gw = pki.start_gateway(&["--workers", "2"]);
    let untrusted = other.start_gateway(&["--workers", "1"]);
    let spki = pki.spki_sha256_base64();
    assert_ne!(spki, other.spki_sha256_base64(), "two keys");

    let dir = browser_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join("run.mjs"))
        .args(["--only", "tls"])
        .args(["--url", &format!("https://localhost:{}", gw.addr.port())])
        .args(["--spki", &spki])
        .args([
            "--untrusted",
            &format!("https://localhost:{}", untrusted.addr.port()),
        ])
        .current_dir(&dir);
    let started = Instant::now();
    let limit = Duration::from_secs(120);
    let (status, output) = run_with_limit(command, limit);
    println!(
        "{output}\n(browser TLS test: {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "node browser/run.mjs --only tls failed ({s}):\n{output}\nthe gateway's log:\n{}",
            gw.log()
        ),
        None => panic!(
            "node browser/run.mjs --only tls ran past {limit:?} and was killed:\n{output}\nthe \
             gateway's log:\n{}",
            gw.log()
        ),
    }
    assert!(output.contains("PASS tls"), "{output}");
}
