//! `--redis-sharded` against a real Redis Cluster of three masters (redis-server in cluster
//! mode, joined with `redis-cli --cluster create`): the topics' shard channels spread over the
//! masters, every message crosses nodes, and when a master's slots migrate to another one the
//! gateways follow (resubscribing where the channels now live, sending redirected publishes
//! again) without losing a message. History topics kept in the cluster, in both modes: Redis
//! numbers each message on the master of its topic's slot, every node delivers the same
//! offsets, and a client recovers on another node. And a Redis that requires a password.

mod common;
mod lb;

use common::*;
use lb::{Proc, TempDir, free_port, require};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);
const TOPICS: usize = 24;

/// Three redis-server masters in cluster mode, every slot assigned.
struct RedisCluster {
    ports: Vec<u16>,
    _procs: Vec<Proc>,
    _dirs: Vec<TempDir>,
}

/// Starts redis-server on a free port in `dir` with `extra` settings, and waits until it
/// answers PING (asked with redis-cli and `cli_args`). A port found free can be taken before
/// the server binds it (by another test's server, or a cluster node's bus port, its port +
/// 10000): a server that exits for that is started again on another port. `cluster`: its
/// port + 10000 (the cluster bus) must be free too.
fn redis_server(dir: &TempDir, extra: &[&str], cli_args: &[&str], cluster: bool) -> (u16, Proc) {
    for _ in 0..10 {
        let port = free_port();
        if cluster
            && (port > u16::MAX - 10_000
                || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err())
        {
            continue;
        }
        let mut command = Command::new(require("redis-server"));
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path());
        let mut proc = Proc::spawn("redis-server", command);
        let answered = eventually(SETTLE, || {
            proc.exited()
                || Command::new(require("redis-cli"))
                    .args(["-p", &port.to_string()])
                    .args(cli_args)
                    .arg("ping")
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
        });
        if proc.exited() && proc.log().contains("Address already in use") {
            continue; // taken meanwhile: another port
        }
        assert!(
            answered && !proc.exited(),
            "redis-server on {port} never answered"
        );
        return (port, proc);
    }
    panic!("no free port for redis-server in 10 tries");
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(require("redis-cli"))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let (mut ports, mut procs, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let dir = TempDir::new("redis-cluster");
            let nodes_conf = dir.path().join("nodes.conf");
            let nodes_conf = nodes_conf.to_str().expect("a UTF-8 temporary path");
            let (port, proc) = redis_server(
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    nodes_conf,
                ],
                &[],
                true,
            );
            procs.push(proc);
            ports.push(port);
            dirs.push(dir);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        cli(ports[0], &args);
        for &p in &ports {
            assert!(
                eventually(SETTLE, || cli(p, &["cluster", "info"])
                    .contains("cluster_state:ok")),
                "the cluster never became ok on {p}"
            );
        }
        RedisCluster {
            ports,
            _procs: procs,
            _dirs: dirs,
        }
    }

    fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    fn id(&self, i: usize) -> String {
        cli(self.ports[i], &["cluster", "myid"]).trim().to_string()
    }

    /// How many of `channels` master `i` has subscribers for.
    fn subscribed_on(&self, i: usize, channels: &[String]) -> usize {
        let mut args = vec!["pubsub", "shardnumsub"];
        args.extend(channels.iter().map(String::as_str));
        let out = cli(self.ports[i], &args);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.get(1).is_some_and(|n| n.trim() != "0"))
            .count()
    }

    /// Moves every slot of master `from` to master `to`.
    fn move_all_slots(&self, from: usize, to: usize) {
        let owned = slot_count(
            &cli(self.ports[from], &["cluster", "slots"]),
            self.ports[from],
        );
        assert!(owned > 0, "master {from} owns no slot");
        cli(
            self.ports[0],
            &[
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.ports[0]),
                "--cluster-from",
                &self.id(from),
                "--cluster-to",
                &self.id(to),
                "--cluster-slots",
                &owned.to_string(),
                "--cluster-yes",
            ],
        );
    }
}

/// The number of slots `CLUSTER SLOTS` (as redis-cli prints it, one value per line) gives
/// to the master on `port`.
fn slot_count(text: &str, port: u16) -> usize {
    // each range prints: start, end, master host, master port, master id, [hostname...]
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut total = 0;
    for (i, line) in lines.iter().enumerate() {
        if *line == port.to_string()
            && i >= 3
            && let (Ok(start), Ok(end)) =
                (lines[i - 3].parse::<usize>(), lines[i - 2].parse::<usize>())
        {
            total += end - start + 1;
        }
    }
    total
}

fn node(url: &str, id: &str) -> Gateway {
    Gateway::start(&[
        "--workers",
        "2",
        "--redis",
        url,
        "--redis-sharded",
        "true",
        "--node-id",
        id,
    ])
}

fn series(gw: &Gateway, name: &str) -> f64 {
    gw.metric(name)
}

/// Publishes `round` to every topic from `publisher`; the subscriber must get each once.
fn round_trip(publisher: &mut Ws, subscriber: &mut Ws, topics: &[String], round: &str) {
    for t in topics {
        ws_send(
            publisher,
            &format!(r#"{{"type":"publish","topic":"{t}","data":"{round}/{t}"}}"#),
        );
    }
    let mut got = BTreeSet::new();
    while got.len() < topics.len() {
        let Some(text) = lb::ws_text_within(subscriber, SETTLE) else {
            let missing: Vec<&String> = topics
                .iter()
                .filter(|t| !got.contains(&format!("{round}/{t}")))
                .collect();
            panic!("round {round}: nothing more came; missing {missing:?}");
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "gap" {
            // the node's link moved with the slot (a reconnect): it says messages may have
            // been missed meanwhile, which this round does not rely on
            continue;
        }
        let data = v["data"].as_str().expect("data").to_string();
        assert!(data.starts_with(&format!("{round}/")), "unexpected {text}");
        assert!(got.insert(data.clone()), "{data} twice");
    }
}

#[test]
fn sharded_pubsub_follows_a_redis_cluster_through_a_slot_migration() {
    let cluster = RedisCluster::start();
    let a = node(&cluster.url(0), "a");
    let b = node(&cluster.url(1), "b");
    for gw in [&a, &b] {
        assert!(
            eventually(SETTLE, || series(gw, "wsgate_cluster_up") == 1.0),
            "{}",
            gw.log()
        );
        assert!(gw.log().contains("(3 masters)"), "{}", gw.log());
    }
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("room-{i}")).collect();
    let channels: Vec<String> = topics.iter().map(|t| format!("wsgate:{t}")).collect();
    let mut subscriber = ws(b.addr, &format!("/ws?subscribe={}", topics.join(",")));
    let mut publisher = ws(a.addr, "/ws");
    assert!(
        eventually(SETTLE, || series(&b, "wsgate_cluster_channels")
            == TOPICS as f64),
        "{}",
        b.log()
    );
    let per_master: Vec<usize> = (0..3)
        .map(|i| cluster.subscribed_on(i, &channels))
        .collect();
    assert_eq!(
        per_master.iter().sum::<usize>(),
        TOPICS,
        "each channel on exactly one master: {per_master:?}"
    );
    assert!(
        per_master.iter().filter(|&&n| n > 0).count() >= 2,
        "the channels spread over the masters: {per_master:?}"
    );
    round_trip(&mut publisher, &mut subscriber, &topics, "before");

    // every slot of the third master moves to the first: its channels' subscribers are told
    // (sunsubscribe), and publishers to them get MOVED
    let moved = per_master[2];
    assert!(
        moved > 0,
        "some channels live on the master that loses its slots"
    );
    cluster.move_all_slots(2, 0);
    assert!(
        eventually(SETTLE, || cluster.subscribed_on(2, &channels) == 0
            && cluster.subscribed_on(0, &channels) == per_master[0] + moved
            && series(&b, "wsgate_cluster_channels") == TOPICS as f64),
        "b resubscribed where the channels now live: {:?}\n{}",
        (0..3)
            .map(|i| cluster.subscribed_on(i, &channels))
            .collect::<Vec<_>>(),
        b.log()
    );
    round_trip(&mut publisher, &mut subscriber, &topics, "after");
    for gw in [&a, &b] {
        assert_eq!(
            series(gw, "wsgate_cluster_dropped_total{reason=\"redis_down\"}"),
            0.0,
            "a migration is not an outage: {}",
            gw.log()
        );
        assert!(!gw.log().contains("unreachable"), "{}", gw.log());
    }
    // the log is read from stderr by another thread: the line may still be on its way
    assert!(
        eventually(SETTLE, || b.log().contains("layout changed")),
        "b saw the migration: {}",
        b.log()
    );
}

/// A Redis that requires a password (`requirepass`): the URL's password is sent with AUTH on
/// both connections; a wrong one keeps the node local, says why once, and counts nothing as
/// crossing nodes.
#[test]
fn a_password_protected_redis() {
    let dir = TempDir::new("redis-auth");
    let (port, _redis) = redis_server(
        &dir,
        &["--requirepass", "s3cret"],
        &["-a", "s3cret", "--no-auth-warning"],
        false,
    );
    let good = format!("redis://:s3cret@127.0.0.1:{port}");
    let a = Gateway::start(&["--redis", &good, "--node-id", "a"]);
    let b = Gateway::start(&["--redis", &good, "--node-id", "b"]);
    let wrong = format!("redis://:nope@127.0.0.1:{port}");
    let c = Gateway::start(&["--redis", &wrong, "--node-id", "c"]);
    // a subscribe made before the node's link is up is acknowledged at once, not after Redis
    // confirmed it; a publish made then stays local
    for gw in [&a, &b] {
        assert!(
            eventually(SETTLE, || series(gw, "wsgate_cluster_up") == 1.0),
            "{}",
            gw.log()
        );
    }
    let mut sub = ws(b.addr, "/ws");
    ws_send(&mut sub, r#"{"type":"subscribe","topic":"vault","id":1}"#);
    assert_eq!(ws_text(&mut sub), r#"{"type":"ack","id":1}"#);
    assert_eq!(series(&b, "wsgate_cluster_channels"), 1.0, "{}", b.log());
    let r = post(
        a.addr,
        "/publish/vault",
        "Content-Type: application/json\r\n",
        b"7",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        lb::ws_text_within(&mut sub, SETTLE).as_deref(),
        Some(r#"{"type":"message","topic":"vault","data":7}"#)
    );
    assert!(
        !a.log().contains("s3cret") && !b.log().contains("s3cret"),
        "the password is not logged"
    );

    // the wrong password: never up, one warning naming the refusal
    assert!(
        eventually(SETTLE, || c.log().contains("unreachable")),
        "{}",
        c.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(series(&c, "wsgate_cluster_up"), 0.0);
    assert_eq!(c.log().matches("unreachable").count(), 1, "{}", c.log());
    assert!(c.log().contains("AUTH"), "{}", c.log());
    let r = post(
        c.addr,
        "/publish/vault",
        "Content-Type: application/json\r\n",
        b"8",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert!(
        lb::ws_text_within(&mut sub, Duration::from_millis(500)).is_none(),
        "nothing crosses from a node that could not join"
    );
    assert_eq!(
        series(&c, "wsgate_cluster_dropped_total{reason=\"redis_down\"}"),
        1.0
    );
}

// ---- history across the masters of a Redis Cluster ----------------------------------------

/// Topics whose channels (`wsgate:TOPIC`) hash to slots of the three masters (as
/// `redis-cli --cluster create` splits them: 0-5460, 5461-10922, 10923-16383): `h.a` 4719,
/// `h.b` 8716, `h.c` 12845, and `h.{x}.c` 16287, whose keys take its own hash tag.
const HISTORY_TOPICS: [&str; 4] = ["h.a", "h.b", "h.c", "h.{x}.c"];
/// Messages published to each of them.
const PER_TOPIC: u64 = 8;

/// A node joined to the cluster through master `i`, keeping the history of `h.*`; sharded
/// (SSUBSCRIBE, SPUBLISH) or plain (SUBSCRIBE, PUBLISH broadcast to every master).
fn history_node(cluster: &RedisCluster, i: usize, id: &str, sharded: bool) -> Gateway {
    let url = cluster.url(i);
    Gateway::start(&[
        "--workers",
        "2",
        "--redis",
        &url,
        "--redis-sharded",
        if sharded { "true" } else { "false" },
        "--node-id",
        id,
        "--history",
        r#"topics = "h.*", size = 100, ttl = "5m""#,
    ])
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// The next text within [`SETTLE`], or a failure that shows both nodes' logs.
fn next_text(ws: &mut Ws, what: &str, logs: &[&Gateway]) -> String {
    lb::ws_text_within(ws, SETTLE).unwrap_or_else(|| {
        let logs: Vec<String> = logs.iter().map(|g| g.log()).collect();
        panic!("{what}: nothing came\n{}", logs.join("\n----\n"))
    })
}

/// Sends a subscribe (recovering from `recover` when given) and reads until its reply;
/// returns the reply and the texts before it.
fn subscribe_topic(
    ws: &mut Ws,
    topic: &str,
    id: u64,
    recover: Option<(u64, &str)>,
    logs: &[&Gateway],
) -> (serde_json::Value, Vec<String>) {
    let mut msg = serde_json::json!({"type":"subscribe","topic":topic,"id":id});
    if let Some((offset, epoch)) = recover {
        msg["recover"] = serde_json::json!({"offset":offset,"epoch":epoch});
    }
    ws_send(ws, &msg.to_string());
    let mut before = Vec::new();
    loop {
        let text = next_text(ws, &format!("the reply to subscribe {id}"), logs);
        let v = json(&text);
        if v["id"] == serde_json::json!(id) && (v["type"] == "ack" || v["type"] == "error") {
            return (v, before);
        }
        before.push(text);
    }
}

/// Which masters hold `key` (`EXISTS` asked of each; a master that does not own its slot
/// answers MOVED, which redis-cli prints as an error, not `1`).
fn holders(cluster: &RedisCluster, key: &str) -> Vec<usize> {
    (0..cluster.ports.len())
        .filter(|&i| {
            Command::new(require("redis-cli"))
                .args(["-p", &cluster.ports[i].to_string(), "exists", key])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
        })
        .collect()
}

/// Two nodes joined to a Redis Cluster keep the history of topics that live on different
/// masters: every message, published on either node over HTTP or WebSocket, gets Redis'
/// offset, the same on both nodes, 1..N without holes per topic; each topic's stream is kept
/// by the master of its channel's slot; a client on the other node recovers exactly what it
/// missed, then goes on live.
fn history_across_masters(sharded: bool) {
    let cluster = RedisCluster::start();
    let a = history_node(&cluster, 0, "a", sharded);
    let b = history_node(&cluster, 1, "b", sharded);
    let logs = [&a, &b];
    for gw in logs {
        assert!(
            eventually(SETTLE, || series(gw, "wsgate_cluster_up") == 1.0),
            "{}",
            gw.log()
        );
    }

    // a subscriber of every topic on each node; both nodes start a topic at Redis' epoch
    let mut sa = ws(a.addr, "/ws");
    let mut sb = ws(b.addr, "/ws");
    let mut epochs = Vec::new();
    for (n, topic) in HISTORY_TOPICS.iter().enumerate() {
        let id = n as u64 + 1;
        let mut acks = Vec::new();
        for s in [&mut sa, &mut sb] {
            let (ack, before) = subscribe_topic(s, topic, id, None, &logs);
            assert!(
                before.is_empty(),
                "{topic}: messages before the ack: {before:?}"
            );
            assert_eq!(
                ack["type"],
                "ack",
                "{topic}: {ack}\n{}\n{}",
                a.log(),
                b.log()
            );
            assert_eq!(ack["offset"], 0, "{topic}: nothing published yet: {ack}");
            let epoch = ack["epoch"].as_str().unwrap_or_else(|| panic!("{ack}"));
            assert!(!epoch.is_empty(), "{ack}");
            acks.push(epoch.to_string());
        }
        assert_eq!(
            acks[0], acks[1],
            "{topic}: one epoch, Redis', on both nodes"
        );
        epochs.push(acks.swap_remove(0));
    }

    // publishes go round the topics, alternating nodes and ways: HTTP to a, HTTP to b, a
    // WebSocket publish on a, one on b (acknowledged)
    let mut pa = ws(a.addr, "/ws");
    let mut pb = ws(b.addr, "/ws");
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); HISTORY_TOPICS.len()];
    let mut id = 100;
    for i in 1..=PER_TOPIC {
        for (n, topic) in HISTORY_TOPICS.iter().enumerate() {
            let data = format!(r#"{{"t":"{topic}","i":{i}}}"#);
            match (i as usize + n) % 4 {
                k @ (0 | 1) => {
                    let gw = if k == 0 { &a } else { &b };
                    let path =
                        format!("/publish/{}", topic.replace('{', "%7B").replace('}', "%7D"));
                    let r = post(
                        gw.addr,
                        &path,
                        "Content-Type: application/json\r\n",
                        data.as_bytes(),
                    );
                    assert_eq!(r.status, 202, "{topic}: {r:?}\n{}", gw.log());
                }
                k => {
                    let p = if k == 2 { &mut pa } else { &mut pb };
                    id += 1;
                    let msg = serde_json::json!({
                        "type": "publish", "topic": topic, "data": json(&data), "id": id
                    });
                    ws_send(p, &msg.to_string());
                    let reply = json(&next_text(p, "a publish's ack", &logs));
                    // answered once the topic's master has numbered it
                    let offset = reply["offset"].as_u64();
                    let epoch = reply["epoch"].as_str().unwrap_or_default();
                    assert!(
                        reply["type"] == "ack"
                            && reply["id"] == id
                            && offset.is_some_and(|o| o >= 1)
                            && !epoch.is_empty(),
                        "{topic}: {reply}"
                    );
                }
            }
            sent[n].push(json(&data).to_string());
        }
    }

    // both nodes deliver every message once, with the same offsets, 1..N per topic
    let total = HISTORY_TOPICS.len() * PER_TOPIC as usize;
    let mut per_node = Vec::new();
    for (name, s) in [("a", &mut sa), ("b", &mut sb)] {
        let mut got: Vec<Vec<String>> = vec![Vec::new(); HISTORY_TOPICS.len()];
        for k in 0..total {
            let text = next_text(s, &format!("node {name}: message {k} of {total}"), &logs);
            let v = json(&text);
            assert_eq!(v["type"], "message", "node {name}: {text}");
            let n = HISTORY_TOPICS
                .iter()
                .position(|t| v["topic"] == *t)
                .unwrap_or_else(|| panic!("node {name}: {text}"));
            got[n].push(text);
        }
        for (n, topic) in HISTORY_TOPICS.iter().enumerate() {
            let mut data = Vec::new();
            for (k, text) in got[n].iter().enumerate() {
                let v = json(text);
                assert_eq!(
                    v["offset"],
                    k as u64 + 1,
                    "node {name}, {topic}: offsets 1..{PER_TOPIC} without holes: {:?}",
                    got[n]
                );
                data.push(v["data"].to_string());
            }
            let mut want = sent[n].clone();
            want.sort();
            data.sort();
            assert_eq!(data, want, "node {name}, {topic}: every message once");
        }
        per_node.push(got);
    }
    assert_eq!(
        per_node[0], per_node[1],
        "the same offsets for the same messages on both nodes"
    );
    assert!(
        lb::ws_text_within(&mut sa, Duration::from_millis(200)).is_none(),
        "nothing more on a"
    );

    // each topic's stream is kept in its channel's slot, so by one master (the others answer
    // MOVED), and the topics spread over every master
    let mut masters = BTreeSet::new();
    for topic in HISTORY_TOPICS {
        let channel = format!("wsgate:{topic}");
        let stream = if topic.contains('{') {
            format!("{channel}:stream")
        } else {
            format!("{{{channel}}}:stream")
        };
        let on = holders(&cluster, &stream);
        assert_eq!(on.len(), 1, "{stream} on exactly one master: {on:?}");
        let slot = |key: &str| cli(cluster.ports[0], &["cluster", "keyslot", key]);
        assert_eq!(
            slot(&stream),
            slot(&channel),
            "{stream}: in its channel's slot"
        );
        let len = cli(cluster.ports[on[0]], &["xlen", &stream]);
        assert_eq!(len.trim(), PER_TOPIC.to_string(), "{stream}");
        masters.insert(on[0]);
    }
    assert_eq!(masters.len(), 3, "the topics spread over the masters");

    // a client on b that saw a topic up to offset 3 recovers the rest, in order, before the
    // ack, then goes on live; for each topic, whichever master keeps it
    for (n, topic) in HISTORY_TOPICS.iter().enumerate() {
        let mut again = ws(b.addr, "/ws");
        let (ack, before) = subscribe_topic(&mut again, topic, 50, Some((3, &epochs[n])), &logs);
        assert_eq!(
            before,
            per_node[1][n][3..],
            "{topic}: exactly what it missed, in order, before the ack"
        );
        assert_eq!(
            ack,
            serde_json::json!({
                "type": "ack", "id": 50, "topic": topic, "offset": PER_TOPIC,
                "epoch": epochs[n], "recovered": true
            })
        );
        let path = format!("/publish/{}", topic.replace('{', "%7B").replace('}', "%7D"));
        let r = post(
            a.addr,
            &path,
            "Content-Type: application/json\r\n",
            b"\"live\"",
        );
        assert_eq!(r.status, 202, "{r:?}");
        let live = format!(
            r#"{{"type":"message","topic":"{topic}","offset":{},"data":"live"}}"#,
            PER_TOPIC + 1
        );
        for (name, s) in [("recovered", &mut again), ("a", &mut sa), ("b", &mut sb)] {
            assert_eq!(
                next_text(s, &format!("{topic}: live on {name}"), &logs),
                live,
                "{name}"
            );
        }
    }
    for gw in logs {
        for series_name in [
            "wsgate_cluster_dropped_total{reason=\"history_refused\"}",
            "wsgate_cluster_dropped_total{reason=\"redis_down\"}",
        ] {
            assert_eq!(series(gw, series_name), 0.0, "{series_name}\n{}", gw.log());
        }
        assert!(!gw.log().contains("layout changed"), "{}", gw.log());
    }
}

#[test]
fn history_across_the_masters_of_a_redis_cluster_sharded() {
    history_across_masters(true);
}

/// Plain mode (SUBSCRIBE, PUBLISH) against a Redis Cluster: the bridge reads the cluster's
/// layout in this mode too, so that a history topic's script goes to the master of its keys'
/// slot (its PUBLISH reaches every master's subscribers).
#[test]
fn history_across_the_masters_of_a_redis_cluster_plain() {
    history_across_masters(false);
}
