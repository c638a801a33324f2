//! What the load generator's end-to-end tests share: the binaries they run, and a server
//! process read up to its `listening on ADDR` line and killed when dropped.
// each test crate uses a part of it
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A server process (wsgate, `loadtest tcp-echo-server`, a Node peer), killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// The address its `listening on ADDR` line gave.
    pub(crate) addr: String,
}

impl Server {
    /// Spawns `command` (its stdout piped; stderr as the command says) and reads its first
    /// line, which must be `listening on ADDR`.
    pub(crate) fn spawn(mut command: Command, what: &str) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a line");
        // `listening on ADDR`, or `listening on ADDR (tls)` from a gateway serving TLS
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{what} did not start: {line:?}"))
            .to_string();
        Server { child, addr }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://ADDR`.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wsgate binary, built beside this package's binary by `cargo test --workspace`.
pub(crate) fn wsgate_bin() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let bin = loadtest.with_file_name("wsgate");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p wsgate)",
        bin.display()
    );
    bin
}

/// A gateway on 127.0.0.1 port 0 (logging warnings only), with `args`.
pub(crate) fn gateway(args: &[&str]) -> Server {
    let mut command = Command::new(wsgate_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .stderr(Stdio::null());
    Server::spawn(command, "wsgate")
}

/// Runs loadtest with `args`: (exit code, stdout, stderr).
pub(crate) fn loadtest(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
