//! The topic registry: each topic's shared entry ([`Topic`]), what a recovering subscriber
//! gets ([`Recovery`]), which topics keep a history ([`HistoryRules`]), and how the hub looks
//! topics up, hands them back and forgets them.

use super::Hub;
use crate::history::{Refusal, Stream, new_epoch};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::deflate::SharedFrame;

/// One topic, shared by every worker that subscribes to it or publishes to it.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    /// Bit `w` set: worker `w` has local subscribers.
    pub(super) workers: Box<[AtomicU64]>,
    /// Subscribers on this node, all workers together.
    pub(super) subscribers: AtomicUsize,
    /// In a cluster: Redis has confirmed this node's subscription to the topic's channel.
    remote_ready: AtomicBool,
    /// In a cluster: the topic waits in the bridge's queue of mirrors to prime (it is queued
    /// once however often it is asked for, so the queue is bounded by the topics).
    prime_queued: AtomicBool,
    /// The topic's history, when a rule gives it one. Its lock also orders publishes: an
    /// offset is given and the delivery pushed to every inbox under it.
    pub(super) history: Option<Mutex<Stream>>,
}

impl Topic {
    fn new(name: Arc<str>, workers: usize, history: Option<Stream>) -> Topic {
        Topic {
            name,
            workers: (0..workers.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            subscribers: AtomicUsize::new(0),
            remote_ready: AtomicBool::new(false),
            prime_queued: AtomicBool::new(false),
            history: history.map(Mutex::new),
        }
    }

    /// Marks the topic as queued for the bridge to prime its mirror: false when it already
    /// was (and has not been taken from the queue since), so it is not queued twice.
    pub(crate) fn queue_priming(&self) -> bool {
        !self.prime_queued.swap(true, Ordering::AcqRel)
    }

    /// Takes the mark of [`queue_priming`](Self::queue_priming) off as the bridge takes the
    /// topic from its queue, before priming it: a later request queues it again.
    pub(crate) fn dequeue_priming(&self) {
        self.prime_queued.store(false, Ordering::Release);
    }

    /// Whether the topic keeps a history (its messages have offsets).
    pub fn has_history(&self) -> bool {
        self.history.is_some()
    }

    /// Whether the topic's history mirrors a stream in Redis (its offsets are Redis').
    pub fn is_mirrored(&self) -> bool {
        self.history.as_ref().is_some_and(|h| h.lock().is_mirror())
    }

    /// Whether the topic's history follows its source: a node's own always; a mirror once
    /// primed from Redis and while nothing is missing.
    pub fn history_primed(&self) -> bool {
        self.history.as_ref().is_some_and(|h| h.lock().is_primed())
    }

    /// Whether the topic's history has a position to give subscribers (a mirror has none
    /// until it was first primed).
    pub fn history_has_position(&self) -> bool {
        self.history
            .as_ref()
            .is_some_and(|h| h.lock().has_position())
    }

    /// The size and ttl of the topic's history.
    pub fn history_limits(&self) -> Option<(usize, Duration)> {
        let stream = self.history.as_ref()?.lock();
        Some((stream.size(), stream.ttl()))
    }

    /// The last offset of the topic's history and its epoch (empty for a mirror never
    /// primed).
    pub fn history_position(&self) -> Option<(u64, Arc<str>)> {
        let stream = self.history.as_ref()?.lock();
        Some((stream.last_offset(), stream.epoch().clone()))
    }

    /// The last offset and the epoch of a topic with history.
    pub fn position(&self) -> Option<(u64, Arc<str>)> {
        let stream = self.history.as_ref()?.lock();
        Some((stream.last_offset(), stream.epoch().clone()))
    }

    /// For a client that recovers from `offset` of `epoch`: the messages after it, or why not,
    /// with the stream's last offset and epoch at that moment (every later message has a
    /// larger offset). `None` for a topic without history.
    pub fn recover(&self, offset: u64, epoch: &str, now: Instant) -> Option<Recovery> {
        let mut stream = self.history.as_ref()?.lock();
        Some(Recovery {
            messages: stream.since(offset, epoch, now),
            last: stream.last_offset(),
            epoch: stream.epoch().clone(),
        })
    }

    /// Whether the topic's history is worth keeping at `now` (it holds messages, or was used
    /// within its ttl): the registry keeps such a topic when nobody else does, so that clients
    /// can recover from it in the same epoch.
    fn keeps_history(&self, now: Instant) -> bool {
        self.history.as_ref().is_some_and(|h| h.lock().is_live(now))
    }

    /// The topic's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Subscribers on this node.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// In a cluster: whether Redis has confirmed this node's subscription to the topic, so
    /// that messages published on other nodes reach it.
    pub fn remote_ready(&self) -> bool {
        self.remote_ready.load(Ordering::Acquire)
    }

    /// Records whether Redis has confirmed this node's subscription to the topic.
    pub fn set_remote_ready(&self, ready: bool) {
        self.remote_ready.store(ready, Ordering::Release);
    }

    /// Whether worker `w` has local subscribers.
    pub fn has_worker(&self, w: usize) -> bool {
        self.workers[w / 64].load(Ordering::Acquire) & (1 << (w % 64)) != 0
    }

    fn any_worker(&self) -> bool {
        self.workers
            .iter()
            .any(|word| word.load(Ordering::Acquire) != 0)
    }
}

/// What a recovering subscriber gets: the messages, or why not, and where the stream was.
#[derive(Debug)]
pub struct Recovery {
    /// The messages after the client's offset with their offsets, in order; or why they
    /// cannot all be given.
    pub messages: Result<Vec<(u64, SharedFrame)>, Refusal>,
    /// The stream's last offset when they were taken: deliveries up to it are in `messages`
    /// (or were before the client's offset); later ones come through the inbox.
    pub last: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
}

/// Which topics keep a history, and how much (the `[[history]]` rules of the configuration).
pub trait HistoryRules: Send + Sync {
    /// The size and ttl of `topic`'s history; `None`: it has none.
    fn history_for(&self, topic: &str) -> Option<(usize, Duration)>;
}

impl Hub {
    /// The shared entry of a topic, created if needed. Takes the registry lock: callers cache
    /// the result.
    pub fn topic(&self, name: &str) -> Arc<Topic> {
        let mut registry = self.registry.lock();
        if let Some(t) = registry.get(name) {
            return t.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let history = self.history.as_ref().and_then(|(rules, budget)| {
            let (size, ttl) = rules.history_for(&name)?;
            Some(match self.uplink {
                // in a cluster, Redis numbers the topic's messages: the node mirrors them
                Some(_) => Stream::mirror(size, ttl, budget.clone()),
                None => Stream::new(new_epoch(), size, ttl, budget.clone()),
            })
        });
        let topic = Arc::new(Topic::new(name.clone(), self.inboxes.len(), history));
        registry.insert(name, topic.clone());
        topic
    }

    /// The shared entry of a topic if the registry has it. Takes the registry lock.
    pub fn find(&self, name: &str) -> Option<Arc<Topic>> {
        self.registry.lock().get(name).cloned()
    }

    /// Hands back a cached entry. The registry forgets a topic once no worker has subscribers
    /// and no worker holds it.
    /// A topic whose history still holds messages stays until they expire
    /// ([`forget_expired`](Self::forget_expired)): forgetting it would start a new epoch.
    pub fn release(&self, topic: Arc<Topic>) {
        let mut registry = self.registry.lock();
        let now = Instant::now();
        if let Some(h) = &topic.history {
            h.lock().touch(now); // kept a ttl from now on, even when empty
        }
        // the registry's reference and ours
        if Arc::strong_count(&topic) == 2 && !topic.any_worker() && !topic.keeps_history(now) {
            registry.remove(topic.name());
        }
    }

    /// Forgets the topics that only the registry holds, with no subscribers, whose history has
    /// expired at `now`. Returns how many histories are kept, messages in all.
    pub fn forget_expired(&self, now: Instant) -> (usize, usize) {
        let mut registry = self.registry.lock();
        for h in registry.values().filter_map(|t| t.history.as_ref()) {
            h.lock().expire(now); // whoever holds the topic
        }
        registry.retain(|_, t| Arc::strong_count(t) > 1 || t.any_worker() || t.keeps_history(now));
        registry
            .values()
            .filter_map(|t| t.history.as_ref())
            .fold((0, 0), |(n, m), h| (n + 1, m + h.lock().len()))
    }

    /// Topics known to the registry, with their subscriber counts on this node.
    pub fn topics(&self) -> Vec<(Arc<str>, usize)> {
        let registry = self.registry.lock();
        registry
            .values()
            .map(|t| (t.name.clone(), t.subscribers()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::test_support::{frame, history_hub, hub};

    #[test]
    fn registry_forgets_unused_topics() {
        let (hub, _) = hub(2);
        let t = hub.topic("gone");
        hub.release(t);
        assert!(hub.topics().is_empty());
        let t = hub.topic("kept");
        hub.subscribed(0, &t, true);
        hub.release(t.clone());
        assert_eq!(hub.topics().len(), 1, "a worker still has subscribers");
        hub.unsubscribed(0, &t, true);
        let held = hub.topic("kept");
        hub.release(t);
        assert_eq!(hub.topics().len(), 1, "another holder remains");
        hub.release(held);
        assert!(hub.topics().is_empty());
    }

    #[test]
    fn recovery_gives_what_followed_and_a_kept_history_keeps_its_topic_and_epoch() {
        let hub = history_hub(2);
        let now = Instant::now();
        let t = hub.topic("chat.a");
        for i in 1..=5 {
            hub.publish_at(&t, now, |_| (frame(i), None)).unwrap();
        }
        let (last, epoch) = t.position().unwrap();
        assert_eq!(last, 5);
        let r = t.recover(3, &epoch, now).unwrap();
        assert_eq!((r.last, &r.epoch), (5, &epoch));
        let got: Vec<u64> = r.messages.unwrap().iter().map(|(o, _)| *o).collect();
        assert_eq!(got, vec![4, 5]);
        assert_eq!(
            t.recover(1, &epoch, now).unwrap().messages.unwrap_err(),
            Refusal::TooOld,
            "3 kept"
        );
        // nobody holds it: the registry keeps it while its history lasts
        hub.release(t);
        let again = hub.topic("chat.a");
        assert_eq!(again.position().unwrap(), (5, epoch.clone()), "same stream");
        hub.release(again);
        assert_eq!(hub.forget_expired(now), (1, 3));
        assert_eq!(hub.forget_expired(now + Duration::from_secs(61)), (0, 0));
        let fresh = hub.topic("chat.a");
        let (last, new_epoch) = fresh.position().unwrap();
        assert_eq!(last, 0);
        assert_ne!(new_epoch, epoch, "a new stream is a new epoch");
        assert_eq!(
            fresh.recover(5, &epoch, now).unwrap().messages.unwrap_err(),
            Refusal::Epoch
        );
    }
}
