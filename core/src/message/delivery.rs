//! Deliveries: the frames every subscriber of a topic receives, built once per publish.

use super::{one_line, push_json_string, validate_topic};
use crate::frame::{OpCode, OutFrame};
use crate::{Error, Result};
use bytes::Bytes;
use serde_json::value::RawValue;

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

    proptest! {
        #[test]
        fn binary_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = parse_binary_publish(&bytes) {
                prop_assert_eq!(&bytes[p.payload_offset()..], p.payload);
                prop_assert_eq!(&bytes[1..p.payload_offset()], p.topic.as_bytes());
            }
        }

    }
}
