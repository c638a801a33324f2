//! `loadtest`: drives a wsgate deployment and checks that nothing was lost or reordered.
//!
//! Subcommands: `echo` (round trips through `/echo`), `fanout` (publishers and subscribers
//! through `/ws`) and `conns` (many idle connections, memory per connection). Each prints a
//! table on stdout (or JSON with `--json`) and exits non-zero on any correctness failure or
//! when connection errors pass `--max-error-rate`.
#![deny(missing_docs)]

mod client;
mod conns;
mod driver;
mod echo;
mod fanout;
mod stats;

use clap::{Args, Parser, Subcommand};
use client::Target;
use driver::Plan;
use serde_json::json;
use stats::Stats;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
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

#[derive(Args, Clone)]
struct Common {
    /// The gateway: ws://HOST:PORT (the path is chosen by the subcommand unless given).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// How long to send for.
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
    /// Local source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.40.
    #[arg(long, value_parser = parse_ip_range)]
    source_ips: Option<Vec<IpAddr>>,
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
}

fn parse_ip_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let bad = || format!("'{s}' is not an address range like 127.0.0.2-127.0.0.40");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: std::net::Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: std::net::Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 65_535 {
        return Err(bad());
    }
    Ok((a..=b).map(|ip| IpAddr::V4(ip.into())).collect())
}

fn target(common: &Common, default_path: &str, query: Option<String>) -> Result<Target, String> {
    let t = Target::parse(&common.url)?;
    if t.path.len() > 1 {
        Ok(t)
    } else {
        Ok(t.with_path(default_path, query))
    }
}

/// Splits connection plans over threads, round-robin.
fn split<T: Clone>(items: &[T], threads: usize) -> Vec<Vec<(usize, T)>> {
    let mut out = vec![Vec::new(); threads];
    for (i, item) in items.iter().enumerate() {
        out[i % threads].push((i, item.clone()));
    }
    out
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

fn run(command: Command) -> Result<ExitCode, String> {
    let limit = conns::raise_file_limit();
    let wanted = match &command {
        Command::Echo { conns, .. } => *conns,
        Command::Fanout {
            subscribers,
            publishers,
            ..
        } => subscribers + publishers,
        Command::Conns { count, .. } => *count,
    };
    if wanted as u64 + 64 > limit {
        return Err(format!(
            "{wanted} connections need {wanted} file descriptors, but this process may open {limit} \
             (the hard limit here); run several loadtest processes or lower the count"
        ));
    }
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
            let plan = Plan {
                target: target(&common, "/echo", None)?,
                source: None,
            };
            let plans = with_sources(vec![plan; conns], &common.source_ips);
            let epoch = Instant::now();
            let until = epoch + common.duration;
            let results = on_threads(
                &plans,
                common.threads as usize,
                |t, mine| echo::Echo::new(mine, size, window, !text, epoch, until, t),
                |e| e.stats.clone(),
            )?;
            let stats = merge(&results);
            let elapsed = common.duration.as_secs_f64();
            let rate = stats.received as f64 / elapsed;
            report(
                &common,
                "echo",
                &stats,
                &[("connections", conns as f64), ("messages_per_sec", rate)],
                conns,
            )
        }
        Command::Fanout {
            common,
            subscribers,
            publishers,
            topics,
            size,
            rate,
            window,
            topic,
        } => {
            if size < 20 {
                return Err(
                    "--size must be at least 20 (publisher, sequence number and timestamp)".into(),
                );
            }
            if topics == 0 || publishers == 0 {
                return Err("--topics and --publishers must be at least 1".into());
            }
            let names: Vec<String> = (0..topics)
                .map(|t| fanout::topic_name(&topic, t, topics))
                .collect();
            if names.iter().any(|n| n.is_empty() || n.len() > 255) {
                return Err("--topic must be 1 to 255 bytes".into());
            }
            let base = Target::parse(&common.url)?;
            // publishers first, so subscribers that connect later still see sequence 0 onwards
            // (subscribers check from the first message they see from each publisher)
            let mut plans = Vec::new();
            let mut roles = Vec::new();
            for k in 0..subscribers {
                let t = k % topics;
                plans.push(Plan {
                    target: base.with_path("/ws", Some(format!("subscribe={}", names[t]))),
                    source: None,
                });
                roles.push(fanout::Role::Subscriber {
                    topic: t,
                    expected: vec![0; publishers],
                    slow: false,
                });
            }
            for j in 0..publishers {
                let t = j % topics;
                plans.push(Plan {
                    target: base.with_path("/ws", Some(format!("subscribe={}", names[t]))),
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
            let progress = Arc::new(fanout::Progress::new(publishers));
            let epoch = Instant::now();
            // subscribers need to be connected before publishing starts: give connecting a head start
            let connect_time = Duration::from_millis(500 + subscribers as u64 / 5);
            let until = epoch + connect_time + common.duration;
            let threads = common.threads as usize;
            // roles follow the plans' round-robin split over threads
            let mut per_thread: Vec<Option<Vec<fanout::Role>>> =
                (0..threads).map(|_| Some(Vec::new())).collect();
            for (i, r) in roles.into_iter().enumerate() {
                per_thread[i % threads].get_or_insert_with(Vec::new).push(r);
            }
            let roles_cell = std::sync::Mutex::new(per_thread);
            let results = on_threads(
                &plans,
                threads,
                |t, _mine| {
                    let roles = roles_cell.lock().expect("not poisoned")[t]
                        .take()
                        .expect("taken once");
                    fanout::Fanout::new(
                        roles,
                        names.clone(),
                        publishers,
                        size,
                        window,
                        rate,
                        epoch,
                        until,
                        progress.clone(),
                    )
                },
                |f| {
                    f.finish();
                    (f.stats.clone(), f.slow_closed)
                },
            )?;
            let mut stats = Stats::new();
            let mut slow = 0;
            for (s, sl) in &results {
                stats.merge(s);
                slow += sl;
            }
            let elapsed = common.duration.as_secs_f64();
            report(
                &common,
                "fanout",
                &stats,
                &[
                    ("subscribers", subscribers as f64),
                    ("publishers", publishers as f64),
                    ("published", stats.sent as f64),
                    ("publishes_per_sec", stats.sent as f64 / elapsed),
                    ("deliveries_per_sec", stats.received as f64 / elapsed),
                    ("slow_consumer_closes", slow as f64),
                ],
                subscribers + publishers,
            )
        }
        Command::Conns {
            common,
            count,
            rate,
            server_pid,
        } => {
            let plan = Plan {
                target: target(&common, "/ws", None)?,
                source: None,
            };
            let plans = with_sources(vec![plan; count], &common.source_ips);
            let threads = common.threads as usize;
            let rss_before = server_pid.and_then(conns::rss_of);
            let per_thread_rate = rate.div_ceil(threads as u64);
            let (tx, rx) = std::sync::mpsc::channel();
            let hold = common.duration;
            let results = std::thread::scope(|s| {
                let handles: Vec<_> = split(&plans, threads)
                    .into_iter()
                    .enumerate()
                    .map(|(t, mine)| {
                        let tx = tx.clone();
                        s.spawn(move || {
                            let plans: Vec<Plan> = mine.into_iter().map(|(_, p)| p).collect();
                            let mut sc = conns::Conns::new(plans.len(), hold);
                            let clients =
                                driver::drive(&plans, per_thread_rate, 1 + t as u64, &mut sc);
                            // keep the connections open until the main thread has measured
                            let _ = tx.send(());
                            (sc.stats, sc.first, sc.last_open, clients)
                        })
                    })
                    .collect();
                drop(tx);
                let mut out = Vec::new();
                for h in handles {
                    out.push(
                        h.join()
                            .map_err(|_| "a loadtest thread panicked".to_string())?,
                    );
                }
                for _ in rx.iter() {}
                Ok::<_, String>(out)
            })?;
            // every thread's clients are still open here
            let rss_after = server_pid.and_then(conns::rss_of);
            let mut stats = Stats::new();
            let (mut first, mut last) = (None::<Instant>, None::<Instant>);
            for (s, f, l, clients) in &results {
                stats.merge(s);
                first = match (first, *f) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                last = match (last, *l) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if let Err(e) = clients {
                    return Err(format!("event loop failed: {e}"));
                }
            }
            let open_secs = match (first, last) {
                (Some(f), Some(l)) => (l - f).as_secs_f64().max(1e-6),
                _ => 0.0,
            };
            let mut extra = vec![
                ("connections", count as f64),
                ("opened", stats.opened as f64),
                ("connects_per_sec", stats.opened as f64 / open_secs),
            ];
            if let (Some(b), Some(a)) = (rss_before, rss_after) {
                extra.push(("server_rss_before_bytes", b as f64));
                extra.push(("server_rss_after_bytes", a as f64));
                extra.push((
                    "server_rss_per_conn_bytes",
                    a.saturating_sub(b) as f64 / stats.opened.max(1) as f64,
                ));
            }
            drop(results);
            report(&common, "conns", &stats, &extra, count)
        }
    }
}

fn with_sources(mut plans: Vec<Plan>, sources: &Option<Vec<IpAddr>>) -> Vec<Plan> {
    if let Some(ips) = sources {
        for (i, p) in plans.iter_mut().enumerate() {
            p.source = Some(ips[i % ips.len()]);
        }
    }
    plans
}

/// Runs one scenario per thread over its share of the plans; collects `result` of each.
fn on_threads<S: driver::Scenario, R: Send>(
    plans: &[Plan],
    threads: usize,
    make: impl Fn(usize, usize) -> S + Sync,
    result: impl Fn(&mut S) -> R + Sync,
) -> Result<Vec<R>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = split(plans, threads)
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let (make, result) = (&make, &result);
                s.spawn(move || {
                    let plans: Vec<Plan> = mine.into_iter().map(|(_, p)| p).collect();
                    let mut scenario = make(t, plans.len());
                    driver::drive(&plans, 0, 1 + t as u64, &mut scenario)
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

fn merge(all: &[Stats]) -> Stats {
    let mut s = Stats::new();
    for t in all {
        s.merge(t);
    }
    s
}

/// Prints the result and decides the exit code.
fn report(
    common: &Common,
    name: &str,
    stats: &Stats,
    extra: &[(&str, f64)],
    conns: usize,
) -> Result<ExitCode, String> {
    let errors = stats.errors.len() as f64;
    let error_rate = if conns == 0 {
        0.0
    } else {
        errors / conns as f64
    };
    let failed = stats.correctness_failures() > 0 || error_rate > common.max_error_rate;
    let pct = stats.percentiles();
    if common.json {
        let mut v = json!({
            "scenario": name,
            "duration_secs": common.duration.as_secs_f64(),
            "threads": common.threads,
            "sent": stats.sent,
            "received": stats.received,
            "lost": stats.lost,
            "reordered": stats.reordered,
            "mismatched": stats.mismatched,
            "unexpected": stats.unexpected,
            "connection_errors": stats.errors.len(),
            "errors": stats.errors,
            "server_closes": stats.closed_by_server,
            "latency_us": pct.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "ok": !failed,
        });
        for (k, x) in extra {
            v[*k] = json!(x);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serialisable")
        );
    } else {
        println!(
            "{name}: {:.1}s, {} thread(s)",
            common.duration.as_secs_f64(),
            common.threads
        );
        for (k, x) in extra {
            if x.fract() == 0.0 {
                println!("  {k:<26} {x:.0}")
            } else {
                println!("  {k:<26} {x:.1}")
            }
        }
        println!("  {:<26} {}", "sent", stats.sent);
        println!("  {:<26} {}", "received", stats.received);
        for (k, v) in pct {
            println!("  {:<26} {v} us", format!("latency {k}"));
        }
        println!(
            "  {:<26} lost {} / reordered {} / mismatched {} / unexpected {}",
            "correctness", stats.lost, stats.reordered, stats.mismatched, stats.unexpected
        );
        println!("  {:<26} {}", "connection errors", stats.errors.len());
        for e in stats.errors.iter().take(5) {
            println!("    {e}");
        }
        println!(
            "  {:<26} {}",
            "result",
            if failed { "FAILED" } else { "ok" }
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
