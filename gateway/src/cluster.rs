//! Fanout across nodes through Redis pub/sub.
//!
//! With `--redis URL`, every node is a Redis client with two connections, run by two threads
//! of their own (no async runtime):
//!
//! - the **bridge** thread owns the publishing connection and the writing half of the
//!   subscribing one. Workers hand it publishes and changes of interest through lock-free
//!   queues and wake it with `unpark`. It sends each publish to the topic's channel once,
//!   pipelined in batches, and SUBSCRIBEs to a topic's channel while any client on this node
//!   is subscribed to the topic, UNSUBSCRIBEing when the last one leaves.
//! - the **receiver** thread reads the subscribing connection and hands every message from
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

use crate::hub::{Hub, Topic};
use crate::worker::{STOPPING, Shared};
use bytes::Bytes;
use crossbeam_queue::SegQueue;
use redis::{ConnectionAddr, Value};
use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wsgate_core::frame::{OpCode, OutFrame};

/// First wait before reconnecting to Redis; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Timeout of connecting to Redis and of each read and write on the publishing connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes sent in one pipelined batch at most.
const BATCH: usize = 1024;
/// Payloads at least this large are written from their own buffer instead of being copied
/// into the batch.
const COPY_LIMIT: usize = 16 << 10;
/// Channels named in one SUBSCRIBE command at most.
const SUBSCRIBE_CHUNK: usize = 512;

/// The cluster's counters, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Whether both connections to Redis are up.
    pub up: AtomicBool,
    /// Channels the subscribing connection is subscribed to, as Redis last confirmed.
    pub channels: AtomicU64,
    /// Publishes sent to Redis.
    pub published: AtomicU64,
    /// Messages from other nodes handed to the workers.
    pub received: AtomicU64,
    /// This node's own messages coming back from Redis, skipped.
    pub own_skipped: AtomicU64,
    /// Publishes that did not go to other nodes because Redis was unreachable.
    pub dropped_redis_down: AtomicU64,
    /// Publishes that did not go to other nodes because too much was waiting for Redis.
    pub dropped_queue_full: AtomicU64,
    /// Successful connections to Redis after the first.
    pub reconnects: AtomicU64,
    /// Messages from Redis that were not a well-formed wsgate envelope.
    pub bad_messages: AtomicU64,
}

/// A publish on its way to Redis.
struct Outgoing {
    topic: Arc<str>,
    frame: OutFrame,
    size: usize,
}

/// The workers' side of the bridge: queues to it, and its counters.
pub struct Cluster {
    node: Box<[u8]>,
    prefix: String,
    sharded: bool,
    max_pending: usize,
    outgoing: SegQueue<Outgoing>,
    pending_bytes: AtomicUsize,
    interest: SegQueue<Arc<Topic>>,
    bridge: OnceLock<std::thread::Thread>,
    /// The counters.
    pub stats: ClusterStats,
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
    pub fn new(node: &str, prefix: &str, sharded: bool, max_pending: usize) -> Cluster {
        assert!(node.len() <= 255, "node id too long");
        Cluster {
            node: node.as_bytes().into(),
            prefix: prefix.to_string(),
            sharded,
            max_pending,
            outgoing: SegQueue::new(),
            pending_bytes: AtomicUsize::new(0),
            interest: SegQueue::new(),
            bridge: OnceLock::new(),
            stats: ClusterStats::default(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &[u8] {
        &self.node
    }

    /// Whether both connections to Redis are up.
    pub fn up(&self) -> bool {
        self.stats.up.load(Ordering::Acquire)
    }

    /// Hands a publish made on this node to the bridge, which sends it to Redis. While Redis is
    /// unreachable, or past `--redis-max-pending`, the publish stays local and is counted.
    pub fn publish(&self, topic: &Topic, frame: &OutFrame) {
        if !self.up() {
            self.stats
                .dropped_redis_down
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let size = frame.payload().len() + topic.name().len() + 64;
        if self.pending_bytes.fetch_add(size, Ordering::AcqRel) + size > self.max_pending {
            self.pending_bytes.fetch_sub(size, Ordering::AcqRel);
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.outgoing.push(Outgoing {
            topic: topic.name().clone(),
            frame: frame.clone(),
            size,
        });
        self.wake();
    }

    /// Tells the bridge that `topic`'s subscribers on this node went from none to some or from
    /// some to none. The bridge reads the count itself when it gets to it, so notices that
    /// cross each other settle on the last state.
    pub fn interest_changed(&self, topic: Arc<Topic>) {
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

/// Starts the bridge thread for `shared.hub`'s cluster link, if it has one.
pub fn spawn(shared: Arc<Shared>, url: &str) -> io::Result<()> {
    let Some(cluster) = shared.hub.cluster().cloned() else {
        return Ok(());
    };
    let client = redis::Client::open(url).map_err(|e| io::Error::other(format!("--redis: {e}")))?;
    let url = url_for_logs(url);
    let handle = cluster.clone();
    let thread = std::thread::Builder::new()
        .name("wsgate-redis".into())
        .spawn(move || Bridge::new(shared, cluster, client, url).run())?;
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

/// An envelope: a message as it travels through Redis.
///
/// `WSG1`, the publishing node's id as one length byte and the id, one byte for the frame's
/// kind (`t` text, `b` binary), then the frame's payload exactly as subscribers receive it.
pub mod envelope {
    use super::*;

    /// The first bytes of every envelope.
    pub const MAGIC: &[u8; 4] = b"WSG1";

    /// The envelope's bytes before the payload.
    pub fn head(node: &[u8], frame: &OutFrame) -> Vec<u8> {
        let mut head = Vec::with_capacity(6 + node.len());
        head.extend_from_slice(MAGIC);
        head.push(node.len() as u8);
        head.extend_from_slice(node);
        head.push(if is_text(frame) { b't' } else { b'b' });
        head
    }

    fn is_text(frame: &OutFrame) -> bool {
        frame.header()[0] & 0x0F == OpCode::Text as u8
    }

    /// An envelope read back: who sent it and the frame, sharing `bytes`.
    #[derive(Debug)]
    pub struct Opened<'a> {
        /// The publishing node's id.
        pub node: &'a [u8],
        /// The frame to deliver.
        pub frame: OutFrame,
    }

    /// Opens an envelope. `None` when it is not one, or a text frame is not UTF-8.
    pub fn open(bytes: &Bytes) -> Option<Opened<'_>> {
        let rest = bytes.strip_prefix(&MAGIC[..])?;
        let (&len, rest) = rest.split_first()?;
        let node = rest.get(..len as usize)?;
        let (&kind, _) = rest.get(len as usize..)?.split_first()?;
        let start = MAGIC.len() + 1 + len as usize + 1;
        let payload = bytes.slice(start..);
        let opcode = match kind {
            b't' => {
                wsgate_core::utf8::validate(&payload).ok()?;
                OpCode::Text
            }
            b'b' => OpCode::Binary,
            _ => return None,
        };
        Some(Opened {
            node,
            frame: OutFrame::new(opcode, payload),
        })
    }
}

/// A plain RESP connection: the redis crate packs commands and parses replies; the socket is
/// ours, so that a large payload goes out from its own buffer and the subscribing connection
/// can be read on one thread while another writes to it.
struct Resp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    parser: redis::Parser,
}

impl Resp {
    fn connect(info: &redis::ConnectionInfo) -> io::Result<Resp> {
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => {
                return Err(io::Error::other(format!(
                    "unsupported Redis address {other:?}"
                )));
            }
        };
        let mut last = io::Error::other(format!("{host}:{port} resolves to no address"));
        let mut stream = None;
        for addr in (host.as_str(), port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        socket2::SockRef::from(&stream).set_keepalive(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut conn = Resp {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            stream,
            parser: redis::Parser::new(),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            conn.stream.write_all(&auth.get_packed_command())?;
            match conn.read()? {
                Value::Okay => {}
                Value::SimpleString(s) if s == "OK" => {}
                other => return Err(io::Error::other(format!("AUTH refused: {other:?}"))),
            }
        }
        Ok(conn)
    }

    fn read(&mut self) -> io::Result<Value> {
        self.parser
            .parse_value(&mut self.reader)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// The bridge thread's state.
struct Bridge {
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    client: redis::Client,
    url: String,
    /// Topics with subscribers on this node, by name: the channels this node needs.
    wanted: HashMap<Arc<str>, Arc<Topic>>,
    link: Option<Link>,
    backoff: Duration,
    /// When the current outage started, and the drop count then.
    down_since: Option<(Instant, u64)>,
    connected_once: bool,
    batch: Vec<u8>,
}

/// Both connections to Redis.
struct Link {
    publisher: Resp,
    /// The writing half of the subscribing connection.
    subscriber: TcpStream,
    /// Set by the receiver thread when the subscribing connection ends.
    dead: Arc<AtomicBool>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // ends the receiver's blocking read
        let _ = self.subscriber.shutdown(Shutdown::Both);
    }
}

impl Bridge {
    fn new(shared: Arc<Shared>, cluster: Arc<Cluster>, client: redis::Client, url: String) -> Self {
        Bridge {
            shared,
            cluster,
            client,
            url,
            wanted: HashMap::new(),
            link: None,
            backoff: MIN_BACKOFF,
            down_since: None,
            connected_once: false,
            batch: Vec::with_capacity(64 << 10),
        }
    }

    fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    fn run(mut self) {
        tracing::info!(
            node = %String::from_utf8_lossy(self.cluster.node()),
            "joining the cluster through {}",
            self.url
        );
        while self.shared.state() < STOPPING {
            let changed = self.take_interest();
            if self.link.is_none() {
                match self.connect() {
                    Ok(()) => continue,
                    Err(e) => {
                        self.went_down(&e);
                        self.discard_outgoing();
                        std::thread::park_timeout(self.backoff);
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let result = self
                .subscribe_changes(changed)
                .and_then(|()| self.publish_batch());
            match result {
                Err(e) => {
                    self.link = None;
                    self.went_down(&e);
                }
                Ok(0) => {
                    if self
                        .link
                        .as_ref()
                        .is_some_and(|l| l.dead.load(Ordering::Acquire))
                    {
                        self.link = None;
                        self.went_down(&io::Error::other("subscribing connection closed"));
                    } else if self.cluster.outgoing.is_empty() && self.cluster.interest.is_empty() {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                }
                Ok(_) => {}
            }
        }
        self.link = None;
    }

    /// Takes every change of interest: returns the channels to subscribe to and to
    /// unsubscribe from.
    fn take_interest(&mut self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        while let Some(topic) = self.cluster.interest.pop() {
            let want = topic.subscribers() > 0;
            let name = topic.name().clone();
            match (want, self.wanted.contains_key(&name)) {
                (true, false) => {
                    self.wanted.insert(name.clone(), topic);
                    remove.retain(|n| *n != name);
                    add.push(name);
                }
                (false, true) => {
                    if let Some(held) = self.wanted.remove(&name) {
                        self.hub().release(held);
                    }
                    self.hub().release(topic);
                    add.retain(|n| *n != name);
                    remove.push(name);
                }
                _ => self.hub().release(topic),
            }
        }
        (add, remove)
    }

    fn connect(&mut self) -> io::Result<()> {
        let info = self.client.get_connection_info();
        let publisher = Resp::connect(info)?;
        let subscriber = Resp::connect(info)?;
        subscriber.stream.set_read_timeout(None)?;
        let dead = Arc::new(AtomicBool::new(false));
        let writer = subscriber.stream.try_clone()?;
        let receiver = Receiver {
            shared: self.shared.clone(),
            cluster: self.cluster.clone(),
            conn: subscriber,
            dead: dead.clone(),
        };
        std::thread::Builder::new()
            .name("wsgate-redis-rx".into())
            .spawn(move || receiver.run())?;
        let mut link = Link {
            publisher,
            subscriber: writer,
            dead,
        };
        let all: Vec<Arc<str>> = self.wanted.keys().cloned().collect();
        self.send_subscriptions(&mut link, &all, "SUBSCRIBE")?;
        self.link = Some(link);
        self.backoff = MIN_BACKOFF;
        self.cluster.stats.up.store(true, Ordering::Release);
        if self.connected_once {
            self.cluster
                .stats
                .reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        self.connected_once = true;
        match self.down_since.take() {
            Some((since, dropped_then)) => {
                let dropped = self.dropped() - dropped_then;
                tracing::warn!(
                    "redis reconnected after {:.1}s; subscribed again to {} channels; {} publishes \
                     reached only their own node meanwhile",
                    since.elapsed().as_secs_f64(),
                    all.len(),
                    dropped
                );
            }
            None => tracing::info!("connected to redis at {}", self.url),
        }
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.cluster
            .stats
            .dropped_redis_down
            .load(Ordering::Relaxed)
    }

    /// Records an outage: logs it when it starts, not on every failed attempt.
    fn went_down(&mut self, e: &io::Error) {
        self.cluster.stats.up.store(false, Ordering::Release);
        self.cluster.stats.channels.store(0, Ordering::Relaxed);
        if self.down_since.is_none() {
            self.down_since = Some((Instant::now(), self.dropped()));
            tracing::warn!(
                "redis at {} unreachable ({e}); delivering locally only, reconnecting with \
                 backoff",
                self.url
            );
        } else {
            tracing::debug!("redis still unreachable: {e}");
        }
    }

    /// Counts publishes that were waiting when Redis went away as dropped.
    fn discard_outgoing(&mut self) {
        let mut n = 0;
        while let Some(o) = self.cluster.outgoing.pop() {
            self.cluster
                .pending_bytes
                .fetch_sub(o.size, Ordering::AcqRel);
            n += 1;
        }
        self.cluster
            .stats
            .dropped_redis_down
            .fetch_add(n, Ordering::Relaxed);
    }

    fn subscribe_changes(
        &mut self,
        (add, remove): (Vec<Arc<str>>, Vec<Arc<str>>),
    ) -> io::Result<()> {
        let Some(mut link) = self.link.take() else {
            return Ok(());
        };
        let (sub, unsub) = if self.cluster.sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        let result = self
            .send_subscriptions(&mut link, &add, sub)
            .and_then(|()| self.send_subscriptions(&mut link, &remove, unsub));
        self.link = Some(link);
        result
    }

    fn send_subscriptions(
        &self,
        link: &mut Link,
        topics: &[Arc<str>],
        verb: &str,
    ) -> io::Result<()> {
        let verb = match (verb, self.cluster.sharded) {
            ("SUBSCRIBE", true) => "SSUBSCRIBE",
            (v, _) => v,
        };
        for chunk in topics.chunks(SUBSCRIBE_CHUNK) {
            let mut cmd = redis::cmd(verb);
            for t in chunk {
                cmd.arg(self.cluster.channel(t));
            }
            link.subscriber.write_all(&cmd.get_packed_command())?;
        }
        Ok(())
    }

    /// Sends up to [`BATCH`] waiting publishes in one pipeline and reads their replies.
    /// Returns how many went.
    fn publish_batch(&mut self) -> io::Result<usize> {
        let Some(link) = self.link.as_mut() else {
            return Ok(0);
        };
        let verb: &[u8] = if self.cluster.sharded {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let mut n = 0;
        let mut freed = 0;
        self.batch.clear();
        let result = (|| -> io::Result<()> {
            while n < BATCH {
                let Some(o) = self.cluster.outgoing.pop() else {
                    break;
                };
                n += 1;
                freed += o.size;
                let head = envelope::head(&self.cluster.node, &o.frame);
                let payload = o.frame.payload();
                let channel = self.cluster.channel(&o.topic);
                let b = &mut self.batch;
                write_bulk_header(b, b"*3\r\n", verb);
                write_bulk(b, channel.as_bytes());
                b.extend_from_slice(format!("${}\r\n", head.len() + payload.len()).as_bytes());
                b.extend_from_slice(&head);
                if payload.len() < COPY_LIMIT {
                    b.extend_from_slice(payload);
                } else {
                    link.publisher.stream.write_all(b)?;
                    b.clear();
                    link.publisher.stream.write_all(payload)?;
                }
                b.extend_from_slice(b"\r\n");
            }
            link.publisher.stream.write_all(&self.batch)?;
            for _ in 0..n {
                if let Value::ServerError(e) = link.publisher.read()? {
                    return Err(io::Error::other(format!("redis refused a publish: {e:?}")));
                }
            }
            Ok(())
        })();
        self.cluster
            .pending_bytes
            .fetch_sub(freed, Ordering::AcqRel);
        match result {
            Ok(()) => {
                self.cluster
                    .stats
                    .published
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.cluster
                    .stats
                    .dropped_redis_down
                    .fetch_add(n as u64, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

fn write_bulk_header(b: &mut Vec<u8>, array: &[u8], verb: &[u8]) {
    b.extend_from_slice(array);
    write_bulk(b, verb);
}

fn write_bulk(b: &mut Vec<u8>, bytes: &[u8]) {
    b.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    b.extend_from_slice(bytes);
    b.extend_from_slice(b"\r\n");
}

/// The receiver thread: reads the subscribing connection.
struct Receiver {
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    conn: Resp,
    dead: Arc<AtomicBool>,
}

impl Receiver {
    fn run(mut self) {
        let mut refused_logged = false;
        loop {
            let value = match self.conn.read() {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("redis subscribing connection ended: {e}");
                    break;
                }
            };
            let items = match value {
                Value::Array(items) => items,
                Value::Push { data, .. } => data,
                Value::ServerError(e) => {
                    if !refused_logged {
                        tracing::error!("redis refused a subscription: {e:?}");
                        refused_logged = true;
                    }
                    continue;
                }
                _ => continue,
            };
            self.on_push(items);
        }
        self.dead.store(true, Ordering::Release);
        self.cluster.wake();
    }

    fn on_push(&self, items: Vec<Value>) {
        let mut items = items.into_iter();
        let kind = match items.next() {
            Some(Value::BulkString(k)) => k,
            Some(Value::SimpleString(k)) => k.into_bytes(),
            _ => return,
        };
        match kind.as_slice() {
            b"message" | b"smessage" => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (items.next(), items.next())
                else {
                    return;
                };
                self.deliver(&channel, Bytes::from(payload));
            }
            b"subscribe" | b"unsubscribe" | b"ssubscribe" | b"sunsubscribe" => {
                if let (_, Some(Value::Int(count))) = (items.next(), items.next()) {
                    self.cluster
                        .stats
                        .channels
                        .store(count.max(0) as u64, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    fn deliver(&self, channel: &[u8], payload: Bytes) {
        let stats = &self.cluster.stats;
        let topic = channel
            .strip_prefix(self.cluster.prefix.as_bytes())
            .and_then(|t| std::str::from_utf8(t).ok());
        let (Some(topic), Some(opened)) = (topic, envelope::open(&payload)) else {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if opened.node == self.cluster.node() {
            stats.own_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let hub = &self.shared.hub;
        let topic = hub.topic(topic);
        hub.publish_remote(usize::MAX, &topic, &opened.frame);
        hub.release(topic);
        stats.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// A node id for a node started without `--node-id`: the host name and 8 random hex digits.
pub fn random_node_id() -> String {
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
    fn node_ids_differ() {
        assert_ne!(random_node_id(), random_node_id());
        assert!(random_node_id().len() <= 49);
    }
}
