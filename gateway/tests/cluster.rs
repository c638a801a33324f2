//! Two gateways joined by a real redis-server, behind a real HAProxy or nginx: every subscriber
//! gets every message once and in order whichever node it landed on and whichever node the
//! publisher used; a draining node's clients move to the other node; a Redis restart is
//! survived; the PROXY protocol and X-Forwarded-For give the gateway the client's address.
//!
//! redis-server, haproxy and nginx must be installed (deploy/test-setup.sh does it); a missing
//! one fails the test that needs it.

mod common;
mod lb;

use common::{Gateway, HttpResponse, Ws, eventually, get, post, read_response, ws_send, ws_text};
use lb::{Haproxy, Nginx, Redis, connect_from, lo, ws_expect_close, ws_from, ws_text_within};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// How long a test waits for the cluster to settle (Redis confirming subscriptions, a
/// reconnection after its backoff).
const SETTLE: Duration = Duration::from_secs(15);

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// A gateway node of the cluster: two workers, joined to `redis` as `id`.
fn node(redis: &Redis, id: &str, extra: &[&str]) -> Gateway {
    let url = redis.url();
    let mut args = vec!["--workers", "2", "--redis", &url, "--node-id", id];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// One series of a Prometheus text, or `None` when it is not there.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// GET /metrics on `addr` from the source address `src`.
fn metrics_from(src: IpAddr, addr: SocketAddr) -> String {
    let mut s = connect_from(src, addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer to GET /metrics");
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

/// A series of a node's /metrics, or `None` when it is not there (yet).
fn m(gw: &Gateway, name: &str) -> Option<f64> {
    series(&gw.metrics(), name)
}

/// A series that must be there.
fn must(gw: &Gateway, name: &str) -> f64 {
    let text = gw.metrics();
    series(&text, name).unwrap_or_else(|| panic!("no series {name} in /metrics:\n{text}"))
}

/// Waits until `name` has `value` on every node.
fn wait_metric(nodes: &[&Gateway], name: &str, value: f64) {
    for (i, gw) in nodes.iter().enumerate() {
        let mut last = None;
        let ok = eventually(SETTLE, || {
            last = m(gw, name);
            last == Some(value)
        });
        assert!(
            ok,
            "node {i} ({}): {name} is {last:?}, not {value} after {SETTLE:?}",
            gw.addr
        );
    }
}

/// Waits until every node is subscribed to `n` Redis channels, as Redis confirmed.
fn wait_channels(nodes: &[&Gateway], n: u32) {
    wait_metric(nodes, "wsgate_cluster_channels", f64::from(n));
}

/// `{"p":PUBLISHER,"i":SEQ}`, the data of every test publish.
fn data(publisher: &str, i: usize) -> String {
    json!({"p": publisher, "i": i}).to_string()
}

/// `K` publishes of `topic` from one WebSocket session (ids 1..=K), then their `K` acks.
fn ws_publisher(addr: SocketAddr, topic: &str, name: &str, k: usize) -> JoinHandle<()> {
    let (topic, name) = (topic.to_string(), name.to_string());
    std::thread::spawn(move || {
        let mut p = common::ws(addr, "/ws");
        for i in 0..k {
            ws_send(
                &mut p,
                &format!(
                    r#"{{"type":"publish","topic":"{topic}","data":{},"id":{}}}"#,
                    data(&name, i),
                    i + 1
                ),
            );
        }
        for i in 0..k {
            let v = parse(&ws_text(&mut p));
            assert_eq!(v, json!({"type":"ack","id":i + 1}), "publisher {name}");
        }
    })
}

/// `K` sequential `POST /publish/{topic}` to one node, each answered 202 before the next.
fn post_publisher(addr: SocketAddr, topic: &str, name: &str, k: usize) -> JoinHandle<()> {
    let (topic, name) = (topic.to_string(), name.to_string());
    std::thread::spawn(move || {
        for i in 0..k {
            let r = post(
                addr,
                &format!("/publish/{topic}"),
                "Content-Type: application/json\r\n",
                data(&name, i).as_bytes(),
            );
            assert_eq!(r.status, 202, "publisher {name}: {r:?}");
        }
    })
}

/// Reads `n` deliveries of `topic` on a subscriber, in a thread; gives back the session and the
/// `(publisher, seq)` of each, in arrival order.
fn collect(mut ws: Ws, topic: &str, n: usize) -> JoinHandle<(Ws, Vec<(String, u64)>)> {
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let text = ws_text_within(&mut ws, Duration::from_secs(10)).unwrap_or_else(|| {
                panic!(
                    "a subscriber got {} of {n} messages, then nothing for 10 s; \
                     the last ones: {:?}",
                    got.len(),
                    &got[got.len().saturating_sub(5)..]
                )
            });
            let v = parse(&text);
            assert_eq!(v["type"], "message", "{v}");
            assert_eq!(v["topic"], topic.as_str(), "{v}");
            let p = v["data"]["p"].as_str().expect("data.p").to_string();
            let i = v["data"]["i"].as_u64().expect("data.i");
            got.push((p, i));
        }
        (ws, got)
    })
}

/// Every publisher's messages arrived once each, in publish order (0..k), and nothing else.
fn check_order(who: &str, got: &[(String, u64)], publishers: &[(&str, usize)]) {
    let mut next: HashMap<&str, u64> = publishers.iter().map(|(p, _)| (*p, 0)).collect();
    for (p, i) in got {
        let Some(expected) = next.get_mut(p.as_str()) else {
            panic!("{who}: a message from unknown publisher {p:?}");
        };
        assert_eq!(
            *i, *expected,
            "{who}: from {p}, message {i} arrived when {expected} was next (lost, duplicated \
             or reordered)"
        );
        *expected += 1;
    }
    for (p, k) in publishers {
        assert_eq!(next[p], *k as u64, "{who}: got {} of {k} from {p}", next[p]);
    }
}

/// Runs `publishers` (each publishing `k` messages under its name) while `placed` subscribers
/// of `topic` collect, then checks that every subscriber got every publisher's messages once
/// and in order. Returns the subscribers' sessions.
fn publish_and_check<Node: std::fmt::Display>(
    placed: Vec<(Ws, Node)>,
    topic: &str,
    publishers: Vec<(&str, JoinHandle<()>)>,
    k: usize,
) -> Vec<Ws> {
    let readers: Vec<_> = placed
        .into_iter()
        .map(|(s, on)| (collect(s, topic, publishers.len() * k), on))
        .collect();
    let names: Vec<(&str, usize)> = publishers.iter().map(|(name, _)| (*name, k)).collect();
    for (_, p) in publishers {
        p.join().expect("a publisher failed");
    }
    let mut sessions = Vec::new();
    for (i, (r, on)) in readers.into_iter().enumerate() {
        let (s, got) = r.join().expect("a subscriber failed");
        check_order(&format!("subscriber {i} (node {on})"), &got, &names);
        sessions.push(s);
    }
    sessions
}

/// Opens `n` subscribers of `topic` through the balancer at `lb`, and tells which node each
/// landed on (by the nodes' upgrade counters): returns `(session, node index)`.
fn subscribers_through(
    lb: SocketAddr,
    nodes: &[&Gateway],
    topic: &str,
    n: usize,
) -> Vec<(Ws, usize)> {
    let upgrades = |gw: &Gateway| must(gw, "wsgate_upgrades_total");
    (0..n)
        .map(|_| {
            let before: Vec<f64> = nodes.iter().map(|g| upgrades(g)).collect();
            let s = common::ws(lb, &format!("/ws?subscribe={topic}"));
            let mut on = None;
            let ok = eventually(Duration::from_secs(5), || {
                let now: Vec<f64> = nodes.iter().map(|g| upgrades(g)).collect();
                let moved: Vec<usize> = (0..nodes.len()).filter(|&i| now[i] > before[i]).collect();
                assert!(moved.len() <= 1, "one upgrade counted on several nodes");
                on = moved.first().copied();
                on.is_some()
            });
            assert!(ok, "no node counted the upgrade");
            (s, on.unwrap())
        })
        .collect()
}

/// The node counts of a placement.
fn per_node(placed: &[(Ws, usize)], nodes: usize) -> Vec<usize> {
    (0..nodes)
        .map(|i| placed.iter().filter(|(_, n)| *n == i).count())
        .collect()
}

#[test]
fn through_haproxy_every_subscriber_gets_every_message_in_order() {
    const N: usize = 10;
    const K: usize = 200;
    let redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let haproxy = Haproxy::start(&[a.addr, b.addr], false);

    let placed = subscribers_through(haproxy.addr, &[&a, &b], "news", N);
    let counts = per_node(&placed, 2);
    assert!(
        counts.iter().all(|&c| c > 0),
        "round robin put the subscribers on one node only: {counts:?}"
    );
    assert_eq!(must(&a, "wsgate_cluster_up"), 1.0);
    assert_eq!(must(&b, "wsgate_cluster_up"), 1.0);
    wait_channels(&[&a, &b], 1);
    let channels = redis.channels(false);
    assert_eq!(
        channels.len(),
        1,
        "one Redis channel per topic: {channels:?}"
    );
    assert!(
        channels[0].starts_with("wsgate:") && channels[0].contains("news"),
        "the channel of topic news under the default prefix: {channels:?}"
    );

    let mut sessions = publish_and_check(
        placed,
        "news",
        vec![
            ("ws", ws_publisher(haproxy.addr, "news", "ws", K)),
            ("post-a", post_publisher(a.addr, "news", "post-a", K)),
            ("post-b", post_publisher(b.addr, "news", "post-b", K)),
        ],
        K,
    );
    // exactly once: nothing more comes (a duplicate would come late)
    for (i, s) in sessions.iter_mut().enumerate() {
        if let Some(extra) = ws_text_within(s, Duration::from_millis(300)) {
            panic!("subscriber {i} got a message too many: {extra}");
        }
    }
    // a binary publish crosses nodes byte for byte
    let payload: Vec<u8> = (0..=255u8).collect();
    let r = post(
        a.addr,
        "/publish/news",
        "Content-Type: application/octet-stream\r\n",
        &payload,
    );
    assert_eq!(r.status, 202, "{r:?}");
    let mut frame = vec![4u8];
    frame.extend_from_slice(b"news");
    frame.extend_from_slice(&payload);
    for s in &mut sessions {
        assert_eq!(common::ws_binary(s), frame);
    }

    // each node sent its own publishes to Redis, took the other's, and skipped its own
    for (name, gw) in [("a", &a), ("b", &b)] {
        assert!(
            must(gw, "wsgate_cluster_published_total") >= K as f64,
            "node {name}"
        );
        assert!(
            must(gw, "wsgate_cluster_received_total") >= K as f64,
            "node {name}"
        );
        assert!(
            must(gw, "wsgate_cluster_own_skipped_total") >= K as f64,
            "node {name}: its own {K} POSTs came back from Redis and were skipped"
        );
        assert_eq!(
            must(gw, "wsgate_cluster_dropped_total{reason=\"redis_down\"}"),
            0.0
        );
        assert_eq!(
            must(gw, "wsgate_cluster_dropped_total{reason=\"queue_full\"}"),
            0.0
        );
    }
}

#[test]
fn sigterm_drains_one_node_clients_reconnect_to_the_other() {
    let redis = Redis::start_new();
    let mut a = node(
        &redis,
        "a",
        &["--drain-grace", "3s", "--drain-timeout", "10s"],
    );
    let b = node(&redis, "b", &["--drain-grace", "3s"]);
    let mut haproxy = Haproxy::start(&[a.addr, b.addr], false);

    let placed = subscribers_through(haproxy.addr, &[&a, &b], "feed", 6);
    let counts = per_node(&placed, 2);
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    let (mut on_a, mut on_b): (Vec<_>, Vec<_>) = placed.into_iter().partition(|(_, n)| *n == 0);

    a.sigterm();
    assert!(
        eventually(Duration::from_secs(3), || get(a.addr, "/readyz").status
            == 503),
        "/readyz of the draining node never turned 503"
    );
    // the health check takes it out of rotation well within the grace
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(2), || {
            last = haproxy.status(0);
            last.starts_with("DOWN")
        }),
        "HAProxy still has the draining node as {last:?}"
    );
    // new clients all land on the other node; none is even tried on the draining one
    let a_upgrades = must(&a, "wsgate_upgrades_total");
    let b_upgrades = must(&b, "wsgate_upgrades_total");
    let mut fresh: Vec<Ws> = (0..4)
        .map(|_| common::ws(haproxy.addr, "/ws?subscribe=feed"))
        .collect();
    assert_eq!(must(&b, "wsgate_upgrades_total"), b_upgrades + 4.0);
    assert_eq!(must(&a, "wsgate_upgrades_total"), a_upgrades);
    assert_eq!(
        must(&a, "wsgate_handshake_failures_total{reason=\"draining\"}"),
        0.0,
        "HAProxy routed a new client to the draining node"
    );

    // after the grace, the draining node's clients get 1001 and reconnect through HAProxy
    let mut moved = Vec::new();
    for (s, _) in &mut on_a {
        assert_eq!(ws_expect_close(s), Some(1001));
        let before = must(&b, "wsgate_upgrades_total");
        moved.push(common::ws(haproxy.addr, "/ws?subscribe=feed"));
        assert_eq!(
            must(&b, "wsgate_upgrades_total"),
            before + 1.0,
            "a reconnecting client did not land on the remaining node"
        );
    }
    let status = a
        .wait_exit(Duration::from_secs(10))
        .expect("the drained node did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}");
    haproxy.assert_running();

    // everyone, on the remaining node now, gets what is published after
    let k = 5;
    post_publisher(b.addr, "feed", "after", k).join().unwrap();
    let mut everyone: Vec<&mut Ws> = on_b.iter_mut().map(|(s, _)| s).collect();
    everyone.extend(fresh.iter_mut());
    everyone.extend(moved.iter_mut());
    for (i, s) in everyone.into_iter().enumerate() {
        for seq in 0..k {
            let v = parse(&ws_text(s));
            assert_eq!(v["data"], parse(&data("after", seq)), "client {i}: {v}");
        }
    }
}

#[test]
fn redis_restart_cross_node_delivery_resumes() {
    let mut redis = Redis::start_new();
    let mut a = node(&redis, "a", &[]);
    let mut b = node(&redis, "b", &[]);
    let mut sa = common::ws(a.addr, "/ws?subscribe=t");
    let mut sb = common::ws(b.addr, "/ws?subscribe=t");
    wait_channels(&[&a, &b], 1);
    let publish = |gw: &Gateway, text: &str| {
        let r = post(
            gw.addr,
            "/publish/t",
            "Content-Type: application/json\r\n",
            json!(text).to_string().as_bytes(),
        );
        assert_eq!(r.status, 202, "{r:?}");
    };
    let data_of = |s: &mut Ws| parse(&ws_text(s))["data"].clone();

    publish(&a, "before");
    assert_eq!(data_of(&mut sa), "before");
    assert_eq!(data_of(&mut sb), "before", "cross-node delivery");

    redis.stop();
    wait_metric(&[&a, &b], "wsgate_cluster_up", 0.0);
    for i in 0..5 {
        publish(&a, &format!("during-{i}"));
    }
    for i in 0..5 {
        assert_eq!(
            data_of(&mut sa),
            json!(format!("during-{i}")),
            "local delivery goes on without Redis"
        );
    }
    if let Some(m) = ws_text_within(&mut sb, Duration::from_millis(500)) {
        panic!("a message crossed nodes with Redis down: {m}");
    }
    assert!(
        must(&a, "wsgate_cluster_dropped_total{reason=\"redis_down\"}") >= 1.0,
        "publishes made while Redis is down are counted as dropped"
    );

    redis.start();
    wait_metric(&[&a, &b], "wsgate_cluster_up", 1.0);
    wait_channels(&[&a, &b], 1);
    // each node tells its subscribers they may have missed messages during the outage, once,
    // before anything after it
    for (name, s) in [("a", &mut sa), ("b", &mut sb)] {
        assert_eq!(
            parse(&ws_text(s)),
            json!({"type": "gap", "topic": "t"}),
            "subscriber on {name}"
        );
    }
    publish(&a, "after");
    assert_eq!(data_of(&mut sa), "after");
    assert_eq!(
        data_of(&mut sb),
        "after",
        "cross-node delivery resumed (and nothing published during the outage came late)"
    );
    publish(&b, "after-b");
    assert_eq!(data_of(&mut sa), "after-b", "and the other way");
    assert_eq!(data_of(&mut sb), "after-b");

    for (name, gw) in [("a", &mut a), ("b", &mut b)] {
        assert!(gw.wait_exit(Duration::ZERO).is_none(), "node {name} died");
        assert!(
            must(gw, "wsgate_cluster_reconnects_total") >= 1.0,
            "node {name}"
        );
        assert_eq!(must(gw, "wsgate_gap_notices_total"), 1.0, "node {name}");
        // the log comes from the process' stderr through another thread, and the line is
        // written just after the link is marked up: wait for it before counting
        assert!(
            eventually(SETTLE, || gw.log().contains("redis reconnected")),
            "node {name} never said `redis reconnected`:\n{}",
            gw.log()
        );
        let log = gw.log();
        let unreachable = log
            .lines()
            .filter(|l| l.contains("unreachable") && !l.contains("DEBUG"))
            .count();
        assert_eq!(
            unreachable, 1,
            "node {name} should say once that Redis is unreachable, said it {unreachable} \
             times:\n{log}"
        );
        let back = log
            .lines()
            .filter(|l| l.contains("redis reconnected"))
            .count();
        assert_eq!(back, 1, "node {name}: `redis reconnected` once:\n{log}");
    }
}

/// An upgrade request for `path` with extra header lines (each ending in `\r\n`).
fn upgrade_with(path: &str, headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n",
        common::KEY
    )
}

/// Sends `bytes` to `dst` from `src` and reads the answer; a 101 leaves the session open until
/// the returned stream is dropped.
fn raw_from(src: IpAddr, dst: SocketAddr, bytes: &[u8]) -> (HttpResponse, std::net::TcpStream) {
    let mut s = connect_from(src, dst);
    s.write_all(bytes).unwrap();
    let r = read_response(&mut s, &mut Vec::new()).expect("an answer");
    (r, s)
}

#[test]
fn proxy_protocol_through_haproxy_sees_client_address() {
    // one node, so that the per-address limit counts every connection of a client
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "true",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "2",
    ]);
    // HAProxy's health checks carry a PROXY header too: the node must be UP
    let haproxy = Haproxy::start(&[gw.addr], true);
    let direct = lo(5); // not a trusted proxy: a plain client of the node
    let refused = |text: &str| {
        series(
            text,
            "wsgate_handshake_failures_total{reason=\"too_many_from_address\"}",
        )
        .unwrap()
    };

    let mut c1 = ws_from(lo(2), haproxy.addr, "/ws?subscribe=p").expect("first from .2");
    let _c2 = ws_from(lo(2), haproxy.addr, "/ws").expect("second from .2");
    assert_eq!(
        ws_from(lo(2), haproxy.addr, "/ws").err(),
        Some(429),
        "a third from 127.0.0.2: the gateway sees the client's address through HAProxy"
    );
    let mut c4 = ws_from(lo(3), haproxy.addr, "/ws?subscribe=p")
        .expect("127.0.0.3 is another client, not HAProxy's address");
    assert_eq!(refused(&metrics_from(direct, gw.addr)), 1.0);
    // the sessions work through HAProxy
    ws_send(
        &mut c4,
        r#"{"type":"publish","topic":"p","data":"via haproxy","id":1}"#,
    );
    let mut replies = vec![parse(&ws_text(&mut c4)), parse(&ws_text(&mut c4))];
    replies.sort_by_key(|v| v.to_string());
    assert_eq!(
        replies,
        vec![
            json!({"type":"message","topic":"p","data":"via haproxy"}),
            json!({"type":"ack","id":1}),
        ]
    );
    assert_eq!(parse(&ws_text(&mut c1))["data"], "via haproxy");
    // a client that leaves frees its place
    drop(c1);
    let mut again = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            again = ws_from(lo(2), haproxy.addr, "/ws").ok();
            again.is_some()
        }),
        "127.0.0.2 still refused after one of its sessions closed"
    );

    // a forged PROXY header straight to the node, from a peer that is not a trusted proxy
    let (forged, _s) = raw_from(
        lo(9),
        gw.addr,
        format!(
            "PROXY TCP4 203.0.113.7 127.0.0.1 40000 8080\r\n{}",
            upgrade_with("/ws", "")
        )
        .as_bytes(),
    );
    assert_eq!(forged.status, 400, "{forged:?}");
    assert!(forged.text().contains("not a trusted proxy"), "{forged:?}");
    // a direct client without a header is an ordinary client of its own address
    let (plain, _s) = raw_from(lo(9), gw.addr, upgrade_with("/ws", "").as_bytes());
    assert_eq!(plain.status, 101, "{plain:?}");
    // the trusted proxy's address without a header is refused
    let (bare, _s) = raw_from(lo(1), gw.addr, upgrade_with("/ws", "").as_bytes());
    assert_eq!(bare.status, 400, "{bare:?}");
    let text = metrics_from(direct, gw.addr);
    assert!(
        series(
            &text,
            "wsgate_handshake_failures_total{reason=\"bad_proxy_header\"}"
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
}

#[test]
fn through_nginx_pubsub_and_forwarded_for() {
    const K: usize = 100;
    let redis = Redis::start_new();
    let xff = [
        "--forwarded-for",
        "true",
        "--trusted-proxies",
        "127.0.0.1/32",
    ];
    let a = node(&redis, "a", &xff);
    let b = node(&redis, "b", &xff);
    // a third node, alone behind its own nginx server, for the per-address limit
    let mut limited: Vec<&str> = xff.to_vec();
    limited.extend(["--max-connections-per-ip", "2"]);
    let c = Gateway::start(&limited);
    let mut nginx = Nginx::start(&[&[a.addr, b.addr], &[c.addr]]);
    let (pool, single) = (nginx.addrs[0], nginx.addrs[1]);

    // pub/sub through nginx across both nodes
    let placed = subscribers_through(pool, &[&a, &b], "n", 6);
    let counts = per_node(&placed, 2);
    assert!(
        counts.iter().all(|&c| c > 0),
        "nginx put the subscribers on one node only: {counts:?}"
    );
    wait_channels(&[&a, &b], 1);
    publish_and_check(
        placed,
        "n",
        vec![
            ("ws", ws_publisher(pool, "n", "ws", K)),
            ("post-a", post_publisher(a.addr, "n", "post-a", K)),
            ("post-b", post_publisher(b.addr, "n", "post-b", K)),
        ],
        K,
    );

    // X-Forwarded-For from nginx (a trusted proxy) gives the client's address
    let _c1 = ws_from(lo(2), single, "/ws").expect("first from .2");
    let _c2 = ws_from(lo(2), single, "/ws").expect("second from .2");
    assert_eq!(
        ws_from(lo(2), single, "/ws").err(),
        Some(429),
        "a third from 127.0.0.2 through nginx: the gateway sees the forwarded address"
    );
    let _c3 = ws_from(lo(3), single, "/ws").expect("127.0.0.3 is another client");
    // a client cannot pass as another by sending its own X-Forwarded-For through nginx:
    // nginx appends the real peer (127.0.0.3), the address the gateway must use
    let (spoof, _s) = raw_from(
        lo(3),
        single,
        upgrade_with("/ws", "X-Forwarded-For: 127.0.0.2\r\n").as_bytes(),
    );
    assert_eq!(
        spoof.status, 101,
        "`X-Forwarded-For: 127.0.0.2, 127.0.0.3` from nginx is client 127.0.0.3 (the \
         rightmost address not of a trusted proxy), not 127.0.0.2: {spoof:?}"
    );
    // the header from a peer that is not a trusted proxy is ignored
    let (untrusted, _s) = raw_from(
        lo(9),
        c.addr,
        upgrade_with("/ws", "X-Forwarded-For: 127.0.0.2\r\n").as_bytes(),
    );
    assert_eq!(untrusted.status, 101, "{untrusted:?}");
    // and taken from a trusted one, even directly
    let (trusted, _s) = raw_from(
        lo(1),
        c.addr,
        upgrade_with("/ws", "X-Forwarded-For: 127.0.0.2\r\n").as_bytes(),
    );
    assert_eq!(trusted.status, 429, "{trusted:?}");
    nginx.assert_running();
}

#[test]
fn sharded_pubsub() {
    const K: usize = 50;
    let redis = Redis::start_new();
    let flags = ["--redis-sharded", "true", "--redis-prefix", "shard:"];
    let a = node(&redis, "a", &flags);
    let b = node(&redis, "b", &flags);
    let subs: Vec<(Ws, &str)> = [(&a, "a"), (&a, "a"), (&b, "b"), (&b, "b")]
        .into_iter()
        .map(|(gw, on)| (common::ws(gw.addr, "/ws?subscribe=s"), on))
        .collect();
    wait_channels(&[&a, &b], 1);
    let sharded = redis.channels(true);
    assert_eq!(sharded.len(), 1, "SSUBSCRIBE'd channels: {sharded:?}");
    assert!(
        sharded[0].starts_with("shard:"),
        "the channel under --redis-prefix: {sharded:?}"
    );
    assert_eq!(
        redis.channels(false),
        Vec::<String>::new(),
        "nothing SUBSCRIBE'd (not sharded)"
    );
    publish_and_check(
        subs,
        "s",
        vec![
            ("ws-a", ws_publisher(a.addr, "s", "ws-a", K)),
            ("post-a", post_publisher(a.addr, "s", "post-a", K)),
            ("post-b", post_publisher(b.addr, "s", "post-b", K)),
        ],
        K,
    );
    assert!(must(&b, "wsgate_cluster_received_total") >= 2.0 * K as f64);
}

#[test]
#[should_panic(expected = "run deploy/test-setup.sh")]
fn a_missing_server_fails_the_test_with_the_setup_hint() {
    lb::require("wsgate-no-such-server");
}

#[test]
fn redis_address_that_accepts_then_closes_is_one_outage_not_a_reconnect_loop() {
    // what a node sees when Redis sits behind a TCP proxy whose backend is down, or while a
    // crashing redis-server's listen queue still completes handshakes: connections that are
    // accepted, then closed before any Redis answer
    let mut redis = Redis::start_new();
    let mut a = node(&redis, "a", &[]);
    let _s = common::ws(a.addr, "/ws?subscribe=t");
    wait_channels(&[&a], 1);
    redis.stop();
    let fake = std::net::TcpListener::bind(lb::local(redis.port)).expect("bind Redis's port");
    fake.set_nonblocking(true).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match fake.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        drop(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    // the node sees the kill first (its bridge thread may be slow to on a loaded machine)
    assert!(
        eventually(SETTLE, || must(&a, "wsgate_cluster_up") == 0.0),
        "the node never noticed that redis went away:\n{}",
        a.log()
    );
    // two seconds of that: the node is down all along, says so once, and retries with backoff
    // (100 ms doubling: a handful of attempts, not thousands)
    let mut up_seen = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        up_seen.push(must(&a, "wsgate_cluster_up"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    acceptor.join().unwrap();
    let attempts = accepted.load(std::sync::atomic::Ordering::Relaxed);
    // the log comes from the process' stderr through another thread: the outage's line was
    // written two seconds ago, but a loaded machine may not have handed it over yet
    assert!(
        eventually(SETTLE, || a.log().contains("unreachable")),
        "the outage was never logged:\n{}",
        a.log()
    );
    let log = a.log();
    let count = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && !l.contains("DEBUG"))
            .count()
    };
    assert_eq!(
        count("reconnected"),
        0,
        "a connection closed before any Redis reply is not a reconnection:\n{log}"
    );
    assert_eq!(count("unreachable"), 1, "one outage, said once:\n{log}");
    assert!(
        up_seen.iter().all(|&u| u == 0.0),
        "wsgate_cluster_up went back to 1 without a Redis reply: {up_seen:?}"
    );
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in 2 s: the backoff is not applied"
    );
    // the real Redis again: one reconnection
    redis.start();
    wait_metric(&[&a], "wsgate_cluster_up", 1.0);
    wait_channels(&[&a], 1);
    assert!(a.wait_exit(Duration::ZERO).is_none(), "the node died");
}

/// The acknowledgement of a subscribe waits for Redis to confirm the node's subscription, so a
/// message another node publishes right after the acknowledgement is not missed, even when the
/// node's bridge is slow to send the SUBSCRIBE (here: stuck behind a publish while Redis pauses).
#[test]
fn an_acknowledged_subscription_gets_what_another_node_publishes_next() {
    let redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    wait_metric(&[&a, &b], "wsgate_cluster_up", 1.0);
    let mut sub = common::ws(b.addr, "/ws");
    let mut b_publisher = common::ws(b.addr, "/ws");
    let mut a_publisher = common::ws(a.addr, "/ws");
    for i in 0..3 {
        let topic = format!("fresh-{i}");
        // Redis stops answering for a moment: b's bridge waits for the reply to a publish,
        // with the new subscription queued behind it
        redis.command(&["CLIENT", "PAUSE", "600", "ALL"]);
        ws_send(
            &mut b_publisher,
            r#"{"type":"publish","topic":"elsewhere","data":0}"#,
        );
        std::thread::sleep(Duration::from_millis(50));
        ws_send(
            &mut sub,
            &format!(r#"{{"type":"subscribe","topic":"{topic}","id":{i}}}"#),
        );
        assert_eq!(parse(&ws_text(&mut sub)), json!({"type":"ack","id":i}));
        ws_send(
            &mut a_publisher,
            &format!(r#"{{"type":"publish","topic":"{topic}","data":{i}}}"#),
        );
        let got = ws_text_within(&mut sub, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{topic}: the message published after the ack is lost"));
        assert_eq!(
            parse(&got),
            json!({"type":"message","topic":topic,"data":i})
        );
    }
}

/// A message larger than Redis lets a subscriber's output buffer grow would make Redis drop
/// every receiving node's subscribing connection (and all in flight with it): it stays on its
/// own node, counted, and the link and smaller messages are unaffected.
#[test]
fn a_message_over_redis_pubsub_buffer_limit_stays_local() {
    let redis = Redis::start_new();
    redis.command(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1mb 0 0",
    ]);
    let a = node(&redis, "a", &["--max-body-size", "4MiB"]);
    let b = node(&redis, "b", &[]);
    wait_metric(&[&a, &b], "wsgate_cluster_up", 1.0);
    let mut near = common::ws(a.addr, "/ws");
    let mut far = common::ws(b.addr, "/ws");
    for s in [&mut near, &mut far] {
        ws_send(s, r#"{"type":"subscribe","topic":"big","id":1}"#);
        assert_eq!(parse(&ws_text(s)), json!({"type":"ack","id":1}));
    }
    let publish = |size: usize| {
        let body = vec![7u8; size];
        let r = post(
            a.addr,
            "/publish/big",
            "Content-Type: application/octet-stream\r\n",
            &body,
        );
        assert_eq!(r.status, 202, "{r:?}");
    };
    publish(1_500_000);
    assert_eq!(common::ws_binary(&mut near).len(), 1 + 3 + 1_500_000);
    assert!(
        eventually(SETTLE, || m(
            &a,
            "wsgate_cluster_dropped_total{reason=\"too_large\"}"
        ) == Some(1.0)),
        "{}",
        a.metrics()
    );
    publish(500_000);
    assert_eq!(common::ws_binary(&mut near).len(), 1 + 3 + 500_000);
    assert_eq!(
        common::ws_binary(&mut far).len(),
        1 + 3 + 500_000,
        "the smaller one crosses; the larger one never came"
    );
    // the log is read from stderr by another thread: the line may still be on its way
    assert!(
        eventually(SETTLE, || a.log().contains("client-output-buffer-limit")),
        "{}",
        a.log()
    );
    assert!(
        !b.log().contains("unreachable"),
        "b's link never dropped: {}",
        b.log()
    );
    assert_eq!(m(&b, "wsgate_cluster_reconnects_total"), Some(0.0));
}

/// Another node's publisher is not slowed by this node's subscribers (pub/sub has no
/// backpressure across nodes), so a flood from there reaches subscribers here as fast as Redis
/// carries it. Subscribers that cannot keep up are closed with 1013, and once they are gone the
/// node's memory comes back: nothing kept in proportion to the burst.
#[test]
fn a_flood_from_another_node_closes_slow_subscribers_and_memory_comes_back() {
    const SUBSCRIBERS: usize = 500;
    let redis = Redis::start_new();
    let url = redis.url();
    // a publisher with no per-connection rate (a backend's, or a token's publish_rate of 0)
    let a = node(&redis, "a", &["--publish-rate", "0"]);
    let b = Gateway::start_without_huge_pages(&[
        "--workers",
        "1",
        "--redis",
        &url,
        "--node-id",
        "b",
        "--outbox-limit",
        "256KiB",
    ]);
    wait_metric(&[&b], "wsgate_cluster_up", 1.0);
    let before = b.rss();
    // subscribers that never read, with small receive buffers: what the gateway queues for
    // them stays in its outboxes instead of the kernel's socket buffers
    let stuck: Vec<common::RawWs> = (0..SUBSCRIBERS)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&b.addr.into()).unwrap();
            let mut stream: std::net::TcpStream = socket.into();
            stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
            stream
                .write_all(common::upgrade_request("/ws?subscribe=flood").as_bytes())
                .unwrap();
            common::RawWs::finish_upgrade(stream, Vec::new())
        })
        .collect();
    assert!(eventually(SETTLE, || m(&b, "wsgate_cluster_channels") == Some(1.0)));
    // 100,000 small binary publishes on a (more than a subscriber's outbox limit and socket
    // buffers together), written 1,000 frames at a time
    let mut publisher = common::RawWs::connect(a.addr, "/ws");
    let mut frame = vec![5u8];
    frame.extend_from_slice(b"flood");
    frame.extend_from_slice(&[0x55; 32]);
    let one = common::client_frame(true, wsgate_core::frame::OpCode::Binary, &frame);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    for _ in 0..100 {
        publisher.send_raw(&batch);
    }
    assert!(
        eventually(Duration::from_secs(90), || m(
            &b,
            "wsgate_slow_consumer_closes_total"
        ) == Some(SUBSCRIBERS as f64)),
        "{}",
        b.metrics()
    );
    drop(stuck);
    assert!(
        eventually(Duration::from_secs(90), || m(
            &b,
            "wsgate_cluster_received_total"
        ) == Some(100_000.0)
            && m(&b, "wsgate_inbox_depth{worker=\"0\"}") == Some(0.0)
            && m(&b, "wsgate_connections_open") == Some(1.0)),
        "{}",
        b.metrics()
    );
    let peak = b.peak_rss();
    let mut after = b.rss();
    // freed memory goes back to the system a moment after the connections close
    eventually(Duration::from_secs(10), || {
        after = b.rss();
        after < before + 24 * MIB
    });
    println!(
        "{SUBSCRIBERS} subscribers that never read, 100,000 publishes from another node: RSS \
         {:.1} MiB -> peak {:.1} MiB -> {:.1} MiB after the closes",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        after as f64 / MIB as f64
    );
    assert!(
        after < before + 24 * MIB,
        "kept {:.1} MiB after every subscriber was closed",
        (after - before) as f64 / MIB as f64
    );
    // the node still works
    let mut sub = common::ws(b.addr, "/ws");
    ws_send(&mut sub, r#"{"type":"subscribe","topic":"after","id":1}"#);
    assert_eq!(parse(&ws_text(&mut sub)), json!({"type":"ack","id":1}));
    let r = post(
        a.addr,
        "/publish/after",
        "Content-Type: application/json\r\n",
        b"1",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        parse(&ws_text(&mut sub)),
        json!({"type":"message","topic":"after","data":1})
    );
}

/// PUBLISH of raw bytes to a Redis channel, as any Redis client could.
fn redis_publish(redis: &Redis, channel: &str, payload: &[u8]) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes();
    req.extend_from_slice(payload);
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut reply).unwrap();
    assert!(reply[..n].starts_with(b":"), "{:?}", &reply[..n]);
}

/// Whatever else publishes on a cluster channel is not trusted: what is not a wsgate envelope
/// (or is a text one that is not UTF-8) is counted and dropped, never sent to a browser.
#[test]
fn foreign_messages_on_a_cluster_channel_are_counted_and_dropped() {
    let redis = Redis::start_new();
    let a = node(&redis, "a", &[]);
    wait_metric(&[&a], "wsgate_cluster_up", 1.0);
    let mut sub = common::ws(a.addr, "/ws");
    ws_send(&mut sub, r#"{"type":"subscribe","topic":"t","id":1}"#);
    assert_eq!(parse(&ws_text(&mut sub)), json!({"type":"ack","id":1}));
    let bad: [&[u8]; 5] = [
        b"hello",
        b"WSG1\x05ab",
        b"WSG1\x01xt\xff\xfe",
        b"WSG1\x01xq{}",
        b"",
    ];
    for payload in bad {
        redis_publish(&redis, "wsgate:t", payload);
    }
    // from node "other": a text frame
    let mut envelope = b"WSG1\x05othert".to_vec();
    envelope.extend_from_slice(br#"{"type":"message","topic":"t","data":"from elsewhere"}"#);
    redis_publish(&redis, "wsgate:t", &envelope);
    assert_eq!(
        parse(&ws_text(&mut sub)),
        json!({"type":"message","topic":"t","data":"from elsewhere"}),
        "the first thing the subscriber gets is the one well-formed envelope"
    );
    assert_eq!(m(&a, "wsgate_cluster_bad_messages_total"), Some(5.0));
    assert_eq!(m(&a, "wsgate_cluster_received_total"), Some(1.0));
}
