//! `loadtest recover` against a cluster: a real redis-server, two wsgate nodes joined by it
//! (Redis numbers the topic's messages), HAProxy in front of both. While it runs, the node the
//! publisher is on is drained (SIGTERM: close 1001 to its clients, who come back through HAProxy
//! on the other node) and started again on its port, then Redis is killed (publishes are
//! refused as `unavailable` meanwhile) and started again, empty: a new epoch, told to the
//! subscribers by gap notices and `recovered:false`. Nothing may be lost outside an announced
//! hole, repeated, reordered or changed, and every offset must go with its sequence number in
//! its epoch.
//!
//! Every step waits on what it needs (Redis' count of the topic's messages, the nodes' metrics,
//! HAProxy's view of its servers), never a fixed time.
//!
//! redis-server and haproxy must be installed (deploy/test-setup.sh does it).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Haproxy, Node, Proc, Redis, Reply, eventually};
use std::process::Command;
use std::time::{Duration, Instant};

const TOPIC: &str = "chat.recover";
const RULE: &str = r#"topics = "chat.*", size = 1000, ttl = "5m""#;
/// The longest a step waits for what it needs.
const STEP: Duration = Duration::from_secs(15);

/// The arguments of node `id`: two workers, joined to `redis`, keeping a history of `chat.*`,
/// closing its clients at once on SIGTERM.
fn node_args(redis: &Redis, id: &str) -> Vec<String> {
    [
        "--workers",
        "2",
        "--redis",
        &redis.url(),
        "--node-id",
        id,
        "--history",
        RULE,
        "--drain-grace",
        "0s",
        "--drain-timeout",
        "5s",
        "--log",
        "info",
    ]
    .map(String::from)
    .to_vec()
}

/// The last offset Redis gave a message of the topic (0 when it has no stream for it).
fn redis_offset(redis: &Redis) -> u64 {
    for key in [
        format!("{{wsgate:{TOPIC}}}:meta"),
        format!("wsgate:{TOPIC}:meta"),
    ] {
        if let Ok(Reply::Bulk(Some(o))) = redis.command(&["HGET", &key, "o"]) {
            return String::from_utf8_lossy(&o).parse().unwrap_or(0);
        }
    }
    0
}

/// Waits until Redis has numbered `n` more messages of the topic than `from` (the run
/// publishes for 8 s from about `began`: every step must be done by then).
fn wait_published(redis: &Redis, from: u64, n: u64, what: &str, began: Instant) {
    let mut last = 0;
    assert!(
        eventually(STEP, || {
            last = redis_offset(redis);
            last >= from + n
        }),
        "{what}: Redis' offset is {last}, not {} yet, {:.1}s after loadtest started",
        from + n,
        began.elapsed().as_secs_f64()
    );
}

/// Waits until `node`'s link to Redis is up.
fn wait_linked(node: &Node) {
    assert!(
        eventually(STEP, || node.metric("wsgate_cluster_up") == 1.0),
        "node {} never joined Redis; its log:\n{}",
        node.name,
        node.log()
    );
}

/// Publishes refused on `nodes` because Redis was down.
fn refused_redis_down(nodes: &[Node]) -> f64 {
    nodes
        .iter()
        .map(|n| n.metric(r#"wsgate_cluster_dropped_total{reason="redis_down"}"#))
        .sum()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .or_else(|| v[k].as_f64().map(|x| x as u64))
        .unwrap_or_else(|| panic!("no number {k} in {v:#}"))
}

#[test]
fn recover_through_a_drain_and_a_redis_restart_loses_nothing_unannounced() {
    let began = Instant::now();
    let mut redis = Redis::start_new();
    let mut nodes = vec![
        Node::start("a", 0, &node_args(&redis, "a")),
        Node::start("b", 0, &node_args(&redis, "b")),
    ];
    for node in &nodes {
        wait_linked(node);
    }
    let mut lb = Haproxy::start(&[nodes[0].addr, nodes[1].addr]);

    let url = format!("ws://{}", lb.addr);
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command.args([
        "recover",
        "--url",
        &url,
        "--topic",
        TOPIC,
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration",
        "8s",
        "--drop-every",
        "500ms",
        "--allow-gaps",
        "--json",
    ]);
    let mut run = Proc::spawn("loadtest recover", command);
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut step =
        |what: &str| steps.push(format!("{:>6.2}s {what}", began.elapsed().as_secs_f64()));
    step("cluster up, loadtest started");

    // 1. publishing has begun
    wait_published(&redis, 0, 100, "publishing never began", started);
    step("100 published");

    // 2. the node the publisher is on drains (its clients get 1001 and come back through
    //    HAProxy), and starts again on its port
    let on: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].metric("wsgate_publishes_total") > 0.0)
        .collect();
    assert_eq!(on.len(), 1, "the publisher is on one node");
    let p = on[0];
    nodes[p].sigterm();
    let status = nodes[p].wait_exit(STEP);
    assert!(
        status.is_some_and(|s| s.success()),
        "node {} did not drain and exit 0: {status:?}; its log:\n{}",
        nodes[p].name,
        nodes[p].log()
    );
    let drained = nodes[p].log();
    step(&format!("node {} drained", nodes[p].name));
    let name = nodes[p].name.clone();
    let port = nodes[p].addr.port();
    nodes[p] = Node::start(&name, port, &node_args(&redis, &name));
    wait_linked(&nodes[p]);
    lb.wait_status(p, "UP");
    step(&format!("node {name} back"));
    wait_published(
        &redis,
        redis_offset(&redis),
        100,
        "publishing stopped after the drain",
        started,
    );
    step("100 more published");

    // 3. Redis dies: nothing can be numbered, publishes are refused as unavailable
    let refused = refused_redis_down(&nodes);
    redis.kill();
    step("redis killed");
    assert!(
        eventually(STEP, || refused_redis_down(&nodes) > refused),
        "no publish was refused while Redis was down"
    );
    step("a publish refused");

    // 4. Redis comes back empty: a new epoch, offsets from 1
    redis.start();
    step("redis back");
    wait_published(
        &redis,
        0,
        100,
        "publishing never resumed after Redis came back",
        started,
    );
    step("100 published in the new epoch");

    // 5. the run ends by itself
    let ended = run.wait_exit(Duration::from_secs(30));
    assert!(ended.is_some(), "loadtest did not end");
    step("loadtest ended");
    let out = run.stdout_to_end();
    let err = run.log();
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    let steps = steps.join("\n");
    eprintln!("{steps}\n{v:#}");
    let ctx = format!("loadtest's output:\n{err}\nsteps:\n{steps}");
    if ended.and_then(|s| s.code()) != Some(0) {
        // the nodes' logs follow as they are dropped; the drained one's went with it
        eprintln!("---- wsgate {name} before its drain ----\n{drained}");
        panic!("loadtest failed ({ended:?}): {ctx}");
    }
    assert_eq!(v["ok"], true, "{ctx}");
    for k in [
        "lost",
        "duplicated",
        "reordered",
        "mismatched",
        "offset_mismatched",
        "unexpected",
        "publishes_refused",
        "publishes_overtaken",
        "subscribers_behind",
    ] {
        assert_eq!(n(&v, k), 0, "{k}: {ctx}");
    }
    // 200 a second for 8 seconds, none skipped: the outage was caught up
    let published = n(&v, "published");
    assert!((1550..=1650).contains(&published), "{ctx}");
    // every message owed was received, or fell in a hole the gateway announced
    assert_eq!(
        n(&v, "received") + n(&v, "lost_after_gap"),
        n(&v, "deliveries_expected"),
        "{ctx}"
    );
    // the drain: the publisher reconnected and its subscribers came back
    assert!(n(&v, "publisher_reconnects") >= 1, "{ctx}");
    assert!(n(&v, "connections_ended_by_server") >= 1, "{ctx}");
    // Redis down: publishes refused and retried; back empty: a new epoch, told
    assert!(n(&v, "publish_retries") >= 1, "{ctx}");
    assert_eq!(n(&v, "epochs"), 2, "{ctx}");
    assert!(n(&v, "gaps") + n(&v, "recovered_false") > 0, "{ctx}");
    assert!(n(&v, "recovered_true") > 0, "{ctx}");
    lb.assert_running();
    for node in &mut nodes {
        node.assert_running();
    }
}
