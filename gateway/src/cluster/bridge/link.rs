//! The link to Redis: the bridge thread's run loop, connecting (and reading a Redis Cluster's
//! layout), outages and their backoff, and reading the layout again when a slot moved.

use super::{ALIVE, Bridge, ENDED, Link, LinkError, MOVED, Shard};
use crate::cluster::receiver::Receiver;
use crate::cluster::resp::{self, Addr, Resp};
use crate::cluster::{ENVELOPE_ROOM, MAX_BACKOFF, MIN_BACKOFF, scripts, slots};
use redis::Value;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// A link that stays up this long ends an outage's backoff; one that dies sooner is retried
/// after the backoff, so a Redis that accepts connections and drops them is not hammered.
const STABLE: Duration = Duration::from_secs(2);

impl Bridge {
    pub(in crate::cluster) fn run(mut self) {
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
