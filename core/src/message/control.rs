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
}

impl<'a> ControlMessage<'a> {
    /// The topic the command names (already validated).
    pub fn topic(&self) -> &str {
        self.command.topic()
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
        let command = match kind {
            Kind::Subscribe => Command::Subscribe { topic },
            Kind::Unsubscribe => Command::Unsubscribe { topic },
            Kind::Publish => match self.data {
                Some(data) => Command::Publish { topic, data },
                None => return Err(fail(Error::MissingField("data"))),
            },
        };
        Ok(ControlMessage { id, command })
    }
}

/// The envelope's known keys.
enum Field {
    Type,
    Id,
    Topic,
    Data,
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
    Int(i64),
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
                Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
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
                Field::Other => {
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
