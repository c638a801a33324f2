//! `loadtest ramp`: fanout runs with more and more subscribers, a step at a time, until the
//! publish-to-receive p99 passes the bound or a run fails; the largest step within the bound is
//! the capacity.
//!
//! The report is its steps (a line each, `steps` in the JSON, p99 against subscribers in
//! `--report`); the summary's counts are totals over the steps, and its latency is that of the
//! capacity step, left out (`null` in the JSON, as the capacity) when no step was within the
//! bound.

use crate::common::Common;
use crate::fanout;
use crate::report::Report;
use crate::report::html::{Ramp, Step};
use crate::stats::Stats;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;
use wsgate_core::units::parse_duration;

/// The options of `loadtest ramp`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    fanout: fanout::Options,
    /// Subscribers added per step (the first step has this many).
    #[arg(long, default_value_t = 1000)]
    step: usize,
    /// Largest number of subscribers to try.
    #[arg(long, default_value_t = 16_000)]
    max_subscribers: usize,
    /// The latency bound: the largest step whose p99 stays under it is the capacity.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    slo_p99: Duration,
}

/// One step's outcome.
struct Stepped {
    stats: Stats,
    slow: u64,
    step: Step,
}

impl Stepped {
    /// Why a step failed, in a few words (empty when it did not).
    fn failures(&self) -> String {
        let s = &self.stats;
        let mut why = Vec::new();
        for (n, what) in [
            (s.lost, "lost"),
            (s.reordered, "reordered"),
            (s.mismatched, "mismatched"),
            (s.unexpected, "unexpected"),
            (self.slow, "closed as slow"),
            (s.errors.len() as u64, "connection errors"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        why.join(", ")
    }

    fn json(&self, secs: f64) -> serde_json::Value {
        let s = &self.stats;
        let h = &s.latency;
        json!({
            "subscribers": self.step.subscribers,
            "sent": s.sent,
            "received": s.received,
            "publishes_per_sec": s.sent as f64 / secs,
            "deliveries_per_sec": self.step.deliveries_per_sec,
            "latency_us": (!h.is_empty()).then(|| json!({
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p99.9": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean() as u64,
            })),
            "lost": s.lost,
            "reordered": s.reordered,
            "mismatched": s.mismatched,
            "unexpected": s.unexpected,
            "connection_errors": s.errors.len(),
            "slow_consumer_closes": self.slow,
            "ok": self.step.ok,
            "within_slo": self.step.within,
        })
    }
}

/// The most steps drawn in the percentile plot of `--report` (spread over the run).
const MAX_CURVES: usize = 8;

/// Runs `loadtest ramp`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        fanout: f,
        step,
        max_subscribers: max,
        slo_p99: slo,
    } = args;
    if step == 0 {
        return Err("--step must be at least 1".into());
    }
    if step > max {
        return Err(format!(
            "--step {step} is more than --max-subscribers {max}: no step to run"
        ));
    }
    let secs = common.duration.as_secs_f64();
    let mut steps: Vec<Stepped> = Vec::new();
    let mut totals = Stats::new();
    let mut n = step;
    while n <= max {
        eprintln!("ramp: {n} subscribers");
        let (stats, slow) = fanout::run_once(&common, &f, n, true)?;
        // without a delivery there is no p99, and no step within the bound
        let p99 = (!stats.latency.is_empty()).then(|| stats.latency.value_at_quantile(0.99));
        let ok = stats.correctness_failures() == 0 && slow == 0 && stats.errors.is_empty();
        let within = ok && p99.is_some_and(|p| Duration::from_micros(p) <= slo);
        totals.merge(&stats);
        steps.push(Stepped {
            step: Step {
                subscribers: n,
                deliveries_per_sec: stats.received as f64 / secs,
                p99_us: p99,
                ok,
                within,
            },
            stats,
            slow,
        });
        if !within {
            break;
        }
        n += step;
    }
    let failed = steps.iter().any(|s| !s.step.ok);
    let best = steps.iter().rev().find(|s| s.step.within);
    let capacity = best.map(|b| b.step.subscribers);
    let of = match steps.len() {
        1 => "1 step".to_string(),
        k => format!("{k} steps"),
    };
    let mut report = Report::new("ramp", &common, &totals, 0)
        .totals_of(of)
        .with("slo_p99_ms", slo.as_secs_f64() * 1e3)
        .with("publishers", f.publishers as f64)
        .with(
            "slow_consumer_closes",
            steps.iter().map(|s| s.slow).sum::<u64>() as f64,
        )
        .latency_from("latency at capacity", best.map(|b| &b.stats.latency))
        .with_json(
            "steps",
            steps
                .iter()
                .map(|s| s.json(secs))
                .collect::<Vec<_>>()
                .into(),
        );
    report = match capacity {
        Some(c) => report.with("capacity_subscribers", c as f64),
        None => {
            let first = &steps[0];
            let why = match first.step.p99_us {
                _ if !first.step.ok => format!("it failed: {}", first.failures()),
                None => "it delivered nothing".to_string(),
                Some(p) => format!("its p99 was {p} us"),
            };
            report
                .with_json("capacity_subscribers", serde_json::Value::Null)
                .row(format!(
                    "{:<28} none: the first step ({} subscribers) is not within the bound; {why}",
                    "capacity_subscribers", first.step.subscribers
                ))
        }
    };
    for s in &steps {
        let p99 = s.step.p99_us.map_or("none".into(), |p| format!("{p} us"));
        let verdict = if !s.step.ok {
            format!(", FAILED ({})", s.failures())
        } else if !s.step.within {
            ", over the bound".to_string()
        } else {
            String::new()
        };
        report = report.row(format!(
            "step {} subscribers: {:.0} deliveries/s, p99 {p99}{verdict}",
            s.step.subscribers, s.step.deliveries_per_sec
        ));
    }
    // the percentile plot: every step, or MAX_CURVES of them spread evenly, first and last in
    let k = steps.len();
    let picked: Vec<usize> = if k <= MAX_CURVES {
        (0..k).collect()
    } else {
        (0..MAX_CURVES)
            .map(|i| i * (k - 1) / (MAX_CURVES - 1))
            .collect()
    };
    for i in picked {
        let s = &steps[i];
        report = report.curve(
            format!("{} subscribers", s.step.subscribers),
            &s.stats.latency,
        );
    }
    report
        .ramp(Ramp {
            slo_us: slo.as_micros().min(u128::from(u64::MAX)) as u64,
            steps: steps.iter().map(|s| s.step.clone()).collect(),
            capacity,
        })
        .failed_if(failed)
        .print()
}
