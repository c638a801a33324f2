//! Every subcommand, briefly and with small counts, against a live gateway: the run must end
//! with exit code 0, report no correctness failure, and print the JSON it promises. A second
//! set checks the clear errors for a bad URL, an unreachable server and a server that is not a
//! WebSocket gateway.

use std::sync::{Mutex, MutexGuard};

mod common;
use common::{Server as Gateway, loadtest};

/// Held by the tests that load the machine: an attack (`abuse`) does not run beside the clean
/// runs, whose gateways share the same cores.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gateway {
    fn start(args: &[&str]) -> Gateway {
        common::gateway(args)
    }
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = loadtest(args);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
    assert_eq!(v["ok"], true);
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
fn every_subcommand_runs_clean_against_a_live_gateway() {
    let _heavy = heavy();
    let gw = Gateway::start(&[
        "--workers",
        "2",
        "--max-message-size",
        "16MiB",
        // the load generator is a trusted publisher: no per-connection publish rate
        "--publish-rate",
        "0",
    ]);
    let url = gw.url();
    let pid = gw.pid().to_string();
    let common = ["--url", url.as_str(), "--json"];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&common);
        json_run(&args)
    };

    let v = run(&["echo", "--duration", "1s", "--conns", "10", "--window", "4"]);
    assert!(v["received"].as_u64().unwrap() > 0);
    let v = run(&[
        "echo",
        "--duration",
        "1s",
        "--conns",
        "5",
        "--text",
        "--size",
        "100",
        "--threads",
        "2",
    ]);
    assert!(v["received"].as_u64().unwrap() > 0);

    let v = run(&[
        "fanout",
        "--duration",
        "1s",
        "--subscribers",
        "50",
        "--publishers",
        "2",
        "--topics",
        "2",
    ]);
    assert!(v["received"].as_u64().unwrap() > 0);
    assert_eq!(v["slow_consumer_closes"], 0.0);
    // publishers on another URL, connections from a range of local addresses
    let v = run(&[
        "fanout",
        "--duration",
        "1s",
        "--subscribers",
        "20",
        "--publish-url",
        &url,
        "--source-ips",
        "127.0.0.2-127.0.0.5",
    ]);
    assert!(v["received"].as_u64().unwrap() > 0);

    let v = run(&[
        "conns",
        "--duration",
        "200ms",
        "--count",
        "200",
        "--rate",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["opened"], 200.0);
    assert!(v["server_rss_per_conn_bytes"].as_f64().is_some());

    let v = run(&[
        "large",
        "--size",
        "4MiB",
        "--duration",
        "20s",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["received"], 1);
    let v = run(&[
        "large",
        "--size",
        "2MiB",
        "--count",
        "2",
        "--subscribers",
        "3",
        "--duration",
        "20s",
    ]);
    assert_eq!(v["received"], 6);

    let v = run(&[
        "soak",
        "--duration",
        "2s",
        "--conns",
        "20",
        "--topics",
        "5",
        "--threads",
        "2",
    ]);
    assert!(v["operations"].as_f64().unwrap() > 0.0);

    let v = run(&[
        "ramp",
        "--duration",
        "500ms",
        "--step",
        "20",
        "--max-subscribers",
        "40",
        "--rate",
        "50",
        "--slo-p99",
        "10s",
    ]);
    assert_eq!(v["capacity_subscribers"], 40.0);
}

/// A WebSocket echo server that corrupts one byte of every fifth message: loadtest must catch
/// it. Built on wsgate-core's handshake and frame codec, on a plain blocking socket.
fn corrupting_echo_server() -> std::net::SocketAddr {
    use bytes::BytesMut;
    use std::io::{Read, Write};
    use wsgate_core::frame::{DecoderConfig, Message, MessageDecoder, OpCode, OutFrame};
    use wsgate_core::handshake::{Limits, parse_request};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 65536];
                let head = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Ok(Some(req)) = parse_request(&buf, &Limits::default()) {
                        let up = req.validate_upgrade().expect("a valid upgrade");
                        break (req.head_len(), up.response(None, None));
                    }
                };
                let _ = s.write_all(&head.1);
                bytes::Buf::advance(&mut buf, head.0);
                let mut d = MessageDecoder::new(DecoderConfig::server());
                let mut count = 0u64;
                loop {
                    while let Ok(Some(m)) = d.decode(&mut buf) {
                        if let Message::Binary(b) | Message::Text(b) = m {
                            count += 1;
                            let mut v = b.to_vec();
                            if count.is_multiple_of(5) {
                                let last = v.len() - 1;
                                v[last] ^= 0x01;
                            }
                            let _ = s.write_all(&OutFrame::new(OpCode::Binary, v.into()).to_vec());
                        }
                    }
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            });
        }
    });
    addr
}

#[test]
fn a_server_that_corrupts_messages_fails_the_run() {
    let addr = corrupting_echo_server();
    let (code, stdout, _) = loadtest(&[
        "echo",
        "--url",
        &format!("ws://{addr}/echo"),
        "--conns",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(v["ok"], false);
    assert!(v["mismatched"].as_u64().unwrap() > 0, "{stdout}");
}

#[test]
fn bad_targets_get_a_clear_one_line_error() {
    let (code, _, stderr) = loadtest(&["echo", "--url", "http://127.0.0.1:1/"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--url") && stderr.contains("ws://"),
        "{stderr}"
    );

    let (code, _, stderr) = loadtest(&["echo", "--url", "ws://127.0.0.1:1", "--duration", "1s"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // an HTTP server that is not a gateway: a plain TCP listener answering 404
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (code, _, stderr) =
        loadtest(&["echo", "--url", &format!("ws://{addr}"), "--duration", "1s"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("404") && stderr.contains("gateway"),
        "{stderr}"
    );

    let (code, _, stderr) = loadtest(&["fanout", "--size", "3"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--size"), "{stderr}");
}

/// `abuse`, each kind briefly (1 s quiet, 1 s attack, 3 attackers) against a gateway with a
/// small outbox limit: the run completes (exit 0) and prints the JSON it promises. No number is
/// checked: what the gateway does under attack is the result, not a pass or fail.
#[test]
fn abuse_runs_each_kind_and_reports_its_fields() {
    let _heavy = heavy();
    let gw = Gateway::start(&["--workers", "2", "--outbox-limit", "256KiB"]);
    let url = gw.url();
    let pid = gw.pid().to_string();
    let number = |v: &serde_json::Value, k: &str| {
        assert!(v[k].is_number(), "{k} is not a number: {v}");
    };
    // a percentile is null when no echo completed in the phase (a starved neighbour)
    let number_or_null = |v: &serde_json::Value, k: &str| {
        assert!(
            v.get(k).is_some_and(|x| x.is_number() || x.is_null()),
            "{k} missing: {v}"
        );
    };
    for (kind, own) in [
        ("ping-flood", &["pings_written"][..]),
        (
            "slow-readers",
            &[
                "subscribers_opened",
                "published",
                "eof_without_close",
                "reset_without_close",
                "neither",
            ][..],
        ),
        ("publish-flood", &["published", "reader_received"][..]),
    ] {
        let args = [
            "abuse",
            "--kind",
            kind,
            "--attackers",
            "3",
            "--duration",
            "1s",
            "--server-pid",
            &pid,
            "--url",
            &url,
            "--json",
        ];
        let (code, stdout, stderr) = loadtest(&args);
        assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\n{stdout}\n{stderr}"));
        assert_eq!(v["scenario"], "abuse");
        assert_eq!(v["kind"], kind);
        assert_eq!(v["attackers"], 3);
        for k in [
            "duration_secs",
            "rss_before_bytes",
            "rss_peak_bytes",
            "rss_after_bytes",
            "rss_at_disconnect_bytes",
            "rss_growth_per_attacker_bytes",
            "attackers_opened",
            "attack_bytes_written",
        ]
        .iter()
        .chain(own)
        {
            number(&v, k);
        }
        for phase in ["quiet", "attacked"] {
            let p = &v["neighbour"][phase];
            number(p, "msgs_per_sec");
            number_or_null(p, "p50_ms");
            number_or_null(p, "p99_ms");
        }
        assert!(v["neighbour"]["per_sec"].is_array(), "{stdout}");
        number_or_null(&v, "p99_ratio");
        match kind {
            "slow-readers" => assert!(v["closes_by_code"].is_object(), "{stdout}"),
            "publish-flood" => {
                assert!(v["reader_closed"].is_boolean(), "{stdout}");
                assert!(v["reader_in_order"].is_boolean(), "{stdout}");
                number_or_null(&v, "reader_close_code");
                assert!(v["reader_per_sec"].is_array(), "{stdout}");
            }
            _ => {}
        }
    }
}
