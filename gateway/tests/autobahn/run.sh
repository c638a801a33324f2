#!/usr/bin/env bash
# Runs the real Autobahn TestSuite (wstest fuzzingclient, server cases 1.* to 10.*, and a quick
# subset of the permessage-deflate groups 12.* and 13.*) against the /echo endpoint of a wsgate
# binary.
#
#   gateway/tests/autobahn/run.sh PATH_TO_WSGATE [extra wsgate flags...]
#   gateway/tests/autobahn/run.sh --setup-only      # only build/check the cached venv
#
# Sets up (once, then reuses) a Python 2.7 virtualenv with a pinned Autobahn TestSuite, starts
# `wsgate --listen 127.0.0.1:0 [flags]`, waits for its `listening on ADDR` line, runs the
# fuzzingclient against ws://ADDR/echo, writes the HTML report to target/autobahn/ (open
# target/autobahn/index.html) and exits non-zero when any case is neither OK, NON-STRICT nor
# INFORMATIONAL, or when suspiciously few cases ran.
#
# Environment:
#   AUTOBAHN_VENV           the Python 2.7 venv (default $HOME/.cache/wsgate/autobahn-venv)
#   AUTOBAHN_PYTHON2        a Python 2.7 interpreter to use instead of searching for one
#   AUTOBAHN_START_TIMEOUT  seconds to wait for the `listening on` line (default 15)
#   AUTOBAHN_TIMEOUT        seconds the whole wstest run may take (default 1200)
#   AUTOBAHN_MIN_CASES      fewer cases than this in the report means the run broke (default 200)
#   AUTOBAHN_CASES          the cases, comma separated wstest patterns (default: below)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/../../.." && pwd)"
report_dir="$repo_root/target/autobahn"

venv="${AUTOBAHN_VENV:-$HOME/.cache/wsgate/autobahn-venv}"
venv="${venv%/}"
# The python3 venv that holds `virtualenv` (only used to create the 2.7 venv).
tool_venv="$venv.virtualenv-py3"
start_timeout="${AUTOBAHN_START_TIMEOUT:-15}"
wstest_timeout="${AUTOBAHN_TIMEOUT:-1200}"
min_cases="${AUTOBAHN_MIN_CASES:-200}"
# Cases 1-7, 9 and 10 (301), and a quick subset of the permessage-deflate groups (12.*: each data
# set at 16 B and at 8 KiB fragmented; 13.*: each of the seven offers at 16 B and at 8 KiB
# fragmented). All 216 cases of 12 and 13 take about half an hour, the Python client being the
# bottleneck: AUTOBAHN_CASES='12.*,13.*' AUTOBAHN_MIN_CASES=216 AUTOBAHN_TIMEOUT=3600.
deflate_subset="12.1.1,12.1.11,12.2.1,12.2.11,12.3.1,12.3.11,12.4.1,12.4.11,12.5.1,12.5.11"
deflate_subset+=",13.1.1,13.1.11,13.2.1,13.2.11,13.3.1,13.3.11,13.4.1,13.4.11,13.5.1,13.5.11"
deflate_subset+=",13.6.1,13.6.11,13.7.1,13.7.11"
cases="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,$deflate_subset}"

log() { echo "autobahn: $*"; }
die() { echo "autobahn: $*" >&2; exit 1; }

# The pinned set. autobahntestsuite 25.10.1 declares no dependencies, so every one is listed
# here and installed with --no-deps: these are the last releases that still run on Python 2.7
# together (see README.md). Changing this list rebuilds the cached venv.
pins="autobahntestsuite==25.10.1
autobahn==0.10.9
txaio==2.1.0
Twisted==19.10.0
zope.interface==4.6.0
incremental==16.10.1
pyOpenSSL==19.1.0
cryptography==3.3.2
service-identity==18.1.0
Jinja2==2.11.3
MarkupSafe==1.1.1
Werkzeug==1.0.1
klein==17.10.0
unittest2==1.1.0
six==1.16.0
attrs==21.4.0
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
ipaddress==1.0.23
linecache2==1.0.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
traceback2==1.4.0
typing==3.10.0.0"

# ---------------------------------------------------------------------------------------------
# Arguments

setup_only=0
if [[ $# -ge 1 && "$1" == "--setup-only" ]]; then
  setup_only=1
  shift
elif [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH_TO_WSGATE [extra wsgate flags...] | --setup-only" >&2
  exit 2
else
  wsgate="$1"
  shift
  [[ -x "$wsgate" && ! -d "$wsgate" ]] || die "not an executable file: $wsgate"
  # Absolute, since the run changes directory.
  wsgate="$(cd "$(dirname "$wsgate")" && pwd)/$(basename "$wsgate")"
fi

command -v python3 >/dev/null 2>&1 || die "python3 is needed (venv setup and report parsing) and was not found"

# ---------------------------------------------------------------------------------------------
# 1. The Python 2.7 venv with the Autobahn TestSuite

is_py27() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; }

find_python2() {
  local c roots=() r
  if [[ -n "${AUTOBAHN_PYTHON2:-}" ]]; then
    is_py27 "$AUTOBAHN_PYTHON2" && { echo "$AUTOBAHN_PYTHON2"; return 0; }
    return 1
  fi
  if command -v pyenv >/dev/null 2>&1; then
    r="$(pyenv root 2>/dev/null || true)"
    [[ -n "$r" ]] && roots+=("$r")
  fi
  roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" "/root/.pyenv")
  for r in "${roots[@]}"; do
    [[ -n "$r" && -d "$r/versions" ]] || continue
    # Newest 2.7.x first.
    while IFS= read -r c; do
      is_py27 "$c" && { echo "$c"; return 0; }
    done < <(printf '%s\n' "$r"/versions/2.7*/bin/python2.7 | sort -rV)
  done
  for c in python2.7 python2 /usr/bin/python2.7 /usr/local/bin/python2.7; do
    c="$(command -v "$c" 2>/dev/null || true)"
    [[ -n "$c" ]] && is_py27 "$c" && { echo "$c"; return 0; }
  done
  return 1
}

venv_works() {
  [[ -x "$venv/bin/wstest" && -f "$venv/.wsgate-pins" ]] &&
    [[ "$(cat "$venv/.wsgate-pins")" == "$pins" ]] &&
    "$venv/bin/python" -c 'import autobahntestsuite, autobahn, twisted' >/dev/null 2>&1 &&
    "$venv/bin/wstest" --help >/dev/null 2>&1
}

build_venv() {
  local py2 t0
  t0=$SECONDS
  py2="$(find_python2)" || {
    echo "autobahn: no Python 2.7 interpreter found (tried \$AUTOBAHN_PYTHON2, pyenv versions 2.7.*, python2.7, python2); the Autobahn TestSuite needs one" >&2
    exit 3
  }
  log "setting up $venv with $py2"

  # virtualenv < 20.22 is the last line that creates Python 2.7 environments; it lives in a
  # python3 venv of its own next to the 2.7 one.
  if ! "$tool_venv/bin/virtualenv" --version >/dev/null 2>&1; then
    rm -rf "$tool_venv"
    python3 -m venv "$tool_venv" ||
      die "python3 -m venv failed (on Debian's own python3: apt-get install python3-venv)"
    "$tool_venv/bin/python" -m pip install -q --disable-pip-version-check 'virtualenv<20.22'
  fi

  rm -rf "$venv"
  # Keep virtualenv's seed-wheel cache inside the cache dir, not in ~/.local/share.
  VIRTUALENV_OVERRIDE_APP_DATA="$tool_venv/app-data" \
    "$tool_venv/bin/virtualenv" -q -p "$py2" "$venv"

  local req="$venv/wsgate-requirements.txt"
  printf '%s\n' "$pins" >"$req"
  # All of these come as py2.7 wheels (manylinux for the compiled ones: cffi, cryptography,
  # MarkupSafe, Twisted, zope.interface) or pure-Python sdists; the variable only matters
  # where pip falls back to building cryptography from source.
  CRYPTOGRAPHY_DONT_BUILD_RUST=1 PYTHONWARNINGS=ignore \
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps -r "$req"

  printf '%s' "$pins" >"$venv/.wsgate-pins"
  venv_works || die "the venv at $venv was built but wstest does not start; delete it and retry"
  log "venv ready in $((SECONDS - t0)) s"
}

mkdir -p "$(dirname "$venv")"
# Two runs at once must not build the same venv together.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
fi
if venv_works; then
  log "reusing $venv"
else
  build_venv
fi
if command -v flock >/dev/null 2>&1; then
  flock -u 9
  exec 9>&-
fi

if [[ $setup_only -eq 1 ]]; then
  "$venv/bin/wstest" -a 2>/dev/null | sed 's/^/autobahn: /'
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 2. The gateway under test, stopped on every exit path

rm -rf "$report_dir"
mkdir -p "$report_dir"
server_out="$report_dir/wsgate.stdout.log"
server_err="$report_dir/wsgate.stderr.log"
wstest_log="$report_dir/wstest.log"

server_pid=""
wstest_pid=""

# shellcheck disable=SC2317  # stop_pid and cleanup run from the trap
stop_pid() { # pid, grace seconds
  local pid="$1" grace="$2" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [[ -n "$wstest_pid" ]]; then
    stop_pid "$wstest_pid" 5
    wait "$wstest_pid" 2>/dev/null
  fi
  if [[ -n "$server_pid" ]]; then
    if kill -0 "$server_pid" 2>/dev/null; then
      stop_pid "$server_pid" 5
      wait "$server_pid" 2>/dev/null
      local src=$?
      if [[ $src -ne 0 ]]; then
        log "note: wsgate exited with status $src after SIGTERM (expected 0; 137 means it needed SIGKILL)"
      fi
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log "starting $wsgate --listen 127.0.0.1:0 $*"
"$wsgate" --listen 127.0.0.1:0 "$@" >"$server_out" 2>"$server_err" </dev/null &
server_pid=$!

addr=""
deadline=$((SECONDS + start_timeout))
while [[ -z "$addr" ]]; do
  addr="$(grep -m1 -oE 'listening on [^[:space:]]+' "$server_out" 2>/dev/null | sed 's/^listening on //' || true)"
  [[ -n "$addr" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" 2>/dev/null && st=0 || st=$?
    server_pid=""
    echo "autobahn: wsgate exited (status $st) before printing 'listening on ADDR'; its output:" >&2
    tail -n 30 "$server_out" "$server_err" >&2 || true
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "autobahn: wsgate printed no 'listening on ADDR' line on stdout within ${start_timeout}s; its output:" >&2
    tail -n 30 "$server_out" "$server_err" >&2 || true
    exit 1
  fi
  sleep 0.1
done
url="ws://$addr/echo"
log "wsgate listening on $addr (pid $server_pid)"

# ---------------------------------------------------------------------------------------------
# 3. The fuzzing client

spec="$report_dir/fuzzingclient.json"
python3 - "$spec" "$url" "$report_dir" "$cases" <<'EOF'
import json, sys
spec, url, outdir, cases = sys.argv[1:5]
with open(spec, "w") as f:
    json.dump({
        "outdir": outdir,
        "servers": [{"agent": "wsgate", "url": url}],
        "cases": [c.strip() for c in cases.split(",") if c.strip()],
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }, f, indent=2)
EOF

log "running wstest -m fuzzingclient against $url (log: $wstest_log, limit ${wstest_timeout}s)"
t0=$SECONDS
(cd "$report_dir" && exec timeout --kill-after=10 "$wstest_timeout" \
  "$venv/bin/wstest" -m fuzzingclient -s "$spec") >"$wstest_log" 2>&1 </dev/null &
wstest_pid=$!
wait "$wstest_pid" && wstest_rc=0 || wstest_rc=$?
wstest_pid=""
log "wstest finished in $((SECONDS - t0)) s (status $wstest_rc)"
show_wstest_tail() {
  echo "autobahn: last lines of $wstest_log:"
  tail -n 20 "$wstest_log" | cut -c1-300 | sed 's/^/  /'
}
if [[ $wstest_rc -ne 0 ]]; then
  if [[ $wstest_rc -eq 124 || $wstest_rc -eq 137 ]]; then
    log "wstest ran past its ${wstest_timeout}s limit"
  fi
  show_wstest_tail
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
  log "wsgate is no longer running (it died during the run); last lines of its stderr:"
  tail -n 20 "$server_err" | sed 's/^/  /'
fi

# ---------------------------------------------------------------------------------------------
# 4. The verdict

set +e
python3 - "$report_dir/index.json" "$min_cases" "$wstest_rc" <<'EOF'
import json, os, sys
from collections import Counter

path, min_cases, wstest_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}

def key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))

if not os.path.exists(path):
    print("autobahn: no report at %s (wstest status %d): the run broke" % (path, wstest_rc))
    print("autobahn: 0 passed, 1 failed")
    sys.exit(2)
with open(path) as f:
    index = json.load(f)
cases = index.get("wsgate", {})

behaviours = Counter(r.get("behavior", "?") for r in cases.values())
closes = Counter(r.get("behaviorClose", "?") for r in cases.values())
bad = [(c, r) for c, r in cases.items()
       if r.get("behavior") not in GOOD or r.get("behaviorClose") not in GOOD]
bad.sort(key=lambda cr: key(cr[0]))

print("autobahn: %d cases run" % len(cases))
print("autobahn: behavior:      " + ", ".join("%s %d" % kv for kv in sorted(behaviours.items())))
print("autobahn: behaviorClose: " + ", ".join("%s %d" % kv for kv in sorted(closes.items())))
non_strict = sorted((c for c, r in cases.items() if r.get("behavior") == "NON-STRICT"), key=key)
if non_strict:
    print("autobahn: NON-STRICT (accepted): " + " ".join(non_strict))
for c, r in bad:
    print("autobahn: FAILED %-8s behavior=%s behaviorClose=%s remoteCloseCode=%s  (%s)" % (
        c, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"),
        os.path.join(os.path.dirname(path), r.get("reportfile", "").replace(".json", ".html"))))

failed = len(bad)
rc = 0
if failed:
    rc = 1
if len(cases) < min_cases:
    print("autobahn: only %d cases in the report (expected at least %d): the run broke"
          % (len(cases), min_cases))
    rc = 2
    failed = max(failed, 1)
print("autobahn: report: %s" % os.path.join(os.path.dirname(path), "index.html"))
print("autobahn: %d passed, %d failed" % (len(cases) - len(bad), failed))
sys.exit(rc)
EOF
verdict=$?
set -e
# 2: the run broke (no report, or too few cases); say why if wstest did not already.
if [[ $verdict -eq 2 && $wstest_rc -eq 0 ]]; then
  show_wstest_tail
fi
[[ $verdict -eq 0 ]] || exit 1
exit 0
