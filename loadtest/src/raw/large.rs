//! `loadtest large --raw-tcp`: `count` messages of `size` bytes written on one TCP connection to
//! an echo server and read back, every byte checked. The bytes are those of `loadtest large`'s
//! echo (the sequence number, then [`crate::large::fill_pattern`]) without the frame headers;
//! they are built before the clock starts, as the WebSocket run builds its frames, and read
//! back through the thread's scratch buffer into one buffer the size of a message, as the
//! WebSocket client does. The report is `loadtest large`'s.

use super::{Link, SCRATCH, endpoints};
use crate::common::{Common, peak_rss_of, rss_of};
use crate::large::{Shape, check_pattern, fill_pattern, report};
use crate::stats::Stats;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Runs `loadtest large --raw-tcp`; `server_pid` is the echo server's, to read its memory.
pub(crate) fn run(
    common: &Common,
    size: usize,
    count: u64,
    server_pid: Option<u32>,
) -> Result<ExitCode, String> {
    let (addr, source) = endpoints(common, 1)?[0];
    let total = size
        .checked_mul(count as usize)
        .filter(|&t| t <= 4 << 30)
        .ok_or("--size times --count must be at most 4GiB")?;
    let mut out = vec![0u8; total];
    for (seq, m) in out.chunks_mut(size).enumerate() {
        m[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        fill_pattern(seq as u64, &mut m[8..]);
    }
    let baseline = server_pid.and_then(rss_of);
    let mut stats = Stats::new();
    let mut link = Link::connect(addr, source).map_err(|e| format!("connect to {addr}: {e}"))?;
    *link.out() = out;
    let mut echo = Echo {
        size,
        count,
        got: 0,
        inbuf: Vec::new(),
        started: None,
        finished_at: None,
    };
    let until = Instant::now() + common.duration;
    if let Err(e) = echo.drive(&mut link, &mut stats, until) {
        stats.error(e.to_string());
    }
    stats.opened = u64::from(link.open);
    stats.lost += count - echo.got;
    let peak = server_pid.and_then(peak_rss_of);
    let shape = Shape {
        size,
        count,
        receivers: 1,
        conns: 1,
    };
    let times = echo.started.zip(echo.finished_at);
    report(common, &stats, &shape, times, (baseline, peak))
        .with_json("transport", serde_json::json!("raw-tcp"))
        .row(format!("{:<28} raw TCP, no WebSocket framing", "transport"))
        .print()
}

/// The receiving side of the run.
struct Echo {
    size: usize,
    count: u64,
    /// Messages read back.
    got: u64,
    /// The message being read back.
    inbuf: Vec<u8>,
    /// When the connection was up and the first byte could go out.
    started: Option<Instant>,
    /// When the last byte came back.
    finished_at: Option<Instant>,
}

impl Echo {
    /// Writes and reads until every message came back, the server closed the connection, or
    /// `until`.
    fn drive(&mut self, link: &mut Link, stats: &mut Stats, until: Instant) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(16);
        poll.registry().register(
            &mut link.stream,
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut scratch = vec![0u8; SCRATCH];
        while self.got < self.count && Instant::now() < until {
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            if events.is_empty() {
                continue;
            }
            if !link.open {
                if !link.check_open()? {
                    continue;
                }
                self.started = Some(Instant::now());
                stats.sent = self.count;
            }
            link.flush()?;
            while let Some(n) = link.read_some(&mut scratch)? {
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                self.take(&scratch[..n], stats);
                // keep the socket's send queue full while reading
                if link.pending() > 0 {
                    link.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Appends echoed bytes; checks each message once it is complete.
    fn take(&mut self, mut bytes: &[u8], stats: &mut Stats) {
        while !bytes.is_empty() {
            if self.inbuf.capacity() == 0 {
                self.inbuf.reserve_exact(self.size);
            }
            let n = (self.size - self.inbuf.len()).min(bytes.len());
            self.inbuf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.inbuf.len() < self.size {
                continue;
            }
            let now = Instant::now();
            let seq = self.got;
            self.got += 1;
            if self.got == self.count {
                self.finished_at = Some(now);
            }
            let ok = self.inbuf[..8] == seq.to_le_bytes() && check_pattern(seq, &self.inbuf[8..]);
            if ok {
                stats.received += 1;
            } else {
                stats.mismatched += 1;
            }
            if let Some(t) = self.started {
                stats.record((now - t).as_micros() as u64);
            }
            self.inbuf.clear();
            if self.got == self.count && !bytes.is_empty() {
                stats.unexpected += 1;
                return;
            }
        }
    }
}
