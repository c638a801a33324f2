#!/usr/bin/env bash
# wsgate side by side with the servers people would pick instead, one core each:
#   wsgate (--workers 1), tokio-tungstenite (1 worker thread; with tungstenite's default
#   128 KiB read buffer, and with a 4 KiB one), uWebSockets.js, Node ws.
# Every server is pinned to one core (taskset -c $SERVER_CPU, default 0) and the `loadtest`
# binary to another ($LOAD_CPU, default 1). For each scenario the servers run in alternation,
# A B C D A B C D ..., a fresh server process per run, so slow drifts of a shared machine hit
# every server alike. Scenarios (loadtest --json):
#   echo    100 connections, 20-byte binary messages, 1 in flight each: messages/s, round trip
#   fanout  1 publisher, 10,000 subscribers of one topic, 64-byte payloads, 16 publishes in
#           flight: deliveries/s, publish-to-receive latency
#   conns   10,000 idle connections opened at 5,000/s: the server's RSS per connection
# It prints one Markdown table per scenario: the median over rounds of each measure, and the
# ratio to wsgate. A run that loses, reorders or corrupts a message, or whose connections fail,
# is reported as failed with its counts; medians are taken over the runs that passed only.
#
# Usage: benches/peers/compare.sh [--quick] [--duration SECS] [--rounds N]
#          [--servers "wsgate wsgate-base tokio-tungstenite tokio-tungstenite-4k uws ws"]
#          [--scenarios "echo fanout conns"]
#          [--subscribers N] [--window N] [--conns N] [--no-build] [--out DIR]
# --window is loadtest fanout's: publishes in flight, counted on the publisher's own copies
# (default 16, loadtest's default). --quick is --duration 2 --rounds 1.
# Environment: DURATION, ROUNDS, SUBSCRIBERS, WINDOW, CONNS, SERVER_CPU, LOAD_CPU (the same);
# WSGATE_BIN and LOADTEST_BIN to measure binaries built elsewhere (then the root is not built),
# WSGATE_COMMIT to name the commit they were built from in the report. The server
# `wsgate-base` is a second wsgate binary, WSGATE_BASE_BIN (WSGATE_BASE_COMMIT names it), run
# like `wsgate`: a change measured before and after in the same run.
# Results (raw JSON, logs, summary.md) go to benches/peers/results/DATE-TIME/ unless --out.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=${DURATION:-10}
rounds=${ROUNDS:-3}
subscribers=${SUBSCRIBERS:-10000}
window=${WINDOW:-16}
conns=${CONNS:-10000}
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}
servers="wsgate tokio-tungstenite tokio-tungstenite-4k uws ws"
scenarios="echo fanout conns"
build=1
out=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) duration=2; rounds=1 ;;
        --duration) duration=${2:?}; shift ;;
        --rounds) rounds=${2:?}; shift ;;
        --servers) servers=${2:?}; shift ;;
        --scenarios) scenarios=${2:?}; shift ;;
        --subscribers) subscribers=${2:?}; shift ;;
        --window) window=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --no-build) build=0 ;;
        --out) out=${2:?}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
    shift
done
duration=${duration%s}
case "$duration$rounds$subscribers$conns$window" in
    *[!0-9]*) echo "compare.sh: --duration, --rounds, --subscribers, --window and --conns take whole numbers" >&2; exit 2 ;;
esac
if [ "$rounds" -lt 1 ] || [ "$duration" -lt 1 ]; then
    echo "compare.sh: --rounds and --duration must be at least 1" >&2
    exit 2
fi
for s in $servers; do
    case "$s" in wsgate | wsgate-base | tokio-tungstenite | tokio-tungstenite-4k | uws | ws) ;; *) echo "compare.sh: unknown server '$s'" >&2; exit 2 ;; esac
done
for s in $scenarios; do
    case "$s" in echo | fanout | conns) ;; *) echo "compare.sh: unknown scenario '$s'" >&2; exit 2 ;; esac
done
command -v taskset >/dev/null || { echo "compare.sh: needs taskset (util-linux)" >&2; exit 1; }
if [ "$(nproc --all)" -lt 2 ]; then
    echo "compare.sh: needs two cores, one for the server and one for the load generator" >&2
    exit 1
fi

# the loadtest process holds every fanout connection; servers need as many descriptors
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "compare.sh: $*" >&2; }

wsgate_bin=${WSGATE_BIN:-}
loadtest_bin=${LOADTEST_BIN:-}
if [ "$build" = 1 ]; then
    if [ -z "$wsgate_bin" ] || [ -z "$loadtest_bin" ]; then
        log "building wsgate and loadtest (release)"
        (cd "$root" && cargo build --release -p wsgate -p loadtest) >&2
    fi
    case " $servers " in *" tokio-tungstenite"*)
        log "building the tokio-tungstenite peer (release)"
        cargo build --release --locked --manifest-path "$here/tokio-tungstenite/Cargo.toml" >&2 ;;
    esac
fi
case " $servers " in *" uws "* | *" ws "*)
    if ! command -v node >/dev/null; then
        log "node is not installed: the uws and ws servers will be reported as not started"
    elif [ ! -d "$here/node_modules/ws" ] || [ ! -d "$here/node_modules/@trufflesuite/uws-js-unofficial" ] ||
        [ ! -d "$here/node_modules/bufferutil" ]; then
        log "installing the npm packages (npm ci)"
        (cd "$here" && npm ci --no-audit --no-fund) >&2
    fi ;;
esac

wsgate_bin=${wsgate_bin:-$root/target/release/wsgate}
loadtest_bin=${loadtest_bin:-$root/target/release/loadtest}
for b in "$wsgate_bin" "$loadtest_bin"; do
    [ -x "$b" ] || { echo "compare.sh: $b is missing (drop --no-build)" >&2; exit 1; }
done

if [ -z "$out" ]; then
    out="$here/results/$(date +%Y%m%d-%H%M%S)"
fi
mkdir -p "$out/bin"
log "raw results in $out"
# run copies, so that a cargo build elsewhere in the tree cannot swap a binary mid-comparison
cp "$wsgate_bin" "$out/bin/wsgate"
cp "$loadtest_bin" "$out/bin/loadtest"
case " $servers " in *" wsgate-base "*)
    [ -x "${WSGATE_BASE_BIN:-}" ] || { echo "compare.sh: the server wsgate-base needs WSGATE_BASE_BIN" >&2; exit 2; }
    cp "$WSGATE_BASE_BIN" "$out/bin/wsgate-base" ;;
esac
loadtest="$out/bin/loadtest"
case " $servers " in *" tokio-tungstenite"*)
    cp "$here/tokio-tungstenite/target/release/peer-tokio-tungstenite" "$out/bin/" 2>/dev/null ||
        log "the tokio-tungstenite peer is not built (drop --no-build): reported as not started" ;;
esac

server_cmd() {
    case "$1" in
        # the load generator publishes as a trusted backend would: no per-connection rate
        wsgate) echo "$out/bin/wsgate --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0" ;;
        wsgate-base) echo "$out/bin/wsgate-base --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0" ;;
        tokio-tungstenite) echo "$out/bin/peer-tokio-tungstenite --port 0 --threads 1" ;;
        tokio-tungstenite-4k) echo "$out/bin/peer-tokio-tungstenite --port 0 --threads 1 --read-buffer-size 4096" ;;
        uws) echo "node $here/uws.js --port 0" ;;
        ws) echo "node $here/ws.js --port 0" ;;
    esac
}

pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# start_server NAME LOG: sets pid and addr, or returns 1
start_server() {
    local name=$1 slog=$2
    # shellcheck disable=SC2046 # the command is split into words on purpose
    taskset -c "$server_cpu" $(server_cmd "$name") >"$slog" 2>&1 &
    pid=$!
    addr=""
    for _ in $(seq 200); do
        addr=$(sed -n 's/^listening on //p' "$slog" | head -n 1)
        [ -n "$addr" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    stop_server
    return 1
}

# run_one SCENARIO SERVER ROUND: writes $out/SCENARIO.SERVER.ROUND.{json,log,rc,wall,server.log}
run_one() {
    local scenario=$1 name=$2 round=$3
    local base="$out/$scenario.$name.$round"
    if ! start_server "$name" "$base.server.log"; then
        log "$scenario round $round: $name did not start (see $base.server.log)"
        echo "did-not-start" >"$base.rc"
        return
    fi
    local url="ws://$addr" limit=$((duration * 2 + 120))
    local -a cmd
    case "$scenario" in
        echo) cmd=(echo --url "$url" --conns 100 --size 20 --duration "${duration}s") ;;
        fanout) cmd=(fanout --url "$url" --subscribers "$subscribers" --publishers 1 --size 64
            --window "$window" --duration "${duration}s") ;;
        conns) cmd=(conns --url "$url" --count "$conns" --rate 5000 --duration 2s --server-pid "$pid") ;;
    esac
    log "$scenario round $round/$rounds: $name"
    local rc=0 t0 t1
    t0=$(date +%s.%N)
    timeout "$limit" taskset -c "$load_cpu" "$loadtest" "${cmd[@]}" --json >"$base.json" 2>"$base.log" || rc=$?
    t1=$(date +%s.%N)
    echo "$rc" >"$base.rc"
    echo "$t0 $t1" >"$base.wall"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "server-exited" >>"$base.rc"
    fi
    stop_server
    sleep 1 # let the closed connections go before the next server starts
}

for scenario in $scenarios; do
    for round in $(seq "$rounds"); do
        for name in $servers; do
            run_one "$scenario" "$name" "$round"
        done
    done
done

# the machine and the versions, for the report
{
    echo "model=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
    echo "cpus=$(nproc --all)"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc --version 2>/dev/null || echo '?')"
    echo "node=$(node --version 2>/dev/null || echo 'not installed')"
    if [ -n "${WSGATE_COMMIT:-}" ]; then
        echo "commit=$WSGATE_COMMIT"
    elif [ -n "${WSGATE_BIN:-}" ]; then
        echo "commit=(unknown: $WSGATE_BIN)"
    else
        dirty=""
        [ -z "$(git -C "$root" status --porcelain -- core gateway loadtest Cargo.toml Cargo.lock 2>/dev/null)" ] ||
            dirty="+uncommitted changes"
        echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
    fi
    echo "base=${WSGATE_BASE_COMMIT:-${WSGATE_BASE_BIN:-}}"
    echo "duration=$duration"
    echo "rounds=$rounds"
    echo "subscribers=$subscribers"
    echo "window=$window"
    echo "conns=$conns"
    echo "servers=$servers"
    echo "scenarios=$scenarios"
    echo "server_cpu=$server_cpu"
    echo "load_cpu=$load_cpu"
} >"$out/machine.txt"

python3 "$here/summarize.py" "$out" | tee "$out/summary.md"
