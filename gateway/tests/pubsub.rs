//! End-to-end tests of the /ws pub/sub session and POST /publish (shared/PROTOCOL.md).

mod common;

use common::{Gateway, RawWs, Ws, eventually, post, ws, ws_binary, ws_send, ws_text};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use wsgate_core::frame::{Message, OpCode};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// Reads text messages until the ack or error with `id`; returns it and the messages before it.
fn until_reply(ws: &mut Ws, id: i64) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let v = parse(&ws_text(ws));
        if v["id"] == json!(id) && (v["type"] == "ack" || v["type"] == "error") {
            return (v, before);
        }
        before.push(v);
    }
}

/// Sends a control message with an id and expects its ack, with nothing before it.
fn acked(ws: &mut Ws, msg: Value) {
    let id = msg["id"].as_i64().expect("an id");
    ws_send(ws, &msg.to_string());
    let (reply, before) = until_reply(ws, id);
    assert_eq!(reply, json!({"type":"ack","id":id}), "reply to {msg}");
    assert!(
        before.is_empty(),
        "unexpected messages before the ack: {before:?}"
    );
}

/// A binary publish: `[L][topic][payload]`.
fn binary_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![topic.len() as u8];
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn subscribe_publish_unsubscribe_with_ids_are_acked() {
    let gw = Gateway::start(&[]);
    let mut c = ws(gw.addr, "/ws");
    acked(&mut c, json!({"type":"subscribe","topic":"news","id":1}));
    // subscribing twice is fine
    acked(&mut c, json!({"type":"subscribe","topic":"news","id":2}));
    // self-delivery: the publisher is a subscriber too
    ws_send(
        &mut c,
        r#"{"type":"publish","topic":"news","data":"hello","id":3}"#,
    );
    let (reply, before) = until_reply(&mut c, 3);
    assert_eq!(reply, json!({"type":"ack","id":3}));
    assert_eq!(
        before,
        vec![json!({"type":"message","topic":"news","data":"hello"})],
        "exactly one delivery of the publish"
    );
    acked(&mut c, json!({"type":"unsubscribe","topic":"news","id":4}));
    // after unsubscribing nothing is delivered: the ack is the next message
    acked(
        &mut c,
        json!({"type":"publish","topic":"news","data":1,"id":5}),
    );
    // unsubscribing from a topic one never had is fine too
    acked(&mut c, json!({"type":"unsubscribe","topic":"other","id":6}));
    // ids may be negative and large
    acked(
        &mut c,
        json!({"type":"subscribe","topic":"x","id":-9_007_199_254_740_993i64}),
    );
    // without an id there is no answer
    ws_send(&mut c, r#"{"type":"subscribe","topic":"quiet"}"#);
    acked(&mut c, json!({"type":"subscribe","topic":"y","id":7}));
}

#[test]
fn errors_carry_the_id_when_there_is_one_and_never_close_the_session() {
    let gw = Gateway::start(&[]);
    let mut c = ws(gw.addr, "/ws");
    let long_topic = "t".repeat(256);
    let cases: Vec<(String, Option<i64>, &str)> = vec![
        (
            r#"{"type":"shout","topic":"a","id":1}"#.into(),
            Some(1),
            "unknown_type",
        ),
        (
            r#"{"type":"shout","topic":"a"}"#.into(),
            None,
            "unknown_type",
        ),
        (r#"{"type":"subscribe","#.into(), None, "invalid_json"),
        (r#"not json at all"#.into(), None, "invalid_json"),
        (
            r#"{"id":2,"type":"subscribe","topic":"#.into(),
            Some(2),
            "invalid_json",
        ),
        (
            format!(r#"{{"type":"subscribe","topic":"{long_topic}","id":3}}"#),
            Some(3),
            "invalid_topic",
        ),
        (
            format!(r#"{{"type":"publish","topic":"{long_topic}","data":1}}"#),
            None,
            "invalid_topic",
        ),
        (
            r#"{"type":"subscribe","topic":"","id":4}"#.into(),
            Some(4),
            "invalid_topic",
        ),
        (
            r#"{"type":"subscribe","id":5}"#.into(),
            Some(5),
            "missing_field",
        ),
        (r#"{"type":"subscribe"}"#.into(), None, "missing_field"),
        (
            r#"{"type":"publish","topic":"a","id":6}"#.into(),
            Some(6),
            "missing_field",
        ),
        (r#"["subscribe","a"]"#.into(), None, "invalid_message"),
    ];
    for (text, id, code) in &cases {
        ws_send(&mut c, text);
        let v = parse(&ws_text(&mut c));
        assert_eq!(v["type"], "error", "{text} -> {v}");
        assert_eq!(v["code"], *code, "{text} -> {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        match id {
            Some(id) => assert_eq!(v["id"], json!(id), "{text} -> {v}"),
            None => assert!(v.get("id").is_none(), "{text} -> {v} has an id"),
        }
    }
    // a topic of exactly 255 bytes is fine
    let max_topic = "m".repeat(255);
    acked(
        &mut c,
        json!({"type":"subscribe","topic":max_topic,"id":10}),
    );
    // bad binary publishes are errors too
    for bad in [vec![], vec![0u8, b'a'], vec![5u8, b'a', b'b']] {
        c.send(tungstenite::Message::binary(bad.clone())).unwrap();
        let v = parse(&ws_text(&mut c));
        assert_eq!(v["type"], "error", "{bad:?} -> {v}");
        assert!(v.get("id").is_none());
    }
    // the session is still open and working
    acked(&mut c, json!({"type":"subscribe","topic":"still","id":11}));
    // more topics than a connection may have is an error too
    let gw2 = Gateway::start(&["--max-topics-per-connection", "2"]);
    let mut c2 = ws(gw2.addr, "/ws?subscribe=one");
    acked(&mut c2, json!({"type":"subscribe","topic":"two","id":1}));
    ws_send(&mut c2, r#"{"type":"subscribe","topic":"three","id":2}"#);
    let v = parse(&ws_text(&mut c2));
    assert_eq!(
        (v["code"].as_str(), v["id"].as_i64()),
        (Some("too_many_topics"), Some(2)),
        "{v}"
    );
    acked(&mut c2, json!({"type":"subscribe","topic":"one","id":3}));
    let errors = gw.metric("wsgate_message_errors_total");
    assert!(
        errors >= cases.len() as f64,
        "wsgate_message_errors_total {errors}"
    );
}

#[test]
fn subscribe_at_connect_with_the_query() {
    let gw = Gateway::start(&[]);
    let mut c = ws(gw.addr, "/ws?subscribe=a,b%2Cc");
    // "b" and "c" alone are not subscribed: only their acks come back
    acked(
        &mut c,
        json!({"type":"publish","topic":"b","data":1,"id":1}),
    );
    acked(
        &mut c,
        json!({"type":"publish","topic":"c","data":2,"id":2}),
    );
    let mut other = ws(gw.addr, "/ws");
    acked(
        &mut other,
        json!({"type":"publish","topic":"b,c","data":3,"id":3}),
    );
    acked(
        &mut other,
        json!({"type":"publish","topic":"a","data":4,"id":4}),
    );
    assert_eq!(
        parse(&ws_text(&mut c)),
        json!({"type":"message","topic":"b,c","data":3})
    );
    assert_eq!(
        parse(&ws_text(&mut c)),
        json!({"type":"message","topic":"a","data":4})
    );
    // a bad topic in the query refuses the upgrade
    let r = common::http(
        gw.addr,
        common::upgrade_request(&format!("/ws?subscribe={}", "z".repeat(256))).as_bytes(),
    );
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn binary_publishes_are_delivered_byte_for_byte() {
    let gw = Gateway::start(&["--workers", "2"]);
    let mut sub = ws(gw.addr, "/ws?subscribe=bin%2F%C3%A9");
    let mut publisher = ws(gw.addr, "/ws");
    let topic = "bin/é";
    for len in [0usize, 1, 100, 70_000, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let msg = binary_publish(topic, &payload);
        publisher
            .send(tungstenite::Message::binary(msg.clone()))
            .unwrap();
        assert!(
            ws_binary(&mut sub) == msg,
            "binary delivery of {len} bytes differs"
        );
    }
    // a publisher that sends a fragmented binary publish
    let mut raw = RawWs::connect(gw.addr, "/ws");
    let msg = binary_publish(topic, b"in three pieces");
    raw.send(false, OpCode::Binary, &msg[..3]);
    raw.send(false, OpCode::Continuation, &msg[3..10]);
    raw.send(true, OpCode::Continuation, &msg[10..]);
    assert_eq!(ws_binary(&mut sub), msg);
}

#[test]
fn data_is_delivered_verbatim() {
    let gw = Gateway::start(&[]);
    let mut sub = ws(gw.addr, "/ws?subscribe=v");
    let mut publisher = ws(gw.addr, "/ws");
    for data in [
        r#"{"x": [1, 2.50, "é"]}"#,
        r#"  [ 1e3 , -0.0 , "\u00e9\n" , null ]"#,
        r#""a string""#,
        "12345678901234567890123",
        "true",
    ] {
        ws_send(
            &mut publisher,
            &format!(r#"{{"type":"publish","topic":"v","data":{data}}}"#),
        );
        let got = ws_text(&mut sub);
        let expected = format!(r#"{{"type":"message","topic":"v","data":{}}}"#, data.trim());
        // leading whitespace inside `data` may be dropped by the parser, nothing else
        assert!(
            got == expected || got == format!(r#"{{"type":"message","topic":"v","data":{data}}}"#),
            "got {got}\nwanted {expected}"
        );
    }
    // a topic that needs JSON escaping is escaped in the delivery
    let mut sub = ws(gw.addr, "/ws?subscribe=q%22uote%5C");
    ws_send(
        &mut publisher,
        r#"{"type":"publish","topic":"q\"uote\\","data":{"k": 1}}"#,
    );
    assert_eq!(
        ws_text(&mut sub),
        r#"{"type":"message","topic":"q\"uote\\","data":{"k": 1}}"#
    );
}

#[test]
fn fanout_across_two_workers_reaches_every_subscriber() {
    let gw = Gateway::start(&["--workers", "2"]);
    let mut subs: Vec<Ws> = (0..40).map(|_| ws(gw.addr, "/ws?subscribe=fan")).collect();
    let mut publisher = ws(gw.addr, "/ws");
    const N: usize = 20;
    for i in 0..N {
        ws_send(
            &mut publisher,
            &format!(r#"{{"type":"publish","topic":"fan","data":{i}}}"#),
        );
    }
    for (s, sub) in subs.iter_mut().enumerate() {
        for i in 0..N {
            assert_eq!(
                ws_text(sub),
                format!(r#"{{"type":"message","topic":"fan","data":{i}}}"#),
                "subscriber {s}, message {i}"
            );
        }
    }
    let m = gw.metrics();
    let w0 = common::metric(&m, "wsgate_fanout_deliveries_total{worker=\"0\"}");
    let w1 = common::metric(&m, "wsgate_fanout_deliveries_total{worker=\"1\"}");
    assert!(w0 > 0.0 && w1 > 0.0, "deliveries by worker: {w0} and {w1}");
    assert_eq!(w0 + w1, (40 * N) as f64, "every delivery is counted once");
}

#[test]
fn one_publisher_s_messages_arrive_in_order_without_gaps() {
    in_order_without_gaps(&[]);
}

#[test]
fn without_io_uring_messages_arrive_in_order_without_gaps_all_the_same() {
    // each subscriber then gets its own send (what a kernel that refuses a ring gets)
    in_order_without_gaps(&["--io-uring", "false"]);
}

fn in_order_without_gaps(args: &[&str]) {
    let gw = Gateway::start(&[&["--workers", "2"], args].concat());
    const N: usize = 10_000;
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut sub = ws(gw.addr, "/ws?subscribe=ord");
            std::thread::spawn(move || {
                for i in 0..N {
                    let got = ws_text(&mut sub);
                    assert_eq!(
                        got,
                        format!(r#"{{"type":"message","topic":"ord","data":{i}}}"#),
                        "message {i}"
                    );
                }
            })
        })
        .collect();
    let mut publisher = ws(gw.addr, "/ws");
    for i in 0..N {
        publisher
            .write(tungstenite::Message::text(format!(
                r#"{{"type":"publish","topic":"ord","data":{i}}}"#
            )))
            .unwrap();
    }
    publisher.flush().unwrap();
    for r in readers {
        r.join().expect("a subscriber saw a gap or a reordering");
    }
}

#[test]
fn http_publish_reaches_websocket_subscribers() {
    let gw = Gateway::start(&["--workers", "2"]);
    let mut subs: Vec<Ws> = (0..4).map(|_| ws(gw.addr, "/ws?subscribe=h%2Fp")).collect();
    let body = r#"{"x": [1, 2.50, "é"]}"#;
    let r = post(
        gw.addr,
        "/publish/h%2Fp",
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{r:?}"
    );
    assert_eq!(parse(&r.text()), json!({"delivered": 4}), "{r:?}");
    for sub in &mut subs {
        assert_eq!(
            ws_text(sub),
            format!(r#"{{"type":"message","topic":"h/p","data":{body}}}"#)
        );
    }
    // any other content type is a binary delivery laid out as a binary publish
    let raw: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    for content_type in [
        "Content-Type: application/octet-stream\r\n",
        "Content-Type: text/plain\r\n",
        "",
    ] {
        let r = post(gw.addr, "/publish/h%2Fp", content_type, &raw);
        assert_eq!(r.status, 202, "{content_type:?}: {r:?}");
        assert_eq!(parse(&r.text()), json!({"delivered": 4}));
        let expected = binary_publish("h/p", &raw);
        for sub in &mut subs {
            assert_eq!(ws_binary(sub), expected, "{content_type:?}");
        }
    }
    // JSON that is not JSON is refused and delivers nothing
    let r = post(
        gw.addr,
        "/publish/h%2Fp",
        "Content-Type: application/json\r\n",
        b"{not json",
    );
    assert_eq!(r.status, 400, "{r:?}");
    // a topic nobody subscribes to: zero deliveries
    let r = post(
        gw.addr,
        "/publish/empty",
        "Content-Type: application/json\r\n",
        b"1",
    );
    assert_eq!(r.status, 202);
    assert_eq!(parse(&r.text()), json!({"delivered": 0}));
    // the first thing the subscribers see next is a fresh publish, not the refused one
    let r = post(
        gw.addr,
        "/publish/h%2Fp",
        "Content-Type: application/json; charset=utf-8\r\n",
        b"[\"last\"]",
    );
    assert_eq!(r.status, 202);
    for sub in &mut subs {
        assert_eq!(
            ws_text(sub),
            r#"{"type":"message","topic":"h/p","data":["last"]}"#
        );
    }
}

#[test]
fn http_publish_needs_the_api_key_when_one_is_set() {
    let gw = Gateway::start(&["--api-key", "s3cret"]);
    let mut sub = ws(gw.addr, "/ws?subscribe=k");
    let json = "Content-Type: application/json\r\n";
    for auth in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer s3cre\r\n",
        "Authorization: Basic czNjcmV0\r\n",
        "Authorization: s3cret\r\n",
    ] {
        let r = post(gw.addr, "/publish/k", &format!("{json}{auth}"), b"1");
        assert_eq!(r.status, 401, "{auth:?}: {r:?}");
    }
    let r = post(
        gw.addr,
        "/publish/k",
        &format!("{json}Authorization: Bearer s3cret\r\n"),
        b"2",
    );
    assert_eq!(r.status, 202, "{r:?}");
    // only the authorised publish was delivered
    assert_eq!(
        ws_text(&mut sub),
        r#"{"type":"message","topic":"k","data":2}"#
    );
}

#[test]
fn a_slow_consumer_is_closed_with_1013_and_others_keep_everything() {
    slow_consumer_closed(&[]);
}

#[test]
fn without_io_uring_a_slow_consumer_is_closed_with_1013_all_the_same() {
    slow_consumer_closed(&["--io-uring", "false"]);
}

fn slow_consumer_closed(args: &[&str]) {
    let gw = Gateway::start(&[&["--workers", "2", "--outbox-limit", "64KiB"], args].concat());
    // the slow one never reads; a small receive buffer makes it fall behind sooner
    let slow_socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    slow_socket.set_recv_buffer_size(4096).unwrap();
    slow_socket.connect(&gw.addr.into()).expect("connect");
    let mut slow_stream: std::net::TcpStream = slow_socket.into();
    slow_stream
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .unwrap();
    slow_stream
        .write_all(common::upgrade_request("/ws?subscribe=flood").as_bytes())
        .unwrap();
    let mut slow = RawWs::finish_upgrade(slow_stream, Vec::new());

    let mut normal = ws(gw.addr, "/ws?subscribe=flood");
    // how many messages the normal subscriber has read: the publisher never runs more than
    // two messages ahead of it, so it is never at fault, however busy the machine is
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let read_so_far = progress.clone();
    let reader = std::thread::spawn(move || {
        // reads every message, checking the sequence, until the end marker
        let mut seen = 0u64;
        loop {
            let got = ws_binary(&mut normal);
            assert_eq!(got.len(), 6 + 16 * 1024);
            let i = u64::from_be_bytes(got[6..14].try_into().unwrap());
            if i == u64::MAX {
                return seen;
            }
            assert_eq!(
                i, seen,
                "the normal subscriber missed or reordered a message"
            );
            seen += 1;
            read_so_far.store(seen, std::sync::atomic::Ordering::Release);
        }
    });
    let flood = |publisher: &mut Ws, i: u64| {
        let mut payload = vec![0u8; 16 * 1024];
        payload[..8].copy_from_slice(&i.to_be_bytes());
        publisher
            .send(tungstenite::Message::binary(binary_publish(
                "flood", &payload,
            )))
            .unwrap();
    };

    let mut publisher = ws(gw.addr, "/ws");
    let mut sent = 0u64;
    let closed = eventually(Duration::from_secs(20), || {
        for _ in 0..64 {
            let caught_up = eventually(common::IO_TIMEOUT, || {
                progress.load(std::sync::atomic::Ordering::Acquire) + 2 > sent
            });
            assert!(caught_up, "the normal subscriber stopped receiving");
            flood(&mut publisher, sent);
            sent += 1;
        }
        gw.metric("wsgate_slow_consumer_closes_total") >= 1.0
    });
    assert!(closed, "no slow consumer close after {sent} messages");
    // the slow consumer gets an unbroken run of the first messages, then a close with 1013:
    // it may lose the tail, never a message in the middle
    let mut next = 0u64;
    loop {
        match slow.recv() {
            Message::Binary(b) => {
                let i = u64::from_be_bytes(b[6..14].try_into().unwrap());
                assert_eq!(i, next, "the slow consumer saw a gap");
                next += 1;
            }
            Message::Close(c) => {
                assert_eq!(c.map(|c| c.code.0), Some(1013));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        next < sent,
        "the slow consumer got everything: it was not slow"
    );
    // the normal subscriber got every message
    flood(&mut publisher, u64::MAX);
    assert_eq!(reader.join().expect("normal subscriber failed"), sent);
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total"), 1.0);
    assert!(gw.metric("wsgate_closes_sent_total{code=\"1013\"}") >= 1.0);
}

#[test]
fn a_burst_larger_than_the_outbox_limit_does_not_close_a_subscriber_that_reads() {
    // The publisher writes 32 messages of 16 KiB in one go: the gateway reads them in one
    // turn of its loop, which is far more than the 64 KiB limit, but the subscriber's socket
    // takes it all, so nobody is slow.
    let gw = Gateway::start(&["--workers", "1", "--outbox-limit", "64KiB"]);
    let mut sub = ws(gw.addr, "/ws?subscribe=burst");
    let mut publisher = ws(gw.addr, "/ws");
    for i in 0..32u8 {
        let payload = vec![i; 16 * 1024];
        publisher
            .write(tungstenite::Message::binary(binary_publish(
                "burst", &payload,
            )))
            .unwrap();
    }
    publisher.flush().unwrap();
    for i in 0..32u8 {
        let got = ws_binary(&mut sub);
        assert!(
            got.len() == 6 + 16 * 1024 && got[6..].iter().all(|&b| b == i),
            "message {i}"
        );
    }
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total"), 0.0);
}
