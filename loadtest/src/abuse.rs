//! `loadtest abuse`: what an attacker on loopback can make the gateway hold, and what a
//! well-behaved neighbour sees meanwhile.
//!
//! The run has two phases of `--duration` each. The neighbour, one connection on `/echo` doing
//! 20-byte binary echoes with one in flight, runs through both: the quiet phase, then the attack
//! phase, in which `--attackers` connections do one of the `--kind`s of abuse. The neighbour's
//! round trips go into one histogram per phase and every echo is checked byte for byte. With
//! `--server-pid`, the gateway's resident memory (VmRSS) is sampled every 50 ms from just before
//! the attack until a second after the attackers disconnect, and read once more two seconds
//! after they are gone.
//!
//! The scenario measures and does not judge the gateway: it exits 0 once the run completed,
//! 1 only when the neighbour's echoes were wrong or missing, 2 on bad arguments or an
//! unreachable gateway.

use crate::client::{self, Client, ClientError, Target};
use crate::common::{Common, check_file_limit, first_source, rss_of, with_sources};
use crate::driver::{self, Plan, Scenario, split};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::{GRACE, Stats};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};

/// The options of `loadtest abuse`.
#[derive(clap::Args)]
pub(crate) struct Args {
    // --duration: the length of each phase (quiet, then attack); --threads: the threads the
    // attackers' connections are spread over (the neighbour and the publish-flood reader have
    // a thread each)
    #[command(flatten)]
    common: Common,
    /// The attack.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Attacking connections: pingers, non-reading subscribers (plus one publisher), or
    /// publishers.
    #[arg(long, default_value_t = 20)]
    attackers: usize,
    /// The gateway's process id, to sample its memory (VmRSS) from /proc; without it the
    /// memory fields are null.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// The attacks of `loadtest abuse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Each attacker writes masked 125-byte pings to `/echo` as fast as its socket takes them
    /// and never reads a byte (not even the pongs).
    PingFlood,
    /// Each attacker subscribes to `abuse` and never reads after the upgrade, while one more
    /// connection publishes 1 KiB binary messages to `abuse` as fast as it can.
    SlowReaders,
    /// Each attacker publishes 64-byte binary messages (no id) to `flood` as fast as it can and
    /// never reads; one reader subscribed to `flood` reads everything.
    PublishFlood,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PingFlood => "ping-flood",
            Kind::SlowReaders => "slow-readers",
            Kind::PublishFlood => "publish-flood",
        }
    }
}

/// Bytes of one neighbour echo.
const NEIGHBOUR_SIZE: usize = 20;
/// Bytes of a ping's payload (the most a control frame carries).
const PING_SIZE: usize = 125;
/// The topic and message size (after the topic) of slow-readers.
const SLOW_TOPIC: &str = "abuse";
const SLOW_SIZE: usize = 1024;
/// The topic and message size (after the topic) of publish-flood.
const FLOOD_TOPIC: &str = "flood";
const FLOOD_SIZE: usize = 64;
/// How often the gateway's memory is read.
const RSS_EVERY: Duration = Duration::from_millis(50);
/// How long memory is still sampled after the attackers disconnect.
const RSS_GRACE: Duration = Duration::from_secs(1);
/// When memory is read for the last time after the attackers disconnect (the gateway gives
/// memory back about a second after connections close).
const RSS_SETTLE: Duration = Duration::from_secs(2);
/// How long the slow-readers' sockets are read at the end, all of them together.
const INSPECT_TIME: Duration = Duration::from_secs(2);
/// The publish-flood reader stops after this long without a message once the attack is over...
const READER_QUIET: Duration = Duration::from_millis(500);
/// ...or this long after the attack, whichever comes first.
const READER_TAIL: Duration = Duration::from_secs(3);
/// Bytes queued on an attacking connection at a time.
const BATCH: usize = 64 * 1024;
/// Batches one attacker writes before the others get their turn.
const BATCHES_PER_TURN: usize = 4;

/// Runs `loadtest abuse`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        kind,
        attackers,
        server_pid,
    } = args;
    if attackers == 0 {
        return Err("--attackers must be at least 1".into());
    }
    if common.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    // the neighbour, the attackers, and the slow-readers' publisher or the flood's reader
    check_file_limit(attackers + 2)?;
    let base = common.target_at(&common.url)?;
    let echo = base.with_path("/echo", None);
    client::preflight(&echo, first_source(&common))?;
    if kind != Kind::PingFlood {
        client::preflight(&base.with_path("/ws", None), first_source(&common))?;
    }
    if let Some(pid) = server_pid
        && rss_of(pid).is_none()
    {
        return Err(format!(
            "--server-pid {pid}: cannot read VmRSS from /proc/{pid}/status"
        ));
    }
    let (plans, roles) = attack_plan(kind, attackers, &base);
    let plans = with_sources(plans, &common.source_ips);
    let threads = (common.threads as usize).min(plans.len()).max(1);
    let mut roles_per_thread: Vec<Vec<Role>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, r) in roles.into_iter().enumerate() {
        roles_per_thread[i % threads].push(r);
    }
    let plans_per_thread = split(&plans, threads);
    let neighbour_plan = Plan {
        target: echo,
        source: first_source(&common),
    };
    let reader_plan = Plan {
        target: base.with_path("/ws", Some(format!("subscribe={FLOOD_TOPIC}"))),
        source: first_source(&common),
    };

    let clock = Clock::new(common.duration);
    let shared = Shared::default();
    let config = AttackConfig::new(kind);
    let stop_sampling = AtomicBool::new(false);
    let counters = Arc::new(Counters::default());
    let bar = Progress::start("abuse", common.duration * 2, counters.clone());
    let outcome = std::thread::scope(|s| -> Result<Outcome<'_>, String> {
        let (clock, shared, counters, config) = (&clock, &shared, &*counters, &config);
        let stop_sampling = &stop_sampling;
        let neighbour = s.spawn(move || {
            let mut n = Neighbour::new(clock);
            let r = driver::drive(&[neighbour_plan], 0, 0x5eed, counters, &mut n);
            clock.neighbour_done.store(true, Ordering::Release);
            r.map(|_| n)
                .map_err(|e| format!("the neighbour's event loop failed: {e}"))
        });
        // the quiet phase starts when the neighbour's session opens
        let waited = Instant::now();
        let quiet = loop {
            if let Some(q) = clock.quiet_start() {
                break q;
            }
            if clock.neighbour_done.load(Ordering::Acquire)
                || waited.elapsed() > Duration::from_secs(10)
            {
                clock.abort.store(true, Ordering::Release);
                let why = match neighbour.join() {
                    Ok(Ok(n)) => n.stats.errors.first().cloned().unwrap_or_default(),
                    Ok(Err(e)) => e,
                    Err(_) => "its thread panicked".into(),
                };
                return Err(format!("the neighbour's /echo session did not open: {why}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let attack_start = quiet + clock.phase;
        let attack_end = attack_start + clock.phase;
        sleep_until(attack_start);

        // the attack
        let rss_before = server_pid.and_then(rss_of);
        let sampler = server_pid.map(|pid| {
            s.spawn(move || {
                let mut samples = Vec::new();
                loop {
                    if let Some(r) = rss_of(pid) {
                        samples.push((Instant::now(), r));
                    }
                    if stop_sampling.load(Ordering::Acquire) {
                        return samples;
                    }
                    std::thread::sleep(RSS_EVERY);
                }
            })
        });
        let reader = (kind == Kind::PublishFlood).then(|| {
            s.spawn(move || {
                let mut r = FloodReader::new(shared, attackers, attack_start, attack_end);
                let result = driver::drive(&[reader_plan], 0, 0xf100d, counters, &mut r);
                shared.reader_done.store(true, Ordering::Release);
                result
                    .map(|_| r)
                    .map_err(|e| format!("the reader's event loop failed: {e}"))
            })
        });
        if kind == Kind::PingFlood {
            shared.go.store(true, Ordering::Release);
        }
        let attack_threads: Vec<_> = plans_per_thread
            .into_iter()
            .zip(roles_per_thread)
            .enumerate()
            .map(|(t, (plans, roles))| {
                s.spawn(move || {
                    attack(
                        &plans,
                        roles,
                        config,
                        shared,
                        counters,
                        attack_end,
                        0xa77ac + t as u64 * 104_729,
                    )
                })
            })
            .collect();
        // publishing starts once every subscriber is in (slow-readers) or the reader is
        // (publish-flood), so that what they get is what they were sent
        while !shared.go.load(Ordering::Acquire) && Instant::now() < attack_end {
            let ready = match kind {
                Kind::PingFlood => true,
                Kind::SlowReaders => shared.settled.load(Ordering::Acquire) >= attackers,
                Kind::PublishFlood => {
                    shared.reader_open.load(Ordering::Acquire)
                        || shared.reader_done.load(Ordering::Acquire)
                }
            };
            if ready {
                shared.go.store(true, Ordering::Release);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut attack_ends = Vec::new();
        let mut attack_error = None;
        for h in attack_threads {
            match h.join() {
                Ok(Ok(a)) => attack_ends.extend(a),
                Ok(Err(e)) => attack_error = Some(format!("an attack thread failed: {e}")),
                Err(_) => attack_error = Some("an attack thread panicked".into()),
            }
        }
        // the attackers disconnect
        let summary = AttackSummary::of(&attack_ends, config);
        drop(attack_ends);
        let disconnected = Instant::now();
        let rss_at_disconnect = server_pid.and_then(rss_of);
        sleep_until(disconnected + RSS_GRACE);
        stop_sampling.store(true, Ordering::Release);
        let samples = match sampler {
            Some(h) => h.join().map_err(|_| "the memory sampler panicked")?,
            None => Vec::new(),
        };
        sleep_until(disconnected + RSS_SETTLE);
        let rss_after = server_pid.and_then(rss_of);
        let neighbour = neighbour
            .join()
            .map_err(|_| "the neighbour's thread panicked".to_string())??;
        let reader = match reader {
            Some(h) => Some(
                h.join()
                    .map_err(|_| "the reader's thread panicked".to_string())??,
            ),
            None => None,
        };
        if let Some(e) = attack_error {
            return Err(e);
        }
        Ok(Outcome {
            neighbour,
            reader,
            attack: summary,
            memory: Memory::of(
                rss_before,
                &samples,
                rss_at_disconnect,
                rss_after,
                attack_start,
            ),
        })
    });
    drop(bar);
    let outcome = outcome?;
    report(kind, attackers, &common, outcome).print()
}

/// Sleeps until `t` (at once when it has passed).
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The attacking connections of a kind, and what each does.
fn attack_plan(kind: Kind, attackers: usize, base: &Target) -> (Vec<Plan>, Vec<Role>) {
    let plan = |path: &str, query: Option<String>| Plan {
        target: base.with_path(path, query),
        source: None,
    };
    let mut plans = Vec::new();
    let mut roles = Vec::new();
    match kind {
        Kind::PingFlood => {
            for _ in 0..attackers {
                plans.push(plan("/echo", None));
                roles.push(Role::Pinger);
            }
        }
        Kind::SlowReaders => {
            for _ in 0..attackers {
                plans.push(plan("/ws", Some(format!("subscribe={SLOW_TOPIC}"))));
                roles.push(Role::Sink);
            }
            plans.push(plan("/ws", None));
            roles.push(Role::Publisher {
                id: 0,
                seq: 0,
                reads: true,
            });
        }
        Kind::PublishFlood => {
            for id in 0..attackers {
                plans.push(plan("/ws", None));
                roles.push(Role::Publisher {
                    id: id as u32,
                    seq: 0,
                    reads: false,
                });
            }
        }
    }
    (plans, roles)
}

/// The phases of a run, anchored when the neighbour's session opens.
struct Clock {
    epoch: Instant,
    /// Each phase's length.
    phase: Duration,
    /// When the quiet phase started, in nanoseconds after `epoch` (at least 1); 0 until then.
    quiet_ns: AtomicU64,
    /// The neighbour's thread ended.
    neighbour_done: AtomicBool,
    /// The run is given up: the neighbour stops at once.
    abort: AtomicBool,
}

impl Clock {
    fn new(phase: Duration) -> Clock {
        Clock {
            epoch: Instant::now(),
            phase,
            quiet_ns: AtomicU64::new(0),
            neighbour_done: AtomicBool::new(false),
            abort: AtomicBool::new(false),
        }
    }

    /// Starts the quiet phase now, if not started yet.
    fn start(&self, now: Instant) {
        let ns = ((now - self.epoch).as_nanos() as u64).max(1);
        let _ = self
            .quiet_ns
            .compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire);
    }

    fn quiet_start(&self) -> Option<Instant> {
        match self.quiet_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }

    fn attack_start(&self) -> Option<Instant> {
        self.quiet_start().map(|q| q + self.phase)
    }

    fn attack_end(&self) -> Option<Instant> {
        self.quiet_start().map(|q| q + self.phase * 2)
    }
}

/// What the main thread and the attack threads share.
#[derive(Default)]
struct Shared {
    /// Publishers and pingers may start.
    go: AtomicBool,
    /// Slow-readers' subscribers whose upgrade succeeded or failed.
    settled: AtomicUsize,
    /// The publish-flood reader's session is open.
    reader_open: AtomicBool,
    /// The publish-flood reader's thread ended.
    reader_done: AtomicBool,
}

/// One phase of the neighbour's run.
struct Phase {
    /// Round trips in microseconds.
    latency: Histogram<u64>,
    /// Echoes received of messages sent in this phase.
    received: u64,
}

impl Phase {
    fn new() -> Phase {
        Phase {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            received: 0,
        }
    }

    /// The phase as JSON, over a phase of `secs` seconds.
    fn json(&self, secs: f64) -> Value {
        let h = &self.latency;
        let ms = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3);
        json!({
            "messages": self.received,
            "msgs_per_sec": self.received as f64 / secs,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": (!h.is_empty()).then(|| h.max() as f64 / 1e3),
        })
    }

    /// The phase as a line of the table.
    fn line(&self, secs: f64) -> String {
        let h = &self.latency;
        if h.is_empty() {
            return format!("{} echoes", self.received);
        }
        format!(
            "{:.0} msgs/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.received as f64 / secs,
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3
        )
    }
}

/// The well-behaved neighbour: one `/echo` connection, one 20-byte binary message in flight,
/// each echo compared byte for byte with what was sent.
struct Neighbour<'a> {
    clock: &'a Clock,
    next: u64,
    /// The message in flight and when it was sent.
    in_flight: Option<([u8; NEIGHBOUR_SIZE], Instant)>,
    /// Quiet, then attacked, by when each message was sent.
    phases: [Phase; 2],
    /// Echoes received in each second since the quiet phase started (both phases).
    per_sec: Vec<u64>,
    /// Everything together (latency over both phases), and the correctness counts.
    stats: Stats,
    ended: bool,
}

impl<'a> Neighbour<'a> {
    fn new(clock: &'a Clock) -> Neighbour<'a> {
        Neighbour {
            clock,
            next: 0,
            in_flight: None,
            phases: [Phase::new(), Phase::new()],
            per_sec: Vec::new(),
            stats: Stats::new(),
            ended: false,
        }
    }

    fn send_next(&mut self, client: &mut Client, now: Instant) {
        let payload = neighbour_payload(self.next, (now - self.clock.epoch).as_nanos() as u64);
        self.next += 1;
        client.send(OpCode::Binary, &payload);
        self.in_flight = Some((payload, now));
        self.stats.sent += 1;
    }
}

/// Message `seq` of the neighbour: its number, its send time, and four bytes that depend on
/// the number, so a stale or shifted echo differs.
fn neighbour_payload(seq: u64, sent_ns: u64) -> [u8; NEIGHBOUR_SIZE] {
    let mut p = [0u8; NEIGHBOUR_SIZE];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    for (k, b) in p[16..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(k as u8) ^ 0xa5;
    }
    p
}

impl Scenario for Neighbour<'_> {
    fn on_open(&mut self, _i: usize, client: &mut Client, now: Instant) {
        self.stats.opened += 1;
        self.clock.start(now);
        self.send_next(client, now);
    }

    fn on_message(&mut self, _i: usize, client: &mut Client, message: Message, now: Instant) {
        let data = match message {
            Message::Binary(b) => b,
            Message::Close(c) => {
                self.stats
                    .closed_by_server
                    .push(c.map_or(1005, |c| c.code.0));
                return;
            }
            Message::Ping(_) | Message::Pong(_) => return,
            Message::Text(_) => {
                self.stats.mismatched += 1;
                return;
            }
        };
        let Some((sent, at)) = self.in_flight.take() else {
            self.stats.unexpected += 1;
            return;
        };
        if data[..] != sent[..] {
            self.stats.mismatched += 1;
        }
        let micros = (now - at).as_micros() as u64;
        let attacked = self.clock.attack_start().is_some_and(|a| at >= a);
        let phase = &mut self.phases[usize::from(attacked)];
        phase.latency.saturating_record(micros.max(1));
        phase.received += 1;
        if let Some(q) = self.clock.quiet_start() {
            let second = now.saturating_duration_since(q).as_secs() as usize;
            if self.per_sec.len() <= second {
                self.per_sec.resize(second + 1, 0);
            }
            self.per_sec[second] += 1;
        }
        self.stats.record(micros);
        self.stats.received += 1;
        if self.clock.attack_end().is_some_and(|e| now < e) {
            self.send_next(client, now);
        }
    }

    fn on_end(&mut self, _i: usize, error: Option<ClientError>) {
        self.ended = true;
        if self.in_flight.take().is_some() {
            self.stats.lost += 1;
        }
        // the neighbour is meant to stay for the whole run: the gateway ending it is a failure
        let why = error.map_or("the gateway closed the connection".into(), |e| {
            e.to_string()
        });
        self.stats.error(format!("neighbour: {why}"));
    }

    fn finished(&self, now: Instant) -> bool {
        if self.ended || self.clock.abort.load(Ordering::Acquire) {
            return true;
        }
        let Some(end) = self.clock.attack_end() else {
            return false;
        };
        (now >= end && self.in_flight.is_none()) || now >= end + GRACE
    }
}

/// The publish-flood reader: subscribed to `flood`, reads everything, checks each publisher's
/// sequence numbers and counts what it gets per second.
struct FloodReader<'a> {
    shared: &'a Shared,
    attack_start: Instant,
    attack_end: Instant,
    /// The next sequence number expected from each publisher.
    expected: Vec<u64>,
    received: u64,
    /// Sequence numbers skipped.
    gaps: u64,
    /// Messages that came back in time or twice.
    reordered: u64,
    /// Messages not laid out as the publishers send them.
    malformed: u64,
    /// Messages received per second since the attack started.
    per_sec: Vec<u64>,
    /// The last message.
    last: Option<Instant>,
    /// The gateway's close code (1005 for a close without one).
    close_code: Option<u16>,
    /// When the connection was closed (a close frame or its end), after the attack started.
    closed_at: Option<Duration>,
    /// The connection ended.
    ended: bool,
    error: Option<String>,
}

impl<'a> FloodReader<'a> {
    fn new(
        shared: &'a Shared,
        publishers: usize,
        attack_start: Instant,
        attack_end: Instant,
    ) -> FloodReader<'a> {
        FloodReader {
            shared,
            attack_start,
            attack_end,
            expected: vec![0; publishers],
            received: 0,
            gaps: 0,
            reordered: 0,
            malformed: 0,
            per_sec: Vec::new(),
            last: None,
            close_code: None,
            closed_at: None,
            ended: false,
            error: None,
        }
    }

    fn take(&mut self, data: &[u8], now: Instant) {
        let Some((publisher, seq)) = parse_publish(data, FLOOD_TOPIC.as_bytes(), FLOOD_SIZE) else {
            self.malformed += 1;
            return;
        };
        let Some(e) = self.expected.get_mut(publisher as usize) else {
            self.malformed += 1;
            return;
        };
        if seq == *e {
            *e += 1;
        } else if seq > *e {
            self.gaps += seq - *e;
            *e = seq + 1;
        } else {
            self.reordered += 1;
        }
        self.received += 1;
        self.last = Some(now);
        let second = now.saturating_duration_since(self.attack_start).as_secs() as usize;
        if self.per_sec.len() <= second {
            self.per_sec.resize(second + 1, 0);
        }
        self.per_sec[second] += 1;
    }
}

impl Scenario for FloodReader<'_> {
    fn on_open(&mut self, _i: usize, _client: &mut Client, _now: Instant) {
        self.shared.reader_open.store(true, Ordering::Release);
    }

    fn on_message(&mut self, _i: usize, _client: &mut Client, message: Message, now: Instant) {
        match message {
            Message::Binary(b) => self.take(&b, now),
            Message::Close(c) => {
                self.close_code = Some(c.map_or(1005, |c| c.code.0));
                self.closed_at
                    .get_or_insert(now.saturating_duration_since(self.attack_start));
            }
            Message::Text(_) => self.malformed += 1,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }

    fn on_end(&mut self, _i: usize, error: Option<ClientError>) {
        self.ended = true;
        self.closed_at.get_or_insert(self.attack_start.elapsed());
        self.error = error.map(|e| e.to_string());
    }

    fn finished(&self, now: Instant) -> bool {
        if self.ended || self.close_code.is_some() || now >= self.attack_end + READER_TAIL {
            return true;
        }
        now >= self.attack_end + READER_QUIET && self.last.is_none_or(|l| now >= l + READER_QUIET)
    }
}

/// A binary publish as the attackers lay it out: `[L][topic][publisher: u32][seq: u64]` and a
/// filler up to `size` bytes after the topic.
fn publish_message(out: &mut Vec<u8>, topic: &[u8], size: usize, publisher: u32, seq: u64) {
    out.clear();
    out.push(topic.len() as u8);
    out.extend_from_slice(topic);
    out.extend_from_slice(&publisher.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.resize(1 + topic.len() + size.max(12), (seq as u8) ^ 0x3c);
}

/// The publisher and sequence number of a message laid out by [`publish_message`], if it is
/// one (its topic, length and filler checked).
fn parse_publish(data: &[u8], topic: &[u8], size: usize) -> Option<(u32, u64)> {
    let head = 1 + topic.len();
    if data.len() != head + size.max(12)
        || usize::from(data[0]) != topic.len()
        || &data[1..head] != topic
    {
        return None;
    }
    let body = &data[head..];
    let publisher = u32::from_le_bytes(body[..4].try_into().ok()?);
    let seq = u64::from_le_bytes(body[4..12].try_into().ok()?);
    body[12..]
        .iter()
        .all(|&b| b == (seq as u8) ^ 0x3c)
        .then_some((publisher, seq))
}

/// What an attacking connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// ping-flood: pings as fast as the socket takes them; never reads after the upgrade.
    Pinger,
    /// slow-readers: subscribed from the upgrade on; never reads after it (until the end, when
    /// what is buffered on its socket is read to see how the gateway ended it).
    Sink,
    /// Publishes as fast as the socket takes it; reads and discards what comes back when
    /// `reads` (the slow-readers' publisher), never reads otherwise (publish-flood).
    Publisher {
        /// Its number, in every message.
        id: u32,
        /// The next sequence number.
        seq: u64,
        /// Reads (and discards) what comes back.
        reads: bool,
    },
}

/// What the attack threads share about the messages they write.
struct AttackConfig {
    kind: Kind,
    topic: Vec<u8>,
    /// Message bytes after the topic.
    size: usize,
    /// Bytes of one attacking frame on the wire.
    frame_len: usize,
}

impl AttackConfig {
    fn new(kind: Kind) -> AttackConfig {
        let (topic, size) = match kind {
            Kind::PingFlood => ("", PING_SIZE),
            Kind::SlowReaders => (SLOW_TOPIC, SLOW_SIZE),
            Kind::PublishFlood => (FLOOD_TOPIC, FLOOD_SIZE),
        };
        let payload = if kind == Kind::PingFlood {
            size
        } else {
            1 + topic.len() + size
        };
        let header = match payload {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        AttackConfig {
            kind,
            topic: topic.as_bytes().to_vec(),
            size,
            frame_len: header + 4 + payload,
        }
    }
}

/// How an attacker's connection ended, as seen at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Still open, nothing seen.
    Open,
    /// A close frame with this code (1005: without a code).
    Closed(u16),
    /// The gateway closed the TCP connection without a close frame first.
    Eof,
    /// The connection was reset (or failed) without a close frame first.
    Reset(String),
}

/// One attacking connection.
struct Attacker {
    role: Role,
    client: Option<Client>,
    open: bool,
    /// Frames and bytes queued after the upgrade.
    frames: u64,
    bytes: u64,
    /// The last write found the socket full.
    blocked: bool,
    /// Why it failed, if it did (connect, upgrade, write).
    error: Option<String>,
    /// What its socket said at the end (slow-readers' subscribers; the reading publisher).
    end: End,
    /// Messages and payload bytes read from its socket at the end (slow-readers' subscribers).
    buffered_messages: u64,
    buffered_bytes: u64,
}

impl Attacker {
    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
        self.client = None;
    }
}

/// Runs one thread's attackers until `stop`; for slow-readers, then reads what is buffered on
/// each subscriber's socket (for at most [`INSPECT_TIME`]). The connections are still open in
/// what it returns: dropping it disconnects them.
fn attack(
    plans: &[Plan],
    roles: Vec<Role>,
    config: &AttackConfig,
    shared: &Shared,
    counters: &Counters,
    stop: Instant,
    seed: u64,
) -> io::Result<Vec<Attacker>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut message = Vec::with_capacity(2048);
    let mut attackers: Vec<Attacker> = Vec::with_capacity(plans.len());
    for (i, (plan, role)) in plans.iter().zip(roles).enumerate() {
        let mut a = Attacker {
            role,
            client: None,
            open: false,
            frames: 0,
            bytes: 0,
            blocked: false,
            error: None,
            end: End::Open,
            buffered_messages: 0,
            buffered_bytes: 0,
        };
        match Client::connect(
            &plan.target,
            plan.source,
            seed.wrapping_add(i as u64 * 7919),
        ) {
            Ok(mut c) => {
                poll.registry().register(
                    &mut c.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                a.client = Some(c);
            }
            Err(e) => {
                a.fail(format!("connect: {e}"));
                if a.role == Role::Sink {
                    shared.settled.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        attackers.push(a);
    }
    // writers with room in their socket, and writers open but waiting for `go`
    let mut ready: Vec<usize> = Vec::new();
    let mut waiting: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        if !waiting.is_empty() && shared.go.load(Ordering::Acquire) {
            ready.append(&mut waiting);
        }
        let timeout = if ready.is_empty() {
            (stop - now).min(Duration::from_millis(1))
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in events.iter() {
            let i = event.token().0;
            let a = &mut attackers[i];
            let Some(c) = a.client.as_mut() else {
                continue;
            };
            if !a.open {
                match upgrade(c, &mut scratch) {
                    Ok(false) => {}
                    Ok(true) => {
                        a.open = true;
                        counters.open.fetch_add(1, Ordering::Relaxed);
                        let registry = poll.registry();
                        match a.role {
                            // never read again: not even told that it could
                            Role::Sink => {
                                registry.deregister(&mut c.stream)?;
                                shared.settled.fetch_add(1, Ordering::AcqRel);
                                continue;
                            }
                            Role::Pinger | Role::Publisher { reads: false, .. } => {
                                registry.reregister(&mut c.stream, Token(i), Interest::WRITABLE)?;
                            }
                            Role::Publisher { reads: true, .. } => {}
                        }
                        waiting.push(i);
                    }
                    Err(e) => {
                        if a.role == Role::Sink {
                            shared.settled.fetch_add(1, Ordering::AcqRel);
                        }
                        a.fail(format!("upgrade: {e}"));
                    }
                }
                continue;
            }
            if event.is_readable() && matches!(a.role, Role::Publisher { reads: true, .. }) {
                let mut code = None;
                match c.read(&mut scratch, |m| {
                    if let Message::Close(c) = m {
                        code = Some(c.map_or(1005, |c| c.code.0));
                    }
                }) {
                    Ok(alive) => {
                        if let Some(code) = code {
                            a.end = End::Closed(code);
                        } else if !alive && a.end == End::Open {
                            a.end = End::Eof;
                        }
                        if !alive {
                            a.fail("the gateway closed the publisher's connection".into());
                            continue;
                        }
                    }
                    Err(e) => {
                        if a.end == End::Open {
                            a.end = End::Reset(e.to_string());
                        }
                        a.fail(format!("publisher: {e}"));
                        continue;
                    }
                }
            }
            if (event.is_writable() || event.is_error() || event.is_write_closed())
                && shared.go.load(Ordering::Acquire)
            {
                ready.push(i);
            }
        }
        ready.sort_unstable();
        ready.dedup();
        let mut more = Vec::new();
        for i in ready.drain(..) {
            let a = &mut attackers[i];
            match write_some(a, config, &mut message) {
                Ok(true) => more.push(i),
                Ok(false) => a.blocked = true,
                Err(e) => a.fail(format!("write: {e}")),
            }
            if let Some(c) = a.client.as_mut() {
                counters.sent.fetch_add(c.take_sent(), Ordering::Relaxed);
            }
        }
        ready = more;
    }
    if config.kind == Kind::SlowReaders {
        inspect(&mut poll, &mut events, &mut attackers, &mut scratch)?;
    }
    Ok(attackers)
}

/// Sends the upgrade request and reads the answer; true once the session is open.
fn upgrade(c: &mut Client, scratch: &mut [u8]) -> Result<bool, ClientError> {
    c.flush().map_err(|e| ClientError::Io(e.to_string()))?;
    let alive = c.read(scratch, |_| {})?;
    if c.open {
        Ok(true)
    } else if alive {
        Ok(false)
    } else {
        Err(ClientError::Io("closed before the upgrade".into()))
    }
}

/// Writes up to a few batches of the attacker's frames: `Ok(true)` when its socket took them
/// all (more can go), `Ok(false)` when the socket is full.
fn write_some(a: &mut Attacker, config: &AttackConfig, message: &mut Vec<u8>) -> io::Result<bool> {
    let Some(c) = a.client.as_mut() else {
        return Ok(false);
    };
    for _ in 0..BATCHES_PER_TURN {
        if c.pending() == 0 {
            let before = c.pending();
            let mut frames = 0;
            while c.pending() < BATCH {
                match &mut a.role {
                    Role::Pinger => c.send(OpCode::Ping, &[0x70; PING_SIZE]),
                    Role::Publisher { id, seq, .. } => {
                        publish_message(message, &config.topic, config.size, *id, *seq);
                        *seq += 1;
                        c.send(OpCode::Binary, message);
                    }
                    Role::Sink => return Ok(false),
                }
                frames += 1;
            }
            a.frames += frames;
            a.bytes += (c.pending() - before) as u64;
        }
        if !c.flush()? {
            return Ok(false);
        }
        a.blocked = false;
    }
    Ok(true)
}

/// Reads what is buffered on every slow-readers subscriber's socket, for at most
/// [`INSPECT_TIME`] in all, to see how the gateway ended each: a close frame (and its code), an
/// end of stream without one, or neither.
fn inspect(
    poll: &mut Poll,
    events: &mut Events,
    attackers: &mut [Attacker],
    scratch: &mut [u8],
) -> io::Result<()> {
    let deadline = Instant::now() + INSPECT_TIME;
    let mut left = 0;
    for (i, a) in attackers.iter_mut().enumerate() {
        if a.role != Role::Sink || !a.open {
            continue;
        }
        let Some(c) = a.client.as_mut() else {
            continue;
        };
        poll.registry()
            .register(&mut c.stream, Token(i), Interest::READABLE)?;
        if !read_end(a, scratch) {
            left += 1;
        }
    }
    while left > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Err(e) = poll.poll(
            events,
            Some((deadline - now).min(Duration::from_millis(10))),
        ) && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in events.iter() {
            let a = &mut attackers[event.token().0];
            if a.end == End::Open && read_end(a, scratch) {
                left -= 1;
            }
        }
    }
    Ok(())
}

/// Reads what a subscriber has buffered; true once its end is known (a close frame, an end of
/// stream, an error).
fn read_end(a: &mut Attacker, scratch: &mut [u8]) -> bool {
    let Some(c) = a.client.as_mut() else {
        return true;
    };
    let (mut messages, mut bytes, mut code) = (0u64, 0u64, None);
    let result = c.read(scratch, |m| match m {
        Message::Close(c) => code = Some(c.map_or(1005, |c| c.code.0)),
        Message::Binary(b) | Message::Text(b) => {
            messages += 1;
            bytes += b.len() as u64;
        }
        Message::Ping(_) | Message::Pong(_) => {}
    });
    a.buffered_messages += messages;
    a.buffered_bytes += bytes;
    if let Some(code) = code {
        a.end = End::Closed(code);
        return true;
    }
    match result {
        Ok(true) => false,
        Ok(false) => {
            a.end = End::Eof;
            true
        }
        Err(e) => {
            a.end = End::Reset(e.to_string());
            true
        }
    }
}

/// The attackers' side of a run, added up.
#[derive(Debug, Default)]
struct AttackSummary {
    /// Attacking connections (slow-readers: the subscribers and the publisher).
    connections: usize,
    /// Of which upgraded.
    opened: usize,
    /// Frames and bytes the attackers' sockets took.
    frames_written: u64,
    bytes_written: u64,
    /// Writers whose socket was full at the end.
    blocked_at_end: usize,
    /// Connections that failed (connect, upgrade, write), with samples of why.
    failed: usize,
    errors: Vec<String>,
    /// slow-readers: how the subscribers' connections ended.
    closes_by_code: BTreeMap<u16, usize>,
    eof_without_close: usize,
    reset_without_close: usize,
    neither: usize,
    buffered_messages: u64,
    buffered_bytes: u64,
    /// slow-readers: how the publisher's connection ended.
    publisher_end: Option<End>,
    subscribers_opened: usize,
}

impl AttackSummary {
    fn of(attackers: &[Attacker], config: &AttackConfig) -> AttackSummary {
        let mut s = AttackSummary {
            connections: attackers.len(),
            ..AttackSummary::default()
        };
        for a in attackers {
            s.opened += usize::from(a.open);
            let pending = a.client.as_ref().map_or(0, |c| c.pending() as u64);
            let written = a.bytes.saturating_sub(pending);
            s.bytes_written += written;
            s.frames_written += a
                .frames
                .saturating_sub(pending.div_ceil(config.frame_len as u64));
            if a.blocked && a.client.is_some() {
                s.blocked_at_end += 1;
            }
            if let Some(e) = &a.error {
                s.failed += 1;
                if s.errors.len() < 10 {
                    s.errors.push(e.clone());
                }
            }
            match a.role {
                Role::Sink => {
                    s.subscribers_opened += usize::from(a.open);
                    s.buffered_messages += a.buffered_messages;
                    s.buffered_bytes += a.buffered_bytes;
                    if !a.open {
                        continue;
                    }
                    match &a.end {
                        End::Closed(code) => *s.closes_by_code.entry(*code).or_default() += 1,
                        End::Eof => s.eof_without_close += 1,
                        End::Reset(_) => s.reset_without_close += 1,
                        End::Open => s.neither += 1,
                    }
                }
                Role::Publisher { reads: true, .. } => s.publisher_end = Some(a.end.clone()),
                _ => {}
            }
        }
        s
    }
}

/// The gateway's memory around the attack.
#[derive(Debug, Default, PartialEq)]
struct Memory {
    before: Option<u64>,
    peak: Option<u64>,
    /// When the peak was seen, after the attack started.
    peak_at: Option<Duration>,
    at_disconnect: Option<u64>,
    after: Option<u64>,
    samples: usize,
}

impl Memory {
    fn of(
        before: Option<u64>,
        samples: &[(Instant, u64)],
        at_disconnect: Option<u64>,
        after: Option<u64>,
        attack_start: Instant,
    ) -> Memory {
        let peak = samples.iter().max_by_key(|(_, r)| *r);
        Memory {
            before,
            peak: peak.map(|(_, r)| *r).max(before),
            peak_at: peak.map(|(t, _)| t.saturating_duration_since(attack_start)),
            at_disconnect,
            after,
            samples: samples.len(),
        }
    }
}

/// Everything a run measured.
struct Outcome<'a> {
    neighbour: Neighbour<'a>,
    reader: Option<FloodReader<'a>>,
    attack: AttackSummary,
    memory: Memory,
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// Numbers separated by spaces.
fn join(numbers: &[u64]) -> String {
    numbers
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A size in KiB below a MiB, in MiB above.
fn human(bytes: f64) -> String {
    if bytes < (1 << 20) as f64 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / (1 << 20) as f64)
    }
}

/// The report: the neighbour's correctness decides the exit code; the rest are numbers.
fn report(kind: Kind, attackers: usize, common: &Common, o: Outcome<'_>) -> Report {
    let secs = common.duration.as_secs_f64();
    let n = &o.neighbour;
    let [quiet, attacked] = &n.phases;
    let p99 = |p: &Phase| (!p.latency.is_empty()).then(|| p.latency.value_at_quantile(0.99));
    let p99_ratio = match (p99(quiet), p99(attacked)) {
        (Some(q), Some(a)) => Some(a as f64 / q.max(1) as f64),
        _ => None,
    };
    let m = &o.memory;
    let growth = match (m.before, m.peak) {
        (Some(b), Some(p)) => Some(p.saturating_sub(b) as f64 / attackers as f64),
        _ => None,
    };
    let a = &o.attack;
    let mut r = Report::new("abuse", common, &n.stats, 1)
        .with_json("kind", json!(kind.name()))
        .with_json("attackers", json!(attackers))
        .with_json("rss_before_bytes", json!(m.before))
        .with_json("rss_peak_bytes", json!(m.peak))
        .with_json(
            "rss_peak_at_secs",
            json!(m.peak_at.map(|d| d.as_secs_f64())),
        )
        .with_json("rss_at_disconnect_bytes", json!(m.at_disconnect))
        .with_json("rss_after_bytes", json!(m.after))
        .with_json("rss_samples", json!(m.samples))
        .with_json("rss_growth_per_attacker_bytes", json!(growth))
        .with_json(
            "neighbour",
            json!({
                "quiet": quiet.json(secs),
                "attacked": attacked.json(secs),
                "per_sec": n.per_sec,
            }),
        )
        .with_json("p99_ratio", json!(p99_ratio))
        .with_json("attack_connections", json!(a.connections))
        .with_json("attackers_opened", json!(a.opened))
        .with_json("attack_frames_written", json!(a.frames_written))
        .with_json("attack_bytes_written", json!(a.bytes_written))
        .with_json("attackers_blocked_at_end", json!(a.blocked_at_end))
        .with_json("attackers_failed", json!(a.failed))
        .with_json("attacker_errors", json!(a.errors))
        .row(format!(
            "{:<28} {}, {} attackers ({} of {} connections opened), {secs:.1} s quiet then {secs:.1} s attack",
            "kind",
            kind.name(),
            attackers,
            a.opened,
            a.connections
        ))
        .row(format!("{:<28} {}", "neighbour quiet", quiet.line(secs)))
        .row(format!("{:<28} {}", "neighbour attacked", attacked.line(secs)))
        .row(format!(
            "{:<28} {}",
            "neighbour per second",
            join(&n.per_sec)
        ))
        .row(format!(
            "{:<28} {}",
            "p99 attacked / quiet",
            p99_ratio.map_or("?".into(), |r| format!("{r:.2}x"))
        ))
        .row(format!(
            "{:<28} before {}, peak {} ({} per attacker{}), at disconnect {}, {} s later {}",
            "server RSS",
            mib(m.before),
            mib(m.peak),
            growth.map_or("?".into(), |g| format!("+{}", human(g))),
            m.peak_at
                .map_or(String::new(), |t| format!(", at {:.2} s", t.as_secs_f64())),
            mib(m.at_disconnect),
            RSS_SETTLE.as_secs(),
            mib(m.after)
        ))
        .row(format!(
            "{:<28} {} frames, {:.1} MiB; {} blocked at the end, {} failed",
            "attackers wrote",
            a.frames_written,
            a.bytes_written as f64 / (1 << 20) as f64,
            a.blocked_at_end,
            a.failed
        ));
    for e in a.errors.iter().take(3) {
        r = r.row(format!("  {e}"));
    }
    match kind {
        Kind::PingFlood => {
            r = r
                .with_json("pings_written", json!(a.frames_written))
                .row(format!("{:<28} {}", "pings written", a.frames_written));
        }
        Kind::SlowReaders => {
            let codes: serde_json::Map<String, Value> = a
                .closes_by_code
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let publisher_close = match &a.publisher_end {
                Some(End::Closed(code)) => Some(*code),
                _ => None,
            };
            r = r
                .with_json("subscribers_opened", json!(a.subscribers_opened))
                .with_json("published", json!(a.frames_written))
                .with_json("closes_by_code", Value::Object(codes))
                .with_json("eof_without_close", json!(a.eof_without_close))
                .with_json("reset_without_close", json!(a.reset_without_close))
                .with_json("neither", json!(a.neither))
                .with_json("buffered_messages_read", json!(a.buffered_messages))
                .with_json("buffered_bytes_read", json!(a.buffered_bytes))
                .with_json("publisher_close_code", json!(publisher_close))
                .row(format!(
                    "{:<28} {} messages of {} B",
                    "published", a.frames_written, SLOW_SIZE
                ))
                .row(format!(
                    "{:<28} closed {}; end of stream without a close {}; reset {}; neither {}",
                    "subscribers' ends",
                    if a.closes_by_code.is_empty() {
                        "0".to_string()
                    } else {
                        a.closes_by_code
                            .iter()
                            .map(|(k, v)| format!("{v} with {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    a.eof_without_close,
                    a.reset_without_close,
                    a.neither
                ))
                .row(format!(
                    "{:<28} {} messages, {:.1} MiB",
                    "read back from their sockets",
                    a.buffered_messages,
                    a.buffered_bytes as f64 / (1 << 20) as f64
                ));
        }
        Kind::PublishFlood => {
            let reader = o.reader.as_ref();
            let received = reader.map_or(0, |r| r.received);
            let in_order = reader.is_some_and(|r| r.reordered == 0 && r.malformed == 0);
            let closed = reader.is_some_and(|r| r.closed_at.is_some());
            let closed_at = reader.and_then(|r| r.closed_at).map(|d| d.as_secs_f64());
            let code = reader.and_then(|r| r.close_code);
            let per_sec = reader.map_or(Vec::new(), |r| r.per_sec.clone());
            r = r
                .with_json("published", json!(a.frames_written))
                .with_json("reader_received", json!(received))
                .with_json("reader_msgs_per_sec", json!(received as f64 / secs))
                .with_json("reader_per_sec", json!(per_sec))
                .with_json("reader_in_order", json!(in_order))
                .with_json("reader_gaps", json!(reader.map_or(0, |r| r.gaps)))
                .with_json("reader_reordered", json!(reader.map_or(0, |r| r.reordered)))
                .with_json("reader_malformed", json!(reader.map_or(0, |r| r.malformed)))
                .with_json("reader_closed", json!(closed))
                .with_json("reader_close_code", json!(code))
                .with_json("reader_closed_at_secs", json!(closed_at))
                .with_json("reader_error", json!(reader.and_then(|r| r.error.clone())))
                .row(format!(
                    "{:<28} {} messages of {} B",
                    "published", a.frames_written, FLOOD_SIZE
                ))
                .row(format!(
                    "{:<28} {} ({:.0}/s), {}, gaps {}, {}",
                    "reader received",
                    received,
                    received as f64 / secs,
                    if in_order { "in order" } else { "OUT OF ORDER" },
                    reader.map_or(0, |r| r.gaps),
                    match (closed_at, code) {
                        (Some(t), Some(c)) => format!("closed with {c} at {t:.2} s"),
                        (Some(t), None) => format!("closed without a close frame at {t:.2} s"),
                        _ => "not closed".into(),
                    }
                ))
                .row(format!("{:<28} {}", "reader per second", join(&per_sec)));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_read_back_and_catch_a_wrong_topic_length_or_filler() {
        let mut m = Vec::new();
        publish_message(&mut m, b"flood", 64, 7, 123_456);
        assert_eq!(m.len(), 1 + 5 + 64);
        assert_eq!(parse_publish(&m, b"flood", 64), Some((7, 123_456)));
        assert_eq!(parse_publish(&m, b"abuse", 64), None);
        assert_eq!(parse_publish(&m[..m.len() - 1], b"flood", 64), None);
        let mut bad = m.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse_publish(&bad, b"flood", 64), None);
    }

    #[test]
    fn frame_lengths_on_the_wire() {
        // 2-byte header + mask + payload
        assert_eq!(AttackConfig::new(Kind::PingFlood).frame_len, 2 + 4 + 125);
        assert_eq!(AttackConfig::new(Kind::PublishFlood).frame_len, 2 + 4 + 70);
        // 4-byte header past 125 bytes
        assert_eq!(AttackConfig::new(Kind::SlowReaders).frame_len, 4 + 4 + 1030);
        let mut out = Vec::new();
        let c = AttackConfig::new(Kind::SlowReaders);
        let mut m = Vec::new();
        publish_message(&mut m, &c.topic, c.size, 0, 0);
        wsgate_core::frame::encode_client_frame(&mut out, true, OpCode::Binary, &m, [1, 2, 3, 4]);
        assert_eq!(out.len(), c.frame_len);
    }

    #[test]
    fn neighbour_payloads_differ_by_sequence_number() {
        let a = neighbour_payload(1, 99);
        assert_eq!(a.len(), NEIGHBOUR_SIZE);
        assert_ne!(a, neighbour_payload(2, 99));
        assert_ne!(a[16..], neighbour_payload(2, 99)[16..]);
    }

    #[test]
    fn phases_follow_the_neighbour() {
        let clock = Clock::new(Duration::from_secs(3));
        assert_eq!(clock.attack_start(), None);
        let t = Instant::now();
        clock.start(t);
        clock.start(t + Duration::from_secs(1)); // only the first counts
        let q = clock.quiet_start().unwrap();
        assert!(q <= t && t - q < Duration::from_micros(1), "{q:?} {t:?}");
        assert_eq!(clock.attack_start(), Some(q + Duration::from_secs(3)));
        assert_eq!(clock.attack_end(), Some(q + Duration::from_secs(6)));
    }

    #[test]
    fn memory_peak_and_when() {
        let t = Instant::now();
        let samples = [
            (t, 10),
            (t + Duration::from_millis(50), 30),
            (t + Duration::from_millis(100), 20),
        ];
        let m = Memory::of(Some(10), &samples, Some(15), Some(11), t);
        assert_eq!(m.peak, Some(30));
        assert_eq!(m.peak_at, Some(Duration::from_millis(50)));
        assert_eq!(m.samples, 3);
        let none = Memory::of(None, &[], None, None, t);
        assert_eq!(none, Memory::default());
        // a peak no sample saw is at least the reading before
        assert_eq!(Memory::of(Some(40), &samples, None, None, t).peak, Some(40));
    }
}
