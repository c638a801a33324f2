//! Fanout across nodes through Redis pub/sub.
//!
//! With `--redis URL`, every node is a Redis client with two connections (two per master of a
//! Redis Cluster), run by threads of their own (no async runtime):
//!
//! - the **bridge** thread owns the publishing connection and the writing half of the
//!   subscribing one. Workers hand it publishes and changes of interest through lock-free
//!   queues and wake it with `unpark`. It sends each publish to the topic's channel once,
//!   pipelined in batches, and SUBSCRIBEs to a topic's channel while any client on this node
//!   is subscribed to the topic, UNSUBSCRIBEing when the last one leaves.
//! - a **receiver** thread reads each subscribing connection and hands every message from
//!   another node to the workers with local subscribers, through the same inboxes that carry
//!   publishes between workers: the frame is built once and shared by reference.
//!
//! Each message on Redis carries the publishing node's id ([`envelope`]); a node skips its
//! own messages, which it has already delivered locally. Redis keeps the order of messages
//! sent on one connection, so each publisher's order holds across nodes.
//!
//! Delivery across nodes is at most once. While Redis is unreachable, publishes reach the
//! subscribers of the node they were made on and are counted in
//! `wsgate_cluster_dropped_total{reason="redis_down"}`; the bridge reconnects with backoff
//! (100 ms doubling to 5 s), subscribes again to every channel it needs, and logs the outage
//! once when it starts and once when it ends. Publishes waiting for Redis are bounded by
//! `--redis-max-pending` bytes; past it they stay local and count as `queue_full`.

mod bridge;
pub(crate) mod envelope;
mod receiver;
mod resp;
mod scripts;
pub(crate) mod slots;

use crate::hub::{Hub, Ticket, Topic, Uplink};
use crate::metrics::{Exposition, Kind};
use crossbeam_queue::SegQueue;
use resp::DEFAULT_PUBSUB_HARD_LIMIT;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wsgate_core::frame::OutFrame;

/// First wait before reconnecting to Redis; doubles up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Room left under Redis' limit of a subscriber's output buffer for the envelope and the
/// protocol around a payload.
const ENVELOPE_ROOM: usize = 64 << 10;

/// The cluster's counters, shown in `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    /// Whether both connections to Redis are up.
    pub(crate) up: AtomicBool,
    /// Channels the subscribing connection is subscribed to, as Redis last confirmed.
    pub(crate) channels: AtomicU64,
    /// Publishes sent to Redis.
    pub(crate) published: AtomicU64,
    /// Messages from other nodes handed to the workers.
    pub(crate) received: AtomicU64,
    /// This node's own messages coming back from Redis, skipped.
    pub(crate) own_skipped: AtomicU64,
    /// Publishes that did not go to other nodes because Redis was unreachable.
    pub(crate) dropped_redis_down: AtomicU64,
    /// Publishes that did not go to other nodes because too much was waiting for Redis.
    pub(crate) dropped_queue_full: AtomicU64,
    /// Publishes that did not go to other nodes because they are larger than Redis lets a
    /// subscriber's output buffer grow ([`Cluster::max_message`]).
    pub(crate) dropped_too_large: AtomicU64,
    /// Publishes to a topic with history that Redis did not number (its script failed, or the
    /// topic's keys cannot be named in a cluster): nobody got them.
    pub(crate) dropped_history: AtomicU64,
    /// Successful connections to Redis after the first.
    pub(crate) reconnects: AtomicU64,
    /// Messages from Redis that were not a well-formed wsgate envelope.
    pub(crate) bad_messages: AtomicU64,
    /// Times the receiver stopped reading Redis until a worker's inbox had room.
    pub(crate) receive_waits: AtomicU64,
}

/// A publish on its way to Redis.
struct Outgoing {
    topic: Arc<str>,
    frame: OutFrame,
    size: usize,
    /// For a topic with history: its size and ttl. Redis numbers the message, keeps it and
    /// publishes it ([`scripts::PUBLISH`]).
    history: Option<(usize, Duration)>,
    /// The publisher waiting for the offset Redis gives (dropped unanswered, it is told the
    /// publish was lost).
    ticket: Option<Ticket>,
}

/// A publish that does not go: false, its ticket taken back unanswered (the caller answers).
fn refused(ticket: Option<Ticket>) -> bool {
    if let Some(t) = ticket {
        t.cancel();
    }
    false
}

/// The workers' side of the bridge: queues to it, and its counters.
pub(crate) struct Cluster {
    node: Box<[u8]>,
    prefix: String,
    sharded: bool,
    max_pending: usize,
    outgoing: SegQueue<Outgoing>,
    pending_bytes: AtomicUsize,
    interest: SegQueue<Arc<Topic>>,
    /// Topics with history whose mirror waits to be primed from Redis' stream, each at most
    /// once ([`Topic::queue_priming`]): bounded by the node's topics.
    to_prime: SegQueue<Arc<Topic>>,
    /// Shard channels Redis said this node is no longer subscribed to, for the bridge to tell
    /// its own unsubscribes from a slot that moved.
    unsubscribed: SegQueue<Vec<u8>>,
    bridge: OnceLock<std::thread::Thread>,
    /// The largest payload sent to other nodes ([`Cluster::max_message`]).
    max_message: AtomicUsize,
    /// Whether a publish over `max_message` has been logged.
    too_large_logged: AtomicBool,
    /// Whether a plain message on a topic this node keeps a history of has been logged.
    mixed_rules_logged: AtomicBool,
    /// Set when the node stops: the bridge thread ends.
    stopping: AtomicBool,
    /// The counters.
    pub(crate) stats: ClusterStats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &String::from_utf8_lossy(&self.node))
            .field("sharded", &self.sharded)
            .finish()
    }
}

impl Cluster {
    /// A cluster link for node `node` (at most 255 bytes), not yet running: see [`spawn`].
    pub(crate) fn new(node: &str, prefix: &str, sharded: bool, max_pending: usize) -> Cluster {
        assert!(node.len() <= 255, "node id too long");
        Cluster {
            node: node.as_bytes().into(),
            prefix: prefix.to_string(),
            sharded,
            max_pending,
            outgoing: SegQueue::new(),
            pending_bytes: AtomicUsize::new(0),
            interest: SegQueue::new(),
            to_prime: SegQueue::new(),
            unsubscribed: SegQueue::new(),
            bridge: OnceLock::new(),
            max_message: AtomicUsize::new(DEFAULT_PUBSUB_HARD_LIMIT - ENVELOPE_ROOM),
            too_large_logged: AtomicBool::new(false),
            mixed_rules_logged: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stats: ClusterStats::default(),
        }
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &[u8] {
        &self.node
    }

    /// Whether both connections to Redis are up.
    pub(crate) fn up(&self) -> bool {
        self.stats.up.load(Ordering::Acquire)
    }

    /// Ends the bridge thread (the node stops).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Hands a publish made on this node to the bridge, which sends it to Redis. While Redis is
    /// unreachable, or past `--redis-max-pending`, the publish stays local and is counted.
    pub(crate) fn publish(&self, topic: &Topic, frame: &OutFrame) {
        self.enqueue(topic, frame, None, None);
    }

    /// Hands a publish to a topic with history to the bridge, which has Redis number, keep
    /// and publish it; the bridge answers `ticket` with the offset Redis gives. False when it
    /// cannot go now (counted as for [`publish`](Self::publish)); the ticket is then taken
    /// back unanswered, the caller answering the publisher.
    pub(crate) fn publish_sequenced(
        &self,
        topic: &Topic,
        frame: &OutFrame,
        ticket: Option<Ticket>,
    ) -> bool {
        let Some(limits) = topic.history_limits() else {
            return refused(ticket);
        };
        self.enqueue(topic, frame, Some(limits), ticket)
    }

    fn enqueue(
        &self,
        topic: &Topic,
        frame: &OutFrame,
        history: Option<(usize, Duration)>,
        ticket: Option<Ticket>,
    ) -> bool {
        if !self.up() {
            self.stats
                .dropped_redis_down
                .fetch_add(1, Ordering::Relaxed);
            return refused(ticket);
        }
        let max = self.max_message();
        if frame.payload().len() > max {
            self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
            if !self.too_large_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a message of {} bytes stays on this node: Redis closes a subscriber whose \
                     output buffer passes {} bytes (client-output-buffer-limit pubsub); raise \
                     it on Redis to send larger messages across nodes",
                    frame.payload().len(),
                    max + ENVELOPE_ROOM
                );
            }
            return refused(ticket);
        }
        let size = frame.payload().len() + topic.name().len() + 64;
        if self.pending_bytes.fetch_add(size, Ordering::AcqRel) + size > self.max_pending {
            self.pending_bytes.fetch_sub(size, Ordering::AcqRel);
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return refused(ticket);
        }
        self.outgoing.push(Outgoing {
            topic: topic.name().clone(),
            frame: frame.clone(),
            size,
            history,
            ticket,
        });
        self.wake();
        true
    }

    /// Asks the bridge to prime the mirror of `topic`'s history from Redis.
    pub(crate) fn prime_later(&self, topic: Arc<Topic>) {
        if topic.queue_priming() {
            self.to_prime.push(topic);
        }
        self.wake();
    }

    /// The largest payload that goes to other nodes: just under the hard limit Redis puts on a
    /// subscriber's output buffer (`client-output-buffer-limit pubsub`, read from each server at
    /// connection; 32 MiB, Redis' default, when it cannot be read). A larger message would make
    /// Redis drop every receiving node's subscribing connection, and everything in flight with
    /// it; it stays on its own node instead, counted as `too_large`.
    pub(crate) fn max_message(&self) -> usize {
        self.max_message.load(Ordering::Relaxed)
    }

    /// Tells the bridge that `topic`'s subscribers on this node went from none to some or from
    /// some to none. The bridge reads the count itself when it gets to it, so notices that
    /// cross each other settle on the last state.
    pub(crate) fn interest_changed(&self, topic: Arc<Topic>) {
        self.interest.push(topic);
        self.wake();
    }

    fn wake(&self) {
        if let Some(t) = self.bridge.get() {
            t.unpark();
        }
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{}", self.prefix, topic)
    }
}

impl Uplink for Cluster {
    fn publish(&self, topic: &Topic, frame: &OutFrame) {
        Cluster::publish(self, topic, frame);
    }

    fn interest_changed(&self, topic: Arc<Topic>) {
        Cluster::interest_changed(self, topic);
    }

    fn is_up(&self) -> bool {
        self.up()
    }

    fn outages(&self) -> u64 {
        self.stats.reconnects.load(Ordering::Acquire)
    }

    fn publish_sequenced(&self, topic: &Topic, frame: &OutFrame, ticket: Option<Ticket>) -> bool {
        Cluster::publish_sequenced(self, topic, frame, ticket)
    }

    fn resync(&self, topic: Arc<Topic>) {
        self.prime_later(topic);
    }
}

impl Cluster {
    /// Writes the link's gauges and counters into `out`.
    pub(crate) fn render_metrics(&self, out: &mut Exposition) {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.single(
            "wsgate_cluster_up",
            Kind::Gauge,
            "1 while both connections to Redis are up.",
            u64::from(s.up.load(Ordering::Relaxed)),
        );
        out.single(
            "wsgate_cluster_channels",
            Kind::Gauge,
            "Redis channels this node is subscribed to, as Redis last confirmed.",
            get(&s.channels),
        );
        out.single(
            "wsgate_cluster_published_total",
            Kind::Counter,
            "Publishes sent to Redis.",
            get(&s.published),
        );
        out.single(
            "wsgate_cluster_received_total",
            Kind::Counter,
            "Messages from other nodes delivered here.",
            get(&s.received),
        );
        out.single(
            "wsgate_cluster_own_skipped_total",
            Kind::Counter,
            "This node's own messages back from Redis, skipped.",
            get(&s.own_skipped),
        );
        let name = "wsgate_cluster_dropped_total";
        out.family(
            name,
            Kind::Counter,
            "Publishes that reached only this node's subscribers.",
        );
        for (reason, counter) in [
            ("redis_down", &s.dropped_redis_down),
            ("queue_full", &s.dropped_queue_full),
            ("too_large", &s.dropped_too_large),
            ("history_refused", &s.dropped_history),
        ] {
            out.sample(name, Some(("reason", reason)), get(counter));
        }
        out.single(
            "wsgate_cluster_reconnects_total",
            Kind::Counter,
            "Connections to Redis made again after an outage.",
            get(&s.reconnects),
        );
        out.single(
            "wsgate_cluster_receive_waits_total",
            Kind::Counter,
            "Times the receiver stopped reading Redis until a worker's inbox had room.",
            get(&s.receive_waits),
        );
        out.single(
            "wsgate_cluster_bad_messages_total",
            Kind::Counter,
            "Messages on a cluster channel that were not a wsgate envelope.",
            get(&s.bad_messages),
        );
    }
}

/// Starts the bridge thread of `cluster`, which delivers what other nodes publish through
/// `hub`, until [`Cluster::stop`].
pub(crate) fn spawn(hub: Arc<Hub>, cluster: Arc<Cluster>, url: &str) -> io::Result<()> {
    let client = redis::Client::open(url).map_err(|e| io::Error::other(format!("--redis: {e}")))?;
    let url = url_for_logs(url);
    let handle = cluster.clone();
    let thread = std::thread::Builder::new()
        .name("wsgate-redis".into())
        .spawn(move || bridge::Bridge::new(hub, cluster, client, url).run())?;
    let _ = handle.bridge.set(thread.thread().clone());
    Ok(())
}

/// The URL without its password, for logs.
fn url_for_logs(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "redis".into(),
    }
}

/// A node id for a node started without `--node-id`: the host name and 8 random hex digits.
pub(crate) fn random_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(40)
                .collect()
        })
        .unwrap_or_else(|_| String::from("wsgate"));
    format!("{host}-{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wsgate_core::frame::OpCode;

    #[test]
    fn a_topic_waits_in_the_priming_queue_once_until_the_bridge_takes_it() {
        let cluster = Cluster::new("a", "wsgate:", false, 1 << 20);
        let hub = crate::hub::Hub::new(Vec::new());
        let (t, u) = (hub.topic("chat.1"), hub.topic("chat.2"));
        for _ in 0..1000 {
            cluster.prime_later(t.clone()); // a confirmation, then offset jumps
        }
        cluster.prime_later(u.clone());
        assert_eq!(cluster.to_prime.len(), 2, "each topic once");
        // the bridge takes it: a request after that (a jump during the priming) queues it again
        let taken = cluster.to_prime.pop().unwrap();
        taken.dequeue_priming();
        assert!(Arc::ptr_eq(&taken, &t));
        cluster.prime_later(t.clone());
        cluster.prime_later(t.clone());
        assert_eq!(cluster.to_prime.len(), 2);
        let order: Vec<_> = std::iter::from_fn(|| cluster.to_prime.pop())
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(order, ["chat.2", "chat.1"]);
    }

    #[test]
    fn envelopes_round_trip_and_share_the_payload() {
        let text = OutFrame::new(OpCode::Text, Bytes::from_static(b"{\"a\":1}"));
        let mut wire = envelope::head(b"node-a", &text);
        wire.extend_from_slice(text.payload());
        let wire = Bytes::from(wire);
        let opened = envelope::open(&wire).expect("opens");
        assert_eq!(opened.node, b"node-a");
        assert_eq!(opened.frame.header(), text.header());
        assert_eq!(opened.frame.payload(), text.payload());
        assert!(std::ptr::eq(
            opened.frame.payload().as_ptr(),
            wire[wire.len() - 7..].as_ptr()
        ));

        let bin = OutFrame::new(OpCode::Binary, Bytes::from(vec![0xFFu8; 70_000]));
        let mut wire = envelope::head(b"", &bin);
        wire.extend_from_slice(bin.payload());
        let wire = Bytes::from(wire);
        let opened = envelope::open(&wire).expect("opens");
        assert_eq!(opened.node, b"");
        assert_eq!(opened.frame.header(), bin.header());
    }

    #[test]
    fn bad_envelopes_are_refused() {
        for bad in [
            &b""[..],
            b"WSG1",
            b"WSG2\x00t",
            b"WSG1\x05ab",
            b"WSG1\x00x{}",
            b"WSG1\x00t\xFF\xFE",
            b"hello",
        ] {
            assert!(
                envelope::open(&Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
        assert!(envelope::open(&Bytes::from_static(b"WSG1\x00b\xFF")).is_some());
    }

    #[test]
    fn log_urls_hide_the_password() {
        assert_eq!(
            url_for_logs("redis://user:secret@10.0.0.1:6379/0"),
            "redis://user:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            url_for_logs("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn hash_slots_follow_the_cluster_spec() {
        assert_eq!(slots::of(b"123456789"), 0x31C3);
        assert_eq!(
            slots::of(b"{user1000}.following"),
            slots::of(b"{user1000}.followers")
        );
        assert_eq!(slots::of(b"{user1000}.following"), slots::of(b"user1000"));
        assert_eq!(slots::of(b"foo{}{bar}"), slots::of(b"foo{}{bar}"));
        assert_ne!(
            slots::of(b"foo{}{bar}"),
            slots::of(b"bar"),
            "an empty tag hashes all"
        );
        assert_eq!(slots::of(b"foo{{bar}}zap"), slots::of(b"{bar"));
        assert!(slots::of(b"wsgate:news") < slots::COUNT as u16);
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(random_node_id(), random_node_id());
        assert!(random_node_id().len() <= 49);
    }
}
