//! The workers' inboxes: lock-free queues of [`Delivery`], each waking its worker when it goes
//! from empty to non-empty, bounded by what its deliveries hold ([`DELIVERY_COST`] each beyond
//! their payload), congested when over the bound until drained below half of it.

use super::{Hub, Topic};
use crossbeam_queue::SegQueue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use wsgate_core::deflate::SharedFrame;

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

pub(super) struct Inbox {
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
    /// Answers to this worker's publishers ([`Hub::answer`]), and how many are counted in.
    pub(super) answers: SegQueue<(super::AnswerTo, super::Answer)>,
    pub(super) answers_pending: AtomicUsize,
}

impl Inbox {
    /// An empty inbox of the worker that `waker` wakes.
    pub(super) fn new(waker: Box<dyn Wake>) -> Inbox {
        Inbox {
            queue: SegQueue::new(),
            pending: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            congested: AtomicBool::new(false),
            congestions: AtomicU64::new(0),
            waker,
            wakeups: AtomicU64::new(0),
            answers: SegQueue::new(),
            answers_pending: AtomicUsize::new(0),
        }
    }

    /// Wakes the inbox's worker.
    pub(super) fn wake(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.waker.wake();
    }
}

impl Hub {
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
    use crate::hub::test_support::{Counter, frame, hub};
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize as Count;

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
}
