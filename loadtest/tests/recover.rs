//! `loadtest recover` against the real `wsgate` binary with a history rule: subscribers that
//! drop every half second recover everything (0 lost, duplicated, reordered, mismatched; some
//! recoveries); with a history of 5 messages and slow reconnects the recoveries fail with
//! `too_old`, which `--allow-gaps` accepts (counted as `lost_after_gap`) and a plain run
//! refuses with a clear message; a topic without history is a clear error before any run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The wsgate binary, built beside this package's binary by `cargo test --workspace`.
fn wsgate_bin() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let bin = loadtest.with_file_name("wsgate");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p wsgate)",
        bin.display()
    );
    bin
}

/// A gateway on 127.0.0.1 port 0, killed when dropped.
struct Gateway {
    child: Child,
    addr: String,
}

impl Gateway {
    /// Starts a gateway with the history rule `rule`.
    fn start(rule: &str) -> Gateway {
        let mut child = Command::new(wsgate_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--history",
                rule,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wsgate starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
            .to_string();
        Gateway { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loadtest recover` with `args` against `gw`: (exit code, stdout, stderr).
fn recover(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["recover", "--url", &gw.url()])
        .args(args)
        .output()
        .expect("loadtest runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .or_else(|| v[k].as_f64().map(|x| x as u64))
        .unwrap_or_else(|| panic!("no number {k} in {v:#}"))
}

#[test]
fn dropping_subscribers_recover_every_message_once_in_order() {
    let gw = Gateway::start(r#"topics = "chat.*", size = 1000, ttl = "5m""#);
    let (code, out, err) = recover(
        &gw,
        &[
            "--subscribers",
            "20",
            "--rate",
            "500",
            "--duration",
            "3s",
            "--drop-every",
            "500ms",
            "--json",
        ],
    );
    let v = json(&out, &err);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(v["ok"], true);
    for k in [
        "lost",
        "duplicated",
        "reordered",
        "mismatched",
        "offset_mismatched",
        "unexpected",
        "lost_after_gap",
        "recovered_false",
        "gaps",
        "publishes_refused",
        "subscribers_behind",
    ] {
        assert_eq!(n(&v, k), 0, "{k}: {v:#}");
    }
    // about 500 a second for 3 seconds, to each of the 20
    let published = n(&v, "published");
    assert!((1400..=1600).contains(&published), "{v:#}");
    assert_eq!(n(&v, "sent"), published);
    assert_eq!(n(&v, "deliveries_expected"), 20 * published, "{v:#}");
    assert_eq!(n(&v, "received"), 20 * published, "{v:#}");
    // each subscriber dropped about 6 times, and came back with everything
    assert!(n(&v, "drops") >= 40, "{v:#}");
    assert_eq!(n(&v, "recovered_true"), n(&v, "drops"), "{v:#}");
    assert!(n(&v, "recovered_messages") > 0, "{v:#}");
    assert!(v["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{v:#}");
    assert!(v["recovery_ms"]["p99"].as_f64().is_some(), "{v:#}");
}

#[test]
fn a_history_too_short_for_the_reconnects_fails_recoveries_with_too_old() {
    let gw = Gateway::start(r#"topics = "chat.*", size = 5, ttl = "5m""#);
    // 200 a second and 300 ms away (150 to 450): far more than 5 messages missed
    let args = [
        "--subscribers",
        "10",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--drop-every",
        "500ms",
        "--reconnect-after",
        "300ms",
        "--drop-with",
        "rst",
        "--json",
    ];
    let mut allowing = args.to_vec();
    allowing.push("--allow-gaps");
    let (code, out, err) = recover(&gw, &allowing);
    let v = json(&out, &err);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert!(
        v["recovered_false_reasons"]["too_old"].as_u64() > Some(0),
        "{v:#}"
    );
    assert_eq!(
        n(&v, "recovered_false"),
        n(&v, "drops") - n(&v, "recovered_true")
    );
    assert!(n(&v, "lost_after_gap") > 0, "{v:#}");
    for k in [
        "lost",
        "duplicated",
        "reordered",
        "mismatched",
        "offset_mismatched",
    ] {
        assert_eq!(n(&v, k), 0, "{k}: {v:#}");
    }
    assert_eq!(
        n(&v, "received") + n(&v, "lost_after_gap"),
        n(&v, "deliveries_expected"),
        "{v:#}"
    );

    // the same run without --allow-gaps fails, and says why
    let (code, out, err) = recover(&gw, &args);
    let v = json(&out, &err);
    assert_eq!(code, 1, "{v:#}\n{err}");
    assert_eq!(v["ok"], false);
    assert!(
        err.contains("recovered:false (too_old ") && err.contains("--allow-gaps"),
        "{err}"
    );
}

#[test]
fn a_topic_without_history_is_a_clear_error() {
    let gw = Gateway::start(r#"topics = "chat.*", size = 1000, ttl = "5m""#);
    let (code, out, err) = recover(&gw, &["--topic", "news", "--duration", "1s"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("keeps no history of 'news'") && err.contains("--history"),
        "{err}"
    );
}
