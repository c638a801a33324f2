//! `loadtest recover`: one publisher on a topic with history, subscribers that keep dropping
//! their connections and coming back with `recover`, and a check, per subscriber, that the
//! stream it saw across all its connections is the publisher's, whole, once, in order. The
//! target is one gateway, or a cluster (`--redis`, Redis numbering the messages) behind a load
//! balancer, through node drains and Redis restarts.
//!
//! The publisher subscribes to the topic first (its ack gives the epoch and the offset the run
//! starts after), waits until every subscriber has its first ack, then publishes
//! `{"seq":N,"t":T,"sum":"..","pad":".."}` (N from 1, T microseconds since the run began, `pad`
//! `--size` characters chosen by N, `sum` a FNV-1a checksum of the rest) with the `id` N at
//! `--rate` a second for `--duration`. No sequence number is skipped, repeated or sent out of
//! order:
//!
//! - a publish refused with the code `unavailable` (a cluster's node while Redis is out of
//!   reach) is sent again with the same N after 100 ms, alone, and nothing newer goes before it
//!   is acknowledged (`publish_retries`); refused so for 30 s in a row, the run fails. Any other
//!   refusal fails the run. A publish acknowledged after an older one was refused as
//!   `unavailable` overtook it (`publishes_overtaken`, a failure: the link came back between
//!   two publishes in flight).
//! - when its connection ends (close 1001 from a draining node, a reset), it reconnects to
//!   `--url` (every 100 ms, for 30 s at most; `publisher_reconnects`), subscribes again, and
//!   sends the publishes that had no answer again, first and one at a time
//!   (`publishes_resent`). After a close frame an unanswered publish was never published (the
//!   gateway drops what a closing connection sends); after a reset it may have been, and its
//!   second copy shows as `duplicated`.
//!
//! Every delivery is rebuilt from its `seq` and `t` and compared byte for byte, and its offset
//! must go with its sequence number: with one publisher, offsets and sequence numbers go up
//! together within an epoch, so `offset - seq` is the same for every delivery of an epoch, for
//! every subscriber, on every node (the first value seen for an epoch is shared by the run; the
//! publisher's ack gives the first epoch's). A new epoch (a cluster's Redis restarted and lost
//! its data: offsets start again from 1) is learned from an ack (of a recovery answered
//! `recovered:false`); after a gap notice the epoch of what follows is unknown until the next
//! ack, and `offset - seq` is learned from the first delivery and held for the rest. A
//! delivery that breaks it is `offset_mismatched`. The report counts the `epochs` seen.
//!
//! Each subscriber drops its connection every `--drop-every` (jittered from half to one and a
//! half times, per drop) in the way `--drop-with` says, waits `--reconnect-after` (jittered the
//! same way) and reconnects to `--url` with `"recover":{"offset":LAST,"epoch":E}`, LAST the
//! highest offset it has seen (from a delivery or an ack; after a gap notice, the last one), E
//! the epoch of its last ack. A connection the gateway ends (a close frame is answered) is
//! reconnected the same way; a reconnect that fails (a draining node refuses the upgrade) is
//! tried again after 20 ms, doubling to 500 ms (`connect_failures`, an error only before the
//! subscriber's first ack); a subscribe refused as `unavailable` reconnects after 100 ms
//! (`subscribes_refused`). When the publisher stops, drops stop and the run waits (at most
//! `--drain`) until every subscriber is subscribed and has the last message.
//!
//! Per subscriber, every sequence number from the one after its first ack to the last published
//! is owed: one missing is `lost`, or `lost_after_gap` when it falls in a hole that the gateway
//! announced (an ack with `"recovered":false`, or a `gap` notice: from the subscriber's highest
//! sequence number to the next one it received). One received twice is `duplicated`; one below
//! the highest already seen is `reordered`; data not what was published with its sequence
//! number is `mismatched`, an offset that does not go with its sequence number
//! `offset_mismatched`. The run fails on any of these, on refused or overtaken publishes, and,
//! without `--allow-gaps`, on any `recovered:false` or gap notice.

use crate::client::{Client, ClientError, Target, xorshift};
use crate::common::{Common, check_file_limit, first_source, target};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::message::{Ack, RecoverFailure, Recovery, ServerMessage, parse_server_message};
use wsgate_core::units::{parse_duration, parse_size};

/// How long a publish refused as `unavailable` waits before it is sent again.
const RETRY_WAIT: Duration = Duration::from_millis(100);
/// How long the publisher waits before it reconnects, and between failed attempts.
const RECONNECT_WAIT: Duration = Duration::from_millis(100);
/// How long the publisher may go on being refused as `unavailable`, or without a connection,
/// before the run fails.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How long a subscriber whose subscribe was refused as `unavailable` stays away.
const REFUSED_WAIT: Duration = Duration::from_millis(100);
/// The first wait after a subscriber's reconnect failed; it doubles to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The error code of a publish or subscribe that the gateway cannot serve now (a cluster's
/// node while Redis is out of reach).
const UNAVAILABLE: &str = "unavailable";

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
    /// Accept `recovered:false` and gap notices (a history too short for the reconnects, a
    /// cluster's Redis restarted): what they cost is counted as `lost_after_gap`, not `lost`,
    /// and does not fail the run.
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
    let epochs = shared.deltas.lock().expect("not poisoned").len();
    report(a, &publisher, tally, epochs).print()
}

/// What every thread of a run shares.
#[derive(Debug)]
struct Shared {
    /// When the run began (the clock of the `t` in each message).
    run_start: Instant,
    /// Offset minus sequence number in each epoch seen, as first seen.
    deltas: Mutex<HashMap<String, i128>>,
    /// Subscribers that have their first ack.
    subscribed: AtomicUsize,
    /// The highest sequence number published so far.
    published: AtomicU64,
    /// The publisher has stopped and its publishes are answered: `published` is final.
    published_all: AtomicBool,
    /// When the publisher stopped, in microseconds after `run_start`.
    stopped_us: AtomicU64,
    /// Every subscriber thread is done: the publisher may go.
    subscribers_done: AtomicBool,
    /// Why the run cannot go on (the topic has no history, the publisher cannot reconnect).
    fatal: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            run_start: Instant::now(),
            deltas: Mutex::new(HashMap::new()),
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

    /// The offset minus the sequence number of `epoch`'s messages, once someone saw one.
    fn delta(&self, epoch: &str) -> Option<i128> {
        self.deltas
            .lock()
            .expect("not poisoned")
            .get(epoch)
            .copied()
    }

    /// Records that a message of `epoch` had offset - seq `d`, unless the epoch has a value
    /// already; returns the epoch's value.
    fn learn(&self, epoch: &str, d: i128) -> i128 {
        *self
            .deltas
            .lock()
            .expect("not poisoned")
            .entry(epoch.to_string())
            .or_insert(d)
    }

    /// Ends publishing: `published` is final, and the subscribers' drain starts now.
    fn stop_publishing(&self, now: Instant) {
        if !self.published_all.load(Ordering::Acquire) {
            self.stopped_us.store(self.micros(now), Ordering::Release);
            self.published_all.store(true, Ordering::Release);
        }
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

/// A stretch of deliveries of one epoch, as one connection sees them: after an ack, its epoch;
/// after a gap notice, an epoch not known (it may be a new one) until the next ack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Segment {
    epoch: Option<String>,
    /// Offset minus sequence number, once known.
    delta: Option<i128>,
}

impl Segment {
    /// The deliveries in `epoch` (after an ack, or in a recovery from it).
    fn of(epoch: &str, shared: &Shared) -> Segment {
        Segment {
            epoch: Some(epoch.to_string()),
            delta: shared.delta(epoch),
        }
    }

    /// Whether `offset` goes with `seq`: the same offset - seq as every delivery before it in
    /// the segment and, in a known epoch, as everyone saw in that epoch. The first delivery of
    /// a segment whose epoch has no value yet sets it.
    fn check(&mut self, shared: &Shared, offset: u64, seq: u64) -> bool {
        let d = i128::from(offset) - i128::from(seq);
        let want = *self.delta.get_or_insert_with(|| match &self.epoch {
            Some(e) => shared.learn(e, d),
            None => d,
        });
        want == d
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
        if !c.has_output() && !c.wants_write {
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

/// Reads what `c` has: the messages, `Err` when the connection ended (`None` inside: with a
/// close frame, answered), and whether it opened with this read. Pings are answered.
fn read(
    c: &mut Client,
    scratch: &mut [u8],
) -> (Vec<Message>, Result<(), Option<ClientError>>, bool) {
    let was_open = c.open;
    let mut inbox = Vec::new();
    let result = c.read(scratch, |m| inbox.push(m));
    let mut closed = false;
    for m in &inbox {
        match m {
            Message::Ping(p) => c.send(OpCode::Pong, p),
            // answered at once, so that the gateway closes now rather than after its close
            // timeout (a draining node waits for its sessions)
            Message::Close(frame) if !closed => {
                closed = true;
                let code = frame.as_ref().map(|f| f.code.0.to_be_bytes());
                c.send(OpCode::Close, code.as_ref().map_or(&[][..], |b| &b[..]));
                let _ = c.flush();
            }
            _ => {}
        }
    }
    let end = match result {
        _ if closed => Err(None),
        Ok(true) => Ok(()),
        Ok(false) if !c.open => Err(Some(ClientError::Io("closed before the upgrade".into()))),
        Ok(false) => Err(Some(ClientError::Io(
            "the server closed the connection".into(),
        ))),
        Err(e) => Err(Some(e)),
    };
    (inbox, end, !was_open && c.open)
}

/// The publisher's sequence numbers in flight and to send again.
#[derive(Debug, Default)]
struct Outbox {
    /// The highest sequence number sent so far; the next new one is this + 1.
    sent: u64,
    /// Sent on the current connection and not answered yet.
    inflight: BTreeSet<u64>,
    /// To send again, lowest first: refused as `unavailable`, or unanswered when a connection
    /// ended.
    again: BTreeSet<u64>,
    /// Nothing is sent again before this (after a refusal).
    again_at: Option<Instant>,
    /// After a refusal or a connection's end, until every publish sent is acknowledged: one
    /// publish in flight at a time, so that none can overtake one refused.
    one_at_a_time: bool,
    /// Since when publishes have been refused as `unavailable` with none acknowledged.
    refused_since: Option<Instant>,
    /// Publishes acknowledged.
    acked: u64,
    /// Refusals as `unavailable` (each sent again).
    retries: u64,
    /// Publishes unanswered when their connection ended (each sent again).
    resent: u64,
    /// Publishes acknowledged while an older one waited to be sent again.
    overtaken: u64,
}

impl Outbox {
    /// The next publish to send: one to send again, once its wait is over; when none waits, a
    /// new one while fewer than `allowed` were sent. Nothing new goes before what waits to be
    /// sent again, and after a refusal or a connection's end one goes at a time until all are
    /// acknowledged, so the gateway gets the sequence numbers in order.
    fn next(&mut self, now: Instant, allowed: u64) -> Option<u64> {
        if self.one_at_a_time && !self.inflight.is_empty() {
            return None;
        }
        if let Some(&seq) = self.again.first() {
            if self.again_at.is_some_and(|at| now < at) {
                return None;
            }
            self.again.remove(&seq);
            self.inflight.insert(seq);
            return Some(seq);
        }
        if self.sent >= allowed {
            return None;
        }
        self.sent += 1;
        self.inflight.insert(self.sent);
        Some(self.sent)
    }

    /// `seq` was acknowledged.
    fn ack(&mut self, seq: u64) {
        if self.inflight.remove(&seq) {
            self.acked += 1;
            self.refused_since = None;
            if self.again.first().is_some_and(|&a| a < seq) {
                self.overtaken += 1;
            }
            self.one_at_a_time &= !self.idle();
        }
    }

    /// `seq` was refused as `unavailable`: it goes again after [`RETRY_WAIT`].
    fn unavailable(&mut self, seq: u64, now: Instant) {
        if self.inflight.remove(&seq) {
            self.again.insert(seq);
            self.retries += 1;
            self.again_at = Some(now + RETRY_WAIT);
            self.refused_since.get_or_insert(now);
            self.one_at_a_time = true;
        }
    }

    /// `seq` was refused for good.
    fn refused(&mut self, seq: u64) {
        self.inflight.remove(&seq);
        self.one_at_a_time &= !self.idle();
    }

    /// The connection ended: what it had in flight goes again on the next one (the gateway
    /// drops what a closing connection sends).
    fn connection_ended(&mut self) {
        self.resent += self.inflight.len() as u64;
        self.again.append(&mut self.inflight);
        self.one_at_a_time = !self.again.is_empty();
    }

    /// Whether every publish sent is answered and none waits.
    fn idle(&self) -> bool {
        self.inflight.is_empty() && self.again.is_empty()
    }
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Published {
    /// The highest sequence number published.
    sent: u64,
    /// Publishes acknowledged.
    acked: u64,
    /// Publishes refused (other than as `unavailable`), with the first few errors.
    refused: u64,
    refusals: Vec<String>,
    /// See [`Outbox`].
    retries: u64,
    resent: u64,
    overtaken: u64,
    /// Connections opened after the first, and attempts that failed.
    reconnects: u64,
    connect_failures: u64,
    /// Its own subscribes refused as `unavailable` (sent again).
    subscribes_refused: u64,
    /// Its own messages back, and those wrong (data or offset).
    back: u64,
    back_wrong: u64,
    /// The epoch and offset of its first ack.
    epoch: String,
    base: u64,
}

/// The publisher: its connection, what it has sent, what it saw.
struct Publisher<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    io: Io,
    client: Option<Client>,
    rng: u64,
    /// No connection: the next attempt is then.
    connect_at: Option<Instant>,
    /// Since when it has had no open connection, and the last reason.
    down_since: Option<Instant>,
    last_error: String,
    /// Connections opened.
    opened: u64,
    /// Its first subscribe was acknowledged (`p.epoch` and `p.base` are set).
    based: bool,
    /// Its subscribe goes again then (refused as `unavailable`).
    resubscribe_at: Option<Instant>,
    /// Its own deliveries.
    segment: Segment,
    outbox: Outbox,
    p: Published,
}

/// The publisher's thread: subscribes (for the epoch and base offset, and to hold the topic),
/// waits for the subscribers, publishes at the rate for the duration, then stays until the
/// subscribers are done.
fn publish(plan: &Plan, shared: &Shared, counters: &Counters) -> Result<Published, String> {
    let mut me = Publisher {
        plan,
        shared,
        io: Io::new()?,
        client: None,
        rng: 0x5eed,
        connect_at: None,
        down_since: None,
        last_error: String::new(),
        opened: 0,
        based: false,
        resubscribe_at: None,
        segment: Segment::default(),
        outbox: Outbox::default(),
        p: Published::default(),
    };
    let began = Instant::now();
    me.connect(began);
    let mut window: Option<(Instant, Instant)> = None;
    while !shared.subscribers_done.load(Ordering::Acquire) {
        let ready = me.io.wait()?;
        let now = Instant::now();
        if ready.contains(&0) {
            me.on_readable(now, counters);
        }
        if shared.failed() {
            break;
        }
        if me.client.is_none() && me.connect_at.is_some_and(|at| now >= at) {
            me.connect(now);
        }
        me.resubscribe(now);
        // publishing starts once every subscriber has its first ack
        if window.is_none()
            && me.based
            && (shared.subscribed.load(Ordering::Acquire) >= plan.subscribers
                || now - began >= plan.connect_deadline)
        {
            window = Some((now, now + plan.duration));
        }
        if let Some((start, end)) = window {
            me.send_publishes(now, start, end);
            counters.sent.store(me.outbox.sent, Ordering::Relaxed);
            // every publish answered: the subscribers know what they are owed; a gateway that
            // leaves some unanswered has a few seconds more
            let answered = me.outbox.idle()
                || (me.outbox.again.is_empty() && now >= end + Duration::from_secs(5));
            if now >= end && answered {
                shared.stop_publishing(now);
            }
        }
        me.give_up_if_stuck(now);
        me.flush(now);
    }
    // the subscribers may be waiting for this
    shared.stop_publishing(Instant::now());
    let o = &me.outbox;
    let mut p = me.p;
    (p.sent, p.acked, p.retries, p.resent, p.overtaken) =
        (o.sent, o.acked, o.retries, o.resent, o.overtaken);
    Ok(p)
}

impl Publisher<'_> {
    /// Starts a connection; a failure is tried again after [`RECONNECT_WAIT`].
    fn connect(&mut self, now: Instant) {
        self.connect_at = None;
        let seed = xorshift(&mut self.rng);
        match self.io.connect(self.plan, 0, seed) {
            Ok(c) => self.client = Some(c),
            Err(e) => self.connection_failed(now, format!("connect: {e}")),
        }
    }

    fn connection_failed(&mut self, now: Instant, why: String) {
        self.p.connect_failures += 1;
        self.last_error = why;
        self.down_since.get_or_insert(now);
        self.connect_at = Some(now + RECONNECT_WAIT);
    }

    /// The connection ended (or never opened): what was in flight goes again on the next one.
    fn ended(&mut self, now: Instant, why: Option<ClientError>) {
        let Some(mut c) = self.client.take() else {
            return;
        };
        let _ = self.io.poll.registry().deregister(&mut c.stream);
        self.outbox.connection_ended();
        let why = why.map_or_else(|| "a close frame".into(), |e| e.to_string());
        if !c.open {
            return self.connection_failed(now, why);
        }
        self.last_error = why;
        if !self.shared.published_all.load(Ordering::Acquire) {
            self.down_since.get_or_insert(now);
            self.connect_at = Some(now + RECONNECT_WAIT);
        }
    }

    fn on_readable(&mut self, now: Instant, counters: &Counters) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let (inbox, end, opened) = read(c, &mut self.io.scratch);
        if opened {
            self.opened += 1;
            self.p.reconnects = self.opened - 1;
            self.down_since = None;
            c.send(OpCode::Text, self.plan.subscribe(0, None).as_bytes());
        }
        counters
            .received
            .fetch_add(inbox.len() as u64, Ordering::Relaxed);
        for m in inbox {
            if let Message::Text(text) = m {
                self.on_text(&text, now);
            }
        }
        if let Err(e) = end {
            self.ended(now, e);
        }
    }

    fn on_text(&mut self, text: &[u8], now: Instant) {
        let (plan, shared) = (self.plan, self.shared);
        match parse_server_message(text) {
            Ok(ServerMessage::Ack(Ack {
                id: Some(0),
                offset,
                epoch,
                ..
            })) => {
                let (Some(offset), Some(epoch)) = (offset, epoch) else {
                    shared.fail(no_history(plan));
                    return;
                };
                if !self.based {
                    self.based = true;
                    self.p.epoch = epoch.to_string();
                    self.p.base = offset;
                    shared.learn(&epoch, i128::from(offset));
                }
                self.segment = Segment::of(&epoch, shared);
            }
            Ok(ServerMessage::Ack(Ack { id: Some(id), .. })) if id > 0 => {
                self.outbox.ack(id as u64);
            }
            Ok(ServerMessage::Error {
                id: Some(id), code, ..
            }) if code == UNAVAILABLE => {
                if id == 0 {
                    self.p.subscribes_refused += 1;
                    self.resubscribe_at = Some(now + RETRY_WAIT);
                } else if id > 0 {
                    self.outbox.unavailable(id as u64, now);
                }
            }
            Ok(ServerMessage::Error { id, code, message }) => {
                self.p.refused += 1;
                if self.p.refusals.len() < 5 {
                    self.p.refusals.push(format!("{code}: {message}"));
                }
                if let Some(id) = id.filter(|&i| i > 0) {
                    self.outbox.refused(id as u64);
                }
            }
            Ok(ServerMessage::Message {
                offset,
                data,
                topic,
            }) => {
                self.p.back += 1;
                let ok = topic == plan.topic
                    && match (check_data(data.get(), plan.size), offset) {
                        (Some((seq, _)), Some(offset)) => self.segment.check(shared, offset, seq),
                        _ => false,
                    };
                self.p.back_wrong += u64::from(!ok);
            }
            Ok(ServerMessage::Gap { topic }) if topic == plan.topic => {
                self.segment = Segment::default();
            }
            _ => self.p.back_wrong += 1,
        }
    }

    /// Sends its subscribe again when it was refused as `unavailable`.
    fn resubscribe(&mut self, now: Instant) {
        if self.resubscribe_at.is_some_and(|at| now >= at)
            && let Some(c) = self.client.as_mut().filter(|c| c.open)
        {
            self.resubscribe_at = None;
            c.send(OpCode::Text, self.plan.subscribe(0, None).as_bytes());
        }
    }

    /// Sends what is due: what waits to be sent again, then new publishes at the rate until
    /// `end`.
    fn send_publishes(&mut self, now: Instant, start: Instant, end: Instant) {
        let Some(c) = self.client.as_mut().filter(|c| c.open) else {
            return;
        };
        let allowed = if now < end {
            ((now - start).as_secs_f64() * self.plan.rate) as u64 + 1
        } else {
            self.outbox.sent
        };
        let mut burst = 0;
        while burst < 1000
            && let Some(seq) = self.outbox.next(now, allowed)
        {
            burst += 1;
            let t = self.shared.micros(now);
            let m = format!(
                r#"{{"type":"publish","topic":{},"data":{},"id":{seq}}}"#,
                json!(self.plan.topic),
                data(seq, t, self.plan.size),
            );
            c.send(OpCode::Text, m.as_bytes());
        }
        self.shared
            .published
            .store(self.outbox.sent, Ordering::Release);
    }

    /// Fails the run when publishes have been refused, or the connection gone, for too long.
    fn give_up_if_stuck(&mut self, now: Instant) {
        if let Some(since) = self.outbox.refused_since
            && now - since >= GIVE_UP_AFTER
        {
            self.shared.fail(format!(
                "publishes to '{}' refused as unavailable for {GIVE_UP_AFTER:?} in a row (the \
                 gateway's Redis out of reach?)",
                self.plan.topic
            ));
        }
        if let Some(since) = self.down_since
            && now - since >= GIVE_UP_AFTER
        {
            self.shared.fail(format!(
                "the publisher could not reconnect to {} for {GIVE_UP_AFTER:?}: {}",
                self.plan.target.addr(),
                self.last_error
            ));
        }
    }

    fn flush(&mut self, now: Instant) {
        if let Some(c) = self.client.as_mut()
            && let Err(e) = self.io.flush(0, c)
        {
            self.ended(now, Some(e));
        }
    }
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
    /// It had its first ack.
    acked: bool,
    /// The epoch of its last ack and the highest offset it has seen since (after a gap
    /// notice, the last one): where it recovers from.
    position: Option<(String, u64)>,
    /// The deliveries it gets now: their epoch, and offset - seq.
    segment: Segment,
    /// The first sequence number it is owed: after its first ack, or the first it received
    /// when that ack's epoch could not be told in sequence numbers.
    owed_from: Option<u64>,
    /// Sequence numbers received (bit N), and the highest.
    seen: Vec<u64>,
    highest: u64,
    /// A hole the gateway announced: from this sequence number to the next one received.
    open_gap: Option<u64>,
    /// Holes announced, as inclusive ranges of sequence numbers.
    gaps: Vec<(u64, u64)>,
    /// Messages received before the ack of its current recovering subscribe.
    recovered_now: u64,
    /// Reconnects that failed in a row.
    failures: u32,
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
    /// past it: the end fell in a hole).
    fn caught_up(&self, last: u64, shared: &Shared) -> bool {
        if !matches!(self.phase, Phase::Live { .. }) {
            return false;
        }
        if self.highest >= last || self.owed_from.is_some_and(|f| f > last) {
            return true;
        }
        match (&self.position, &self.segment.epoch) {
            (Some((e, at)), Some(epoch)) if e == epoch => self
                .segment
                .delta
                .or_else(|| shared.delta(e))
                .is_some_and(|d| i128::from(*at) - d >= i128::from(last)),
            _ => false,
        }
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
    /// Subscribes answered with the error `unavailable`.
    subscribes_refused: u64,
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
            subscribes_refused: 0,
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
        self.subscribes_refused += o.subscribes_refused;
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
            let done = s.subs.iter().all(|u| u.caught_up(last, shared));
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
                    acked: false,
                    position: None,
                    segment: Segment::default(),
                    owed_from: None,
                    seen: Vec::new(),
                    highest: 0,
                    open_gap: None,
                    gaps: Vec::new(),
                    recovered_now: 0,
                    failures: 0,
                })
                .collect(),
            ids,
            tally: Tally::default(),
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
                        Err(e) => self.failed_to_connect(i, ClientError::Io(e.to_string()), now),
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

    /// Subscriber `i`'s connection attempt failed: it tries again after a wait that doubles
    /// with each failure in a row. An error only before its first ack (a reconnect may meet a
    /// draining node, or a balancer that has not noticed it yet).
    fn failed_to_connect(&mut self, i: usize, e: ClientError, now: Instant) {
        self.tally.connect_failures += 1;
        let sub = &mut self.subs[i];
        if !sub.acked {
            self.tally.stats.error(e.to_string());
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << sub.failures.min(10))
            .min(MAX_BACKOFF);
        sub.failures += 1;
        let delay = jittered(self.plan.reconnect_after, &mut sub.rng).max(backoff);
        sub.phase = Phase::Away(now + delay);
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

    /// Subscriber `i`'s connection ended without it dropping it: it comes back as after a drop
    /// (after a wait when the connection never opened).
    fn ended(&mut self, i: usize, error: Option<ClientError>, now: Instant) {
        let sub = &mut self.subs[i];
        let opened = sub.client.as_ref().is_some_and(|c| c.open);
        if let Some(mut c) = sub.client.take() {
            let _ = self.io.poll.registry().deregister(&mut c.stream);
        }
        if !opened {
            let e = error.unwrap_or_else(|| ClientError::Io("closed before the upgrade".into()));
            return self.failed_to_connect(i, e, now);
        }
        self.tally.ended_by_server += 1;
        let delay = jittered(self.plan.reconnect_after, &mut sub.rng);
        sub.phase = Phase::Away(now + delay);
    }

    fn on_readable(&mut self, i: usize, now: Instant, counters: &Counters) {
        let sub = &mut self.subs[i];
        let Some(c) = sub.client.as_mut() else {
            return;
        };
        let (inbox, end, opened) = read(c, &mut self.io.scratch);
        if opened {
            let m = self.joined(i);
            if let Some(c) = self.subs[i].client.as_mut() {
                c.send(OpCode::Text, m.as_bytes());
            }
            counters.open.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .received
            .fetch_add(inbox.len() as u64, Ordering::Relaxed);
        for m in inbox {
            // a subscribe refused drops the connection: what follows is not read
            if self.subs[i].client.is_none() {
                break;
            }
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
        if let Err(e) = end
            && self.subs[i].client.is_some()
        {
            if self.subs[i].client.as_ref().is_some_and(|c| c.open) {
                counters.open.fetch_sub(1, Ordering::Relaxed);
            }
            self.ended(i, e, now);
        }
    }

    /// Subscriber `i`'s connection opened: its subscribe, with `recover` from its position
    /// once it has one.
    fn joined(&mut self, i: usize) -> String {
        let sub = &mut self.subs[i];
        sub.id += 1;
        sub.failures = 0;
        let position = sub.position.as_ref().map(|(e, o)| (e.as_str(), *o));
        if let Some((epoch, _)) = position {
            // what comes before the ack is the recovery, in the epoch it recovers from
            sub.segment = Segment::of(epoch, self.shared);
        }
        self.plan.subscribe(sub.id, position)
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
                let sub = &mut self.subs[i];
                sub.open_gap();
                // what follows may be in a new epoch: its offsets are learned again
                sub.segment = Segment::default();
            }
            ServerMessage::Error { id, code, message }
                if id == Some(self.subs[i].id)
                    && matches!(self.subs[i].phase, Phase::Joining { .. }) =>
            {
                if code == UNAVAILABLE {
                    // not subscribed: it comes back a moment later and asks again
                    self.tally.subscribes_refused += 1;
                    let sub = &mut self.subs[i];
                    if let Some(mut c) = sub.client.take() {
                        let _ = self.io.poll.registry().deregister(&mut c.stream);
                    }
                    sub.phase = Phase::Away(now + REFUSED_WAIT);
                } else {
                    self.shared.fail(format!(
                        "the gateway refused a subscribe: {code}: {message}"
                    ));
                }
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
        let shared = self.shared;
        let sub = &mut self.subs[i];
        let Phase::Joining { since, recovering } = sub.phase else {
            self.tally.stats.unexpected += 1;
            return;
        };
        if !sub.acked {
            sub.acked = true;
            // owed: what follows the ack's offset (everything when publishing has not begun)
            sub.owed_from = match shared.delta(&epoch) {
                Some(d) => Some(u64::try_from(i128::from(offset) - d + 1).map_or(1, |f| f.max(1))),
                None if shared.published.load(Ordering::Acquire) == 0 => Some(1),
                None => None,
            };
            sub.highest = sub.owed_from.map_or(0, |f| f - 1);
            shared.subscribed.fetch_add(1, Ordering::AcqRel);
        }
        match ack.recovery {
            Some(Recovery::Recovered) => {
                self.tally.recovered += 1;
                self.tally
                    .recovery_time
                    .saturating_record(((now - since).as_micros() as u64).max(1));
                // in the epoch it recovered from, the ack naming the last offset sent: the one
                // it has, or where it recovered to
                let at = sub.position.as_ref().map(|(e, o)| (e.as_str(), *o));
                if at != Some((&epoch, offset)) {
                    self.tally.offset_mismatched += 1;
                    self.tally.stats.error(format!(
                        "a recovery ack at offset {offset} of epoch {epoch}, the subscriber at \
                         {at:?}"
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
        sub.segment = Segment::of(&epoch, shared);
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
        match offset {
            None => self.tally.offset_mismatched += 1,
            Some(offset) => {
                if !sub.segment.check(self.shared, offset, seq) {
                    self.tally.offset_mismatched += 1;
                    if self.tally.offset_mismatched <= 3 {
                        self.tally.stats.error(format!(
                            "sequence number {seq} at offset {offset} (epoch {:?}: offset - seq \
                             was {:?})",
                            sub.segment.epoch, sub.segment.delta
                        ));
                    }
                }
                if let Some((epoch, at)) = sub.position.as_mut() {
                    match &sub.segment.epoch {
                        Some(e) if e == epoch => *at = (*at).max(offset),
                        // after a gap notice: the last offset, in an epoch it cannot name (a
                        // recovery from it fails if the epoch changed, and goes on if not)
                        None => *at = offset,
                        Some(_) => {}
                    }
                }
            }
        }
        if sub.acked && sub.owed_from.is_none() {
            sub.owed_from = Some(seq);
            sub.highest = seq - 1;
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
            if !sub.acked {
                self.tally.never_subscribed += 1;
                self.tally
                    .stats
                    .error(format!("subscriber {} never had an ack", self.ids[i]));
                continue;
            }
            self.tally.stats.opened += 1;
            if !sub.caught_up(last, self.shared) {
                self.tally.behind += 1;
            }
            let Some(from) = sub.owed_from else {
                continue; // nothing received, nothing it could be told it is owed
            };
            if let Some(gap_from) = sub.open_gap.take()
                && gap_from <= last
            {
                sub.gaps.push((gap_from, last));
            }
            if last >= from {
                self.tally.expected += last - from + 1;
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
fn report(a: &Args, p: &Published, t: Tally, epochs: usize) -> Report {
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
    r = count(
        r,
        "subscribes_refused",
        t.subscribes_refused + p.subscribes_refused,
    );
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
    r = count(r, "publish_retries", p.retries);
    r = count(r, "publishes_resent", p.resent);
    r = count(r, "publishes_overtaken", p.overtaken);
    r = count(r, "publisher_reconnects", p.reconnects);
    r = count(r, "publisher_connect_failures", p.connect_failures);
    r = count(r, "epochs", epochs as u64);
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
    if p.overtaken > 0 {
        why.push(format!(
            "{} publishes were acknowledged while an older one waited to be sent again after \
             being refused as unavailable: they overtook it",
            p.overtaken
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
            target: Target::parse("ws://127.0.0.1:9/ws", &crate::tls::TlsArgs::default())
                .expect("a URL"),
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
        shared.learn("E", 10);
        let mut s = Subscribers::new(&plan, &shared, vec![0]).expect("a poll");
        let now = Instant::now();
        let join = |s: &mut Subscribers<'_>, recovering| {
            s.joined(0);
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

    /// A plan for the tests that feed subscribers by hand.
    fn hand_plan() -> Plan {
        Plan {
            target: Target::parse("ws://127.0.0.1:9/ws", &crate::tls::TlsArgs::default())
                .expect("a URL"),
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
        }
    }

    /// Offsets across a Redis restart: after a gap notice offset - seq is learned again from
    /// the next delivery; a recovery from the old epoch fails and the ack names the new one,
    /// whose value is shared; within each stretch a wrong offset is still caught.
    #[test]
    fn offsets_are_checked_per_epoch_across_a_gap_and_a_new_epoch() {
        let plan = hand_plan();
        let shared = Shared::new();
        shared.learn("E", 10);
        let mut s = Subscribers::new(&plan, &shared, vec![0]).expect("a poll");
        let now = Instant::now();
        let join = |s: &mut Subscribers<'_>| {
            let m = s.joined(0);
            s.subs[0].phase = Phase::Joining {
                since: now,
                recovering: s.subs[0].position.is_some(),
            };
            m
        };
        let deliver = |s: &mut Subscribers<'_>, seq: u64, offset: u64| {
            let d = data(seq, 5, 8);
            let m =
                format!(r#"{{"type":"message","topic":"chat.t","offset":{offset},"data":{d}}}"#);
            s.on_text(0, m.as_bytes(), now);
        };
        join(&mut s);
        s.on_text(
            0,
            br#"{"type":"ack","id":1,"topic":"chat.t","offset":10,"epoch":"E"}"#,
            now,
        );
        for seq in 1..=3 {
            deliver(&mut s, seq, seq + 10);
        }
        // Redis restarted: a gap notice, then offsets from 1 in an epoch not named yet
        s.on_text(0, br#"{"type":"gap","topic":"chat.t"}"#, now);
        deliver(&mut s, 4, 1);
        deliver(&mut s, 5, 2);
        deliver(&mut s, 6, 9); // wrong in its stretch
        assert_eq!(s.tally.offset_mismatched, 1);
        assert_eq!(s.subs[0].position, Some(("E".into(), 9)), "the last offset");
        // it reconnects from the old epoch: refused, the ack names the new one
        let m = join(&mut s);
        assert!(m.contains(r#""recover":{"epoch":"E","offset":9}"#), "{m}");
        s.on_text(
            0,
            br#"{"type":"ack","id":2,"topic":"chat.t","offset":7,"epoch":"F","recovered":false,
                "reason":"epoch"}"#,
            now,
        );
        deliver(&mut s, 8, 8);
        deliver(&mut s, 9, 9);
        deliver(&mut s, 10, 11); // wrong in F
        assert_eq!(shared.delta("F"), Some(0), "learned, for everyone");
        assert_eq!(shared.deltas.lock().unwrap().len(), 2);
        // a recovery in F is checked against what was learned
        join(&mut s);
        deliver(&mut s, 11, 11);
        s.on_text(
            0,
            br#"{"type":"ack","id":3,"topic":"chat.t","offset":11,"epoch":"F","recovered":true}"#,
            now,
        );
        shared.published.store(11, Ordering::Release);
        let t = s.finish();
        assert_eq!(t.offset_mismatched, 2, "6 at 9, 10 at 11");
        assert_eq!((t.gaps, t.failed["epoch"], t.recovered), (1, 1, 1));
        assert_eq!(t.lost_after_gap, 1, "7, published while away, in the hole");
        assert_eq!(t.stats.lost + t.duplicated + t.stats.reordered, 0);
        assert_eq!(t.stats.unexpected, 0);
        assert_eq!((t.expected, t.behind), (11, 0));
    }

    /// The publisher's bookkeeping: a refused publish goes again alone after the wait, nothing
    /// new goes before it, and what a connection left unanswered goes again first on the next.
    #[test]
    fn the_publisher_skips_and_reorders_nothing_through_refusals_and_reconnects() {
        let mut o = Outbox::default();
        let t0 = Instant::now();
        let all = |o: &mut Outbox, at: Instant, allowed: u64| -> Vec<u64> {
            std::iter::from_fn(|| o.next(at, allowed)).collect()
        };
        assert_eq!(all(&mut o, t0, 3), [1, 2, 3], "pipelined at the rate");
        o.ack(1);
        o.unavailable(2, t0);
        assert_eq!(all(&mut o, t0, 9), [0u64; 0], "3 still in flight");
        o.unavailable(3, t0);
        assert_eq!(all(&mut o, t0 + RETRY_WAIT / 2, 9), [0u64; 0], "the wait");
        assert_eq!(all(&mut o, t0 + RETRY_WAIT, 9), [2], "alone");
        o.ack(2);
        assert_eq!(all(&mut o, t0 + RETRY_WAIT, 9), [3]);
        o.ack(3);
        assert_eq!(
            all(&mut o, t0 + RETRY_WAIT, 6),
            [4, 5, 6],
            "pipelined again"
        );
        assert_eq!((o.retries, o.overtaken), (2, 0));
        // the connection ends with 5 and 6 unanswered: they go first, one at a time
        o.ack(4);
        o.connection_ended();
        assert_eq!(o.resent, 2);
        assert_eq!(all(&mut o, t0 + RETRY_WAIT, 9), [5]);
        o.ack(5);
        assert_eq!(all(&mut o, t0 + RETRY_WAIT, 9), [6]);
        o.ack(6);
        assert!(o.idle());
        assert_eq!(all(&mut o, t0 + RETRY_WAIT, 8), [7, 8]);
        // one acknowledged after an older one was refused overtook it
        o.unavailable(7, t0 + RETRY_WAIT);
        o.ack(8);
        assert_eq!(o.overtaken, 1);
        assert_eq!((o.sent, o.acked), (8, 7));
        assert_eq!(o.refused_since, None, "an ack ends a run of refusals");
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
