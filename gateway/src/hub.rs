//! The topic registry and the fanout across workers.
//!
//! Each topic has one shared [`Topic`]: an atomic bitset of the workers that have local
//! subscribers, and a count of subscribers on this node. Workers keep their own subscriber
//! lists (plain data, never shared). Publishing takes no lock: the publishing worker delivers to
//! its own subscribers, then pushes one reference to the encoded frame onto the inbox of every
//! other worker whose bit is set, waking that worker only when its inbox goes from empty to
//! non-empty. Looking a topic up by name takes the registry lock, which workers do on the
//! first subscribe or publish of a topic and then cache.
//!
//! Each inbox is bounded ([`Hub::with_limits`]): it counts what its deliveries hold (the payload
//! and [`DELIVERY_COST`] each). A publisher that finds an inbox it publishes to over its bound
//! ([`Hub::is_congested`]) is expected to wait: a worker stops reading a publishing peer, `POST
//! /publish` answers 503, the cluster's receiver stops reading Redis. The worker that drains an
//! inbox back below half its bound wakes every worker, so the waiting publishers go on.
//!
//! What concerns other nodes goes through an [`Uplink`] (the cluster room implements it over
//! Redis): the hub tells it of each publish and of each topic whose subscribers on this node
//! went from none to some or back, and never knows what is behind it.

use crate::history::{Arrival, Budget, Event, Refusal, Stream, new_epoch};
use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::deflate::{Compression, SharedFrame};
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::message;

/// One topic, shared by every worker that subscribes to it or publishes to it.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    /// Bit `w` set: worker `w` has local subscribers.
    workers: Box<[AtomicU64]>,
    /// Subscribers on this node, all workers together.
    subscribers: AtomicUsize,
    /// In a cluster: Redis has confirmed this node's subscription to the topic's channel.
    remote_ready: AtomicBool,
    /// The topic's history, when a rule gives it one. Its lock also orders publishes: an
    /// offset is given and the delivery pushed to every inbox under it.
    history: Option<Mutex<Stream>>,
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
            history: history.map(Mutex::new),
        }
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

/// A published frame on its way to another worker's subscribers of `topic`.
#[derive(Debug)]
pub struct Delivery {
    /// The topic.
    pub topic: Arc<Topic>,
    /// The message's offset on a topic with history; 0 on any other.
    pub offset: u64,
    /// A binary message of a topic with history as clients of the `wsgate.v2` subprotocol get
    /// it: with its offset in front.
    pub v2: Option<SharedFrame>,
    /// The frame, encoded once (and compressed at most once, by whichever worker needs it
    /// first); cloning it is a reference count or two.
    pub frame: SharedFrame,
}

/// The way to other nodes, as the hub sees it.
pub trait Uplink: Send + Sync {
    /// A publish made on this node, for the subscribers on other nodes.
    fn publish(&self, topic: &Topic, frame: &OutFrame);
    /// This node's subscribers of `topic` went from none to some, or from some to none (the
    /// uplink reads [`Topic::subscribers`] itself, so notices that cross settle on the last
    /// state).
    fn interest_changed(&self, topic: Arc<Topic>);
    /// Whether the link to other nodes is up now.
    fn is_up(&self) -> bool;
    /// Outages of the link that are over: each time it came back after being down (the
    /// subscribers on this node may have missed what other nodes published meanwhile).
    fn outages(&self) -> u64 {
        0
    }
    /// A publish to a topic with history, for the other nodes to number: the uplink gives it
    /// its offset and brings it back to every node with subscribers, this one too. False when
    /// it cannot be numbered now (the link is down or behind); nobody gets it.
    fn publish_sequenced(&self, topic: &Topic, frame: &OutFrame) -> bool {
        let _ = (topic, frame);
        false
    }
    /// The mirror of `topic`'s history needs priming from the other nodes' stream (an offset
    /// jumped).
    fn resync(&self, topic: Arc<Topic>) {
        let _ = topic;
    }
}

/// Something that wakes a worker's event loop.
pub trait Wake: Send + Sync {
    /// Wakes the worker.
    fn wake(&self);
}

impl Wake for mio::Waker {
    fn wake(&self) {
        if let Err(e) = mio::Waker::wake(self) {
            tracing::error!("cannot wake worker: {e}");
        }
    }
}

/// What one delivery in an inbox costs beyond its payload: its slot, the topic and frame
/// references.
pub const DELIVERY_COST: usize = 64;

fn cost(d: &Delivery) -> usize {
    d.frame.plain().payload().len() + DELIVERY_COST
}

struct Inbox {
    queue: SegQueue<Delivery>,
    /// Deliveries pushed and not yet taken. Incremented after the push, so a count of n means at
    /// least n deliveries can be popped.
    pending: AtomicUsize,
    /// What the waiting deliveries hold ([`cost`] each).
    held: AtomicUsize,
    /// The inbox went over its bound since it was last drained below half of it.
    congested: AtomicBool,
    /// Times the inbox went over its bound.
    congestions: AtomicU64,
    waker: Box<dyn Wake>,
    wakeups: AtomicU64,
}

/// The registry of topics and the inboxes of the workers.
pub struct Hub {
    inboxes: Box<[Inbox]>,
    registry: Mutex<HashMap<Arc<str>, Arc<Topic>>>,
    uplink: Option<Arc<dyn Uplink>>,
    /// The bound of each inbox, in bytes held.
    inbox_limit: usize,
    /// Confirmations the uplink gave ([`Hub::confirm_remote`]), so far.
    confirmations: AtomicU64,
    /// How published frames are compressed for the sessions that negotiated it.
    compression: Option<Compression>,
    /// Which topics keep a history, and the memory they share.
    history: Option<(Arc<dyn HistoryRules>, Arc<Budget>)>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("workers", &self.inboxes.len())
            .finish()
    }
}

impl Hub {
    /// A hub for one worker per waker, on a single node.
    pub fn new(wakers: Vec<Box<dyn Wake>>) -> Hub {
        Hub::with_uplink(wakers, None)
    }

    /// A hub for one worker per waker that also publishes to, and follows the topics of, other
    /// nodes through `uplink`. Its inboxes have no bound.
    pub fn with_uplink(wakers: Vec<Box<dyn Wake>>, uplink: Option<Arc<dyn Uplink>>) -> Hub {
        Hub::with_limits(wakers, uplink, usize::MAX)
    }

    /// A hub whose inboxes are each bounded to `inbox_limit` bytes held.
    pub fn with_limits(
        wakers: Vec<Box<dyn Wake>>,
        uplink: Option<Arc<dyn Uplink>>,
        inbox_limit: usize,
    ) -> Hub {
        let inboxes = wakers
            .into_iter()
            .map(|waker| Inbox {
                queue: SegQueue::new(),
                pending: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                congested: AtomicBool::new(false),
                congestions: AtomicU64::new(0),
                waker,
                wakeups: AtomicU64::new(0),
            })
            .collect();
        Hub {
            inboxes,
            registry: Mutex::new(HashMap::new()),
            uplink,
            inbox_limit,
            confirmations: AtomicU64::new(0),
            compression: None,
            history: None,
        }
    }

    /// The same hub, whose topics keep a history when `rules` give them one, all within
    /// `budget`.
    pub fn with_history(mut self, rules: Arc<dyn HistoryRules>, budget: Arc<Budget>) -> Hub {
        self.history = Some((rules, budget));
        self
    }

    /// The memory the topics' histories share, when any topic may have one.
    pub fn history_budget(&self) -> Option<&Arc<Budget>> {
        self.history.as_ref().map(|(_, b)| b)
    }

    /// The same hub, whose published frames get a compressed variant for the sessions that
    /// negotiated permessage-deflate ([`share`](Self::share)).
    pub fn with_compression(mut self, compression: Option<Compression>) -> Hub {
        self.compression = compression;
        self
    }

    /// `frame` as it is published: shared by every worker, with its compressed variant made
    /// on first need when compression is on and the frame is large enough.
    pub fn share(&self, frame: OutFrame) -> SharedFrame {
        SharedFrame::new(frame, self.compression)
    }

    /// The uplink confirms that other nodes' messages for `topic` reach this node: the
    /// acknowledgements held for it may go. Wakes every worker.
    pub fn confirm_remote(&self, topic: &Topic) {
        topic.set_remote_ready(true);
        self.confirmations.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// How many confirmations the uplink has given: a worker that holds acknowledgements looks
    /// through them again only when this changed.
    pub fn confirmations(&self) -> u64 {
        self.confirmations.load(Ordering::Acquire)
    }

    /// Whether an acknowledged subscriber of `topic` could still miss what other nodes publish:
    /// the link to them is up and has not confirmed this node's interest in the topic yet.
    /// (With no link, or a link that is down, there is nothing to wait for.)
    pub fn awaits_uplink(&self, topic: &Topic) -> bool {
        self.uplink.as_ref().is_some_and(|u| u.is_up()) && !topic.remote_ready()
    }

    /// Outages of the link to other nodes that are over, so far (0 on a single node).
    pub fn uplink_outages(&self) -> u64 {
        self.uplink.as_ref().map_or(0, |u| u.outages())
    }

    /// Whether the link to other nodes is up (`false` on a single node).
    pub fn uplink_up(&self) -> bool {
        self.uplink.as_ref().is_some_and(|u| u.is_up())
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

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

    /// Records that worker `w` gained a subscriber of `topic`; `first` when it is the worker's
    /// first one, which sets the worker's bit.
    pub fn subscribed(&self, w: usize, topic: &Arc<Topic>, first: bool) {
        if topic.subscribers.fetch_add(1, Ordering::Relaxed) == 0
            && let Some(uplink) = &self.uplink
        {
            uplink.interest_changed(topic.clone());
        }
        if first {
            topic.workers[w / 64].fetch_or(1 << (w % 64), Ordering::AcqRel);
        }
    }

    /// Records that worker `w` lost a subscriber of `topic`; `last` when it was the worker's
    /// last one, which clears the worker's bit.
    pub fn unsubscribed(&self, w: usize, topic: &Arc<Topic>, last: bool) {
        if topic.subscribers.fetch_sub(1, Ordering::Relaxed) == 1
            && let Some(uplink) = &self.uplink
        {
            uplink.interest_changed(topic.clone());
        }
        if last {
            topic.workers[w / 64].fetch_and(!(1 << (w % 64)), Ordering::AcqRel);
        }
    }

    /// Publishes `frame`, made on worker `from`, to the subscribers of `topic` on every other
    /// worker and on other nodes. The caller delivers to its own subscribers. Lock-free.
    pub fn publish(&self, from: usize, topic: &Arc<Topic>, frame: &SharedFrame) {
        self.publish_remote(from, topic, frame);
        if let Some(uplink) = &self.uplink {
            uplink.publish(topic, frame.plain());
        }
    }

    /// Publishes to a topic with history: under the topic's lock, gives the message the next
    /// offset, makes its frame with it (`make`), keeps it in the history and pushes it to
    /// every worker that has subscribers, `from` included, so that every worker takes the
    /// topic's messages in offset order (the publishing worker takes its own from its inbox,
    /// after those published before). Returns the frame and its offset; `None` for a topic
    /// without history (use [`publish`](Self::publish)).
    /// `make` may also give the frame for clients of the `wsgate.v2` subprotocol (a binary
    /// message with its offset in front); the history keeps the plain one.
    pub fn publish_at(
        &self,
        topic: &Arc<Topic>,
        now: Instant,
        make: impl FnOnce(u64) -> (SharedFrame, Option<SharedFrame>),
    ) -> Option<(SharedFrame, u64)> {
        let mut stream = topic.history.as_ref()?.lock();
        let offset = stream.next_offset();
        let (frame, v2) = make(offset);
        stream.push(frame.clone(), now);
        self.push_to_workers(usize::MAX, topic, &frame, offset, v2.as_ref());
        drop(stream);
        if let Some(uplink) = &self.uplink {
            uplink.publish(topic, frame.plain());
        }
        Some((frame, offset))
    }

    /// The frames of a message of offset `offset` on a topic with history: a text delivery
    /// with `"offset"` in it, or a binary one as it is and, for clients of the `wsgate.v2`
    /// subprotocol, with its offset in front.
    pub fn numbered(&self, frame: OutFrame, offset: u64) -> (SharedFrame, Option<SharedFrame>) {
        match frame.opcode() {
            OpCode::Text => {
                let numbered = message::text_delivery_with_offset(frame.payload(), offset);
                (self.share(numbered.unwrap_or(frame)), None)
            }
            _ => {
                let v2 = self.share(message::binary_delivery_at(frame.payload(), offset));
                (self.share(frame), Some(v2))
            }
        }
    }

    /// Whether `topic`'s messages are numbered by the other nodes' stream (a topic with
    /// history, in a cluster): publish them with
    /// [`publish_sequenced`](Self::publish_sequenced).
    pub fn is_sequenced(&self, topic: &Topic) -> bool {
        self.uplink.is_some() && topic.is_mirrored()
    }

    /// Hands a publish to a topic with history in a cluster to the uplink, which numbers it
    /// and brings it back (see [`Uplink::publish_sequenced`]). False: it could not be
    /// numbered now, and nobody gets it.
    pub fn publish_sequenced(&self, topic: &Topic, frame: &OutFrame) -> bool {
        self.uplink
            .as_ref()
            .is_some_and(|u| u.publish_sequenced(topic, frame))
    }

    /// A numbered message from the other nodes' stream, for the mirror of `topic`: what
    /// follows what the mirror has goes to every worker with subscribers, in order; a
    /// duplicate is dropped; a jump is held and the mirror primed again.
    pub fn receive_sequenced(&self, topic: &Arc<Topic>, offset: u64, epoch: &str, frame: OutFrame) {
        let Some(history) = topic.history.as_ref() else {
            return;
        };
        let now = Instant::now();
        let mut events = Vec::new();
        let mut stream = history.lock();
        let epoch = if **stream.epoch() == *epoch {
            stream.epoch().clone()
        } else {
            Arc::from(epoch)
        };
        let (frame, _) = self.numbered(frame, offset);
        let arrival = Arrival {
            offset,
            epoch,
            frame,
        };
        // a jump in a primed mirror asks for a priming; an unprimed one has one coming
        let was_primed = stream.is_primed();
        let resync = stream.append(arrival, now, &mut events) && was_primed;
        self.send_events(topic, events);
        drop(stream);
        if resync && let Some(uplink) = &self.uplink {
            uplink.resync(topic.clone());
        }
    }

    /// Primes the mirror of `topic` with what the other nodes' stream has (`epoch`, its
    /// `last` offset, the messages after the mirror's last one as `(offset, frame without its
    /// offset)`): what the subscribers missed goes to them in order, or a gap notice. Returns
    /// false when the mirror needs another priming (an offset jumped among the messages
    /// that arrived meanwhile).
    pub fn prime(
        &self,
        topic: &Arc<Topic>,
        epoch: &str,
        last: u64,
        messages: Vec<(u64, OutFrame)>,
    ) -> bool {
        let Some(history) = topic.history.as_ref() else {
            return true;
        };
        let entries = messages
            .into_iter()
            .map(|(o, f)| (o, self.numbered(f, o).0))
            .collect();
        let mut events = Vec::new();
        let mut stream = history.lock();
        let again = stream.prime(epoch, last, entries, Instant::now(), &mut events);
        self.send_events(topic, events);
        !again
    }

    /// The mirror of `topic` stops following the other nodes' stream (this node stopped
    /// listening, or its link was replaced) until primed again.
    pub fn unprime(&self, topic: &Topic) {
        if let Some(history) = &topic.history {
            history.lock().unprime();
        }
    }

    /// Pushes what a mirror says its subscribers get to every worker with subscribers, in
    /// order. A gap notice is a delivery of offset 0 on a topic with history.
    fn send_events(&self, topic: &Arc<Topic>, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Message(offset, frame) => {
                    let v2 = (frame.plain().opcode() == OpCode::Binary).then(|| {
                        self.share(message::binary_delivery_at(frame.plain().payload(), offset))
                    });
                    self.push_to_workers(usize::MAX, topic, &frame, offset, v2.as_ref());
                }
                Event::Gap => {
                    let gap = self.share(message::gap_frame(topic.name()));
                    self.push_to_workers(usize::MAX, topic, &gap, 0, None);
                }
            }
        }
    }

    /// Sends `frame` to every worker other than `from` that has subscribers of `topic`.
    /// Returns how many workers it went to. Lock-free.
    pub fn publish_remote(&self, from: usize, topic: &Arc<Topic>, frame: &SharedFrame) -> usize {
        self.push_to_workers(from, topic, frame, 0, None)
    }

    fn push_to_workers(
        &self,
        from: usize,
        topic: &Arc<Topic>,
        frame: &SharedFrame,
        offset: u64,
        v2: Option<&SharedFrame>,
    ) -> usize {
        let mut sent = 0;
        for (i, word) in topic.workers.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let w = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if w == from {
                    continue;
                }
                self.push(
                    w,
                    Delivery {
                        topic: topic.clone(),
                        offset,
                        v2: v2.cloned(),
                        frame: frame.clone(),
                    },
                );
                sent += 1;
            }
        }
        sent
    }

    /// Pushes a delivery onto worker `w`'s inbox, waking it if the inbox was empty. The push
    /// is never refused: publishers check [`is_congested`](Self::is_congested) and wait.
    pub fn push(&self, w: usize, delivery: Delivery) {
        let inbox = &self.inboxes[w];
        let held = inbox.held.fetch_add(cost(&delivery), Ordering::AcqRel) + cost(&delivery);
        if held > self.inbox_limit && !inbox.congested.swap(true, Ordering::AcqRel) {
            inbox.congestions.fetch_add(1, Ordering::Relaxed);
        }
        inbox.queue.push(delivery);
        if inbox.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            inbox.wakeups.fetch_add(1, Ordering::Relaxed);
            inbox.waker.wake();
        }
    }

    /// Takes every delivery waiting for worker `w`, in order, and hands each to `f`. Returns how
    /// many were taken. After it returns, the next push wakes the worker again.
    pub fn drain(&self, w: usize, f: impl FnMut(Delivery)) -> usize {
        self.drain_at_most(w, usize::MAX, f)
    }

    /// Like [`drain`](Self::drain), taking at most `max` deliveries, so that a flood does not
    /// hold the worker away from its sockets. When it returns with deliveries still waiting
    /// ([`inbox_depth`](Self::inbox_depth) > 0), no push wakes the worker: it must come back
    /// for them by itself.
    pub fn drain_at_most(&self, w: usize, max: usize, mut f: impl FnMut(Delivery)) -> usize {
        let inbox = &self.inboxes[w];
        let mut taken = 0;
        loop {
            let n = inbox.pending.load(Ordering::Acquire).min(max - taken);
            if n == 0 {
                return taken;
            }
            for _ in 0..n {
                // counted deliveries were pushed before they were counted
                let d = inbox
                    .queue
                    .pop()
                    .expect("a counted delivery is in the queue");
                let held = inbox.held.fetch_sub(cost(&d), Ordering::AcqRel) - cost(&d);
                f(d);
                if held <= self.inbox_limit / 2 && inbox.congested.swap(false, Ordering::AcqRel) {
                    // publishers waiting for room may go on
                    self.wake_all();
                }
            }
            taken += n;
            if inbox.pending.fetch_sub(n, Ordering::AcqRel) == n {
                return taken;
            }
        }
    }

    /// Whether a publish to `topic` from worker `from` (`usize::MAX`: from outside the
    /// workers) would go to an inbox over its bound: the publisher should wait.
    pub fn is_congested(&self, from: usize, topic: &Topic) -> bool {
        (0..self.inboxes.len()).any(|w| {
            w != from
                && topic.has_worker(w)
                && self.inboxes[w].held.load(Ordering::Acquire) > self.inbox_limit
        })
    }

    /// Whether every inbox but worker `w`'s own is at most half full: a publisher of worker
    /// `w` that waited may go on.
    pub fn has_room(&self, w: usize) -> bool {
        self.inboxes
            .iter()
            .enumerate()
            .all(|(i, inbox)| i == w || inbox.held.load(Ordering::Acquire) <= self.inbox_limit / 2)
    }

    /// What the deliveries waiting in worker `w`'s inbox hold, in bytes.
    pub fn inbox_held(&self, w: usize) -> usize {
        self.inboxes[w].held.load(Ordering::Relaxed)
    }

    /// Times worker `w`'s inbox went over its bound.
    pub fn inbox_congestions(&self, w: usize) -> u64 {
        self.inboxes[w].congestions.load(Ordering::Relaxed)
    }

    /// Deliveries waiting in worker `w`'s inbox.
    pub fn inbox_depth(&self, w: usize) -> usize {
        self.inboxes[w].pending.load(Ordering::Relaxed)
    }

    /// Times worker `w` was woken for its inbox.
    pub fn inbox_wakeups(&self, w: usize) -> u64 {
        self.inboxes[w].wakeups.load(Ordering::Relaxed)
    }

    /// Wakes every worker (for shutdown and drain).
    pub fn wake_all(&self) {
        for inbox in self.inboxes.iter() {
            inbox.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize as Count;
    use wsgate_core::frame::OpCode;

    struct Counter(Arc<Count>);
    impl Wake for Counter {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn hub(n: usize) -> (Hub, Vec<Arc<Count>>) {
        let counts: Vec<Arc<Count>> = (0..n).map(|_| Arc::new(Count::new(0))).collect();
        let wakers = counts
            .iter()
            .map(|c| Box::new(Counter(c.clone())) as Box<dyn Wake>)
            .collect();
        (Hub::new(wakers), counts)
    }

    fn frame(i: u32) -> SharedFrame {
        OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(&i.to_be_bytes())).into()
    }

    struct Rules;
    impl HistoryRules for Rules {
        fn history_for(&self, topic: &str) -> Option<(usize, Duration)> {
            topic
                .starts_with("chat.")
                .then_some((3, Duration::from_secs(60)))
        }
    }

    fn history_hub(n: usize) -> Hub {
        hub(n)
            .0
            .with_history(Arc::new(Rules), Arc::new(Budget::new(1 << 20)))
    }

    /// An uplink that numbers nothing and counts the mirrors it is asked to prime again.
    #[derive(Default)]
    struct Resyncs(std::sync::Mutex<Vec<Arc<str>>>);
    impl Uplink for Resyncs {
        fn publish(&self, _: &Topic, _: &OutFrame) {}
        fn interest_changed(&self, _: Arc<Topic>) {}
        fn is_up(&self) -> bool {
            true
        }
        fn resync(&self, topic: Arc<Topic>) {
            self.0.lock().unwrap().push(topic.name().clone());
        }
    }

    fn text(data: &str) -> OutFrame {
        let body = format!(r#"{{"type":"message","topic":"chat.a","data":{data}}}"#);
        OutFrame::new(OpCode::Text, Bytes::from(body))
    }

    /// What worker `w` has in its inbox: `o3` for a delivery of offset 3 (its text checked),
    /// `gap` for a gap notice.
    fn taken(hub: &Hub, w: usize) -> Vec<String> {
        let mut got = Vec::new();
        hub.drain(w, |d| {
            let text = std::str::from_utf8(d.frame.plain().payload())
                .unwrap()
                .to_string();
            if d.offset == 0 {
                assert_eq!(text, r#"{"type":"gap","topic":"chat.a"}"#);
                got.push("gap".to_string());
            } else {
                let want = format!(r#""offset":{},"#, d.offset);
                assert!(text.contains(&want), "{text}");
                got.push(format!("o{}", d.offset));
            }
        });
        got
    }

    #[test]
    fn in_a_cluster_a_history_topic_mirrors_redis_numbers_in_order_and_tells_of_gaps() {
        let counts: Vec<Arc<Count>> = (0..2).map(|_| Arc::new(Count::new(0))).collect();
        let wakers = counts
            .iter()
            .map(|c| Box::new(Counter(c.clone())) as Box<dyn Wake>)
            .collect();
        let uplink = Arc::new(Resyncs::default());
        let hub = Hub::with_uplink(wakers, Some(uplink.clone()))
            .with_history(Arc::new(Rules), Arc::new(Budget::new(1 << 20)));
        let t = hub.topic("chat.a");
        assert!(hub.is_sequenced(&t) && !hub.is_sequenced(&hub.topic("news")));
        assert!(!t.history_primed() && !t.history_has_position());
        hub.subscribed(0, &t, true);
        hub.subscribed(1, &t, true);

        // arrivals before the priming are held; the priming keeps Redis' 1..=2 and sends what
        // follows them
        hub.receive_sequenced(&t, 3, "E", text("3"));
        assert!(taken(&hub, 0).is_empty());
        assert!(
            uplink.0.lock().unwrap().is_empty(),
            "a first priming is coming anyway"
        );
        assert!(hub.prime(&t, "E", 2, vec![(1, text("1")), (2, text("2"))]));
        assert_eq!(taken(&hub, 0), ["o3"]);
        assert_eq!(taken(&hub, 1), ["o3"]);
        assert_eq!(t.history_position().unwrap(), (3, Arc::from("E")));
        assert_eq!(
            t.recover(0, "E", Instant::now())
                .unwrap()
                .messages
                .unwrap()
                .len(),
            3
        );

        // a duplicate is dropped; a jump asks the uplink for a priming and is held
        hub.receive_sequenced(&t, 3, "E", text("3"));
        hub.receive_sequenced(&t, 6, "E", text("6"));
        assert!(taken(&hub, 0).is_empty());
        assert_eq!(*uplink.0.lock().unwrap(), [Arc::<str>::from("chat.a")]);
        assert!(!t.history_primed());
        assert!(hub.prime(&t, "E", 5, vec![(4, text("4")), (5, text("5"))]));
        assert_eq!(taken(&hub, 1), ["o4", "o5", "o6"]);

        // Redis lost the stream: a gap notice, then the new epoch's offsets
        hub.receive_sequenced(&t, 1, "F", text("1"));
        assert_eq!(taken(&hub, 0), ["o4", "o5", "o6", "gap", "o1"]);
        assert_eq!(t.history_position().unwrap(), (1, Arc::from("F")));

        // a publish goes to the uplink to be numbered; this one refuses it
        assert!(!hub.publish_sequenced(&t, &text("x")));
    }

    #[test]
    fn topics_matching_a_rule_number_their_messages_in_every_inbox_in_order() {
        let hub = Arc::new(history_hub(3));
        let t = hub.topic("chat.room");
        assert!(t.has_history() && !hub.topic("news").has_history());
        for w in 0..3 {
            hub.subscribed(w, &t, true);
        }
        // three publishers on three threads: every worker takes offsets 1..=300 in order
        std::thread::scope(|s| {
            for p in 0..3u32 {
                let (hub, t) = (hub.clone(), t.clone());
                s.spawn(move || {
                    for i in 0..100 {
                        hub.publish_at(&t, Instant::now(), |_| (frame(p * 1000 + i), None))
                            .unwrap();
                    }
                });
            }
        });
        for w in 0..3 {
            let mut offsets = Vec::new();
            hub.drain(w, |d| offsets.push(d.offset));
            assert_eq!(offsets, (1..=300).collect::<Vec<u64>>(), "worker {w}");
        }
        assert_eq!(t.position().unwrap().0, 300);
        assert!(
            hub.publish_at(&hub.topic("news"), Instant::now(), |_| (frame(0), None))
                .is_none()
        );
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

    #[test]
    fn publish_reaches_only_workers_with_subscribers() {
        let (hub, wakes) = hub(4);
        let t = hub.topic("news");
        hub.subscribed(1, &t, true);
        hub.subscribed(3, &t, true);
        hub.subscribed(3, &t, false);
        assert_eq!(t.subscribers(), 3);
        assert_eq!(hub.publish_remote(0, &t, &frame(1)), 2);
        assert_eq!(hub.publish_remote(3, &t, &frame(2)), 1, "not to itself");
        let mut got = vec![];
        hub.drain(3, |d| got.push(d.frame.plain().payload().clone()));
        assert_eq!(got, vec![Bytes::from_static(&[0, 0, 0, 1])]);
        assert_eq!(hub.drain(1, |_| {}), 2);
        assert_eq!(wakes[2].load(Ordering::SeqCst), 0);
        hub.unsubscribed(1, &t, true);
        assert_eq!(hub.publish_remote(0, &t, &frame(3)), 1);
    }

    #[test]
    fn wakes_only_on_empty_to_non_empty() {
        let (hub, wakes) = hub(2);
        let t = hub.topic("t");
        hub.subscribed(1, &t, true);
        for i in 0..100 {
            hub.publish_remote(0, &t, &frame(i));
        }
        assert_eq!(wakes[1].load(Ordering::SeqCst), 1);
        assert_eq!(hub.inbox_depth(1), 100);
        let mut order = vec![];
        hub.drain(1, |d| order.push(d.frame.plain().payload().clone()));
        let expected: Vec<Bytes> = (0..100u32)
            .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
            .collect();
        assert_eq!(order, expected, "FIFO per publisher");
        hub.publish_remote(0, &t, &frame(0));
        assert_eq!(wakes[1].load(Ordering::SeqCst), 2);
    }

    #[test]
    fn publishing_shares_one_payload() {
        let (hub, _) = hub(8);
        let t = hub.topic("t");
        for w in 1..8 {
            hub.subscribed(w, &t, true);
        }
        let f = OutFrame::new(OpCode::Binary, Bytes::from(vec![0u8; 1 << 20]));
        hub.publish_remote(0, &t, &f.clone().into());
        for w in 1..8 {
            hub.drain(w, |d| {
                assert_eq!(d.frame.plain().payload().as_ptr(), f.payload().as_ptr())
            });
        }
    }

    #[test]
    fn concurrent_publishers_lose_nothing_and_keep_order() {
        let (hub, _) = hub(3);
        let hub = Arc::new(hub);
        let t = hub.topic("t");
        hub.subscribed(2, &t, true);
        let publishers: Vec<_> = (0..2)
            .map(|p| {
                let (hub, t) = (hub.clone(), t.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        hub.publish_remote(p, &t, &frame(p as u32 * 1_000_000 + i));
                    }
                })
            })
            .collect();
        let mut last = [None::<u32>; 2];
        let mut total = 0;
        while total < 40_000 {
            total += hub.drain(2, |d| {
                let v = u32::from_be_bytes(d.frame.plain().payload()[..].try_into().unwrap());
                let p = (v / 1_000_000) as usize;
                let i = v % 1_000_000;
                assert_eq!(
                    last[p].map_or(0, |l| l + 1),
                    i,
                    "publisher {p} in order, no gap"
                );
                last[p] = Some(i);
            });
        }
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(hub.inbox_depth(2), 0);
    }

    #[test]
    fn a_bounded_drain_leaves_the_rest_in_order_without_a_wake() {
        let (hub, wakes) = hub(2);
        let t = hub.topic("t");
        hub.subscribed(1, &t, true);
        for i in 0..10 {
            hub.publish_remote(0, &t, &frame(i));
        }
        let mut got = vec![];
        assert_eq!(
            hub.drain_at_most(1, 4, |d| got.push(d.frame.plain().payload().clone())),
            4
        );
        assert_eq!(hub.inbox_depth(1), 6);
        hub.publish_remote(0, &t, &frame(10));
        assert_eq!(
            wakes[1].load(Ordering::SeqCst),
            1,
            "still pending: no new wake"
        );
        assert_eq!(
            hub.drain_at_most(1, 100, |d| got.push(d.frame.plain().payload().clone())),
            7
        );
        let expected: Vec<Bytes> = (0..11u32)
            .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
            .collect();
        assert_eq!(got, expected);
        hub.publish_remote(0, &t, &frame(11));
        assert_eq!(
            wakes[1].load(Ordering::SeqCst),
            2,
            "empty again: the next push wakes"
        );
    }

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
    fn a_full_inbox_congests_its_publishers_until_drained_to_half() {
        let counts: Vec<Arc<Count>> = (0..2).map(|_| Arc::new(Count::new(0))).collect();
        let wakers = counts
            .iter()
            .map(|c| Box::new(Counter(c.clone())) as Box<dyn Wake>)
            .collect();
        let per = 4 + DELIVERY_COST;
        let hub = Hub::with_limits(wakers, None, 10 * per);
        let t = hub.topic("t");
        assert!(!hub.is_congested(0, &t), "nobody to deliver to");
        hub.subscribed(1, &t, true);
        for i in 0..10 {
            hub.publish_remote(0, &t, &frame(i));
        }
        assert_eq!(hub.inbox_held(1), 10 * per);
        assert!(!hub.is_congested(0, &t), "at the bound, not over");
        hub.publish_remote(0, &t, &frame(10));
        assert!(hub.is_congested(0, &t) && hub.is_congested(usize::MAX, &t));
        assert!(!hub.is_congested(1, &t), "not to itself");
        assert!(!hub.has_room(0));
        assert_eq!(hub.inbox_congestions(1), 1);
        let wakes = counts[0].load(Ordering::SeqCst);
        assert_eq!(hub.drain_at_most(1, 5, |_| {}), 5);
        assert!(!hub.has_room(0), "6 of 10 left: over half");
        assert_eq!(hub.drain_at_most(1, 1, |_| {}), 1);
        assert!(hub.has_room(0) && !hub.is_congested(0, &t));
        assert!(
            counts[0].load(Ordering::SeqCst) > wakes,
            "the waiting publisher's worker is woken"
        );
        hub.drain(1, |_| {});
        assert_eq!(hub.inbox_held(1), 0);
    }

    #[test]
    fn more_than_64_workers() {
        let (hub, _) = hub(130);
        let t = hub.topic("t");
        hub.subscribed(129, &t, true);
        hub.subscribed(64, &t, true);
        assert!(t.has_worker(129) && t.has_worker(64) && !t.has_worker(0));
        assert_eq!(hub.publish_remote(0, &t, &frame(0)), 2);
    }
}
