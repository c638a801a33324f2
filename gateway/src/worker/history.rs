//! Topics with history, as the worker serves them: numbered publishes, what a subscribe there
//! is answered with (the position, or a recovery), and the gap notices after an outage of the
//! link to other nodes.
//!
//! In a cluster a topic's history is a mirror of its stream in Redis. A subscribe to it while
//! the mirror is not primed (this node just started listening to the topic, its link to Redis
//! came back) waits for the priming, held back from every message meanwhile, and is answered
//! from the primed mirror; after [`JOIN_WAIT`] it is answered from what the mirror has if it
//! ever had a position (the messages it lacks follow when it is primed), or refused as
//! `unavailable`.

use super::Worker;
use super::ws::Published;
use crate::conn::ConnId;
use crate::history::Refusal;
use crate::hub::{Answer, AnswerTo, Ticket, Topic};
use crate::metrics::{Counter, MessageKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wsgate_core::deflate::SharedFrame;
use wsgate_core::error::Error;
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::message::{self, Recover, RecoverFailure};

/// Longest a subscribe to a topic with history waits for its mirror to be primed from Redis.
pub(super) const JOIN_WAIT: Duration = Duration::from_secs(2);
/// Subscribes one worker holds at most while they wait; past it they are refused as
/// unavailable.
const MAX_JOINS: usize = 16_384;

/// A subscribe to a topic with history that waits for the topic's mirror to be primed.
#[derive(Debug)]
pub(super) struct Join {
    id: ConnId,
    topic: Arc<str>,
    ack: Option<i64>,
    recover: Option<Recover<'static>>,
    fresh: bool,
    since: Instant,
}

/// The subscribes a worker holds until their topics' mirrors are primed, oldest first.
#[derive(Debug, Default)]
pub(super) struct Joins {
    waiting: Vec<Join>,
    /// The hub's count of confirmations when they were last looked at.
    confirmations: u64,
}

impl Joins {
    /// When to look again, if any waits.
    pub(super) fn deadline(&self, now: Instant) -> Option<Instant> {
        let oldest = self.waiting.first()?.since;
        Some((oldest + JOIN_WAIT).min(now + Duration::from_millis(50)))
    }
}

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
        if self.node.hub.is_sequenced(&shared) && !shared.history_primed() {
            if self.joins.waiting.len() >= MAX_JOINS {
                return Some(Some(self.refuse_join(id, topic, ack, recover.is_some())));
            }
            if fresh || recover.is_some() {
                // nothing until the answer, which says where it starts
                self.pubsub.set_floor(id, topic, u64::MAX);
            }
            self.joins.waiting.push(Join {
                id,
                topic: Arc::from(topic),
                ack,
                recover: recover.map(Recover::into_owned),
                fresh,
                since: self.now,
            });
            return Some(None);
        }
        Some(self.answer_join(id, topic, &shared, ack, recover, fresh))
    }

    /// Answers the subscribes that waited for their mirror, once it is primed (or the wait is
    /// over).
    pub(super) fn settle_joins(&mut self) {
        let Some(oldest) = self.joins.waiting.first().map(|j| j.since) else {
            return;
        };
        let confirmations = self.node.hub.confirmations();
        if confirmations == self.joins.confirmations && self.now < oldest + JOIN_WAIT {
            return;
        }
        self.joins.confirmations = confirmations;
        for j in std::mem::take(&mut self.joins.waiting) {
            let Some(shared) = self
                .pubsub
                .is_subscribed(j.id, &j.topic)
                .then(|| self.pubsub.history_topic(&j.topic).cloned())
                .flatten()
            else {
                continue; // it left meanwhile
            };
            let over = self.now >= j.since + JOIN_WAIT;
            let reply = if shared.history_primed() || (over && shared.history_has_position()) {
                self.answer_join(j.id, &j.topic, &shared, j.ack, j.recover, j.fresh)
            } else if over {
                Some(self.refuse_join(j.id, &j.topic, j.ack, j.recover.is_some()))
            } else {
                self.joins.waiting.push(j);
                continue;
            };
            if let Some(reply) = reply
                && self.conns.get(j.id).is_some_and(|c| c.is_open_session())
            {
                self.send(j.id, reply);
            }
        }
    }

    /// Refuses a subscribe to a topic whose history cannot be read now: the subscription goes,
    /// and the answer says why.
    fn refuse_join(
        &mut self,
        id: ConnId,
        topic: &str,
        ack: Option<i64>,
        recover: bool,
    ) -> OutFrame {
        if let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) {
            self.pubsub.unsubscribe(id, &mut ws.subscriptions, topic);
        }
        if recover {
            self.metrics.inc(Counter::RecoveriesFailed);
        }
        self.metrics.inc(Counter::MessageErrors);
        message::error_frame(
            ack,
            &Error::Unavailable("the topic's history is kept in redis, out of reach now"),
        )
    }

    /// The answer to a subscribe to a topic with history whose stream can be read: the
    /// position, or the recovery (sent now) and the acknowledgement that goes after it.
    fn answer_join(
        &mut self,
        id: ConnId,
        topic: &str,
        shared: &Arc<Topic>,
        ack: Option<i64>,
        recover: Option<Recover<'_>>,
        fresh: bool,
    ) -> Option<OutFrame> {
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
            return None;
        }
        Some(message::subscribe_ack_frame(
            ack, topic, last, &epoch, recovery,
        ))
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
    /// through its inbox, this worker's too, in offset order. In a cluster Redis numbers it
    /// and brings it back to every node with subscribers, this one too; a publisher that gave
    /// an `ack` id is answered once Redis has given the offset ([`Worker::send_answers`]), and
    /// HTTP's answer has no offset. `None` when Redis is out of reach (nobody gets it).
    pub(super) fn publish_numbered(
        &mut self,
        topic: &str,
        frame: OutFrame,
        publisher: Option<ConnId>,
        ack: Option<i64>,
    ) -> Option<Published> {
        let hub = self.node.hub.clone();
        let shared = self.pubsub.topic(topic).clone();
        if hub.is_sequenced(&shared) {
            // a publisher that asked for an answer gets it once Redis gives the offset
            let ticket = publisher.zip(ack).map(|(conn, id)| {
                let to = AnswerTo {
                    worker: self.pubsub.worker(),
                    conn: conn.token().0 as u64,
                    id,
                };
                Ticket::new(&hub, to)
            });
            let answered_later = ticket.is_some();
            return hub
                .publish_sequenced(&shared, &frame, ticket)
                .then(|| Published {
                    delivered: shared.subscribers(),
                    position: None,
                    answered_later,
                });
        }
        let make = |offset| hub.numbered(frame, offset);
        let Some((offset, epoch, on_node, congested)) =
            self.pubsub.publish_at(topic, self.now, make)
        else {
            return Some(Published {
                delivered: 0,
                position: None,
                answered_later: false,
            });
        };
        // this worker's subscribers get it now, after what its inbox held before
        self.take_inbox();
        if congested
            && let Some(id) = publisher
            && self.conns.wait_for_room(id)
        {
            self.metrics.inc(Counter::PublishersPaused);
        }
        Some(Published {
            delivered: on_node,
            position: Some((offset, epoch)),
            answered_later: false,
        })
    }

    /// Sends the answers Redis gave to this worker's publishers (see [`Ticket`]): the ack with
    /// the offset and epoch, a plain ack when the position is not known, `unavailable` when
    /// the publish was not kept (sending it again makes no second copy).
    pub(super) fn send_answers(&mut self) {
        let hub = self.node.hub.clone();
        let worker = self.pubsub.worker();
        hub.take_answers(worker, |to, answer| {
            let id = ConnId::from_token(mio::Token(to.conn as usize));
            if !self.conns.get(id).is_some_and(|c| c.is_open_session()) {
                return;
            }
            let frame = match answer {
                Answer::Numbered { offset, epoch } => {
                    message::publish_ack_frame(to.id, offset, &epoch)
                }
                Answer::Accepted => message::ack_frame(to.id),
                Answer::Lost => {
                    self.metrics.inc(Counter::MessageErrors);
                    let lost = Error::Unavailable("redis did not keep the publish");
                    message::error_frame(Some(to.id), &lost)
                }
            };
            self.send(id, frame);
        });
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
            if self
                .pubsub
                .history_topic(&topic)
                .is_some_and(|t| self.node.hub.is_sequenced(t))
            {
                continue; // its mirror fills what was missed, or tells of the gap itself
            }
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
