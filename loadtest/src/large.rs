//! `loadtest large`: one (or a few) very large messages, echoed through `/echo` or fanned out
//! to a few subscribers; every byte is checked. With `--server-pid`, the gateway's peak memory
//! (VmHWM) against the message size shows whether it kept one copy or many. With `--raw-tcp`
//! the same bytes go over plain TCP to a TCP echo server ([`crate::raw::large`]): the baseline.

use crate::client::{self, Client, ClientError};
use crate::common::{Common, check_file_limit, first_source, peak_rss_of, rss_of, target};
use crate::driver::{self, Plan, Scenario};
use crate::progress::Counters;
use crate::report::Report;
use crate::stats::{Stats, Traffic};
use std::process::ExitCode;
use std::time::Instant;
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::units::parse_size;

/// The options of `loadtest large`.
#[derive(clap::Args)]
pub(crate) struct Args {
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
    /// Send the same bytes over plain TCP, without WebSocket framing, to a TCP echo server
    /// (`loadtest tcp-echo-server`) at the host and port of --url, and read them back.
    #[arg(long, conflicts_with_all = ["subscribers", "compression"])]
    raw_tcp: bool,
}

/// Runs `loadtest large`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        size,
        count,
        subscribers,
        server_pid,
        raw_tcp,
    } = args;
    if !(8..=(2 << 30)).contains(&size) {
        return Err("--size must be between 8 bytes and 2GiB".into());
    }
    let size = size as usize;
    if raw_tcp {
        return crate::raw::large::run(&common, size, count, server_pid);
    }
    let topic = "loadtest-large".to_string();
    // the message, after its topic when fanned out
    let base = common
        .target_at(&common.url)?
        .expecting(1 + topic.len() + size.max(8));
    let plans: Vec<Plan> = match subscribers {
        None => vec![Plan {
            target: target(&common, "/echo", None)?.expecting(size.max(8)),
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
    let baseline = server_pid.and_then(rss_of);
    let until = Instant::now() + common.duration;
    let counters = Counters::default();
    let mut scenario = Large::new(subscribers.map(|_| topic), size, count, plans.len(), until);
    driver::drive(&plans, 0, 7, &counters, &mut scenario).map_err(|e| e.to_string())?;
    scenario.finish();
    let peak = server_pid.and_then(peak_rss_of);
    let shape = Shape {
        size,
        count,
        receivers: subscribers.unwrap_or(1),
        conns: plans.len(),
    };
    let times = scenario.started.zip(scenario.finished_at);
    report(&common, &scenario.stats, &shape, times, (baseline, peak)).print()
}

/// What a large run sends: `count` messages of `size` bytes, each to `receivers`, over `conns`
/// connections.
pub(crate) struct Shape {
    /// Bytes per message.
    pub(crate) size: usize,
    /// Messages sent.
    pub(crate) count: u64,
    /// Receivers of each message.
    pub(crate) receivers: usize,
    /// Connections of the run.
    pub(crate) conns: usize,
}

/// The report of a large run: `times` is when the first message started to go out and when the
/// last expected one arrived (`None` when not all arrived: no time nor rate to show), `rss` the
/// server's resident memory before the run and its peak (VmHWM), when known.
pub(crate) fn report(
    common: &Common,
    stats: &Stats,
    shape: &Shape,
    times: Option<(Instant, Instant)>,
    rss: (Option<u64>, Option<u64>),
) -> Report {
    let &Shape {
        size,
        count,
        receivers,
        conns,
    } = shape;
    let receivers = receivers as f64;
    let mut report = Report::new("large", common, stats, conns)
        .with("message_bytes", size as f64)
        .with("messages", count as f64)
        .with("receivers", receivers);
    // a run whose messages did not all arrive has no time or rate to show (was inf and 0)
    if let Some((s, f)) = times {
        let secs = (f - s).as_secs_f64().max(1e-6);
        report = report.with("seconds", secs).with(
            "mib_per_sec_delivered",
            size as f64 * count as f64 * receivers / secs / (1 << 20) as f64,
        );
    }
    if let (Some(b), Some(p)) = rss {
        report = report
            .with("server_rss_before_bytes", b as f64)
            .with("server_peak_rss_bytes", p as f64)
            .with(
                "server_peak_over_message",
                p.saturating_sub(b) as f64 / size as f64,
            );
    }
    report
}

/// Writes the payload of message `seq` into `out`: 256-byte blocks of a fixed pattern, each
/// XORed with a byte derived from the block number and `seq`, so a shifted, truncated or mixed-up
/// payload is caught, at memory speed.
pub(crate) fn fill_pattern(seq: u64, out: &mut [u8]) {
    let base: [u8; 256] = std::array::from_fn(|k| (k as u8).wrapping_mul(31));
    for (c, chunk) in out.chunks_mut(256).enumerate() {
        let x = block_key(seq, c);
        for (b, k) in chunk.iter_mut().zip(base) {
            *b = k ^ x;
        }
    }
}

/// Whether `data` is the payload [`fill_pattern`] writes for message `seq`.
pub(crate) fn check_pattern(seq: u64, data: &[u8]) -> bool {
    let base: [u8; 256] = std::array::from_fn(|k| (k as u8).wrapping_mul(31));
    data.chunks(256).enumerate().all(|(c, chunk)| {
        let x = block_key(seq, c);
        chunk
            .iter()
            .zip(base)
            .fold(0u8, |acc, (b, k)| acc | (b ^ k ^ x))
            == 0
    })
}

fn block_key(seq: u64, block: usize) -> u8 {
    (block as u8)
        ^ ((block >> 8) as u8).rotate_left(3)
        ^ ((block >> 16) as u8).rotate_left(5)
        ^ (seq as u8).wrapping_mul(7)
}

/// One large-message run: connection 0 sends, the others (or 0 itself, for echo) receive.
struct Large {
    /// `Some(topic)`: fan out through `/ws`; `None`: echo.
    topic: Option<Vec<u8>>,
    size: usize,
    count: u64,
    conns: usize,
    opened: usize,
    /// Messages received, per connection.
    got: Vec<u64>,
    /// When the first message was sent.
    started: Option<Instant>,
    /// When the last expected message arrived.
    finished_at: Option<Instant>,
    until: Instant,
    /// Results.
    stats: Stats,
}

impl Large {
    /// `count` messages of `size` bytes over `conns` connections.
    fn new(topic: Option<String>, size: usize, count: u64, conns: usize, until: Instant) -> Large {
        Large {
            topic: topic.map(String::into_bytes),
            size,
            count,
            conns,
            opened: 0,
            got: vec![0; conns],
            started: None,
            finished_at: None,
            until,
            stats: Stats::new(),
        }
    }

    fn receivers(&self) -> std::ops::Range<usize> {
        if self.topic.is_some() {
            1..self.conns
        } else {
            0..1
        }
    }

    /// Writes message `seq` into `m` (exactly [`Large::wire_len`] bytes).
    fn fill(&self, seq: u64, m: &mut [u8]) {
        let mut at = 0;
        if let Some(t) = &self.topic {
            m[0] = t.len() as u8;
            m[1..1 + t.len()].copy_from_slice(t);
            at = 1 + t.len();
        }
        m[at..at + 8].copy_from_slice(&seq.to_le_bytes());
        fill_pattern(seq, &mut m[at + 8..]);
    }

    /// The length of one message on the wire, before framing.
    fn wire_len(&self) -> usize {
        self.topic.as_ref().map_or(0, |t| 1 + t.len()) + self.size.max(8)
    }

    fn check(&mut self, data: &[u8]) -> bool {
        let head = self.topic.as_ref().map_or(0, |t| 1 + t.len());
        if data.len() != head + self.size.max(8) {
            return false;
        }
        let seq = u64::from_le_bytes(data[head..head + 8].try_into().expect("8 bytes"));
        check_pattern(seq, &data[head + 8..])
    }
}

impl Large {
    /// Counts what never arrived (call once the run is over).
    fn finish(&mut self) {
        for r in self.receivers() {
            if self.got[r] < self.count {
                self.stats.lost += self.count - self.got[r];
                self.got[r] = self.count;
            }
        }
    }
}

impl Scenario for Large {
    fn on_open(&mut self, _i: usize, _client: &mut Client, _now: Instant) {
        self.opened += 1;
        self.stats.opened += 1;
    }

    fn on_message(&mut self, i: usize, _client: &mut Client, message: Message, now: Instant) {
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
                self.stats.unexpected += 1;
                return;
            }
        };
        if !self.receivers().contains(&i) {
            self.stats.unexpected += 1;
            return;
        }
        if self.check(&data) {
            self.stats.received += 1;
        } else {
            self.stats.mismatched += 1;
        }
        if let Some(t) = self.started {
            self.stats.record((now - t).as_micros() as u64);
        }
        self.got[i] += 1;
        if self.receivers().all(|r| self.got[r] >= self.count) {
            self.finished_at = Some(now);
        }
    }

    fn on_end(&mut self, i: usize, error: Option<ClientError>) {
        if self.receivers().contains(&i) && self.got[i] < self.count {
            self.stats.lost += self.count - self.got[i];
            self.got[i] = self.count;
        }
        if let Some(e) = error {
            self.stats.error(e.to_string());
        }
    }

    fn tick(&mut self, clients: &mut [Option<Client>], now: Instant, touched: &mut Vec<usize>) {
        if self.started.is_some() || self.opened < self.conns {
            return;
        }
        let Some(Some(sender)) = clients.first_mut().map(|c| c.as_mut()) else {
            return;
        };
        let len = self.wire_len();
        for seq in 0..self.count {
            sender.send_with(OpCode::Binary, len, |m| self.fill(seq, m));
            self.stats.sent += 1;
        }
        // the clock starts once the messages are built, when they start to go out
        self.started = Some(Instant::now());
        let _ = now;
        touched.push(0);
    }

    fn finished(&self, now: Instant) -> bool {
        self.finished_at.is_some() || now >= self.until
    }

    fn traffic(&mut self) -> Option<&mut Traffic> {
        Some(&mut self.stats.traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_catches_shifts_and_mix_ups() {
        let mut a = vec![0u8; 300_000];
        fill_pattern(3, &mut a);
        assert!(check_pattern(3, &a));
        assert!(!check_pattern(4, &a), "another message");
        assert!(!check_pattern(3, &a[1..]), "shifted by one");
        assert!(!check_pattern(3, &a[256..]), "shifted by a block");
        assert!(!check_pattern(3, &a[65536..]), "shifted by 64 KiB");
        let mut b = a.clone();
        b[123_456] ^= 1;
        assert!(!check_pattern(3, &b), "one flipped bit");
    }
}
