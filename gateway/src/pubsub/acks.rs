//! Acknowledgements of subscribes held until the cluster confirms the node's interest.

use crate::hub::Topic;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Acknowledgements one worker holds at most; past it a subscribe is acknowledged at once (its
/// subscription is in place; only the wait for other nodes is skipped) and counted.
pub(crate) const MAX_HELD: usize = 16_384;

/// Longest a subscribe's acknowledgement waits for the link to other nodes.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(1);

/// How often held acknowledgements are looked at when nothing else wakes the worker (the
/// confirmation comes from another thread, which sets a flag on the topic and wakes every
/// worker; this bounds the wait if the wake is missed).
const ACK_POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Held<K> {
    who: K,
    id: i64,
    topic: Arc<Topic>,
    since: Instant,
}

/// The held acknowledgements of one worker, oldest first (they are held in the order they
/// come, so the ones whose wait is over are at the front).
#[derive(Debug)]
pub(super) struct DeferredAcks<K> {
    held: VecDeque<Held<K>>,
    /// The hub's count of confirmations when the held ones were last looked through.
    confirmations: u64,
}

impl<K> Default for DeferredAcks<K> {
    fn default() -> Self {
        DeferredAcks {
            held: VecDeque::new(),
            confirmations: 0,
        }
    }
}

impl<K: Copy> DeferredAcks<K> {
    /// Holds an acknowledgement; false (not held: acknowledge now) past [`MAX_HELD`].
    pub(super) fn hold(&mut self, who: K, id: i64, topic: Arc<Topic>, now: Instant) -> bool {
        if self.held.len() >= MAX_HELD {
            return false;
        }
        self.held.push_back(Held {
            who,
            id,
            topic,
            since: now,
        });
        true
    }

    /// Takes the acknowledgements that may go: all of them when the link is down; those whose
    /// wait is over (from the front); and, only when the hub has recorded confirmations since
    /// the last look (`confirmations`), those of confirmed topics. A turn of the loop with
    /// nothing new costs a glance at the front.
    pub(super) fn due(&mut self, link_up: bool, confirmations: u64, now: Instant) -> Vec<(K, i64)> {
        let mut ready = Vec::new();
        if self.held.is_empty() {
            return ready;
        }
        if !link_up {
            ready.extend(self.held.drain(..).map(|h| (h.who, h.id)));
            return ready;
        }
        while let Some(h) = self.held.front()
            && now.duration_since(h.since) >= ACK_WAIT
        {
            let h = self.held.pop_front().expect("a front");
            ready.push((h.who, h.id));
        }
        if confirmations != self.confirmations {
            self.confirmations = confirmations;
            self.held.retain(|h| {
                let confirmed = h.topic.remote_ready();
                if confirmed {
                    ready.push((h.who, h.id));
                }
                !confirmed
            });
        }
        ready
    }

    /// When to look again after `now`, if anything is held.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        let oldest = self.held.front()?.since;
        Some((oldest + ACK_WAIT).min(now + ACK_POLL))
    }

    /// How many are held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}
