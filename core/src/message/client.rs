//! The client's side: reading the gateway's text messages (deliveries, acks, errors, gap
//! notices), for the load generator and the tests.

use super::{RecoverFailure, Recovery, one_line};
use crate::{Error, Result};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A text message from the gateway, as a client reads it. Strings borrow from the frame unless
/// their JSON had escapes; `data` always does.
#[derive(Debug, Clone)]
pub enum ServerMessage<'a> {
    /// `{"type":"message","topic":"T","offset":N,"data":DATA}`, `offset` only on topics with
    /// history ([`text_delivery`](super::text_delivery), [`text_delivery_at`](super::text_delivery_at)).
    Message {
        /// The topic.
        topic: Cow<'a, str>,
        /// The message's offset in its topic, when the topic has history.
        offset: Option<u64>,
        /// `data`, the publisher's JSON text as the gateway sent it.
        data: &'a RawValue,
    },
    /// `{"type":"ack",...}`: [`ack_frame`](super::ack_frame) or
    /// [`subscribe_ack_frame`](super::subscribe_ack_frame).
    Ack(Ack<'a>),
    /// `{"type":"error","id":N,"code":"...","message":"..."}` ([`error_frame`](super::error_frame)).
    Error {
        /// The id of the message it answers, when that had one.
        id: Option<i64>,
        /// The machine-readable code ([`Error::code`]).
        code: Cow<'a, str>,
        /// The human-readable reason.
        message: Cow<'a, str>,
    },
    /// `{"type":"gap","topic":"T"}` ([`gap_frame`](super::gap_frame)).
    Gap {
        /// The topic whose stream may have a hole.
        topic: Cow<'a, str>,
    },
}

impl ServerMessage<'_> {
    /// The topic the message is about, when it names one.
    pub fn topic(&self) -> Option<&str> {
        match self {
            ServerMessage::Message { topic, .. } | ServerMessage::Gap { topic } => Some(topic),
            ServerMessage::Ack(ack) => ack.topic.as_deref(),
            ServerMessage::Error { .. } => None,
        }
    }
}

/// An ack as a client reads it: a plain `{"type":"ack","id":N}`, or the ack of a subscribe to a
/// topic with history with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The id of the message it answers, when that had one.
    pub id: Option<i64>,
    /// The topic subscribed to (acks of subscribes to topics with history).
    pub topic: Option<Cow<'a, str>>,
    /// The topic's offset when the subscription started.
    pub offset: Option<u64>,
    /// The topic's epoch.
    pub epoch: Option<Cow<'a, str>>,
    /// `recovered` and `reason`, when the subscribe asked to recover.
    pub recovery: Option<Recovery>,
}

/// Reads one text message from the gateway.
///
/// Unknown members are ignored (room for later fields, as the gateway does with clients').
/// Errors: [`Error::InvalidJson`] for text that is not JSON, or a member of the wrong type (an
/// `offset` that is not a `u64`, say) or repeated; [`Error::MissingField`] for a missing
/// `type`, or the `topic`, `data`, `code` or `message` its type requires;
/// [`Error::UnknownType`] for another `type`; [`Error::InvalidMessage`] for
/// `"recovered":false` without a `reason` the client knows ([`RecoverFailure`]).
pub fn parse_server_message(text: &[u8]) -> Result<ServerMessage<'_>> {
    let wire: Wire<'_> =
        serde_json::from_slice(text).map_err(|e| Error::InvalidJson(one_line(&e)))?;
    let Some(kind) = wire.kind else {
        return Err(Error::MissingField("type"));
    };
    Ok(match &*kind.0 {
        "message" => ServerMessage::Message {
            topic: required(wire.topic, "topic")?,
            offset: wire.offset,
            data: wire.data.ok_or(Error::MissingField("data"))?,
        },
        "ack" => {
            let recovery = match (wire.recovered, wire.reason) {
                (None, _) => None,
                (Some(true), _) => Some(Recovery::Recovered),
                (Some(false), reason) => {
                    let reason = reason.and_then(|r| RecoverFailure::from_name(&r.0)).ok_or(
                        Error::InvalidMessage("recovered:false without a known reason"),
                    )?;
                    Some(Recovery::Failed(reason))
                }
            };
            ServerMessage::Ack(Ack {
                id: wire.id,
                topic: wire.topic.map(|t| t.0),
                offset: wire.offset,
                epoch: wire.epoch.map(|e| e.0),
                recovery,
            })
        }
        "error" => ServerMessage::Error {
            id: wire.id,
            code: required(wire.code, "code")?,
            message: required(wire.message, "message")?,
        },
        "gap" => ServerMessage::Gap {
            topic: required(wire.topic, "topic")?,
        },
        _ => return Err(Error::UnknownType),
    })
}

/// Every member any server message has.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    id: Option<i64>,
    #[serde(borrow)]
    topic: Option<Text<'a>>,
    offset: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    recovered: Option<bool>,
    #[serde(borrow)]
    reason: Option<Text<'a>>,
    /// `Some` whenever the member is there, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<Text<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
}

/// A `data` member, `null` or not.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

/// A required string member.
fn required<'a>(member: Option<Text<'a>>, name: &'static str) -> Result<Cow<'a, str>> {
    member.map(|s| s.0).ok_or(Error::MissingField(name))
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::testing::*;
    use crate::message::{
        ack_frame, error_frame, gap_frame, subscribe_ack_frame, text_delivery, text_delivery_at,
    };
    use proptest::prelude::*;

    fn parse(frame: &crate::frame::OutFrame) -> ServerMessage<'_> {
        parse_server_message(frame.payload()).unwrap()
    }

    fn raw(data: &str) -> &RawValue {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn deliveries() {
        let data = raw(r#"{"a": [1, null]}"#);
        let frame = text_delivery_at("chat.1", u64::MAX, data);
        match parse(&frame) {
            ServerMessage::Message {
                topic,
                offset,
                data,
            } => {
                assert!(matches!(topic, Cow::Borrowed("chat.1")));
                assert_eq!(offset, Some(u64::MAX));
                assert_eq!(data.get(), r#"{"a": [1, null]}"#);
            }
            other => panic!("{other:?}"),
        }
        let frame = text_delivery("a\"b\\cé🎉", raw("null"));
        match parse(&frame) {
            ServerMessage::Message {
                topic,
                offset,
                data,
            } => {
                assert_eq!(topic, "a\"b\\cé🎉");
                assert!(matches!(topic, Cow::Owned(_)));
                assert_eq!(offset, None);
                assert_eq!(data.get(), "null");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&frame).topic(), Some("a\"b\\cé🎉"));
    }

    #[test]
    fn acks_errors_and_gaps() {
        let frame = ack_frame(-4);
        let ServerMessage::Ack(ack) = parse(&frame) else {
            panic!("ack")
        };
        assert_eq!(
            ack,
            Ack {
                id: Some(-4),
                topic: None,
                offset: None,
                epoch: None,
                recovery: None
            }
        );
        for recovery in [
            None,
            Some(Recovery::Recovered),
            Some(Recovery::Failed(RecoverFailure::Ahead)),
        ] {
            let frame = subscribe_ack_frame(None, "t\"", 0, "e\\1", recovery);
            let ServerMessage::Ack(ack) = parse(&frame) else {
                panic!("ack")
            };
            assert_eq!(
                ack,
                Ack {
                    id: None,
                    topic: Some("t\"".into()),
                    offset: Some(0),
                    epoch: Some("e\\1".into()),
                    recovery
                }
            );
        }
        let frame = error_frame(Some(2), &Error::InvalidRecover("missing epoch"));
        match parse(&frame) {
            ServerMessage::Error { id, code, message } => {
                assert_eq!(id, Some(2));
                assert_eq!(code, "invalid_recover");
                assert_eq!(message, "invalid \"recover\": missing epoch");
            }
            other => panic!("{other:?}"),
        }
        let frame = gap_frame("chat.1");
        assert!(matches!(
            parse(&frame),
            ServerMessage::Gap {
                topic: Cow::Borrowed("chat.1")
            }
        ));
        assert_eq!(parse(&frame).topic(), Some("chat.1"));
        assert_eq!(parse(&error_frame(None, &Error::UnknownType)).topic(), None);
    }

    #[test]
    fn what_clients_tolerate_and_refuse() {
        fn p(text: &str) -> Result<ServerMessage<'_>> {
            parse_server_message(text.as_bytes())
        }
        // Unknown members and any member order.
        assert!(matches!(
            p(r#"{"future":[1],"topic":"t","type":"gap"}"#),
            Ok(ServerMessage::Gap { .. })
        ));
        let Ok(ServerMessage::Ack(ack)) =
            p(r#"{"type":"ack","recovered":true,"reason":"epoch","x":{}}"#)
        else {
            panic!("ack")
        };
        assert_eq!(ack.recovery, Some(Recovery::Recovered));
        // data null is data.
        let Ok(ServerMessage::Message { data, .. }) =
            p(r#"{"type":"message","topic":"t","data":null}"#)
        else {
            panic!("message")
        };
        assert_eq!(data.get(), "null");
        for (text, error) in [
            (r#"{"topic":"t"}"#, Error::MissingField("type")),
            (
                r#"{"type":"message","data":1}"#,
                Error::MissingField("topic"),
            ),
            (
                r#"{"type":"message","topic":"t"}"#,
                Error::MissingField("data"),
            ),
            (r#"{"type":"gap"}"#, Error::MissingField("topic")),
            (
                r#"{"type":"error","message":"m"}"#,
                Error::MissingField("code"),
            ),
            (
                r#"{"type":"error","code":"c"}"#,
                Error::MissingField("message"),
            ),
            (r#"{"type":"subscribe","topic":"t"}"#, Error::UnknownType),
            (
                r#"{"type":"ack","recovered":false}"#,
                Error::InvalidMessage("recovered:false without a known reason"),
            ),
            (
                r#"{"type":"ack","recovered":false,"reason":"other"}"#,
                Error::InvalidMessage("recovered:false without a known reason"),
            ),
        ] {
            assert_eq!(p(text).unwrap_err(), error, "{text}");
        }
        for text in [
            "",
            "[]",
            "{",
            r#"{"type":1}"#,
            r#"{"type":"message","topic":"t","offset":-1,"data":1}"#,
            r#"{"type":"message","topic":"t","offset":1.5,"data":1}"#,
            r#"{"type":"message","topic":"t","offset":18446744073709551616,"data":1}"#,
            r#"{"type":"message","topic":"t","offset":"1","data":1}"#,
            r#"{"type":"message","topic":"t","topic":"u","data":1}"#,
            r#"{"type":"ack","recovered":"yes"}"#,
            r#"{"type":"gap","topic":"t"} {}"#,
        ] {
            assert!(matches!(p(text), Err(Error::InvalidJson(_))), "{text}");
        }
        assert!(matches!(
            parse_server_message(b"{\"type\":\"gap\",\"topic\":\"\xff\"}"),
            Err(Error::InvalidJson(_))
        ));
    }

    proptest! {
        #[test]
        fn what_the_gateway_builds_a_client_reads(
            topic in any::<String>(),
            epoch in any::<String>(),
            offset in any::<u64>(),
            id in proptest::option::of(any::<i64>()),
            recovery in proptest::option::of(prop_oneof![
                Just(Recovery::Recovered),
                proptest::sample::select(RecoverFailure::ALL.to_vec()).prop_map(Recovery::Failed),
            ]),
            value in json_value(),
        ) {
            let frame = subscribe_ack_frame(id, &topic, offset, &epoch, recovery);
            let ServerMessage::Ack(ack) = parse(&frame) else { panic!("ack") };
            prop_assert_eq!(ack, Ack {
                id,
                topic: Some(topic.as_str().into()),
                offset: Some(offset),
                epoch: Some(epoch.as_str().into()),
                recovery,
            });
            let data = serde_json::to_string(&value).unwrap();
            let frame = text_delivery_at(&topic, offset, raw(&data));
            let ServerMessage::Message { topic: t, offset: o, data: d } = parse(&frame) else {
                panic!("message")
            };
            prop_assert_eq!((&*t, o, d.get()), (&topic[..], Some(offset), &data[..]));
            let frame = gap_frame(&topic);
            let ServerMessage::Gap { topic: t } = parse(&frame) else { panic!("gap") };
            prop_assert_eq!(&*t, &topic[..]);
        }
    }
}
