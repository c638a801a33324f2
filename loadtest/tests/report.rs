//! `--report FILE.html` and summaries that show only what was measured, against a live gateway
//! (the `wsgate` binary on 127.0.0.1 port 0): an echo's page is one self-contained file with the
//! percentile plot, a per-second sample for each second run and the target escaped; a ramp's
//! summary shows no latency it did not measure, and its page plots p99 against subscribers.

use std::path::PathBuf;

mod common;
use common::{Server as Gateway, loadtest};

impl Gateway {
    fn start() -> Gateway {
        // the load generator is a trusted publisher: no per-connection publish rate
        common::gateway(&["--workers", "1", "--publish-rate", "0"])
    }
}

/// A fresh path for a report in this test run's scratch folder.
fn report_path(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "loadtest-report-{}-{name}.html",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Nothing in the page is fetched: no script, style sheet, image or link to elsewhere.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    assert!(html.trim_end().ends_with("</html>"));
    for bad in [
        "http://", "https://", "src=", "href=", "<script", "<link", "<img", "@import", "url(",
    ] {
        assert!(!html.contains(bad), "the page has {bad}");
    }
}

/// The cells of the rows of class `class`, as text.
fn rows(html: &str, class: &str) -> Vec<Vec<String>> {
    html.split(&format!("<tr class=\"{class}\">"))
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</tr>").expect("a closed row")];
            row.split("<td>")
                .skip(1)
                .map(|c| c.trim_end_matches("</td>").to_string())
                .collect()
        })
        .collect()
}

#[test]
fn an_echo_report_is_one_self_contained_page_of_plots() {
    let gw = Gateway::start();
    // a target with characters that must be escaped in HTML
    let url = format!("ws://{}/echo?run=1&note=<b>", gw.addr);
    let path = report_path("echo");
    let path_arg = path.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = loadtest(&[
        "echo",
        "--url",
        &url,
        "--duration",
        "2s",
        "--conns",
        "4",
        "--report",
        path_arg,
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let received = v["received"].as_u64().expect("received");
    assert!(received > 0, "{stdout}");
    assert!(stderr.contains("report written to"), "{stderr}");

    let html = std::fs::read_to_string(&path).expect("the report was written");
    assert_self_contained(&html);
    assert!(
        html.contains("echo?run=1&amp;note=&lt;b&gt;"),
        "the target, escaped"
    );
    assert!(!html.contains("<b>"), "the target unescaped");
    assert!(html.contains("<title>loadtest echo: ws://"), "a title");
    assert!(html.contains("--duration 2s --conns 4"), "the parameters");
    assert!(html.contains(" UTC</span>"), "the date");

    // the percentile plot, HdrHistogram-style: a line over 0%, 90%, 99%, ...
    let plot = &html[html
        .find("<svg class=\"percentiles\"")
        .expect("a percentile plot")..];
    let plot = &plot[..plot.find("</svg>").expect("closed")];
    assert!(plot.contains("<path class=\"line\""), "a curve");
    for tick in [">0%<", ">90%<", ">99%<"] {
        assert!(plot.contains(tick), "tick {tick}");
    }
    assert!(html.contains("<svg class=\"throughput\""));
    assert!(html.contains("<svg class=\"latency-per-second\""));

    // a sample per second run, which add up to every echo received
    let seconds = rows(&html, "second");
    assert!(
        (2..=3).contains(&seconds.len()),
        "{} samples for a 2 s run: {seconds:?}",
        seconds.len()
    );
    let counted: u64 = seconds
        .iter()
        .map(|r| r[2].parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(counted, received, "{seconds:?}");
    assert!(
        seconds
            .iter()
            .all(|r| r[4].ends_with(" us") || r[4].ends_with(" ms"))
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_ramp_summary_shows_only_what_it_measured() {
    let gw = Gateway::start();
    let url = format!("ws://{}", gw.addr);
    let ramp = |slo: &str, extra: &[&str]| {
        let mut args = vec![
            "ramp",
            "--url",
            &url,
            "--duration",
            "500ms",
            "--step",
            "5",
            "--max-subscribers",
            "10",
            "--rate",
            "50",
            "--slo-p99",
            slo,
        ];
        args.extend_from_slice(extra);
        loadtest(&args)
    };

    // no step can be within a 1 us p99: one step, and nothing made up beside it
    let (code, stdout, stderr) = ramp("1us", &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("step 5 subscribers:") && !stdout.contains("step 10 subscribers"),
        "{stdout}"
    );
    for line in stdout.lines() {
        assert!(
            !line.trim_end().ends_with(" 0 us"),
            "an unmeasured 0: {line}"
        );
        assert!(
            !line.contains("latency"),
            "no latency at a capacity: {line}"
        );
    }
    let capacity = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("capacity_subscribers"))
        .expect("a capacity line");
    assert!(capacity.contains("none"), "{capacity}");
    let sent = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("sent (1 step)"))
        .expect("the total sent");
    assert!(!sent.trim_end().ends_with(" 0"), "{sent}");

    let (code, stdout, stderr) = ramp("1us", &["--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(v["capacity_subscribers"].is_null(), "{stdout}");
    assert!(v["latency_us"].is_null(), "{stdout}");
    assert!(v["sent"].as_u64().unwrap() > 0 && v["received"].as_u64().unwrap() > 0);
    let steps = v["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{stdout}");
    assert!(
        steps[0]["latency_us"]["p99"].as_u64().unwrap() > 1,
        "{stdout}"
    );
    assert_eq!(steps[0]["within_slo"], false);

    // two steps within a generous bound: the report plots p99 against subscribers
    let path = report_path("ramp");
    let (code, stdout, stderr) = ramp("10s", &["--report", path.to_str().expect("UTF-8")]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("capacity_subscribers         10"),
        "{stdout}"
    );
    assert!(stdout.contains("received (2 steps)"), "{stdout}");
    let p99 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("latency at capacity p99 "))
        .expect("the p99 of the capacity step");
    assert!(!p99.trim_end().ends_with(" 0 us"), "{p99}");
    let html = std::fs::read_to_string(&path).expect("the report was written");
    assert_self_contained(&html);
    let plot = &html[html
        .find("<svg class=\"ramp\"")
        .expect("p99 against subscribers")..];
    let plot = &plot[..plot.find("</svg>").expect("closed")];
    assert!(plot.contains("bound: p99 10.00 s"), "the bound's line");
    assert!(plot.contains("capacity 10"));
    assert_eq!(plot.matches("<circle").count(), 2, "a point per step");
    let steps = rows(&html, "step");
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0][0].as_str(), steps[1][0].as_str()), ("5", "10"));
    // both steps' curves in the percentile plot
    assert!(html.contains("5 subscribers (") && html.contains("10 subscribers ("));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn conns_reports_no_message_counts() {
    let gw = Gateway::start();
    let url = format!("ws://{}", gw.addr);
    let args = [
        "conns",
        "--url",
        &url,
        "--count",
        "20",
        "--rate",
        "0",
        "--duration",
        "100ms",
    ];
    let (code, stdout, stderr) = loadtest(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("sent") && !stdout.contains("received"),
        "{stdout}"
    );
    assert!(stdout.contains("handshake latency p99"), "{stdout}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (code, stdout, _) = loadtest(&json_args);
    assert_eq!(code, 0, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(
        v.get("sent").is_none() && v.get("received").is_none(),
        "{stdout}"
    );
    assert!(v["latency_us"]["p50"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(v["opened"], 20.0);
}
