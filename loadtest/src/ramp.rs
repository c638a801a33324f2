//! `loadtest ramp`: fanout runs with more and more subscribers, a step at a time, until the
//! publish-to-receive p99 passes the bound or a run fails; the largest step within the bound is
//! the capacity.

use crate::common::Common;
use crate::fanout;
use crate::report::Report;
use crate::stats::Stats;
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
    let mut best: Option<(usize, Stats)> = None;
    let mut rows = Vec::new();
    let mut failed = false;
    let mut n = step;
    while n <= max {
        eprintln!("ramp: {n} subscribers");
        let (stats, slow) = fanout::run_once(&common, &f, n, true)?;
        let p99 = stats.latency.value_at_quantile(0.99);
        let ok = stats.correctness_failures() == 0 && slow == 0 && stats.errors.is_empty();
        let within = ok && Duration::from_micros(p99) <= slo;
        rows.push((
            n,
            stats.received as f64 / common.duration.as_secs_f64(),
            p99,
            ok,
        ));
        failed |= !ok;
        if !within {
            break;
        }
        best = Some((n, stats));
        n += step;
    }
    let mut report = match &best {
        Some((n, stats)) => fanout::report("ramp", &common, &f, stats, 0, *n)
            .with("capacity_subscribers", *n as f64),
        None => Report::new("ramp", &common, &Stats::new(), 0).with("capacity_subscribers", 0.0),
    };
    report = report.with("slo_p99_ms", slo.as_secs_f64() * 1e3);
    for (n, rate, p99, ok) in &rows {
        report = report.row(format!(
            "step {n} subscribers: {rate:.0} deliveries/s, p99 {p99} us{}",
            if *ok { "" } else { ", FAILED" }
        ));
    }
    report.failed_if(failed).print()
}
