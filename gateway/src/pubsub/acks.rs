//! Acknowledgements of subscribes held until the cluster confirms the node's interest.

use crate::hub::Topic;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The held acknowledgements of one worker.
#[derive(Debug)]
pub(super) struct DeferredAcks<K> {
    held: Vec<Held<K>>,
}

impl<K> Default for DeferredAcks<K> {
    fn default() -> Self {
        DeferredAcks { held: Vec::new() }
    }
}

impl<K: Copy> DeferredAcks<K> {
    pub(super) fn hold(&mut self, who: K, id: i64, topic: Arc<Topic>, now: Instant) {
        self.held.push(Held {
            who,
            id,
            topic,
            since: now,
        });
    }

    /// Takes the acknowledgements that may go: all of them when the link is down.
    pub(super) fn due(&mut self, link_up: bool, now: Instant) -> Vec<(K, i64)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let (ready, waiting): (Vec<Held<K>>, Vec<Held<K>>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| {
                !link_up || h.topic.remote_ready() || now.duration_since(h.since) >= ACK_WAIT
            });
        self.held = waiting;
        ready.into_iter().map(|h| (h.who, h.id)).collect()
    }

    /// When to look again after `now`, if anything is held.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        let oldest = self.held.iter().map(|h| h.since).min()?;
        Some((oldest + ACK_WAIT).min(now + ACK_POLL))
    }
}
