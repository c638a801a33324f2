//! Acting on the HTTP room's answers: framing the requests, writing the answers, opening the
//! session of an accepted upgrade, reading and publishing a `POST /publish` body, throwing
//! every other body away.

use super::Worker;
use crate::conn::{Body, ConnId, Phase};
use crate::http::{self, Answer, Outcome, Upgrade};
use crate::metrics::Counter;
use crate::session::Ws;
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering;
use wsgate_core::close::CloseCode;
use wsgate_core::framing::Item;
use wsgate_core::session::Session;

impl Worker {
    /// Frames the bytes at the front of `buf` into requests and does what the HTTP room
    /// answers to each: a PROXY header first from a trusted proxy, then heads, each body read
    /// whole for a publish or thrown away for every other route.
    pub(super) fn read_http(&mut self, id: ConnId, buf: &mut BytesMut) {
        let node = self.node.clone();
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                buf.clear();
                return;
            };
            if !conn.may_read() {
                return;
            }
            let Phase::Http(h) = &mut conn.phase else {
                return; // an upgrade: the rest is the session's
            };
            let peer = h.peer.ip();
            if let Body::Publish(_) = h.body
                && (buf.len() as u64) < h.framer.body_remaining()
            {
                return; // a publish body is taken whole, once it is all here
            }
            if h.framer.at_request_boundary()
                && !node.config.proxy.expects_proxy_header(peer)
                && let Some(refusal) = http::untrusted_proxy_header(buf, &node)
            {
                buf.clear();
                return self.answer(id, refusal);
            }
            let item = match h.framer.next(buf) {
                Ok(None) => return,
                Ok(Some(item)) => item,
                Err(e) => {
                    buf.clear();
                    return self.answer(id, Answer::error(&e));
                }
            };
            match item {
                (Item::Proxy(header), used) => {
                    buf.advance(used);
                    if !self.admit_proxy_header(id, header) {
                        buf.clear();
                        return;
                    }
                }
                (Item::Head { request, body_len }, used) => {
                    if node.config.proxy.trusts_forwarded_for(peer)
                        && let Err(refusal) = self.attribute_forwarded(id, &request)
                    {
                        buf.clear();
                        return self.answer(id, refusal);
                    }
                    let tls = self.conns.get(id).is_some_and(|c| c.stream.is_tls());
                    let outcome = http::respond_on(&request, body_len, &node, self.now, tls);
                    buf.advance(used);
                    if !self.on_request(id, outcome, body_len, buf) {
                        return;
                    }
                }
                (Item::Body { bytes, last }, used) => {
                    let len = bytes.len();
                    debug_assert_eq!(len, used);
                    let body = buf.split_to(used).freeze();
                    if !self.on_body(id, body, last) {
                        return;
                    }
                }
            }
        }
    }

    /// Does what the HTTP room decided for a request whose body (`body_len` bytes) follows.
    /// Returns whether the connection goes on reading requests.
    fn on_request(
        &mut self,
        id: ConnId,
        outcome: Outcome,
        body_len: u64,
        buf: &mut BytesMut,
    ) -> bool {
        match outcome {
            Outcome::Answer(answer) => {
                let keep_alive = answer.keep_alive;
                if keep_alive && body_len > 0 {
                    self.set_body(id, Body::Discard);
                }
                self.answer(id, answer);
                if !keep_alive {
                    buf.clear();
                }
                keep_alive
            }
            Outcome::Upgrade(upgrade) => {
                // what follows is the session's (the HTTP room refused an upgrade with a body)
                self.open_session(id, upgrade);
                false
            }
            Outcome::Body(pending) if body_len == 0 => {
                self.set_body(id, Body::Publish(pending));
                self.on_body(id, bytes::Bytes::new(), true)
            }
            Outcome::Body(pending) => {
                self.set_body(id, Body::Publish(pending));
                true
            }
        }
    }

    fn set_body(&mut self, id: ConnId, body: Body) {
        if let Some(conn) = self.conns.get_mut(id)
            && let Phase::Http(h) = &mut conn.phase
        {
            h.body = body;
        }
    }

    /// A piece of the current request's body (`last`: it completes it): thrown away, or (a
    /// publish, whole) published and answered. Returns whether the connection goes on reading
    /// requests.
    fn on_body(&mut self, id: ConnId, bytes: bytes::Bytes, last: bool) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        let Phase::Http(h) = &mut conn.phase else {
            return false;
        };
        if !last {
            // only a discarded body comes in pieces: a publish waits for all of it
            return true;
        }
        let Body::Publish(body) = std::mem::replace(&mut h.body, Body::None) else {
            return true;
        };
        let answer = if self.pubsub.is_congested(&body.topic) {
            http::congested(body.keep_alive)
        } else {
            match http::publish_body(&body, &bytes) {
                Ok(frame) => match self.publish(&body.topic, frame, None, None) {
                    Some(p) => http::published(p.delivered, p.position, body.keep_alive),
                    None => http::unavailable(
                        "the topic's history is kept in redis, unreachable now; try again",
                        body.keep_alive,
                    ),
                },
                Err(refusal) => refusal,
            }
        };
        let keep_alive = answer.keep_alive;
        self.answer(id, answer);
        keep_alive
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
            tracing::debug!(client = %conn.client, peer = ?conn.peer(), reason = reason.text(), "refused");
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

    /// Opens the WebSocket session of an accepted upgrade.
    fn open_session(&mut self, id: ConnId, upgrade: Upgrade) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.outbox.push_raw(upgrade.response);
        tracing::debug!(
            client = %conn.client,
            peer = ?conn.peer(),
            subject = upgrade.grants.as_ref().and_then(|g| g.subject.as_deref()),
            kind = ?upgrade.kind,
            "session opened"
        );
        let config = match upgrade.deflate {
            None => &self.node.session,
            Some(agreed) => {
                self.metrics.inc(Counter::DeflateSessions);
                &self.node.session_deflate[usize::from(agreed.client_context_takeover)]
            }
        };
        conn.deflate = upgrade.deflate.is_some_and(|a| a.takes_shared_frames());
        conn.v2 = upgrade.v2;
        let protocol = Session::new(config.clone(), self.now);
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
        for topic in &upgrade.topics {
            // on a topic with history: messages from the next offset on
            self.join_history(id, topic, None, None, true);
        }
        self.metrics.inc(Counter::UpgradesTotal);
        self.node.sessions.fetch_add(1, Ordering::AcqRel);
        self.conns.mark_dirty(id);
        self.schedule(id);
        if self.node.drain.get().closes_sessions() {
            self.close_session(id, CloseCode::GOING_AWAY, "server draining");
        }
    }
}
