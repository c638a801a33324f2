//! Acting on WebSocket sessions and pub/sub: the session's events, what a message asks for,
//! publishing, delivering to this worker's subscribers, the deliveries other workers queued,
//! held acknowledgements, and closing sessions.

use super::{INBOX_BUDGET, Worker};
use crate::conn::{Audience, ConnId, Phase};
use crate::hub::Delivery;
use crate::metrics::{Counter, MessageKind};
use crate::outbox::COPY_MAX;
use crate::pubsub::ACKS_HELD_MAX;
use crate::session::{Action, Data, SessionKind};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wsgate_core::Error;
use wsgate_core::close::CloseCode;
use wsgate_core::frame::{MAX_HEADER_LEN, OpCode, OutFrame};
use wsgate_core::message;
use wsgate_core::session::Event;
use wsgate_core::timer::{Now, Timer};

/// What a publish did ([`Worker::publish`]).
pub(super) struct Published {
    /// The subscribers it reached on this node.
    pub(super) delivered: usize,
    /// On a topic with history numbered on this node: the message's offset and the epoch.
    pub(super) position: Option<(u64, Arc<str>)>,
    /// The publisher's answer comes later, with the offset another node's Redis gives
    /// ([`Worker::send_answers`]).
    pub(super) answered_later: bool,
}

impl Worker {
    /// Hands the bytes at the front of `buf` to the session and acts on what comes out, until
    /// the connection is paused for holding too much (the rest then waits in its buffer).
    /// `shared`: `buf` is the worker's read buffer, which a message must not keep alive unseen:
    /// a message that stays queued is copied out of it, or (an echo larger than
    /// [`COPY_OUT_MAX`]) counted as holding all of it.
    pub(super) fn read_session(&mut self, id: ConnId, buf: &mut BytesMut, shared: bool) {
        let buffer = if shared { buf.capacity() } else { 0 };
        // every message of this read arrived at the same instant: its stamp is made once
        let now = Now::from(self.now);
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                buf.clear();
                return;
            };
            if !conn.may_read() {
                return;
            }
            // a small echo that compression may apply to takes the usual way
            let small_stays_plain =
                !conn.deflate || self.node.compression.is_none_or(|c| c.min_size > 125);
            let Some(ws) = conn.ws() else {
                buf.clear();
                return;
            };
            let echo = ws.kind == SessionKind::Echo;
            if echo && small_stays_plain && ws.protocol.is_open() && self.echo_small(id, buf, now) {
                continue;
            }
            let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) else {
                return;
            };
            match ws.protocol.read(buf, now) {
                None => return,
                Some(Event::Text(t)) => {
                    let (t, held) = copy_out(t, buffer, echo);
                    self.on_data(id, Data::Text(t), held);
                }
                Some(Event::Binary(b)) => {
                    let (b, held) = copy_out(b, buffer, echo);
                    self.on_data(id, Data::Binary(b), held);
                }
                Some(event) => self.on_event(id, event),
            }
        }
    }

    /// The echo of the common message, straight from the read buffer into the connection's
    /// outbox: a small whole text or binary frame at the front of `buf` is unmasked in place,
    /// checked, copied into the outbox and consumed, with no `Bytes` made of it. False, with
    /// nothing done, for anything else (then the session reads it as usual).
    fn echo_small(&mut self, id: ConnId, buf: &mut BytesMut, now: Now) -> bool {
        #[cfg(feature = "fault-injection")]
        if buf.len() > 6 && buf[0] == 0x81 {
            return false; // the fault-injection hook looks at text messages in `on_data`
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        let crate::conn::Conn {
            phase: Phase::Ws(ws),
            outbox,
            ..
        } = conn
        else {
            return false;
        };
        let Some((kind, len)) = ws.protocol.read_small(buf, now, |text, payload| {
            let (opcode, kind) = if text {
                (OpCode::Text, MessageKind::Text)
            } else {
                (OpCode::Binary, MessageKind::Binary)
            };
            outbox.push_copy(opcode, payload);
            (kind, payload.len())
        }) else {
            return false;
        };
        let held = outbox.held_bytes();
        self.metrics.message_in(kind, len);
        self.metrics.messages_out(kind, 1);
        self.conns.mark_dirty(id);
        self.pause_if_full(id, held);
        true
    }

    /// Queues the frames the session wants sent (pongs, pings, closes).
    fn transmit(&mut self, id: ConnId) {
        while let Some(frame) = self
            .conns
            .get_mut(id)
            .and_then(|c| c.ws())
            .and_then(|ws| ws.protocol.poll_transmit())
        {
            self.send(id, frame);
        }
    }

    fn on_event(&mut self, id: ConnId, event: Event) {
        match event {
            Event::Text(text) => self.on_data(id, Data::Text(text), 0),
            Event::Binary(bytes) => self.on_data(id, Data::Binary(bytes), 0),
            Event::Ping(_) | Event::Pong(_) => {
                self.metrics.message_in(MessageKind::Control, 0);
                self.transmit(id);
            }
            Event::Closed(received) => {
                self.metrics.message_in(MessageKind::Control, 0);
                let code = received.as_ref().map(|c| c.code);
                self.metrics.close_received(code);
                if let Some(conn) = self.conns.get(id) {
                    tracing::debug!(
                        client = %conn.client,
                        code = code.map(|c| c.0),
                        reason = %received
                            .as_ref()
                            .map_or(std::borrow::Cow::Borrowed(""), |c| String::from_utf8_lossy(&c.reason)),
                        "close received"
                    );
                }
                self.transmit(id);
                self.end_session(id);
                self.conns.mark_dirty(id);
            }
            Event::Failed(e) => {
                if let Some(conn) = self.conns.get(id) {
                    tracing::debug!(client = %conn.client, error = %e, "session failed");
                }
                self.transmit(id);
                self.end_session(id);
                self.conns.mark_dirty(id);
            }
            Event::Timeout(timer) => self.on_session_timeout(id, timer),
        }
    }

    /// A session's timer fired (see [`wsgate_core::session::Session::handle_timeout`]).
    pub(super) fn on_session_timeout(&mut self, id: ConnId, timer: Timer) {
        match timer {
            // the peer never answered the close
            Timer::Close => return self.close_now(id),
            // the session is closing: nothing more is delivered to it
            Timer::Idle | Timer::TokenExpiry => self.unsubscribe_all(id),
            Timer::Ping | Timer::Handshake => {}
        }
        self.transmit(id);
    }

    /// A data message: echoed, or acted on as pub/sub.
    /// `buffer`: the size of the read buffer the message is a slice of, when it is one.
    fn on_data(&mut self, id: ConnId, data: Data, buffer: usize) {
        let now = self.now;
        let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) else {
            return;
        };
        if !ws.protocol.is_open() {
            return; // closing: what the peer still sends is dropped
        }
        let (kind, len) = match &data {
            Data::Text(t) => (MessageKind::Text, t.len()),
            Data::Binary(b) => (MessageKind::Binary, b.len()),
        };
        self.metrics.message_in(kind, len);
        #[cfg(feature = "fault-injection")]
        if let Data::Text(t) = &data
            && &t[..] == b"wsgate:panic"
        {
            panic!("fault injection: a bug while handling a message");
        }
        match ws.echo(data) {
            Ok(frame) => {
                self.send_retaining(id, frame, buffer);
            }
            Err(Data::Text(text)) => {
                let action = ws.on_text(&text, &self.node.policy, now);
                self.act(id, action);
            }
            Err(Data::Binary(bytes)) => {
                let action = ws.on_binary(bytes, &self.node.policy, now);
                self.act(id, action);
            }
        }
    }

    /// Does what a pub/sub message asks, and answers it.
    fn act(&mut self, id: ConnId, action: Action<'_>) {
        let (reply, close) = match action {
            Action::Subscribe {
                topic,
                id: ack,
                recover,
            } => {
                let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) else {
                    return;
                };
                let fresh = self.pubsub.subscribe(id, &mut ws.subscriptions, &topic);
                if let Some(reply) = self.join_history(id, &topic, ack, recover, fresh) {
                    (reply, None)
                } else {
                    match ack {
                        Some(n) if self.pubsub.defer_ack(id, &topic, n, self.now) => return,
                        Some(n) => {
                            if self.node.hub.uplink_up() && self.pubsub.acks_held() >= ACKS_HELD_MAX
                            {
                                self.metrics.inc(Counter::AcksNotHeld);
                            }
                            (Some(message::ack_frame(n)), None)
                        }
                        None => (None, None),
                    }
                }
            }
            Action::Unsubscribe { topic, id: ack } => {
                let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) else {
                    return;
                };
                self.pubsub.unsubscribe(id, &mut ws.subscriptions, &topic);
                (ack.map(message::ack_frame), None)
            }
            Action::Publish {
                topic,
                frame,
                id: ack,
            } => match self.publish(&topic, frame, Some(id), ack) {
                Some(Published {
                    position: Some((offset, epoch)),
                    ..
                }) => (
                    ack.map(|n| message::publish_ack_frame(n, offset, &epoch)),
                    None,
                ),
                Some(Published {
                    answered_later: true,
                    ..
                }) => (None, None),
                Some(_) => (ack.map(message::ack_frame), None),
                None => {
                    let refused =
                        Error::Unavailable("the topic's history is kept in redis, unreachable");
                    (Some(self.refusal(&refused, ack)), None)
                }
            },
            Action::Refuse { error, id: ack } => (Some(self.refusal(&error, ack)), None),
            Action::RefuseAndClose {
                error,
                id: ack,
                reason,
            } => (Some(self.refusal(&error, ack)), Some(reason)),
        };
        if let Some(reply) = reply
            && self.conns.get(id).is_some_and(|c| c.is_open_session())
        {
            self.send(id, reply);
        }
        if let Some(reason) = close {
            self.close_session(id, CloseCode::POLICY, &reason);
        }
    }

    /// Counts a refused message, and the error message that answers it.
    fn refusal(&self, error: &Error, id: Option<i64>) -> OutFrame {
        self.metrics.inc(Counter::MessageErrors);
        match error {
            Error::Forbidden(_) => self.metrics.inc(Counter::Forbidden),
            Error::RateLimited => self.metrics.inc(Counter::RateLimited),
            _ => {}
        }
        message::error_frame(id, error)
    }

    /// Publishes a frame: to other workers and nodes by reference, to this worker's
    /// subscribers directly. Returns the subscribers on this node and, on a topic with history
    /// numbered here, the message's offset and epoch; `None` when the publish could not be made (a topic whose history Redis keeps, while Redis is out of reach).
    /// `publisher`, when given, stops being read if an inbox the frame went to is over its
    /// bound, until they all have room. `ack`: the id of the publisher's publish, when it
    /// wants an answer (in a cluster, one that Redis numbers gets it later).
    pub(super) fn publish(
        &mut self,
        topic: &str,
        frame: OutFrame,
        publisher: Option<ConnId>,
        ack: Option<i64>,
    ) -> Option<Published> {
        self.metrics.inc(Counter::Publishes);
        if self.pubsub.topic(topic).has_history() {
            return self.publish_numbered(topic, frame, publisher, ack);
        }
        let frame = self.node.hub.share(frame);
        let published = self.pubsub.publish(topic, &frame);
        let (on_node, congested) = (published.on_node, published.congested);
        let limit = self.node.config.limits.outbox_limit;
        let audience = Audience::of(published.local, published.generation);
        self.conns
            .deliver(published.local, audience, &frame, None, limit);
        self.settle_deliveries();
        if congested
            && let Some(id) = publisher
            && self.conns.wait_for_room(id)
        {
            self.metrics.inc(Counter::PublishersPaused);
        }
        Some(Published {
            delivered: on_node,
            position: None,
            answered_later: false,
        })
    }

    /// Lets the publishers that waited for room go on, once every inbox has room.
    pub(super) fn resume_publishers(&mut self) {
        if !self.conns.has_waiting_room() || !self.pubsub.has_room() {
            return;
        }
        for id in self.conns.take_waiting_room() {
            self.guarded(id, |w| w.resume(id));
        }
    }

    /// Queues a frame another worker or node published to this worker's subscribers.
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let limit = self.node.config.limits.outbox_limit;
        if delivery.offset == 0 && delivery.topic.has_history() {
            // a gap notice: for every subscriber but those whose subscribe is not answered
            // yet (the answer starts where the notice would point)
            let Some(told) = self.pubsub.answered(delivery.topic.name()) else {
                return;
            };
            self.pubsub.clear_floors(delivery.topic.name());
            self.metrics.add(Counter::GapNotices, told.len() as u64);
            self.conns.finish_batch();
            let audience = Audience::of(&told, self.pubsub.generation());
            self.conns
                .deliver(&told, audience, &delivery.frame, None, limit);
            self.conns.finish_batch();
            self.settle_deliveries();
            return;
        }
        if delivery.offset > 0
            && let Some(some) = self
                .pubsub
                .held_back(delivery.topic.name(), delivery.offset)
        {
            // some subscribers got this message by recovery, or subscribed after it: the
            // others get it on their own, never batched with another set
            self.conns.finish_batch();
            let audience = Audience::of(&some, self.pubsub.generation());
            let frame = &delivery.frame;
            self.conns
                .deliver(&some, audience, frame, delivery.v2.as_ref(), limit);
            self.conns.finish_batch();
            self.settle_deliveries();
            return;
        }
        let Some(subscribers) = self.pubsub.subscribers(delivery.topic.name()) else {
            return;
        };
        let audience = Audience::of(subscribers, self.pubsub.generation());
        let frame = &delivery.frame;
        self.conns
            .deliver(subscribers, audience, frame, delivery.v2.as_ref(), limit);
        self.settle_deliveries();
    }

    /// Counts a fanout and deals with the subscribers it put over the outbox limit. A burst
    /// queued within one turn of the loop (a publisher's whole read, a full inbox) is not the
    /// subscriber's fault: what its socket takes is written now, and it is judged by what is
    /// left; one still over the limit is a slow consumer, closed with 1013.
    pub(super) fn settle_deliveries(&mut self) {
        let reached = self.conns.take_reached();
        if reached.is_empty() {
            return;
        }
        self.metrics.delivered(MessageKind::Text, reached.text);
        self.metrics.delivered(MessageKind::Binary, reached.binary);
        self.metrics.add(Counter::BytesOut, reached.bytes_out);
        if reached.deflate_before > 0 || reached.compressions > 0 {
            self.metrics
                .add(Counter::Compressions, reached.compressions);
            self.metrics
                .add(Counter::DeflateBytesIn, reached.deflate_before);
            self.metrics
                .add(Counter::DeflateBytesOut, reached.deflate_after);
        }
        let limit = self.node.config.limits.outbox_limit;
        for id in reached.over {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            // a write error is handled by the flush after
            if let Ok(done) = conn.outbox.flush(&mut conn.stream) {
                self.metrics.add(Counter::BytesOut, done.bytes as u64);
            }
            if conn.outbox.held_bytes() <= limit {
                continue;
            }
            self.metrics.inc(Counter::SlowConsumerCloses);
            conn.outbox.drop_unstarted();
            let reason = format!(
                "slow consumer: more than {} queued",
                wsgate_core::units::format_size(limit as u64)
            );
            self.close_session(id, CloseCode::TRY_AGAIN_LATER, &reason);
        }
    }

    /// Takes the deliveries other workers (and nodes) queued for this worker, a budget's worth.
    pub(super) fn take_inbox(&mut self) {
        let hub = self.node.hub.clone();
        let worker = self.pubsub.worker();
        hub.drain_at_most(worker, INBOX_BUDGET, |d| self.deliver(d));
    }

    /// Sends the held acknowledgements that may go now.
    pub(super) fn send_due_acks(&mut self) {
        for (id, ack) in self.pubsub.due_acks(self.now) {
            if self.conns.get(id).is_some_and(|c| c.is_open_session()) {
                self.send(id, message::ack_frame(ack));
            }
        }
    }

    /// Starts a close handshake from the server side: nothing more is delivered, and the peer
    /// has the close timeout to answer.
    pub(super) fn close_session(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let now = self.now;
        let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) else {
            return;
        };
        if !ws.protocol.close(code, reason, now) {
            return;
        }
        self.unsubscribe_all(id);
        self.transmit(id);
        self.schedule(id);
    }

    fn unsubscribe_all(&mut self, id: ConnId) {
        if let Some(ws) = self.conns.get_mut(id).and_then(|c| c.ws()) {
            self.pubsub.unsubscribe_all(id, &mut ws.subscriptions);
        }
    }

    /// Leaves the WebSocket phase: forgets the subscriptions, counts the session closed, and
    /// sends what is left.
    pub(super) fn end_session(&mut self, id: ConnId) {
        let close = self.node.config.timeouts.close_timeout;
        let now = self.now;
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Phase::Ws(ws) = &mut conn.phase else {
            return;
        };
        self.pubsub.unsubscribe_all(id, &mut ws.subscriptions);
        self.node.sessions.fetch_sub(1, Ordering::AcqRel);
        conn.finish(now, close);
    }
}

/// The largest message copied out of the worker's read buffer when it stays queued; a larger
/// echo keeps its slice (no copy) and counts as holding the whole buffer.
const COPY_OUT_MAX: usize = 8 << 10;

/// A message read from a buffer of `buffer` bytes (0: a buffer of the connection's own, sized
/// to its frames) that may stay queued: copied out when small or when it is not an echo (a
/// publish is copied once, not held by every subscriber); else kept, with the size it holds.
fn copy_out(payload: Bytes, buffer: usize, echo: bool) -> (Bytes, usize) {
    if buffer == 0 || (echo && payload.len() + MAX_HEADER_LEN <= COPY_MAX) {
        // the outbox copies a small echo itself
        (payload, 0)
    } else if payload.len() <= COPY_OUT_MAX || !echo {
        (Bytes::copy_from_slice(&payload), 0)
    } else {
        (payload, buffer)
    }
}
