#!/usr/bin/env bash
# wsgate side by side with the servers people would pick instead, one core each:
#   wsgate (--workers 1); native uWebSockets (C++, a binary built by hand, given with
#   --uws-native PATH); a raw TCP echo (`loadtest tcp-echo-server`, the baseline of the echo
#   and large scenarios); tokio-tungstenite (1 worker thread; with tungstenite's default 128 KiB
#   read buffer, and with a 4 KiB one); uWebSockets.js; Node ws. Over TLS: wsgate-tls (wsgate
#   with --tls-cert/--tls-key) and uws-tls (uWebSockets.js' SSLApp), with an ECDSA P-256
#   certificate of a CA both made here with openssl for the run; loadtest speaks wss:// and
#   trusts that CA (--ca); session resumption is left on (loadtest's default).
# Every server is pinned to one core (taskset -c $SERVER_CPU, default 0) and the `loadtest`
# binary to another ($LOAD_CPU, default 1). For each scenario the servers run in alternation,
# A B C D A B C D ..., a fresh server process per run, so slow drifts of a shared machine hit
# every server alike. The server's CPU time (utime + stime from /proc/PID/stat) is read before
# and after each run. Scenarios (loadtest --json):
#   echo         100 connections, 20-byte binary messages, 1 in flight each: messages/s
#   echo16       the same with 16 in flight each
#   echo16k      100 connections, 16 KiB messages, 16 in flight each
#   fanout1k     1 publisher, 1,000 subscribers of one topic, 64-byte payloads, --window
#                publishes in flight: deliveries/s, publish-to-receive latency
#   fanout       the same with --subscribers (10,000) subscribers
#   fanout-rate  --subscribers subscribers, one publisher at a fixed --fanout-rate (5)
#                publishes/s: publish-to-receive p50 and p99
#   fanout-deflate1k, fanout-deflate16k
#                1 publisher, --subscribers subscribers of one topic, a 1 KiB (16 KiB) JSON-like
#                payload (loadtest --payload json), --window publishes in flight, with
#                permessage-deflate (loadtest --compression: every subscriber offers it, the run
#                stops if the server declines): deliveries/s, bytes on the wire per delivery,
#                compression ratio. The servers compress: wsgate with --compression true (and
#                --compression-level, --compression-min-size when given), uWebSockets.js with
#                its shared compressor (uws.js --compression shared), Node ws without context
#                takeover (ws.js --compression no-context); tokio-tungstenite and native uWS
#                have no compression and are skipped
#   fanout-plain1k, fanout-plain16k
#                the same without compression (wsgate --compression false): the baseline of
#                each server's deflate run
#   conns        --conns (10,000) idle connections opened at --conn-rate (5,000/s; 0: as fast
#                as the server takes them): the server's RSS per connection, connections
#                opened per second (a measure of the server only when unpaced), handshake latency
#   large        one --large-size (256 MiB) message echoed through /echo: GB/s, the server's
#                peak RSS over the message size
# The raw TCP echo (server tcp-echo) runs the echo scenarios and large only, with the same
# bytes and no WebSocket framing (loadtest --raw-tcp).
# It prints one Markdown table per scenario: the median over rounds of each measure, its ratio
# to wsgate, to the reference server (--reference, default uws-native when it is given, else
# wsgate) and to the raw TCP echo, the server's CPU seconds and the measure per server
# CPU-second. A run that loses, reorders or corrupts a message, or whose connections fail, is
# reported as failed with its counts; medians are taken over the runs that passed only.
#
# Usage: benches/peers/compare.sh [--quick] [--duration SECS] [--rounds N]
#          [--servers "wsgate wsgate-base uws-native tcp-echo tokio-tungstenite
#                      tokio-tungstenite-4k uws ws wsgate-tls uws-tls"]
#          [--scenarios "echo echo16 echo16k fanout1k fanout fanout-rate conns large
#                        fanout-plain1k fanout-deflate1k fanout-plain16k fanout-deflate16k"]
#          [--uws-native PATH] [--reference SERVER] [--subscribers N] [--window N]
#          [--fanout-rate N] [--conns N] [--conn-rate N] [--large-size SIZE]
#          [--compression-level N] [--compression-min-size BYTES] [--no-build] [--out DIR]
# --window is loadtest fanout's: publishes in flight, counted on the publisher's own copies
# (default 16, loadtest's default). --quick is --duration 2 --rounds 1. --large-size is
# N, NKiB, NMiB or NGiB, at most 1GiB (the servers' message limit in that scenario).
# --compression-level and --compression-min-size are passed to wsgate in the deflate scenarios
# (its own defaults when not given); the other servers have their own.
# Environment: DURATION, ROUNDS, SUBSCRIBERS, WINDOW, FANOUT_RATE, CONNS, CONN_RATE, LARGE_SIZE,
# COMPRESSION_LEVEL, COMPRESSION_MIN_SIZE, SERVER_CPU, LOAD_CPU (the same); UWS_NATIVE_BIN (as --uws-native); WSGATE_BIN and
# LOADTEST_BIN to measure binaries built elsewhere (then the root is not built), WSGATE_COMMIT
# to name the commit they were built from in the report. The server `wsgate-base` is a second
# wsgate binary, WSGATE_BASE_BIN (WSGATE_BASE_COMMIT names it), run like `wsgate`: a change
# measured before and after in the same run. The server `uws-native` is listed by default
# when a binary is given; listed without one, it is reported as not started.
# Results (raw JSON, logs, summary.md, summary.json) go to benches/peers/results/DATE-TIME/
# unless --out.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=${DURATION:-10}
rounds=${ROUNDS:-3}
subscribers=${SUBSCRIBERS:-10000}
window=${WINDOW:-16}
fanout_rate=${FANOUT_RATE:-5}
conns=${CONNS:-10000}
conn_rate=${CONN_RATE:-5000}
large_size=${LARGE_SIZE:-256MiB}
compression_level=${COMPRESSION_LEVEL:-}
compression_min_size=${COMPRESSION_MIN_SIZE:-}
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}
uws_native=${UWS_NATIVE_BIN:-}
servers=""
scenarios="echo echo16 echo16k fanout1k fanout fanout-rate conns large fanout-plain1k fanout-deflate1k fanout-plain16k fanout-deflate16k"
reference=""
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
        --uws-native) uws_native=${2:?}; shift ;;
        --reference) reference=${2:?}; shift ;;
        --subscribers) subscribers=${2:?}; shift ;;
        --window) window=${2:?}; shift ;;
        --fanout-rate) fanout_rate=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --conn-rate) conn_rate=${2:?}; shift ;;
        --large-size) large_size=${2:?}; shift ;;
        --compression-level) compression_level=${2:?}; shift ;;
        --compression-min-size) compression_min_size=${2:?}; shift ;;
        --no-build) build=0 ;;
        --out) out=${2:?}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
    shift
done
if [ -z "$servers" ]; then
    servers="wsgate${uws_native:+ uws-native} tcp-echo tokio-tungstenite tokio-tungstenite-4k uws ws"
fi
duration=${duration%s}
case "$duration$rounds$subscribers$conns$window$fanout_rate$conn_rate$compression_level$compression_min_size" in
    *[!0-9]*) echo "compare.sh: --duration, --rounds, --subscribers, --window, --fanout-rate, --conns, --conn-rate, --compression-level and --compression-min-size take whole numbers" >&2; exit 2 ;;
esac
if [ "$rounds" -lt 1 ] || [ "$duration" -lt 1 ] || [ "$fanout_rate" -lt 1 ]; then
    echo "compare.sh: --rounds, --duration and --fanout-rate must be at least 1" >&2
    exit 2
fi
# --large-size in bytes: N, NKiB, NMiB or NGiB, 16 bytes to 1 GiB
large_bytes=""
case "$large_size" in
    *[!0-9]*KiB | *[!0-9]*MiB | *[!0-9]*GiB | KiB | MiB | GiB) ;;
    *KiB) large_bytes=$((${large_size%KiB} << 10)) ;;
    *MiB) large_bytes=$((${large_size%MiB} << 20)) ;;
    *GiB) large_bytes=$((${large_size%GiB} << 30)) ;;
    "" | *[!0-9]*) ;;
    *) large_bytes=$large_size ;;
esac
if [ -z "$large_bytes" ] || [ "$large_bytes" -lt 16 ] || [ "$large_bytes" -gt $((1 << 30)) ]; then
    echo "compare.sh: --large-size takes N, NKiB, NMiB or NGiB, from 16 bytes to 1GiB" >&2
    exit 2
fi
for s in $servers; do
    case "$s" in
        wsgate | wsgate-base | uws-native | tcp-echo | tokio-tungstenite | tokio-tungstenite-4k | uws | ws | wsgate-tls | uws-tls) ;;
        *) echo "compare.sh: unknown server '$s'" >&2; exit 2 ;;
    esac
done
for s in $scenarios; do
    case "$s" in
        echo | echo16 | echo16k | fanout1k | fanout | fanout-rate | conns | large) ;;
        fanout-plain1k | fanout-deflate1k | fanout-plain16k | fanout-deflate16k) ;;
        *) echo "compare.sh: unknown scenario '$s'" >&2; exit 2 ;;
    esac
done
if [ -n "$uws_native" ] && [ ! -x "$uws_native" ]; then
    echo "compare.sh: --uws-native $uws_native is not an executable file" >&2
    exit 2
fi
if [ -z "$reference" ]; then
    case " $servers " in
        *" uws-native "*) [ -n "$uws_native" ] && reference=uws-native ;;
    esac
    reference=${reference:-wsgate}
fi
case " $servers " in
    *" $reference "*) ;;
    *) echo "compare.sh: --reference $reference is not one of the servers ($servers)" >&2; exit 2 ;;
esac
if [ -z "$out" ]; then
    out="$here/results/$(date +%Y%m%d-%H%M%S)"
fi
# never mix two comparisons' files: the summary reads every SCENARIO.SERVER.ROUND it finds
if [ -e "$out/machine.txt" ] || compgen -G "$out/*.rc" >/dev/null; then
    echo "compare.sh: $out already holds results of a comparison; give a new or empty --out" >&2
    exit 2
fi
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
        # its own workspace and target/, whatever CARGO_TARGET_DIR says
        CARGO_TARGET_DIR="$here/tokio-tungstenite/target" \
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

# where `cargo build` above put them: CARGO_TARGET_DIR (relative to the root) or target/
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
wsgate_bin=${wsgate_bin:-$target_dir/release/wsgate}
loadtest_bin=${loadtest_bin:-$target_dir/release/loadtest}
for b in "$wsgate_bin" "$loadtest_bin"; do
    [ -x "$b" ] || { echo "compare.sh: $b is missing (drop --no-build)" >&2; exit 1; }
done

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
case " $servers " in *"-tls "*)
    # a CA and a server certificate for 127.0.0.1, for this run only
    mkdir -p "$out/tls"
    (
        cd "$out/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=compare.sh CA" -keyout ca.key -out ca.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout key.pem -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out cert.pem
    ) >"$out/tls/openssl.log" 2>&1 || { echo "compare.sh: openssl could not make a certificate" >&2; exit 1; }
    ;;
esac
case " $servers " in *" tokio-tungstenite"*)
    cp "$here/tokio-tungstenite/target/release/peer-tokio-tungstenite" "$out/bin/" 2>/dev/null ||
        log "the tokio-tungstenite peer is not built (drop --no-build): reported as not started" ;;
esac
uws_native_id=""
case " $servers " in *" uws-native "*)
    if [ -n "$uws_native" ]; then
        cp "$uws_native" "$out/bin/uws-native"
        uws_native_id="$uws_native (sha256 $(sha256sum "$uws_native" | cut -c1-16))"
    else
        log "uws-native is listed but no binary was given (--uws-native PATH or UWS_NATIVE_BIN):" \
            "it is skipped and reported as not started"
    fi ;;
esac

# server_cmd NAME SCENARIO: the command line of server NAME for SCENARIO
server_cmd() {
    local wsgate_extra="" uws_extra="" ws_extra=""
    case "$2" in
        # compression said explicitly either way, whatever wsgate's default
        fanout-deflate*)
            wsgate_extra=" --compression true${compression_level:+ --compression-level $compression_level}${compression_min_size:+ --compression-min-size $compression_min_size}"
            uws_extra=" --compression shared"
            ws_extra=" --compression no-context" ;;
        fanout-plain*) wsgate_extra=" --compression false" ;;
    esac
    # the scenario's own settings
    if [ "$2" = large ]; then
        # one message of up to 1 GiB, echoed whole: the message limit, and for uWS the
        # backpressure limit that holds the echo while it goes out
        wsgate_extra=" --max-message-size 1GiB"
        uws_extra=" --max-payload $((1 << 30)) --max-backpressure $((1 << 30))"
        ws_extra=" --max-payload $((1 << 30))"
    fi
    case "$1" in
        # the load generator publishes as a trusted backend would: no per-connection rate
        wsgate) echo "$out/bin/wsgate --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0$wsgate_extra" ;;
        wsgate-base) echo "$out/bin/wsgate-base --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0$wsgate_extra" ;;
        wsgate-tls) echo "$out/bin/wsgate --listen 127.0.0.1:0 --workers 1 --log warn --publish-rate 0 --tls-cert $out/tls/cert.pem --tls-key $out/tls/key.pem$wsgate_extra" ;;
        uws-tls) echo "node $here/uws.js --port 0 --tls-cert $out/tls/cert.pem --tls-key $out/tls/key.pem$uws_extra" ;;
        uws-native) echo "$out/bin/uws-native --port 0$uws_extra" ;;
        tcp-echo) echo "$out/bin/loadtest tcp-echo-server --listen 127.0.0.1:0" ;;
        tokio-tungstenite) echo "$out/bin/peer-tokio-tungstenite --port 0 --threads 1" ;;
        tokio-tungstenite-4k) echo "$out/bin/peer-tokio-tungstenite --port 0 --threads 1 --read-buffer-size 4096" ;;
        uws) echo "node $here/uws.js --port 0$uws_extra" ;;
        ws) echo "node $here/ws.js --port 0$ws_extra" ;;
    esac
}

# skip_reason SCENARIO SERVER: nothing when SERVER runs SCENARIO; "-" when it is left out
# silently (the raw TCP echo has no pub/sub and no WebSocket handshake); otherwise why not
skip_reason() {
    case "$2:$1" in
        tcp-echo:echo | tcp-echo:echo16 | tcp-echo:echo16k | tcp-echo:large) ;;
        tcp-echo:*) echo "-" ;;
        tokio-tungstenite*:large) echo "the peer takes messages of at most 64 MiB (tungstenite's default) and has no flag to raise it" ;;
        tokio-tungstenite*:fanout-deflate*) echo "tungstenite has no permessage-deflate" ;;
        uws-native:fanout-deflate*) echo "the native uWS peer runs without compression (no flag to turn it on)" ;;
    esac
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (all its threads)
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # the fields after the command name, which is in parentheses and may hold spaces
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $stat
    echo $((${12} + ${13}))
}
clk_tck=$(getconf CLK_TCK)

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

# start_server NAME SCENARIO LOG: sets pid and addr, or returns 1
start_server() {
    local name=$1 scenario=$2 slog=$3
    # shellcheck disable=SC2046 # the command is split into words on purpose
    taskset -c "$server_cpu" $(server_cmd "$name" "$scenario") >"$slog" 2>&1 &
    pid=$!
    addr=""
    for _ in $(seq 200); do
        addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$slog" | head -n 1)
        [ -n "$addr" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    stop_server
    return 1
}

# run_one SCENARIO SERVER ROUND: writes $out/SCENARIO.SERVER.ROUND.{json,log,rc,wall,cpu,server.log}
# (.rc: loadtest's exit status, `did-not-start`, or `skipped` and why)
run_one() {
    local scenario=$1 name=$2 round=$3
    local base="$out/$scenario.$name.$round" why
    why=$(skip_reason "$scenario" "$name")
    [ "$why" = "-" ] && return
    if [ -n "$why" ]; then
        printf 'skipped\n%s\n' "$why" >"$base.rc"
        return
    fi
    if [ "$name" = uws-native ] && [ -z "$uws_native" ]; then
        echo "no binary: give one with --uws-native PATH or UWS_NATIVE_BIN" >"$base.server.log"
        echo "did-not-start" >"$base.rc"
        return
    fi
    if ! start_server "$name" "$scenario" "$base.server.log"; then
        log "$scenario round $round: $name did not start (see $base.server.log)"
        echo "did-not-start" >"$base.rc"
        return
    fi
    local url="ws://$addr" limit=$((duration * 2 + 120)) raw=()
    [ "$name" = tcp-echo ] && raw=(--raw-tcp)
    local tls=()
    case "$name" in *-tls) url="wss://$addr" tls=(--ca "$out/tls/ca.pem") ;; esac
    local -a cmd
    case "$scenario" in
        echo) cmd=(echo --url "$url" --conns 100 --size 20 --window 1 --duration "${duration}s" "${raw[@]}") ;;
        echo16) cmd=(echo --url "$url" --conns 100 --size 20 --window 16 --duration "${duration}s" "${raw[@]}") ;;
        echo16k) cmd=(echo --url "$url" --conns 100 --size 16KiB --window 16 --duration "${duration}s" "${raw[@]}") ;;
        fanout1k) cmd=(fanout --url "$url" --subscribers 1000 --publishers 1 --size 64
            --window "$window" --duration "${duration}s") ;;
        fanout) cmd=(fanout --url "$url" --subscribers "$subscribers" --publishers 1 --size 64
            --window "$window" --duration "${duration}s") ;;
        fanout-rate) cmd=(fanout --url "$url" --subscribers "$subscribers" --publishers 1 --size 64
            --rate "$fanout_rate" --duration "${duration}s") ;;
        # the payload size after the topic; JSON-like, as compressible as real JSON
        fanout-plain1k | fanout-deflate1k | fanout-plain16k | fanout-deflate16k)
            local size=1KiB compress=()
            case "$scenario" in *16k) size=16KiB ;; esac
            case "$scenario" in fanout-deflate*) compress=(--compression) ;; esac
            cmd=(fanout --url "$url" --subscribers "$subscribers" --publishers 1 --size "$size"
                --payload json --window "$window" --duration "${duration}s" "${compress[@]}") ;;
        conns) cmd=(conns --url "$url" --count "$conns" --rate "$conn_rate" --duration 2s --server-pid "$pid") ;;
        # --duration is how long loadtest waits for the message to come back
        large) cmd=(large --url "$url" --size "$large_bytes" --duration 60s --server-pid "$pid" "${raw[@]}") ;;
    esac
    cmd+=("${tls[@]}")
    log "$scenario round $round/$rounds: $name"
    local rc=0 t0 t1 c0 c1
    c0=$(cpu_ticks "$pid") || c0=""
    t0=$(date +%s.%N)
    timeout "$limit" taskset -c "$load_cpu" "$loadtest" "${cmd[@]}" --json >"$base.json" 2>"$base.log" || rc=$?
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid") || c1=""
    echo "$rc" >"$base.rc"
    echo "$t0 $t1" >"$base.wall"
    # the server's CPU time over the run: ticks before, after, ticks per second
    [ -n "$c0" ] && [ -n "$c1" ] && echo "$c0 $c1 $clk_tck" >"$base.cpu"
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
        # with --no-build the binaries may be older than the tree
        [ "$build" = 1 ] || dirty="$dirty (--no-build: binaries from $target_dir/release, built earlier)"
        echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
    fi
    echo "base=${WSGATE_BASE_COMMIT:-${WSGATE_BASE_BIN:-}}"
    echo "duration=$duration"
    echo "rounds=$rounds"
    echo "subscribers=$subscribers"
    echo "window=$window"
    echo "fanout_rate=$fanout_rate"
    echo "conns=$conns"
    echo "conn_rate=$conn_rate"
    echo "large_size=$large_size"
    echo "compression_level=$compression_level"
    echo "compression_min_size=$compression_min_size"
    echo "reference=$reference"
    echo "uws_native=$uws_native_id"
    echo "servers=$servers"
    echo "scenarios=$scenarios"
    echo "server_cpu=$server_cpu"
    echo "load_cpu=$load_cpu"
} >"$out/machine.txt"

python3 "$here/summarize.py" "$out" | tee "$out/summary.md"
