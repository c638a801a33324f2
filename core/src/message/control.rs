//! Control messages: the JSON text frames a client sends (see the parent module's rules).

use super::{error_frame, one_line, validate_topic};
use crate::frame::OutFrame;
use crate::{Error, Result};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A valid control message from a client's text frame, borrowing from the frame's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage<'a> {
    /// The client's `id`, when it gave one: the gateway answers with [`ack_frame`](super::ack_frame) (or
    /// [`error_frame`] when acting on the message fails).
    pub id: Option<i64>,
    /// What the client asks for.
    pub command: Command<'a>,
    /// The `recover` member of a subscribe: where the client's stream of the topic stopped.
    /// Always `None` for an unsubscribe or a publish (the member is ignored there), and for
    /// `"recover":null`.
    ///
    /// It lives here rather than in [`Command::Subscribe`] so that code matching
    /// `Command::Subscribe { topic }` keeps compiling.
    pub recover: Option<Recover<'a>>,
}

impl<'a> ControlMessage<'a> {
    /// The topic the command names (already validated).
    pub fn topic(&self) -> &str {
        self.command.topic()
    }
}

/// The longest epoch a client may send in `recover`, in bytes.
pub const MAX_EPOCH_LEN: usize = 64;

/// The `recover` member of a subscribe, `{"offset":O,"epoch":"E"}`: the client has seen the
/// messages of the topic up to offset `O` of epoch `E`, and asks for those published after.
///
/// `offset` is any integer from 0 to `u64::MAX`; `epoch` is 1 to [`MAX_EPOCH_LEN`] bytes,
/// compared byte for byte (it is only ever checked for equality with the topic's epoch, and
/// echoed JSON-escaped). The epoch borrows from the frame unless its JSON string had escapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recover<'a> {
    /// The offset of the last message the client has of the topic.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: Cow<'a, str>,
}

impl Recover<'_> {
    /// The same recovery, owning its epoch (to keep it past the frame's buffer).
    pub fn into_owned(self) -> Recover<'static> {
        Recover {
            offset: self.offset,
            epoch: Cow::Owned(self.epoch.into_owned()),
        }
    }
}

/// The three control messages. Topics are validated ([`validate_topic`]); they borrow from the
/// frame unless the JSON string had escapes. Equality compares `data` as text.
#[derive(Debug, Clone)]
pub enum Command<'a> {
    /// `{"type":"subscribe","topic":T}`.
    Subscribe {
        /// The topic.
        topic: Cow<'a, str>,
    },
    /// `{"type":"unsubscribe","topic":T}`.
    Unsubscribe {
        /// The topic.
        topic: Cow<'a, str>,
    },
    /// `{"type":"publish","topic":T,"data":D}`.
    Publish {
        /// The topic.
        topic: Cow<'a, str>,
        /// The publisher's JSON text for `data`, exactly as sent (without the whitespace
        /// around it); `null` is a value like any other. Hand it to [`text_delivery`](super::text_delivery).
        data: &'a RawValue,
    },
}

impl PartialEq for Command<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Command::*;
        match (self, other) {
            (Subscribe { topic: a }, Subscribe { topic: b }) => a == b,
            (Unsubscribe { topic: a }, Unsubscribe { topic: b }) => a == b,
            (Publish { topic: a, data: da }, Publish { topic: b, data: db }) => {
                a == b && da.get() == db.get()
            }
            _ => false,
        }
    }
}

impl Eq for Command<'_> {}

impl<'a> Command<'a> {
    /// The topic the command names.
    pub fn topic(&self) -> &str {
        match self {
            Command::Subscribe { topic }
            | Command::Unsubscribe { topic }
            | Command::Publish { topic, .. } => topic,
        }
    }
}

/// A control message that could not be accepted: the error to answer with and the client's id
/// when it could be read (see the module documentation for when it can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage {
    /// The id to echo in the error answer; `None` answers without an id.
    pub id: Option<i64>,
    /// What was wrong; an envelope error, which never closes the session.
    pub error: Error,
}

impl BadMessage {
    /// The `{"type":"error",...}` text frame answering this message.
    pub fn reply(&self) -> OutFrame {
        error_frame(self.id, &self.error)
    }
}

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for BadMessage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<BadMessage> for Error {
    fn from(bad: BadMessage) -> Error {
        bad.error
    }
}

/// Parses a control message from the bytes of a text frame.
///
/// The frame decoder has already checked UTF-8; it is checked again here (fast, with simdutf8)
/// because this crate has no `unsafe`. Bytes that are not UTF-8 are [`Error::InvalidJson`]. See
/// [`parse_control_str`].
pub fn parse_control(text: &[u8]) -> Result<ControlMessage<'_>, BadMessage> {
    match simdutf8::basic::from_utf8(text) {
        Ok(text) => parse_control_str(text),
        Err(_) => Err(BadMessage {
            id: None,
            error: Error::InvalidJson("text is not valid UTF-8".into()),
        }),
    }
}

/// Parses a control message from JSON text, by the rules of the module documentation.
pub fn parse_control_str(text: &str) -> Result<ControlMessage<'_>, BadMessage> {
    let mut partial = Partial::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_any(Envelope(&mut partial))
        .and_then(|()| de.end());
    if let Err(e) = parsed {
        // A text that ends in a digit may have been cut inside the id's number: `{"id":71`
        // could be the start of `{"id":712}`. Such an id is not trusted.
        let id = match partial.id {
            IdState::Valid(id) if !text.ends_with(|c: char| c.is_ascii_digit()) => Some(id),
            _ => None,
        };
        return Err(BadMessage {
            id,
            error: Error::InvalidJson(one_line(&e)),
        });
    }
    partial.finish()
}

/// What the `id` member looked like.
#[derive(Debug, Default, Clone, Copy)]
enum IdState {
    #[default]
    Absent,
    Valid(i64),
    Invalid,
    Duplicate,
}

/// The members of the envelope read so far. Filled while parsing, so the id survives a syntax
/// error later in the text.
#[derive(Default)]
struct Partial<'de> {
    object: bool,
    id: IdState,
    kind: Option<Scalar<'de>>,
    topic: Option<Scalar<'de>>,
    data: Option<&'de RawValue>,
    recover: Option<RecoverValue<'de>>,
    /// The message for the first repeated known key.
    duplicate: Option<&'static str>,
}

impl<'de> Partial<'de> {
    fn finish(self) -> Result<ControlMessage<'de>, BadMessage> {
        let bad = |id, error| BadMessage { id, error };
        if !self.object {
            return Err(bad(None, Error::InvalidMessage("not a JSON object")));
        }
        let id = match self.id {
            IdState::Absent => None,
            IdState::Valid(id) => Some(id),
            IdState::Invalid => return Err(bad(None, Error::InvalidId)),
            IdState::Duplicate => {
                return Err(bad(None, Error::InvalidMessage("duplicate field \"id\"")));
            }
        };
        let fail = |error| BadMessage { id, error };
        if let Some(why) = self.duplicate {
            return Err(fail(Error::InvalidMessage(why)));
        }
        let kind = match self.kind {
            None => return Err(fail(Error::MissingField("type"))),
            Some(Scalar::Str(kind)) => kind,
            Some(_) => return Err(fail(Error::InvalidMessage("\"type\" must be a string"))),
        };
        #[derive(Clone, Copy)]
        enum Kind {
            Subscribe,
            Unsubscribe,
            Publish,
        }
        let kind = match &*kind {
            "subscribe" => Kind::Subscribe,
            "unsubscribe" => Kind::Unsubscribe,
            "publish" => Kind::Publish,
            _ => return Err(fail(Error::UnknownType)),
        };
        let topic = match self.topic {
            None => return Err(fail(Error::MissingField("topic"))),
            Some(Scalar::Str(topic)) => topic,
            Some(_) => return Err(fail(Error::InvalidTopic("not a string"))),
        };
        validate_topic(&topic).map_err(fail)?;
        // `recover` counts on a subscribe only, like `data` on a publish.
        let recover = match (kind, self.recover) {
            (Kind::Subscribe, Some(RecoverValue::Object(members))) => {
                Some(members.finish().map_err(fail)?)
            }
            (Kind::Subscribe, Some(RecoverValue::NotObject)) => {
                return Err(fail(Error::InvalidRecover("not an object")));
            }
            _ => None,
        };
        let command = match kind {
            Kind::Subscribe => Command::Subscribe { topic },
            Kind::Unsubscribe => Command::Unsubscribe { topic },
            Kind::Publish => match self.data {
                Some(data) => Command::Publish { topic, data },
                None => return Err(fail(Error::MissingField("data"))),
            },
        };
        Ok(ControlMessage {
            id,
            command,
            recover,
        })
    }
}

/// The known keys of the envelope and of its `recover` member (each level ignores the keys
/// of the other, like every unknown key).
enum Field {
    Type,
    Id,
    Topic,
    Data,
    Recover,
    Offset,
    Epoch,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "type" => Field::Type,
                    "id" => Field::Id,
                    "topic" => Field::Topic,
                    "data" => Field::Data,
                    "recover" => Field::Recover,
                    "offset" => Field::Offset,
                    "epoch" => Field::Epoch,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// Any JSON value, reduced to what the envelope cares about. Deserialising one never fails on
/// a well-formed value, so a wrong type is reported by the envelope's rules, not serde's.
enum Scalar<'de> {
    Str(Cow<'de, str>),
    /// An integer in the `i64` range.
    Int(i64),
    /// An integer above `i64::MAX` (and at most `u64::MAX`).
    Big(u64),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(i64::try_from(v).map_or(Scalar::Big(v), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
                IgnoredAny::deserialize(d)?;
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// The `recover` member as read; checked by [`RecoverMembers::finish`] once the message is
/// known to be a subscribe.
enum RecoverValue<'de> {
    /// `null`: the same as no `recover`.
    Null,
    /// Anything but an object or `null`.
    NotObject,
    Object(RecoverMembers<'de>),
}

/// The members of a `recover` object.
#[derive(Default)]
struct RecoverMembers<'de> {
    offset: Option<Scalar<'de>>,
    epoch: Option<Scalar<'de>>,
    /// The message for the first repeated key.
    duplicate: Option<&'static str>,
}

impl<'de> RecoverMembers<'de> {
    fn finish(self) -> Result<Recover<'de>> {
        let invalid = Error::InvalidRecover;
        if let Some(why) = self.duplicate {
            return Err(invalid(why));
        }
        let offset = match self.offset {
            None => return Err(invalid("missing offset")),
            Some(Scalar::Int(n)) => u64::try_from(n).ok(),
            Some(Scalar::Big(n)) => Some(n),
            Some(_) => None,
        };
        let offset = offset.ok_or(invalid(
            "offset must be an integer from 0 to 18446744073709551615",
        ))?;
        let epoch = match self.epoch {
            None => return Err(invalid("missing epoch")),
            Some(Scalar::Str(epoch)) => epoch,
            Some(_) => return Err(invalid("epoch must be a string")),
        };
        if epoch.is_empty() {
            return Err(invalid("empty epoch"));
        }
        if epoch.len() > MAX_EPOCH_LEN {
            return Err(invalid("epoch longer than 64 bytes"));
        }
        Ok(Recover { offset, epoch })
    }
}

impl<'de> Deserialize<'de> for RecoverValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecoverValue<'de>, D::Error> {
        struct RecoverVisitor;
        impl<'de> Visitor<'de> for RecoverVisitor {
            type Value = RecoverValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = RecoverMembers::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let (slot, why) = match field {
                        Field::Offset => (&mut m.offset, "duplicate field \"offset\""),
                        Field::Epoch => (&mut m.epoch, "duplicate field \"epoch\""),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.replace(map.next_value()?).is_some() {
                        m.duplicate.get_or_insert(why);
                    }
                }
                Ok(RecoverValue::Object(m))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RecoverValue::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RecoverValue::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RecoverValue::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RecoverValue::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RecoverValue::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RecoverValue::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RecoverValue::NotObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RecoverValue::NotObject)
            }
        }
        d.deserialize_any(RecoverVisitor)
    }
}

/// The top-level visitor: records the envelope's members into a [`Partial`].
struct Envelope<'p, 'de>(&'p mut Partial<'de>);

impl<'de> Envelope<'_, 'de> {
    fn duplicate(&mut self, why: &'static str) {
        self.0.duplicate.get_or_insert(why);
    }
}

impl<'de> Visitor<'de> for Envelope<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.0.object = true;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Id => {
                    let value: Scalar<'de> = map.next_value()?;
                    self.0.id = match (self.0.id, value) {
                        (IdState::Absent, Scalar::Int(id)) => IdState::Valid(id),
                        (IdState::Absent, _) => IdState::Invalid,
                        _ => IdState::Duplicate,
                    };
                }
                Field::Type => {
                    let value = map.next_value()?;
                    if self.0.kind.replace(value).is_some() {
                        self.duplicate("duplicate field \"type\"");
                    }
                }
                Field::Topic => {
                    let value = map.next_value()?;
                    if self.0.topic.replace(value).is_some() {
                        self.duplicate("duplicate field \"topic\"");
                    }
                }
                Field::Data => {
                    let value: &'de RawValue = map.next_value()?;
                    if self.0.data.replace(value).is_some() {
                        self.duplicate("duplicate field \"data\"");
                    }
                }
                Field::Recover => {
                    let value = map.next_value()?;
                    if self.0.recover.replace(value).is_some() {
                        self.duplicate("duplicate field \"recover\"");
                    }
                }
                Field::Offset | Field::Epoch | Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    // Every other JSON value is accepted (and skipped) so that "JSON but not an object" can be
    // told apart from "not JSON".
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::testing::*;
    use crate::message::text_delivery;
    use proptest::prelude::*;
    use serde_json::Value;

    fn data_of<'a>(m: &ControlMessage<'a>) -> &'a str {
        match m.command {
            Command::Publish { data, .. } => data.get(),
            _ => panic!("not a publish: {m:?}"),
        }
    }

    // ---- control messages ----

    #[test]
    fn the_three_commands() {
        let m = ok(r#"{"type":"subscribe","topic":"news"}"#);
        assert_eq!(m.id, None);
        assert_eq!(
            m.command,
            Command::Subscribe {
                topic: "news".into()
            }
        );
        assert_eq!(m.topic(), "news");

        let m = ok(r#"{"type":"unsubscribe","topic":"news","id":-3}"#);
        assert_eq!(m.id, Some(-3));
        assert!(matches!(m.command, Command::Unsubscribe { .. }));

        let m = ok(r#"{"id":7,"type":"publish","topic":"news","data":{"a":[1,2]}}"#);
        assert_eq!(m.id, Some(7));
        assert_eq!(m.topic(), "news");
        assert_eq!(data_of(&m), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn topics_borrow_unless_escaped() {
        let m = ok(r#"{"type":"subscribe","topic":"plain"}"#);
        assert!(matches!(
            m.command,
            Command::Subscribe {
                topic: Cow::Borrowed("plain")
            }
        ));
        let m = ok(r#"{"type":"subscribe","topic":"a\u00e9"}"#);
        assert_eq!(m.topic(), "aé");
        assert!(matches!(
            m.command,
            Command::Subscribe {
                topic: Cow::Owned(_)
            }
        ));
        assert_eq!(
            ok(r#"{"type":"subscribe","topic":"a\"b\\c\/d"}"#).topic(),
            "a\"b\\c/d"
        );
        assert_eq!(
            ok(r#"{"type":"subscribe","topic":"\ud83c\udf89"}"#).topic(),
            "🎉"
        );
    }

    #[test]
    fn ids_are_i64() {
        assert_eq!(ok(r#"{"type":"subscribe","topic":"t","id":0}"#).id, Some(0));
        let max = format!(r#"{{"type":"subscribe","topic":"t","id":{}}}"#, i64::MAX);
        assert_eq!(ok(&max).id, Some(i64::MAX));
        let min = format!(r#"{{"type":"subscribe","topic":"t","id":{}}}"#, i64::MIN);
        assert_eq!(ok(&min).id, Some(i64::MIN));
        for bad in [
            "1.0",
            "1.5",
            "1e3",
            "-0.0",
            "\"1\"",
            "null",
            "true",
            "[1]",
            "{\"n\":1}",
            "9223372036854775808",
            "18446744073709551616",
            "-9223372036854775809",
        ] {
            let text = format!(r#"{{"type":"subscribe","topic":"t","id":{bad}}}"#);
            assert_eq!(
                err(&text),
                BadMessage {
                    id: None,
                    error: Error::InvalidId
                },
                "{text}"
            );
        }
        // An invalid id outranks every later rule.
        assert_eq!(err(r#"{"id":"x"}"#).error, Error::InvalidId);
    }

    #[test]
    fn publish_data_is_raw_and_verbatim() {
        for data in [
            "null",
            "true",
            "0",
            "-1.5e-300",
            "1e400",
            "123456789012345678901234567890",
            r#""""#,
            r#""caf\u00e9 \"q\" \\ \n \ud83c\udf89 é 🎉""#,
            r#"{"nested":{"deeper":[1,{"x":null}],"s":"\t"},"e":{}}"#,
            "[ 1 , 2 ,\n 3 ]",
            r#"{ "spaced" : [ ] }"#,
        ] {
            let text = format!(r#"{{"type":"publish","topic":"t","data":{data}}}"#);
            let m = ok(&text);
            assert_eq!(data_of(&m), data);
            let frame = text_delivery(
                m.topic(),
                match m.command {
                    Command::Publish { data, .. } => data,
                    _ => unreachable!(),
                },
            );
            let payload = &frame.payload()[..];
            assert!(
                payload.windows(data.len()).any(|w| w == data.as_bytes()),
                "payload holds the exact bytes of {data}"
            );
            assert_eq!(
                payload,
                format!(r#"{{"type":"message","topic":"t","data":{data}}}"#).as_bytes()
            );
        }
    }

    #[test]
    fn data_null_is_a_value_and_missing_data_is_not() {
        let m = ok(r#"{"type":"publish","topic":"t","data":null}"#);
        assert_eq!(data_of(&m), "null");
        assert_eq!(
            err(r#"{"type":"publish","topic":"t"}"#).error,
            Error::MissingField("data")
        );
        assert_eq!(
            err(r#"{"type":"publish","topic":"t","id":4}"#),
            BadMessage {
                id: Some(4),
                error: Error::MissingField("data")
            }
        );
        // data is ignored on subscribe and unsubscribe.
        assert!(
            ok(r#"{"type":"subscribe","topic":"t","data":[1]}"#)
                .id
                .is_none()
        );
    }

    #[test]
    fn deep_data_is_not_limited_by_depth() {
        let depth = 10_000;
        let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let text = format!(r#"{{"type":"publish","topic":"t","data":{data}}}"#);
        assert_eq!(data_of(&ok(&text)), data);
        // Nor in unknown fields.
        let text = format!(r#"{{"type":"subscribe","topic":"t","x":{data}}}"#);
        ok(&text);
    }

    #[test]
    fn whitespace_variants() {
        for text in [
            " {\"type\":\"publish\",\"topic\":\"t\",\"data\":[1, 2],\"id\":1}",
            "{ \"type\" : \"publish\" , \"topic\" : \"t\" , \"data\" : [1, 2] , \"id\" : 1 }",
            "\n\t{\r\n\"type\":\"publish\",\n\"topic\":\"t\",\n\"data\":\n\t[1, 2]\n,\"id\":1}\n\n",
            "{\"id\":1,\"data\":   [1, 2]   ,\"topic\":\"t\",\"type\":\"publish\"}   ",
        ] {
            let m = ok(text);
            assert_eq!(m.id, Some(1), "{text:?}");
            assert_eq!(data_of(&m), "[1, 2]", "{text:?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = ok(
            r#"{"type":"subscribe","topic":"t","v":2,"meta":{"a":[1,{"b":"c"}]},"extra":null,"extra":1}"#,
        );
        assert_eq!(m.topic(), "t");
        // Keys are compared after unescaping.
        let m = ok(r#"{"\u0074ype":"subscribe","top\u0069c":"t","\u0069d":5}"#);
        assert_eq!((m.topic(), m.id), ("t", Some(5)));
        // Keys are case-sensitive: "Type" is an unknown field.
        assert_eq!(
            err(r#"{"Type":"subscribe","topic":"t"}"#).error,
            Error::MissingField("type")
        );
    }

    #[test]
    fn not_json() {
        for text in [
            "",
            " ",
            "{",
            "{\"type\":",
            "{\"type\":\"subscribe\",\"topic\":\"t\"",
            "{\"type\":\"subscribe\",\"topic\":\"t\",}",
            "{'type':'subscribe'}",
            "nul",
            "{\"type\":\"subscribe\",\"topic\":\"t\"} x",
            "{\"type\":\"subscribe\",\"topic\":\"t\"}{}",
            "{\"type\":\"subscribe\",\"topic\":\"a\u{1}\"}",
            "{\"type\":\"subscribe\",\"topic\":\"\\ud800\"}",
            "{\"type\":\"publish\",\"topic\":\"t\",\"data\":[1,]}",
            "{\"type\":\"publish\",\"topic\":\"t\",\"data\":01}",
            "[1,2",
        ] {
            let bad = err(text);
            assert!(
                matches!(bad.error, Error::InvalidJson(_)),
                "{text:?}: {bad:?}"
            );
            assert_eq!(bad.id, None, "{text:?}");
            let why = bad.error.to_string();
            assert!(!why.contains('\n'), "{why}");
            assert!(why.starts_with("invalid JSON: "), "{why}");
        }
        assert_eq!(
            parse_control(b"{\"type\":\"subscribe\",\"topic\":\"\xff\"}").unwrap_err(),
            BadMessage {
                id: None,
                error: Error::InvalidJson("text is not valid UTF-8".into())
            }
        );
    }

    #[test]
    fn not_json_keeps_an_id_read_before_the_error() {
        for text in [
            r#"{"id":7,"type":"#,
            r#"{"id":7,"type":"subscribe","topic":"t"} trailing"#,
            r#"{"type":"publish","id":7,"topic":"t","data":[1,"#,
        ] {
            let bad = err(text);
            assert!(matches!(bad.error, Error::InvalidJson(_)), "{text}");
            assert_eq!(bad.id, Some(7), "{text}");
        }
        // An id that was not (completely) read is not used.
        assert_eq!(err(r#"{"id":7"#).id, None);
        assert_eq!(err(r#"{"id":7,"x":12"#).id, None);
        assert_eq!(err(r#"{"id":7 "#).id, Some(7));
        assert_eq!(err(r#"{"id":"7","type":"#).id, None);
    }

    #[test]
    fn not_an_object() {
        for text in [
            "[]",
            "[1,{\"type\":\"subscribe\"}]",
            "\"subscribe\"",
            "1",
            "null",
            "true",
        ] {
            assert_eq!(
                err(text),
                BadMessage {
                    id: None,
                    error: Error::InvalidMessage("not a JSON object")
                },
                "{text}"
            );
        }
    }

    #[test]
    fn type_rules_with_and_without_id() {
        let cases: [(&str, Error); 6] = [
            (r#""topic":"t""#, Error::MissingField("type")),
            (
                r#""type":1,"topic":"t""#,
                Error::InvalidMessage("\"type\" must be a string"),
            ),
            (
                r#""type":null,"topic":"t""#,
                Error::InvalidMessage("\"type\" must be a string"),
            ),
            (r#""type":"Subscribe","topic":"t""#, Error::UnknownType),
            (r#""type":"ack","topic":"t""#, Error::UnknownType),
            (r#""type":"","topic":"t""#, Error::UnknownType),
        ];
        check_with_and_without_id(&cases);
    }

    #[test]
    fn topic_rules_with_and_without_id() {
        let long = format!(r#""type":"subscribe","topic":"{}""#, "x".repeat(256));
        let cases: [(&str, Error); 7] = [
            (r#""type":"subscribe""#, Error::MissingField("topic")),
            (r#""type":"publish","data":1"#, Error::MissingField("topic")),
            (
                r#""type":"subscribe","topic":5"#,
                Error::InvalidTopic("not a string"),
            ),
            (
                r#""type":"subscribe","topic":null"#,
                Error::InvalidTopic("not a string"),
            ),
            (
                r#""type":"subscribe","topic":"""#,
                Error::InvalidTopic("empty"),
            ),
            (
                r#""type":"unsubscribe","topic":"a\nb""#,
                Error::InvalidTopic("contains a control character"),
            ),
            (&long, Error::InvalidTopic("longer than 255 bytes")),
        ];
        check_with_and_without_id(&cases);
        // An escaped control character is caught after unescaping.
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"a\u0085"}"#).error,
            Error::InvalidTopic("contains a control character")
        );
    }

    #[test]
    fn duplicate_keys() {
        let cases: [(&str, Error); 3] = [
            (
                r#""type":"subscribe","type":"publish","topic":"t""#,
                Error::InvalidMessage("duplicate field \"type\""),
            ),
            (
                r#""type":"subscribe","topic":"t","topic":"u""#,
                Error::InvalidMessage("duplicate field \"topic\""),
            ),
            (
                r#""type":"publish","topic":"t","data":1,"data":2"#,
                Error::InvalidMessage("duplicate field \"data\""),
            ),
        ];
        check_with_and_without_id(&cases);
        // A repeated id is ambiguous: answered without one.
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"t","id":1,"id":1}"#),
            BadMessage {
                id: None,
                error: Error::InvalidMessage("duplicate field \"id\"")
            }
        );
    }

    // ---- recover ----

    fn recover_of(text: &str) -> Option<Recover<'_>> {
        ok(text).recover
    }

    #[test]
    fn subscribe_with_recover() {
        let m = ok(
            r#"{"type":"subscribe","topic":"chat.1","id":9,"recover":{"offset":5,"epoch":"ab12"}}"#,
        );
        assert_eq!(m.id, Some(9));
        assert_eq!(m.topic(), "chat.1");
        assert_eq!(
            m.command,
            Command::Subscribe {
                topic: "chat.1".into()
            }
        );
        let r = m.recover.unwrap();
        assert_eq!(r.offset, 5);
        assert!(matches!(r.epoch, Cow::Borrowed("ab12")));
        // Any order, whitespace, unknown members inside and outside.
        let r = recover_of(
            " { \"recover\" : { \"x\" : [1,{}], \"epoch\" : \"e\" , \"offset\" : 0 , \"y\":null } ,\n\"topic\":\"t\",\"type\":\"subscribe\",\"z\":{\"offset\":\"no\"} } ",
        )
        .unwrap();
        assert_eq!((r.offset, &*r.epoch), (0, "e"));
        // The whole u64 range.
        for offset in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let text = format!(
                r#"{{"type":"subscribe","topic":"t","recover":{{"offset":{offset},"epoch":"e"}}}}"#
            );
            assert_eq!(recover_of(&text).unwrap().offset, offset, "{text}");
        }
        // Escaped epochs are unescaped (and owned); 64 bytes is the most.
        let r = recover_of(
            r#"{"type":"subscribe","topic":"t","recover":{"offset":1,"epoch":"a\"b\\c\u00e9\n"}}"#,
        )
        .unwrap();
        assert_eq!(r.epoch, "a\"b\\cé\n");
        assert!(matches!(r.epoch, Cow::Owned(_)));
        for epoch in [
            "x".repeat(64),
            "é".repeat(32),
            "🎉".repeat(16),
            "\u{1}".into(),
        ] {
            let text = format!(
                r#"{{"type":"subscribe","topic":"t","recover":{{"offset":1,"epoch":{}}}}}"#,
                serde_json::to_string(&epoch).unwrap()
            );
            assert_eq!(recover_of(&text).unwrap().epoch, epoch);
        }
        // into_owned keeps both fields.
        let text =
            r#"{"type":"subscribe","topic":"t","recover":{"offset":7,"epoch":"e1"}}"#.to_string();
        let owned: Recover<'static> = recover_of(&text).unwrap().into_owned();
        drop(text);
        assert_eq!(
            owned,
            Recover {
                offset: 7,
                epoch: "e1".into()
            }
        );
    }

    #[test]
    fn recover_absent_or_null_or_ignored() {
        assert_eq!(recover_of(r#"{"type":"subscribe","topic":"t"}"#), None);
        assert_eq!(
            recover_of(r#"{"type":"subscribe","topic":"t","recover":null}"#),
            None
        );
        assert_eq!(
            recover_of(r#"{"type":"subscribe","topic":"t","Recover":5}"#),
            None
        );
        // On an unsubscribe or a publish, recover is ignored, even a malformed one.
        for text in [
            r#"{"type":"unsubscribe","topic":"t","recover":{"offset":1,"epoch":"e"}}"#,
            r#"{"type":"unsubscribe","topic":"t","recover":5}"#,
            r#"{"type":"publish","topic":"t","data":1,"recover":{"offset":-1}}"#,
        ] {
            assert_eq!(recover_of(text), None, "{text}");
        }
        // offset and epoch at the top level are unknown members.
        assert_eq!(
            recover_of(r#"{"type":"subscribe","topic":"t","offset":1,"epoch":"e"}"#),
            None
        );
    }

    #[test]
    fn malformed_recover_with_and_without_id() {
        let sub = |recover: &str| format!(r#""type":"subscribe","topic":"t","recover":{recover}"#);
        let not_object = Error::InvalidRecover("not an object");
        let bad_offset =
            Error::InvalidRecover("offset must be an integer from 0 to 18446744073709551615");
        let mut cases: Vec<(String, Error)> = Vec::new();
        for value in [
            "5",
            "\"x\"",
            "true",
            "false",
            "[]",
            "[{\"offset\":1,\"epoch\":\"e\"}]",
            "-1.5",
        ] {
            cases.push((sub(value), not_object.clone()));
        }
        for offset in [
            "-1",
            "-9223372036854775808",
            "1.0",
            "1.5",
            "1e3",
            "-0.0",
            "18446744073709551616",
            "\"5\"",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            cases.push((
                sub(&format!(r#"{{"offset":{offset},"epoch":"e"}}"#)),
                bad_offset.clone(),
            ));
        }
        let long = "x".repeat(65);
        let long_multibyte = "é".repeat(33);
        for (recover, why) in [
            (r#"{}"#.to_string(), "missing offset"),
            (r#"{"epoch":"e"}"#.to_string(), "missing offset"),
            (r#"{"offset":1}"#.to_string(), "missing epoch"),
            (
                r#"{"offset":1,"epoch":null}"#.to_string(),
                "epoch must be a string",
            ),
            (
                r#"{"offset":1,"epoch":7}"#.to_string(),
                "epoch must be a string",
            ),
            (
                r#"{"offset":1,"epoch":["e"]}"#.to_string(),
                "epoch must be a string",
            ),
            (r#"{"offset":1,"epoch":""}"#.to_string(), "empty epoch"),
            (
                format!(r#"{{"offset":1,"epoch":"{long}"}}"#),
                "epoch longer than 64 bytes",
            ),
            (
                format!(r#"{{"offset":1,"epoch":"{long_multibyte}"}}"#),
                "epoch longer than 64 bytes",
            ),
            (
                r#"{"offset":1,"offset":1,"epoch":"e"}"#.to_string(),
                "duplicate field \"offset\"",
            ),
            (
                r#"{"offset":1,"epoch":"e","epoch":"e"}"#.to_string(),
                "duplicate field \"epoch\"",
            ),
            // A repeated key outranks the other rules.
            (
                r#"{"epoch":1,"epoch":2}"#.to_string(),
                "duplicate field \"epoch\"",
            ),
        ] {
            cases.push((sub(&recover), Error::InvalidRecover(why)));
        }
        // A repeated recover is ambiguous, like a repeated data.
        cases.push((
            format!("{},\"recover\":null", sub(r#"{"offset":1,"epoch":"e"}"#)),
            Error::InvalidMessage("duplicate field \"recover\""),
        ));
        let cases: Vec<(&str, Error)> = cases.iter().map(|(b, e)| (&b[..], e.clone())).collect();
        check_with_and_without_id(&cases);
        // A number serde_json cannot hold at all is a JSON error, as in an id.
        let huge = err(&format!("{{{}}}", sub(r#"{"offset":1e400,"epoch":"e"}"#)));
        assert!(matches!(huge.error, Error::InvalidJson(_)), "{huge:?}");
        // The answer names the problem.
        let reply = json_of(&err(&format!("{{\"id\":3,{}}}", sub("[]"))).reply());
        assert_eq!(
            reply,
            serde_json::json!({"type":"error","id":3,"code":"invalid_recover","message":"invalid \"recover\": not an object"})
        );
    }

    #[test]
    fn recover_rules_come_after_the_type_and_topic() {
        assert_eq!(
            err(r#"{"type":"subscribe","topic":"","recover":5}"#).error,
            Error::InvalidTopic("empty")
        );
        assert_eq!(
            err(r#"{"type":"subscribe","recover":5}"#).error,
            Error::MissingField("topic")
        );
        assert_eq!(
            err(r#"{"type":"sub","topic":"t","recover":5}"#).error,
            Error::UnknownType
        );
        assert_eq!(
            err(r#"{"id":"x","type":"subscribe","topic":"t","recover":5}"#).error,
            Error::InvalidId
        );
        // A syntax error inside recover is a syntax error, with the id read before it.
        let bad = err(r#"{"id":4,"type":"subscribe","topic":"t","recover":{"offset":1,}}"#);
        assert!(matches!(bad.error, Error::InvalidJson(_)), "{bad:?}");
        assert_eq!(bad.id, Some(4));
        // Deep nesting inside recover's unknown members is not limited.
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let text = format!(
            r#"{{"type":"subscribe","topic":"t","recover":{{"x":{deep},"offset":2,"epoch":"e"}}}}"#
        );
        assert_eq!(recover_of(&text).unwrap().offset, 2);
    }

    proptest! {
        #[test]
        fn recover_round_trips(
            topic in topic(),
            offset in any::<u64>(),
            epoch in "\\PC{1,64}".prop_filter("fits", |e| e.len() <= MAX_EPOCH_LEN),
            id in proptest::option::of(any::<i64>()),
        ) {
            let mut v = serde_json::json!({
                "type": "subscribe",
                "topic": topic,
                "recover": {"offset": offset, "epoch": epoch},
            });
            if let Some(id) = id {
                v["id"] = id.into();
            }
            let text = v.to_string();
            let m = parse_control_str(&text).unwrap();
            prop_assert_eq!(m.id, id);
            prop_assert_eq!(m.topic(), &topic[..]);
            prop_assert_eq!(m.recover, Some(Recover { offset, epoch: epoch.into() }));
        }
    }

    /// Each body (the members without braces) fails with the error, without an id, and with
    /// one (placed first and last).
    fn check_with_and_without_id(cases: &[(&str, Error)]) {
        for (body, error) in cases {
            let bare = format!("{{{body}}}");
            assert_eq!(
                err(&bare),
                BadMessage {
                    id: None,
                    error: error.clone()
                },
                "{bare}"
            );
            for text in [
                format!("{{\"id\":42,{body}}}"),
                format!("{{{body},\"id\":42}}"),
            ] {
                let bad = err(&text);
                assert_eq!(
                    bad,
                    BadMessage {
                        id: Some(42),
                        error: error.clone()
                    },
                    "{text}"
                );
                let reply = json_of(&bad.reply());
                assert_eq!(reply["id"], 42);
                assert_eq!(reply["code"], error.code());
            }
        }
    }

    proptest! {
        #[test]
        fn control_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_control(&bytes);
        }

        #[test]
        fn control_parser_never_panics_on_json_like_text(
            text in "[{}\\[\\]\":,a-z0-9 .\\\\eE+-]{0,80}",
            prefix in prop_oneof![
                Just(""),
                Just("{\"type\":\"publish\",\"topic\":\"t\","),
                Just("{\"id\":1,"),
            ],
        ) {
            let text = format!("{prefix}{text}");
            if let Err(bad) = parse_control_str(&text) {
                // Every error answer is valid JSON.
                let reply: Value = serde_json::from_slice(bad.reply().payload()).unwrap();
                prop_assert_eq!(&reply["code"], bad.error.code());
            }
        }


        #[test]
        fn publish_round_trips(
            topic in topic(),
            value in json_value(),
            pretty in any::<bool>(),
            id in proptest::option::of(any::<i64>()),
        ) {
            let data = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let id_member = id.map(|id| format!("\"id\":{id},")).unwrap_or_default();
            let text = format!(
                "{{{id_member}\"type\":\"publish\",\"topic\":{},\"data\":{data}}}",
                serde_json::to_string(&topic).unwrap()
            );
            let m = parse_control_str(&text).unwrap();
            prop_assert_eq!(m.id, id);
            prop_assert_eq!(m.topic(), &topic[..]);
            let Command::Publish { data: raw, .. } = m.command else { panic!("publish") };
            prop_assert_eq!(raw.get(), &data[..]);

            let frame = text_delivery(&topic, raw);
            let payload = text_of(&frame);
            #[derive(serde::Deserialize)]
            struct Delivery<'a> {
                r#type: &'a str,
                topic: String,
                #[serde(borrow)]
                data: &'a RawValue,
            }
            let d: Delivery<'_> = serde_json::from_str(&payload).unwrap();
            prop_assert_eq!(d.r#type, "message");
            prop_assert_eq!(&d.topic, &topic);
            prop_assert_eq!(d.data.get(), &data[..]);
        }
    }
}
