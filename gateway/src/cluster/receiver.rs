//! The receiver thread: reads a subscribing connection and hands other nodes' messages to the
//! workers.

use super::bridge::{ALIVE, ENDED, MOVED};
use super::resp::Resp;
use super::{Cluster, envelope};
use crate::hub::Hub;
use bytes::Bytes;
use redis::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The receiver thread: reads the subscribing connection.
pub(super) struct Receiver {
    pub(super) hub: Arc<Hub>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) conn: Resp,
    pub(super) state: Arc<AtomicU8>,
    /// Whether the connection is to one master of a Redis Cluster.
    pub(super) clustered: bool,
    /// Channels this connection is subscribed to, as Redis last said.
    pub(super) channels: u64,
}

impl Receiver {
    pub(super) fn run(mut self) {
        let mut refused_logged = false;
        loop {
            let value = match self.conn.read() {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("redis subscribing connection ended: {e}");
                    break;
                }
            };
            let items = match value {
                Value::Array(items) => items,
                Value::Push { data, .. } => data,
                Value::ServerError(e) if self.clustered && e.code() == "MOVED" => {
                    // a slot moved to another master: the bridge reads the layout again
                    let _ = self.state.compare_exchange(
                        ALIVE,
                        MOVED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    break;
                }
                Value::ServerError(e) => {
                    if !refused_logged {
                        tracing::error!("redis refused a subscription: {e:?}");
                        refused_logged = true;
                    }
                    continue;
                }
                _ => continue,
            };
            self.on_push(items);
        }
        self.set_channels(0);
        let _ = self
            .state
            .compare_exchange(ALIVE, ENDED, Ordering::AcqRel, Ordering::Acquire);
        self.cluster.wake();
    }

    fn on_push(&mut self, items: Vec<Value>) {
        let mut items = items.into_iter();
        let kind = match items.next() {
            Some(Value::BulkString(k)) => k,
            Some(Value::SimpleString(k)) => k.into_bytes(),
            _ => return,
        };
        match kind.as_slice() {
            b"message" | b"smessage" => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (items.next(), items.next())
                else {
                    return;
                };
                self.deliver(&channel, Bytes::from(payload));
            }
            b"subscribe" | b"unsubscribe" | b"ssubscribe" | b"sunsubscribe" => {
                let channel = items.next();
                if let Some(Value::Int(count)) = items.next() {
                    self.set_channels(count.max(0) as u64);
                }
                if matches!(kind.as_slice(), b"subscribe" | b"ssubscribe")
                    && let Some(Value::BulkString(channel)) = &channel
                {
                    self.confirmed(channel);
                }
                if kind == b"sunsubscribe"
                    && let Some(Value::BulkString(channel)) = channel
                {
                    self.cluster.unsubscribed.push(channel);
                    self.cluster.wake();
                }
            }
            _ => {}
        }
    }

    /// Redis confirmed a subscription: acknowledgements of subscribes to the topic that waited
    /// for it can go.
    fn confirmed(&self, channel: &[u8]) {
        let Some(name) = channel
            .strip_prefix(self.cluster.prefix.as_bytes())
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        let hub = &self.hub;
        if let Some(topic) = hub.find(name) {
            if topic.is_mirrored() {
                // its mirror is primed first (the bridge confirms it then)
                self.cluster.prime_later(topic);
            } else {
                hub.confirm_remote(&topic);
                hub.release(topic);
            }
        }
    }

    /// Records this connection's count of channels in the node's total.
    fn set_channels(&mut self, count: u64) {
        let channels = &self.cluster.stats.channels;
        if count >= self.channels {
            channels.fetch_add(count - self.channels, Ordering::Relaxed);
        } else {
            channels.fetch_sub(self.channels - count, Ordering::Relaxed);
        }
        self.channels = count;
    }

    fn deliver(&self, channel: &[u8], payload: Bytes) {
        let stats = &self.cluster.stats;
        let topic = channel
            .strip_prefix(self.cluster.prefix.as_bytes())
            .and_then(|t| std::str::from_utf8(t).ok());
        if payload.starts_with(envelope::SEQUENCED) {
            match (topic, envelope::open_sequenced(&payload)) {
                (Some(topic), Some(s)) => self.deliver_sequenced(topic, s),
                _ => {
                    stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let (Some(topic), Some(opened)) = (topic, envelope::open(&payload)) else {
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if opened.node == self.cluster.node() {
            stats.own_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let hub = &self.hub;
        let topic = hub.topic(topic);
        if topic.is_mirrored() {
            // a node whose rules keep no history of the topic: its message has no offset, and
            // this node's subscribers of the topic get only numbered ones
            stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            if !self
                .cluster
                .mixed_rules_logged
                .swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "node {:?} publishes to {:?} without history, which this node's [[history]] \
                     rules keep one of: give every node the same rules; its messages are dropped",
                    String::from_utf8_lossy(opened.node),
                    &**topic.name()
                );
            }
            hub.release(topic);
            return;
        }
        self.wait_for_room(&topic);
        // counted before the workers have it, so that whoever sees the message sees it counted
        stats.received.fetch_add(1, Ordering::Relaxed);
        hub.publish_remote(usize::MAX, &topic, &hub.share(opened.frame));
        hub.release(topic);
    }

    /// A message of a topic with history, numbered by Redis: this node's own too (it reached
    /// nobody before), into the topic's mirror, which sends it on in offset order.
    fn deliver_sequenced(&self, topic: &str, s: envelope::Sequenced<'_>) {
        let stats = &self.cluster.stats;
        let hub = &self.hub;
        let topic = hub.topic(topic);
        self.wait_for_room(&topic);
        stats.received.fetch_add(1, Ordering::Relaxed);
        if topic.is_mirrored() {
            hub.receive_sequenced(&topic, s.offset, s.epoch, s.frame);
        } else {
            // this node keeps no history of the topic (its rules differ): a plain delivery
            hub.publish_remote(usize::MAX, &topic, &hub.share(s.frame));
        }
        hub.release(topic);
    }

    /// Waits while a worker's inbox that `topic` goes to is full.
    fn wait_for_room(&self, topic: &std::sync::Arc<crate::hub::Topic>) {
        let stats = &self.cluster.stats;
        let hub = &self.hub;
        if hub.is_congested(usize::MAX, topic) {
            // a worker's inbox is full: stop reading Redis (it holds what comes meanwhile)
            // until there is room, rather than drop or queue without bound
            stats.receive_waits.fetch_add(1, Ordering::Relaxed);
            while hub.is_congested(usize::MAX, topic) && !self.cluster.is_stopping() {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
    }
}
