//! `loadtest`: drives a wsgate deployment and checks that nothing was lost or reordered.
//!
//! Subcommands: `echo`, `fanout`, `conns`, `large`, `soak` and `ramp`. Each shows progress on
//! stderr, prints a table on stdout (or JSON with `--json`), and exits 1 on any correctness
//! failure or when connection errors pass `--max-error-rate`, 2 on bad arguments or when the
//! target is not a reachable WebSocket gateway.
#![deny(missing_docs)]

mod client;
mod conns;
mod driver;
mod echo;
mod fanout;
mod large;
mod progress;
mod report;
mod soak;
mod stats;

use clap::{Args, Parser, Subcommand};
use client::Target;
use driver::{Plan, Scenario};
use progress::{Counters, Progress};
use report::Report;
use stats::Stats;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator and correctness checker for wsgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Clone)]
pub struct Common {
    /// The gateway: ws://HOST:PORT (the path is chosen by the subcommand unless given).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load generator threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Connection errors tolerated, as a fraction of connections.
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
    /// Local source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.40 (needed
    /// beyond about 28,000 connections to one address).
    #[arg(long, value_parser = parse_ip_range)]
    source_ips: Option<SourceIps>,
}

#[derive(Args, Clone)]
struct FanoutArgs {
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Topics (subscriber k takes topic k mod T, publisher j publishes to j mod T).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Payload bytes after the topic (at least 20).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second per publisher; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publishes in flight per publisher (sent and not yet seen back).
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Topic name (with -N suffixes for several topics).
    #[arg(long, default_value = "loadtest")]
    topic: String,
    /// Where the publishers connect, when not to --url: another node of a cluster, so that
    /// every delivery crosses the broker between nodes.
    #[arg(long, value_name = "URL")]
    publish_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Round trips through /echo: C connections, W messages in flight each, S bytes.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Message size in bytes (at least 16; 32 for text).
        #[arg(long, default_value_t = 20)]
        size: usize,
        /// Send text messages instead of binary.
        #[arg(long)]
        text: bool,
    },
    /// Publishers and subscribers through /ws, checking order and loss per subscriber.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
    },
    /// Many idle connections: connect rate, handshake latency, server memory per connection.
    Conns {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Connections opened per second (all threads together); 0 for no pacing.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// The gateway's process id, to read its memory from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// One very large message echoed or fanned out: throughput and the gateway's peak memory.
    Large {
        #[command(flatten)]
        common: Common,
        /// Message size (e.g. 64MiB, 256MiB).
        #[arg(long, default_value = "64MiB", value_parser = parse_size)]
        size: u64,
        /// Messages to send.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Fan out to this many subscribers through /ws instead of echoing through /echo.
        #[arg(long)]
        subscribers: Option<usize>,
        /// The gateway's process id, to read its peak memory from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Random subscribe/unsubscribe/publish churn over many topics, checking order and gaps.
    Soak {
        #[command(flatten)]
        common: Common,
        /// Connections (each subscribes, unsubscribes and publishes).
        #[arg(long, default_value_t = 200)]
        conns: usize,
        /// Topics.
        #[arg(long, default_value_t = 50)]
        topics: usize,
        /// Operations per second per connection.
        #[arg(long, default_value_t = 20.0)]
        ops: f64,
        /// Payload bytes of a publish (at least 20).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Adds subscribers step by step until the publish-to-receive p99 passes the bound.
    Ramp {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Subscribers added per step (the first step has this many).
        #[arg(long, default_value_t = 1000)]
        step: usize,
        /// Largest number of subscribers to try.
        #[arg(long, default_value_t = 16_000)]
        max_subscribers: usize,
        /// The latency bound: the largest step whose p99 stays under it is the capacity.
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        slo_p99: Duration,
    },
}

/// The local addresses of `--source-ips`, one per connection in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(Vec<IpAddr>);

fn parse_ip_range(s: &str) -> Result<SourceIps, String> {
    let bad = || format!("'{s}' is not an address range like 127.0.0.2-127.0.0.40");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: std::net::Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: std::net::Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 65_535 {
        return Err(bad());
    }
    Ok(SourceIps((a..=b).map(|ip| IpAddr::V4(ip.into())).collect()))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 65536, 64MiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" | "k" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(format!("'{s}' is not a size (examples: 65536, 64MiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// The target with the subcommand's default path unless the URL names one.
fn target(common: &Common, default_path: &str, query: Option<String>) -> Result<Target, String> {
    let t = Target::parse(&common.url)?;
    if t.path.len() > 1 {
        Ok(t)
    } else {
        Ok(t.with_path(default_path, query))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// Checks that this process may hold `wanted` sockets.
fn check_file_limit(wanted: usize) -> Result<(), String> {
    let limit = conns::raise_file_limit();
    if wanted as u64 + 64 > limit {
        return Err(format!(
            "{wanted} connections need {wanted} file descriptors, but this process may open {limit} \
             (its hard limit); run several loadtest processes or lower the count"
        ));
    }
    Ok(())
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Echo {
            common,
            conns,
            window,
            size,
            text,
        } => {
            let min = if text { 32 } else { 16 };
            if size < min {
                return Err(format!(
                    "--size must be at least {min} for {} echo",
                    if text { "text" } else { "binary" }
                ));
            }
            let plans = plans_to(&common, "/echo", conns)?;
            let epoch = Instant::now();
            let until = epoch + common.duration;
            let counters = Arc::new(Counters::default());
            let _bar = Progress::start("echo", common.duration, counters.clone());
            let results = on_threads(
                &plans,
                common.threads as usize,
                &counters,
                |t, mine| echo::Echo::new(mine.len(), size, window, !text, epoch, until, t),
                |e| e.stats.clone(),
            )?;
            drop(_bar);
            let stats = merge(results.iter());
            let rate = stats.received as f64 / common.duration.as_secs_f64();
            Report::new("echo", &common, &stats, conns)
                .with("connections", conns as f64)
                .with("messages_per_sec", rate)
                .print()
        }
        Command::Fanout { common, fanout } => {
            let (stats, slow) = run_fanout(&common, &fanout, fanout.subscribers, true)?;
            fanout_report("fanout", &common, &fanout, &stats, slow, fanout.subscribers).print()
        }
        Command::Conns {
            common,
            count,
            rate,
            server_pid,
        } => run_conns(common, count, rate, server_pid),
        Command::Large {
            common,
            size,
            count,
            subscribers,
            server_pid,
        } => run_large(common, size, count, subscribers, server_pid),
        Command::Soak {
            common,
            conns,
            topics,
            ops,
            size,
        } => run_soak(common, conns, topics, ops, size),
        Command::Ramp {
            common,
            fanout,
            step,
            max_subscribers,
            slo_p99,
        } => run_ramp(common, fanout, step, max_subscribers, slo_p99),
    }
}

fn fanout_report(
    name: &str,
    common: &Common,
    f: &FanoutArgs,
    stats: &Stats,
    slow: u64,
    subs: usize,
) -> Report {
    let secs = common.duration.as_secs_f64();
    Report::new(name, common, stats, subs + f.publishers)
        .with("subscribers", subs as f64)
        .with("publishers", f.publishers as f64)
        .with("published", stats.sent as f64)
        .with("publishes_per_sec", stats.sent as f64 / secs)
        .with("deliveries_per_sec", stats.received as f64 / secs)
        .with("slow_consumer_closes", slow as f64)
}

/// One fanout run with `subscribers` subscribers.
fn run_fanout(
    common: &Common,
    f: &FanoutArgs,
    subscribers: usize,
    progress: bool,
) -> Result<(Stats, u64), String> {
    if f.size < 20 {
        return Err("--size must be at least 20 (publisher, sequence number and timestamp)".into());
    }
    if f.topics == 0 || f.publishers == 0 {
        return Err("--topics and --publishers must be at least 1".into());
    }
    check_file_limit(subscribers + f.publishers)?;
    let names: Vec<String> = (0..f.topics)
        .map(|t| fanout::topic_name(&f.topic, t, f.topics))
        .collect();
    if names.iter().any(|n| n.is_empty() || n.len() > 255) {
        return Err("--topic must be 1 to 255 bytes".into());
    }
    let base = Target::parse(&common.url)?;
    client::preflight(&base.with_path("/ws", None), first_source(common))?;
    let publish_base = match &f.publish_url {
        Some(url) => {
            let t = Target::parse(url).map_err(|e| format!("--publish-url: {e}"))?;
            client::preflight(&t.with_path("/ws", None), first_source(common))
                .map_err(|e| format!("--publish-url: {e}"))?;
            t
        }
        None => base.clone(),
    };
    let mut plans = Vec::new();
    let mut roles = Vec::new();
    for k in 0..subscribers {
        let t = k % f.topics;
        plans.push(Plan {
            target: base.with_path("/ws", Some(format!("subscribe={}", names[t]))),
            source: None,
        });
        roles.push(fanout::Role::Subscriber {
            topic: t,
            expected: vec![0; f.publishers],
            slow: false,
            open: false,
        });
    }
    for j in 0..f.publishers {
        let t = j % f.topics;
        plans.push(Plan {
            target: publish_base.with_path("/ws", Some(format!("subscribe={}", names[t]))),
            source: None,
        });
        roles.push(fanout::Role::Publisher {
            id: j,
            topic: t,
            next: 0,
            back: 0,
            opened: None,
            done: false,
        });
    }
    let plans = with_sources(plans, &common.source_ips);
    let threads = common.threads as usize;
    let epoch = Instant::now();
    // publishing starts once every subscriber is connected, or after this long regardless
    let connect_time = Duration::from_secs(10) + Duration::from_millis(subscribers as u64);
    let progress_state = Arc::new(fanout::Progress::new(
        f.publishers,
        subscribers,
        epoch,
        common.duration,
        epoch + connect_time,
    ));
    // roles follow the plans' round-robin split over threads
    let mut per_thread: Vec<Option<Vec<fanout::Role>>> =
        (0..threads).map(|_| Some(Vec::new())).collect();
    for (i, r) in roles.into_iter().enumerate() {
        per_thread[i % threads].get_or_insert_with(Vec::new).push(r);
    }
    let per_thread = Mutex::new(per_thread);
    let counters = Arc::new(Counters::default());
    let bar = progress.then(|| Progress::start("fanout", common.duration, counters.clone()));
    let results = on_threads(
        &plans,
        threads,
        &counters,
        |t, _| {
            let roles = per_thread.lock().expect("not poisoned")[t]
                .take()
                .expect("taken once");
            fanout::Fanout::new(
                roles,
                names.clone(),
                f.publishers,
                f.size,
                f.window,
                f.rate,
                epoch,
                progress_state.clone(),
            )
        },
        |s| {
            s.finish();
            (s.stats.clone(), s.slow_closed)
        },
    )?;
    drop(bar);
    let stats = merge(results.iter().map(|(s, _)| s));
    Ok((stats, results.iter().map(|(_, slow)| slow).sum()))
}

fn run_conns(
    common: Common,
    count: usize,
    rate: u64,
    server_pid: Option<u32>,
) -> Result<ExitCode, String> {
    let plans = plans_to(&common, "/ws", count)?;
    let threads = common.threads as usize;
    let rss_before = server_pid.and_then(conns::rss_of);
    let per_thread_rate = rate.div_ceil(threads as u64);
    let hold = common.duration;
    let counters = Arc::new(Counters::default());
    let pace = if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(count as f64 / rate as f64)
    };
    let bar = Progress::start("conns", pace + hold, counters.clone());
    // every thread keeps its connections open until all threads are done, so memory is
    // measured with all of them open
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = split(&plans, threads)
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let (open_tx, release_rx, counters) =
                    (open_tx.clone(), release_rx.clone(), &counters);
                s.spawn(move || {
                    let mut sc = conns::Conns::new(mine.len(), hold);
                    let clients =
                        driver::drive(&mine, per_thread_rate, 1 + t as u64, counters, &mut sc);
                    let _ = open_tx.send(());
                    // hold the connections (in `clients`) until the memory was measured
                    let _ = release_rx.lock().map(|rx| rx.recv());
                    (
                        sc.stats,
                        sc.first,
                        sc.last_open,
                        clients.err().map(|e| e.to_string()),
                    )
                })
            })
            .collect();
        drop(open_tx);
        for _ in 0..threads {
            let _ = open_rx.recv();
        }
        let rss_after = server_pid.and_then(conns::rss_of);
        for _ in 0..threads {
            let _ = release_tx.send(());
        }
        let out: Result<Vec<_>, String> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a loadtest thread panicked".to_string())
            })
            .collect();
        out.map(|o| (o, rss_after))
    });
    drop(bar);
    let (results, rss_after) = results?;
    let mut stats = Stats::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for (s, f, l, err) in &results {
        stats.merge(s);
        first = [first, *f].into_iter().flatten().min();
        last = [last, *l].into_iter().flatten().max();
        if let Some(e) = err {
            return Err(format!("event loop failed: {e}"));
        }
    }
    let open_secs = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64().max(1e-6),
        _ => f64::INFINITY,
    };
    let mut report = Report::new("conns", &common, &stats, count)
        .with("connections", count as f64)
        .with("opened", stats.opened as f64)
        .with("connects_per_sec", stats.opened as f64 / open_secs);
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report = report
            .with("server_rss_before_bytes", b as f64)
            .with("server_rss_after_bytes", a as f64)
            .with(
                "server_rss_per_conn_bytes",
                a.saturating_sub(b) as f64 / stats.opened.max(1) as f64,
            );
    }
    report.print()
}

fn run_large(
    common: Common,
    size: u64,
    count: u64,
    subscribers: Option<usize>,
    server_pid: Option<u32>,
) -> Result<ExitCode, String> {
    if !(8..=(2 << 30)).contains(&size) {
        return Err("--size must be between 8 bytes and 2GiB".into());
    }
    let size = size as usize;
    let base = Target::parse(&common.url)?;
    let topic = "loadtest-large".to_string();
    let plans: Vec<Plan> = match subscribers {
        None => vec![Plan {
            target: target(&common, "/echo", None)?,
            source: None,
        }],
        Some(n) => {
            check_file_limit(n + 1)?;
            let mut p = vec![Plan {
                target: base.with_path("/ws", None),
                source: None,
            }];
            p.extend((0..n).map(|_| Plan {
                target: base.with_path("/ws", Some(format!("subscribe={topic}"))),
                source: None,
            }));
            p
        }
    };
    client::preflight(&plans[0].target, first_source(&common))?;
    let baseline = server_pid.and_then(conns::rss_of);
    let until = Instant::now() + common.duration;
    let counters = Counters::default();
    let mut scenario =
        large::Large::new(subscribers.map(|_| topic), size, count, plans.len(), until);
    driver::drive(&plans, 0, 7, &counters, &mut scenario).map_err(|e| e.to_string())?;
    scenario.finish();
    let peak = server_pid.and_then(conns::peak_rss_of);
    let receivers = subscribers.unwrap_or(1) as f64;
    let secs = match (scenario.started, scenario.finished_at) {
        (Some(s), Some(f)) => (f - s).as_secs_f64().max(1e-6),
        _ => f64::INFINITY,
    };
    let mut report = Report::new("large", &common, &scenario.stats, plans.len())
        .with("message_bytes", size as f64)
        .with("messages", count as f64)
        .with("receivers", receivers)
        .with("seconds", secs)
        .with(
            "mib_per_sec_delivered",
            size as f64 * count as f64 * receivers / secs / (1 << 20) as f64,
        );
    if let (Some(b), Some(p)) = (baseline, peak) {
        report = report
            .with("server_rss_before_bytes", b as f64)
            .with("server_peak_rss_bytes", p as f64)
            .with(
                "server_peak_over_message",
                p.saturating_sub(b) as f64 / size as f64,
            );
    }
    report.print()
}

fn run_soak(
    common: Common,
    conns: usize,
    topics: usize,
    ops: f64,
    size: usize,
) -> Result<ExitCode, String> {
    if topics == 0 || conns == 0 || size < 20 {
        return Err("--conns and --topics must be at least 1, --size at least 20".into());
    }
    let plans = plans_to(&common, "/ws", conns)?;
    let names: Vec<String> = (0..topics).map(|i| format!("soak-{i}")).collect();
    let published = Arc::new(soak::Published::new(conns, topics));
    let epoch = Instant::now();
    let until = epoch + common.duration;
    let counters = Arc::new(Counters::default());
    let bar = Progress::start("soak", common.duration, counters.clone());
    let threads = common.threads as usize;
    let results = on_threads(
        &plans,
        threads,
        &counters,
        |t, _| {
            let ids: Vec<usize> = (0..conns).filter(|i| i % threads == t).collect();
            soak::Soak::new(
                ids,
                names.clone(),
                ops,
                size,
                epoch,
                until,
                0x9e37_79b9 + t as u64,
                published.clone(),
            )
        },
        |s| {
            s.finish();
            (s.stats.clone(), s.operations)
        },
    )?;
    drop(bar);
    let stats = merge(results.iter().map(|(s, _)| s));
    let operations: u64 = results.iter().map(|(_, o)| o).sum();
    Report::new("soak", &common, &stats, conns)
        .with("connections", conns as f64)
        .with("topics", topics as f64)
        .with("operations", operations as f64)
        .with(
            "deliveries_per_sec",
            stats.received as f64 / common.duration.as_secs_f64(),
        )
        .print()
}

fn run_ramp(
    common: Common,
    f: FanoutArgs,
    step: usize,
    max: usize,
    slo: Duration,
) -> Result<ExitCode, String> {
    if step == 0 {
        return Err("--step must be at least 1".into());
    }
    let mut best: Option<(usize, Stats)> = None;
    let mut rows = Vec::new();
    let mut failed = false;
    let mut n = step;
    while n <= max {
        eprintln!("ramp: {n} subscribers");
        let (stats, slow) = run_fanout(&common, &f, n, true)?;
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
        Some((n, stats)) => {
            fanout_report("ramp", &common, &f, stats, 0, *n).with("capacity_subscribers", *n as f64)
        }
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

/// `count` connections to the subcommand's path, checked first: the file limit allows them and
/// the target answers a WebSocket upgrade.
fn plans_to(common: &Common, path: &str, count: usize) -> Result<Vec<Plan>, String> {
    check_file_limit(count)?;
    let t = target(common, path, None)?;
    client::preflight(&t, first_source(common))?;
    Ok(with_sources(
        vec![
            Plan {
                target: t,
                source: None
            };
            count
        ],
        &common.source_ips,
    ))
}

/// The first address of `--source-ips`, for the checks made before a run.
fn first_source(common: &Common) -> Option<IpAddr> {
    common
        .source_ips
        .as_ref()
        .and_then(|SourceIps(ips)| ips.first().copied())
}

fn with_sources(mut plans: Vec<Plan>, sources: &Option<SourceIps>) -> Vec<Plan> {
    if let Some(SourceIps(ips)) = sources {
        for (i, p) in plans.iter_mut().enumerate() {
            p.source = Some(ips[i % ips.len()]);
        }
    }
    plans
}

/// Splits plans over threads, round-robin: plan i goes to thread i mod threads.
fn split(plans: &[Plan], threads: usize) -> Vec<Vec<Plan>> {
    let mut out = vec![Vec::new(); threads];
    for (i, p) in plans.iter().enumerate() {
        out[i % threads].push(p.clone());
    }
    out
}

/// Runs one scenario per thread over its share of the plans; collects `result` of each.
fn on_threads<S: Scenario, R: Send>(
    plans: &[Plan],
    threads: usize,
    counters: &Counters,
    make: impl Fn(usize, &[Plan]) -> S + Sync,
    result: impl Fn(&mut S) -> R + Sync,
) -> Result<Vec<R>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = split(plans, threads)
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let (make, result) = (&make, &result);
                s.spawn(move || {
                    let mut scenario = make(t, &mine);
                    driver::drive(&mine, 0, 1 + t as u64, counters, &mut scenario)
                        .map_err(|e| e.to_string())?;
                    Ok::<R, String>(result(&mut scenario))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a loadtest thread panicked".to_string())?
            })
            .collect()
    })
}

fn merge<'a>(all: impl Iterator<Item = &'a Stats>) -> Stats {
    let mut s = Stats::new();
    for t in all {
        s.merge(t);
    }
    s
}
