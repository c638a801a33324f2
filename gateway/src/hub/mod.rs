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

// The rooms, and what each needs of the others (the arrows run one way; every room adds an
// `impl Hub` block to the struct defined here):
// - topic: each topic's shared entry, recovery, the history rules and the registry
// - inbox: the workers' inboxes (deliveries, wakes, bounds and congestion) -> topic
// - uplink: the trait of the way to other nodes and its confirmations -> topic, inbox
// - fanout: the workers' bits of a topic and the pushes of a publish -> topic, inbox, uplink
// - history: numbered publishes and the mirror of the cluster's streams -> topic, fanout, uplink
mod answers;
mod fanout;
mod history;
mod inbox;
#[cfg(test)]
mod test_support;
mod topic;
mod uplink;

pub use answers::{Answer, AnswerTo, Ticket};
pub use inbox::{DELIVERY_COST, Delivery, Wake};
pub use topic::{HistoryRules, Recovery, Topic};
pub use uplink::Uplink;

use crate::history::Budget;
use inbox::Inbox;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use wsgate_core::deflate::{Compression, SharedFrame};
use wsgate_core::frame::OutFrame;

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
        let inboxes = wakers.into_iter().map(Inbox::new).collect();
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

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }
}
