//! `loadtest echo --raw-tcp`: C connections each keep W messages of S bytes in flight against a
//! TCP echo server. The messages are those of `loadtest echo` in binary (sequence number, send
//! time, a filler byte per connection and message: [`crate::echo::put_binary`]), back to back
//! on the stream with no framing; the client cuts the echoed stream every S bytes and checks
//! each piece against the oldest message in flight, so a lost, duplicated, reordered or
//! corrupted byte shows as a mismatch.

use super::{Link, SCRATCH, endpoints};
use crate::common::Common;
use crate::echo::{check_binary, put_binary};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::{GRACE, Stats};
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Runs `loadtest echo --raw-tcp` with `conns` connections, `window` messages of `size` bytes
/// in flight on each.
pub(crate) fn run(
    common: &Common,
    conns: usize,
    window: usize,
    size: usize,
) -> Result<ExitCode, String> {
    let ends = endpoints(common, conns)?;
    let threads = common.threads as usize;
    let epoch = Instant::now();
    let run = Params {
        size,
        window,
        epoch,
        until: epoch + common.duration,
    };
    let counters = Arc::new(Counters::default());
    let bar = Progress::start("echo", common.duration, counters.clone());
    let results: Vec<Result<Stats, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<_> = ends
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % threads == t)
                    .map(|(i, &(addr, source))| (i as u64, addr, source))
                    .collect();
                let counters = &counters;
                s.spawn(move || one_thread(&mine, run, counters).map_err(|e| e.to_string()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a loadtest thread panicked".into()))
            })
            .collect()
    });
    drop(bar);
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let stats = Stats::merged(results.iter());
    let rate = stats.received as f64 / common.duration.as_secs_f64();
    Report::new("echo", common, &stats, conns)
        .with("connections", conns as f64)
        .with("messages_per_sec", rate)
        .with_json("transport", serde_json::json!("raw-tcp"))
        .row(format!("{:<28} raw TCP, no WebSocket framing", "transport"))
        .print()
}

/// What every connection of a run does.
#[derive(Clone, Copy)]
struct Params {
    size: usize,
    window: usize,
    /// The run's start: send times are counted from it.
    epoch: Instant,
    /// No message is sent after this.
    until: Instant,
}

/// One connection and its messages.
struct Conn {
    link: Link,
    /// Mixed into the filler byte: the connection's number in the run.
    key: u64,
    /// The sequence number of the next message to send.
    next_send: u64,
    /// The sequence number of the next message expected back.
    next_recv: u64,
    /// The start of a message whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Conn {
    fn in_flight(&self) -> u64 {
        self.next_send - self.next_recv
    }

    /// Queues the next message.
    fn send_next(&mut self, p: &Params, stats: &mut Stats, now: Instant) {
        let sent_ns = (now - p.epoch).as_nanos() as u64;
        put_binary(self.link.out(), p.size, self.key, self.next_send, sent_ns);
        self.next_send += 1;
        stats.sent += 1;
    }

    /// Checks one echoed message (exactly `size` bytes) and sends the next while the run lasts.
    fn on_message(&mut self, data: &[u8], p: &Params, stats: &mut Stats, now: Instant) {
        if self.in_flight() == 0 {
            stats.unexpected += 1;
            return;
        }
        let seq = self.next_recv;
        self.next_recv += 1;
        stats.received += 1;
        match check_binary(data, p.size, self.key, seq) {
            Some(sent_ns) => {
                let now_ns = (now - p.epoch).as_nanos() as u64;
                stats.record(now_ns.saturating_sub(sent_ns) / 1000);
            }
            None => stats.mismatched += 1,
        }
        if now < p.until {
            self.send_next(p, stats, now);
        }
    }

    /// Cuts `bytes`, the next bytes of the echoed stream, into messages.
    fn consume(&mut self, mut bytes: &[u8], p: &Params, stats: &mut Stats, now: Instant) {
        let size = p.size;
        if !self.partial.is_empty() {
            let take = (size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < size {
                return;
            }
            let whole = std::mem::take(&mut self.partial);
            self.on_message(&whole, p, stats, now);
            self.partial = whole;
            self.partial.clear();
        }
        while bytes.len() >= size {
            self.on_message(&bytes[..size], p, stats, now);
            bytes = &bytes[size..];
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// One thread's share of the run: connections `(key, address, source)`. Returns its counts.
fn one_thread(
    mine: &[(u64, SocketAddr, Option<IpAddr>)],
    p: Params,
    counters: &Counters,
) -> io::Result<Stats> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut stats = Stats::new();
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(mine.len());
    for (j, &(key, addr, source)) in mine.iter().enumerate() {
        match Link::connect(addr, source) {
            Ok(mut link) => {
                poll.registry().register(
                    &mut link.stream,
                    Token(j),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                conns.push(Some(Conn {
                    link,
                    key,
                    next_send: 0,
                    next_recv: 0,
                    partial: Vec::with_capacity(p.size),
                }));
            }
            Err(e) => {
                stats.error(format!("connect: {e}"));
                conns.push(None);
            }
        }
    }
    let mut scratch = vec![0u8; SCRATCH];
    loop {
        let now = Instant::now();
        // after the deadline, wait for what is in flight, at most GRACE
        let drained = conns.iter().flatten().all(|c| c.in_flight() == 0);
        if now >= p.until + GRACE || (now >= p.until && drained) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let now = Instant::now();
        for event in events.iter() {
            let j = event.token().0;
            let Some(c) = conns[j].as_mut() else {
                continue;
            };
            let was_open = c.link.open;
            let before = (stats.sent, stats.received);
            let result = serve(c, &p, &mut stats, &mut scratch, now);
            if !was_open && c.link.open {
                counters.open.fetch_add(1, Ordering::Relaxed);
            }
            counters
                .sent
                .fetch_add(stats.sent - before.0, Ordering::Relaxed);
            counters
                .received
                .fetch_add(stats.received - before.1, Ordering::Relaxed);
            if let Err(e) = result {
                end(&mut conns[j], &mut stats, Some(e.to_string()), counters);
            }
        }
    }
    for slot in &mut conns {
        let never = slot.as_ref().is_some_and(|c| !c.link.open);
        let why = never.then(|| "did not connect before the end of the run".to_string());
        end(slot, &mut stats, why, counters);
    }
    Ok(stats)
}

/// Handles an event on connection `c`: the connect completing, echoed bytes, room to write.
fn serve(
    c: &mut Conn,
    p: &Params,
    stats: &mut Stats,
    scratch: &mut [u8],
    now: Instant,
) -> io::Result<()> {
    if !c.link.open {
        if !c.link.check_open()? {
            return Ok(());
        }
        stats.opened += 1;
        if now < p.until {
            for _ in 0..p.window {
                c.send_next(p, stats, now);
            }
        }
    }
    while let Some(n) = c.link.read_some(scratch)? {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        c.consume(&scratch[..n], p, stats, now);
    }
    if c.link.pending() > 0 {
        c.link.flush()?;
    }
    Ok(())
}

/// Ends connection `slot` (if still there): what it had in flight is lost; `error` says why
/// it ended early.
fn end(slot: &mut Option<Conn>, stats: &mut Stats, error: Option<String>, counters: &Counters) {
    if let Some(c) = slot.take() {
        stats.lost += c.in_flight();
        if c.link.open {
            counters.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if let Some(e) = error {
        stats.error(e);
    }
}
