//! `loadtest conns`: open K idle connections at a rate, hold them, and report the connect
//! rate, handshake latency and (with `--server-pid`) the gateway's memory per connection.

use crate::client::{Client, ClientError};
use crate::driver::Scenario;
use crate::stats::Stats;
use std::time::{Duration, Instant};
use wsgate_core::frame::Message;

/// One thread's share of a conns run.
pub struct Conns {
    started: Vec<Option<Instant>>,
    pending: usize,
    hold: Duration,
    all_open_at: Option<Instant>,
    /// When the first connection started.
    pub first: Option<Instant>,
    /// When the last connection opened.
    pub last_open: Option<Instant>,
    /// Results (latency = handshake time).
    pub stats: Stats,
}

impl Conns {
    /// `count` connections held for `hold` once all are open.
    pub fn new(count: usize, hold: Duration) -> Conns {
        Conns {
            started: vec![None; count],
            pending: count,
            hold,
            all_open_at: None,
            first: None,
            last_open: None,
            stats: Stats::new(),
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

    fn on_open(&mut self, i: usize, _client: &mut Client, now: Instant) {
        self.stats.opened += 1;
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

/// The resident set of a process, in bytes, from /proc.
pub fn rss_of(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// The peak resident set of a process since it started (VmHWM), in bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's open-file limit to its hard limit; returns the limit in force.
pub fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a valid, owned rlimit struct.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
