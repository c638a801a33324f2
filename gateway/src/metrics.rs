//! Counters kept per worker and summed when `/metrics` is read.
//!
//! Each worker writes only its own [`WorkerMetrics`] (relaxed atomics on a cache line of their
//! own, so workers never contend); a reader sums them. The exposition is the Prometheus text
//! format.

use crate::hub::Hub;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a handshake or HTTP request was refused; the `reason` label of
/// `wsgate_handshake_failures_total`.
pub const FAILURE_REASONS: &[&str] = &[
    "http_malformed",
    "headers_too_large",
    "too_many_headers",
    "method_not_allowed",
    "http_version",
    "missing_host",
    "not_websocket_upgrade",
    "missing_connection_upgrade",
    "bad_websocket_key",
    "unsupported_version",
    "hixie76",
    "body_too_large",
    "bad_header",
    "not_found",
    "draining",
    "timeout",
    "unauthorized",
    "bad_request",
    "too_many_connections",
    "too_many_from_address",
    "origin",
    "forbidden",
    "bad_proxy_header",
    "other",
];

/// Kinds of messages, the `kind` label of the message counters.
pub const MESSAGE_KINDS: &[&str] = &["text", "binary", "control"];

/// Close codes a peer sends, the `code` label of `wsgate_closes_received_total`: the RFC's codes
/// one by one, the registered (3000-3999) and private (4000-4999) ranges together, and `none`
/// for a close without a code.
pub const RECEIVED_CLOSE_CODES: &[&str] = &[
    "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1010", "1011", "1012", "1013", "1014",
    "3xxx", "4xxx", "none",
];

/// Close codes the gateway sends, the `code` label of `wsgate_closes_sent_total`.
pub const CLOSE_CODES: &[u16] = &[1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerMetrics {
    /// Open connections (WebSocket and HTTP).
    pub connections_open: AtomicI64,
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// WebSocket sessions opened.
    pub upgrades_total: AtomicU64,
    /// Refusals by reason, indexed like [`FAILURE_REASONS`].
    pub handshake_failures: [AtomicU64; FAILURE_REASONS.len()],
    /// Messages received by kind, indexed like [`MESSAGE_KINDS`].
    pub messages_in: [AtomicU64; 3],
    /// Payload bytes received by kind.
    pub bytes_in: [AtomicU64; 3],
    /// Frames sent by kind.
    pub messages_out: [AtomicU64; 3],
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Publishes accepted (WebSocket and HTTP).
    pub publishes_total: AtomicU64,
    /// Frames queued to local subscribers.
    pub fanout_deliveries: AtomicU64,
    /// Subscribers closed because their outbox passed the limit.
    pub slow_consumer_closes: AtomicU64,
    /// Close frames sent by code, indexed like [`CLOSE_CODES`].
    pub closes_sent: [AtomicU64; 9],
    /// Close frames received by code, indexed like [`RECEIVED_CLOSE_CODES`].
    pub closes_received: [AtomicU64; 15],
    /// Envelope errors answered with an error message.
    pub message_errors: AtomicU64,
    /// HTTP requests answered (not upgrades).
    pub http_requests: AtomicU64,
    /// Publishes refused for going over the connection's rate.
    pub rate_limited: AtomicU64,
    /// Subscribes and publishes refused by the connection's token.
    pub forbidden: AtomicU64,
    /// Connections closed because handling them hit a bug (a caught panic).
    pub internal_errors: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl WorkerMetrics {
    /// Counts a refused request.
    pub fn failure(&self, reason: &str) {
        let i = FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(FAILURE_REASONS.len() - 1);
        inc(&self.handshake_failures[i]);
    }

    /// Counts a close frame received, with its code if it had one.
    pub fn close_received(&self, code: Option<u16>) {
        let label = match code {
            None => "none".to_string(),
            Some(3000..=3999) => "3xxx".to_string(),
            Some(4000..=4999) => "4xxx".to_string(),
            Some(c) => c.to_string(),
        };
        if let Some(i) = RECEIVED_CLOSE_CODES.iter().position(|c| *c == label) {
            inc(&self.closes_received[i]);
        }
    }

    /// Counts a close frame sent.
    pub fn close_sent(&self, code: u16) {
        if let Some(i) = CLOSE_CODES.iter().position(|c| *c == code) {
            inc(&self.closes_sent[i]);
        }
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Renders every worker's counters, and the hub's state, as Prometheus text.
pub fn render(workers: &[std::sync::Arc<WorkerMetrics>], hub: &Hub, draining: bool) -> String {
    let mut out = String::with_capacity(4096);
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();
    let open: i64 = workers
        .iter()
        .map(|w| w.connections_open.load(Ordering::Relaxed))
        .sum();
    let _ = writeln!(
        out,
        "# HELP wsgate_connections_open Open connections.\n# TYPE wsgate_connections_open gauge\nwsgate_connections_open {open}"
    );
    type Getter<'a> = &'a dyn Fn(&WorkerMetrics) -> u64;
    let simple: [(&str, &str, &str, Getter); 10] = [
        (
            "wsgate_rate_limited_total",
            "counter",
            "Publishes refused for going over the rate.",
            &|w| get(&w.rate_limited),
        ),
        (
            "wsgate_forbidden_total",
            "counter",
            "Subscribes and publishes the token did not allow.",
            &|w| get(&w.forbidden),
        ),
        (
            "wsgate_internal_errors_total",
            "counter",
            "Connections closed with 1011 after a bug while handling them.",
            &|w| get(&w.internal_errors),
        ),
        (
            "wsgate_connections_total",
            "counter",
            "Connections accepted.",
            &|w| get(&w.connections_total),
        ),
        (
            "wsgate_upgrades_total",
            "counter",
            "WebSocket sessions opened.",
            &|w| get(&w.upgrades_total),
        ),
        (
            "wsgate_bytes_out_total",
            "counter",
            "Bytes written to clients.",
            &|w| get(&w.bytes_out),
        ),
        (
            "wsgate_publishes_total",
            "counter",
            "Publishes accepted.",
            &|w| get(&w.publishes_total),
        ),
        (
            "wsgate_slow_consumer_closes_total",
            "counter",
            "Subscribers closed for falling behind.",
            &|w| get(&w.slow_consumer_closes),
        ),
        (
            "wsgate_message_errors_total",
            "counter",
            "Control messages answered with an error.",
            &|w| get(&w.message_errors),
        ),
        (
            "wsgate_http_requests_total",
            "counter",
            "Plain HTTP requests answered.",
            &|w| get(&w.http_requests),
        ),
    ];
    for (name, kind, help, f) in simple {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            sum(f)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_handshake_failures_total Requests refused, by reason.\n# TYPE wsgate_handshake_failures_total counter"
    );
    for (i, reason) in FAILURE_REASONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "wsgate_handshake_failures_total{{reason=\"{reason}\"}} {}",
            sum(&|w| get(&w.handshake_failures[i]))
        );
    }
    for (name, help, field) in [
        ("wsgate_messages_in_total", "Messages received, by kind.", 0),
        (
            "wsgate_bytes_in_total",
            "Payload bytes received, by kind.",
            1,
        ),
        ("wsgate_messages_out_total", "Frames sent, by kind.", 2),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, kind) in MESSAGE_KINDS.iter().enumerate() {
            let v = sum(&|w| match field {
                0 => get(&w.messages_in[i]),
                1 => get(&w.bytes_in[i]),
                _ => get(&w.messages_out[i]),
            });
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_closes_sent_total Close frames sent, by code.\n# TYPE wsgate_closes_sent_total counter"
    );
    for (i, code) in CLOSE_CODES.iter().enumerate() {
        let _ = writeln!(
            out,
            "wsgate_closes_sent_total{{code=\"{code}\"}} {}",
            sum(&|w| get(&w.closes_sent[i]))
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_closes_received_total Close frames received from peers, by code.\n# TYPE wsgate_closes_received_total counter"
    );
    for (i, code) in RECEIVED_CLOSE_CODES.iter().enumerate() {
        let _ = writeln!(
            out,
            "wsgate_closes_received_total{{code=\"{code}\"}} {}",
            sum(&|w| get(&w.closes_received[i]))
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_fanout_deliveries_total Frames queued to subscribers, by worker.\n# TYPE wsgate_fanout_deliveries_total counter"
    );
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "wsgate_fanout_deliveries_total{{worker=\"{i}\"}} {}",
            get(&w.fanout_deliveries)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_inbox_depth Deliveries waiting in a worker's inbox.\n# TYPE wsgate_inbox_depth gauge"
    );
    for i in 0..hub.workers() {
        let _ = writeln!(
            out,
            "wsgate_inbox_depth{{worker=\"{i}\"}} {}",
            hub.inbox_depth(i)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_inbox_wakeups_total Times a worker was woken for its inbox.\n# TYPE wsgate_inbox_wakeups_total counter"
    );
    for i in 0..hub.workers() {
        let _ = writeln!(
            out,
            "wsgate_inbox_wakeups_total{{worker=\"{i}\"}} {}",
            hub.inbox_wakeups(i)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_topics Topics known on this node.\n# TYPE wsgate_topics gauge"
    );
    let _ = writeln!(out, "wsgate_topics {}", hub.topics().len());
    let _ = writeln!(
        out,
        "# HELP wsgate_draining 1 while the node drains.\n# TYPE wsgate_draining gauge"
    );
    let _ = writeln!(out, "wsgate_draining {}", u8::from(draining));
    if let Some(cluster) = hub.cluster() {
        render_cluster(&mut out, &cluster.stats);
    }
    out
}

/// The cluster bridge's gauges and counters.
fn render_cluster(out: &mut String, s: &crate::cluster::ClusterStats) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let one = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        out,
        "wsgate_cluster_up",
        "gauge",
        "1 while both connections to Redis are up.",
        u64::from(s.up.load(Ordering::Relaxed)),
    );
    one(
        out,
        "wsgate_cluster_channels",
        "gauge",
        "Redis channels this node is subscribed to, as Redis last confirmed.",
        get(&s.channels),
    );
    one(
        out,
        "wsgate_cluster_published_total",
        "counter",
        "Publishes sent to Redis.",
        get(&s.published),
    );
    one(
        out,
        "wsgate_cluster_received_total",
        "counter",
        "Messages from other nodes delivered here.",
        get(&s.received),
    );
    one(
        out,
        "wsgate_cluster_own_skipped_total",
        "counter",
        "This node's own messages back from Redis, skipped.",
        get(&s.own_skipped),
    );
    let _ = writeln!(
        out,
        "# HELP wsgate_cluster_dropped_total Publishes that reached only this node's subscribers.\n# TYPE wsgate_cluster_dropped_total counter"
    );
    let _ = writeln!(
        out,
        "wsgate_cluster_dropped_total{{reason=\"redis_down\"}} {}",
        get(&s.dropped_redis_down)
    );
    let _ = writeln!(
        out,
        "wsgate_cluster_dropped_total{{reason=\"queue_full\"}} {}",
        get(&s.dropped_queue_full)
    );
    let _ = writeln!(
        out,
        "wsgate_cluster_dropped_total{{reason=\"too_large\"}} {}",
        get(&s.dropped_too_large)
    );
    one(
        out,
        "wsgate_cluster_reconnects_total",
        "counter",
        "Connections to Redis made again after an outage.",
        get(&s.reconnects),
    );
    one(
        out,
        "wsgate_cluster_bad_messages_total",
        "counter",
        "Messages on a cluster channel that were not a wsgate envelope.",
        get(&s.bad_messages),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_are_summed_across_workers() {
        let hub = Hub::new(vec![]);
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        inc(&a.connections_total);
        add(&b.connections_total, 2);
        a.failure("unsupported_version");
        b.failure("no such reason");
        a.close_sent(1013);
        inc(&b.fanout_deliveries);
        let text = render(&[a, b], &hub, true);
        assert!(text.contains("wsgate_connections_total 3\n"), "{text}");
        assert!(
            text.contains("wsgate_handshake_failures_total{reason=\"unsupported_version\"} 1\n")
        );
        assert!(text.contains("wsgate_handshake_failures_total{reason=\"other\"} 1\n"));
        assert!(text.contains("wsgate_closes_sent_total{code=\"1013\"} 1\n"));
        assert!(text.contains("wsgate_fanout_deliveries_total{worker=\"0\"} 0\n"));
        assert!(text.contains("wsgate_fanout_deliveries_total{worker=\"1\"} 1\n"));
        assert!(text.contains("wsgate_draining 1\n"));
        assert_eq!(
            FAILURE_REASONS.len(),
            WorkerMetrics::default().handshake_failures.len()
        );
        assert_eq!(
            CLOSE_CODES.len(),
            WorkerMetrics::default().closes_sent.len()
        );
        // every sample line is `name{labels} value` or `name value`
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<i64>().unwrap();
        }
    }
}
