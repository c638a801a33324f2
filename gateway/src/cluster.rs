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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
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
/// A link that stays up this long ends an outage's backoff; one that dies sooner is retried
/// after the backoff, so a Redis that accepts connections and drops them is not hammered.
const STABLE: Duration = Duration::from_secs(2);
/// Redis' default hard limit of a pub/sub subscriber's output buffer.
const DEFAULT_PUBSUB_HARD_LIMIT: usize = 32 << 20;
/// Room left under that limit for the envelope and the protocol around a payload.
const ENVELOPE_ROOM: usize = 64 << 10;
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
    /// Publishes that did not go to other nodes because they are larger than Redis lets a
    /// subscriber's output buffer grow ([`Cluster::max_message`]).
    pub dropped_too_large: AtomicU64,
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
    /// Shard channels Redis said this node is no longer subscribed to, for the bridge to tell
    /// its own unsubscribes from a slot that moved.
    unsubscribed: SegQueue<Vec<u8>>,
    bridge: OnceLock<std::thread::Thread>,
    /// The largest payload sent to other nodes ([`Cluster::max_message`]).
    max_message: AtomicUsize,
    /// Whether a publish over `max_message` has been logged.
    too_large_logged: AtomicBool,
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
            unsubscribed: SegQueue::new(),
            bridge: OnceLock::new(),
            max_message: AtomicUsize::new(DEFAULT_PUBSUB_HARD_LIMIT - ENVELOPE_ROOM),
            too_large_logged: AtomicBool::new(false),
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

    /// The largest payload that goes to other nodes: just under the hard limit Redis puts on a
    /// subscriber's output buffer (`client-output-buffer-limit pubsub`, read from each server at
    /// connection; 32 MiB, Redis' default, when it cannot be read). A larger message would make
    /// Redis drop every receiving node's subscribing connection, and everything in flight with
    /// it; it stays on its own node instead, counted as `too_large`.
    pub fn max_message(&self) -> usize {
        self.max_message.load(Ordering::Relaxed)
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

/// A Redis server's address.
type Addr = (String, u16);

impl Resp {
    /// Connects to `addr` with the credentials of `info`.
    fn connect(info: &redis::ConnectionInfo, addr: &Addr) -> io::Result<Resp> {
        let (host, port) = addr;
        let mut last = io::Error::other(format!("{host}:{port} resolves to no address"));
        let mut stream = None;
        for a in (host.as_str(), *port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
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
            match conn.call(&auth)? {
                Value::Okay => {}
                Value::SimpleString(s) if s == "OK" => {}
                other => return Err(io::Error::other(format!("AUTH refused: {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Checks that a Redis server answers on this connection.
    fn ping(&mut self) -> io::Result<()> {
        match self.call(&redis::cmd("PING"))? {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(io::Error::other(format!("PING answered {other:?}"))),
        }
    }

    fn call(&mut self, cmd: &redis::Cmd) -> io::Result<Value> {
        self.stream.write_all(&cmd.get_packed_command())?;
        self.read()
    }

    fn read(&mut self) -> io::Result<Value> {
        self.parser
            .parse_value(&mut self.reader)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// The address the URL names.
fn url_addr(info: &redis::ConnectionInfo) -> io::Result<Addr> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
        other => Err(io::Error::other(format!(
            "unsupported Redis address {other:?}"
        ))),
    }
}

/// Why the link to Redis was dropped.
#[derive(Debug)]
enum LinkError {
    /// A connection failed: an outage.
    Io(io::Error),
    /// A Redis Cluster slot moved to another master: read the layout again, at once.
    Moved(String),
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> LinkError {
        LinkError::Io(e)
    }
}

/// What a receiver thread saw of its connection ([`Link::state`]).
const ALIVE: u8 = 0;
const ENDED: u8 = 1;
const MOVED: u8 = 2;

/// The hard limit of a pub/sub subscriber's output buffer on the server of `conn`:
/// `CONFIG GET client-output-buffer-limit`'s `pubsub HARD SOFT SECONDS`; no limit (0) is
/// `usize::MAX`, and a server that does not answer CONFIG (a managed Redis may rename it) is
/// taken to have Redis' default.
fn pubsub_hard_limit(conn: &mut Resp) -> io::Result<usize> {
    let reply = conn.call(
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("client-output-buffer-limit"),
    )?;
    let Value::Array(items) = reply else {
        return Ok(DEFAULT_PUBSUB_HARD_LIMIT);
    };
    let text = match items.get(1) {
        Some(Value::BulkString(v)) => String::from_utf8_lossy(v).into_owned(),
        _ => return Ok(DEFAULT_PUBSUB_HARD_LIMIT),
    };
    Ok(parse_pubsub_hard_limit(&text).unwrap_or(DEFAULT_PUBSUB_HARD_LIMIT))
}

/// The pubsub class's hard limit in a `client-output-buffer-limit` value
/// (`normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60`).
fn parse_pubsub_hard_limit(text: &str) -> Option<usize> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "pubsub")?;
    match words.get(i + 1)?.parse::<usize>().ok()? {
        0 => Some(usize::MAX),
        n => Some(n),
    }
}

/// Redis Cluster's hash slots.
pub mod slots {
    /// Hash slots of a Redis Cluster.
    pub const COUNT: usize = 16384;

    /// The slot of a key or shard channel: CRC16 (XMODEM) of the key, or of its hash tag (the
    /// part between the first `{` and the next `}`, when not empty), modulo 16384.
    pub fn of(key: &[u8]) -> u16 {
        let key = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16::State::<crc16::XMODEM>::calculate(key) % COUNT as u16
    }
}

/// Which master serves each slot, from `CLUSTER SLOTS`; `None` when the server is not part of
/// a cluster.
fn cluster_slots(conn: &mut Resp, default_host: &str) -> io::Result<Option<Vec<(u16, u16, Addr)>>> {
    let reply = conn.call(&redis::cmd("CLUSTER").arg("SLOTS").clone())?;
    let entries = match reply {
        Value::ServerError(_) => return Ok(None),
        Value::Array(entries) => entries,
        other => return Err(io::Error::other(format!("CLUSTER SLOTS: {other:?}"))),
    };
    let bad = || io::Error::other("CLUSTER SLOTS: unexpected reply");
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) if !h.is_empty() && h != b"?" => {
                String::from_utf8_lossy(h).into_owned()
            }
            _ => default_host.to_string(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let in_range = |n: i64| (0..slots::COUNT as i64).contains(&n);
        if !in_range(*start) || !in_range(*end) || start > end || !(1..=65535).contains(port) {
            return Err(bad());
        }
        ranges.push((*start as u16, *end as u16, (host, *port as u16)));
    }
    Ok(Some(ranges))
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
    /// Shard channels the bridge has unsubscribed from and Redis has not yet confirmed.
    unsubscribing: HashMap<Vec<u8>, u32>,
    /// Publishes a Redis Cluster master redirected (MOVED, ASK), sent again first once the
    /// layout has been read again.
    retry: Vec<Outgoing>,
    /// No connection attempt before this.
    retry_at: Option<Instant>,
}

/// The connections to one Redis server (one master of a cluster).
struct Shard {
    addr: Addr,
    publisher: Resp,
    /// The writing half of the subscribing connection.
    subscriber: TcpStream,
    /// Publishes packed for this shard and not yet written.
    batch: Vec<u8>,
    /// Publishes sent and not yet answered, in order.
    unanswered: Vec<Outgoing>,
}

/// The connections to Redis: one shard, or one per master of a Redis Cluster.
struct Link {
    shards: Vec<Shard>,
    /// The shard of each slot, for a Redis Cluster.
    slots: Option<Box<[u16]>>,
    /// Set by a receiver thread when its connection ends ([`ENDED`]) or a slot moved
    /// ([`MOVED`]).
    state: Arc<AtomicU8>,
    /// When the link was confirmed.
    since: Instant,
}

impl Link {
    fn shard_of(&self, channel: &[u8]) -> usize {
        match &self.slots {
            Some(table) => table[slots::of(channel) as usize] as usize,
            None => 0,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // ends the receivers' blocking reads
        for shard in &self.shards {
            let _ = shard.subscriber.shutdown(Shutdown::Both);
        }
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
            unsubscribing: HashMap::new(),
            retry: Vec::new(),
            retry_at: None,
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
                if let Some(wait) = self
                    .retry_at
                    .and_then(|at| at.checked_duration_since(Instant::now()))
                {
                    // changes of interest and publishes wake the thread: the queues are
                    // looked at (and publishes counted as dropped) while it waits
                    self.discard_outgoing();
                    std::thread::park_timeout(wait);
                    continue;
                }
                if let Err(e) = self.connect() {
                    self.went_down(&e);
                    self.discard_outgoing();
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                continue;
            }
            let result = self
                .subscribe_changes(changed)
                .and_then(|()| self.check_unsubscribed())
                .and_then(|()| self.publish_batch());
            let state = self
                .link
                .as_ref()
                .map_or(ALIVE, |l| l.state.load(Ordering::Acquire));
            match (result, state) {
                (Err(LinkError::Moved(why)), _) => self.relayout(&why),
                (_, MOVED) => self.relayout("a subscription was redirected"),
                (Err(LinkError::Io(e)), _) => self.link_lost(&e),
                (_, ENDED) => self.link_lost(&io::Error::other("a subscribing connection closed")),
                (Ok(0), _) => {
                    if self.backoff > MIN_BACKOFF
                        && self
                            .link
                            .as_ref()
                            .is_some_and(|l| l.since.elapsed() >= STABLE)
                    {
                        self.backoff = MIN_BACKOFF;
                    }
                    if self.cluster.outgoing.is_empty() && self.cluster.interest.is_empty() {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                }
                (Ok(_), _) => {}
            }
        }
        self.link = None;
    }

    /// Drops a link that failed; an outage. A link that did not last [`STABLE`] is tried
    /// again only after the backoff.
    fn link_lost(&mut self, e: &io::Error) {
        if let Some(link) = self.link.take()
            && link.since.elapsed() < STABLE
        {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.went_down(e);
    }

    /// Drops the link to read a Redis Cluster's layout again: not an outage.
    fn relayout(&mut self, why: &str) {
        // publishes queue meanwhile: the next link sends them
        tracing::info!("redis cluster layout changed ({why}): reading it again");
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
                    topic.set_remote_ready(false);
                    self.wanted.insert(name.clone(), topic);
                    remove.retain(|n| *n != name);
                    add.push(name);
                }
                (false, true) => {
                    topic.set_remote_ready(false);
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
        let info = self.client.get_connection_info().clone();
        let addr = url_addr(&info)?;
        let mut first = Resp::connect(&info, &addr)?;
        first.ping()?;
        let layout = if self.cluster.sharded {
            cluster_slots(&mut first, &addr.0)?
        } else {
            None
        };
        self.unsubscribing.clear();
        while self.cluster.unsubscribed.pop().is_some() {}
        let state = Arc::new(AtomicU8::new(ALIVE));
        let mut link = Link {
            shards: Vec::new(),
            slots: None,
            state: state.clone(),
            since: Instant::now(),
        };
        let mut masters: Vec<Addr> = Vec::new();
        match layout {
            None => masters.push(addr.clone()),
            Some(ranges) => {
                let mut table = vec![u16::MAX; slots::COUNT].into_boxed_slice();
                for (start, end, master) in ranges {
                    let i = match masters.iter().position(|m| *m == master) {
                        Some(i) => i,
                        None => {
                            masters.push(master);
                            masters.len() - 1
                        }
                    };
                    table[start as usize..=end as usize].fill(i as u16);
                }
                if table.contains(&u16::MAX) {
                    return Err(io::Error::other(
                        "the Redis Cluster does not cover every hash slot",
                    ));
                }
                link.slots = Some(table);
            }
        }
        let mut first = Some(first);
        for master in masters {
            let publisher = match first.take() {
                Some(conn) if master == addr => conn,
                _ => {
                    let mut conn = Resp::connect(&info, &master)?;
                    conn.ping()?;
                    conn
                }
            };
            let mut subscriber = Resp::connect(&info, &master)?;
            subscriber.ping()?;
            subscriber.stream.set_read_timeout(None)?;
            let writer = subscriber.stream.try_clone()?;
            let receiver = Receiver {
                shared: self.shared.clone(),
                cluster: self.cluster.clone(),
                conn: subscriber,
                state: state.clone(),
                clustered: link.slots.is_some(),
                channels: 0,
            };
            std::thread::Builder::new()
                .name("wsgate-redis-rx".into())
                .spawn(move || receiver.run())?;
            link.shards.push(Shard {
                addr: master,
                publisher,
                subscriber: writer,
                batch: Vec::new(),
                unanswered: Vec::new(),
            });
        }
        let mut hard_limit = usize::MAX;
        for shard in &mut link.shards {
            hard_limit = hard_limit.min(pubsub_hard_limit(&mut shard.publisher)?);
        }
        let max = hard_limit.saturating_sub(ENVELOPE_ROOM).max(1);
        if self.cluster.max_message.swap(max, Ordering::Relaxed) != max {
            tracing::info!(
                "messages up to {max} bytes go to other nodes (Redis' pub/sub output buffer limit)"
            );
        }
        for topic in self.wanted.values() {
            topic.set_remote_ready(false);
        }
        let all: Vec<Arc<str>> = self.wanted.keys().cloned().collect();
        self.send_subscriptions(&mut link, &all, true)?;
        let shards = link.shards.len();
        link.since = Instant::now();
        self.link = Some(link);
        self.retry_at = None;
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
            None if shards > 1 => tracing::info!(
                "connected to the redis cluster at {} ({shards} masters)",
                self.url
            ),
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
        let mut n = self.retry.len() as u64;
        self.retry.clear();
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
    ) -> Result<(), LinkError> {
        let Some(mut link) = self.link.take() else {
            return Ok(());
        };
        let result = self
            .send_subscriptions(&mut link, &add, true)
            .and_then(|()| self.send_subscriptions(&mut link, &remove, false));
        self.link = Some(link);
        Ok(result?)
    }

    /// SUBSCRIBEs to (or UNSUBSCRIBEs from) the channels of `topics`, each on its shard. In a
    /// Redis Cluster one command names one channel: a command's shard channels must share a slot.
    fn send_subscriptions(
        &mut self,
        link: &mut Link,
        topics: &[Arc<str>],
        subscribe: bool,
    ) -> io::Result<()> {
        let verb = match (subscribe, self.cluster.sharded) {
            (true, false) => "SUBSCRIBE",
            (false, false) => "UNSUBSCRIBE",
            (true, true) => "SSUBSCRIBE",
            (false, true) => "SUNSUBSCRIBE",
        };
        let per_command = if link.slots.is_some() {
            1
        } else {
            SUBSCRIBE_CHUNK
        };
        let mut packed: Vec<Vec<u8>> = vec![Vec::new(); link.shards.len()];
        for chunk in topics.chunks(per_command) {
            let channels: Vec<String> = chunk.iter().map(|t| self.cluster.channel(t)).collect();
            if !subscribe && self.cluster.sharded {
                for c in &channels {
                    *self.unsubscribing.entry(c.as_bytes().to_vec()).or_default() += 1;
                }
            }
            let shard = link.shard_of(channels[0].as_bytes());
            let mut cmd = redis::cmd(verb);
            for c in &channels {
                cmd.arg(c);
            }
            cmd.write_packed_command(&mut packed[shard]);
        }
        for (shard, bytes) in link.shards.iter_mut().zip(packed) {
            if !bytes.is_empty() {
                shard.subscriber.write_all(&bytes)?;
            }
        }
        Ok(())
    }

    /// Looks at the shard channels Redis unsubscribed this node from: one the bridge did not
    /// ask to leave had its slot moved to another master, so the bridge reads the cluster's
    /// layout again and subscribes where the channel now lives.
    fn check_unsubscribed(&mut self) -> Result<(), LinkError> {
        let mut moved = false;
        while let Some(channel) = self.cluster.unsubscribed.pop() {
            match self.unsubscribing.get_mut(&channel) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    self.unsubscribing.remove(&channel);
                }
                None => moved = true,
            }
        }
        if moved {
            self.unsubscribing.clear();
            return Err(LinkError::Moved(
                "a shard channel was unsubscribed by the cluster".into(),
            ));
        }
        Ok(())
    }

    /// Sends up to [`BATCH`] waiting publishes (redirected ones first), pipelined to each
    /// one's shard, and reads the replies. Returns how many went.
    fn publish_batch(&mut self) -> Result<usize, LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(0);
        };
        let verb: &[u8] = if self.cluster.sharded {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let mut retry = std::mem::take(&mut self.retry).into_iter();
        let mut n = 0;
        let mut freed = 0;
        let result = (|| -> io::Result<()> {
            while n < BATCH {
                let o = match retry.next() {
                    Some(o) => o,
                    None => match self.cluster.outgoing.pop() {
                        Some(o) => {
                            freed += o.size;
                            o
                        }
                        None => break,
                    },
                };
                n += 1;
                let channel = self.cluster.channel(&o.topic);
                let i = link.shard_of(channel.as_bytes());
                let shard = &mut link.shards[i];
                let head = envelope::head(&self.cluster.node, &o.frame);
                let payload = o.frame.payload();
                let b = &mut shard.batch;
                b.extend_from_slice(b"*3\r\n");
                write_bulk(b, verb);
                write_bulk(b, channel.as_bytes());
                b.extend_from_slice(format!("${}\r\n", head.len() + payload.len()).as_bytes());
                b.extend_from_slice(&head);
                if payload.len() < COPY_LIMIT {
                    b.extend_from_slice(payload);
                } else {
                    // a large payload goes out from its own buffer, not copied
                    shard.publisher.stream.write_all(b)?;
                    b.clear();
                    shard.publisher.stream.write_all(payload)?;
                }
                b.extend_from_slice(b"\r\n");
                shard.unanswered.push(o);
            }
            Ok(())
        })();
        // what is left of the redirected ones (more than a batch) goes first next time
        let mut redirected: Vec<Outgoing> = retry.collect();
        let result = result.and_then(|()| {
            for shard in &mut link.shards {
                if shard.unanswered.is_empty() {
                    continue;
                }
                shard.publisher.stream.write_all(&shard.batch)?;
                shard.batch.clear();
                let mut refused = None;
                for o in std::mem::take(&mut shard.unanswered) {
                    match shard.publisher.read()? {
                        Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK") => {
                            redirected.push(o)
                        }
                        Value::ServerError(e) => refused = Some(e),
                        _ => {}
                    }
                }
                if let Some(e) = refused {
                    return Err(io::Error::other(format!(
                        "{}:{} refused a publish: {e:?}",
                        shard.addr.0, shard.addr.1
                    )));
                }
            }
            Ok(())
        });
        self.cluster
            .pending_bytes
            .fetch_sub(freed, Ordering::AcqRel);
        let stats = &self.cluster.stats;
        match result {
            Ok(()) if redirected.is_empty() => {
                stats.published.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Ok(()) => {
                let moved = redirected.len();
                stats
                    .published
                    .fetch_add((n - moved) as u64, Ordering::Relaxed);
                self.retry = redirected;
                Err(LinkError::Moved(format!("{moved} publishes redirected")))
            }
            Err(e) => {
                // what was written may or may not have been published: none is sent again
                stats
                    .dropped_redis_down
                    .fetch_add((n + redirected.len()) as u64, Ordering::Relaxed);
                for shard in &mut link.shards {
                    shard.unanswered.clear();
                    shard.batch.clear();
                }
                Err(LinkError::Io(e))
            }
        }
    }
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
    state: Arc<AtomicU8>,
    /// Whether the connection is to one master of a Redis Cluster.
    clustered: bool,
    /// Channels this connection is subscribed to, as Redis last said.
    channels: u64,
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
                Value::ServerError(e) if self.clustered && e.code() == "MOVED" => {
                    // a slot moved to another master: the bridge reads the layout again
                    let _ = self.state.compare_exchange(
                        ALIVE,
                        MOVED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    break;
                }
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
        self.set_channels(0);
        let _ = self
            .state
            .compare_exchange(ALIVE, ENDED, Ordering::AcqRel, Ordering::Acquire);
        self.cluster.wake();
    }

    fn on_push(&mut self, items: Vec<Value>) {
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
                let channel = items.next();
                if let Some(Value::Int(count)) = items.next() {
                    self.set_channels(count.max(0) as u64);
                }
                if matches!(kind.as_slice(), b"subscribe" | b"ssubscribe")
                    && let Some(Value::BulkString(channel)) = &channel
                {
                    self.confirmed(channel);
                }
                if kind == b"sunsubscribe"
                    && let Some(Value::BulkString(channel)) = channel
                {
                    self.cluster.unsubscribed.push(channel);
                    self.cluster.wake();
                }
            }
            _ => {}
        }
    }

    /// Redis confirmed a subscription: acknowledgements of subscribes to the topic that waited
    /// for it can go.
    fn confirmed(&self, channel: &[u8]) {
        let Some(name) = channel
            .strip_prefix(self.cluster.prefix.as_bytes())
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        let hub = &self.shared.hub;
        if let Some(topic) = hub.find(name) {
            topic.set_remote_ready(true);
            hub.release(topic);
            hub.wake_all();
        }
    }

    /// Records this connection's count of channels in the node's total.
    fn set_channels(&mut self, count: u64) {
        let channels = &self.cluster.stats.channels;
        if count >= self.channels {
            channels.fetch_add(count - self.channels, Ordering::Relaxed);
        } else {
            channels.fetch_sub(self.channels - count, Ordering::Relaxed);
        }
        self.channels = count;
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
    fn pubsub_output_limits_are_read_from_the_config_value() {
        assert_eq!(
            parse_pubsub_hard_limit(
                "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
            ),
            Some(33554432)
        );
        assert_eq!(
            parse_pubsub_hard_limit("normal 0 0 0 pubsub 0 0 0"),
            Some(usize::MAX),
            "0: no limit"
        );
        assert_eq!(parse_pubsub_hard_limit("normal 0 0 0"), None);
        assert_eq!(parse_pubsub_hard_limit("pubsub lots 1 1"), None);
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(random_node_id(), random_node_id());
        assert!(random_node_id().len() <= 49);
    }
}
