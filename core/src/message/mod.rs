//! The pub/sub envelope of the `/ws` endpoint (shared/PROTOCOL.md, "The pub/sub session").
//!
//! **Text frames** from a client are JSON control messages, one object per message:
//!
//! ```text
//! {"type":"subscribe","topic":"T"}
//! {"type":"unsubscribe","topic":"T"}
//! {"type":"publish","topic":"T","data":ANY_JSON}
//! ```
//!
//! each with an optional `"id":N` (an integer that fits an `i64`). [`parse_control`] turns one
//! into a [`ControlMessage`] that borrows from the frame: the topic when it has no escapes, and
//! `data` always, as the publisher's raw JSON text ([`RawValue`]), never re-serialised. A bad
//! message is a [`BadMessage`]: the [`Error`] plus the id when it could be read, so the answer
//! ([`error_frame`], or [`BadMessage::reply`]) carries the id exactly when the protocol says so.
//! A good one is answered with [`ack_frame`] when it has an id.
//!
//! A text publish is delivered to every subscriber as `{"type":"message","topic":"T","data":…}`
//! built once by [`text_delivery`]: one allocation, `data` copied verbatim, the returned
//! [`OutFrame`] cloned per subscriber by reference.
//!
//! **Binary frames** are publishes laid out as `[L][topic: L bytes][payload]` with `L` in
//! 1..=255. [`parse_binary_publish`] reads the topic; [`binary_delivery`] turns the very same
//! bytes into the outgoing binary frame without a copy.
//!
//! **HTTP**: `POST /publish/{topic}` bodies become deliveries through [`json_body_delivery`]
//! (`application/json`) or [`binary_body_delivery`] (anything else); [`decode_topic_path`]
//! decodes the `{topic}` path segment. `GET /ws?subscribe=T1,T2` is read by
//! [`parse_subscribe_query`].
//!
//! **Topics** ([`validate_topic`]): 1 to [`MAX_TOPIC_LEN`] bytes of UTF-8, no control characters
//! (C0, DEL, C1), compared byte for byte (no case folding, no Unicode normalisation).
//!
//! # Parsing rules, in order of precedence
//!
//! 1. The text must be one JSON value and nothing else but whitespace: otherwise
//!    [`Error::InvalidJson`] with serde_json's one-line reason. Nesting inside `data` (and inside
//!    unknown fields) is not limited by depth; only the message size limit bounds it.
//! 2. The value must be an object: otherwise [`Error::InvalidMessage`].
//! 3. `id`, when present, must be an integer in the `i64` range (not a float such as `1.0`,
//!    not a string, not `null`, not 2^63 or more): otherwise [`Error::InvalidId`], answered
//!    without an id. A repeated `id` key is [`Error::InvalidMessage`], also without an id.
//! 4. A repeated `type`, `topic` or `data` key is [`Error::InvalidMessage`] (serde_json itself
//!    would keep the last one; a gateway that silently picked one could be fooled). Repeated
//!    unknown keys are ignored like every unknown key (room for later fields).
//! 5. `type` missing: [`Error::MissingField`]`("type")`; not a string:
//!    [`Error::InvalidMessage`]; not one of the three names (case-sensitive):
//!    [`Error::UnknownType`].
//! 6. `topic` missing: [`Error::MissingField`]`("topic")`; not a string or breaking the topic
//!    rules: [`Error::InvalidTopic`].
//! 7. A publish without `data`: [`Error::MissingField`]`("data")`. `"data":null` is a valid
//!    publish of `null`. `data` on a subscribe or unsubscribe is ignored.
//!
//! From rule 3 on, the error carries the id. A text that is not JSON carries the id too when a
//! valid `id` member was read completely before the syntax error (`{"id":7,"type":` → the error
//! has id 7), since the client can then match the answer, unless the text ends in a digit (it
//! may have been cut inside the id: `{"id":71` could be the start of `{"id":712}`).
//!
//! Keys are compared after unescaping (`"\u0074ype"` is `type`). Field order does not matter.

use crate::frame::{OpCode, OutFrame};
use crate::{Error, Result};
use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// The longest topic name, in bytes of UTF-8.
pub const MAX_TOPIC_LEN: usize = 255;

/// Checks a topic name: 1 to [`MAX_TOPIC_LEN`] bytes, no control character (`char::is_control`:
/// U+0000-U+001F, U+007F, U+0080-U+009F).
///
/// Errors: [`Error::InvalidTopic`] with `"empty"`, `"longer than 255 bytes"` or
/// `"contains a control character"`.
pub fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::InvalidTopic("empty"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Error::InvalidTopic("longer than 255 bytes"));
    }
    if topic.chars().any(char::is_control) {
        return Err(Error::InvalidTopic("contains a control character"));
    }
    Ok(())
}

// ---- control messages -------------------------------------------------------------------

/// A valid control message from a client's text frame, borrowing from the frame's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage<'a> {
    /// The client's `id`, when it gave one: the gateway answers with [`ack_frame`] (or
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
        /// around it); `null` is a value like any other. Hand it to [`text_delivery`].
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

/// serde_json's reason, kept on one line (it always is; this is belt and braces).
fn one_line(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if s.contains(['\n', '\r']) {
        s = s.replace(['\n', '\r'], " ");
    }
    s
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

// ---- answers ----------------------------------------------------------------------------

/// The text frame `{"type":"ack","id":N}`.
pub fn ack_frame(id: i64) -> OutFrame {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(br#"{"type":"ack","id":"#);
    push_i64(&mut v, id);
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// The text frame `{"type":"error","id":N,"code":"...","message":"..."}`, without the `id`
/// member when `id` is `None`. `code` is [`Error::code`], `message` the error's `Display`, both
/// JSON-escaped.
pub fn error_frame(id: Option<i64>, error: &Error) -> OutFrame {
    let mut v = Vec::with_capacity(128);
    v.extend_from_slice(br#"{"type":"error","#);
    if let Some(id) = id {
        v.extend_from_slice(br#""id":"#);
        push_i64(&mut v, id);
        v.push(b',');
    }
    v.extend_from_slice(br#""code":"#);
    push_json_string(&mut v, error.code());
    v.extend_from_slice(br#","message":"#);
    push_json_string(&mut v, &error.to_string());
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

fn push_i64(v: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    // Writing into a Vec never fails.
    let _ = write!(v, "{n}");
}

// ---- deliveries -------------------------------------------------------------------------

const DELIVERY_HEAD: &[u8] = br#"{"type":"message","topic":"#;
const DELIVERY_MID: &[u8] = br#","data":"#;

/// The text frame `{"type":"message","topic":"T","data":DATA}` delivered to every subscriber of
/// a text publish: `topic` JSON-escaped, `data` the publisher's text verbatim.
///
/// The payload is allocated once, at its exact size; clone the returned frame per subscriber
/// (a reference count). `topic` should already be valid (it comes from a parsed message);
/// whatever it holds, the payload is valid JSON.
pub fn text_delivery(topic: &str, data: &RawValue) -> OutFrame {
    text_delivery_raw(topic, data.get())
}

/// [`text_delivery`] over JSON text the caller has validated.
fn text_delivery_raw(topic: &str, data: &str) -> OutFrame {
    // A valid topic has no control characters, so escaping at most doubles it (`"` and `\`):
    // with the quotes, this capacity is never exceeded and the payload is allocated once.
    let cap = DELIVERY_HEAD.len() + 2 * topic.len() + 2 + DELIVERY_MID.len() + data.len() + 1;
    let mut v = Vec::with_capacity(cap);
    v.extend_from_slice(DELIVERY_HEAD);
    push_json_string(&mut v, topic);
    v.extend_from_slice(DELIVERY_MID);
    v.extend_from_slice(data.as_bytes());
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// The text delivery of a `POST /publish/{topic}` with `Content-Type: application/json`.
///
/// The body must be UTF-8 and exactly one JSON value (any value, not only objects), else
/// [`Error::InvalidJson`]; the topic must be valid, else [`Error::InvalidTopic`]. `data` is
/// the body verbatim except that JSON whitespace (space, tab, CR, LF) before and after the value
/// is trimmed, so a body ending in a newline (as `curl -d @file` sends) delivers cleanly.
pub fn json_body_delivery(topic: &str, body: &[u8]) -> Result<OutFrame> {
    validate_topic(topic)?;
    let text = simdutf8::basic::from_utf8(body)
        .map_err(|_| Error::InvalidJson("body is not valid UTF-8".into()))?;
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| Error::InvalidJson(one_line(&e)))?;
    Ok(text_delivery_raw(topic, raw.get()))
}

/// The binary delivery of a `POST /publish/{topic}` with any other content type: the binary
/// publish layout `[L][topic][body]`, built in one allocation. Validates the topic.
pub fn binary_body_delivery(topic: &str, body: &[u8]) -> Result<OutFrame> {
    validate_topic(topic)?;
    let len =
        u8::try_from(topic.len()).map_err(|_| Error::InvalidTopic("longer than 255 bytes"))?;
    let mut v = Vec::with_capacity(1 + topic.len() + body.len());
    v.push(len);
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(body);
    Ok(OutFrame::new(OpCode::Binary, Bytes::from(v)))
}

/// A binary publish read from a client's binary message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryPublish<'a> {
    /// The topic, validated.
    pub topic: &'a str,
    /// The payload after the topic; may be empty.
    pub payload: &'a [u8],
}

impl BinaryPublish<'_> {
    /// Where the payload starts in the message: `1 + L`.
    pub fn payload_offset(&self) -> usize {
        1 + self.topic.len()
    }
}

/// Reads a binary publish: byte 0 is the topic length `L` (1..=255), bytes 1..=L the topic,
/// the rest the payload (possibly empty).
///
/// Errors: [`Error::InvalidBinary`] for an empty message, `L` = 0, or a message shorter than
/// `1 + L`; [`Error::InvalidTopic`] for a topic that is not UTF-8 or breaks the topic rules.
pub fn parse_binary_publish(message: &[u8]) -> Result<BinaryPublish<'_>> {
    let Some((&len, rest)) = message.split_first() else {
        return Err(Error::InvalidBinary("empty message"));
    };
    if len == 0 {
        return Err(Error::InvalidBinary("topic length is 0"));
    }
    let Some((topic, payload)) = rest.split_at_checked(usize::from(len)) else {
        return Err(Error::InvalidBinary("shorter than its topic length"));
    };
    let topic =
        simdutf8::basic::from_utf8(topic).map_err(|_| Error::InvalidTopic("not valid UTF-8"))?;
    validate_topic(topic)?;
    Ok(BinaryPublish { topic, payload })
}

/// The binary frame delivered to subscribers of a binary publish: the publisher's message
/// bytes, unchanged and not copied (the frame shares `message`).
pub fn binary_delivery(message: Bytes) -> OutFrame {
    OutFrame::new(OpCode::Binary, message)
}

// ---- URLs -------------------------------------------------------------------------------

/// The topics of `GET /ws?subscribe=T1,T2`, in order, without duplicates.
///
/// `query` is the request target's query (after `?`; a leading `?` is tolerated). It is split
/// on `&` and each pair at its first `=`; keys are form-decoded and only `subscribe` counts
/// (other parameters are ignored; `subscribe` may appear several times, its lists are joined).
/// Each value is split on literal commas **before** decoding, so a comma inside a topic is
/// written `%2C`; each item is then form-decoded: `%XX` is a byte, `+` is a space (write `%2B`
/// for a plus), a `%` not followed by two hex digits stays as it is. Decoded items must be UTF-8
/// (no lossy replacement) and valid topics ([`Error::InvalidTopic`]). Empty items are skipped.
///
/// More than `max_topics` distinct topics is [`Error::TooManyTopics`].
pub fn parse_subscribe_query(query: &str, max_topics: usize) -> Result<Vec<String>> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut topics = Vec::new();
    let mut seen = HashSet::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key.as_bytes(), true) != b"subscribe" {
            continue;
        }
        for item in value.split(',').filter(|item| !item.is_empty()) {
            let topic = String::from_utf8(percent_decode(item.as_bytes(), true))
                .map_err(|_| Error::InvalidTopic("not valid UTF-8"))?;
            validate_topic(&topic)?;
            if seen.contains(&topic) {
                continue;
            }
            if topics.len() >= max_topics {
                return Err(Error::TooManyTopics(max_topics));
            }
            seen.insert(topic.clone());
            topics.push(topic);
        }
    }
    Ok(topics)
}

/// Decodes the `{topic}` segment of `POST /publish/{topic}`: percent-decoding (`+` stays a
/// plus, as in any path), then UTF-8 and [`validate_topic`] ([`Error::InvalidTopic`]).
pub fn decode_topic_path(segment: &str) -> Result<String> {
    let topic = String::from_utf8(percent_decode(segment.as_bytes(), false))
        .map_err(|_| Error::InvalidTopic("not valid UTF-8"))?;
    validate_topic(&topic)?;
    Ok(topic)
}

/// Percent-decoding as WHATWG URL does it (`%XX` with two hex digits is that byte, any other
/// `%` is kept), with `+` as a space first when `plus_as_space` (form encoding; a literal plus is
/// `%2B`, which is decoded after the replacement and so survives).
fn percent_decode(input: &[u8], plus_as_space: bool) -> Vec<u8> {
    if plus_as_space && input.contains(&b'+') {
        let spaced: Vec<u8> = input
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        return percent_encoding::percent_decode(&spaced).collect();
    }
    percent_encoding::percent_decode(input).collect()
}

// ---- JSON strings -------------------------------------------------------------------------

/// Appends `s` as a JSON string (quoted and escaped by serde_json).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DecoderConfig, Message, MessageDecoder};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Decodes `frame` as a client would; asserts it is one whole, valid server frame.
    fn decode(frame: &OutFrame) -> Message {
        let mut buf = BytesMut::from(&frame.to_vec()[..]);
        let mut decoder = MessageDecoder::new(DecoderConfig::client());
        let message = decoder
            .decode(&mut buf)
            .expect("valid frame")
            .expect("whole");
        assert!(buf.is_empty(), "header length matches the payload");
        message
    }

    fn text_of(frame: &OutFrame) -> String {
        match decode(frame) {
            Message::Text(b) => {
                assert_eq!(&b[..], &frame.payload()[..]);
                String::from_utf8(b.to_vec()).expect("UTF-8")
            }
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn json_of(frame: &OutFrame) -> Value {
        serde_json::from_str(&text_of(frame)).expect("valid JSON")
    }

    fn ok(text: &str) -> ControlMessage<'_> {
        parse_control(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    fn err(text: &str) -> BadMessage {
        match parse_control(text.as_bytes()) {
            Ok(m) => panic!("{text}: accepted as {m:?}"),
            Err(e) => e,
        }
    }

    fn data_of<'a>(m: &ControlMessage<'a>) -> &'a str {
        match m.command {
            Command::Publish { data, .. } => data.get(),
            _ => panic!("not a publish: {m:?}"),
        }
    }

    // ---- topics ----

    #[test]
    fn topic_rules() {
        assert!(validate_topic("a").is_ok());
        assert!(validate_topic("chat/room-1 é 🎉").is_ok());
        assert!(validate_topic(&"x".repeat(255)).is_ok());
        assert!(validate_topic(&"é".repeat(127)).is_ok()); // 254 bytes
        assert_eq!(validate_topic(""), Err(Error::InvalidTopic("empty")));
        assert_eq!(
            validate_topic(&"x".repeat(256)),
            Err(Error::InvalidTopic("longer than 255 bytes"))
        );
        assert_eq!(
            validate_topic(&"é".repeat(128)),
            Err(Error::InvalidTopic("longer than 255 bytes"))
        );
        for bad in ["a\0", "a\nb", "\t", "a\u{7f}", "a\u{80}", "a\u{9f}b"] {
            assert_eq!(
                validate_topic(bad),
                Err(Error::InvalidTopic("contains a control character")),
                "{bad:?}"
            );
        }
        // Format characters are not control characters.
        assert!(validate_topic("a\u{200b}b\u{a0}").is_ok());
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

    // ---- answers ----

    #[test]
    fn ack_frames() {
        for id in [0, 1, -1, i64::MAX, i64::MIN] {
            let frame = ack_frame(id);
            assert_eq!(text_of(&frame), format!(r#"{{"type":"ack","id":{id}}}"#));
            assert_eq!(json_of(&frame), serde_json::json!({"type":"ack","id":id}));
        }
    }

    #[test]
    fn error_frames() {
        let frame = error_frame(Some(3), &Error::UnknownType);
        assert_eq!(
            text_of(&frame),
            r#"{"type":"error","id":3,"code":"unknown_type","message":"unknown message type"}"#
        );
        let frame = error_frame(None, &Error::MissingField("topic"));
        assert_eq!(
            text_of(&frame),
            r#"{"type":"error","code":"missing_field","message":"missing field \"topic\""}"#
        );
        // A reason with quotes, backslashes and control characters is escaped properly.
        let nasty = Error::InvalidJson("a \"b\" \\ \n\t\u{1} é".into());
        let v = json_of(&error_frame(Some(-9), &nasty));
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], -9);
        assert_eq!(v["code"], "invalid_json");
        assert_eq!(v["message"], nasty.to_string());
        assert_eq!(v.as_object().unwrap().len(), 4);
        // The reply of a real parse error.
        let bad = err("{\"id\":1,");
        let v = json_of(&bad.reply());
        assert_eq!(v["id"], 1);
        assert_eq!(v["code"], "invalid_json");
        assert!(v["message"].as_str().unwrap().starts_with("invalid JSON: "));
        let v = json_of(&err("[]").reply());
        assert!(v.get("id").is_none());
        assert_eq!(v["code"], "invalid_message");
        assert_eq!(
            Error::from(err("[]")),
            Error::InvalidMessage("not a JSON object")
        );
    }

    // ---- text deliveries ----

    #[test]
    fn text_delivery_layout() {
        let data: &RawValue = serde_json::from_str(r#"{"k": "v"}"#).unwrap();
        let frame = text_delivery("room/1", data);
        assert_eq!(
            text_of(&frame),
            r#"{"type":"message","topic":"room/1","data":{"k": "v"}}"#
        );
        let v = json_of(&frame);
        assert_eq!(v["type"], "message");
        assert_eq!(v["topic"], "room/1");
        assert_eq!(v["data"]["k"], "v");
        // Topics are escaped as serde_json would, non-ASCII as is.
        let frame = text_delivery("a\"b\\cé", data);
        assert_eq!(
            text_of(&frame),
            r#"{"type":"message","topic":"a\"b\\cé","data":{"k": "v"}}"#
        );
        // Clones share the payload.
        let copy = frame.clone();
        assert_eq!(copy.payload().as_ptr(), frame.payload().as_ptr());
    }

    #[test]
    fn text_delivery_headers_for_every_length_form() {
        for len in [0, 100, 125, 126, 200, 65_535, 65_536, 100_000] {
            let data = format!("\"{}\"", "x".repeat(len));
            let raw: &RawValue = serde_json::from_str(&data).unwrap();
            let frame = text_delivery("t", raw);
            let v = json_of(&frame);
            assert_eq!(v["data"].as_str().unwrap().len(), len);
            assert_eq!(
                frame.wire_len(),
                frame.header().len() + frame.payload().len()
            );
        }
    }

    #[test]
    fn json_body_deliveries() {
        let frame = json_body_delivery("t", b" \r\n{\"a\": [1, \"\\u00e9\"]}\n").unwrap();
        assert_eq!(
            text_of(&frame),
            r#"{"type":"message","topic":"t","data":{"a": [1, "\u00e9"]}}"#
        );
        for body in [&b"1"[..], b"\"s\"", b"null", b"[]"] {
            let frame = json_body_delivery("t", body).unwrap();
            let text = text_of(&frame);
            assert!(text.ends_with(&format!(
                ",\"data\":{}}}",
                std::str::from_utf8(body).unwrap()
            )));
        }
        for body in [
            &b""[..],
            b" ",
            b"{",
            b"{} {}",
            b"[1,]",
            b"\"\xff\"",
            b"\xff",
        ] {
            assert!(
                matches!(json_body_delivery("t", body), Err(Error::InvalidJson(_))),
                "{body:?}"
            );
        }
        assert_eq!(
            json_body_delivery("", b"1").unwrap_err(),
            Error::InvalidTopic("empty")
        );
    }

    // ---- binary ----

    fn binary(topic: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![topic.len() as u8];
        v.extend_from_slice(topic);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn binary_publish_layout() {
        let msg = binary(b"news", &[0, 1, 2, 255]);
        let p = parse_binary_publish(&msg).unwrap();
        assert_eq!(p.topic, "news");
        assert_eq!(p.payload, &[0, 1, 2, 255]);
        assert_eq!(p.payload_offset(), 5);
        assert_eq!(&msg[p.payload_offset()..], p.payload);

        // Empty payload.
        let msg = binary(b"news", b"");
        let p = parse_binary_publish(&msg).unwrap();
        assert_eq!((p.topic, p.payload), ("news", &b""[..]));

        // L = 255.
        let topic = "t".repeat(255);
        let msg = binary(topic.as_bytes(), b"xyz");
        let p = parse_binary_publish(&msg).unwrap();
        assert_eq!((p.topic, p.payload), (&topic[..], &b"xyz"[..]));
        assert_eq!(p.payload_offset(), 256);

        // Multi-byte UTF-8 topic.
        let msg = binary("é🎉".as_bytes(), b"p");
        assert_eq!(parse_binary_publish(&msg).unwrap().topic, "é🎉");
    }

    #[test]
    fn binary_publish_errors() {
        assert_eq!(
            parse_binary_publish(b""),
            Err(Error::InvalidBinary("empty message"))
        );
        assert_eq!(
            parse_binary_publish(&[0, b'a', b'b']),
            Err(Error::InvalidBinary("topic length is 0"))
        );
        assert_eq!(
            parse_binary_publish(&[0]),
            Err(Error::InvalidBinary("topic length is 0"))
        );
        for short in [&[5u8][..], &[5, b'a', b'b', b'c', b'd'], &[255; 255]] {
            assert_eq!(
                parse_binary_publish(short),
                Err(Error::InvalidBinary("shorter than its topic length"))
            );
        }
        // Exactly 1 + L is fine (empty payload).
        assert!(parse_binary_publish(&[1, b'a']).is_ok());
        assert_eq!(
            parse_binary_publish(&binary(&[0xff, 0xfe], b"x")),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        // A multi-byte character cut by L.
        assert_eq!(
            parse_binary_publish(&binary(&"é".as_bytes()[..1], "é".as_bytes())),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        assert_eq!(
            parse_binary_publish(&binary(b"a\nb", b"x")),
            Err(Error::InvalidTopic("contains a control character"))
        );
    }

    #[test]
    fn binary_delivery_shares_the_bytes() {
        let msg = Bytes::from(binary(b"news", b"hello"));
        let frame = binary_delivery(msg.clone());
        assert_eq!(frame.payload().as_ptr(), msg.as_ptr());
        assert_eq!(frame.payload(), &msg);
        match decode(&frame) {
            Message::Binary(b) => assert_eq!(b, msg),
            other => panic!("{other:?}"),
        }
        assert_eq!(frame.clone().payload().as_ptr(), msg.as_ptr());
    }

    #[test]
    fn binary_body_deliveries() {
        let frame = binary_body_delivery("news", b"\x00body").unwrap();
        assert_eq!(&frame.payload()[..], b"\x04news\x00body");
        let p = parse_binary_publish(frame.payload()).unwrap();
        assert_eq!((p.topic, p.payload), ("news", &b"\x00body"[..]));
        assert!(matches!(decode(&frame), Message::Binary(_)));
        let frame = binary_body_delivery(&"é".repeat(127), b"").unwrap();
        assert_eq!(frame.payload()[0], 254);
        assert_eq!(
            binary_body_delivery(&"x".repeat(256), b"").unwrap_err(),
            Error::InvalidTopic("longer than 255 bytes")
        );
        assert_eq!(
            binary_body_delivery("", b"").unwrap_err(),
            Error::InvalidTopic("empty")
        );
    }

    // ---- URLs ----

    #[test]
    fn subscribe_query() {
        let q = |s: &str| parse_subscribe_query(s, 10);
        assert_eq!(q("subscribe=a,b").unwrap(), ["a", "b"]);
        assert_eq!(q("?subscribe=a").unwrap(), ["a"]);
        assert_eq!(q("").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=,,a,,").unwrap(), ["a"]);
        // Commas inside a topic are %2C; literal commas separate.
        assert_eq!(q("subscribe=a%2Cb,c").unwrap(), ["a,b", "c"]);
        assert_eq!(q("subscribe=a%2cb").unwrap(), ["a,b"]);
        // Form decoding: + is a space, %2B a plus, UTF-8 percent-encoded.
        assert_eq!(q("subscribe=a+b,c%2Bd").unwrap(), ["a b", "c+d"]);
        assert_eq!(
            q("subscribe=caf%C3%A9,%F0%9F%8E%89").unwrap(),
            ["café", "🎉"]
        );
        assert_eq!(q("subscribe=café").unwrap(), ["café"]);
        // A stray % stays.
        assert_eq!(
            q("subscribe=100%,a%zz,b%4").unwrap(),
            ["100%", "a%zz", "b%4"]
        );
        // Other parameters ignored, several subscribe parameters joined, duplicates dropped.
        assert_eq!(
            q("token=x,y&subscribe=a,b&x=1&subscribe=b,c,a&&=&subscribe=d").unwrap(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(q("sub%73cribe=a").unwrap(), ["a"]);
        assert_eq!(q("Subscribe=a").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=a=b").unwrap(), ["a=b"]);
        // Invalid topics.
        assert_eq!(
            q("subscribe=a%0Ab"),
            Err(Error::InvalidTopic("contains a control character"))
        );
        assert_eq!(
            q("subscribe=%FF"),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        let long = "x".repeat(256);
        assert_eq!(
            q(&format!("subscribe={long}")),
            Err(Error::InvalidTopic("longer than 255 bytes"))
        );
    }

    #[test]
    fn subscribe_query_limit() {
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,c", 3).unwrap(),
            ["a", "b", "c"]
        );
        // Duplicates do not count.
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,a,b,c,c", 3).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,c,d", 3),
            Err(Error::TooManyTopics(3))
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a&subscribe=b", 1),
            Err(Error::TooManyTopics(1))
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a", 0),
            Err(Error::TooManyTopics(0))
        );
        assert_eq!(
            parse_subscribe_query("x=1", 0).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn topic_paths() {
        assert_eq!(decode_topic_path("news").unwrap(), "news");
        assert_eq!(decode_topic_path("a+b%2Bc%20d%2Fe").unwrap(), "a+b+c d/e");
        assert_eq!(decode_topic_path("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_topic_path(""), Err(Error::InvalidTopic("empty")));
        assert_eq!(
            decode_topic_path("%C3"),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        assert_eq!(
            decode_topic_path("a%00"),
            Err(Error::InvalidTopic("contains a control character"))
        );
    }

    // ---- properties ----

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{1,64}".prop_filter("fits", |t| t.len() <= MAX_TOPIC_LEN)
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
        fn binary_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = parse_binary_publish(&bytes) {
                prop_assert_eq!(&bytes[p.payload_offset()..], p.payload);
                prop_assert_eq!(&bytes[1..p.payload_offset()], p.topic.as_bytes());
            }
        }

        #[test]
        fn subscribe_query_never_panics(query in "[a-z=&,%+0-9A-F\\PC]{0,80}") {
            if let Ok(topics) = parse_subscribe_query(&query, 8) {
                prop_assert!(topics.len() <= 8);
                for t in &topics {
                    prop_assert!(validate_topic(t).is_ok());
                }
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
