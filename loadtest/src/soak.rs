//! `loadtest soak`: C connections on `/ws` churn at random over T topics, subscribing,
//! unsubscribing and publishing, for the whole run. Each connection checks, for every topic it
//! is subscribed to (from the subscribe's ack until it asks to unsubscribe) and every publisher
//! it has heard from on that topic, that sequence numbers arrive in order with no gap; at the
//! end, that it received each such publisher's last message.

use crate::client::{Client, ClientError, xorshift};
use crate::common::{Common, plans_to};
use crate::driver::{Scenario, on_threads};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::{GRACE, Stats, Traffic};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::units::parse_size;

/// The options of `loadtest soak`.
#[derive(clap::Args)]
pub(crate) struct Args {
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
    #[arg(long, default_value_t = 64, value_parser = parse_size)]
    size: u64,
}

/// Runs `loadtest soak`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        conns,
        topics,
        ops,
        size,
    } = args;
    let size = size as usize;
    if topics == 0 || conns == 0 || size < 20 {
        return Err("--conns and --topics must be at least 1, --size at least 20".into());
    }
    let names: Vec<String> = (0..topics).map(|i| format!("soak-{i}")).collect();
    // a publish with the longest topic, or an answer to a request (small JSON)
    let longest = 1 + names.iter().map(String::len).max().unwrap_or(0) + size;
    let plans = plans_to(&common, "/ws", conns, longest.max(4096))?;
    let published = Arc::new(Published::new(conns, topics));
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
            Soak::new(
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
    let stats = Stats::merged(results.iter().map(|(s, _)| s));
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

/// The last sequence number each connection published on each topic, shared by all threads.
#[derive(Debug)]
struct Published {
    topics: usize,
    last: Vec<AtomicU64>,
}

impl Published {
    /// Counters for `conns` publishers over `topics` topics.
    fn new(conns: usize, topics: usize) -> Published {
        Published {
            topics,
            last: (0..conns * topics).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, publisher: usize, topic: usize) -> &AtomicU64 {
        &self.last[publisher * self.topics + topic]
    }
}

#[derive(Debug, Default)]
struct Subscription {
    /// The subscribe was acknowledged.
    acked: bool,
    /// An unsubscribe was sent: stop checking.
    leaving: bool,
    /// Next expected sequence number per publisher heard from since the ack.
    next: HashMap<u32, u64>,
}

#[derive(Debug, Default)]
struct ConnState {
    subs: HashMap<usize, Subscription>,
    /// Requests in flight: id -> (topic, subscribe?).
    pending: HashMap<i64, (usize, bool)>,
    next_id: i64,
    /// Next sequence number per topic this connection publishes.
    seq: Vec<u64>,
}

/// One thread's share of a soak run.
struct Soak {
    /// Global connection numbers of this thread's connections.
    ids: Vec<usize>,
    conns: Vec<ConnState>,
    topics: Vec<Vec<u8>>,
    ops_per_sec: f64,
    size: usize,
    epoch: Instant,
    until: Instant,
    last_tick: Option<Instant>,
    quiet_since: Instant,
    rng: u64,
    published: Arc<Published>,
    /// Results.
    stats: Stats,
    /// Subscribe, unsubscribe and publish operations done.
    operations: u64,
}

impl Soak {
    /// A thread driving the connections numbered `ids`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        ids: Vec<usize>,
        topics: Vec<String>,
        ops_per_sec: f64,
        size: usize,
        epoch: Instant,
        until: Instant,
        seed: u64,
        published: Arc<Published>,
    ) -> Soak {
        let n = topics.len();
        Soak {
            conns: ids
                .iter()
                .map(|_| ConnState {
                    seq: vec![0; n],
                    ..Default::default()
                })
                .collect(),
            ids,
            topics: topics.into_iter().map(String::into_bytes).collect(),
            ops_per_sec,
            size: size.max(20),
            epoch,
            until,
            last_tick: None,
            quiet_since: until,
            rng: seed | 1,
            published,
            stats: Stats::new(),
            operations: 0,
        }
    }

    fn act(&mut self, i: usize, client: &mut Client, now: Instant) {
        let r = xorshift(&mut self.rng);
        let topic = (r % self.topics.len() as u64) as usize;
        let state = &mut self.conns[i];
        let action = (r >> 32) % 10;
        self.operations += 1;
        let topic_name = String::from_utf8_lossy(&self.topics[topic]).into_owned();
        match (action, state.subs.contains_key(&topic)) {
            // subscribe (30%), unsubscribe (20%) or publish (50%)
            (0..=2, false) => {
                state.next_id += 1;
                state.pending.insert(state.next_id, (topic, true));
                state.subs.insert(topic, Subscription::default());
                let m = format!(
                    r#"{{"type":"subscribe","topic":{topic_name:?},"id":{}}}"#,
                    state.next_id
                );
                client.send(OpCode::Text, m.as_bytes());
            }
            (3..=4, true) => {
                let sub = state.subs.get_mut(&topic).expect("present");
                if sub.leaving || !sub.acked {
                    return;
                }
                sub.leaving = true;
                state.next_id += 1;
                state.pending.insert(state.next_id, (topic, false));
                let m = format!(
                    r#"{{"type":"unsubscribe","topic":{topic_name:?},"id":{}}}"#,
                    state.next_id
                );
                client.send(OpCode::Text, m.as_bytes());
            }
            _ => {
                let t = &self.topics[topic];
                let seq = state.seq[topic] + 1;
                state.seq[topic] = seq;
                let mut m = Vec::with_capacity(1 + t.len() + self.size);
                m.push(t.len() as u8);
                m.extend_from_slice(t);
                m.extend_from_slice(&(self.ids[i] as u32).to_le_bytes());
                m.extend_from_slice(&seq.to_le_bytes());
                m.extend_from_slice(&((now - self.epoch).as_nanos() as u64).to_le_bytes());
                m.resize(1 + t.len() + self.size, 0xab);
                client.send(OpCode::Binary, &m);
                self.stats.sent += 1;
                self.published
                    .slot(self.ids[i], topic)
                    .store(seq, Ordering::Release);
            }
        }
    }

    /// Checks that every subscriber got the last message of every publisher it follows.
    fn finish(&mut self) {
        for state in &self.conns {
            for (topic, sub) in &state.subs {
                if !sub.acked || sub.leaving {
                    continue;
                }
                for (publisher, next) in &sub.next {
                    let last = self
                        .published
                        .slot(*publisher as usize, *topic)
                        .load(Ordering::Acquire);
                    self.stats.lost += (last + 1).saturating_sub(*next);
                }
            }
        }
    }

    fn on_text(&mut self, i: usize, text: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) else {
            self.stats.mismatched += 1;
            return;
        };
        let state = &mut self.conns[i];
        match (v["type"].as_str(), v["id"].as_i64()) {
            (Some("ack"), Some(id)) => match state.pending.remove(&id) {
                Some((topic, true)) => {
                    if let Some(sub) = state.subs.get_mut(&topic) {
                        sub.acked = true;
                    }
                }
                Some((topic, false)) => {
                    state.subs.remove(&topic);
                }
                None => self.stats.unexpected += 1,
            },
            _ => self.stats.error(format!(
                "unexpected answer: {}",
                String::from_utf8_lossy(text)
            )),
        }
    }

    fn on_binary(&mut self, i: usize, data: &[u8], now: Instant) {
        let l = *data.first().unwrap_or(&0) as usize;
        let Some(body) = data.get(1 + l..).filter(|b| b.len() >= 20) else {
            self.stats.mismatched += 1;
            return;
        };
        let Some(topic) = self.topics.iter().position(|t| t[..] == data[1..1 + l]) else {
            self.stats.mismatched += 1;
            return;
        };
        let publisher = u32::from_le_bytes(body[0..4].try_into().expect("4"));
        let seq = u64::from_le_bytes(body[4..12].try_into().expect("8"));
        let sent = u64::from_le_bytes(body[12..20].try_into().expect("8"));
        self.stats.received += 1;
        self.stats
            .record(((now - self.epoch).as_nanos() as u64).saturating_sub(sent) / 1000);
        let Some(sub) = self.conns[i].subs.get_mut(&topic) else {
            return;
        };
        if !sub.acked || sub.leaving {
            return; // not yet or no longer checked
        }
        match sub.next.get_mut(&publisher) {
            None => {
                sub.next.insert(publisher, seq + 1);
            }
            Some(next) if seq == *next => *next += 1,
            Some(next) if seq > *next => {
                self.stats.lost += seq - *next;
                *next = seq + 1;
            }
            Some(_) => self.stats.reordered += 1,
        }
    }
}

impl Scenario for Soak {
    fn on_open(&mut self, _i: usize, _client: &mut Client, _now: Instant) {
        self.stats.opened += 1;
    }

    fn on_message(&mut self, i: usize, _client: &mut Client, message: Message, now: Instant) {
        self.quiet_since = self.quiet_since.max(now);
        match message {
            Message::Text(t) => self.on_text(i, &t),
            Message::Binary(b) => self.on_binary(i, &b, now),
            Message::Close(c) => self
                .stats
                .closed_by_server
                .push(c.map_or(1005, |c| c.code.0)),
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }

    fn on_end(&mut self, i: usize, error: Option<ClientError>) {
        self.conns[i].subs.clear(); // nothing more to check on it
        if let Some(e) = error {
            self.stats.error(e.to_string());
        }
    }

    fn tick(&mut self, clients: &mut [Option<Client>], now: Instant, touched: &mut Vec<usize>) {
        let last = self.last_tick.replace(now).unwrap_or(now);
        if now >= self.until {
            return;
        }
        // each connection acts `ops_per_sec` times a second on average
        let dt = (now - last).as_secs_f64();
        let p = (self.ops_per_sec * dt).min(1.0);
        let threshold = (p * u32::MAX as f64) as u64;
        for i in 0..clients.len().min(self.conns.len()) {
            let Some(c) = clients[i].as_mut() else {
                continue;
            };
            if !c.open || (xorshift(&mut self.rng) & 0xFFFF_FFFF) > threshold {
                continue;
            }
            self.act(i, c, now);
            touched.push(i);
        }
    }

    fn finished(&self, now: Instant) -> bool {
        // after the run, wait until nothing has arrived for a second (bounded by GRACE)
        now >= self.until
            && (now >= self.until + GRACE
                || now.saturating_duration_since(self.quiet_since) >= Duration::from_secs(1))
    }

    fn traffic(&mut self) -> Option<&mut Traffic> {
        Some(&mut self.stats.traffic)
    }
}
