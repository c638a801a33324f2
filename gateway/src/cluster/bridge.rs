//! The bridge thread: sends this node's publishes to Redis and keeps the node subscribed to the
//! channels of the topics it has subscribers of.

use super::receiver::Receiver;
use super::resp::{self, Addr, Resp, write_bulk};
use super::{Cluster, ENVELOPE_ROOM, MAX_BACKOFF, MIN_BACKOFF, Outgoing, envelope, scripts, slots};
use crate::hub::{Hub, Topic};
use redis::Value;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Publishes sent in one pipelined batch at most.
const BATCH: usize = 1024;
/// Payloads at least this large are written from their own buffer instead of being copied
/// into the batch.
const COPY_LIMIT: usize = 16 << 10;
/// A link that stays up this long ends an outage's backoff; one that dies sooner is retried
/// after the backoff, so a Redis that accepts connections and drops them is not hammered.
const STABLE: Duration = Duration::from_secs(2);
/// Channels named in one SUBSCRIBE command at most.
const SUBSCRIBE_CHUNK: usize = 512;

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
pub(super) const ALIVE: u8 = 0;
pub(super) const ENDED: u8 = 1;
pub(super) const MOVED: u8 = 2;

/// The bridge thread's state.
pub(super) struct Bridge {
    hub: Arc<Hub>,
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
    /// When the epoch of each listened-to topic with history was last kept alive in Redis
    /// ([`Bridge::keep_epochs`]).
    kept_alive: HashMap<Arc<str>, Instant>,
    /// When to look at them next.
    next_keep_alive: Instant,
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
    /// The SHA1 digests of [`scripts::PUBLISH`] and [`scripts::PRIME`], loaded on this server.
    publish_sha: String,
    prime_sha: String,
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
    pub(super) fn new(
        hub: Arc<Hub>,
        cluster: Arc<Cluster>,
        client: redis::Client,
        url: String,
    ) -> Self {
        Bridge {
            hub,
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
            kept_alive: HashMap::new(),
            next_keep_alive: Instant::now(),
        }
    }

    fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(super) fn run(mut self) {
        tracing::info!(
            node = %String::from_utf8_lossy(self.cluster.node()),
            "joining the cluster through {}",
            self.url
        );
        while !self.cluster.is_stopping() {
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
                .and_then(|()| self.prime_waiting())
                .and_then(|()| self.keep_epochs())
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
                    if self.cluster.outgoing.is_empty()
                        && self.cluster.interest.is_empty()
                        && self.cluster.to_prime.is_empty()
                    {
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

    /// Drops the link to read a Redis Cluster's layout again: not an outage. A link redirected
    /// again before it lasted [`STABLE`] (the layout read says what the redirect contradicts,
    /// a migration in progress) is made again only after the backoff, not in a tight loop.
    fn relayout(&mut self, why: &str) {
        // publishes queue meanwhile: the next link sends them
        tracing::info!("redis cluster layout changed ({why}): reading it again");
        if let Some(link) = self.link.take()
            && link.since.elapsed() < STABLE
        {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
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
                    // nothing reaches the mirror now: it is primed again when listened to
                    self.hub().unprime(&topic);
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
        let addr = resp::url_addr(&info)?;
        let mut first = Resp::connect(&info, &addr)?;
        first.ping()?;
        // a Redis Cluster's layout is read in both modes: shard channels live on their slot's
        // master, and a history topic's script runs where its keys' slot lives (its PUBLISH
        // reaches every master's subscribers); a plain Redis answers None
        let layout = resp::cluster_slots(&mut first, &addr.0)?;
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
                hub: self.hub.clone(),
                cluster: self.cluster.clone(),
                conn: subscriber,
                state: state.clone(),
                clustered: link.slots.is_some(),
                channels: 0,
            };
            std::thread::Builder::new()
                .name("wsgate-redis-rx".into())
                .spawn(move || receiver.run())?;
            let mut publisher = publisher;
            let publish_sha = load_script(&mut publisher, scripts::PUBLISH)?;
            let prime_sha = load_script(&mut publisher, scripts::PRIME)?;
            link.shards.push(Shard {
                addr: master,
                publisher,
                subscriber: writer,
                batch: Vec::new(),
                unanswered: Vec::new(),
                publish_sha,
                prime_sha,
            });
        }
        let mut hard_limit = usize::MAX;
        for shard in &mut link.shards {
            hard_limit = hard_limit.min(resp::pubsub_hard_limit(&mut shard.publisher)?);
        }
        let max = hard_limit.saturating_sub(ENVELOPE_ROOM).max(1);
        if self.cluster.max_message.swap(max, Ordering::Relaxed) != max {
            tracing::info!(
                "messages up to {max} bytes go to other nodes (Redis' pub/sub output buffer limit)"
            );
        }
        for topic in self.wanted.values() {
            topic.set_remote_ready(false);
            // what was published while the link was down comes with the next priming
            self.hub.unprime(topic);
        }
        let all: Vec<Arc<str>> = self.wanted.keys().cloned().collect();
        self.send_subscriptions(&mut link, &all, true)?;
        let shards = link.shards.len();
        link.since = Instant::now();
        self.link = Some(link);
        self.retry_at = None;
        self.cluster.stats.up.store(true, Ordering::Release);
        if self.connected_once {
            self.cluster.stats.reconnects.fetch_add(1, Ordering::AcqRel);
            // the workers tell their subscribers they may have missed messages meanwhile
            self.hub.wake_all();
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

    /// Primes the mirrors of the topics whose subscription Redis confirmed (or whose offsets
    /// jumped) from their streams in Redis, then lets the subscribes that waited for them be
    /// answered.
    fn prime_waiting(&mut self) -> Result<(), LinkError> {
        let mut waiting = Vec::new();
        while let Some(topic) = self.cluster.to_prime.pop() {
            waiting.push(topic);
        }
        let mut waiting = waiting.into_iter();
        while let Some(topic) = waiting.next() {
            let result = self.prime(&topic);
            if result.is_err() {
                // the link failed: they are primed after the next connection's subscribes
                for rest in std::iter::once(topic).chain(waiting) {
                    self.hub.release(rest);
                }
                return result;
            }
            self.hub.release(topic);
        }
        Ok(())
    }

    fn prime(&mut self, topic: &Arc<Topic>) -> Result<(), LinkError> {
        if !self.wanted.contains_key(topic.name()) {
            return Ok(()); // no longer listened to: primed when it is again
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let channel = self.cluster.channel(topic.name());
        let Some((meta, stream)) = scripts::keys(&channel) else {
            unkeyed(topic.name());
            self.hub.confirm_remote(topic);
            return Ok(());
        };
        let (Some((last, epoch)), Some((_, ttl))) =
            (topic.history_position(), topic.history_limits())
        else {
            return Ok(());
        };
        let i = link.shard_of(channel.as_bytes());
        let shard = &mut link.shards[i];
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&shard.prime_sha)
            .arg(2)
            .arg(meta)
            .arg(stream)
            .arg(last)
            .arg(&*epoch)
            .arg(ttl.as_millis().max(1) as u64);
        let reply = shard.publisher.call(&cmd)?;
        match reply {
            Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK") => {
                self.cluster.prime_later(topic.clone());
                return Err(LinkError::Moved(format!("priming {:?}", &**topic.name())));
            }
            Value::ServerError(e) => {
                tracing::warn!(
                    "redis refused to read the history of {:?}: {e:?}",
                    &**topic.name()
                );
            }
            reply => match scripts::primed(reply) {
                Some(p) => {
                    if !self.hub.prime(topic, &p.epoch, p.last, p.messages) {
                        self.cluster.prime_later(topic.clone());
                    }
                }
                None => tracing::warn!(
                    "redis' history of {:?} is not wsgate's: left unread",
                    &**topic.name()
                ),
            },
        }
        // the subscribes that waited for the mirror are answered (from it when primed; a
        // mirror that could not be is refused by them as unavailable)
        self.hub.confirm_remote(topic);
        Ok(())
    }

    /// Keeps the epochs of the topics with history that this node listens to alive in Redis
    /// (their hash expires `ttl` after the last publish): a quiet topic with subscribers keeps
    /// its epoch, as on one node, instead of starting a new one, which would tell every
    /// subscriber of a gap. Each is refreshed every third of its ttl, at most once a second.
    fn keep_epochs(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        if now < self.next_keep_alive {
            return Ok(());
        }
        self.next_keep_alive = now + Duration::from_secs(1);
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        self.kept_alive
            .retain(|name, _| self.wanted.contains_key(name));
        let mut sent = vec![0usize; link.shards.len()];
        for (name, topic) in &self.wanted {
            let Some((_, ttl)) = topic.history_limits() else {
                continue;
            };
            if !topic.is_mirrored()
                || self
                    .kept_alive
                    .get(name)
                    .is_some_and(|at| now.duration_since(*at) < ttl / 3)
            {
                continue;
            }
            let channel = self.cluster.channel(name);
            let Some((meta, _)) = scripts::keys(&channel) else {
                continue;
            };
            let i = link.shard_of(channel.as_bytes());
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(meta).arg(ttl.as_millis().max(1) as u64);
            cmd.write_packed_command(&mut link.shards[i].batch);
            sent[i] += 1;
            self.kept_alive.insert(name.clone(), now);
        }
        for (shard, n) in link.shards.iter_mut().zip(sent) {
            if n == 0 {
                continue;
            }
            shard.publisher.stream.write_all(&shard.batch)?;
            shard.batch.clear();
            for _ in 0..n {
                if let Value::ServerError(e) = shard.publisher.read()?
                    && matches!(e.code(), "MOVED" | "ASK")
                {
                    return Err(LinkError::Moved("keeping an epoch alive".into()));
                }
            }
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
                let payload = o.frame.payload();
                let b = &mut shard.batch;
                if let Some((size, ttl)) = o.history {
                    let Some((meta, stream)) = scripts::keys(&channel) else {
                        unkeyed(&o.topic);
                        self.cluster
                            .stats
                            .dropped_history
                            .fetch_add(1, Ordering::Relaxed);
                        shard.unanswered.push(o);
                        // answered by nobody: a placeholder the reply loop skips
                        shard.batch.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
                        continue;
                    };
                    let head = envelope::sequenced_head(&self.cluster.node, &o.frame);
                    b.extend_from_slice(b"*11\r\n");
                    write_bulk(b, b"EVALSHA");
                    write_bulk(b, shard.publish_sha.as_bytes());
                    write_bulk(b, b"2");
                    write_bulk(b, meta.as_bytes());
                    write_bulk(b, stream.as_bytes());
                    write_bulk(b, &head);
                    b.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
                    let tail = [
                        size.to_string(),
                        ttl.as_millis().max(1).to_string(),
                        channel.clone(),
                        String::from(if self.cluster.sharded { "1" } else { "0" }),
                    ];
                    if payload.len() < COPY_LIMIT {
                        b.extend_from_slice(payload);
                    } else {
                        shard.publisher.stream.write_all(b)?;
                        b.clear();
                        shard.publisher.stream.write_all(payload)?;
                    }
                    b.extend_from_slice(b"\r\n");
                    for arg in &tail {
                        write_bulk(b, arg.as_bytes());
                    }
                    shard.unanswered.push(o);
                    continue;
                }
                let head = envelope::head(&self.cluster.node, &o.frame);
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
                        // a script that failed for its topic (and no other): counted, logged
                        Value::ServerError(e) if o.history.is_some() => {
                            self.cluster
                                .stats
                                .dropped_history
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                "redis did not keep a message of topic {:?}: {e:?}",
                                &*o.topic
                            );
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

/// Loads a script on a server; returns its digest.
fn load_script(conn: &mut Resp, script: &str) -> io::Result<String> {
    match conn.call(redis::cmd("SCRIPT").arg("LOAD").arg(script))? {
        Value::BulkString(sha) => String::from_utf8(sha).map_err(io::Error::other),
        Value::SimpleString(sha) => Ok(sha),
        other => Err(io::Error::other(format!(
            "redis did not load wsgate's history script: {other:?}"
        ))),
    }
}

/// Logs (once) a topic whose history cannot be kept in a Redis Cluster: its name has a `}` and
/// no hash tag, so no key can be named in its channel's slot.
fn unkeyed(topic: &str) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!(
            "the history of topic {topic:?} cannot be kept in redis: a name with '}}' needs a \
             hash tag ({{tag}}) in a redis cluster; its publishes are dropped"
        );
    }
}
