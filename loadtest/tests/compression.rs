//! `--compression` (permessage-deflate) on the client side, against a server that has it
//! without the gateway's support: the Node `ws` peer of benches/peers/ws.js on loopback, with
//! `--compression no-context` (the gateway's default answer: `server_no_context_takeover;
//! client_no_context_takeover`, messages from 128 bytes compressed), `--compression context`
//! (ws's defaults: both sides keep their context) or without compression (an offer declined).
//! Each run is a second or two; every byte of every message is checked by loadtest itself, so
//! a run that passes with compressed messages counted has inflated them right.
//!
//! The peer needs Node and the `ws` package: benches/peers/node_modules (`npm ci` there) or
//! clients/node/node_modules (clients/setup.sh, which ./run-tests.sh runs). Without them these
//! tests fail, saying so; they never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{Server as Peer, loadtest};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

impl Peer {
    /// benches/peers/ws.js on 127.0.0.1, port 0, with `args`.
    fn start(args: &[&str]) -> Peer {
        let root = workspace();
        let peers = root.join("benches/peers");
        let client_modules = root.join("clients/node/node_modules");
        assert!(
            peers.join("node_modules/ws/package.json").exists()
                || client_modules.join("ws/package.json").exists(),
            "the ws peer needs the ws package: run clients/setup.sh (./run-tests.sh does) or \
             npm ci in benches/peers"
        );
        let mut command = Command::new("node");
        command
            .arg(peers.join("ws.js"))
            .args(["--port", "0"])
            .args(args)
            // where require('ws') looks when benches/peers/node_modules is not installed
            .env("NODE_PATH", &client_modules)
            .stderr(Stdio::inherit());
        Peer::spawn(command, "ws.js (Node.js 18 or later is needed)")
    }
}

/// A run with `--json` that must pass with no correctness failure; its JSON.
fn clean_run(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = loadtest(&all);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
    for k in [
        "lost",
        "reordered",
        "mismatched",
        "unexpected",
        "connection_errors",
    ] {
        assert_eq!(v[k], 0, "{k} in {args:?}: {stdout}");
    }
    assert!(v["received"].as_u64().unwrap_or(0) > 0, "{stdout}");
    v
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing or not a number: {v}"))
}

#[test]
fn echo_inflates_and_checks_compressed_messages_of_a_no_context_server() {
    let peer = Peer::start(&["--compression", "no-context"]);
    let url = peer.url();
    for extra in [
        &["--payload", "json"][..],
        &["--text", "--payload", "json"],
        &[],
    ] {
        let mut args = vec![
            "echo",
            "--url",
            &url,
            "--compression",
            "--size",
            "1KiB",
            "--conns",
            "4",
            "--window",
            "2",
            "--duration",
            "1s",
        ];
        args.extend_from_slice(extra);
        let v = clean_run(&args);
        assert_eq!(
            v["compression"],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "{v}"
        );
        // every echo came back compressed and every message went out compressed
        assert_eq!(num(&v, "compressed_messages_received"), num(&v, "received"));
        assert_eq!(num(&v, "compressed_messages_sent"), num(&v, "sent"));
        assert_eq!(
            num(&v, "payload_bytes_received"),
            1024.0 * num(&v, "received")
        );
        // compressible payloads take fewer bytes on the wire than in the messages
        assert!(
            num(&v, "wire_bytes_received") < num(&v, "payload_bytes_received") / 2.0,
            "{v}"
        );
        assert!(num(&v, "wire_bytes_per_delivery") < 512.0, "{v}");
        assert!(num(&v, "compression_ratio") > 2.0, "{v}");
        assert!(
            num(&v, "wire_bytes_sent") < num(&v, "payload_bytes_sent"),
            "{v}"
        );
    }
    // under the server's 128 bytes, and under the client's: both ways plain, on a connection
    // that agreed to compress
    let v = clean_run(&[
        "echo",
        "--url",
        &url,
        "--compression",
        "--size",
        "100",
        "--conns",
        "2",
        "--duration",
        "1s",
    ]);
    assert_eq!(num(&v, "compressed_messages_received"), 0.0, "{v}");
    assert_eq!(num(&v, "compressed_messages_sent"), 0.0, "{v}");
    assert!(num(&v, "compression_ratio") < 1.0, "framing only: {v}");
}

#[test]
fn echo_keeps_the_context_of_a_server_that_keeps_its_own() {
    let peer = Peer::start(&["--compression", "context"]);
    let v = clean_run(&[
        "echo",
        "--url",
        &peer.url(),
        "--compression",
        "--size",
        "4KiB",
        "--payload",
        "json",
        "--conns",
        "3",
        "--duration",
        "1s",
    ]);
    assert_eq!(v["compression"], "permessage-deflate", "{v}");
    assert_eq!(num(&v, "compressed_messages_received"), num(&v, "received"));
    // each message refers back to the previous ones: far smaller than on its own
    assert!(num(&v, "compression_ratio") > 10.0, "{v}");
}

#[test]
fn fanout_subscribers_check_every_inflated_byte() {
    let peer = Peer::start(&["--compression", "no-context"]);
    let v = clean_run(&[
        "fanout",
        "--url",
        &peer.url(),
        "--compression",
        "--payload",
        "json",
        "--size",
        "1KiB",
        "--subscribers",
        "20",
        "--window",
        "4",
        "--duration",
        "1s",
    ]);
    // every subscriber's deliveries, and the publisher's own copies (its last ones may still
    // be on their way when the subscribers have all theirs)
    let compressed = num(&v, "compressed_messages_received");
    assert!(compressed >= num(&v, "received"), "{v}");
    assert!(
        compressed <= num(&v, "received") + num(&v, "published"),
        "{v}"
    );
    assert!(num(&v, "compression_ratio") > 2.0, "{v}");
    assert!(num(&v, "wire_bytes_per_delivery") < 512.0, "{v}");
}

#[test]
fn compression_against_a_server_that_declines_it_is_a_clear_error() {
    let peer = Peer::start(&[]);
    let url = peer.url();
    for scenario in ["echo", "fanout"] {
        let (code, stdout, stderr) =
            loadtest(&[scenario, "--url", &url, "--compression", "--duration", "1s"]);
        assert_eq!(code, 2, "{scenario}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{scenario} ran: {stdout}");
        assert!(
            stderr.contains("did not accept permessage-deflate") && stderr.contains(&peer.addr),
            "{scenario}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    // the same server without --compression: plain, and the wire bytes are still counted
    let v = clean_run(&["echo", "--url", &url, "--conns", "2", "--duration", "1s"]);
    assert_eq!(v["compression"], serde_json::Value::Null);
    assert_eq!(num(&v, "compressed_messages_received"), 0.0);
    // a 20-byte message in a 2-byte header
    assert_eq!(num(&v, "wire_bytes_per_delivery"), 22.0, "{v}");
}
