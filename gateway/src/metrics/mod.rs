//! Counters kept per worker, with typed labels, and the Prometheus text they are shown in.
//!
//! Each worker writes only its own [`WorkerMetrics`] (relaxed atomics on a cache line of their
//! own, so workers never contend); a reader sums them. Every label is an enum ([`Counter`],
//! [`Failure`], [`MessageKind`], [`CloseLabel`]) declared once with its name, so a counter
//! cannot be misspelt into another and `/metrics` lists every value, zero or not. This room
//! knows nothing of the rooms it counts for: the node composes the exposition
//! ([`Exposition`]) from these counters and the hub's and the cluster's gauges.

mod labels;

pub(crate) use labels::{CloseLabel, Counter, Failure, MessageKind};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use wsgate_core::close::CloseCode;

/// One worker's counters: written by that worker only, read by any thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerMetrics {
    /// Open connections (WebSocket and HTTP).
    connections_open: AtomicI64,
    /// Frames queued to local subscribers (shown per worker).
    fanout_deliveries: AtomicU64,
    /// The worker sends through io_uring (`io-uring`, and the kernel allowed a ring).
    io_uring: AtomicBool,
    counters: [AtomicU64; Counter::COUNT],
    failures: [AtomicU64; Failure::COUNT],
    messages_in: [AtomicU64; MessageKind::COUNT],
    bytes_in: [AtomicU64; MessageKind::COUNT],
    messages_out: [AtomicU64; MessageKind::COUNT],
    closes_sent: [AtomicU64; CloseLabel::COUNT],
    closes_received: [AtomicU64; CloseLabel::COUNT],
}

/// Adds `n` to a counter of a [`WorkerMetrics`]. Only the worker that owns the counters writes
/// them, so a plain load and store do (readers on other threads see each value whole): no
/// locked add on the path of every message.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl WorkerMetrics {
    /// Adds one to `counter`.
    pub(crate) fn inc(&self, counter: Counter) {
        bump(&self.counters[counter as usize], 1);
    }

    /// Adds `n` to `counter`.
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        bump(&self.counters[counter as usize], n);
    }

    /// Counts a refused request.
    pub(crate) fn failure(&self, reason: Failure) {
        bump(&self.failures[reason as usize], 1);
    }

    /// Counts a message received, and its payload bytes.
    pub(crate) fn message_in(&self, kind: MessageKind, bytes: usize) {
        bump(&self.messages_in[kind as usize], 1);
        bump(&self.bytes_in[kind as usize], bytes as u64);
    }

    /// Counts `n` frames sent.
    pub(crate) fn messages_out(&self, kind: MessageKind, n: u64) {
        bump(&self.messages_out[kind as usize], n);
    }

    /// Counts `n` frames of `kind` queued to subscribers by a fanout.
    pub(crate) fn delivered(&self, kind: MessageKind, n: u64) {
        bump(&self.fanout_deliveries, n);
        self.messages_out(kind, n);
    }

    /// Frames queued to subscribers by fanouts.
    pub(crate) fn fanout_deliveries(&self) -> u64 {
        read(&self.fanout_deliveries)
    }

    /// Counts a close frame sent.
    pub(crate) fn close_sent(&self, code: Option<CloseCode>) {
        if let Some(label) = CloseLabel::of(code) {
            bump(&self.closes_sent[label as usize], 1);
        }
    }

    /// Counts a close frame received.
    pub(crate) fn close_received(&self, code: Option<CloseCode>) {
        if let Some(label) = CloseLabel::of(code) {
            bump(&self.closes_received[label as usize], 1);
        }
    }

    /// Counts a connection accepted and open.
    pub(crate) fn connection_opened(&self) {
        self.inc(Counter::ConnectionsTotal);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed.
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Says whether the worker's sends go through io_uring.
    pub(crate) fn set_io_uring(&self, on: bool) {
        self.io_uring.store(on, Ordering::Relaxed);
    }

    /// Connections open now.
    pub(crate) fn connections_open(&self) -> i64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// The value of `counter`.
    pub(crate) fn get(&self, counter: Counter) -> u64 {
        read(&self.counters[counter as usize])
    }

    /// Messages received of `kind`.
    pub(crate) fn messages_in_of(&self, kind: MessageKind) -> u64 {
        read(&self.messages_in[kind as usize])
    }

    /// Payload bytes received in messages of `kind`.
    pub(crate) fn bytes_in_of(&self, kind: MessageKind) -> u64 {
        read(&self.bytes_in[kind as usize])
    }

    /// Frames sent of `kind`.
    pub(crate) fn messages_out_of(&self, kind: MessageKind) -> u64 {
        read(&self.messages_out[kind as usize])
    }

    /// Close frames sent with `label`.
    pub(crate) fn closes_sent_of(&self, label: CloseLabel) -> u64 {
        read(&self.closes_sent[label as usize])
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Prometheus text being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub(crate) fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(8192),
        }
    }

    /// Starts a family: its help and type lines.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A sample of the current family, with one label or none.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        label: Option<(&str, &str)>,
        value: impl std::fmt::Display,
    ) {
        match label {
            Some((k, v)) => {
                let _ = writeln!(self.out, "{name}{{{k}=\"{v}\"}} {value}");
            }
            None => {
                let _ = writeln!(self.out, "{name} {value}");
            }
        }
    }

    /// A family of one unlabelled sample.
    pub(crate) fn single(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        value: impl std::fmt::Display,
    ) {
        self.family(name, kind, help);
        self.sample(name, None, value);
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Writes every worker's counters, summed, into `out`.
pub(crate) fn render_workers(out: &mut Exposition, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();
    let open: i64 = workers.iter().map(|w| w.connections_open()).sum();
    out.single(
        "wsgate_connections_open",
        Kind::Gauge,
        "Open connections.",
        open,
    );
    out.single(
        "wsgate_io_uring_workers",
        Kind::Gauge,
        "Workers whose sends go out in io_uring submissions (io-uring on, and the kernel allowed a ring); the others send one by one.",
        sum(&|w| u64::from(w.io_uring.load(Ordering::Relaxed))),
    );
    for &c in Counter::ALL {
        out.single(c.text(), Kind::Counter, c.help(), sum(&|w| w.get(c)));
    }
    let name = "wsgate_handshake_failures_total";
    out.family(name, Kind::Counter, "Requests refused, by reason.");
    for &f in Failure::ALL {
        let n = sum(&|w| read(&w.failures[f as usize]));
        out.sample(name, Some(("reason", f.text())), n);
    }
    type Per<'a> = &'a dyn Fn(&WorkerMetrics, MessageKind) -> u64;
    let per_kind: [(&str, &str, Per); 3] = [
        (
            "wsgate_messages_in_total",
            "Messages received, by kind.",
            &|w, k| w.messages_in_of(k),
        ),
        (
            "wsgate_bytes_in_total",
            "Payload bytes received, by kind.",
            &|w, k| w.bytes_in_of(k),
        ),
        (
            "wsgate_messages_out_total",
            "Frames sent, by kind.",
            &|w, k| w.messages_out_of(k),
        ),
    ];
    for (name, help, f) in per_kind {
        out.family(name, Kind::Counter, help);
        for &k in MessageKind::ALL {
            out.sample(name, Some(("kind", k.text())), sum(&|w| f(w, k)));
        }
    }
    for (name, help, sent) in [
        (
            "wsgate_closes_sent_total",
            "Close frames sent, by code.",
            true,
        ),
        (
            "wsgate_closes_received_total",
            "Close frames received from peers, by code.",
            false,
        ),
    ] {
        out.family(name, Kind::Counter, help);
        for &l in CloseLabel::ALL {
            let n = sum(&|w| {
                let table = if sent {
                    &w.closes_sent
                } else {
                    &w.closes_received
                };
                read(&table[l as usize])
            });
            out.sample(name, Some(("code", l.text())), n);
        }
    }
    let name = "wsgate_fanout_deliveries_total";
    out.family(
        name,
        Kind::Counter,
        "Frames queued to subscribers, by worker.",
    );
    for (i, w) in workers.iter().enumerate() {
        out.sample(
            name,
            Some(("worker", &i.to_string())),
            w.fanout_deliveries(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_are_summed_across_workers() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        a.connection_opened();
        b.add(Counter::ConnectionsTotal, 2);
        a.failure(Failure::UnsupportedVersion);
        a.close_sent(Some(CloseCode::TRY_AGAIN_LATER));
        b.close_received(Some(CloseCode(4321)));
        b.close_received(None);
        let mut out = Exposition::new();
        render_workers(&mut out, &[a, b]);
        let text = out.finish();
        assert!(text.contains("wsgate_connections_total 3\n"), "{text}");
        assert!(text.contains("wsgate_connections_open 1\n"), "{text}");
        assert!(
            text.contains("wsgate_handshake_failures_total{reason=\"unsupported_version\"} 1\n")
        );
        assert!(text.contains("wsgate_closes_sent_total{code=\"1013\"} 1\n"));
        assert!(text.contains("wsgate_closes_received_total{code=\"4xxx\"} 1\n"));
        assert!(text.contains("wsgate_closes_received_total{code=\"none\"} 1\n"));
        for f in Failure::ALL {
            assert!(
                text.contains(&format!("reason=\"{}\"", f.text())),
                "every reason is listed"
            );
        }
        // every sample line is `name{labels} value` or `name value`
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<i64>().unwrap();
        }
    }

    #[test]
    fn every_http_error_has_its_own_reason() {
        use wsgate_core::Error as E;
        for e in [
            E::HttpMalformed("x"),
            E::HeadersTooLarge,
            E::TooManyHeaders,
            E::MethodNotAllowed,
            E::HttpVersion,
            E::MissingHost,
            E::NotWebSocketUpgrade,
            E::MissingConnectionUpgrade,
            E::BadWebSocketKey,
            E::UnsupportedVersion,
            E::Hixie76,
            E::BodyTooLarge,
            E::LengthRequired,
            E::BadHeader("x"),
            E::BadProxyHeader("x"),
        ] {
            assert!(e.http_status().is_some());
            assert_eq!(Failure::of(&e).text(), e.code(), "{e}");
        }
    }

    #[test]
    fn close_labels() {
        assert_eq!(CloseLabel::of(None), Some(CloseLabel::NoCode));
        assert_eq!(
            CloseLabel::of(Some(CloseCode::GOING_AWAY)),
            Some(CloseLabel::GoingAway)
        );
        assert_eq!(
            CloseLabel::of(Some(CloseCode(3500))),
            Some(CloseLabel::Registered)
        );
        assert_eq!(CloseLabel::of(Some(CloseCode(1005))), None);
        for l in CloseLabel::ALL {
            if let Ok(code) = l.text().parse::<u16>() {
                assert_eq!(CloseLabel::of(Some(CloseCode(code))), Some(*l));
            }
        }
    }
}
