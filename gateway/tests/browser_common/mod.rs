//! What the browser tests share: where `browser/` is, and the check that Chromium, Node and
//! playwright-core are installed (a missing one fails the test with what to run, never skips).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `browser/` directory of the workspace.
pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("browser")
}

/// Panics with what to do when Chromium, Node or playwright-core is missing.
pub(crate) fn require_setup() {
    let chromium = std::env::var("WSGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = browser_dir();
    let mut missing = Vec::new();
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (Debian's chromium)"));
    }
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        missing.push("node (Node.js 20 or later)".into());
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(format!("{}/node_modules/playwright-core", dir.display()));
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run browser/setup.sh (./run-tests.sh does)",
        missing.join(", ")
    );
}
