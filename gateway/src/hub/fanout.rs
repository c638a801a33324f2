//! Who gets a publish: each topic's bits of the workers with subscribers, kept as they subscribe
//! and unsubscribe (the uplink told when this node's interest changes), and the pushes of a
//! published frame to those workers' inboxes and to other nodes.

use super::{Delivery, Hub, Topic};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wsgate_core::deflate::SharedFrame;

impl Hub {
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

    /// Sends `frame` to every worker other than `from` that has subscribers of `topic`.
    /// Returns how many workers it went to. Lock-free.
    pub fn publish_remote(&self, from: usize, topic: &Arc<Topic>, frame: &SharedFrame) -> usize {
        self.push_to_workers(from, topic, frame, 0, None)
    }

    pub(super) fn push_to_workers(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::test_support::{frame, hub};
    use bytes::Bytes;
    use wsgate_core::frame::{OpCode, OutFrame};

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
    fn more_than_64_workers() {
        let (hub, _) = hub(130);
        let t = hub.topic("t");
        hub.subscribed(129, &t, true);
        hub.subscribed(64, &t, true);
        assert!(t.has_worker(129) && t.has_worker(64) && !t.has_worker(0));
        assert_eq!(hub.publish_remote(0, &t, &frame(0)), 2);
    }
}
