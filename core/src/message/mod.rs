//! The pub/sub envelope of the `/ws` endpoint (shared/PROTOCOL.md, "The pub/sub session").
//!
//! **Text frames** from a client are JSON control messages, one object per message:
//!
//! ```text
//! {"type":"subscribe","topic":"T"}
//! {"type":"subscribe","topic":"T","recover":{"offset":O,"epoch":"E"}}
//! {"type":"unsubscribe","topic":"T"}
//! {"type":"publish","topic":"T","data":ANY_JSON}
//! ```
//!
//! each with an optional `"id":N` (an integer that fits an `i64`). [`parse_control`] turns one
//! into a [`ControlMessage`] that borrows from the frame: the topic when it has no escapes, and
//! `data` always, as the publisher's raw JSON text ([`RawValue`]), never re-serialised. A bad
//! message is a [`BadMessage`]: the [`Error`] plus the id when it could be read, so the answer
//! ([`error_frame`], or [`BadMessage::reply`]) carries the id exactly when the protocol says so.
//! A good one is answered with [`ack_frame`] when it has an id. A subscribe may carry
//! `recover` (a topic with history, shared/PROTOCOL.md "History and recovery"): the last offset
//! and the epoch the client has of the topic, read into [`ControlMessage::recover`] as a
//! [`Recover`].
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
//! **History and recovery** (shared/PROTOCOL.md, "History and recovery"). On a topic with
//! history every message has an offset (a `u64`) and the topic an epoch (a short string):
//!
//! - text deliveries gain `"offset":N` between `topic` and `data`: [`text_delivery_at`],
//!   [`json_body_delivery_at`], or [`text_delivery_with_offset`] to stamp one on a delivery
//!   built before the offset was known;
//! - binary deliveries carry the offset only for clients that negotiated the subprotocol
//!   [`SUBPROTOCOL_V2`] (`wsgate.v2`): 8 bytes big-endian before the binary publish,
//!   `[offset][L][topic][payload]` ([`binary_delivery_at`], [`binary_body_delivery_at`],
//!   read back by [`parse_binary_delivery_at`]); other clients get [`binary_delivery`];
//! - a subscribe's `recover` is read into [`ControlMessage::recover`] (rule 8 below);
//! - the ack of a subscribe to such a topic is [`subscribe_ack_frame`]:
//!   `{"type":"ack","id":N,"topic":"T","offset":O,"epoch":"E"}`, plus `"recovered":true` or
//!   `"recovered":false,"reason":"epoch"|"too_old"|"ahead"|"unavailable"` ([`Recovery`],
//!   [`RecoverFailure`]) when the subscribe asked to recover;
//! - [`gap_frame`] is the notice `{"type":"gap","topic":"T"}`.
//!
//! Topics and epochs are JSON-escaped by serde_json's rules everywhere (quotes, backslashes,
//! control characters; other characters as they are); offsets are bare decimal integers.
//!
//! **The client's side**: [`parse_server_message`] reads every text message the gateway sends
//! (deliveries, acks, errors, gap notices) into a [`ServerMessage`], for the load generator and
//! the tests.
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
//! 4. A repeated `type`, `topic`, `data` or `recover` key is [`Error::InvalidMessage`] (serde_json itself
//!    would keep the last one; a gateway that silently picked one could be fooled). Repeated
//!    unknown keys are ignored like every unknown key (room for later fields).
//! 5. `type` missing: [`Error::MissingField`]`("type")`; not a string:
//!    [`Error::InvalidMessage`]; not one of the three names (case-sensitive):
//!    [`Error::UnknownType`].
//! 6. `topic` missing: [`Error::MissingField`]`("topic")`; not a string or breaking the topic
//!    rules: [`Error::InvalidTopic`].
//! 7. A publish without `data`: [`Error::MissingField`]`("data")`. `"data":null` is a valid
//!    publish of `null`. `data` on a subscribe or unsubscribe is ignored.
//! 8. `recover` on a subscribe: absent or `null`, no recovery. Otherwise it must be an object
//!    (else [`Error::InvalidRecover`]`("not an object")`) whose members are checked in this
//!    order, each failure an [`Error::InvalidRecover`]: a repeated `offset` or `epoch`
//!    (`"duplicate field \"offset\""`); `offset` missing (`"missing offset"`) or not an integer
//!    from 0 to `u64::MAX` (not `1.0`, not `-1`, not `"5"`: `"offset must be an integer from
//!    0 to 18446744073709551615"`); `epoch` missing (`"missing epoch"`), not a string
//!    (`"epoch must be a string"`), empty (`"empty epoch"`) or longer than [`MAX_EPOCH_LEN`]
//!    bytes after unescaping (`"epoch longer than 64 bytes"`). Other members of `recover` are
//!    ignored. `recover` on an unsubscribe or a publish is ignored, whatever it holds.
//!
//! From rule 3 on, the error carries the id. A text that is not JSON carries the id too when a
//! valid `id` member was read completely before the syntax error (`{"id":7,"type":` → the error
//! has id 7), since the client can then match the answer, unless the text ends in a digit (it
//! may have been cut inside the id: `{"id":71` could be the start of `{"id":712}`).
//!
//! Keys are compared after unescaping (`"\u0074ype"` is `type`). Field order does not matter.
//!
//! [`OutFrame`]: crate::frame::OutFrame
//! [`RawValue`]: serde_json::value::RawValue

mod client;
mod control;
mod delivery;
mod reply;
mod url;

pub use client::{Ack, ServerMessage, parse_server_message};
pub use control::{
    BadMessage, Command, ControlMessage, MAX_EPOCH_LEN, Recover, parse_control, parse_control_str,
};
pub use delivery::{
    BINARY_OFFSET_LEN, BinaryPublish, SUBPROTOCOL_V2, binary_body_delivery,
    binary_body_delivery_at, binary_delivery, binary_delivery_at, json_body_delivery,
    json_body_delivery_at, parse_binary_delivery_at, parse_binary_publish, text_delivery,
    text_delivery_at, text_delivery_with_offset,
};
pub use reply::{
    RecoverFailure, Recovery, ack_frame, error_frame, gap_frame, publish_ack_frame,
    subscribe_ack_frame,
};
pub use url::{decode_topic_path, parse_subscribe_query};

use crate::{Error, Result};

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

/// Appends `s` as a JSON string (quoted and escaped by serde_json).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Appends the decimal digits of `n`.
fn push_i64(v: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    // Writing into a Vec never fails.
    let _ = write!(v, "{n}");
}

/// Appends the decimal digits of `n`.
fn push_u64(v: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    // Writing into a Vec never fails.
    let _ = write!(v, "{n}");
}

/// serde_json's reason, kept on one line (it always is; this is belt and braces).
fn one_line(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if s.contains(['\n', '\r']) {
        s = s.replace(['\n', '\r'], " ");
    }
    s
}

/// What the tests of every submodule share: decoding frames as a client does, and proptest
/// strategies.
#[cfg(test)]
mod testing {
    use super::{BadMessage, ControlMessage, MAX_TOPIC_LEN, parse_control};
    use crate::frame::{DecoderConfig, Message, MessageDecoder, OutFrame};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Decodes `frame` as a client would; asserts it is one whole, valid server frame.
    pub(super) fn decode(frame: &OutFrame) -> Message {
        let mut buf = BytesMut::from(&frame.to_vec()[..]);
        let mut decoder = MessageDecoder::new(DecoderConfig::client());
        let message = decoder
            .decode(&mut buf)
            .expect("valid frame")
            .expect("whole");
        assert!(buf.is_empty(), "header length matches the payload");
        message
    }

    pub(super) fn text_of(frame: &OutFrame) -> String {
        match decode(frame) {
            Message::Text(b) => {
                assert_eq!(&b[..], &frame.payload()[..]);
                String::from_utf8(b.to_vec()).expect("UTF-8")
            }
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub(super) fn json_of(frame: &OutFrame) -> Value {
        serde_json::from_str(&text_of(frame)).expect("valid JSON")
    }

    pub(super) fn ok(text: &str) -> ControlMessage<'_> {
        parse_control(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    pub(super) fn err(text: &str) -> BadMessage {
        match parse_control(text.as_bytes()) {
            Ok(m) => panic!("{text}: accepted as {m:?}"),
            Err(e) => e,
        }
    }

    pub(super) fn json_value() -> impl Strategy<Value = Value> {
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

    pub(super) fn topic() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{1,64}".prop_filter("fits", |t| t.len() <= MAX_TOPIC_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
