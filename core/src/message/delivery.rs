//! Deliveries: the frames every subscriber of a topic receives, built once per publish.

use super::{one_line, push_json_string, push_u64, validate_topic};
use crate::frame::{OpCode, OutFrame};
use crate::{Error, Result};
use bytes::Bytes;
use serde_json::value::RawValue;

const DELIVERY_HEAD: &[u8] = br#"{"type":"message","topic":"#;
const DELIVERY_MID: &[u8] = br#","data":"#;
const OFFSET_MEMBER: &[u8] = br#","offset":"#;
/// The most decimal digits of a `u64`.
const U64_DIGITS: usize = 20;

/// The subprotocol (`Sec-WebSocket-Protocol`) by which a client opts into binary deliveries
/// that carry their offset ([`binary_delivery_at`]). Text deliveries carry `"offset"` for
/// every client; only the binary layout depends on it.
pub const SUBPROTOCOL_V2: &str = "wsgate.v2";

/// The length of the offset that prefixes a binary delivery under [`SUBPROTOCOL_V2`].
pub const BINARY_OFFSET_LEN: usize = 8;

/// The text frame `{"type":"message","topic":"T","data":DATA}` delivered to every subscriber of
/// a text publish: `topic` JSON-escaped, `data` the publisher's text verbatim.
///
/// The payload is allocated once, at its exact size; clone the returned frame per subscriber
/// (a reference count). `topic` should already be valid (it comes from a parsed message);
/// whatever it holds, the payload is valid JSON.
pub fn text_delivery(topic: &str, data: &RawValue) -> OutFrame {
    text_delivery_raw(topic, None, data.get())
}

/// The text delivery of a message of a topic with history, at its offset:
/// `{"type":"message","topic":"T","offset":N,"data":DATA}`.
///
/// The same as [`text_delivery`] (topic escaping, `data` verbatim, one allocation, valid JSON
/// whatever `topic` holds) with the `offset` member, a bare decimal integer (`u64::MAX` is
/// written `18446744073709551615`; a client in JavaScript should read offsets above 2^53 with
/// a JSON parser that keeps them exact), between `topic` and `data`.
pub fn text_delivery_at(topic: &str, offset: u64, data: &RawValue) -> OutFrame {
    text_delivery_raw(topic, Some(offset), data.get())
}

/// [`text_delivery`] or [`text_delivery_at`] over JSON text the caller has validated.
fn text_delivery_raw(topic: &str, offset: Option<u64>, data: &str) -> OutFrame {
    // A valid topic has no control characters, so escaping at most doubles it (`"` and `\`):
    // with the quotes, this capacity is never exceeded and the payload is allocated once.
    let cap = DELIVERY_HEAD.len()
        + 2 * topic.len()
        + 2
        + offset.map_or(0, |_| OFFSET_MEMBER.len() + U64_DIGITS)
        + DELIVERY_MID.len()
        + data.len()
        + 1;
    let mut v = Vec::with_capacity(cap);
    v.extend_from_slice(DELIVERY_HEAD);
    push_json_string(&mut v, topic);
    if let Some(offset) = offset {
        v.extend_from_slice(OFFSET_MEMBER);
        push_u64(&mut v, offset);
    }
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
    json_body(topic, None, body)
}

/// [`json_body_delivery`] for a topic with history: the delivery of [`text_delivery_at`],
/// `{"type":"message","topic":"T","offset":N,"data":BODY}`, by the same rules and errors.
pub fn json_body_delivery_at(topic: &str, offset: u64, body: &[u8]) -> Result<OutFrame> {
    json_body(topic, Some(offset), body)
}

fn json_body(topic: &str, offset: Option<u64>, body: &[u8]) -> Result<OutFrame> {
    validate_topic(topic)?;
    let text = simdutf8::basic::from_utf8(body)
        .map_err(|_| Error::InvalidJson("body is not valid UTF-8".into()))?;
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| Error::InvalidJson(one_line(&e)))?;
    Ok(text_delivery_raw(topic, offset, raw.get()))
}

/// Stamps an offset on a delivery [`text_delivery`] or [`json_body_delivery`] built: the bytes
/// of [`text_delivery_at`] for the same topic, offset and data, byte for byte, in one
/// allocation. For a gateway that builds the plain delivery before it knows the offset (a
/// publish whose offset comes back from Redis, say).
///
/// `None` when `delivery` is not such a payload (for one, when it already has an offset): it
/// must start with `{"type":"message","topic":` and a JSON string followed by `,"data":`.
/// Only that head is read; the data is copied as it is, unchecked.
pub fn text_delivery_with_offset(delivery: &[u8], offset: u64) -> Option<OutFrame> {
    let rest = delivery.strip_prefix(DELIVERY_HEAD)?;
    let topic_len = json_string_len(rest)?;
    let (topic, tail) = rest.split_at(topic_len);
    if !tail.starts_with(DELIVERY_MID) {
        return None;
    }
    let mut v = Vec::with_capacity(delivery.len() + OFFSET_MEMBER.len() + U64_DIGITS);
    v.extend_from_slice(DELIVERY_HEAD);
    v.extend_from_slice(topic);
    v.extend_from_slice(OFFSET_MEMBER);
    push_u64(&mut v, offset);
    v.extend_from_slice(tail);
    Some(OutFrame::new(OpCode::Text, Bytes::from(v)))
}

/// The length of the JSON string at the start of `bytes`, quotes included: up to the first `"`
/// after the opening one that no backslash escapes. `None` when `bytes` does not start with a
/// quote or the string does not end.
fn json_string_len(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
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

/// [`binary_body_delivery`] for a topic with history, for clients of [`SUBPROTOCOL_V2`]: the
/// layout of [`binary_delivery_at`], `[offset: 8 bytes, big-endian][L][topic][body]`, built in
/// one allocation. Validates the topic.
pub fn binary_body_delivery_at(topic: &str, offset: u64, body: &[u8]) -> Result<OutFrame> {
    validate_topic(topic)?;
    let len =
        u8::try_from(topic.len()).map_err(|_| Error::InvalidTopic("longer than 255 bytes"))?;
    let mut v = Vec::with_capacity(BINARY_OFFSET_LEN + 1 + topic.len() + body.len());
    v.extend_from_slice(&offset.to_be_bytes());
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

/// Reads a binary delivery of [`binary_delivery_at`] (as a client of [`SUBPROTOCOL_V2`]
/// does): the offset from its first 8 bytes, big-endian, then the binary publish after them,
/// by the rules of [`parse_binary_publish`].
///
/// Errors: [`Error::InvalidBinary`]`("shorter than its 8-byte offset")` for fewer than 8 bytes,
/// then those of [`parse_binary_publish`] (a message of exactly 8 bytes is `"empty message"`).
/// [`BinaryPublish::payload_offset`] counts from the end of the offset.
pub fn parse_binary_delivery_at(message: &[u8]) -> Result<(u64, BinaryPublish<'_>)> {
    let Some((offset, publish)) = message.split_first_chunk::<BINARY_OFFSET_LEN>() else {
        return Err(Error::InvalidBinary("shorter than its 8-byte offset"));
    };
    Ok((u64::from_be_bytes(*offset), parse_binary_publish(publish)?))
}

/// The binary frame delivered to subscribers of a binary publish: the publisher's message
/// bytes, unchanged and not copied (the frame shares `message`).
pub fn binary_delivery(message: Bytes) -> OutFrame {
    OutFrame::new(OpCode::Binary, message)
}

/// The binary delivery of a message of a topic with history, for the clients that negotiated
/// [`SUBPROTOCOL_V2`]: the offset as [`BINARY_OFFSET_LEN`] (8) bytes, big-endian (network
/// order, `DataView.getBigUint64(0)` in a browser), then the publisher's message unchanged:
///
/// ```text
/// bytes 0..8        offset, u64 big-endian
/// byte  8           topic length L (1..=255)
/// bytes 9..9+L      topic, UTF-8
/// bytes 9+L..       payload
/// ```
///
/// `message` is the binary publish (`[L][topic][payload]`, as [`binary_delivery`] takes it);
/// it is copied once behind the offset, so build this once per publish and clone the frame
/// per subscriber, like every delivery. Clients without the subprotocol get
/// [`binary_delivery`] of the same message. Read it back with
/// [`parse_binary_delivery_at`].
pub fn binary_delivery_at(message: &[u8], offset: u64) -> OutFrame {
    let mut v = Vec::with_capacity(BINARY_OFFSET_LEN + message.len());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(message);
    OutFrame::new(OpCode::Binary, Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Message;
    use crate::message::testing::*;
    use proptest::prelude::*;

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

    // ---- offsets ----

    const NASTY_TOPICS: [&str; 6] = ["room/1", "a\"b\\cé", "🎉 \u{200b}", "\\", "\"", "x\\\"y"];

    #[test]
    fn text_delivery_at_layout() {
        let data: &RawValue = serde_json::from_str(r#"{"k": "v"}"#).unwrap();
        let frame = text_delivery_at("room/1", 42, data);
        assert_eq!(
            text_of(&frame),
            r#"{"type":"message","topic":"room/1","offset":42,"data":{"k": "v"}}"#
        );
        assert_eq!(frame.opcode(), OpCode::Text);
        for offset in [
            0,
            1,
            9,
            10,
            u64::from(u32::MAX),
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ] {
            for topic in NASTY_TOPICS {
                let frame = text_delivery_at(topic, offset, data);
                let v = json_of(&frame);
                assert_eq!(v["type"], "message");
                assert_eq!(v["topic"], topic);
                assert_eq!(v["offset"].as_u64(), Some(offset), "{offset}");
                assert_eq!(v["data"]["k"], "v");
                assert_eq!(v.as_object().unwrap().len(), 4);
                // Without the offset member it is text_delivery's payload, byte for byte.
                let with = text_of(&frame);
                let member = format!(",\"offset\":{offset}");
                assert_eq!(with.matches(&member).count(), 1);
                assert_eq!(
                    with.replacen(&member, "", 1),
                    text_of(&text_delivery(topic, data))
                );
            }
        }
        assert_eq!(
            text_of(&text_delivery_at("t", u64::MAX, data)),
            r#"{"type":"message","topic":"t","offset":18446744073709551615,"data":{"k": "v"}}"#
        );
        // Topics are escaped as serde_json would, non-ASCII as is; data stays verbatim.
        let raw: &RawValue = serde_json::from_str(r#""caf\u00e9 \"q\" é""#).unwrap();
        assert_eq!(
            text_of(&text_delivery_at("a\"b\\cé🎉", 7, raw)),
            r#"{"type":"message","topic":"a\"b\\cé🎉","offset":7,"data":"caf\u00e9 \"q\" é"}"#
        );
        // Whatever the topic holds, the payload is JSON.
        let v = json_of(&text_delivery_at("a\u{0}\n\u{7f}", 3, raw));
        assert_eq!(v["topic"], "a\u{0}\n\u{7f}");
        // Clones share the payload.
        let frame = text_delivery_at("t", 1, data);
        assert_eq!(frame.clone().payload().as_ptr(), frame.payload().as_ptr());
    }

    #[test]
    fn text_delivery_at_headers_for_every_length_form() {
        for len in [0, 90, 125, 126, 200, 65_535, 65_536, 100_000] {
            let data = format!("\"{}\"", "x".repeat(len));
            let raw: &RawValue = serde_json::from_str(&data).unwrap();
            let frame = text_delivery_at("t", u64::MAX, raw);
            assert_eq!(json_of(&frame)["data"].as_str().unwrap().len(), len);
        }
    }

    #[test]
    fn json_body_deliveries_at() {
        let frame = json_body_delivery_at("t", 5, b" \r\n{\"a\": [1, \"\\u00e9\"]}\n").unwrap();
        assert_eq!(
            text_of(&frame),
            r#"{"type":"message","topic":"t","offset":5,"data":{"a": [1, "\u00e9"]}}"#
        );
        for body in [&b"1"[..], b"\"s\"", b"null", b"[]", b"{}"] {
            let at = json_body_delivery_at("a\"b", u64::MAX, body).unwrap();
            let plain = json_body_delivery("a\"b", body).unwrap();
            assert_eq!(
                text_of(&at).replacen(",\"offset\":18446744073709551615", "", 1),
                text_of(&plain)
            );
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
                matches!(
                    json_body_delivery_at("t", 1, body),
                    Err(Error::InvalidJson(_))
                ),
                "{body:?}"
            );
        }
        assert_eq!(
            json_body_delivery_at("", 1, b"1").unwrap_err(),
            Error::InvalidTopic("empty")
        );
        assert_eq!(
            json_body_delivery_at("a\nb", 1, b"1").unwrap_err(),
            Error::InvalidTopic("contains a control character")
        );
    }

    #[test]
    fn offsets_stamped_on_plain_deliveries() {
        for data in ["null", "{\"offset\":1}", "\"a\\\"b\"", "[1, 2]", "{}"] {
            let raw: &RawValue = serde_json::from_str(data).unwrap();
            for topic in NASTY_TOPICS {
                for offset in [0, 7, u64::MAX] {
                    let plain = text_delivery(topic, raw);
                    let stamped = text_delivery_with_offset(plain.payload(), offset).unwrap();
                    let direct = text_delivery_at(topic, offset, raw);
                    assert_eq!(stamped.payload(), direct.payload(), "{topic:?} {data}");
                    assert_eq!(text_of(&stamped), text_of(&direct));
                }
            }
        }
        let raw: &RawValue = serde_json::from_str("1").unwrap();
        let body = json_body_delivery("t", b"[true]").unwrap();
        assert_eq!(
            text_of(&text_delivery_with_offset(body.payload(), 3).unwrap()),
            r#"{"type":"message","topic":"t","offset":3,"data":[true]}"#
        );
        // Not a plain delivery: None.
        let at = text_delivery_at("t", 1, raw);
        let plain = text_delivery("t", raw);
        let plain = plain.payload();
        for bytes in [
            at.payload().as_ref(),
            &plain[..plain.len() - 10],
            &plain[..20],
            b"",
            b"{}",
            br#"{"type":"ack","id":1}"#,
            br#"{"type":"message","data":1,"topic":"t"}"#,
            br#"{"type":"message","topic":"t\"}"#,
            br#"{"type":"message","topic":"t\\"#,
            br#"{"type":"message","topic":5,"data":1}"#,
            br#"{"type":"message", "topic":"t","data":1}"#,
            br#"{"type":"message","topic":"t" ,"data":1}"#,
        ] {
            assert!(
                text_delivery_with_offset(bytes, 1).is_none(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn binary_delivery_at_layout() {
        let msg = binary(b"news", b"\x00hello");
        for offset in [0, 1, 0x0102_0304_0506_0708, u64::MAX] {
            let frame = binary_delivery_at(&msg, offset);
            assert_eq!(frame.opcode(), OpCode::Binary);
            let payload = frame.payload();
            assert_eq!(payload.len(), BINARY_OFFSET_LEN + msg.len());
            assert_eq!(&payload[..8], offset.to_be_bytes());
            assert_eq!(&payload[8..], &msg[..]);
            match decode(&frame) {
                Message::Binary(b) => assert_eq!(b, *payload),
                other => panic!("{other:?}"),
            }
            let (at, p) = parse_binary_delivery_at(payload).unwrap();
            assert_eq!(at, offset);
            assert_eq!((p.topic, p.payload), ("news", &b"\x00hello"[..]));
            assert_eq!(&payload[8 + p.payload_offset()..], p.payload);
        }
        assert_eq!(
            &binary_delivery_at(&msg, 0x0102_0304_0506_0708).payload()[..9],
            &[1, 2, 3, 4, 5, 6, 7, 8, 4]
        );
        // The binary delivery without offset is unchanged: the very same bytes, shared.
        let shared = Bytes::from(msg.clone());
        assert_eq!(
            binary_delivery(shared.clone()).payload().as_ptr(),
            shared.as_ptr()
        );
        // Errors: too short for the offset, then the binary publish's own.
        for short in [&b""[..], &[0; 7]] {
            assert_eq!(
                parse_binary_delivery_at(short),
                Err(Error::InvalidBinary("shorter than its 8-byte offset"))
            );
        }
        assert_eq!(
            parse_binary_delivery_at(&[0; 8]),
            Err(Error::InvalidBinary("empty message"))
        );
        assert_eq!(
            parse_binary_delivery_at(&[0, 0, 0, 0, 0, 0, 0, 1, 0, b'x']),
            Err(Error::InvalidBinary("topic length is 0"))
        );
        assert_eq!(
            parse_binary_delivery_at(&[0, 0, 0, 0, 0, 0, 0, 1, 3, b'x']),
            Err(Error::InvalidBinary("shorter than its topic length"))
        );
    }

    #[test]
    fn binary_body_deliveries_at() {
        for offset in [0, 42, u64::MAX] {
            let at = binary_body_delivery_at("news", offset, b"\x00body").unwrap();
            let plain = binary_body_delivery("news", b"\x00body").unwrap();
            assert_eq!(
                at.payload(),
                binary_delivery_at(plain.payload(), offset).payload()
            );
            let (o, p) = parse_binary_delivery_at(at.payload()).unwrap();
            assert_eq!((o, p.topic, p.payload), (offset, "news", &b"\x00body"[..]));
        }
        assert_eq!(
            binary_body_delivery_at(&"x".repeat(256), 1, b"").unwrap_err(),
            Error::InvalidTopic("longer than 255 bytes")
        );
        assert_eq!(
            binary_body_delivery_at("", 1, b"").unwrap_err(),
            Error::InvalidTopic("empty")
        );
    }

    proptest! {
        #[test]
        fn deliveries_at_round_trip(
            topic in topic(),
            value in json_value(),
            offset in any::<u64>(),
        ) {
            let data = serde_json::to_string(&value).unwrap();
            let raw: &RawValue = serde_json::from_str(&data).unwrap();
            let frame = text_delivery_at(&topic, offset, raw);
            #[derive(serde::Deserialize)]
            struct Delivery<'a> {
                r#type: &'a str,
                topic: String,
                offset: u64,
                #[serde(borrow)]
                data: &'a RawValue,
            }
            let payload = text_of(&frame);
            let d: Delivery<'_> = serde_json::from_str(&payload).unwrap();
            prop_assert_eq!(d.r#type, "message");
            prop_assert_eq!(&d.topic, &topic);
            prop_assert_eq!(d.offset, offset);
            prop_assert_eq!(d.data.get(), &data[..]);
            let stamped = text_delivery_with_offset(text_delivery(&topic, raw).payload(), offset);
            let stamped = stamped.unwrap();
            prop_assert_eq!(stamped.payload(), frame.payload());

            let body = binary_body_delivery(&topic, data.as_bytes()).unwrap();
            let at = binary_delivery_at(body.payload(), offset);
            let (o, p) = parse_binary_delivery_at(at.payload()).unwrap();
            prop_assert_eq!((o, p.topic, p.payload), (offset, &topic[..], data.as_bytes()));
        }

        #[test]
        fn offsets_are_stamped_on_nothing_else(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(frame) = text_delivery_with_offset(&bytes, 5) {
                prop_assert!(bytes.starts_with(DELIVERY_HEAD));
                prop_assert_eq!(frame.payload().len(), bytes.len() + ",\"offset\":5".len());
            }
        }

        #[test]
        fn binary_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = parse_binary_publish(&bytes) {
                prop_assert_eq!(&bytes[p.payload_offset()..], p.payload);
                prop_assert_eq!(&bytes[1..p.payload_offset()], p.topic.as_bytes());
            }
        }

    }
}
