//! The raw TCP baseline end to end: `loadtest tcp-echo-server` started as a process, then
//! `loadtest echo --raw-tcp` and `loadtest large --raw-tcp` against it must pass with every byte
//! accounted for, a server that flips one byte must fail the run, and the flag combinations
//! that make no sense without WebSocket framing are refused before anything runs.

use std::process::{Command, Stdio};

mod common;
use common::{Server as EchoServer, loadtest};

impl EchoServer {
    fn start(args: &[&str]) -> EchoServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
        command
            .arg("tcp-echo-server")
            .args(args)
            .stderr(Stdio::null());
        EchoServer::spawn(command, "tcp-echo-server")
    }
}

/// Runs loadtest with `--json`; asserts it passed with no correctness failure.
fn json_run(args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, stdout, stderr) = loadtest(&args);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
    assert_eq!(v["ok"], true, "{stdout}");
    assert_eq!(v["transport"], "raw-tcp", "{stdout}");
    for k in [
        "lost",
        "reordered",
        "mismatched",
        "unexpected",
        "connection_errors",
    ] {
        assert_eq!(v[k], 0, "{k} in {args:?}: {stdout}");
    }
    v
}

#[test]
fn raw_tcp_echo_and_large_pass_against_the_tcp_echo_server() {
    // a small buffer, so that messages are cut across reads and writes
    let server = EchoServer::start(&["--buffer", "4KiB"]);
    let url = server.url();
    let pid = server.pid().to_string();

    let v = json_run(&[
        "echo",
        "--raw-tcp",
        "--url",
        &url,
        "--duration",
        "1s",
        "--conns",
        "10",
        "--window",
        "4",
        "--size",
        "20",
    ]);
    let (sent, received) = (v["sent"].as_u64().unwrap(), v["received"].as_u64().unwrap());
    assert!(received > 0, "{v}");
    assert_eq!(sent, received, "every message came back: {v}");
    assert_eq!(v["connections"], 10.0);
    assert!(v["latency_us"]["p99"].as_u64().is_some(), "{v}");

    // messages larger than the server's buffer and the client's reads, on two threads
    let v = json_run(&[
        "echo",
        "--raw-tcp",
        "--url",
        &url,
        "--duration",
        "1s",
        "--conns",
        "4",
        "--window",
        "16",
        "--size",
        "300KiB",
        "--threads",
        "2",
    ]);
    assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["sent"], v["received"], "{v}");

    let v = json_run(&[
        "large",
        "--raw-tcp",
        "--url",
        &url,
        "--size",
        "8MiB",
        "--duration",
        "20s",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["sent"], 1);
    assert_eq!(v["received"], 1);
    assert_eq!(v["message_bytes"], (8u64 << 20) as f64);
    assert!(v["mib_per_sec_delivered"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_peak_rss_bytes"].as_f64().unwrap() > 0.0, "{v}");
    // the server holds its 4 KiB buffer, not the message
    assert!(v["server_peak_over_message"].as_f64().unwrap() < 0.5, "{v}");

    let v = json_run(&[
        "large",
        "--raw-tcp",
        "--url",
        &url,
        "--size",
        "1000003",
        "--count",
        "3",
        "--duration",
        "20s",
    ]);
    assert_eq!(v["received"], 3, "{v}");
}

/// A TCP server on a thread that echoes every byte but the 100th of each connection, which it
/// flips.
fn corrupting_echo() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let (mut buf, mut seen) = ([0u8; 4096], 0usize);
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if (seen..seen + n).contains(&99) {
                        buf[99 - seen] ^= 0x20;
                    }
                    seen += n;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("ws://{addr}")
}

#[test]
fn a_raw_tcp_run_catches_a_wrong_byte_and_needs_a_server() {
    let url = corrupting_echo();
    let (code, stdout, stderr) = loadtest(&[
        "echo",
        "--raw-tcp",
        "--url",
        &url,
        "--duration",
        "1s",
        "--conns",
        "2",
        "--json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["mismatched"], 2, "one message per connection: {v}");
    let (code, stdout, stderr) = loadtest(&[
        "large",
        "--raw-tcp",
        "--url",
        &url,
        "--size",
        "1MiB",
        "--json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        (v["mismatched"].as_u64(), v["received"].as_u64()),
        (Some(1), Some(0))
    );

    // a port nobody listens on: refused before the run, exit 2
    let (code, _, stderr) = loadtest(&[
        "echo",
        "--raw-tcp",
        "--url",
        "ws://127.0.0.1:1",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn flags_that_need_websocket_framing_are_refused_with_raw_tcp() {
    for args in [
        &["echo", "--raw-tcp", "--text"][..],
        &["large", "--raw-tcp", "--subscribers", "3"][..],
        &["echo", "--raw-tcp", "--compression"][..],
        &["echo", "--raw-tcp", "--payload", "json"][..],
        &["large", "--raw-tcp", "--compression"][..],
    ] {
        let (code, stdout, stderr) = loadtest(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("cannot be used with"),
            "{args:?} says why: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?} ran: {stdout}");
    }
    let (code, _, stderr) = loadtest(&["tcp-echo-server", "--buffer", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--buffer"), "{stderr}");
}
