//! Counters and a latency histogram per thread, merged at the end of a run, and the same
//! latencies second by second ([`timeline`]) for the plots of a `--report`.

pub(crate) mod timeline;

use hdrhistogram::Histogram;
use std::time::Duration;
use timeline::Timeline;

/// How long a run waits, after its deadline, for messages still in flight.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// What one thread saw.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    /// Connections whose upgrade succeeded.
    pub opened: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received and checked.
    pub received: u64,
    /// Messages that came back different from what was sent, or out of place.
    pub mismatched: u64,
    /// Messages expected and never received.
    pub lost: u64,
    /// Messages received twice or out of order.
    pub reordered: u64,
    /// Messages nobody expected.
    pub unexpected: u64,
    /// Close codes the server sent.
    pub closed_by_server: Vec<u16>,
    /// Connection errors, by message.
    pub errors: Vec<String>,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// The latency samples second by second.
    pub timeline: Timeline,
    /// Bytes on the wire and in the messages, for the scenarios that count them.
    pub traffic: Traffic,
}

/// Bytes on the wire against bytes in the messages, counted by each client after its opening
/// handshake: what permessage-deflate saves (or what the framing costs without it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Bytes read from the socket after the 101: frames with their headers, as they came.
    pub wire_in: u64,
    /// Data messages (text and binary) received.
    pub messages_in: u64,
    /// Their payload bytes, after inflation.
    pub payload_in: u64,
    /// Data messages received compressed (RSV1).
    pub compressed_in: u64,
    /// Bytes of the frames queued to send, with their headers (not the upgrade request).
    pub wire_out: u64,
    /// Data messages sent.
    pub messages_out: u64,
    /// Their payload bytes, before compression.
    pub payload_out: u64,
    /// Data messages sent compressed.
    pub compressed_out: u64,
}

impl Traffic {
    /// Adds `o` to these counts.
    pub(crate) fn add(&mut self, o: &Traffic) {
        self.wire_in += o.wire_in;
        self.messages_in += o.messages_in;
        self.payload_in += o.payload_in;
        self.compressed_in += o.compressed_in;
        self.wire_out += o.wire_out;
        self.messages_out += o.messages_out;
        self.payload_out += o.payload_out;
        self.compressed_out += o.compressed_out;
    }

    /// Whether nothing was counted.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Traffic::default()
    }
}

impl Stats {
    /// Empty counters (and the coarse clock of [`timeline`] started, if it was not).
    pub(crate) fn new() -> Stats {
        timeline::start_clock();
        Stats {
            opened: 0,
            sent: 0,
            received: 0,
            mismatched: 0,
            lost: 0,
            reordered: 0,
            unexpected: 0,
            closed_by_server: Vec::new(),
            errors: Vec::new(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            timeline: Timeline::new(),
            traffic: Traffic::default(),
        }
    }

    /// Records one latency sample, in microseconds (in the run's histogram and in the current
    /// second's).
    #[inline]
    pub(crate) fn record(&mut self, micros: u64) {
        self.latency.saturating_record(micros.max(1));
        self.timeline.record(micros);
    }

    /// Records a connection error (kept up to 100 distinct samples).
    pub(crate) fn error(&mut self, e: String) {
        if self.errors.len() < 100 {
            self.errors.push(e);
        } else {
            self.errors[99] = format!("... and more ({e})");
        }
    }

    /// Adds another thread's counters to these.
    pub(crate) fn merge(&mut self, o: &Stats) {
        self.opened += o.opened;
        self.sent += o.sent;
        self.received += o.received;
        self.mismatched += o.mismatched;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
        self.closed_by_server.extend_from_slice(&o.closed_by_server);
        for e in &o.errors {
            self.error(e.clone());
        }
        self.latency.add(&o.latency).expect("same bounds");
        self.timeline.merge(&o.timeline);
        self.traffic.add(&o.traffic);
    }

    /// Every thread's counters added up.
    pub(crate) fn merged<'a>(all: impl Iterator<Item = &'a Stats>) -> Stats {
        let mut s = Stats::new();
        for t in all {
            s.merge(t);
        }
        s
    }

    /// Whether the run saw a correctness failure.
    pub(crate) fn correctness_failures(&self) -> u64 {
        self.mismatched + self.lost + self.reordered + self.unexpected
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}
