//! A WebSocket session on this gateway: wsgate-core's protocol [`Session`] and what the two
//! endpoints make of its data messages.
//!
//! - `/echo` ([`SessionKind::Echo`]) sends every data message back as it came.
//! - `/ws` ([`SessionKind::PubSub`]) reads text messages as control messages and binary ones as
//!   publishes (the envelope of `shared/PROTOCOL.md`), under the session's token (what it may
//!   subscribe and publish to) and its publish rate.
//!
//! This room decides ([`Action`]); the worker acts (subscribes through pub/sub, publishes,
//! answers, closes).

use crate::auth::Grants;
use crate::limits::TokenBucket;
use crate::pubsub::Subscriptions;
use bytes::Bytes;
use std::borrow::Cow;
use std::time::Instant;
use wsgate_core::Error;
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::message::{self, Command, Recover};
use wsgate_core::session::Session;

/// What a WebSocket session does with the messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// `/echo`: every data message goes back.
    Echo,
    /// `/ws`: the pub/sub envelope.
    PubSub,
}

/// A data message of a session.
#[derive(Debug)]
pub(crate) enum Data {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// What sessions may do: the node's limits on subscribing and publishing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Topics one session may subscribe to.
    pub(crate) max_topics: usize,
    /// Publishes per second (0: no limit).
    pub(crate) publish_rate: u32,
    /// Publishes in a burst above the rate.
    pub(crate) publish_burst: u32,
}

/// What a pub/sub message asks the worker to do.
#[derive(Debug)]
pub(crate) enum Action<'a> {
    /// Subscribe the session to `topic` (allowed; it may already be), then acknowledge `id`.
    Subscribe {
        /// The topic.
        topic: Cow<'a, str>,
        /// The client's id, to acknowledge.
        id: Option<i64>,
        /// Where the client's stream of the topic stopped, on a topic with history: the
        /// messages after it come first.
        recover: Option<Recover<'a>>,
    },
    /// Unsubscribe the session from `topic`, then acknowledge `id`.
    Unsubscribe {
        /// The topic.
        topic: Cow<'a, str>,
        /// The client's id, to acknowledge.
        id: Option<i64>,
    },
    /// Publish `frame` (built once, for every subscriber) to `topic`, then acknowledge `id`.
    Publish {
        /// The topic.
        topic: Cow<'a, str>,
        /// The delivery frame.
        frame: OutFrame,
        /// The client's id, to acknowledge.
        id: Option<i64>,
    },
    /// Answer with an error message (the session goes on).
    Refuse {
        /// What was wrong.
        error: Error,
        /// The client's id, when it could be read.
        id: Option<i64>,
    },
    /// Answer with an error message, then close the session with 1008 for `reason`: it went
    /// on publishing over its rate through a whole burst's worth of refusals.
    RefuseAndClose {
        /// What was wrong.
        error: Error,
        /// The client's id.
        id: Option<i64>,
        /// The close reason.
        reason: String,
    },
}

/// A WebSocket session on this gateway.
#[derive(Debug)]
pub(crate) struct Ws {
    /// The WebSocket protocol: frames in, pings, pongs, the close handshake, its timers.
    pub(crate) protocol: Session,
    /// Echo or pub/sub.
    pub(crate) kind: SessionKind,
    /// The topics the session subscribes to.
    pub(crate) subscriptions: Subscriptions,
    /// What the session's token allows, when authentication is on.
    pub(crate) grants: Option<Box<Grants>>,
    /// Publishes allowed by the rate.
    publish_bucket: TokenBucket,
    /// Publishes refused in a row for going over the rate.
    refused_in_a_row: u32,
}

impl Ws {
    /// A session of `kind` over `protocol`, allowed what `grants` allow (when authentication
    /// is on); its credentials expire with them.
    pub(crate) fn new(
        mut protocol: Session,
        kind: SessionKind,
        grants: Option<Box<Grants>>,
        policy: &Policy,
        now: Instant,
    ) -> Ws {
        if let Some(g) = &grants {
            protocol.set_token_expiry(g.expires);
        }
        Ws {
            protocol,
            kind,
            subscriptions: Subscriptions::default(),
            grants,
            publish_bucket: TokenBucket::new(policy.publish_burst, now),
            refused_in_a_row: 0,
        }
    }

    /// On an echo session, the frame that sends `data` back (sharing its bytes); otherwise
    /// `data` again, for [`on_text`](Self::on_text) or [`on_binary`](Self::on_binary).
    pub(crate) fn echo(&self, data: Data) -> Result<OutFrame, Data> {
        match (self.kind, data) {
            (SessionKind::Echo, Data::Text(t)) => Ok(OutFrame::new(OpCode::Text, t)),
            (SessionKind::Echo, Data::Binary(b)) => Ok(OutFrame::new(OpCode::Binary, b)),
            (SessionKind::PubSub, data) => Err(data),
        }
    }

    /// A control message of a pub/sub session.
    pub(crate) fn on_text<'a>(
        &mut self,
        text: &'a [u8],
        policy: &Policy,
        now: Instant,
    ) -> Action<'a> {
        let msg = match message::parse_control(text) {
            Ok(msg) => msg,
            Err(bad) => {
                return Action::Refuse {
                    error: bad.error,
                    id: bad.id,
                };
            }
        };
        let id = msg.id;
        let recover = msg.recover;
        match msg.command {
            Command::Subscribe { topic } => match self.may_subscribe(&topic, policy) {
                Ok(()) => Action::Subscribe { topic, id, recover },
                Err(error) => Action::Refuse { error, id },
            },
            Command::Unsubscribe { topic } => Action::Unsubscribe { topic, id },
            Command::Publish { topic, data } => match self.may_publish(&topic, policy, now) {
                Ok(()) => Action::Publish {
                    frame: message::text_delivery(&topic, data),
                    topic,
                    id,
                },
                Err(refusal) => refusal.into_action(id),
            },
        }
    }

    /// A binary publish of a pub/sub session: its bytes go to subscribers unchanged.
    pub(crate) fn on_binary(
        &mut self,
        payload: Bytes,
        policy: &Policy,
        now: Instant,
    ) -> Action<'static> {
        let topic = match message::parse_binary_publish(&payload) {
            Ok(p) => p.topic.to_string(),
            Err(error) => return Action::Refuse { error, id: None },
        };
        match self.may_publish(&topic, policy, now) {
            Ok(()) => Action::Publish {
                topic: Cow::Owned(topic),
                frame: message::binary_delivery(payload),
                id: None,
            },
            Err(refusal) => refusal.into_action(None),
        }
    }

    /// Whether the session may subscribe to `topic`: its token allows it, and it is within
    /// the topics limit (a topic it already has is fine).
    fn may_subscribe(&self, topic: &str, policy: &Policy) -> Result<(), Error> {
        if self.subscriptions.contains(topic) {
            return Ok(());
        }
        if self
            .grants
            .as_ref()
            .is_some_and(|g| !g.may_subscribe(topic))
        {
            return Err(Error::Forbidden("subscribe to"));
        }
        if self.subscriptions.len() >= policy.max_topics {
            return Err(Error::TooManyTopics(policy.max_topics));
        }
        Ok(())
    }

    /// Whether the session may publish to `topic` now: its token allows the topic, and it is
    /// within its rate.
    fn may_publish(&mut self, topic: &str, policy: &Policy, now: Instant) -> Result<(), Refusal> {
        if self.grants.as_ref().is_some_and(|g| !g.may_publish(topic)) {
            return Err(Refusal::Forbidden);
        }
        // a token may grant its own rate (0: none), the burst growing with it
        let rate = self
            .grants
            .as_ref()
            .and_then(|g| g.publish_rate)
            .unwrap_or(policy.publish_rate);
        if rate == 0 {
            return Ok(());
        }
        let burst = policy.publish_burst.max(rate);
        if self.publish_bucket.take(rate, burst, now) {
            self.refused_in_a_row = 0;
            return Ok(());
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > burst {
            return Err(Refusal::PersistentlyOverRate(rate));
        }
        Err(Refusal::OverRate)
    }
}

/// Why a publish was refused.
enum Refusal {
    Forbidden,
    OverRate,
    PersistentlyOverRate(u32),
}

impl Refusal {
    fn into_action<'a>(self, id: Option<i64>) -> Action<'a> {
        match self {
            Refusal::Forbidden => Action::Refuse {
                error: Error::Forbidden("publish to"),
                id,
            },
            Refusal::OverRate => Action::Refuse {
                error: Error::RateLimited,
                id,
            },
            Refusal::PersistentlyOverRate(rate) => Action::RefuseAndClose {
                error: Error::RateLimited,
                id,
                reason: format!("publish rate over {rate}/s, persistently"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use wsgate_core::session::SessionConfig;

    fn policy(max_topics: usize, rate: u32) -> Policy {
        Policy {
            max_topics,
            publish_rate: rate,
            publish_burst: rate,
        }
    }

    fn ws(kind: SessionKind, p: &Policy, now: Instant) -> Ws {
        let protocol = Session::new(Arc::new(SessionConfig::default()), now);
        Ws::new(protocol, kind, None, p, now)
    }

    #[test]
    fn echo_sends_the_same_bytes_back_and_pubsub_does_not() {
        let now = Instant::now();
        let p = policy(8, 0);
        let payload = Bytes::from_static(b"hello");
        let frame = ws(SessionKind::Echo, &p, now)
            .echo(Data::Binary(payload.clone()))
            .unwrap();
        assert_eq!(frame.opcode(), OpCode::Binary);
        assert_eq!(frame.payload().as_ptr(), payload.as_ptr(), "not copied");
        assert!(
            ws(SessionKind::PubSub, &p, now)
                .echo(Data::Text(payload))
                .is_err()
        );
    }

    #[test]
    fn control_messages_become_actions() {
        let now = Instant::now();
        let p = policy(1, 0);
        let mut s = ws(SessionKind::PubSub, &p, now);
        let sub = s.on_text(br#"{"type":"subscribe","topic":"a","id":1}"#, &p, now);
        assert!(matches!(sub, Action::Subscribe { ref topic, id: Some(1), .. } if topic == "a"));
        let publish = s.on_text(br#"{"type":"publish","topic":"a","data":[1]}"#, &p, now);
        let Action::Publish { topic, frame, id } = publish else {
            panic!("{publish:?}")
        };
        assert_eq!((&*topic, id), ("a", None));
        assert_eq!(
            &frame.payload()[..],
            br#"{"type":"message","topic":"a","data":[1]}"#
        );
        let bad = s.on_text(b"{", &p, now);
        assert!(matches!(
            bad,
            Action::Refuse {
                error: Error::InvalidJson(_),
                ..
            }
        ));
    }

    #[test]
    fn the_topics_limit_counts_new_topics_only() {
        let now = Instant::now();
        let p = policy(1, 0);
        let node = crate::node::Node::for_tests(&[], 1);
        let mut pubsub = crate::pubsub::PubSub::<u32>::new(0, node.hub.clone());
        let mut s = ws(SessionKind::PubSub, &p, now);
        pubsub.subscribe(1, &mut s.subscriptions, "a");
        let again = s.on_text(br#"{"type":"subscribe","topic":"a","id":2}"#, &p, now);
        assert!(matches!(again, Action::Subscribe { .. }), "already has it");
        let more = s.on_text(br#"{"type":"subscribe","topic":"b","id":3}"#, &p, now);
        assert!(matches!(
            more,
            Action::Refuse {
                error: Error::TooManyTopics(1),
                id: Some(3)
            }
        ));
    }

    #[test]
    fn publishing_over_the_rate_is_refused_then_closed() {
        let t0 = Instant::now();
        let p = policy(8, 2);
        let mut s = ws(SessionKind::PubSub, &p, t0);
        let publish = |s: &mut Ws, at| s.on_binary(Bytes::from_static(b"\x01tx"), &p, at);
        assert!(matches!(publish(&mut s, t0), Action::Publish { .. }));
        assert!(matches!(publish(&mut s, t0), Action::Publish { .. }));
        for _ in 0..2 {
            assert!(matches!(
                publish(&mut s, t0),
                Action::Refuse {
                    error: Error::RateLimited,
                    ..
                }
            ));
        }
        assert!(matches!(publish(&mut s, t0), Action::RefuseAndClose { .. }));
        // a second later the rate has refilled the bucket
        assert!(matches!(
            publish(&mut s, t0 + Duration::from_secs(1)),
            Action::Publish { .. }
        ));
        let bad = s.on_binary(Bytes::from_static(b"\x05ab"), &p, t0);
        assert!(matches!(
            bad,
            Action::Refuse {
                error: Error::InvalidBinary(_),
                id: None
            }
        ));
    }
}
