//! Acting on the HTTP room's answers: writing them, opening the session of an accepted
//! upgrade, reading and publishing a `POST /publish` body.

use super::Worker;
use crate::conn::{ConnId, Phase};
use crate::http::{self, Answer, Outcome, Upgrade};
use crate::metrics::Counter;
use crate::session::Ws;
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering;
use wsgate_core::close::CloseCode;
use wsgate_core::session::Session;

impl Worker {
    /// Reads a request head from the front of `buf` and does what the HTTP room answers.
    pub(super) fn read_request(&mut self, id: ConnId, buf: &mut BytesMut) {
        let node = self.node.clone();
        let (head_len, outcome) = match http::parse(buf, &node) {
            Ok(None) => return,
            Err(answer) => {
                buf.clear();
                return self.answer(id, answer);
            }
            Ok(Some(req)) => {
                let peer = match self.conns.get(id) {
                    Some(c) => c.peer.ip(),
                    None => return,
                };
                if node.config.proxy.trusts_forwarded_for(peer)
                    && let Err(answer) = self.attribute_forwarded(id, &req)
                {
                    buf.clear();
                    return self.answer(id, answer);
                }
                (req.head_len(), http::respond(&req, &node, self.now))
            }
        };
        buf.advance(head_len);
        match outcome {
            Outcome::Answer(answer) => {
                if !answer.keep_alive {
                    buf.clear();
                }
                self.answer(id, answer);
            }
            Outcome::Upgrade(upgrade) => self.open_session(id, upgrade),
            Outcome::Body(body) => {
                if let Some(conn) = self.conns.get_mut(id)
                    && let Phase::Request { deadline } = conn.phase
                {
                    conn.phase = Phase::Body {
                        body: Box::new(body),
                        deadline,
                    };
                }
            }
        }
    }

    /// Queues an answer; keeps the connection for the next request or ends it after.
    pub(super) fn answer(&mut self, id: ConnId, answer: Answer) {
        let timeouts = &self.node.config.timeouts;
        let (handshake, close) = (timeouts.handshake_timeout, timeouts.close_timeout);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if let Some(reason) = answer.refused {
            self.metrics.failure(reason);
            tracing::debug!(client = %conn.client, peer = %conn.peer, reason = reason.text(), "refused");
        }
        self.metrics.inc(Counter::HttpRequests);
        conn.outbox.push_raw(answer.response);
        let held = conn.outbox.held_bytes();
        if answer.keep_alive {
            conn.expect_request(self.now, handshake);
        } else {
            conn.finish(self.now, close);
        }
        self.conns.mark_dirty(id);
        self.schedule(id);
        self.pause_if_full(id, held);
    }

    /// Publishes the body of a `POST /publish` once it is all here, and answers.
    pub(super) fn read_body(&mut self, id: ConnId, buf: &mut BytesMut) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Phase::Body { body, .. } = &conn.phase else {
            return;
        };
        if buf.len() < body.len {
            return;
        }
        // answered below, which sets the phase that follows
        let placeholder = Phase::Request { deadline: self.now };
        let Phase::Body { body, .. } = std::mem::replace(&mut conn.phase, placeholder) else {
            unreachable!("matched above")
        };
        let bytes = buf.split_to(body.len);
        let answer = if self.pubsub.is_congested(&body.topic) {
            http::congested(body.keep_alive)
        } else {
            match http::publish_body(&body, &bytes) {
                Ok(frame) => {
                    let delivered = self.publish(&body.topic, frame, None);
                    http::published(delivered, body.keep_alive)
                }
                Err(refusal) => refusal,
            }
        };
        if !answer.keep_alive {
            buf.clear();
        }
        self.answer(id, answer);
    }

    /// Opens the WebSocket session of an accepted upgrade.
    fn open_session(&mut self, id: ConnId, upgrade: Upgrade) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.outbox.push_raw(upgrade.response);
        tracing::debug!(
            client = %conn.client,
            peer = %conn.peer,
            subject = upgrade.grants.as_ref().and_then(|g| g.subject.as_deref()),
            kind = ?upgrade.kind,
            "session opened"
        );
        let protocol = Session::new(self.node.session.clone(), self.now);
        let mut ws = Ws::new(
            protocol,
            upgrade.kind,
            upgrade.grants,
            &self.node.policy,
            self.now,
        );
        for topic in &upgrade.topics {
            // the query's topics were validated, allowed and counted by the HTTP room
            self.pubsub.subscribe(id, &mut ws.subscriptions, topic);
        }
        conn.phase = Phase::Ws(Box::new(ws));
        self.metrics.inc(Counter::UpgradesTotal);
        self.node.sessions.fetch_add(1, Ordering::AcqRel);
        self.conns.mark_dirty(id);
        self.schedule(id);
        if self.node.drain.get().closes_sessions() {
            self.close_session(id, CloseCode::GOING_AWAY, "server draining");
        }
    }
}
