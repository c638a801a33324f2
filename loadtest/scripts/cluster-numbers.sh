#!/usr/bin/env bash
# The cost of the Redis hop: `loadtest fanout` through HAProxy to two wsgate nodes joined by
# Redis, against one wsgate node alone (directly, and through the same HAProxy, to tell the
# balancer's cost from Redis'), alternating, in the same run on the same machine.
#
# Through HAProxy (round robin) the subscribers land half on each node and the publisher on
# one of them: half of every message's deliveries cross Redis. Every node runs one worker.
#
# Usage: loadtest/scripts/cluster-numbers.sh [seconds per run, default 10] [rounds, default 3]
#        [subscribers, default 1000] [publishes per second, default 0: as fast as it goes]
# Unpaced, the runs measure throughput; paced well below it (say 100/s), latency. Paced runs
# add one more: the publisher on one node and every subscriber on the other, straight to the
# nodes, so that every delivery crosses Redis (unpaced, nothing slows such a publisher down to
# what the other node delivers: pub/sub has no backpressure across nodes).
# With HISTORY_RULE set (e.g. HISTORY_RULE='topics = "*", size = 1000, ttl = "1m"'), two more
# nodes joined by the same Redis keep a history of every topic (Redis numbers each message), and
# the cluster runs are made against them too, to tell what a history costs across nodes.
# FANOUT_WINDOW sets the publisher's window (publishes sent and not yet seen back; 16 by
# default): a publish to a topic with history in a cluster comes back to its publisher through
# Redis, so a small window bounds the publisher by that round trip rather than by the nodes.
# Needs redis-server and haproxy (deploy/test-setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
rounds="${2:-3}"
subs="${3:-1000}"
rate="${4:-0}"
for tool in redis-server haproxy; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run deploy/test-setup.sh" >&2; exit 2; }
done
cargo build --release -p wsgate -p loadtest --locked >&2
dir=$(mktemp -d)
pids=()
cleanup() {
  # nodes are started in command substitutions (subshells): their pids are in files
  for f in "$dir"/*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  >"$dir/redis.log" 2>&1 &
pids+=($!)

start_node() { # name, extra args...
  local name=$1; shift
  target/release/wsgate --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0 "$@" >"$dir/$name.out" 2>&1 &
  echo $! >"$dir/$name.pid"
  for _ in $(seq 100); do grep -q '^listening on' "$dir/$name.out" && break; sleep 0.05; done
  sed -n 's/^listening on //p' "$dir/$name.out"
}
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
a=$(start_node a --redis "redis://127.0.0.1:$redis_port" --node-id a \
  --proxy-protocol true --trusted-proxies 127.0.0.1/32)
b=$(start_node b --redis "redis://127.0.0.1:$redis_port" --node-id b \
  --proxy-protocol true --trusted-proxies 127.0.0.1/32)
single=$(start_node single)
[ -n "$a" ] && [ -n "$b" ] && [ -n "$single" ] || { echo "a node did not start" >&2; exit 1; }
history="${HISTORY_RULE:-}"
if [ -n "$history" ]; then
  c=$(start_node c --redis "redis://127.0.0.1:$redis_port" --node-id c \
    --proxy-protocol true --trusted-proxies 127.0.0.1/32 --history "$history")
  d=$(start_node d --redis "redis://127.0.0.1:$redis_port" --node-id d \
    --proxy-protocol true --trusted-proxies 127.0.0.1/32 --history "$history")
  [ -n "$c" ] && [ -n "$d" ] || { echo "a history node did not start" >&2; exit 1; }
fi

lb_port=$(free_port)
lb_single_port=$(free_port)
cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend ws
  bind 127.0.0.1:$lb_port
  default_backend nodes
frontend ws_single
  bind 127.0.0.1:$lb_single_port
  default_backend single
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  server a $a check inter 1s send-proxy-v2
  server b $b check inter 1s send-proxy-v2
backend single
  option httpchk GET /readyz
  server single $single check inter 1s
EOF
lb_history_port=$(free_port)
if [ -n "$history" ]; then
  cat >>"$dir/haproxy.cfg" <<EOF
frontend ws_history
  bind 127.0.0.1:$lb_history_port
  default_backend history
backend history
  balance roundrobin
  option httpchk GET /readyz
  server c $c check inter 1s send-proxy-v2
  server d $d check inter 1s send-proxy-v2
EOF
fi
haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
pids+=($!)
# both nodes in rotation: two health checks passed through the frontend's port
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$lb_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$lb_port/readyz" >/dev/null || { cat "$dir/haproxy.log" >&2; exit 1; }
if [ -n "$history" ]; then
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$lb_history_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
sleep 1

run() { # label, url, extra arguments...
  local label=$1 url=$2
  shift 2
  target/release/loadtest fanout --url "$url" --subscribers "$subs" --size 64 --rate "$rate" \
    --window "${FANOUT_WINDOW:-16}" --duration "${secs}s" --json "$@" >"$dir/$label.$r.json"
}
for r in $(seq "$rounds"); do
  echo "== round $r: one node" >&2
  run single "ws://$single"
  echo "== round $r: one node through HAProxy" >&2
  run single_lb "ws://127.0.0.1:$lb_single_port"
  echo "== round $r: two nodes through HAProxy and Redis" >&2
  run cluster "ws://127.0.0.1:$lb_port"
  if [ "$rate" != 0 ]; then
    echo "== round $r: publisher on node a, subscribers on node b" >&2
    # from 127.0.0.2: the nodes expect a PROXY header from 127.0.0.1 (HAProxy) only
    run across "ws://$b" --publish-url "ws://$a" --source-ips 127.0.0.2-127.0.0.2
  fi
  if [ -n "$history" ]; then
    echo "== round $r: two nodes through HAProxy and Redis, a topic with history" >&2
    run cluster_history "ws://127.0.0.1:$lb_history_port"
    if [ "$rate" != 0 ]; then
      echo "== round $r: history topic, publisher on node c, subscribers on node d" >&2
      run across_history "ws://$d" --publish-url "ws://$c" --source-ips 127.0.0.2-127.0.0.2
    fi
  fi
done
python3 - "$dir" "$rounds" "$subs" "$rate" "$history" <<'PY'
import json, statistics, sys
d, rounds, subs, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
history = sys.argv[5]
def load(label):
    return [json.load(open(f"{d}/{label}.{r}.json")) for r in range(1, rounds + 1)]
rows = {
    "one node": load("single"),
    "one node through HAProxy": load("single_lb"),
    "two nodes through HAProxy, joined by Redis": load("cluster"),
}
if rate:
    rows["two nodes, publisher on one, every subscriber on the other"] = load("across")
if history:
    rows["two nodes through HAProxy, joined by Redis, topic with history"] = load("cluster_history")
    if rate:
        rows["two nodes, publisher on one, every subscriber on the other, topic with history"] = \
            load("across_history")
pace = f", {rate} publishes/s" if rate else ", unpaced"
print(f"| fanout, 1 publisher{pace}, {subs} subscribers, 64 B | deliveries/s (median of {rounds}) | p50 | p99 |")
print("| --- | --- | --- | --- |")
med = {}
for name, runs in rows.items():
    dps = statistics.median(x["deliveries_per_sec"] for x in runs)
    p50 = statistics.median(x["latency_us"]["p50"] for x in runs)
    p99 = statistics.median(x["latency_us"]["p99"] for x in runs)
    med[name] = dps
    print(f"| {name} | {dps:,.0f} | {p50/1000:.2f} ms | {p99/1000:.2f} ms |")
two = med["two nodes through HAProxy, joined by Redis"]
print(f"two nodes through HAProxy / one node: {two / med['one node']:.2f}x; "
      f"/ one node through HAProxy: {two / med['one node through HAProxy']:.2f}x")
if history:
    h = med["two nodes through HAProxy, joined by Redis, topic with history"]
    print(f"two nodes, topic with history / without: {h / two:.2f}x")
    if rate:
        a = med["two nodes, publisher on one, every subscriber on the other"]
        ah = med["two nodes, publisher on one, every subscriber on the other, topic with history"]
        print(f"publisher on one node, subscribers on the other, with history / without: {ah / a:.2f}x")
ok = all(x["ok"] for runs in rows.values() for x in runs)
print("correctness:", "ok (no loss, no reorder)" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
