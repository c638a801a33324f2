//! History across nodes: two gateways joined by a real redis-server, whose `[[history]]`
//! topics Redis numbers (one script per publish), so that every node gives a message the same
//! offset, and a client can recover on any node, also after its own node drained; a Redis
//! restart (which loses its data: a new epoch) is told to every subscriber as a gap, never
//! silence; a publish that cannot be numbered is refused, never delivered without an offset.
//!
//! redis-server must be installed (deploy/test-setup.sh does it).

mod common;
mod lb;

use common::{Gateway, Ws, eventually, post, ws, ws_send, ws_text};
use lb::{Redis, ws_expect_close, ws_text_within};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a test waits for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(15);

const RULE: &str = r#"topics = "h.*", size = 100, ttl = "5m""#;

/// A node with two workers, joined to `redis` as `id`, keeping history of `h.*`; returns once
/// its link to Redis is up.
fn node(redis: &Redis, id: &str, extra: &[&str]) -> Gateway {
    let url = redis.url();
    let mut args = vec![
        "--workers",
        "2",
        "--redis",
        &url,
        "--node-id",
        id,
        "--history",
        RULE,
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&args);
    // publishes to a history topic are refused until the node's link to Redis is up
    assert!(
        eventually(SETTLE, || gw.metric("wsgate_cluster_up") == 1.0),
        "node {id} never joined Redis"
    );
    gw
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// Reads until the ack or error answering `id`; returns it and the texts before it.
fn until_reply(ws: &mut Ws, id: i64) -> (Value, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let text = ws_text(ws);
        let v = parse(&text);
        if v["id"] == json!(id) && (v["type"] == "ack" || v["type"] == "error") {
            return (v, before);
        }
        before.push(text);
    }
}

/// Subscribes with `id`, recovering when asked; returns the ack and the texts before it.
fn subscribe(
    ws: &mut Ws,
    topic: &str,
    id: i64,
    recover: Option<(u64, &str)>,
) -> (Value, Vec<String>) {
    let mut msg = json!({"type":"subscribe","topic":topic,"id":id});
    if let Some((offset, epoch)) = recover {
        msg["recover"] = json!({"offset":offset,"epoch":epoch});
    }
    ws_send(ws, &msg.to_string());
    until_reply(ws, id)
}

/// A plain subscribe: the ack's offset and epoch, nothing before it.
fn join(ws: &mut Ws, topic: &str, id: i64) -> (u64, String) {
    let (ack, before) = subscribe(ws, topic, id, None);
    assert!(before.is_empty(), "messages before the ack: {before:?}");
    let epoch = ack["epoch"].as_str().unwrap_or_else(|| panic!("{ack}"));
    assert!(!epoch.is_empty(), "{ack}");
    (
        ack["offset"].as_u64().expect("an offset"),
        epoch.to_string(),
    )
}

/// What a subscriber of `topic` gets for the message of `offset` published with `data`.
fn delivery(topic: &str, offset: u64, data: &str) -> String {
    format!(r#"{{"type":"message","topic":"{topic}","offset":{offset},"data":{data}}}"#)
}

/// POST /publish/TOPIC with a JSON body; returns the status.
fn publish_http(addr: SocketAddr, topic: &str, data: &str) -> u16 {
    let r = post(
        addr,
        &format!("/publish/{topic}"),
        "Content-Type: application/json\r\n",
        data.as_bytes(),
    );
    if r.status == 202 {
        // Redis gives the offset after the answer: the answer has none
        let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            answer["delivered"].is_u64() && answer.get("offset").is_none(),
            "{answer}"
        );
    }
    r.status
}

/// Reads `n` texts.
fn texts(ws: &mut Ws, n: usize) -> Vec<String> {
    (0..n).map(|_| ws_text(ws)).collect()
}

#[test]
fn every_node_gives_a_message_the_offset_redis_gave_it() {
    let redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut sa = ws(a.addr, "/ws");
    let mut sb = ws(b.addr, "/ws");
    let (oa, ea) = join(&mut sa, "h.x", 1);
    let (ob, eb) = join(&mut sb, "h.x", 1);
    assert_eq!((oa, ob), (0, 0), "nothing published yet");
    assert_eq!(ea, eb, "one epoch, Redis', on every node");

    // publishes alternate between the nodes, over HTTP and over WebSocket; Redis orders
    // those of different nodes as they reach it
    let mut pa = ws(a.addr, "/ws");
    let mut want = Vec::new();
    let mut acked = Vec::new();
    for i in 1..=20u64 {
        let data = format!(r#"{{"i":{i}}}"#);
        if i % 2 == 0 {
            assert_eq!(publish_http(b.addr, "h.x", &data), 202);
        } else {
            ws_send(
                &mut pa,
                &json!({"type":"publish","topic":"h.x","data":{"i":i},"id":i}).to_string(),
            );
            // answered once Redis has numbered it: with the offset it gave, and the epoch
            let ack = parse(&ws_text(&mut pa));
            let offset = ack["offset"].as_u64().unwrap_or_else(|| panic!("{ack}"));
            assert_eq!(
                ack,
                json!({"type":"ack","id":i,"offset":offset,"epoch":ea}),
                "the answer to publish {i}"
            );
            acked.push((i, offset));
        }
        want.push(data);
    }
    let got = texts(&mut sa, 20);
    assert_eq!(
        texts(&mut sb, 20),
        got,
        "the same offsets for the same messages on both"
    );
    let mut seen = Vec::new();
    for (i, text) in got.iter().enumerate() {
        let v = parse(text);
        assert_eq!(
            v["offset"],
            json!(i + 1),
            "offsets from 1 without holes: {got:?}"
        );
        seen.push(v["data"].to_string());
    }
    seen.sort();
    want.sort();
    assert_eq!(seen, want, "every message once");
    // each WebSocket publish was answered with the offset its message came with
    for (i, offset) in acked {
        let v = parse(&got[offset as usize - 1]);
        assert_eq!(
            v["data"],
            json!({"i":i}),
            "the message at the offset acked for {i}"
        );
    }

    // a subscriber that comes later on either node starts where both are
    for gw in [&a, &b] {
        let mut late = ws(gw.addr, "/ws");
        assert_eq!(join(&mut late, "h.x", 9), (20, ea.clone()));
    }
    // and Redis holds the stream the nodes mirror
    let len = redis.command(&["XLEN", "{wsgate:h.x}:stream"]);
    assert!(matches!(len, lb::Resp::Int(20)), "{len:?}");
}

/// Publishes `data` to `topic` over `p` (with `id` when given); returns the answer when an
/// `id` asks for one.
fn publish_ws(p: &mut Ws, topic: &str, data: i64, id: Option<i64>) -> Option<Value> {
    let mut msg = json!({"type":"publish","topic":topic,"data":data});
    if let Some(id) = id {
        msg["id"] = json!(id);
    }
    ws_send(p, &msg.to_string());
    id.map(|_| parse(&ws_text(p)))
}

#[test]
fn a_publish_redis_does_not_keep_is_answered_unavailable_and_the_next_with_its_offset() {
    let redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    // the topic's hash is a string: the numbering script fails on it
    redis.command(&["SET", "{wsgate:h.broken}:meta", "not a hash"]);
    let mut p = ws(a.addr, "/ws");
    let v = publish_ws(&mut p, "h.broken", 1, Some(7)).unwrap();
    assert_eq!(
        (&v["type"], &v["id"], &v["code"]),
        (&json!("error"), &json!(7), &json!("unavailable")),
        "{v}"
    );
    // the session goes on, and a sound topic's publish is answered with its position
    let v = publish_ws(&mut p, "h.sound", 2, Some(8)).unwrap();
    assert_eq!(
        (&v["type"], &v["id"], &v["offset"]),
        (&json!("ack"), &json!(8), &json!(1)),
        "{v}"
    );
    assert!(v["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    // a publish without an id gets no answer: the next answer is the next publish's
    publish_ws(&mut p, "h.sound", 3, None);
    let v = publish_ws(&mut p, "h.sound", 4, Some(9)).unwrap();
    assert_eq!((&v["id"], &v["offset"]), (&json!(9), &json!(3)), "{v}");
}

#[test]
fn a_client_recovers_on_another_node_after_its_node_drains() {
    let redis = Redis::start_new();
    let mut a = node(
        &redis,
        "a",
        &["--drain-grace", "0s", "--drain-timeout", "5s"],
    );
    let b = node(&redis, "b", &[]);
    let mut client = ws(a.addr, "/ws");
    let (offset, epoch) = join(&mut client, "h.room", 1);
    assert_eq!(offset, 0);
    for i in 1..=5u64 {
        assert_eq!(publish_http(b.addr, "h.room", &i.to_string()), 202);
    }
    let got = texts(&mut client, 5);
    assert_eq!(got[4], delivery("h.room", 5, "5"));

    a.sigterm();
    assert_eq!(ws_expect_close(&mut client), Some(1001), "drained");
    assert!(a.wait_exit(Duration::from_secs(10)).is_some());
    // published while the client has no node, on the node nobody there listens to
    for i in 6..=9u64 {
        assert_eq!(publish_http(b.addr, "h.room", &i.to_string()), 202);
    }
    let mut again = ws(b.addr, "/ws");
    let (ack, before) = subscribe(&mut again, "h.room", 2, Some((5, &epoch)));
    let want: Vec<String> = (6..=9)
        .map(|i| delivery("h.room", i, &i.to_string()))
        .collect();
    assert_eq!(before, want, "what it missed, in order, before the ack");
    assert_eq!(
        ack,
        json!({"type":"ack","id":2,"topic":"h.room","offset":9,"epoch":epoch,"recovered":true})
    );
    assert_eq!(publish_http(b.addr, "h.room", "10"), 202);
    assert_eq!(
        ws_text(&mut again),
        delivery("h.room", 10, "10"),
        "then live"
    );

    // another epoch is never recovered as if it were this one
    let mut stranger = ws(b.addr, "/ws");
    let (ack, before) = subscribe(&mut stranger, "h.room", 3, Some((2, "another")));
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["recovered"], json!(false), "{ack}");
    assert_eq!(ack["reason"], json!("epoch"), "{ack}");
    assert_eq!(
        (ack["offset"].clone(), ack["epoch"].clone()),
        (json!(10), json!(epoch))
    );
}

#[test]
fn a_redis_restart_is_a_gap_notice_and_a_new_epoch_never_silence() {
    let mut redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut sa = ws(a.addr, "/ws");
    let mut sb = ws(b.addr, "/ws");
    let (_, epoch) = join(&mut sa, "h.t", 1);
    join(&mut sb, "h.t", 1);
    for i in 1..=3u64 {
        assert_eq!(publish_http(a.addr, "h.t", &i.to_string()), 202);
    }
    assert_eq!(texts(&mut sa, 3), texts(&mut sb, 3));

    redis.stop();
    assert!(
        eventually(SETTLE, || a.metric("wsgate_cluster_up") == 0.0),
        "node a never saw Redis go"
    );
    // nothing can be numbered: refused, never delivered without an offset
    let status = publish_http(a.addr, "h.t", "\"lost\"");
    assert_eq!(status, 503, "a publish to a history topic with Redis down");
    let mut p = ws(a.addr, "/ws");
    ws_send(
        &mut p,
        r#"{"type":"publish","topic":"h.t","data":1,"id":5}"#,
    );
    let refused = parse(&ws_text(&mut p));
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("unavailable"))
    );
    assert!(ws_text_within(&mut sa, Duration::from_millis(300)).is_none());

    // a client that reconnects meanwhile recovers from the node's mirror, which was whole
    let mut back = ws(b.addr, "/ws");
    let (ack, before) = subscribe(&mut back, "h.t", 7, Some((1, &epoch)));
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(ack["recovered"], json!(true), "{ack}");

    redis.start();
    // Redis lost the stream: every subscriber is told, once, before anything after it
    for (name, s) in [("a", &mut sa), ("b", &mut sb), ("b again", &mut back)] {
        let got = ws_text_within(s, SETTLE).unwrap_or_else(|| panic!("{name}: silence"));
        assert_eq!(parse(&got), json!({"type":"gap","topic":"h.t"}), "{name}");
    }
    assert!(
        eventually(SETTLE, || publish_http(a.addr, "h.t", "\"after\"") == 202),
        "publishes never came back"
    );
    let after = delivery("h.t", 1, "\"after\"");
    for (name, s) in [("a", &mut sa), ("b", &mut sb), ("b again", &mut back)] {
        let got = ws_text_within(s, SETTLE).unwrap_or_else(|| panic!("{name}: nothing"));
        assert_eq!(got, after, "{name}: offsets start again in the new epoch");
    }
    let mut late = ws(b.addr, "/ws");
    let (offset, new_epoch) = join(&mut late, "h.t", 8);
    assert_eq!(offset, 1);
    assert_ne!(new_epoch, epoch, "Redis lost the stream: a new epoch");
    let (ack, _) = subscribe(&mut late, "h.t", 9, Some((3, &epoch)));
    assert_eq!(ack["reason"], json!("epoch"), "{ack}");
}

#[test]
fn a_quiet_topic_with_subscribers_keeps_its_epoch_past_its_ttl() {
    // Redis lets a topic's keys expire `ttl` after its last publish; a node with subscribers
    // keeps the epoch alive, so a quiet topic is not a new stream (which would be a gap)
    let redis = Redis::start_new();
    let rule = r#"topics = "q.*", size = 10, ttl = "1500ms""#;
    let a = node(&redis, "a", &["--history", rule]);
    let b = node(&redis, "b", &["--history", rule]);
    let mut sa = ws(a.addr, "/ws");
    let (_, epoch) = join(&mut sa, "q.t", 1);
    assert_eq!(publish_http(b.addr, "q.t", "1"), 202);
    assert_eq!(ws_text(&mut sa), delivery("q.t", 1, "1"));
    // quiet for twice the ttl: the message has expired, the epoch has not
    std::thread::sleep(Duration::from_millis(3000));
    let ttl = redis.command(&["PTTL", "{wsgate:q.t}:meta"]);
    assert!(matches!(ttl, lb::Resp::Int(ms) if ms > 0), "{ttl:?}");
    assert_eq!(publish_http(b.addr, "q.t", "2"), 202);
    assert_eq!(
        ws_text(&mut sa),
        delivery("q.t", 2, "2"),
        "no gap, the same stream"
    );
    let mut late = ws(b.addr, "/ws");
    assert_eq!(join(&mut late, "q.t", 2), (2, epoch.clone()));
    // the expired message is no longer recovered; what followed it is
    let (ack, before) = subscribe(&mut late, "q.t", 3, Some((0, &epoch)));
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["reason"], json!("too_old"), "{ack}");
    let (ack, before) = subscribe(&mut late, "q.t", 4, Some((1, &epoch)));
    assert_eq!(before, [delivery("q.t", 2, "2")]);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
}

#[test]
fn redis_keeps_the_last_size_messages_and_a_node_new_to_the_topic_recovers_from_them() {
    let redis = Redis::start_new();
    let rule = r#"topics = "s.*", size = 5, ttl = "5m""#;
    let a = node(&redis, "a", &["--history", rule]);
    let b = node(&redis, "b", &["--history", rule]);
    let mut sa = ws(a.addr, "/ws");
    let (_, epoch) = join(&mut sa, "s.t", 1);
    for i in 1..=8u64 {
        assert_eq!(publish_http(a.addr, "s.t", &i.to_string()), 202);
    }
    assert_eq!(texts(&mut sa, 8)[7], delivery("s.t", 8, "8"));
    let len = redis.command(&["XLEN", "{wsgate:s.t}:stream"]);
    assert!(matches!(len, lb::Resp::Int(5)), "{len:?}");

    // node b has never listened to the topic: its mirror is primed from Redis' stream
    let mut c = ws(b.addr, "/ws");
    let (ack, before) = subscribe(&mut c, "s.t", 2, Some((3, &epoch)));
    let want: Vec<String> = (4..=8)
        .map(|i| delivery("s.t", i, &i.to_string()))
        .collect();
    assert_eq!(before, want);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let mut d = ws(b.addr, "/ws");
    let (ack, before) = subscribe(&mut d, "s.t", 3, Some((2, &epoch)));
    assert!(
        before.is_empty(),
        "never a part presented as the whole: {before:?}"
    );
    assert_eq!(ack["reason"], json!("too_old"), "{ack}");
    assert_eq!(ack["offset"], json!(8), "{ack}");
}
