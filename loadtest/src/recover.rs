//! `loadtest recover`: one publisher on a topic with history, subscribers that keep dropping
//! their connections and coming back with `recover`, and a check, per subscriber, that the
//! stream it saw across all its connections is the publisher's, whole, once, in order.
//!
//! The publisher subscribes to the topic first (its ack gives the epoch and the offset the run
//! starts after), waits until every subscriber has its first ack, then publishes
//! `{"seq":N,"t":T,"sum":"..","pad":".."}` (N from 1, T microseconds since the run began, `pad`
//! `--size` characters chosen by N, `sum` a FNV-1a checksum of the rest) with an `id` at
//! `--rate` a second for `--duration`. Every delivery is rebuilt from its `seq` and `t` and
//! compared byte for byte, and its offset must be the publisher's first offset + N - 1: with one
//! publisher, offsets and sequence numbers go up together.
//!
//! Each subscriber drops its connection every `--drop-every` (jittered from half to one and a
//! half times, per drop) in the way `--drop-with` says, waits `--reconnect-after` (jittered the
//! same way) and reconnects to `--url` with `"recover":{"offset":LAST,"epoch":E}`, LAST the
//! highest offset it has seen (from a delivery or an ack). When the publisher stops, drops stop
//! and the run waits (at most `--drain`) until every subscriber is subscribed and has the last
//! message.
//!
//! Per subscriber, every sequence number from the one after its first ack to the last published
//! is owed: one missing is `lost`, or `lost_after_gap` when it falls in a hole that the gateway
//! announced (an ack with `"recovered":false`, or a `gap` notice: from the subscriber's highest
//! sequence number to the next one it received). One received twice is `duplicated`; one below
//! the highest already seen is `reordered`; data not what was published with its sequence
//! number is `mismatched`, an offset that does not match its sequence number
//! `offset_mismatched`. The run fails on any of these, on refused publishes, and, without
//! `--allow-gaps`, on any `recovered:false` or gap notice.

use crate::client::{Client, ClientError, Target, xorshift};
use crate::common::{Common, check_file_limit, first_source, target};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::message::{Ack, RecoverFailure, Recovery, ServerMessage, parse_server_message};
use wsgate_core::units::{parse_duration, parse_size};

/// The options of `loadtest recover`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// Subscribers (each drops its connection and recovers, again and again).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// The topic: the gateway must keep a history of it (e.g. `--history 'topics = "chat.*",
    /// size = 1000, ttl = "5m"'`).
    #[arg(long, default_value = "chat.recover")]
    topic: String,
    /// Publishes per second (one publisher).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Characters of `pad` in each message's data.
    #[arg(long, default_value_t = 64, value_parser = parse_size)]
    size: u64,
    /// How often each subscriber drops its connection (each time from half to one and a half
    /// times this); 0: never.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drop_every: Duration,
    /// How a subscriber drops: `fin` closes the TCP socket without a WebSocket close frame (the
    /// gateway reads an end of stream), `rst` resets it (SO_LINGER 0: a connection that
    /// vanished), `close-frame` sends a close frame (1000) and closes the socket without waiting
    /// for the answer.
    #[arg(long, value_enum, default_value_t = DropWith::Fin)]
    drop_with: DropWith,
    /// How long a dropped subscriber stays away before it reconnects (each time from half to
    /// one and a half times this).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    reconnect_after: Duration,
    /// After the publisher stops, how long the subscribers have to come back and catch up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Accept `recovered:false` and gap notices: what they cost is counted as
    /// `lost_after_gap`, not `lost`, and does not fail the run.
    #[arg(long)]
    allow_gaps: bool,
}

/// How a subscriber drops its connection (`--drop-with`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropWith {
    /// The TCP socket closed, no close frame (FIN).
    Fin,
    /// The TCP socket reset (RST), no close frame.
    Rst,
    /// A close frame, then the socket closed at once.
    CloseFrame,
}

/// Runs `loadtest recover`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let a = &args;
    if a.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err("--rate must be a positive number of publishes per second".into());
    }
    if a.topic.is_empty() || a.topic.len() > 255 {
        return Err("--topic must be 1 to 255 bytes".into());
    }
    let common = &a.common;
    check_file_limit(a.subscribers + 1)?;
    // a delivery: the envelope, the topic and the data
    let longest = 256 + a.topic.len() + a.size as usize;
    let t = target(common, "/ws", None)?.expecting(longest.max(4096));
    crate::client::preflight(&t, first_source(common))?;
    let shared = Arc::new(Shared::new());
    let plan = Plan {
        target: t,
        source: first_source(common),
        topic: a.topic.clone(),
        size: a.size as usize,
        rate: a.rate,
        duration: common.duration,
        drop_every: a.drop_every,
        drop_with: a.drop_with,
        reconnect_after: a.reconnect_after,
        drain: a.drain,
        subscribers: a.subscribers,
        connect_deadline: Duration::from_secs(10) + Duration::from_millis(a.subscribers as u64),
    };
    let counters = Arc::new(Counters::default());
    let bar = Progress::start("recover", common.duration, counters.clone());
    let threads = (common.threads as usize).min(a.subscribers);
    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| publish(&plan, &shared, &counters));
        let subs: Vec<_> = (0..threads)
            .map(|t| {
                let (plan, shared, counters) = (&plan, &shared, &counters);
                s.spawn(move || {
                    let ids = (0..plan.subscribers).filter(|i| i % threads == t).collect();
                    subscribe(plan, shared, counters, ids)
                })
            })
            .collect();
        let subs: Vec<_> = subs.into_iter().map(|h| h.join()).collect();
        shared.subscribers_done.store(true, Ordering::Release);
        (publisher.join(), subs)
    });
    drop(bar);
    let publisher = publisher.map_err(|_| "the publisher's thread panicked".to_string())??;
    let mut tally = Tally::default();
    for s in subscribers {
        tally.merge(s.map_err(|_| "a subscriber thread panicked".to_string())??);
    }
    if let Some(fatal) = shared.fatal.lock().expect("not poisoned").clone() {
        return Err(fatal);
    }
    report(a, &publisher, tally).print()
}

/// What every thread of a run shares.
#[derive(Debug)]
struct Shared {
    /// When the run began (the clock of the `t` in each message).
    run_start: Instant,
    /// The epoch and the offset of the publisher's ack: message N has offset `base + N`.
    base: Mutex<Option<(String, u64)>>,
    /// Subscribers that have their first ack.
    subscribed: AtomicUsize,
    /// Publishes sent so far (the sequence number of the last one).
    published: AtomicU64,
    /// The publisher has stopped and its publishes are answered: `published` is final.
    published_all: AtomicBool,
    /// When the publisher stopped, in microseconds after `run_start`.
    stopped_us: AtomicU64,
    /// Every subscriber thread is done: the publisher may go.
    subscribers_done: AtomicBool,
    /// Why the run cannot go on (the topic has no history, the publisher's connection ended).
    fatal: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            run_start: Instant::now(),
            base: Mutex::new(None),
            subscribed: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            published_all: AtomicBool::new(false),
            stopped_us: AtomicU64::new(0),
            subscribers_done: AtomicBool::new(false),
            fatal: Mutex::new(None),
        }
    }

    /// Stops the run with `why` (the first reason given wins).
    fn fail(&self, why: String) {
        self.fatal.lock().expect("not poisoned").get_or_insert(why);
    }

    /// Whether the run was stopped.
    fn failed(&self) -> bool {
        self.fatal.lock().expect("not poisoned").is_some()
    }

    /// The publisher's epoch and base offset, once it has its ack.
    fn base(&self) -> Option<(String, u64)> {
        self.base.lock().expect("not poisoned").clone()
    }

    /// The last sequence number, once the publisher is done.
    fn final_seq(&self) -> Option<u64> {
        self.published_all
            .load(Ordering::Acquire)
            .then(|| self.published.load(Ordering::Acquire))
    }

    /// Microseconds from the start of the run to `now`.
    fn micros(&self, now: Instant) -> u64 {
        (now - self.run_start).as_micros() as u64
    }
}

/// The settings of a run, as every thread reads them.
#[derive(Debug)]
struct Plan {
    target: Target,
    source: Option<IpAddr>,
    topic: String,
    size: usize,
    rate: f64,
    duration: Duration,
    drop_every: Duration,
    drop_with: DropWith,
    reconnect_after: Duration,
    drain: Duration,
    subscribers: usize,
    /// Publishing starts by then even if some subscribers have no ack yet.
    connect_deadline: Duration,
}

impl Plan {
    /// The subscribe (with `recover` from `position` when given).
    fn subscribe(&self, id: i64, position: Option<(&str, u64)>) -> String {
        let mut m = json!({"type":"subscribe","topic":self.topic,"id":id});
        if let Some((epoch, offset)) = position {
            m["recover"] = json!({"offset":offset,"epoch":epoch});
        }
        m.to_string()
    }
}

/// The data of message `seq`, published `t` microseconds into the run, with `size` characters
/// of pad: `{"seq":N,"t":T,"sum":"<16 hex>","pad":"..."}`, `sum` the FNV-1a of `N:T:pad`.
fn data(seq: u64, t: u64, size: usize) -> String {
    const CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let pad: String = (0..size)
        .map(|_| CHARS[(xorshift(&mut rng) % 64) as usize] as char)
        .collect();
    let sum = fnv1a(format!("{seq}:{t}:{pad}").as_bytes());
    format!(r#"{{"seq":{seq},"t":{t},"sum":"{sum:016x}","pad":"{pad}"}}"#)
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `seq` and `t` at the head of a message's data, if it has the shape [`data`] builds.
fn head(data: &str) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(r#"{"seq":"#)?;
    let (seq, rest) = rest.split_once(',')?;
    let rest = rest.strip_prefix(r#""t":"#)?;
    let (t, _) = rest.split_once(',')?;
    Some((seq.parse().ok()?, t.parse().ok()?))
}

/// Checks one delivery's data: `Some((seq, t))` when it is exactly what was published with
/// its sequence number.
fn check_data(d: &str, size: usize) -> Option<(u64, u64)> {
    let (seq, t) = head(d)?;
    (seq > 0 && data(seq, t, size) == d).then_some((seq, t))
}

/// `d` scaled by a random factor from 0.5 to 1.5.
fn jittered(d: Duration, rng: &mut u64) -> Duration {
    let f = 0.5 + (xorshift(rng) % 1_000_001) as f64 / 1_000_000.0;
    d.mul_f64(f)
}

/// The poll of one thread and its read buffer.
struct Io {
    poll: Poll,
    events: Events,
    scratch: Vec<u8>,
}

impl Io {
    fn new() -> Result<Io, String> {
        Ok(Io {
            poll: Poll::new().map_err(|e| e.to_string())?,
            events: Events::with_capacity(1024),
            scratch: vec![0; 256 * 1024],
        })
    }

    /// Starts a connection with token `i`.
    fn connect(&self, plan: &Plan, i: usize, seed: u64) -> std::io::Result<Client> {
        let mut c = Client::connect(&plan.target, plan.source, seed)?;
        self.poll.registry().register(
            &mut c.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        c.wants_write = true;
        Ok(c)
    }

    /// Writes what `c` has queued; an error ends the connection.
    fn flush(&self, i: usize, c: &mut Client) -> Result<(), ClientError> {
        if c.pending() == 0 && !c.wants_write {
            return Ok(());
        }
        let done = c.flush().map_err(|e| ClientError::Io(e.to_string()))?;
        if done == c.wants_write {
            let interest = if done {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            self.poll
                .registry()
                .reregister(&mut c.stream, Token(i), interest)
                .map_err(|e| ClientError::Io(e.to_string()))?;
            c.wants_write = !done;
        }
        Ok(())
    }

    /// Waits at most a millisecond; the tokens with something to read.
    fn wait(&mut self) -> Result<Vec<usize>, String> {
        match self
            .poll
            .poll(&mut self.events, Some(Duration::from_millis(1)))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut ready: Vec<usize> = self
            .events
            .iter()
            .filter(|e| e.is_readable() || e.is_read_closed() || e.is_error())
            .map(|e| e.token().0)
            .collect();
        ready.sort_unstable();
        ready.dedup();
        Ok(ready)
    }
}

/// Reads what `c` has: the messages, and `Err` when the connection ended (`None` inside:
/// after a close frame).
fn read(
    c: &mut Client,
    scratch: &mut [u8],
) -> (Vec<Message>, Result<(), Option<ClientError>>, bool) {
    let was_open = c.open;
    let mut inbox = Vec::new();
    let end = match c.read(scratch, |m| inbox.push(m)) {
        Ok(true) => Ok(()),
        Ok(false) if inbox.iter().any(|m| matches!(m, Message::Close(_))) => Err(None),
        Ok(false) if !c.open => Err(Some(ClientError::Io("closed before the upgrade".into()))),
        Ok(false) => Err(Some(ClientError::Io(
            "the server closed the connection".into(),
        ))),
        Err(e) => Err(Some(e)),
    };
    (inbox, end, !was_open && c.open)
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Published {
    /// Publishes sent.
    sent: u64,
    /// Publishes acknowledged.
    acked: u64,
    /// Publishes refused, with the first few errors.
    refused: u64,
    refusals: Vec<String>,
    /// Its own messages back, and those wrong (data, order or offset).
    back: u64,
    back_wrong: u64,
    /// The epoch and offset of its ack.
    epoch: String,
    base: u64,
}

/// The publisher's thread: subscribes (for the epoch and base offset, and to hold the topic),
/// waits for the subscribers, publishes at the rate for the duration, then stays until the
/// subscribers are done.
fn publish(plan: &Plan, shared: &Shared, counters: &Counters) -> Result<Published, String> {
    let mut io = Io::new()?;
    let mut c = io.connect(plan, 0, 0x5eed).map_err(|e| e.to_string())?;
    let mut p = Published::default();
    let mut acked_subscribe = false;
    let mut window: Option<(Instant, Instant)> = None;
    let mut stopped: Option<Instant> = None;
    let began = Instant::now();
    let mut ended = false;
    while !shared.subscribers_done.load(Ordering::Acquire) {
        let ready = io.wait()?;
        let now = Instant::now();
        if !ended && ready.contains(&0) {
            let (inbox, end, opened) = read(&mut c, &mut io.scratch);
            if opened {
                c.send(OpCode::Text, plan.subscribe(0, None).as_bytes());
            }
            counters
                .received
                .fetch_add(inbox.len() as u64, Ordering::Relaxed);
            for m in inbox {
                let Message::Text(text) = m else { continue };
                match parse_server_message(&text) {
                    Ok(ServerMessage::Ack(Ack {
                        id: Some(0),
                        offset,
                        epoch,
                        ..
                    })) => {
                        let (Some(offset), Some(epoch)) = (offset, epoch) else {
                            shared.fail(no_history(plan));
                            break;
                        };
                        p.epoch = epoch.into_owned();
                        p.base = offset;
                        *shared.base.lock().expect("not poisoned") =
                            Some((p.epoch.clone(), offset));
                        acked_subscribe = true;
                    }
                    Ok(ServerMessage::Ack(Ack { id: Some(_), .. })) => p.acked += 1,
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        p.refused += 1;
                        if p.refusals.len() < 5 {
                            p.refusals.push(format!("{code}: {message}"));
                        }
                    }
                    Ok(ServerMessage::Message {
                        offset,
                        data,
                        topic,
                    }) => {
                        p.back += 1;
                        let ok = topic == plan.topic
                            && check_data(data.get(), plan.size)
                                .is_some_and(|(seq, _)| offset == Some(p.base + seq));
                        p.back_wrong += u64::from(!ok);
                    }
                    _ => p.back_wrong += 1,
                }
            }
            if let Err(e) = end {
                ended = true;
                if stopped.is_none() || shared.final_seq().is_none() {
                    shared.fail(format!(
                        "the publisher's connection ended: {}",
                        e.map_or("a close frame".into(), |e| e.to_string())
                    ));
                }
            }
        }
        if shared.failed() {
            break;
        }
        // publishing starts once every subscriber has its first ack
        if window.is_none()
            && acked_subscribe
            && (shared.subscribed.load(Ordering::Acquire) >= plan.subscribers
                || now - began >= plan.connect_deadline)
        {
            window = Some((now, now + plan.duration));
        }
        if let Some((start, end)) = window
            && !ended
        {
            if now < end {
                let allowed = ((now - start).as_secs_f64() * plan.rate) as u64 + 1;
                let mut burst = 0;
                while p.sent < allowed && burst < 1000 {
                    p.sent += 1;
                    burst += 1;
                    let t = shared.micros(now);
                    let m = format!(
                        r#"{{"type":"publish","topic":{},"data":{},"id":{}}}"#,
                        json!(plan.topic),
                        data(p.sent, t, plan.size),
                        p.sent
                    );
                    c.send(OpCode::Text, m.as_bytes());
                    shared.published.store(p.sent, Ordering::Release);
                }
                counters.sent.store(p.sent, Ordering::Relaxed);
            } else if stopped.is_none() {
                stopped = Some(now);
                shared
                    .stopped_us
                    .store(shared.micros(now), Ordering::Release);
            }
        }
        // every publish answered (or a few seconds): the subscribers know what they are owed
        if let Some(at) = stopped
            && !shared.published_all.load(Ordering::Acquire)
            && (p.acked + p.refused >= p.sent || now - at >= Duration::from_secs(5))
        {
            shared.published_all.store(true, Ordering::Release);
        }
        if !ended && let Err(e) = io.flush(0, &mut c) {
            shared.fail(format!("the publisher's connection ended: {e}"));
            break;
        }
    }
    // the subscribers may be waiting for this
    shared.published_all.store(true, Ordering::Release);
    Ok(p)
}

/// The error of a topic without history.
fn no_history(plan: &Plan) -> String {
    format!(
        "the gateway keeps no history of '{}' (its subscribe ack has no offset and epoch): start \
         it with a rule that matches the topic, e.g. --history 'topics = \"{}\", size = 1000, \
         ttl = \"5m\"'",
        plan.topic, plan.topic
    )
}

/// Where a subscriber is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; connects at this time.
    Away(Instant),
    /// Connecting, or subscribed and waiting for the ack (`recovering`: with `recover`);
    /// since when.
    Joining { since: Instant, recovering: bool },
    /// Subscribed; drops at this time (unless the publisher is done).
    Live { drop_at: Instant },
}

/// One subscriber: its connection, its place in the stream, and what it received.
struct Sub {
    client: Option<Client>,
    phase: Phase,
    rng: u64,
    /// The id of its current subscribe.
    id: i64,
    /// The epoch and the highest offset it has seen: where it recovers from.
    position: Option<(String, u64)>,
    /// The first sequence number it is owed (set by its first ack).
    owed_from: Option<u64>,
    /// Sequence numbers received (bit N), and the highest.
    seen: Vec<u64>,
    highest: u64,
    /// A hole the gateway announced: from this sequence number to the next one received.
    open_gap: Option<u64>,
    /// Holes announced, as inclusive ranges of sequence numbers.
    gaps: Vec<(u64, u64)>,
    /// Offset minus sequence number within its epoch, for epochs that are not the publisher's.
    delta: Option<(String, i128)>,
    /// Messages received before the ack of its current recovering subscribe.
    recovered_now: u64,
}

impl Sub {
    fn has(&self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.seen.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    fn mark(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        self.seen[w] |= 1 << b;
    }

    /// Whether it is subscribed and has everything up to `last` (or its ack says the stream is
    /// past it: the end fell in a hole), `base` the publisher's epoch and base offset.
    fn caught_up(&self, last: u64, base: Option<&(String, u64)>) -> bool {
        let past = match (&self.position, base) {
            (Some((e, at)), Some((epoch, base))) => e == epoch && *at >= base + last,
            _ => false,
        };
        matches!(self.phase, Phase::Live { .. })
            && (self.highest >= last || self.owed_from.is_some_and(|f| f > last) || past)
    }

    /// Opens a hole from the sequence number after the highest it has (unless one is open).
    fn open_gap(&mut self) {
        if self.open_gap.is_none() {
            self.open_gap = Some(self.highest + 1);
        }
    }
}

/// What the subscribers saw, added up.
#[derive(Debug)]
struct Tally {
    stats: Stats,
    expected: u64,
    duplicated: u64,
    lost_after_gap: u64,
    offset_mismatched: u64,
    drops: u64,
    /// Connections that ended without the subscriber dropping them.
    ended_by_server: u64,
    connects: u64,
    connect_failures: u64,
    recovered: u64,
    recovered_messages: u64,
    failed: BTreeMap<&'static str, u64>,
    gaps: u64,
    /// Subscribers that never had an ack.
    never_subscribed: u64,
    /// Subscribers not caught up at the end of the drain.
    behind: u64,
    /// From a reconnect to the ack of its recovery, in microseconds.
    recovery_time: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            stats: Stats::new(),
            expected: 0,
            duplicated: 0,
            lost_after_gap: 0,
            offset_mismatched: 0,
            drops: 0,
            ended_by_server: 0,
            connects: 0,
            connect_failures: 0,
            recovered: 0,
            recovered_messages: 0,
            failed: RecoverFailure::ALL
                .iter()
                .map(|r| (r.as_str(), 0))
                .collect(),
            gaps: 0,
            never_subscribed: 0,
            behind: 0,
            recovery_time: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.stats.merge(&o.stats);
        self.expected += o.expected;
        self.duplicated += o.duplicated;
        self.lost_after_gap += o.lost_after_gap;
        self.offset_mismatched += o.offset_mismatched;
        self.drops += o.drops;
        self.ended_by_server += o.ended_by_server;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.recovered += o.recovered;
        self.recovered_messages += o.recovered_messages;
        for (k, v) in o.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.gaps += o.gaps;
        self.never_subscribed += o.never_subscribed;
        self.behind += o.behind;
        self.recovery_time
            .add(&o.recovery_time)
            .expect("same bounds");
    }

    fn recovered_false(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// A thread of subscribers (global numbers `ids`).
struct Subscribers<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    io: Io,
    subs: Vec<Sub>,
    ids: Vec<usize>,
    tally: Tally,
    /// The publisher's epoch and base offset, once known.
    base: Option<(String, u64)>,
}

/// A subscriber thread: runs its subscribers until they have everything or the drain is over.
fn subscribe(
    plan: &Plan,
    shared: &Shared,
    counters: &Counters,
    ids: Vec<usize>,
) -> Result<Tally, String> {
    let mut s = Subscribers::new(plan, shared, ids)?;
    let mut caught_up_since: Option<Instant> = None;
    loop {
        let ready = s.io.wait()?;
        let now = Instant::now();
        if s.base.is_none() {
            s.base = shared.base();
        }
        for i in ready {
            s.on_readable(i, now, counters);
        }
        s.tick(now);
        if shared.failed() {
            break;
        }
        if let Some(last) = shared.final_seq() {
            let stopped =
                shared.run_start + Duration::from_micros(shared.stopped_us.load(Ordering::Acquire));
            let done = s.subs.iter().all(|u| u.caught_up(last, s.base.as_ref()));
            if done {
                // a moment more for anything repeated after the last message
                let since = *caught_up_since.get_or_insert(now);
                if now - since >= Duration::from_millis(100) {
                    break;
                }
            } else {
                caught_up_since = None;
            }
            if now >= stopped + plan.drain {
                break;
            }
        }
    }
    Ok(s.finish())
}

impl<'a> Subscribers<'a> {
    /// The subscribers numbered `ids`, none connected yet.
    fn new(plan: &'a Plan, shared: &'a Shared, ids: Vec<usize>) -> Result<Subscribers<'a>, String> {
        let start = Instant::now();
        Ok(Subscribers {
            plan,
            shared,
            io: Io::new()?,
            subs: ids
                .iter()
                .map(|&i| Sub {
                    client: None,
                    phase: Phase::Away(start),
                    rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                    id: 0,
                    position: None,
                    owed_from: None,
                    seen: Vec::new(),
                    highest: 0,
                    open_gap: None,
                    gaps: Vec::new(),
                    delta: None,
                    recovered_now: 0,
                })
                .collect(),
            ids,
            tally: Tally::default(),
            base: None,
        })
    }

    /// Connects, drops and reconnects as the time says; writes what is queued.
    fn tick(&mut self, now: Instant) {
        let publishing = self.shared.final_seq().is_none();
        for i in 0..self.subs.len() {
            let sub = &mut self.subs[i];
            match sub.phase {
                Phase::Away(at) if now >= at => {
                    self.tally.connects += 1;
                    let seed = xorshift(&mut sub.rng);
                    match self.io.connect(self.plan, i, seed) {
                        Ok(c) => {
                            sub.client = Some(c);
                            sub.phase = Phase::Joining {
                                since: now,
                                recovering: sub.position.is_some(),
                            };
                        }
                        Err(e) => {
                            self.tally.connect_failures += 1;
                            self.tally.stats.error(format!("connect: {e}"));
                            let delay = jittered(self.plan.reconnect_after, &mut sub.rng);
                            sub.phase = Phase::Away(now + delay.max(Duration::from_millis(20)));
                        }
                    }
                }
                Phase::Live { drop_at }
                    if publishing && !self.plan.drop_every.is_zero() && now >= drop_at =>
                {
                    self.drop_connection(i, now);
                }
                _ => {}
            }
            let sub = &mut self.subs[i];
            if let Some(c) = sub.client.as_mut()
                && let Err(e) = self.io.flush(i, c)
            {
                self.ended(i, Some(e), now);
            }
        }
    }

    /// Subscriber `i` drops its connection.
    fn drop_connection(&mut self, i: usize, now: Instant) {
        self.tally.drops += 1;
        let away = jittered(self.plan.reconnect_after, &mut self.subs[i].rng);
        let sub = &mut self.subs[i];
        if let Some(mut c) = sub.client.take() {
            match self.plan.drop_with {
                DropWith::Fin => {}
                DropWith::Rst => {
                    let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
                }
                DropWith::CloseFrame => {
                    c.send(OpCode::Close, &1000u16.to_be_bytes());
                    let _ = c.flush();
                }
            }
            let _ = self.io.poll.registry().deregister(&mut c.stream);
        }
        sub.phase = Phase::Away(now + away);
    }

    /// Subscriber `i`'s connection ended without it dropping it: it comes back as after a drop.
    fn ended(&mut self, i: usize, error: Option<ClientError>, now: Instant) {
        let sub = &mut self.subs[i];
        let opened = sub.client.as_ref().is_some_and(|c| c.open);
        if let Some(mut c) = sub.client.take() {
            let _ = self.io.poll.registry().deregister(&mut c.stream);
        }
        if opened {
            self.tally.ended_by_server += 1;
        } else {
            self.tally.connect_failures += 1;
            if let Some(e) = error {
                self.tally.stats.error(e.to_string());
            }
        }
        let delay = jittered(self.plan.reconnect_after, &mut self.subs[i].rng)
            .max(Duration::from_millis(if opened { 0 } else { 20 }));
        self.subs[i].phase = Phase::Away(now + delay);
    }

    fn on_readable(&mut self, i: usize, now: Instant, counters: &Counters) {
        let sub = &mut self.subs[i];
        let Some(c) = sub.client.as_mut() else {
            return;
        };
        let (inbox, end, opened) = read(c, &mut self.io.scratch);
        if opened {
            sub.id += 1;
            let position = sub.position.as_ref().map(|(e, o)| (e.as_str(), *o));
            let m = self.plan.subscribe(sub.id, position);
            c.send(OpCode::Text, m.as_bytes());
            counters.open.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .received
            .fetch_add(inbox.len() as u64, Ordering::Relaxed);
        for m in inbox {
            match m {
                Message::Text(text) => self.on_text(i, &text, now),
                Message::Close(c) => self
                    .tally
                    .stats
                    .closed_by_server
                    .push(c.map_or(1005, |c| c.code.0)),
                _ => {}
            }
        }
        if let Err(e) = end {
            if self.subs[i].client.as_ref().is_some_and(|c| c.open) {
                counters.open.fetch_sub(1, Ordering::Relaxed);
            }
            self.ended(i, e, now);
        }
    }

    fn on_text(&mut self, i: usize, text: &[u8], now: Instant) {
        let m = match parse_server_message(text) {
            Ok(m) => m,
            Err(e) => {
                self.tally.stats.mismatched += 1;
                self.tally.stats.error(format!(
                    "not a server message ({e}): {}",
                    String::from_utf8_lossy(text)
                ));
                return;
            }
        };
        match m {
            ServerMessage::Message {
                topic,
                offset,
                data,
            } if topic == self.plan.topic => self.on_delivery(i, offset, data.get(), now),
            ServerMessage::Ack(ack) if ack.id == Some(self.subs[i].id) => self.on_ack(i, ack, now),
            ServerMessage::Gap { topic } if topic == self.plan.topic => {
                self.tally.gaps += 1;
                self.subs[i].open_gap();
            }
            ServerMessage::Error { code, message, .. } => {
                self.tally
                    .stats
                    .error(format!("error from the gateway: {code}: {message}"));
            }
            _ => self.tally.stats.unexpected += 1,
        }
    }

    fn on_ack(&mut self, i: usize, ack: Ack<'_>, now: Instant) {
        let (Some(offset), Some(epoch)) = (ack.offset, ack.epoch) else {
            self.shared.fail(no_history(self.plan));
            return;
        };
        let sub = &mut self.subs[i];
        let Phase::Joining { since, recovering } = sub.phase else {
            self.tally.stats.unexpected += 1;
            return;
        };
        if sub.owed_from.is_none() {
            // owed: what follows the ack's offset (everything when publishing has not begun)
            let first = match &self.base {
                Some((e, base)) if *e == epoch && offset > *base => offset - base + 1,
                _ => 1,
            };
            sub.owed_from = Some(first);
            sub.highest = first - 1;
            self.shared.subscribed.fetch_add(1, Ordering::AcqRel);
        }
        match ack.recovery {
            Some(Recovery::Recovered) => {
                self.tally.recovered += 1;
                self.tally
                    .recovery_time
                    .saturating_record(((now - since).as_micros() as u64).max(1));
                // the ack names the last offset sent: the one it has, or where it recovered from
                if sub.position.as_ref().map(|(_, o)| *o) != Some(offset) {
                    self.tally.offset_mismatched += 1;
                    self.tally.stats.error(format!(
                        "a recovery ack at offset {offset}, the subscriber at {:?}",
                        sub.position
                    ));
                }
            }
            Some(Recovery::Failed(reason)) => {
                *self.tally.failed.entry(reason.as_str()).or_default() += 1;
                sub.open_gap();
            }
            None if recovering => self.tally.stats.unexpected += 1,
            None => {}
        }
        self.tally.recovered_messages += std::mem::take(&mut sub.recovered_now);
        sub.position = Some((epoch.into_owned(), offset));
        let every = self.plan.drop_every;
        sub.phase = Phase::Live {
            drop_at: now + jittered(every, &mut sub.rng),
        };
    }

    fn on_delivery(&mut self, i: usize, offset: Option<u64>, d: &str, now: Instant) {
        self.tally.stats.received += 1;
        let Some((seq, t)) = check_data(d, self.plan.size) else {
            self.tally.stats.mismatched += 1;
            if self.tally.stats.mismatched <= 3 {
                self.tally
                    .stats
                    .error(format!("data not as published: {d}"));
            }
            return;
        };
        let sub = &mut self.subs[i];
        match sub.phase {
            Phase::Joining { .. } => sub.recovered_now += 1,
            Phase::Live { .. } => {
                let sent = self.shared.run_start + Duration::from_micros(t);
                self.tally
                    .stats
                    .record(now.saturating_duration_since(sent).as_micros() as u64);
            }
            Phase::Away(_) => {}
        }
        // the offset goes with the sequence number: the publisher's base + seq in its epoch,
        // a constant difference in any other
        let epoch = sub
            .position
            .as_ref()
            .map(|(e, _)| e.clone())
            .unwrap_or_default();
        match offset {
            None => self.tally.offset_mismatched += 1,
            Some(offset) => {
                let d = i128::from(offset) - i128::from(seq);
                let ok = match &self.base {
                    Some((e, base)) if *e == epoch => d == i128::from(*base),
                    _ => match &sub.delta {
                        Some((e, x)) if *e == epoch => *x == d,
                        _ => {
                            sub.delta = Some((epoch.clone(), d));
                            true
                        }
                    },
                };
                if !ok {
                    self.tally.offset_mismatched += 1;
                    if self.tally.offset_mismatched <= 3 {
                        self.tally
                            .stats
                            .error(format!("sequence number {seq} at offset {offset}"));
                    }
                }
                if let Some((_, at)) = sub.position.as_mut() {
                    *at = (*at).max(offset);
                }
            }
        }
        let Some(owed_from) = sub.owed_from else {
            self.tally.stats.unexpected += 1;
            return;
        };
        if seq < owed_from {
            self.tally.stats.unexpected += 1;
            return;
        }
        if let Some(from) = sub.open_gap.take()
            && seq > from
        {
            sub.gaps.push((from, seq - 1));
        }
        if sub.has(seq) {
            self.tally.duplicated += 1;
        } else {
            sub.mark(seq);
            if seq < sub.highest {
                self.tally.stats.reordered += 1;
            } else {
                sub.highest = seq;
            }
        }
    }

    /// Counts what each subscriber is missing.
    fn finish(mut self) -> Tally {
        let last = self.shared.published.load(Ordering::Acquire);
        for i in 0..self.subs.len() {
            let sub = &mut self.subs[i];
            let Some(from) = sub.owed_from else {
                self.tally.never_subscribed += 1;
                self.tally
                    .stats
                    .error(format!("subscriber {} never had an ack", self.ids[i]));
                continue;
            };
            self.tally.stats.opened += 1;
            if let Some(gap_from) = sub.open_gap.take()
                && gap_from <= last
            {
                sub.gaps.push((gap_from, last));
            }
            if last >= from {
                self.tally.expected += last - from + 1;
            }
            if !sub.caught_up(last, self.base.as_ref()) {
                self.tally.behind += 1;
            }
            for seq in from..=last {
                if !sub.has(seq) {
                    if sub.gaps.iter().any(|&(a, b)| a <= seq && seq <= b) {
                        self.tally.lost_after_gap += 1;
                    } else {
                        self.tally.stats.lost += 1;
                    }
                }
            }
        }
        self.tally
    }
}

/// The report of a run.
fn report(a: &Args, p: &Published, t: Tally) -> Report {
    let mut stats = t.stats.clone();
    stats.sent = p.sent;
    let gaps_seen = t.recovered_false() + t.gaps;
    let mut r = Report::new("recover", &a.common, &stats, a.subscribers + 1);
    let count = |r: Report, k: &str, v: u64| r.with_json(k, json!(v)).row(format!("{k:<28} {v}"));
    r = count(r, "published", p.sent);
    r = count(r, "deliveries_expected", t.expected);
    r = count(r, "duplicated", t.duplicated);
    r = count(r, "offset_mismatched", t.offset_mismatched);
    r = count(r, "lost_after_gap", t.lost_after_gap);
    r = count(r, "drops", t.drops);
    r = count(
        r,
        "reconnects",
        t.connects.saturating_sub(a.subscribers as u64),
    );
    r = count(r, "connections_ended_by_server", t.ended_by_server);
    r = count(r, "connect_failures", t.connect_failures);
    r = count(r, "recovered_true", t.recovered);
    r = count(r, "recovered_messages", t.recovered_messages);
    r = count(r, "recovered_false", t.recovered_false());
    let reasons: serde_json::Map<String, serde_json::Value> = t
        .failed
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    let shown: Vec<String> = t
        .failed
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !shown.is_empty() {
        r = r.row(format!(
            "{:<28} {}",
            "recovered_false by reason",
            shown.join(", ")
        ));
    }
    r = r.with_json(
        "recovered_false_reasons",
        serde_json::Value::Object(reasons),
    );
    r = count(r, "gaps", t.gaps);
    r = count(r, "publishes_refused", p.refused);
    r = count(r, "subscribers_behind", t.behind);
    r = r
        .with_json("epoch", json!(p.epoch))
        .with_json("first_offset", json!(p.base + 1))
        .with_json("allow_gaps", json!(a.allow_gaps));
    let rt = &t.recovery_time;
    if rt.is_empty() {
        r = r.with_json("recovery_ms", serde_json::Value::Null);
    } else {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        let (p50, p99, max) = (
            ms(rt.value_at_quantile(0.5)),
            ms(rt.value_at_quantile(0.99)),
            ms(rt.max()),
        );
        r = r
            .with_json("recovery_ms", json!({"p50": p50, "p99": p99, "max": max}))
            .row(format!(
                "{:<28} p50 {p50} / p99 {p99} / max {max} ms",
                "recovery time"
            ));
    }
    for e in &p.refusals {
        r = r.row(format!("publish refused: {e}"));
    }
    let mut why = Vec::new();
    if t.duplicated + t.offset_mismatched > 0 {
        why.push(format!(
            "{} duplicated, {} offsets not matching their sequence numbers",
            t.duplicated, t.offset_mismatched
        ));
    }
    if p.refused > 0 {
        why.push(format!(
            "{} publishes refused (start the gateway with --publish-rate 0, or lower --rate)",
            p.refused
        ));
    }
    if p.back_wrong > 0 {
        why.push(format!(
            "the publisher got {} of its own messages wrong",
            p.back_wrong
        ));
    }
    if gaps_seen > 0 && !a.allow_gaps {
        why.push(format!(
            "{} recoveries answered recovered:false ({}) and {} gap notices: the gateway's \
             history did not cover the reconnects (give the topic more history: size, ttl, \
             history-memory) — pass --allow-gaps to accept them",
            t.recovered_false(),
            if shown.is_empty() {
                "-".into()
            } else {
                shown.join(", ")
            },
            t.gaps
        ));
    }
    if t.behind > 0 {
        why.push(format!(
            "{} subscribers not caught up after the drain",
            t.behind
        ));
    }
    let failed = !why.is_empty();
    for w in &why {
        eprintln!("loadtest: recover: {w}");
        r = r.row(format!("FAILED: {w}"));
    }
    r.failed_if(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_checks_itself_byte_for_byte() {
        let d = data(42, 1234, 30);
        assert!(d.starts_with(r#"{"seq":42,"t":1234,"sum":""#), "{d}");
        let v: serde_json::Value = serde_json::from_str(&d).expect("JSON");
        assert_eq!(v["pad"].as_str().map(str::len), Some(30));
        assert_eq!(check_data(&d, 30), Some((42, 1234)));
        assert_eq!(check_data(&d, 31), None);
        // any byte changed is caught
        for i in 0..d.len() {
            let mut b = d.clone().into_bytes();
            b[i] ^= 1;
            if let Ok(s) = String::from_utf8(b) {
                assert_eq!(check_data(&s, 30), None, "byte {i}");
            }
        }
        assert_ne!(data(1, 0, 8), data(2, 0, 8));
        assert_eq!(head("{}"), None);
    }

    /// A subscriber's accounting, fed by hand: each kind of fault lands in its own count.
    #[test]
    fn each_fault_is_counted_where_it_belongs() {
        let plan = Plan {
            target: Target::parse("ws://127.0.0.1:9/ws").expect("a URL"),
            source: None,
            topic: "chat.t".into(),
            size: 8,
            rate: 1.0,
            duration: Duration::from_secs(1),
            drop_every: Duration::from_secs(1),
            drop_with: DropWith::Fin,
            reconnect_after: Duration::ZERO,
            drain: Duration::from_secs(1),
            subscribers: 1,
            connect_deadline: Duration::from_secs(1),
        };
        let shared = Shared::new();
        *shared.base.lock().unwrap() = Some(("E".into(), 10));
        let mut s = Subscribers::new(&plan, &shared, vec![0]).expect("a poll");
        s.base = shared.base();
        let now = Instant::now();
        let join = |s: &mut Subscribers<'_>, recovering| {
            s.subs[0].id += 1;
            s.subs[0].phase = Phase::Joining {
                since: now,
                recovering,
            };
        };
        let deliver = |s: &mut Subscribers<'_>, offset: u64, d: &str| {
            let m =
                format!(r#"{{"type":"message","topic":"chat.t","offset":{offset},"data":{d}}}"#);
            s.on_text(0, m.as_bytes(), now);
        };
        join(&mut s, false);
        s.on_text(
            0,
            br#"{"type":"ack","id":1,"topic":"chat.t","offset":10,"epoch":"E"}"#,
            now,
        );
        assert_eq!(s.subs[0].owed_from, Some(1));
        for (seq, offset) in [(1, 11), (2, 12), (2, 12), (4, 14), (3, 13), (6, 99)] {
            deliver(&mut s, offset, &data(seq, 5, 8));
        }
        // 5 arrives with its checksum changed: mismatched, and so never received
        deliver(
            &mut s,
            15,
            &data(5, 5, 8).replace("\"sum\":\"", "\"sum\":\"0"),
        );
        // a drop, then a recovery that the history cannot serve: 7 to 11 are a hole
        join(&mut s, true);
        s.on_text(
            0,
            br#"{"type":"ack","id":2,"topic":"chat.t","offset":21,"epoch":"E","recovered":false,
                "reason":"too_old"}"#,
            now,
        );
        deliver(&mut s, 22, &data(12, 5, 8));
        // a drop and a recovery that works: 13 before the ack
        join(&mut s, true);
        deliver(&mut s, 23, &data(13, 5, 8));
        s.on_text(
            0,
            br#"{"type":"ack","id":3,"topic":"chat.t","offset":23,"epoch":"E","recovered":true}"#,
            now,
        );
        shared.published.store(15, Ordering::Release);
        let t = s.finish();
        assert_eq!(t.expected, 15);
        assert_eq!(t.stats.received, 9, "everything delivered, good or bad");
        assert_eq!(t.duplicated, 1, "2 twice");
        assert_eq!(t.stats.reordered, 1, "3 after 4");
        assert_eq!(t.stats.mismatched, 1, "5 changed");
        assert_eq!(t.offset_mismatched, 1, "6 at 99");
        assert_eq!(t.lost_after_gap, 5, "7 to 11, in the hole");
        assert_eq!(t.stats.lost, 3, "5, 14 and 15");
        assert_eq!(t.failed["too_old"], 1);
        assert_eq!((t.recovered, t.recovered_messages), (1, 1));
        assert_eq!(t.stats.unexpected, 0);
        assert_eq!(t.behind, 1, "the last it has is 13 of 15");
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let mut rng = 7;
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(2), &mut rng);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
                "{d:?}"
            );
        }
    }
}
