//! The pub/sub envelope on arbitrary input: `message::parse_control` on the bytes of a text
//! frame, `parse_binary_publish` on the bytes of a binary one, `json_body_delivery` on a body,
//! `parse_subscribe_query` and `decode_topic_path` on the text, checked against serde_json.
//!
//! Input: `[max topics][bytes...]`.
//!
//! Invariants: no panic; `parse_control` and `parse_control_str` agree; an accepted control
//! message is a JSON object whose `type`, `topic`, `id` and `data` (as raw text) serde_json reads
//! the same, and its topic passes `validate_topic`; the delivery of a publish is a JSON object of
//! exactly `type` "message", the same `topic` and the same `data` text; every answer (ack, error
//! reply) is JSON saying what it should; envelope errors never close the session; a binary
//! publish is `[L][topic][payload]` and its deliveries give back the same bytes; query and path
//! decoding yield valid, distinct topics within the limit, and give back any topic list
//! percent-encoded.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use wsgate_core::Error;
use wsgate_core::frame::{FrameHeader, OpCode, OutFrame};
use wsgate_core::message::{self, Command};

type Object = BTreeMap<String, Box<RawValue>>;

fuzz_target!(|data: &[u8]| {
    let Some((&max_topics, data)) = data.split_first() else {
        return;
    };
    let max_topics = usize::from(max_topics % 20);
    check_control(data);
    check_binary(data);
    check_json_body(data);
    let text = String::from_utf8_lossy(data);
    check_topic(&text);
    check_query(&text, max_topics);
    check_path(&text);
});

fn object(bytes: &[u8]) -> Object {
    match serde_json::from_slice::<Object>(bytes) {
        Ok(o) => o,
        Err(e) => panic!(
            "not a JSON object ({e}): {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn string(raw: &RawValue) -> String {
    serde_json::from_str(raw.get()).expect("a JSON string")
}

/// A text frame built by the gateway: a whole, unmasked text frame; returns its payload.
fn text_payload(frame: &OutFrame) -> &[u8] {
    let (header, len) = FrameHeader::parse(frame.header()).unwrap().unwrap();
    assert_eq!(len, frame.header().len());
    assert!(header.fin && header.mask.is_none() && header.rsv == 0);
    assert_eq!(header.opcode, OpCode::Text);
    assert_eq!(header.payload_len, frame.payload().len() as u64);
    frame.payload()
}

fn check_control(data: &[u8]) {
    let parsed = message::parse_control(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(message::parse_control_str(text), parsed);
    }
    match parsed {
        Ok(msg) => {
            message::validate_topic(msg.topic()).expect("accepted topic is valid");
            // serde_json, as the reference, reads the same envelope.
            let o = object(data);
            let kind = string(&o["type"]);
            assert_eq!(string(&o["topic"]), msg.topic());
            match &msg.command {
                Command::Subscribe { .. } => assert_eq!(kind, "subscribe"),
                Command::Unsubscribe { .. } => assert_eq!(kind, "unsubscribe"),
                Command::Publish { topic, data } => {
                    assert_eq!(kind, "publish");
                    assert_eq!(o["data"].get(), data.get());
                    check_delivery_frame(topic, data.get(), &message::text_delivery(topic, data));
                }
            }
            match msg.id {
                Some(id) => {
                    assert_eq!(serde_json::from_str::<i64>(o["id"].get()).ok(), Some(id));
                    let ack = message::ack_frame(id);
                    let a = object(text_payload(&ack));
                    assert_eq!(string(&a["type"]), "ack");
                    assert_eq!(a["id"].get(), id.to_string());
                    assert_eq!(a.len(), 2);
                }
                None => assert!(!o.contains_key("id")),
            }
        }
        Err(bad) => {
            let e = &bad.error;
            assert_eq!(e.close_code(), None, "{e:?} would close the session");
            assert_eq!(e.http_status(), None, "{e:?}");
            let reply = bad.reply();
            let r = object(text_payload(&reply));
            assert_eq!(string(&r["type"]), "error");
            assert_eq!(string(&r["code"]), e.code());
            assert_eq!(string(&r["message"]), e.to_string());
            match bad.id {
                Some(id) => assert_eq!(r["id"].get(), id.to_string()),
                None => assert!(!r.contains_key("id")),
            }
            assert_eq!(r.len(), 3 + usize::from(bad.id.is_some()));
        }
    }
}

/// A text delivery of `data` (raw JSON text) to `topic` is a JSON object of exactly the three
/// members, saying so.
fn check_delivery_frame(topic: &str, data: &str, frame: &OutFrame) {
    let d = object(text_payload(frame));
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(string(&d["type"]), "message");
    assert_eq!(string(&d["topic"]), topic);
    assert_eq!(d["data"].get(), data);
}

fn check_binary(data: &[u8]) {
    match message::parse_binary_publish(data) {
        Ok(publish) => {
            message::validate_topic(publish.topic).expect("accepted topic is valid");
            let l = usize::from(data[0]);
            assert_eq!(l, publish.topic.len());
            assert_eq!(publish.payload_offset(), 1 + l);
            assert_eq!(&data[1..1 + l], publish.topic.as_bytes());
            assert_eq!(publish.payload, &data[1 + l..]);
            let rebuilt = message::binary_body_delivery(publish.topic, publish.payload).unwrap();
            assert_eq!(&rebuilt.payload()[..], data);
            let shared = message::binary_delivery(Bytes::copy_from_slice(data));
            assert_eq!(&shared.payload()[..], data);
            let (header, _) = FrameHeader::parse(shared.header()).unwrap().unwrap();
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(header.payload_len, data.len() as u64);
        }
        Err(Error::InvalidBinary(_) | Error::InvalidTopic(_)) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_json_body(body: &[u8]) {
    let topic = "fuzz/topic \"quoted\" \\ é";
    let reference = std::str::from_utf8(body)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
    match message::json_body_delivery(topic, body) {
        Ok(frame) => {
            let raw = reference.expect("serde_json refuses a body the gateway accepted");
            check_delivery_frame(topic, raw.get(), &frame);
        }
        Err(Error::InvalidJson(_)) => assert!(reference.is_none(), "refused valid JSON"),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_topic(text: &str) {
    let expected = !text.is_empty()
        && text.len() <= message::MAX_TOPIC_LEN
        && !text.chars().any(char::is_control);
    assert_eq!(message::validate_topic(text).is_ok(), expected);
    if expected {
        // Any valid topic is delivered as valid JSON, and round-trips through a binary publish.
        check_delivery_frame(text, "null", &message::text_delivery(text, raw_null()));
        let frame = message::binary_body_delivery(text, b"x").unwrap();
        let back = message::parse_binary_publish(frame.payload()).unwrap();
        assert_eq!((back.topic, back.payload), (text, &b"x"[..]));
    }
}

fn raw_null() -> &'static RawValue {
    serde_json::from_str("null").unwrap()
}

fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn check_query(text: &str, max_topics: usize) {
    match message::parse_subscribe_query(text, max_topics) {
        Ok(topics) => {
            assert!(topics.len() <= max_topics);
            let mut seen = std::collections::HashSet::new();
            for t in &topics {
                message::validate_topic(t).expect("accepted topic is valid");
                assert!(seen.insert(t), "duplicate topic {t:?}");
            }
            // The same list, every byte percent-encoded, reads back the same.
            let encoded: Vec<String> = topics.iter().map(|t| percent_encode_all(t)).collect();
            let query = format!("x=1&subscribe={}&y", encoded.join(","));
            assert_eq!(
                message::parse_subscribe_query(&query, max_topics).as_ref(),
                Ok(&topics)
            );
        }
        Err(Error::InvalidTopic(_)) => {}
        Err(Error::TooManyTopics(n)) => assert_eq!(n, max_topics),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_path(text: &str) {
    match message::decode_topic_path(text) {
        Ok(topic) => {
            message::validate_topic(&topic).expect("accepted topic is valid");
            let encoded = percent_encode_all(&topic);
            assert_eq!(message::decode_topic_path(&encoded).as_ref(), Ok(&topic));
            if !text.contains('%') {
                assert_eq!(topic, text, "nothing to decode");
            }
        }
        Err(Error::InvalidTopic(_)) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }
}
