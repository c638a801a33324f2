#!/usr/bin/env bash
# The gateway's headline numbers, as the README reports them: one worker, on loopback.
#   1. RSS per idle connection at 10,000 connections
#   2. echo messages per second, 100 connections, 20-byte messages
#   3. fanout deliveries per second, 1,000 subscribers of one topic, 64-byte payloads
# Usage: loadtest/scripts/gateway-numbers.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
cargo build --release -p wsgate -p loadtest --locked >&2
out=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
target/release/wsgate --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0 >"$out" &
pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$out")
[ -n "$addr" ] || { echo "wsgate did not start" >&2; exit 1; }
lt=target/release/loadtest
echo "== conns: 10,000 idle connections" >&2
$lt conns --url "ws://$addr" --count 10000 --rate 5000 --duration 2s --server-pid "$pid" --json >"$out.conns"
echo "== echo: 100 connections, 20 B" >&2
$lt echo --url "ws://$addr" --conns 100 --size 20 --duration "${secs}s" --json >"$out.echo"
echo "== fanout: 1,000 subscribers, 64 B" >&2
$lt fanout --url "ws://$addr" --subscribers 1000 --size 64 --duration "${secs}s" --json >"$out.fanout"
python3 - "$out" <<'PY'
import json, sys
base = sys.argv[1]
c = json.load(open(base + ".conns")); e = json.load(open(base + ".echo")); f = json.load(open(base + ".fanout"))
print("| measure | value |")
print("| --- | --- |")
print(f"| RSS per idle connection at {int(c['opened'])} connections | {c['server_rss_per_conn_bytes']:.0f} bytes |")
print(f"| echo, 100 connections, 20 B: messages/s | {e['messages_per_sec']:.0f} (p50 {e['latency_us']['p50']} us, p99 {e['latency_us']['p99']} us) |")
print(f"| fanout, 1,000 subscribers, 64 B: deliveries/s | {f['deliveries_per_sec']:.0f} (p50 {f['latency_us']['p50']} us, p99 {f['latency_us']['p99']} us) |")
ok = c["ok"] and e["ok"] and f["ok"]
print("correctness:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
rm -f "$out".conns "$out".echo "$out".fanout
