#!/usr/bin/env python3
"""Turns the raw results of benches/peers/compare.sh into one Markdown table per scenario.

Usage: python3 benches/peers/summarize.py RESULTS_DIR

RESULTS_DIR holds machine.txt and, per run, SCENARIO.SERVER.ROUND.json (loadtest --json),
.rc (loadtest's exit status, or `did-not-start`; a second line `server-exited` when the server
died during the run) and .log. Every measure is the median over the runs that passed; a run
that lost, reordered or corrupted a message, had connection errors, timed out or had its server
die is counted as failed and shown as such, never folded into the medians. Exits 1 when a
wsgate run failed, 0 otherwise (a peer's failure is reported in its row).
"""

import json
import statistics
import sys
from pathlib import Path

NAMES = {
    "wsgate": "wsgate (`--workers 1`)",
    "wsgate-base": "wsgate, base (`WSGATE_BASE_BIN`)",
    "tokio-tungstenite": "tokio-tungstenite, defaults",
    "tokio-tungstenite-4k": "tokio-tungstenite, 4 KiB read buffer",
    "uws": "uWebSockets.js",
    "ws": "Node ws",
}


def load_machine(d):
    m = {}
    for line in (d / "machine.txt").read_text().splitlines():
        k, _, v = line.partition("=")
        m[k] = v
    return m


def run_result(d, scenario, server, r):
    """(status, data): status is 'ok', 'failed', 'did not start' or 'no result'."""
    def file(ext):
        return d / f"{scenario}.{server}.{r}.{ext}"

    rc_lines = file("rc").read_text().split() if file("rc").exists() else []
    if not rc_lines:
        return "no result", {"why": "not run"}
    if rc_lines[0] == "did-not-start":
        return "did not start", {}
    rc = int(rc_lines[0])
    server_exited = "server-exited" in rc_lines
    try:
        data = json.loads(file("json").read_text())
    except (OSError, ValueError):
        log = file("log")
        last = ""
        if log.exists():
            lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
            last = lines[-1][:200] if lines else ""
        why = "timed out" if rc == 124 else f"exit status {rc}"
        if server_exited:
            why += ", server exited"
        return "no result", {"why": f"{why}: {last}" if last else why}
    data["_rc"] = rc
    data["_server_exited"] = server_exited
    try:
        t0, t1 = (float(x) for x in file("wall").read_text().split())
        data["_wall"] = t1 - t0
    except (OSError, ValueError):
        pass
    if rc == 0 and data.get("ok") is True and not server_exited:
        return "ok", data
    return "failed", data


def fmt_rate(x):
    return f"{x:,.0f}"


def fmt_ms(us):
    ms = us / 1000
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    return f"{ms:,.0f} ms"


def fmt_secs(s):
    return f"{s:.1f} s"


def fmt_bytes(b):
    if b < 10 * 1024:
        return f"{b / 1024:.2f} KiB"
    if b < 1024 * 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b / 1024 / 1024:.1f} MiB"


def fmt_ratio(x, base):
    if x is None or not base:
        return "—"
    return f"{x / base:.2f}x"


def median(xs):
    return statistics.median(xs) if xs else None


def correctness(runs):
    """The correctness cell: 'ok (3/3)' or what went wrong, summed over the failed runs."""
    n = len(runs)
    passed = sum(1 for s, _ in runs if s == "ok")
    if passed == n:
        return f"ok ({n}/{n})"
    if all(s == "did not start" for s, _ in runs):
        return "**did not start**"
    counts = {}
    notes = []
    for status, data in runs:
        if status == "did not start":
            notes.append("did not start")
        elif status == "no result":
            notes.append(data["why"])
        elif status == "failed":
            for k in ("lost", "reordered", "mismatched", "unexpected", "connection_errors"):
                if data.get(k):
                    counts[k] = counts.get(k, 0) + int(data[k])
            if data.get("slow_consumer_closes"):
                counts["slow_consumer_closes"] = counts.get("slow_consumer_closes", 0) + int(
                    data["slow_consumer_closes"]
                )
            if data.get("_server_exited"):
                notes.append("server exited")
            if data.get("_rc") == 124:
                notes.append("timed out")
    what = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items())
    parts = [p for p in [what] + sorted(set(notes)) if p]
    return f"**FAILED {n - passed}/{n}**: " + ("; ".join(parts) if parts else "see the logs")


SCENARIOS = {
    "echo": {
        "title": "echo: 100 connections, 20-byte binary messages, 1 in flight each",
        "main": ("messages_per_sec", "messages/s", fmt_rate),
        "columns": [
            ("p50 round trip", lambda d: d["latency_us"]["p50"], fmt_ms),
            ("p99 round trip", lambda d: d["latency_us"]["p99"], fmt_ms),
        ],
    },
    "fanout": {
        "title": "fanout: 1 publisher, {subscribers} subscribers of one topic, 64-byte payloads, "
        "{window} publishes in flight",
        "main": ("deliveries_per_sec", "deliveries/s", fmt_rate),
        "columns": [
            ("publishes/s", lambda d: d["publishes_per_sec"], fmt_rate),
            ("p50 publish to receive", lambda d: d["latency_us"]["p50"], fmt_ms),
            ("p99 publish to receive", lambda d: d["latency_us"]["p99"], fmt_ms),
            ("loadtest wall time", lambda d: d.get("_wall"), fmt_secs),
        ],
    },
    "conns": {
        "title": "conns: {conns} idle connections on /ws (opened at 5,000/s), server memory",
        "main": ("server_rss_per_conn_bytes", "RSS per idle connection", fmt_bytes),
        "columns": [
            ("server RSS with all open", lambda d: d["server_rss_after_bytes"], fmt_bytes),
            ("handshake p50", lambda d: d["latency_us"]["p50"], fmt_ms),
            ("handshake p99", lambda d: d["latency_us"]["p99"], fmt_ms),
        ],
    },
}


def main():
    d = Path(sys.argv[1])
    m = load_machine(d)
    rounds = int(m["rounds"])
    servers = m["servers"].split()
    print(
        f"{m['model']}, {m['cpus']} cores; each server pinned to core {m['server_cpu']}, "
        f"`loadtest` to core {m['load_cpu']}; {m['duration']} s per run, {rounds} round(s), "
        f"servers in alternation; medians over the runs that passed. "
        f"wsgate {m['commit']}, {m['rustc']}, Node {m['node']}."
        + (f" Base: {m['base']}." if m.get("base") else "")
    )
    wsgate_failed = False
    for scenario in m["scenarios"].split():
        spec = SCENARIOS[scenario]
        key, label, fmt = spec["main"]
        table = []
        base = None
        for server in servers:
            runs = [run_result(d, scenario, server, r) for r in range(1, rounds + 1)]
            good = [data for s, data in runs if s == "ok"]
            if server == "wsgate" and len(good) < len(runs):
                wsgate_failed = True
            main = median([data[key] for data in good if key in data])
            cols = [
                median([x for x in (f(data) for data in good) if x is not None])
                for _, f, _ in spec["columns"]
            ]
            spread = (
                f"{fmt(min(x[key] for x in good))} to {fmt(max(x[key] for x in good))}"
                if len(good) > 1
                else ""
            )
            if server == "wsgate":
                base = main
            table.append((server, main, spread, cols, correctness(runs)))
        print()
        title = spec["title"].format(
            subscribers=f"{int(m['subscribers']):,}",
            conns=f"{int(m['conns']):,}",
            window=m.get("window", "16"),
        )
        print("### " + title)
        print()
        head = [
            "server",
            label,
            "× wsgate",
            "range over runs",
            *[c for c, _, _ in spec["columns"]],
            "correctness",
        ]
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + " |")
        for server, main, spread, cols, corr in table:
            cells = [
                NAMES.get(server, server),
                fmt(main) if main is not None else "—",
                fmt_ratio(main, base) if main is not None else "—",
                spread,
                *[
                    spec["columns"][i][2](c) if c is not None else "—"
                    for i, c in enumerate(cols)
                ],
                corr,
            ]
            print("| " + " | ".join(cells) + " |")
    return 1 if wsgate_failed else 0


if __name__ == "__main__":
    sys.exit(main())
