//! `loadtest conns`: open K idle connections at a rate, hold them, and report the connect
//! rate, handshake latency and (with `--server-pid`) the gateway's memory per connection. It
//! sends no messages, so its report has no message counts; without a connection opened it has
//! no connect rate nor memory per connection either. Over `wss://` it adds the TLS handshakes'
//! duration (`tls_handshake_us`: from the ClientHello sent to the server's Finished read, within
//! the handshake latency, which runs from the connect to the 101) and how many resumed a
//! session.

use crate::client::{Client, ClientError};
use crate::common::{Common, plans_to, rss_of};
use crate::driver::{self, Scenario, split};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wsgate_core::frame::Message;

/// The options of `loadtest conns`.
#[derive(clap::Args)]
pub(crate) struct Args {
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
}

/// Runs `loadtest conns`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        count,
        rate,
        server_pid,
    } = args;
    let plans = plans_to(&common, "/ws", count, crate::deflate::DEFAULT_MAX_MESSAGE)?;
    let threads = common.threads as usize;
    let rss_before = server_pid.and_then(rss_of);
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
                    let mut sc = Conns::new(mine.len(), hold);
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
                        sc.tls,
                    )
                })
            })
            .collect();
        drop(open_tx);
        for _ in 0..threads {
            let _ = open_rx.recv();
        }
        let rss_after = server_pid.and_then(rss_of);
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
    let mut tls = Tls::default();
    for (s, f, l, err, t) in &results {
        stats.merge(s);
        tls.merge(t);
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
        .without_messages()
        .latency_named("handshake latency")
        .with("connections", count as f64)
        .with("opened", stats.opened as f64);
    if stats.opened > 0 {
        report = report.with("connects_per_sec", stats.opened as f64 / open_secs);
    }
    if common.tls.in_use() {
        report = report
            .with("tls_resumed", tls.resumed as f64)
            .with("tls_full_handshakes", tls.full as f64)
            .with_percentiles("tls_handshake_us", "tls handshake", &tls.handshake);
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report = report
            .with("server_rss_before_bytes", b as f64)
            .with("server_rss_after_bytes", a as f64);
        if stats.opened > 0 {
            report = report.with(
                "server_rss_per_conn_bytes",
                a.saturating_sub(b) as f64 / stats.opened as f64,
            );
        }
    }
    report.print()
}

/// One thread's share of a conns run.
struct Conns {
    started: Vec<Option<Instant>>,
    pending: usize,
    hold: Duration,
    all_open_at: Option<Instant>,
    /// When the first connection started.
    first: Option<Instant>,
    /// When the last connection opened.
    last_open: Option<Instant>,
    /// Results (latency = handshake time).
    stats: Stats,
    /// The TLS handshakes, over `wss://`.
    tls: Tls,
}

/// TLS handshakes: their duration in microseconds, resumed or full.
struct Tls {
    handshake: Histogram<u64>,
    resumed: u64,
    full: u64,
}

impl Default for Tls {
    fn default() -> Tls {
        Tls {
            handshake: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            resumed: 0,
            full: 0,
        }
    }
}

impl Tls {
    fn merge(&mut self, o: &Tls) {
        let _ = self.handshake.add(&o.handshake);
        self.resumed += o.resumed;
        self.full += o.full;
    }
}

impl Conns {
    /// `count` connections held for `hold` once all are open.
    fn new(count: usize, hold: Duration) -> Conns {
        Conns {
            started: vec![None; count],
            pending: count,
            hold,
            all_open_at: None,
            first: None,
            last_open: None,
            stats: Stats::new(),
            tls: Tls::default(),
        }
    }

    fn settle(&mut self, now: Instant) {
        self.pending -= 1;
        if self.pending == 0 {
            self.all_open_at = Some(now);
        }
    }
}

impl Scenario for Conns {
    fn on_connect(&mut self, i: usize, now: Instant) {
        self.started[i] = Some(now);
        self.first.get_or_insert(now);
    }

    fn on_open(&mut self, i: usize, client: &mut Client, now: Instant) {
        self.stats.opened += 1;
        if let Some((took, resumed)) = client.tls_handshake() {
            self.tls
                .handshake
                .saturating_record(took.as_micros() as u64);
            if resumed {
                self.tls.resumed += 1;
            } else {
                self.tls.full += 1;
            }
        }
        if let Some(t) = self.started[i] {
            self.stats.record((now - t).as_micros() as u64);
        }
        self.last_open = Some(now);
        self.settle(now);
    }

    fn on_message(&mut self, _i: usize, _client: &mut Client, message: Message, _now: Instant) {
        if let Message::Close(c) = message {
            self.stats
                .closed_by_server
                .push(c.map_or(1005, |c| c.code.0));
        }
    }

    fn on_end(&mut self, i: usize, error: Option<ClientError>) {
        let opened = self.started[i].take().is_none();
        if let Some(e) = error {
            self.stats.error(e.to_string());
        }
        if !opened {
            self.settle(Instant::now());
        }
    }

    fn finished(&self, now: Instant) -> bool {
        self.all_open_at.is_some_and(|t| now >= t + self.hold)
    }
}
