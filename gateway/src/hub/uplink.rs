//! The way to other nodes as the hub sees it ([`Uplink`]), and what the hub keeps of its
//! confirmations and state.

use super::{Hub, Ticket, Topic};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wsgate_core::frame::OutFrame;

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
    /// its offset and brings it back to every node with subscribers, this one too, and answers
    /// `ticket` (when given) with the offset. False when it cannot be numbered now (the link
    /// is down or behind); nobody gets it, and the ticket is taken back unanswered
    /// ([`Ticket::cancel`]): the caller answers the publisher.
    fn publish_sequenced(&self, topic: &Topic, frame: &OutFrame, ticket: Option<Ticket>) -> bool {
        let _ = (topic, frame);
        if let Some(t) = ticket {
            t.cancel();
        }
        false
    }
    /// The mirror of `topic`'s history needs priming from the other nodes' stream (an offset
    /// jumped).
    fn resync(&self, topic: Arc<Topic>) {
        let _ = topic;
    }
}

impl Hub {
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
}
