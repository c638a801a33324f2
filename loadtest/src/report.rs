//! The end of a run: a table on stdout (or JSON with `--json`) and the exit code.

use crate::common::Common;
use crate::stats::Stats;
use serde_json::json;
use std::process::ExitCode;

/// A run's result, ready to print.
pub(crate) struct Report {
    name: String,
    duration_secs: f64,
    threads: u32,
    json: bool,
    stats: Stats,
    extra: Vec<(String, f64)>,
    fields: Vec<(String, serde_json::Value)>,
    rows: Vec<String>,
    failed: bool,
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
            threads: common.threads,
            json: common.json,
            stats: stats.clone(),
            extra: Vec::new(),
            fields: Vec::new(),
            rows: Vec::new(),
            failed: stats.correctness_failures() > 0 || error_rate > common.max_error_rate,
        }
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

    /// Prints the report; exit code 1 when the run failed.
    pub(crate) fn print(self) -> Result<ExitCode, String> {
        let s = &self.stats;
        let pct = s.percentiles();
        if self.json {
            let mut v = json!({
                "scenario": self.name,
                "duration_secs": self.duration_secs,
                "threads": self.threads,
                "sent": s.sent,
                "received": s.received,
                "lost": s.lost,
                "reordered": s.reordered,
                "mismatched": s.mismatched,
                "unexpected": s.unexpected,
                "connection_errors": s.errors.len(),
                "errors": s.errors,
                "server_closes": s.closed_by_server,
                "latency_us": pct.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "details": self.rows,
                "ok": !self.failed,
            });
            for (k, x) in &self.extra {
                v[k.as_str()] = json!(x);
            }
            for (k, x) in self.fields {
                v[k.as_str()] = x;
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("serialisable")
            );
        } else {
            println!(
                "{}: {:.1}s, {} thread(s)",
                self.name, self.duration_secs, self.threads
            );
            for (k, x) in &self.extra {
                if x.fract() == 0.0 {
                    println!("  {k:<28} {x:.0}")
                } else {
                    println!("  {k:<28} {x:.2}")
                }
            }
            for line in &self.rows {
                println!("  {line}");
            }
            println!("  {:<28} {}", "sent", s.sent);
            println!("  {:<28} {}", "received", s.received);
            for (k, v) in pct {
                println!("  {:<28} {v} us", format!("latency {k}"));
            }
            println!(
                "  {:<28} lost {} / reordered {} / mismatched {} / unexpected {}",
                "correctness", s.lost, s.reordered, s.mismatched, s.unexpected
            );
            println!("  {:<28} {}", "connection errors", s.errors.len());
            for e in s.errors.iter().take(5) {
                println!("    {e}");
            }
            println!(
                "  {:<28} {}",
                "result",
                if self.failed { "FAILED" } else { "ok" }
            );
        }
        Ok(if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}
