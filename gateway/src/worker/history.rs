//! Topics with history, as the worker serves them: numbered publishes, what a subscribe there
//! is answered with (the position, or a recovery), and the gap notices after an outage of the
//! link to other nodes.

use super::Worker;
use crate::conn::ConnId;
use crate::history::Refusal;
use crate::metrics::{Counter, MessageKind};
use wsgate_core::deflate::SharedFrame;
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::message::{self, Recover, RecoverFailure};

impl Worker {
    /// After `id` subscribed to `topic` (`fresh`: it was not subscribed before): on a topic
    /// with history, sends it what it asked to recover (the messages after its offset, in
    /// order) and returns the acknowledgement that goes after them (with the last offset it
    /// got and the epoch; `recovered` when it asked): `Some(None)` when there is none to send
    /// (no id, no recovery). `None`: the topic keeps no history. A subscription that was there
    /// already keeps getting every message; asked to recover, it gets what it asked for.
    pub(super) fn join_history(
        &mut self,
        id: ConnId,
        topic: &str,
        ack: Option<i64>,
        recover: Option<Recover<'_>>,
        fresh: bool,
    ) -> Option<Option<OutFrame>> {
        let shared = self.pubsub.history_topic(topic)?.clone();
        // after the subscribe: a message past `last` reaches this worker's inbox; one up to it
        // that is still there is held back from this subscriber (it has it, or came after it)
        let (last, epoch, recovery) = match recover {
            None => {
                let (last, epoch) = shared.position()?;
                if fresh {
                    // what is still in the inbox up to `last` is held back: it came first
                    self.pubsub.set_floor(id, topic, last);
                } else {
                    // subscribed already, it gets every message: those up to `last` still
                    // in the inbox go before the acknowledgement that names `last`
                    let hub = self.node.hub.clone();
                    hub.drain(self.pubsub.worker(), |d| self.deliver(d));
                }
                (last, epoch, None)
            }
            Some(from) => {
                let r = shared.recover(from.offset, &from.epoch, self.now)?;
                let recovery = match r.messages {
                    Ok(messages) => {
                        self.metrics.inc(Counter::Recoveries);
                        for (offset, frame) in &messages {
                            self.send_recovered(id, frame, *offset);
                        }
                        message::Recovery::Recovered
                    }
                    Err(refusal) => {
                        self.metrics.inc(Counter::RecoveriesFailed);
                        message::Recovery::Failed(match refusal {
                            Refusal::Epoch => RecoverFailure::Epoch,
                            Refusal::TooOld => RecoverFailure::TooOld,
                            Refusal::Ahead => RecoverFailure::Ahead,
                        })
                    }
                };
                // it has everything up to `r.last` now: the inbox's copies are held back
                self.pubsub.set_floor(id, topic, r.last);
                (r.last, r.epoch, Some(recovery))
            }
        };
        if ack.is_none() && recovery.is_none() {
            return Some(None);
        }
        Some(Some(message::subscribe_ack_frame(
            ack, topic, last, &epoch, recovery,
        )))
    }

    /// Queues a kept message of `offset` to a recovering connection: its compressed variant
    /// when the session takes them; a binary one with its offset in front for a `wsgate.v2`
    /// session.
    pub(super) fn send_recovered(&mut self, id: ConnId, frame: &SharedFrame, offset: u64) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        let out = if conn.v2 && frame.plain().opcode() == OpCode::Binary {
            let v2 = self
                .node
                .hub
                .share(message::binary_delivery_at(frame.plain().payload(), offset));
            if conn.deflate {
                v2.deflated().0.clone()
            } else {
                v2.plain().clone()
            }
        } else if conn.deflate {
            frame.deflated().0.clone()
        } else {
            frame.plain().clone()
        };
        if let Some(held) = self.conns.queue(id, out, 0) {
            self.metrics
                .messages_out(MessageKind::of(frame.plain().opcode()), 1);
            self.pause_if_full(id, held);
        }
    }

    /// Publishes to a topic with history: the message gets the topic's next offset (a text
    /// delivery carries it as `"offset"`), is kept, and reaches every worker's subscribers
    /// through its inbox, this worker's too, in offset order.
    pub(super) fn publish_numbered(
        &mut self,
        topic: &str,
        frame: OutFrame,
        publisher: Option<ConnId>,
    ) -> usize {
        let hub = self.node.hub.clone();
        let make = |offset| match frame.opcode() {
            OpCode::Text => {
                let numbered = message::text_delivery_with_offset(frame.payload(), offset);
                (hub.share(numbered.unwrap_or(frame)), None)
            }
            // a binary delivery is the same for everyone but wsgate.v2 clients, whose copy
            // has the offset in front
            _ => {
                let v2 = hub.share(message::binary_delivery_at(frame.payload(), offset));
                (hub.share(frame), Some(v2))
            }
        };
        let Some((_, on_node, congested)) = self.pubsub.publish_at(topic, self.now, make) else {
            return 0;
        };
        // this worker's subscribers get it now, after what its inbox held before
        self.take_inbox();
        if congested
            && let Some(id) = publisher
            && self.conns.wait_for_room(id)
        {
            self.metrics.inc(Counter::PublishersPaused);
        }
        on_node
    }

    /// After an outage of the link to other nodes: tells every subscriber of this worker, for
    /// each of its topics, that it may have missed messages (`{"type":"gap","topic":T}`), so
    /// that it refetches rather than believe it has everything. Once per outage.
    pub(super) fn tell_gaps(&mut self) {
        let outages = self.node.hub.uplink_outages();
        if outages == self.outages_told {
            return;
        }
        self.outages_told = outages;
        for (topic, subscribers) in self.pubsub.subscribed() {
            let gap = message::gap_frame(&topic);
            for id in subscribers {
                if self.conns.get(id).is_some_and(|c| c.is_open_session()) {
                    self.send(id, gap.clone());
                    self.metrics.inc(Counter::GapNotices);
                }
            }
        }
    }
}
