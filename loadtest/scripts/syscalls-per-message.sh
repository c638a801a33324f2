#!/usr/bin/env bash
# System calls per message of a server under a loadtest run, counted by the kernel's syscall
# tracepoints (perf stat -e syscalls:sys_enter_*), without slowing the server as strace does.
#
# Usage: loadtest/scripts/syscalls-per-message.sh "SERVER COMMAND" LOADTEST-ARGS...
#   The server command must print `listening on ADDR` (wsgate, the native uWS peer,
#   `loadtest tcp-echo-server`); it runs on core $SERVER_CPU (default 0), loadtest on
#   $LOAD_CPU (default 1). The count covers 3 s in the middle of the run: give loadtest a
#   --duration of at least 6s.
# Example:
#   loadtest/scripts/syscalls-per-message.sh \
#       "target/release/wsgate --listen 127.0.0.1:0 --workers 1 --publish-rate 0 --log warn" \
#       echo --conns 100 --size 20 --window 16 --duration 6s
# Prints messages (or deliveries) per second, per server CPU second, and per send call,
# io_uring_enter (wsgate's sends made at once), receive and epoll_wait call. Needs perf with tracepoint access (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
server=$1
shift
lt=${LOADTEST_BIN:-target/release/loadtest}
[ -x "$lt" ] || { echo "syscalls-per-message.sh: $lt is missing (cargo build --release -p loadtest)" >&2; exit 1; }
command -v perf >/dev/null || { echo "syscalls-per-message.sh: needs perf" >&2; exit 1; }
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log" "$log".*' EXIT
# shellcheck disable=SC2086 # the server command is a command line
taskset -c "${SERVER_CPU:-0}" $server >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$log" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$log" | head -1)
[ -n "$addr" ] || { echo "syscalls-per-message.sh: the server did not say where it listens" >&2; exit 1; }
taskset -c "${LOAD_CPU:-1}" "$lt" "$@" --url "ws://$addr" --json >"$log.json" 2>/dev/null &
ltpid=$!
sleep 2.5
cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
events=syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write
events=$events,syscalls:sys_enter_sendmsg,syscalls:sys_enter_io_uring_enter
events=$events,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
perf stat -x, -e "$events" -p "$pid" -- sleep 3 2>"$log.perf"
cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
wait "$ltpid" || true
python3 - "$log" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
base, cpu0, cpu1, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = json.load(open(base + ".json"))
rate = d.get("deliveries_per_sec") or d.get("messages_per_sec")
n = rate * 3
calls = {}
for line in open(base + ".perf"):
    f = line.split(",")
    if len(f) > 2 and "sys_enter_" in f[2]:
        calls[f[2].split("sys_enter_")[1]] = int(f[0]) if f[0].isdigit() else 0
sends = sum(calls.get(k, 0) for k in ("sendto", "sendmsg", "writev", "write"))
rings = calls.get("io_uring_enter", 0)
reads = calls.get("recvfrom", 0) + calls.get("read", 0)
cpu = (cpu1 - cpu0) / tck
print(f"{rate:,.0f} messages/s, {n / cpu:,.0f} per server CPU second, ok={d.get('ok')}")
print(f"per send call {n / max(1, sends):.1f}, per io_uring_enter (sends at once) "
      f"{n / max(1, rings):.1f}, per send call or io_uring_enter {n / max(1, sends + rings):.1f}, "
      f"per receive call {n / max(1, reads):.1f}, "
      f"per epoll_wait {n / max(1, calls.get('epoll_wait', 0)):.1f}")
print("calls in 3 s:", calls)
PY
