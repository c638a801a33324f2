//! `--redis-sharded` against a real Redis Cluster of three masters (redis-server in cluster
//! mode, joined with `redis-cli --cluster create`): the topics' shard channels spread over the
//! masters, every message crosses nodes, and when a master's slots migrate to another one the
//! gateways follow (resubscribing where the channels now live, sending redirected publishes
//! again) without losing a message. And a Redis that requires a password.

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
    assert!(
        b.log().contains("layout changed"),
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
