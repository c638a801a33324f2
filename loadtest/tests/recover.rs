//! `loadtest recover` against the real `wsgate` binary with a history rule: subscribers that
//! drop every half second recover everything (0 lost, duplicated, reordered, mismatched; some
//! recoveries); with a history of 5 messages and slow reconnects the recoveries fail with
//! `too_old`, which `--allow-gaps` accepts (counted as `lost_after_gap`) and a plain run
//! refuses with a clear message; a topic without history is a clear error before any run.

mod common;
use common::Server as Gateway;

impl Gateway {
    /// Starts a gateway with the history rule `rule`.
    fn start(rule: &str) -> Gateway {
        common::gateway(&["--history", rule])
    }
}

/// Runs `loadtest recover` with `args` against `gw`: (exit code, stdout, stderr).
fn recover(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let url = gw.url();
    let mut all = vec!["recover", "--url", url.as_str()];
    all.extend_from_slice(args);
    common::loadtest(&all)
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
