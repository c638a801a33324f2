//! The bridge thread: sends this node's publishes to Redis and keeps the node subscribed to the
//! channels of the topics it has subscribers of.

mod history;
mod link;
mod publish;
mod subscriptions;

use super::resp::{Addr, Resp};
use super::{Cluster, MIN_BACKOFF, Outgoing, slots};
use crate::hub::{Hub, Topic};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

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
    /// The SHA1 digests of [`scripts::PUBLISH`](super::scripts::PUBLISH) and
    /// [`scripts::PRIME`](super::scripts::PRIME), loaded on this server.
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
}
