//! The operator's dashboard at `/`, the JavaScript client at `/client.js`, and `/stats`, the
//! live numbers the dashboard polls.
//!
//! The page and the client are files in `gateway/src/dashboard/`, embedded in the binary: no
//! external assets, nothing to install next to it.
//!
//! `/stats` answers a JSON object of counters, never rates: the page polls it (once a second)
//! and divides the difference of two answers by the difference of their `now_ms`. It is
//! answered on a worker thread, so it only reads relaxed atomics, the hub's topic list (one
//! short lock) and the sizes of the topics' histories (the same lock, as `/metrics` does),
//! and sends at most [`MAX_TOPICS`] topics.

use crate::metrics::{CloseLabel, Counter, MessageKind, WorkerMetrics};
use crate::node::Node;
use serde::Serialize;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// The dashboard page: one HTML file with its styles and script inline.
pub(crate) const PAGE: &str = include_str!("dashboard/index.html");

/// The JavaScript client served at `/client.js`.
pub(crate) const CLIENT_JS: &str = include_str!("dashboard/client.js");

/// The most topics `/stats` lists (those with the most subscribers); `topics_total` counts
/// them all.
pub(crate) const MAX_TOPICS: usize = 100;

/// One worker's counters as `/stats` shows them. Every field but `connections_open` and
/// `inbox_depth` only grows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WorkerStats {
    /// The worker's index (`null` in the totals).
    pub(crate) worker: Option<usize>,
    /// Connections open now (WebSocket and HTTP).
    pub(crate) connections_open: i64,
    /// Connections accepted since start.
    pub(crate) connections_total: u64,
    /// WebSocket sessions opened since start.
    pub(crate) upgrades_total: u64,
    /// Messages received, every kind (text, binary, control).
    pub(crate) messages_in: u64,
    /// Frames sent, every kind.
    pub(crate) messages_out: u64,
    /// Payload bytes received.
    pub(crate) bytes_in: u64,
    /// Bytes written to sockets.
    pub(crate) bytes_out: u64,
    /// Publishes accepted (WebSocket and HTTP).
    pub(crate) publishes: u64,
    /// Frames queued to subscribers.
    pub(crate) fanout_deliveries: u64,
    /// Subscribers closed because they fell behind (1013).
    pub(crate) slow_consumer_closes: u64,
    /// Control messages answered with an error.
    pub(crate) message_errors: u64,
    /// Publishes refused by the rate limit.
    pub(crate) rate_limited: u64,
    /// Plain HTTP requests answered.
    pub(crate) http_requests: u64,
    /// Deliveries waiting in the worker's inbox now.
    pub(crate) inbox_depth: u64,
    /// Sessions that negotiated permessage-deflate.
    pub(crate) deflate_sessions: u64,
    /// Outgoing messages deflated (a publish once).
    pub(crate) compressions: u64,
    /// Payload bytes sent to permessage-deflate sessions, before compression.
    pub(crate) deflate_bytes_before: u64,
    /// The same payloads as sent.
    pub(crate) deflate_bytes_after: u64,
    /// Subscribes on a history topic that recovered what they missed.
    pub(crate) recoveries: u64,
    /// Subscribes on a history topic whose recovery was refused (`recovered:false`).
    pub(crate) recoveries_failed: u64,
}

impl WorkerStats {
    /// Reads one worker's counters.
    pub(crate) fn read(worker: usize, m: &WorkerMetrics, inbox_depth: u64) -> WorkerStats {
        let kinds = |f: &dyn Fn(MessageKind) -> u64| MessageKind::ALL.iter().map(|k| f(*k)).sum();
        WorkerStats {
            worker: Some(worker),
            connections_open: m.connections_open(),
            connections_total: m.get(Counter::ConnectionsTotal),
            upgrades_total: m.get(Counter::UpgradesTotal),
            messages_in: kinds(&|k| m.messages_in_of(k)),
            messages_out: kinds(&|k| m.messages_out_of(k)),
            bytes_in: kinds(&|k| m.bytes_in_of(k)),
            bytes_out: m.get(Counter::BytesOut),
            publishes: m.get(Counter::Publishes),
            fanout_deliveries: m.fanout_deliveries(),
            slow_consumer_closes: m.get(Counter::SlowConsumerCloses),
            message_errors: m.get(Counter::MessageErrors),
            rate_limited: m.get(Counter::RateLimited),
            http_requests: m.get(Counter::HttpRequests),
            inbox_depth,
            deflate_sessions: m.get(Counter::DeflateSessions),
            compressions: m.get(Counter::Compressions),
            deflate_bytes_before: m.get(Counter::DeflateBytesIn),
            deflate_bytes_after: m.get(Counter::DeflateBytesOut),
            recoveries: m.get(Counter::Recoveries),
            recoveries_failed: m.get(Counter::RecoveriesFailed),
        }
    }

    /// Adds another worker's counters to these.
    pub(crate) fn add(&mut self, o: &WorkerStats) {
        self.connections_open += o.connections_open;
        self.connections_total += o.connections_total;
        self.upgrades_total += o.upgrades_total;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.publishes += o.publishes;
        self.fanout_deliveries += o.fanout_deliveries;
        self.slow_consumer_closes += o.slow_consumer_closes;
        self.message_errors += o.message_errors;
        self.rate_limited += o.rate_limited;
        self.http_requests += o.http_requests;
        self.inbox_depth += o.inbox_depth;
        self.deflate_sessions += o.deflate_sessions;
        self.compressions += o.compressions;
        self.deflate_bytes_before += o.deflate_bytes_before;
        self.deflate_bytes_after += o.deflate_bytes_after;
        self.recoveries += o.recoveries;
        self.recoveries_failed += o.recoveries_failed;
    }
}

/// A topic and its subscribers on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TopicStats {
    /// The topic's name.
    pub(crate) topic: String,
    /// Subscribers on this node, all workers together.
    pub(crate) subscribers: usize,
}

/// The whole `/stats` answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    /// The gateway's version.
    pub(crate) version: &'static str,
    /// When this answer was made, in milliseconds since the Unix epoch.
    pub(crate) now_ms: u64,
    /// Seconds since the process started (`null` where `/proc` cannot tell).
    pub(crate) uptime_s: Option<u64>,
    /// Whether the node is draining (SIGTERM received).
    pub(crate) draining: bool,
    /// Open WebSocket sessions, all workers together.
    pub(crate) sessions: usize,
    /// Every worker's counters, by index.
    pub(crate) workers: Vec<WorkerStats>,
    /// The sum over the workers.
    pub(crate) totals: WorkerStats,
    /// Close frames sent, by code (`"1013": 2`); codes never sent are left out.
    pub(crate) closes_sent: serde_json::Map<String, serde_json::Value>,
    /// Topics with at least one subscriber on this node.
    pub(crate) topics_total: usize,
    /// The [`MAX_TOPICS`] topics with the most subscribers, most first (ties by name).
    pub(crate) topics: Vec<TopicStats>,
    /// The link to other nodes through Redis; `null` on a single node.
    pub(crate) cluster: Option<ClusterView>,
    /// The topics' histories (`[[history]]` rules) and the recoveries from them; `null` when
    /// no topic may keep a history.
    pub(crate) history: Option<HistoryView>,
}

/// The topics' histories as `/stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct HistoryView {
    /// Topics with a history on this node now.
    pub(crate) topics: usize,
    /// Messages those histories keep.
    pub(crate) messages: usize,
    /// Bytes they hold, within `history-memory`.
    pub(crate) bytes: usize,
    /// Messages given up so far to stay within `history-memory`.
    pub(crate) evictions: u64,
    /// Subscribes that recovered what they missed (all workers).
    pub(crate) recoveries: u64,
    /// Subscribes whose recovery was refused (all workers).
    pub(crate) recoveries_failed: u64,
}

/// The cluster bridge as `/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterView {
    /// This node's id.
    pub(crate) node: String,
    /// Whether the connections to Redis are up.
    pub(crate) up: bool,
    /// Redis channels this node is subscribed to.
    pub(crate) channels: u64,
    /// Publishes sent to Redis.
    pub(crate) published: u64,
    /// Messages from other nodes delivered here.
    pub(crate) received: u64,
    /// Publishes that reached only this node (Redis down, or too much waiting for it).
    pub(crate) dropped: u64,
    /// Connections to Redis made again after an outage.
    pub(crate) reconnects: u64,
}

impl ClusterView {
    fn read(c: &crate::cluster::Cluster) -> ClusterView {
        let s = &c.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClusterView {
            node: String::from_utf8_lossy(c.node()).into_owned(),
            up: c.up(),
            channels: get(&s.channels),
            published: get(&s.published),
            received: get(&s.received),
            dropped: get(&s.dropped_redis_down)
                + get(&s.dropped_queue_full)
                + get(&s.dropped_too_large),
            reconnects: get(&s.reconnects),
        }
    }
}

/// Gathers the live numbers.
pub(crate) fn collect(node: &Node) -> Stats {
    let workers: Vec<WorkerStats> = node
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let depth = if i < node.hub.workers() {
                node.hub.inbox_depth(i) as u64
            } else {
                0
            };
            WorkerStats::read(i, m, depth)
        })
        .collect();
    let mut totals = WorkerStats::default();
    for w in &workers {
        totals.add(w);
    }
    let mut closes_sent = serde_json::Map::new();
    for &label in CloseLabel::ALL {
        let n: u64 = node.metrics.iter().map(|m| m.closes_sent_of(label)).sum();
        if n > 0 {
            closes_sent.insert(label.text().to_string(), n.into());
        }
    }
    let (topics_total, topics) = top_topics(node.hub.topics(), MAX_TOPICS);
    let history = node.hub.history_budget().map(|budget| {
        let (topics, messages) = node.hub.forget_expired(std::time::Instant::now());
        HistoryView {
            topics,
            messages,
            bytes: budget.held(),
            evictions: budget.evicted(),
            recoveries: totals.recoveries,
            recoveries_failed: totals.recoveries_failed,
        }
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Stats {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: now.as_millis() as u64,
        uptime_s: started_at().map(|s| now.as_secs().saturating_sub(s)),
        draining: node.drain.get().refuses_sessions(),
        sessions: node.sessions(),
        workers,
        totals,
        closes_sent,
        topics_total,
        topics,
        cluster: node.cluster.as_deref().map(ClusterView::read),
        history,
    }
}

/// The live numbers as JSON: per-worker counters, totals, topics with subscriber counts.
pub(crate) fn stats(node: &Node) -> String {
    serde_json::to_string(&collect(node)).unwrap_or_else(|_| "{}".to_string())
}

/// The topics that have subscribers: how many, and the `max` with the most (most first, ties
/// by name). Selects before sorting, so a node with many topics sorts only `max` of them.
pub(crate) fn top_topics<N: AsRef<str>>(
    topics: Vec<(N, usize)>,
    max: usize,
) -> (usize, Vec<TopicStats>) {
    let mut topics: Vec<(N, usize)> = topics.into_iter().filter(|(_, n)| *n > 0).collect();
    let total = topics.len();
    let order =
        |a: &(N, usize), b: &(N, usize)| b.1.cmp(&a.1).then_with(|| a.0.as_ref().cmp(b.0.as_ref()));
    if topics.len() > max && max > 0 {
        topics.select_nth_unstable_by(max - 1, order);
    }
    topics.truncate(max);
    topics.sort_unstable_by(order);
    let shown = topics
        .into_iter()
        .map(|(name, subscribers)| TopicStats {
            topic: name.as_ref().to_string(),
            subscribers,
        })
        .collect();
    (total, shown)
}

/// When this process started, in seconds since the Unix epoch: its start time in clock ticks
/// after boot (`/proc/self/stat`, field 22, at the fixed user-space rate of 100 ticks a
/// second) against the system's uptime (`/proc/uptime`). Read once.
fn started_at() -> Option<u64> {
    static STARTED: OnceLock<Option<u64>> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // the command name (field 2) may hold spaces: count fields after its `)`
        let after = &stat[stat.rfind(')')? + 1..];
        let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let started = now - uptime + ticks as f64 / 100.0;
        (started > 0.0).then_some(started as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_busiest_first_capped_and_counted() {
        let topics: Vec<(String, usize)> = (0..1000)
            .map(|i| (format!("t{i:04}"), i % 7))
            .chain([("b".to_string(), 50), ("a".to_string(), 50)])
            .collect();
        let with_subscribers = topics.iter().filter(|t| t.1 > 0).count();
        let (total, shown) = top_topics(topics, 10);
        assert_eq!(total, with_subscribers);
        assert_eq!(shown.len(), 10);
        assert_eq!(shown[0].topic, "a");
        assert_eq!(shown[1].topic, "b");
        assert!(shown[2..].iter().all(|t| t.subscribers == 6));
        assert!(
            shown
                .windows(2)
                .all(|w| w[0].subscribers >= w[1].subscribers)
        );
        let (total, shown) = top_topics(vec![("x", 0), ("y", 2)], 100);
        assert_eq!((total, shown.len()), (1, 1));
        assert_eq!(top_topics(Vec::<(&str, usize)>::new(), 0), (0, vec![]));
    }

    #[test]
    fn worker_counters_are_summed_over_kinds_and_workers() {
        let m = WorkerMetrics::default();
        for _ in 0..3 {
            m.message_in(MessageKind::Text, 0);
        }
        for _ in 0..4 {
            m.message_in(MessageKind::Binary, 0);
        }
        m.message_in(MessageKind::Control, 5);
        m.connection_opened();
        m.connection_opened();
        m.inc(Counter::Recoveries);
        m.inc(Counter::RecoveriesFailed);
        m.inc(Counter::RecoveriesFailed);
        let a = WorkerStats::read(0, &m, 1);
        assert_eq!((a.messages_in, a.bytes_in, a.inbox_depth), (8, 5, 1));
        assert_eq!((a.recoveries, a.recoveries_failed), (1, 2));
        let mut total = WorkerStats::default();
        total.add(&a);
        total.add(&WorkerStats::read(1, &m, 0));
        assert_eq!((total.messages_in, total.connections_open), (16, 4));
        assert_eq!((total.recoveries, total.recoveries_failed), (2, 4));
        assert_eq!(total.worker, None);
        let json = serde_json::to_value(&total).unwrap();
        assert_eq!(json["messages_in"], 16);
        assert!(json["worker"].is_null());
    }

    #[test]
    fn the_process_start_is_in_the_past() {
        if let Some(s) = started_at() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            assert!(s <= now.as_secs() + 1, "{s} vs {now:?}");
            assert!(now.as_secs() - s < 3600, "started {s}, now {now:?}");
        }
    }
}
