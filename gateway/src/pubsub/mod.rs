//! Local pub/sub: this worker's subscribers of each topic, subscribing and unsubscribing,
//! publishing, and the acknowledgements of subscribes that wait for the cluster.
//!
//! Plain data owned by one worker, no lock. It is generic over the id of a subscriber (`K`,
//! the worker's connection id), so it knows nothing of connections: it says who is to receive
//! a frame, and the worker queues it. What other workers and nodes need goes through the
//! [`Hub`].

mod acks;

pub(crate) use acks::MAX_HELD as ACKS_HELD_MAX;

use acks::DeferredAcks;

use crate::hub::{Hub, Topic};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;
use wsgate_core::deflate::SharedFrame;

/// Topics without subscribers a worker keeps (for publishing) before it forgets them.
const TOPIC_CACHE_LIMIT: usize = 65_536;

/// The topics one connection subscribes to.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<Arc<str>>);

impl Subscriptions {
    /// Whether `topic` is one of them.
    pub(crate) fn contains(&self, topic: &str) -> bool {
        self.0.iter().any(|t| &**t == topic)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// This worker's subscribers of one topic (none: a topic kept for publishing).
#[derive(Debug)]
struct LocalTopic<K> {
    topic: Arc<Topic>,
    subscribers: HashSet<K>,
    /// On a topic with history: subscribers that must not get messages up to an offset (they
    /// got them by recovery, or subscribed after them), while such messages may still be in
    /// the worker's inbox. Empty but for a moment after such subscribes.
    floors: HashMap<K, u64>,
}

/// One worker's pub/sub.
#[derive(Debug)]
pub(crate) struct PubSub<K> {
    worker: usize,
    hub: Arc<Hub>,
    topics: HashMap<Arc<str>, LocalTopic<K>>,
    acks: DeferredAcks<K>,
    /// Changes whenever a subscriber set of this worker changes (a set is named by its address
    /// and this, see [`Audience`](crate::conn::Audience)).
    generation: u64,
}

/// What a publish reached.
#[derive(Debug)]
pub(crate) struct Published<'a, K> {
    /// This worker's subscribers, to queue the frame to.
    pub(crate) local: &'a HashSet<K>,
    /// Subscribers on this node, all workers together.
    pub(crate) on_node: usize,
    /// An inbox it went to is over its bound: the publisher should wait.
    pub(crate) congested: bool,
    /// The pub/sub's generation ([`PubSub::generation`]) with `local` as it is.
    pub(crate) generation: u64,
}

impl<K: Copy + Eq + Hash> PubSub<K> {
    /// The pub/sub of worker `worker` of `hub`.
    pub(crate) fn new(worker: usize, hub: Arc<Hub>) -> PubSub<K> {
        PubSub {
            worker,
            hub,
            topics: HashMap::new(),
            acks: DeferredAcks::default(),
            generation: 0,
        }
    }

    /// The worker's index.
    pub(crate) fn worker(&self) -> usize {
        self.worker
    }

    /// Subscribes `who`, whose topics are `subs`, to `topic`. Returns false when it already
    /// was. The caller checks what `who` may subscribe to.
    pub(crate) fn subscribe(&mut self, who: K, subs: &mut Subscriptions, topic: &str) -> bool {
        if subs.contains(topic) {
            return false;
        }
        let local = match self.topics.entry(Arc::from(topic)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let topic = self.hub.topic(topic);
                e.insert(LocalTopic {
                    topic,
                    subscribers: HashSet::new(),
                    floors: HashMap::new(),
                })
            }
        };
        subs.0.push(local.topic.name().clone());
        let first = local.subscribers.is_empty();
        local.subscribers.insert(who);
        self.generation += 1;
        self.hub.subscribed(self.worker, &local.topic, first);
        true
    }

    /// Every topic with subscribers on this worker, with them.
    pub(crate) fn subscribed(&self) -> Vec<(Arc<str>, Vec<K>)> {
        self.topics
            .iter()
            .filter(|(_, l)| !l.subscribers.is_empty())
            .map(|(t, l)| (t.clone(), l.subscribers.iter().copied().collect()))
            .collect()
    }

    /// The shared topic `who` subscribes to, when it keeps a history.
    pub(crate) fn history_topic(&self, topic: &str) -> Option<&Arc<Topic>> {
        self.topics
            .get(topic)
            .map(|l| &l.topic)
            .filter(|t| t.has_history())
    }

    /// `who`, subscribed to `topic`, gets only the messages after `offset` from now on.
    pub(crate) fn set_floor(&mut self, who: K, topic: &str, offset: u64) {
        if let Some(local) = self.topics.get_mut(topic)
            && local.subscribers.contains(&who)
        {
            local.floors.insert(who, offset);
        }
    }

    /// For the message of `offset` on `topic` (a topic with history), the subscribers that get
    /// it when some must not (see [`set_floor`](Self::set_floor)); `None` when all of them do.
    /// Floors below `offset` are dropped: the worker takes a topic's messages in offset order,
    /// so they will never hold anything back again.
    pub(crate) fn held_back(&mut self, topic: &str, offset: u64) -> Option<HashSet<K>> {
        let local = self.topics.get_mut(topic)?;
        if local.floors.is_empty() {
            return None;
        }
        local.floors.retain(|_, floor| *floor >= offset);
        if local.floors.is_empty() {
            return None;
        }
        let floors = &local.floors;
        Some(
            local
                .subscribers
                .iter()
                .copied()
                .filter(|who| !floors.contains_key(who))
                .collect(),
        )
    }

    /// The subscribers of `topic` whose subscribe has been answered: all but those held back
    /// from everything ([`set_floor`](Self::set_floor) at `u64::MAX`) until it is. `None`
    /// with no subscribers here.
    pub(crate) fn answered(&self, topic: &str) -> Option<HashSet<K>> {
        let local = self.topics.get(topic)?;
        Some(
            local
                .subscribers
                .iter()
                .copied()
                .filter(|who| local.floors.get(who) != Some(&u64::MAX))
                .collect(),
        )
    }

    /// Drops the floors of `topic` but those of subscribes not answered yet: after a gap
    /// notice offsets may start again (a new epoch), and floors of the old one mean nothing.
    pub(crate) fn clear_floors(&mut self, topic: &str) {
        if let Some(local) = self.topics.get_mut(topic) {
            local.floors.retain(|_, floor| *floor == u64::MAX);
        }
    }

    /// Whether `who` is subscribed to `topic` on this worker.
    pub(crate) fn is_subscribed(&self, who: K, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|local| local.subscribers.contains(&who))
    }

    /// Unsubscribes `who` from `topic`; false when it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, who: K, subs: &mut Subscriptions, topic: &str) -> bool {
        let Some(i) = subs.0.iter().position(|t| &**t == topic) else {
            return false;
        };
        subs.0.swap_remove(i);
        self.forget(topic, who);
        true
    }

    /// Unsubscribes `who` from every topic in `subs` (its session ends).
    pub(crate) fn unsubscribe_all(&mut self, who: K, subs: &mut Subscriptions) {
        for topic in std::mem::take(&mut subs.0) {
            self.forget(&topic, who);
        }
    }

    fn forget(&mut self, topic: &str, who: K) {
        let Some(local) = self.topics.get_mut(topic) else {
            return;
        };
        local.floors.remove(&who);
        if local.subscribers.remove(&who) {
            self.generation += 1;
            let last = local.subscribers.is_empty();
            self.hub.unsubscribed(self.worker, &local.topic, last);
            if last && let Some(local) = self.topics.remove(topic) {
                self.generation += 1;
                self.hub.release(local.topic);
            }
        }
    }

    /// Publishes `frame`, made on this worker, to `topic`: through the hub to the other
    /// workers and nodes. Returns this worker's subscribers, for the caller to queue the frame
    /// to, and the node's count.
    pub(crate) fn publish(&mut self, topic: &str, frame: &SharedFrame) -> Published<'_, K> {
        self.cached(topic);
        let local = &self.topics[topic];
        self.hub.publish(self.worker, &local.topic, frame);
        Published {
            local: &local.subscribers,
            on_node: local.topic.subscribers(),
            congested: self.hub.is_congested(self.worker, &local.topic),
            generation: self.generation,
        }
    }

    /// The shared topic, cached: whether it keeps a history decides how it is published.
    pub(crate) fn topic(&mut self, topic: &str) -> &Arc<Topic> {
        &self.cached(topic).topic
    }

    /// Publishes to a topic with history ([`Hub::publish_at`]): the frame `make` builds with
    /// the message's offset goes to every worker's inbox, this one's included (this worker's
    /// subscribers get it when the worker takes its inbox, after what was published before).
    /// Returns the offset, the epoch, the node's subscribers and whether an inbox is over its
    /// bound; `None` when the topic keeps no history.
    pub(crate) fn publish_at(
        &mut self,
        topic: &str,
        now: Instant,
        make: impl FnOnce(u64) -> (SharedFrame, Option<SharedFrame>),
    ) -> Option<(u64, Arc<str>, usize, bool)> {
        let shared = self.cached(topic).topic.clone();
        let (_, offset, epoch) = self.hub.publish_at(&shared, now, make)?;
        let congested = self.hub.is_congested(self.worker, &shared);
        Some((offset, epoch, shared.subscribers(), congested))
    }

    fn cached(&mut self, topic: &str) -> &LocalTopic<K> {
        if !self.topics.contains_key(topic) {
            if self.topics.len() >= TOPIC_CACHE_LIMIT {
                self.sweep();
            }
            let shared = self.hub.topic(topic);
            self.generation += 1; // the sets may move
            self.topics.insert(
                shared.name().clone(),
                LocalTopic {
                    topic: shared,
                    subscribers: HashSet::new(),
                    floors: HashMap::new(),
                },
            );
        }
        &self.topics[topic]
    }

    /// Whether a publish to `topic` would go to an inbox over its bound.
    pub(crate) fn is_congested(&self, topic: &str) -> bool {
        match self.topics.get(topic) {
            Some(local) => self.hub.is_congested(self.worker, &local.topic),
            None => self.hub.find(topic).is_some_and(|t| {
                let congested = self.hub.is_congested(self.worker, &t);
                self.hub.release(t);
                congested
            }),
        }
    }

    /// Whether every inbox this worker publishes to has room again.
    pub(crate) fn has_room(&self) -> bool {
        self.hub.has_room(self.worker)
    }

    /// Changes whenever a subscriber set changes, or moves (topics added or removed): with a
    /// set's address it names the set as it is now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// This worker's subscribers of `topic` (for a frame another worker or node published).
    pub(crate) fn subscribers(&self, topic: &str) -> Option<&HashSet<K>> {
        self.topics.get(topic).map(|l| &l.subscribers)
    }

    /// Forgets the topics kept only for publishing.
    fn sweep(&mut self) {
        self.generation += 1;
        let idle: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(_, l)| l.subscribers.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for name in idle {
            if let Some(local) = self.topics.remove(&name) {
                self.hub.release(local.topic);
            }
        }
    }

    /// In a cluster, holds back the acknowledgement (`id`) of `who`'s subscribe to `topic`
    /// until the link to other nodes has confirmed the node's interest in the topic (at most
    /// [`ACK_WAIT`](acks::ACK_WAIT)), so that an acknowledged subscriber receives what any node publishes after
    /// the acknowledgement. Returns whether it waits; if not, acknowledge now.
    /// Past [`MAX_HELD`](acks::MAX_HELD) held ones it does not wait (and returns false).
    pub(crate) fn defer_ack(&mut self, who: K, topic: &str, id: i64, now: Instant) -> bool {
        let Some(local) = self.topics.get(topic) else {
            return false;
        };
        if !self.hub.awaits_uplink(&local.topic) {
            return false;
        }
        self.acks.hold(who, id, local.topic.clone(), now)
    }

    /// Acknowledgements held now.
    pub(crate) fn acks_held(&self) -> usize {
        self.acks.len()
    }

    /// The acknowledgements that may go now: confirmed, waited [`ACK_WAIT`](acks::ACK_WAIT), or the link is
    /// down. The caller sends each to its subscriber if that one is still there.
    pub(crate) fn due_acks(&mut self, now: Instant) -> Vec<(K, i64)> {
        self.acks
            .due(self.hub.uplink_up(), self.hub.confirmations(), now)
    }

    /// When to look at the held acknowledgements again after `now`, if one is held.
    pub(crate) fn next_ack_deadline(&self, now: Instant) -> Option<Instant> {
        self.acks.deadline(now)
    }
}

#[cfg(test)]
mod tests;
