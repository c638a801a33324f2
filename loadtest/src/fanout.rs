//! `loadtest fanout`: N subscribers of T topics, P publishers sending binary publishes that
//! carry (publisher, sequence number, send time). Every subscriber checks, per publisher, that
//! it sees every sequence number once and in order; publish-to-receive latency goes into a
//! histogram. A subscriber the gateway closes as slow (1013) is reported apart from losses.
//! After its head, a publish is filled with one byte or, with `--payload json`, JSON-like text
//! ([`crate::payload`]); subscribers check every byte of it.

use crate::client::{self, Client};
use crate::common::{Common, check_file_limit, first_source, with_sources};
use crate::driver::{Plan, Scenario, on_threads};
use crate::payload::{JsonBody, Payload};
use crate::progress::{self, Counters};
use crate::report::Report;
use crate::stats::{GRACE, Stats, Traffic};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::units::parse_size;

/// The options of `loadtest fanout`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    fanout: Options,
}

/// The publishers, subscribers and topics of a fanout run (`loadtest fanout` and `ramp`).
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Topics (subscriber k takes topic k mod T, publisher j publishes to j mod T).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Payload bytes after the topic (at least 20).
    #[arg(long, default_value_t = 64, value_parser = parse_size)]
    size: u64,
    /// What fills a publish after its 20-byte head (publisher, sequence number, send time):
    /// `fill`, one byte repeated (per message), or `json`, JSON-like text that compresses like
    /// real JSON (for --compression). Subscribers check every byte.
    #[arg(long, value_enum, default_value_t = Payload::Fill)]
    payload: Payload,
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

/// Runs `loadtest fanout`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args { common, fanout } = args;
    let (stats, slow) = run_once(&common, &fanout, fanout.subscribers, true)?;
    report("fanout", &common, &fanout, &stats, slow, fanout.subscribers).print()
}

/// The report of a fanout run with `subs` subscribers, named `name`.
pub(crate) fn report(
    name: &str,
    common: &Common,
    f: &Options,
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

/// One fanout run with `subscribers` subscribers (a progress bar when `progress`): its
/// results and the number of subscribers closed as slow.
pub(crate) fn run_once(
    common: &Common,
    f: &Options,
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
        .map(|t| topic_name(&f.topic, t, f.topics))
        .collect();
    if names.iter().any(|n| n.is_empty() || n.len() > 255) {
        return Err("--topic must be 1 to 255 bytes".into());
    }
    // the largest message a connection receives: a publish with the longest topic
    let longest = 1 + names.iter().map(String::len).max().unwrap_or(0) + f.size as usize;
    let base = common.target_at(&common.url)?.expecting(longest);
    client::preflight(&base.with_path("/ws", None), first_source(common))?;
    let publish_base = match &f.publish_url {
        Some(url) => {
            let t = common
                .target_at(url)
                .map_err(|e| format!("--publish-url: {e}"))?
                .expecting(longest);
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
        roles.push(Role::Subscriber {
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
        roles.push(Role::Publisher {
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
    let progress_state = Arc::new(Progress::new(
        f.publishers,
        subscribers,
        epoch,
        common.duration,
        epoch + connect_time,
    ));
    // roles follow the plans' round-robin split over threads
    let mut per_thread: Vec<Option<Vec<Role>>> = (0..threads).map(|_| Some(Vec::new())).collect();
    for (i, r) in roles.into_iter().enumerate() {
        per_thread[i % threads].get_or_insert_with(Vec::new).push(r);
    }
    let per_thread = Mutex::new(per_thread);
    let counters = Arc::new(Counters::default());
    let json = (f.payload == Payload::Json).then(|| Arc::new(JsonBody::new(f.size as usize)));
    let bar =
        progress.then(|| progress::Progress::start("fanout", common.duration, counters.clone()));
    let results = on_threads(
        &plans,
        threads,
        &counters,
        |t, _| {
            let roles = per_thread.lock().expect("not poisoned")[t]
                .take()
                .expect("taken once");
            let mut s = Fanout::new(
                roles,
                names.clone(),
                f.publishers,
                f.size as usize,
                f.window,
                f.rate,
                epoch,
                progress_state.clone(),
            );
            s.json = json.clone();
            s
        },
        |s| {
            s.finish();
            (s.stats.clone(), s.slow_closed)
        },
    )?;
    drop(bar);
    let stats = Stats::merged(results.iter().map(|(s, _)| s));
    Ok((stats, results.iter().map(|(_, slow)| slow).sum()))
}

/// State shared by every thread of a fanout run. Publishing starts once every subscriber is
/// connected (or failed to), so every subscriber can expect every message from sequence 0.
#[derive(Debug)]
struct Progress {
    /// Messages sent so far by each publisher.
    published: Vec<AtomicU64>,
    /// Publishers that have stopped sending.
    publishers_done: AtomicUsize,
    subscribers: usize,
    /// Subscribers whose connection opened or failed.
    settled: AtomicUsize,
    /// When publishing started, in nanoseconds after `epoch`; 0 until then.
    start_ns: AtomicU64,
    epoch: Instant,
    duration: Duration,
    /// Publishing starts by then even if some subscribers are still connecting.
    connect_deadline: Instant,
}

impl Progress {
    /// State for `publishers` publishers and `subscribers` subscribers publishing for
    /// `duration` once all are connected (or at `connect_deadline`).
    fn new(
        publishers: usize,
        subscribers: usize,
        epoch: Instant,
        duration: Duration,
        connect_deadline: Instant,
    ) -> Progress {
        Progress {
            published: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            publishers_done: AtomicUsize::new(0),
            subscribers,
            settled: AtomicUsize::new(0),
            start_ns: AtomicU64::new(0),
            epoch,
            duration,
            connect_deadline,
        }
    }

    /// The publishing window (start, end), starting it if every subscriber has settled.
    fn window(&self, now: Instant) -> Option<(Instant, Instant)> {
        let mut start = self.start_ns.load(Ordering::Acquire);
        if start == 0 {
            if self.settled.load(Ordering::Acquire) < self.subscribers
                && now < self.connect_deadline
            {
                return None;
            }
            let ns = ((now - self.epoch).as_nanos() as u64).max(1);
            start = match self
                .start_ns
                .compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => ns,
                Err(other) => other,
            };
        }
        let start = self.epoch + Duration::from_nanos(start);
        Some((start, start + self.duration))
    }
}

/// What a connection of this thread does.
#[derive(Debug)]
enum Role {
    /// Subscribed to `topic`; `expected[p]` is the next sequence number from publisher p.
    Subscriber {
        /// Topic index.
        topic: usize,
        /// Next expected sequence number per publisher.
        expected: Vec<u64>,
        /// Closed by the gateway as a slow consumer.
        slow: bool,
        /// The session opened.
        open: bool,
    },
    /// Publisher number `id`, publishing to `topic` (and subscribed to it, to see its own
    /// messages come back and bound what it has in flight).
    Publisher {
        /// Publisher number.
        id: usize,
        /// Topic index.
        topic: usize,
        /// Next sequence number.
        next: u64,
        /// Own messages seen back.
        back: u64,
        /// When the session opened.
        opened: Option<Instant>,
        /// Done sending.
        done: bool,
    },
}

/// The byte that fills publish `seq` after its head (`--payload fill`).
fn fill_byte(seq: u64) -> u8 {
    (seq as u8) ^ 0x5a
}

/// The topic name of topic index `t`.
fn topic_name(base: &str, t: usize, topics: usize) -> String {
    if topics == 1 {
        base.to_string()
    } else {
        format!("{base}-{t}")
    }
}

/// One thread's share of a fanout run.
struct Fanout {
    roles: Vec<Role>,
    /// Indexes of this thread's publishers.
    publisher_slots: Vec<usize>,
    topics: Vec<Vec<u8>>,
    publishers: usize,
    size: usize,
    window: u64,
    rate: f64,
    epoch: Instant,
    progress: Arc<Progress>,
    /// JSON-like bodies after the head (`--payload json`); none: the filler byte.
    json: Option<Arc<JsonBody>>,
    /// Results.
    stats: Stats,
    /// Subscribers closed with 1013.
    slow_closed: u64,
}

impl Fanout {
    /// A thread running `roles`, over topics named by `topics`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        roles: Vec<Role>,
        topics: Vec<String>,
        publishers: usize,
        size: usize,
        window: u64,
        rate: f64,
        epoch: Instant,
        progress: Arc<Progress>,
    ) -> Fanout {
        Fanout {
            publisher_slots: roles
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Role::Publisher { .. }))
                .map(|(i, _)| i)
                .collect(),
            roles,
            topics: topics.into_iter().map(String::into_bytes).collect(),
            publishers,
            size,
            window,
            rate,
            epoch,
            progress,
            json: None,
            stats: Stats::new(),
            slow_closed: 0,
        }
    }

    fn publish_more(&mut self, i: usize, client: &mut Client, now: Instant) {
        let Role::Publisher {
            id,
            topic,
            next,
            back,
            opened,
            done,
        } = &mut self.roles[i]
        else {
            return;
        };
        let Some(opened) = *opened else { return };
        let Some((start, end)) = self.progress.window(now) else {
            return;
        };
        if now >= end {
            if !*done {
                *done = true;
                self.progress.publishers_done.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        let allowed = if self.rate > 0.0 {
            ((now - opened.max(start)).as_secs_f64() * self.rate) as u64 + 1
        } else {
            u64::MAX
        };
        let topic_bytes = &self.topics[*topic];
        while *next - *back < self.window && *next < allowed {
            let mut m = Vec::with_capacity(1 + topic_bytes.len() + self.size);
            m.push(topic_bytes.len() as u8);
            m.extend_from_slice(topic_bytes);
            m.extend_from_slice(&(*id as u32).to_le_bytes());
            m.extend_from_slice(&next.to_le_bytes());
            m.extend_from_slice(&((now - self.epoch).as_nanos() as u64).to_le_bytes());
            match &self.json {
                Some(json) => json.put(&mut m, self.size - 20, *id as u64, *next),
                None => m.resize(1 + topic_bytes.len() + self.size, fill_byte(*next)),
            }
            client.send(OpCode::Binary, &m);
            *next += 1;
            self.stats.sent += 1;
            self.progress.published[*id].store(*next, Ordering::Release);
        }
    }

    /// Messages still owed to this thread's subscribers, by what publishers have sent so far.
    fn owed(&self) -> u64 {
        let mut owed = 0;
        for role in &self.roles {
            if let Role::Subscriber {
                topic,
                expected,
                slow: false,
                ..
            } = role
            {
                for (p, e) in expected.iter().enumerate() {
                    if p % self.topics.len() == *topic {
                        owed += self.progress.published[p]
                            .load(Ordering::Acquire)
                            .saturating_sub(*e);
                    }
                }
            }
        }
        owed
    }

    /// Counts what never arrived (call once the run is over).
    fn finish(&mut self) {
        self.stats.lost += self.owed();
    }
}

impl Scenario for Fanout {
    fn on_open(&mut self, i: usize, client: &mut Client, now: Instant) {
        self.stats.opened += 1;
        match &mut self.roles[i] {
            Role::Publisher { opened, .. } => {
                *opened = Some(now);
                self.publish_more(i, client, now);
            }
            Role::Subscriber { open, .. } => {
                *open = true;
                self.progress.settled.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn on_message(&mut self, i: usize, client: &mut Client, message: Message, now: Instant) {
        let data = match message {
            Message::Binary(b) => b,
            Message::Close(c) => {
                let code = c.map_or(1005, |c| c.code.0);
                self.stats.closed_by_server.push(code);
                if let Role::Subscriber { slow, .. } = &mut self.roles[i]
                    && code == 1013
                {
                    *slow = true;
                    self.slow_closed += 1;
                }
                return;
            }
            Message::Text(_) => {
                self.stats.unexpected += 1;
                return;
            }
            Message::Ping(_) | Message::Pong(_) => return,
        };
        let l = *data.first().unwrap_or(&0) as usize;
        let body = data.get(1 + l..).unwrap_or(&[]);
        if body.len() < 20 {
            self.stats.mismatched += 1;
            return;
        }
        let publisher = u32::from_le_bytes(body[0..4].try_into().expect("4")) as usize;
        let seq = u64::from_le_bytes(body[4..12].try_into().expect("8"));
        let sent = u64::from_le_bytes(body[12..20].try_into().expect("8"));
        let topic = &data[1..1 + l];
        match &mut self.roles[i] {
            Role::Publisher { id, back, .. } => {
                if publisher == *id {
                    *back += 1;
                    self.publish_more(i, client, now);
                }
            }
            Role::Subscriber {
                topic: t, expected, ..
            } => {
                let body_ok = body.len() == self.size
                    && match &self.json {
                        Some(json) => json.check(&body[20..], publisher as u64, seq),
                        None => body[20..].iter().all(|&b| b == fill_byte(seq)),
                    };
                if publisher >= self.publishers || topic != &self.topics[*t][..] || !body_ok {
                    self.stats.mismatched += 1;
                    return;
                }
                let e = &mut expected[publisher];
                if seq == *e {
                    *e += 1;
                } else if seq > *e {
                    self.stats.lost += seq - *e;
                    *e = seq + 1;
                } else {
                    self.stats.reordered += 1;
                }
                self.stats.received += 1;
                let now_ns = (now - self.epoch).as_nanos() as u64;
                self.stats.record(now_ns.saturating_sub(sent) / 1000);
            }
        }
    }

    fn on_end(&mut self, i: usize, error: Option<crate::client::ClientError>) {
        if let Role::Subscriber { slow, open, .. } = &mut self.roles[i] {
            *slow = true; // stop expecting anything from it; an error is reported below
            if !*open {
                self.progress.settled.fetch_add(1, Ordering::AcqRel);
            }
        }
        if let Role::Publisher { done, .. } = &mut self.roles[i]
            && !*done
        {
            *done = true;
            self.progress.publishers_done.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(e) = error {
            self.stats.error(e.to_string());
        }
    }

    fn tick(&mut self, clients: &mut [Option<Client>], now: Instant, touched: &mut Vec<usize>) {
        for k in 0..self.publisher_slots.len() {
            let i = self.publisher_slots[k];
            if let Some(c) = clients.get_mut(i).and_then(Option::as_mut) {
                self.publish_more(i, c, now);
                touched.push(i);
            }
        }
    }

    fn finished(&self, now: Instant) -> bool {
        let Some((_, end)) = self.progress.window(now) else {
            return false;
        };
        if now < end {
            return false;
        }
        now >= end + GRACE
            || (self.progress.publishers_done.load(Ordering::Acquire) == self.publishers
                && self.owed() == 0)
    }

    fn traffic(&mut self) -> Option<&mut Traffic> {
        Some(&mut self.stats.traffic)
    }
}
