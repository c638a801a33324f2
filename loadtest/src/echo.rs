//! `loadtest echo`: C connections each keep W messages of S bytes in flight against `/echo`;
//! every echoed payload is compared with what was sent, and round trips go into a histogram.
//! With `--raw-tcp` the same binary messages go over plain TCP, without WebSocket framing, to
//! a TCP echo server ([`crate::raw::echo`]): the baseline a WebSocket echo is compared with.
//! With `--payload json` each message carries JSON-like text after its head
//! ([`crate::payload`]), as compressible as real JSON, for `--compression`.

use crate::client::Client;
use crate::common::{Common, plans_to};
use crate::driver::{Scenario, on_threads};
use crate::payload::{JsonBody, Payload};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::{Stats, Traffic};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use wsgate_core::frame::{Message, OpCode};
use wsgate_core::units::parse_size;

/// The options of `loadtest echo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Message size in bytes (at least 16; 32 for text).
    #[arg(long, default_value_t = 20, value_parser = parse_size)]
    size: u64,
    /// Send text messages instead of binary.
    #[arg(long)]
    text: bool,
    /// What fills a message after its sequence number and send time: `fill`, one byte
    /// repeated (per connection and message), or `json`, JSON-like text that compresses like
    /// real JSON (for --compression).
    #[arg(long, value_enum, default_value_t = Payload::Fill)]
    payload: Payload,
    /// Send the same binary messages over plain TCP, without WebSocket framing, to a TCP echo
    /// server (`loadtest tcp-echo-server`) at the host and port of --url: the same bytes per
    /// message, back to back on the stream, every byte and the order checked.
    #[arg(long, conflicts_with_all = ["text", "compression", "payload"])]
    raw_tcp: bool,
}

/// Runs `loadtest echo`.
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let Args {
        common,
        conns,
        window,
        size,
        text,
        payload,
        raw_tcp,
    } = args;
    let size = size as usize;
    let min = if text { 32 } else { 16 };
    if size < min {
        return Err(format!(
            "--size must be at least {min} for {} echo",
            if text { "text" } else { "binary" }
        ));
    }
    if raw_tcp {
        return crate::raw::echo::run(&common, conns, window, size);
    }
    let plans = plans_to(&common, "/echo", conns, size)?;
    let json = (payload == Payload::Json).then(|| Arc::new(JsonBody::new(size)));
    let epoch = Instant::now();
    let until = epoch + common.duration;
    let counters = Arc::new(Counters::default());
    let _bar = Progress::start("echo", common.duration, counters.clone());
    let results = on_threads(
        &plans,
        common.threads as usize,
        &counters,
        |t, mine| {
            let mut e = Echo::new(mine.len(), size, window, !text, epoch, until, t);
            e.json = json.clone();
            e
        },
        |e| e.stats.clone(),
    )?;
    drop(_bar);
    let stats = Stats::merged(results.iter());
    let rate = stats.received as f64 / common.duration.as_secs_f64();
    Report::new("echo", &common, &stats, conns)
        .with("connections", conns as f64)
        .with("messages_per_sec", rate)
        .print()
}

/// One thread's share of an echo run.
struct Echo {
    /// The thread number, mixed into the filler so threads' payloads differ.
    thread: usize,
    size: usize,
    window: usize,
    binary: bool,
    epoch: Instant,
    until: Instant,
    /// Per connection: sequence numbers in flight, oldest first, and the next to send.
    conns: Vec<(VecDeque<u64>, u64)>,
    /// JSON-like bodies after the head (`--payload json`); none: the filler byte.
    json: Option<Arc<JsonBody>>,
    /// Results.
    stats: Stats,
}

impl Echo {
    /// A run of `conns` connections until `until`.
    fn new(
        conns: usize,
        size: usize,
        window: usize,
        binary: bool,
        epoch: Instant,
        until: Instant,
        thread: usize,
    ) -> Echo {
        Echo {
            thread,
            size,
            window,
            binary,
            epoch,
            until,
            conns: (0..conns).map(|_| (VecDeque::new(), 0)).collect(),
            json: None,
            stats: Stats::new(),
        }
    }

    /// The filler byte of a message: differs per connection and sequence number, so a payload
    /// delivered to the wrong connection or out of order is caught.
    fn fill(&self, conn: usize, seq: u64) -> u8 {
        let c = (conn + self.thread * 7) as u64;
        if self.binary {
            binary_fill(c, seq)
        } else {
            b'a' + ((c + seq) % 26) as u8
        }
    }

    /// Binary: seq and send time as little-endian u64s; text: the same as 32 hex digits.
    fn head_len(&self) -> usize {
        if self.binary { 16 } else { 32 }
    }

    fn payload(&self, conn: usize, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.size.max(32));
        if let Some(json) = &self.json {
            if self.binary {
                p.extend_from_slice(&seq.to_le_bytes());
                p.extend_from_slice(&sent_ns.to_le_bytes());
            } else {
                p.extend_from_slice(format!("{seq:016x}{sent_ns:016x}").as_bytes());
            }
            let key = (conn + self.thread * 7) as u64;
            let body = self.size.max(p.len()) - p.len();
            json.put(&mut p, body, key, seq);
        } else if self.binary {
            put_binary(
                &mut p,
                self.size,
                (conn + self.thread * 7) as u64,
                seq,
                sent_ns,
            );
        } else {
            p.extend_from_slice(format!("{seq:016x}{sent_ns:016x}").as_bytes());
            p.resize(self.size.max(p.len()), self.fill(conn, seq));
        }
        p
    }

    fn send_next(&mut self, i: usize, client: &mut Client, now: Instant) {
        let seq = self.conns[i].1;
        self.conns[i].1 += 1;
        self.conns[i].0.push_back(seq);
        let payload = self.payload(i, seq, (now - self.epoch).as_nanos() as u64);
        client.send(
            if self.binary {
                OpCode::Binary
            } else {
                OpCode::Text
            },
            &payload,
        );
        self.stats.sent += 1;
    }
}

impl Scenario for Echo {
    fn on_open(&mut self, i: usize, client: &mut Client, now: Instant) {
        self.stats.opened += 1;
        for _ in 0..self.window {
            self.send_next(i, client, now);
        }
    }

    fn on_message(&mut self, i: usize, client: &mut Client, message: Message, now: Instant) {
        let data = match message {
            Message::Binary(b) if self.binary => b,
            Message::Text(t) if !self.binary => t,
            Message::Close(c) => {
                self.stats
                    .closed_by_server
                    .push(c.map_or(1005, |c| c.code.0));
                return;
            }
            Message::Ping(_) | Message::Pong(_) => return,
            _ => {
                self.stats.mismatched += 1;
                return;
            }
        };
        let Some(seq) = self.conns[i].0.pop_front() else {
            self.stats.unexpected += 1;
            return;
        };
        let head = self.head_len();
        let (got_seq, sent_ns) = match data.get(..head) {
            Some(h) if self.binary => (read_u64(h, 0), read_u64(h, 8)),
            Some(h) => (hex_u64(&h[..16]), hex_u64(&h[16..])),
            None => (u64::MAX, 0),
        };
        let body = &data[head.min(data.len())..];
        let fill_ok = data.len() == self.size.max(head)
            && match &self.json {
                Some(json) => json.check(body, (i + self.thread * 7) as u64, seq),
                None => {
                    let fill = self.fill(i, seq);
                    body.iter().all(|&b| b == fill)
                }
            };
        if got_seq != seq || !fill_ok {
            self.stats.mismatched += 1;
        }
        let rtt = (now - self.epoch).as_nanos() as u64
            - sent_ns.min((now - self.epoch).as_nanos() as u64);
        self.stats.record(rtt / 1000);
        self.stats.received += 1;
        if now < self.until {
            self.send_next(i, client, now);
        }
    }

    fn on_end(&mut self, i: usize, error: Option<crate::client::ClientError>) {
        self.stats.lost += self.conns[i].0.len() as u64;
        self.conns[i].0.clear();
        if let Some(e) = error {
            self.stats.error(e.to_string());
        }
    }

    fn finished(&self, now: Instant) -> bool {
        // after the deadline, wait for what is in flight (bounded by the caller's grace)
        now >= self.until + crate::stats::GRACE
            || (now >= self.until && self.conns.iter().all(|(q, _)| q.is_empty()))
    }

    fn traffic(&mut self) -> Option<&mut Traffic> {
        Some(&mut self.stats.traffic)
    }
}

/// The filler byte of binary message `seq` of the connection keyed `key`: differs per
/// connection and sequence number, so a payload delivered to the wrong connection or out of
/// order is caught.
pub(crate) fn binary_fill(key: u64, seq: u64) -> u8 {
    (key as u8).wrapping_add(seq as u8)
}

/// Appends binary echo message `seq` of the connection keyed `key` to `out`: the sequence
/// number and the send time (nanoseconds since the run's start) as little-endian u64s, then
/// [`binary_fill`] up to `size` bytes (at least the 16 of the head).
pub(crate) fn put_binary(out: &mut Vec<u8>, size: usize, key: u64, seq: u64, sent_ns: u64) {
    let start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sent_ns.to_le_bytes());
    out.resize(start + size.max(16), binary_fill(key, seq));
}

/// The send time of binary echo message `seq` of the connection keyed `key` when `data` is
/// exactly that message (as [`put_binary`] wrote it); `None` when it is anything else.
pub(crate) fn check_binary(data: &[u8], size: usize, key: u64, seq: u64) -> Option<u64> {
    let fill = binary_fill(key, seq);
    let ok = data.len() == size.max(16)
        && read_u64(data, 0) == seq
        && data[16..].iter().all(|&b| b == fill);
    ok.then(|| read_u64(data, 8))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(u64::MAX, |s| {
        u64::from_le_bytes(s.try_into().expect("8 bytes"))
    })
}

fn hex_u64(b: &[u8]) -> u64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(u64::MAX)
}
