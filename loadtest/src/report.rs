//! The end of a run: a table on stdout (or JSON with `--json`), the page of `--report
//! FILE.html` ([`html`]), and the exit code.
//!
//! A report shows what the run measured and nothing else: a run that sent no messages
//! ([`Report::without_messages`]) prints no message counts, and a latency without a sample is
//! `none measured` in the table and `null` in the JSON, never 0.

pub(crate) mod html;

use crate::common::Common;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// A run's result, ready to print.
pub(crate) struct Report {
    name: String,
    duration_secs: f64,
    duration_note: &'static str,
    threads: u32,
    json: bool,
    url: String,
    html: Option<PathBuf>,
    stats: Stats,
    /// Whether the run sent and received messages (`sent`, `received` are shown).
    messages: bool,
    /// What the totals add up, when more than one run (e.g. `all 3 steps`).
    totals_of: Option<String>,
    /// What the latency is of (`latency`, `handshake latency`, ...) and its histogram; `None`:
    /// no latency is reported.
    latency: Option<(String, Histogram<u64>)>,
    /// Extra histograms for the percentile plot (e.g. one per ramp step); none: the latency.
    curves: Vec<(String, Histogram<u64>)>,
    ramp: Option<html::Ramp>,
    extra: Vec<(String, f64)>,
    fields: Vec<(String, serde_json::Value)>,
    rows: Vec<String>,
    /// Lines of the table shown after the latency (other timings), not in the JSON's details.
    timings: Vec<String>,
    failed: bool,
    /// `--compression` was given.
    compression: bool,
    /// The run spoke TLS (`wss://`), and with session resumption.
    tls: Option<bool>,
}

impl Report {
    /// The result of scenario `name`, which used `conns` connections. It fails on any
    /// correctness failure or when connection errors pass `--max-error-rate`.
    pub(crate) fn new(name: &str, common: &Common, stats: &Stats, conns: usize) -> Report {
        let error_rate = if conns == 0 {
            0.0
        } else {
            stats.errors.len() as f64 / conns as f64
        };
        Report {
            name: name.to_string(),
            duration_secs: common.duration.as_secs_f64(),
            duration_note: "",
            threads: common.threads,
            json: common.json,
            url: common.url.clone(),
            html: common.report.clone(),
            stats: stats.clone(),
            messages: true,
            totals_of: None,
            latency: Some(("latency".into(), stats.latency.clone())),
            curves: Vec::new(),
            ramp: None,
            extra: Vec::new(),
            fields: Vec::new(),
            rows: Vec::new(),
            timings: Vec::new(),
            failed: stats.correctness_failures() > 0 || error_rate > common.max_error_rate,
            compression: common.compression,
            tls: common.tls.in_use().then_some(!common.tls.no_resumption),
        }
    }

    /// Whether the run spoke TLS: `tls` in the JSON (true or false) and, when it did, what the
    /// check before the run negotiated and whether sessions were resumed.
    fn with_tls(self) -> Report {
        let Some(resumption) = self.tls else {
            return self.with_json("tls", json!(false));
        };
        let negotiated = crate::tls::negotiated().unwrap_or("not negotiated");
        let resumption = if resumption { "on" } else { "off" };
        self.row(format!(
            "{:<28} {negotiated}, resumption {resumption}",
            "tls"
        ))
        .with_json("tls", json!(true))
        .with_json("tls_negotiated", json!(negotiated))
        .with_json("tls_resumption", json!(resumption == "on"))
    }

    /// Adds the percentiles of `h`, in microseconds: lines named `label` in the table, after
    /// the latency's, and an object under `key` in the JSON (`null` without a sample).
    pub(crate) fn with_percentiles(mut self, key: &str, label: &str, h: &Histogram<u64>) -> Report {
        if h.is_empty() {
            self.timings.push(format!("{label:<28} none measured"));
            return self.with_json(key, serde_json::Value::Null);
        }
        let ps = percentiles(h);
        let object: serde_json::Map<_, _> = ps
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        for (k, v) in ps {
            self.timings
                .push(format!("{:<28} {v} us", format!("{label} {k}")));
        }
        self.with_json(key, json!(object))
    }

    /// The bytes on the wire against the bytes of the messages, when the scenario counted
    /// them, and what permessage-deflate the server agreed to with `--compression`.
    ///
    /// `wire_bytes_per_delivery` is the bytes read from the sockets after the handshakes (frame
    /// headers included) over the data messages received; `compression_ratio` the bytes of
    /// those messages (inflated) over those wire bytes: above 1 when compression saved bytes,
    /// just under 1 without it (the frame headers).
    fn with_traffic(mut self) -> Report {
        let t = self.stats.traffic;
        let agreed = crate::deflate::agreed_before_run();
        if self.compression {
            let answer = agreed.map_or_else(|| "not agreed".to_string(), |a| a.to_string());
            self = self
                .row(format!("{:<28} {answer}", "compression"))
                .with_json("compression", json!(answer));
        } else {
            self = self.with_json("compression", serde_json::Value::Null);
        }
        if t.is_empty() {
            return self;
        }
        self = self
            .with("wire_bytes_received", t.wire_in as f64)
            .with("payload_bytes_received", t.payload_in as f64)
            .with("compressed_messages_received", t.compressed_in as f64);
        if t.messages_in > 0 {
            self = self.with(
                "wire_bytes_per_delivery",
                round2(t.wire_in as f64 / t.messages_in as f64),
            );
        }
        if t.wire_in > 0 {
            self = self.with(
                "compression_ratio",
                round2(t.payload_in as f64 / t.wire_in as f64),
            );
        }
        self.with("wire_bytes_sent", t.wire_out as f64)
            .with("payload_bytes_sent", t.payload_out as f64)
            .with("compressed_messages_sent", t.compressed_out as f64)
    }

    /// Adds a named number.
    pub(crate) fn with(mut self, key: &str, value: f64) -> Report {
        self.extra.push((key.to_string(), value));
        self
    }

    /// Adds a field of any JSON shape (an integer, a string, an object) to the JSON only; the
    /// table shows what it needs of it through [`Report::row`].
    pub(crate) fn with_json(mut self, key: &str, value: serde_json::Value) -> Report {
        self.fields.push((key.to_string(), value));
        self
    }

    /// Adds a line of detail.
    pub(crate) fn row(mut self, line: String) -> Report {
        self.rows.push(line);
        self
    }

    /// Marks the run failed when `failed`.
    pub(crate) fn failed_if(mut self, failed: bool) -> Report {
        self.failed |= failed;
        self
    }

    /// The run sent and received no messages (only opened connections): no `sent` and
    /// `received` in the table or the JSON.
    pub(crate) fn without_messages(mut self) -> Report {
        self.messages = false;
        self
    }

    /// Names what the latency measured (`handshake latency`); the JSON keeps `latency_us`.
    pub(crate) fn latency_named(mut self, label: &str) -> Report {
        if let Some((l, _)) = &mut self.latency {
            *l = label.to_string();
        }
        self
    }

    /// Reports `latency`, named `label`, instead of the run's (`None`: no latency at all, `null`
    /// in the JSON).
    pub(crate) fn latency_from(mut self, label: &str, latency: Option<&Histogram<u64>>) -> Report {
        self.latency = latency.map(|h| (label.to_string(), h.clone()));
        self
    }

    /// The counts are totals over several runs, described by `of` (`all 3 steps`), and the
    /// duration is that of each.
    pub(crate) fn totals_of(mut self, of: String) -> Report {
        self.totals_of = Some(of);
        self.duration_note = " each";
        self
    }

    /// Draws these histograms, named, in the percentile plot of `--report` instead of the
    /// latency.
    pub(crate) fn curve(mut self, name: String, h: &Histogram<u64>) -> Report {
        self.curves.push((name, h.clone()));
        self
    }

    /// A ramp's steps, plotted in `--report`.
    pub(crate) fn ramp(mut self, ramp: html::Ramp) -> Report {
        self.ramp = Some(ramp);
        self
    }

    /// The latency percentiles as JSON: an object, or `null` without a sample.
    fn latency_json(&self) -> serde_json::Value {
        match &self.latency {
            Some((_, h)) if !h.is_empty() => json!(
                percentiles(h)
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
            ),
            _ => serde_json::Value::Null,
        }
    }

    /// The table, line by line.
    fn table(&self) -> Vec<String> {
        let s = &self.stats;
        let mut out = vec![format!(
            "{}: {:.1}s{}, {} thread(s)",
            self.name, self.duration_secs, self.duration_note, self.threads
        )];
        for (k, x) in &self.extra {
            if x.fract() == 0.0 {
                out.push(format!("  {k:<28} {x:.0}"));
            } else {
                out.push(format!("  {k:<28} {x:.2}"));
            }
        }
        for line in &self.rows {
            out.push(format!("  {line}"));
        }
        let of = |k: &str| match &self.totals_of {
            Some(of) => format!("{k} ({of})"),
            None => k.to_string(),
        };
        if self.messages {
            out.push(format!("  {:<28} {}", of("sent"), s.sent));
            out.push(format!("  {:<28} {}", of("received"), s.received));
        }
        match &self.latency {
            Some((label, h)) if h.is_empty() => {
                out.push(format!("  {label:<28} none measured"));
            }
            Some((label, h)) => {
                for (k, v) in percentiles(h) {
                    out.push(format!("  {:<28} {v} us", format!("{label} {k}")));
                }
            }
            None => {}
        }
        for line in &self.timings {
            out.push(format!("  {line}"));
        }
        out.push(format!(
            "  {:<28} lost {} / reordered {} / mismatched {} / unexpected {}",
            of("correctness"),
            s.lost,
            s.reordered,
            s.mismatched,
            s.unexpected
        ));
        out.push(format!(
            "  {:<28} {}",
            of("connection errors"),
            s.errors.len()
        ));
        for e in s.errors.iter().take(5) {
            out.push(format!("    {e}"));
        }
        out.push(format!(
            "  {:<28} {}",
            "result",
            if self.failed { "FAILED" } else { "ok" }
        ));
        out
    }

    /// What the per-second series counts, by scenario.
    fn series_unit(&self) -> &'static str {
        match self.name.as_str() {
            "echo" => "echoes/s",
            "fanout" | "ramp" | "soak" => "deliveries/s",
            "conns" => "handshakes/s",
            "abuse" => "neighbour echoes/s",
            _ => "messages/s",
        }
    }

    /// Writes the `--report` page to `path`.
    fn write_html(&self, path: &PathBuf, table: &[String]) -> Result<(), String> {
        let latency_of = match self.name.as_str() {
            "echo" | "abuse" => "Round-trip",
            "fanout" | "ramp" | "soak" => "Publish-to-receive",
            "large" => "Send-to-receive",
            "conns" => "Handshake",
            _ => "Message",
        };
        let curves: Vec<(String, &Histogram<u64>)> = if self.curves.is_empty() {
            self.latency
                .iter()
                .map(|(_, h)| (self.name.clone(), h))
                .collect()
        } else {
            self.curves.iter().map(|(n, h)| (n.clone(), h)).collect()
        };
        let series = self.stats.timeline.series();
        let command = html::command_line();
        let date = html::utc_now();
        let page = html::Page {
            scenario: &self.name,
            target: &self.url,
            command: &command,
            date: &date,
            failed: self.failed,
            summary: table,
            curves,
            latency_of,
            series: &series,
            series_unit: self.series_unit(),
            ramp: self.ramp.as_ref(),
        };
        std::fs::write(path, html::render(&page))
            .map_err(|e| format!("--report {}: {e}", path.display()))
    }

    /// Prints the report (and writes the `--report` page); exit code 1 when the run failed.
    pub(crate) fn print(self) -> Result<ExitCode, String> {
        self.with_traffic().with_tls().print_as_is()
    }

    fn print_as_is(self) -> Result<ExitCode, String> {
        let s = &self.stats;
        let table = self.table();
        if self.json {
            let mut v = json!({
                "scenario": self.name,
                "duration_secs": self.duration_secs,
                "threads": self.threads,
                "lost": s.lost,
                "reordered": s.reordered,
                "mismatched": s.mismatched,
                "unexpected": s.unexpected,
                "connection_errors": s.errors.len(),
                "errors": s.errors,
                "server_closes": s.closed_by_server,
                "latency_us": self.latency_json(),
                "details": self.rows,
                "ok": !self.failed,
            });
            if self.messages {
                v["sent"] = json!(s.sent);
                v["received"] = json!(s.received);
            }
            for (k, x) in &self.extra {
                v[k.as_str()] = json!(x);
            }
            for (k, x) in &self.fields {
                v[k.as_str()] = x.clone();
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("serialisable")
            );
        } else {
            for line in &table {
                println!("{line}");
            }
        }
        if let Some(path) = &self.html {
            self.write_html(path, &table)?;
            eprintln!("loadtest: report written to {}", path.display());
        }
        Ok(if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// `x` to two decimals (a ratio shown in the table as it is in the JSON).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The latency percentiles reported, in microseconds.
fn percentiles(h: &Histogram<u64>) -> [(&'static str, u64); 6] {
    [
        ("p50", h.value_at_quantile(0.5)),
        ("p90", h.value_at_quantile(0.9)),
        ("p99", h.value_at_quantile(0.99)),
        ("p99.9", h.value_at_quantile(0.999)),
        ("max", h.max()),
        ("mean", h.mean() as u64),
    ]
}
