#!/usr/bin/env python3
"""Turns the raw results of benches/peers/compare.sh into one Markdown table per scenario.

Usage: python3 benches/peers/summarize.py RESULTS_DIR

RESULTS_DIR holds machine.txt and, per run, SCENARIO.SERVER.ROUND.json (loadtest --json),
.rc (loadtest's exit status, `did-not-start`, or `skipped` and a line saying why; a second line
`server-exited` when the server died during the run), .cpu (the server's utime + stime in clock
ticks before and after the run, and the ticks per second) and .log. Every measure is the median
over the runs that passed; a run that lost, reordered or corrupted a message, had connection
errors, timed out or had its server die is counted as failed and shown as such, never folded
into the medians. Ratios are to wsgate, to the reference server (machine.txt `reference`) and,
in the echo scenarios and large, to the raw TCP echo (`tcp-echo`). Besides the Markdown on
stdout it writes RESULTS_DIR/summary.json: every run's measure and server CPU, and the medians.
Exits 1 when a wsgate run failed, 0 otherwise (a peer's failure is reported in its row).
"""

import json
import statistics
import sys
from pathlib import Path

NAMES = {
    "wsgate": "wsgate (`--workers 1`)",
    "wsgate-base": "wsgate, base (`WSGATE_BASE_BIN`)",
    "uws-native": "uWebSockets, native (C++)",
    "tcp-echo": "raw TCP echo (no WebSocket)",
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

    rc_lines = file("rc").read_text().splitlines() if file("rc").exists() else []
    if not rc_lines:
        return "not run", {}
    if rc_lines[0] == "skipped":
        return "skipped", {"why": rc_lines[1] if len(rc_lines) > 1 else ""}
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
    try:
        before, after, tck = (int(x) for x in file("cpu").read_text().split())
        data["_cpu"] = (after - before) / tck
    except (OSError, ValueError, ZeroDivisionError):
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


def fmt_gbps(x):
    return f"{x:.2f} GB/s"


def fmt_times(x):
    return f"{x:.2f}x"


def fmt_cpu(x):
    return f"{x:.2f} s"


def fmt_wire(b):
    return f"{b:,.0f} B"


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
    if all(s == "skipped" for s, _ in runs):
        return f"skipped: {runs[0][1]['why']}"
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


def lat(q):
    """The latency percentile q of a run (None when it measured none)."""
    return lambda d: (d.get("latency_us") or {}).get(q)


def large_gbps(d):
    secs = d.get("seconds")
    if not secs:
        return None
    return d["message_bytes"] * d["messages"] * d["receivers"] / secs / 1e9


ECHO_COLUMNS = [
    ("p50 round trip", lat("p50"), fmt_ms),
    ("p99 round trip", lat("p99"), fmt_ms),
]
FANOUT_COLUMNS = [
    ("publishes/s", lambda d: d["publishes_per_sec"], fmt_rate),
    ("p50 publish to receive", lat("p50"), fmt_ms),
    ("p99 publish to receive", lat("p99"), fmt_ms),
    ("loadtest wall time", lambda d: d.get("_wall"), fmt_secs),
]
# the bytes a delivery takes on the wire (frame headers included, over every data message
# loadtest received) and the message bytes over the wire bytes (loadtest --compression)
WIRE_COLUMNS = [
    ("wire bytes per delivery", lambda d: d.get("wire_bytes_per_delivery"), fmt_wire),
    ("compression ratio", lambda d: d.get("compression_ratio"), fmt_times),
]
ECHO_WORK = ("messages per server CPU-s", lambda d: d.get("received"), fmt_rate)
FANOUT_WORK = ("deliveries per server CPU-s", lambda d: d.get("received"), fmt_rate)

# Per scenario: the title; the main measure (label, value of a run, format); the other columns;
# the work done, divided by the server's CPU seconds (label, amount of a run, format); and
# whether the raw TCP echo runs it.
SCENARIOS = {
    "echo": {
        "title": "echo: 100 connections, 20-byte binary messages, 1 in flight each",
        "main": ("messages/s", lambda d: d["messages_per_sec"], fmt_rate),
        "columns": ECHO_COLUMNS,
        "work": ECHO_WORK,
        "raw": True,
    },
    "echo16": {
        "title": "echo16: 100 connections, 20-byte binary messages, 16 in flight each",
        "main": ("messages/s", lambda d: d["messages_per_sec"], fmt_rate),
        "columns": ECHO_COLUMNS,
        "work": ECHO_WORK,
        "raw": True,
    },
    "echo16k": {
        "title": "echo16k: 100 connections, 16 KiB binary messages, 16 in flight each",
        "main": ("messages/s", lambda d: d["messages_per_sec"], fmt_rate),
        "columns": ECHO_COLUMNS,
        "work": ECHO_WORK,
        "raw": True,
    },
    "fanout1k": {
        "title": "fanout1k: 1 publisher, 1,000 subscribers of one topic, 64-byte payloads, "
        "{window} publishes in flight",
        "main": ("deliveries/s", lambda d: d["deliveries_per_sec"], fmt_rate),
        "columns": FANOUT_COLUMNS,
        "work": FANOUT_WORK,
    },
    "fanout": {
        "title": "fanout: 1 publisher, {subscribers} subscribers of one topic, 64-byte payloads, "
        "{window} publishes in flight",
        "main": ("deliveries/s", lambda d: d["deliveries_per_sec"], fmt_rate),
        "columns": FANOUT_COLUMNS,
        "work": FANOUT_WORK,
    },
    "fanout-rate": {
        "title": "fanout-rate: 1 publisher at {fanout_rate} publishes/s, {subscribers} subscribers "
        "of one topic, 64-byte payloads: publish-to-receive latency (lower is better)",
        "main": ("p99 publish to receive", lat("p99"), fmt_ms),
        "columns": [
            ("p50 publish to receive", lat("p50"), fmt_ms),
            ("deliveries/s", lambda d: d["deliveries_per_sec"], fmt_rate),
            ("loadtest wall time", lambda d: d.get("_wall"), fmt_secs),
        ],
        "work": FANOUT_WORK,
    },
    "conns": {
        "title": "conns: {conns} idle connections on /ws ({conn_rate}), server memory "
        "(lower is better)",
        "main": ("RSS per idle connection", lambda d: d["server_rss_per_conn_bytes"], fmt_bytes),
        "columns": [
            ("server RSS with all open", lambda d: d["server_rss_after_bytes"], fmt_bytes),
            ("connections/s", lambda d: d.get("connects_per_sec"), fmt_rate),
            ("handshake p50", lat("p50"), fmt_ms),
            ("handshake p99", lat("p99"), fmt_ms),
        ],
        "work": ("connections per server CPU-s", lambda d: d.get("opened"), fmt_rate),
    },
    "large": {
        "title": "large: one {large_size} binary message echoed through /echo (raw TCP: the same "
        "bytes, no framing)",
        "main": ("GB/s", large_gbps, fmt_gbps),
        "columns": [
            (
                "server peak RSS over message",
                lambda d: d.get("server_peak_over_message"),
                fmt_times,
            ),
            ("server peak RSS", lambda d: d.get("server_peak_rss_bytes"), fmt_bytes),
            ("seconds", lambda d: d.get("seconds"), fmt_secs),
        ],
        "work": (
            "GB per server CPU-s",
            lambda d: d["message_bytes"] * d["messages"] * d["receivers"] / 1e9
            if d.get("received")
            else None,
            lambda x: f"{x:.2f}",
        ),
        "raw": True,
    },
}


def json_fanout(name, size, deflate):
    """A fanout of a JSON-like payload, with permessage-deflate or without."""
    how = (
        "with permessage-deflate (`loadtest --compression`)"
        if deflate
        else "without compression"
    )
    return {
        "title": f"{name}: 1 publisher, {{subscribers}} subscribers of one topic, {size} "
        f"JSON-like payloads, {{window}} publishes in flight, {how}",
        "main": ("deliveries/s", lambda d: d["deliveries_per_sec"], fmt_rate),
        "columns": WIRE_COLUMNS + FANOUT_COLUMNS,
        "work": FANOUT_WORK,
    }


for _size, _label in (("1k", "1 KiB"), ("16k", "16 KiB")):
    SCENARIOS[f"fanout-plain{_size}"] = json_fanout(f"fanout-plain{_size}", _label, False)
    SCENARIOS[f"fanout-deflate{_size}"] = json_fanout(f"fanout-deflate{_size}", _label, True)


def value(f, d):
    """f(d), or None when the run lacks what f reads."""
    try:
        return f(d)
    except (KeyError, TypeError):
        return None


def per_cpu(work, d):
    """The work of run d per second of the server's CPU (None without both)."""
    w = value(work, d)
    cpu = d.get("_cpu")
    if w is None or not cpu:
        return None
    return w / cpu


def main():
    d = Path(sys.argv[1])
    m = load_machine(d)
    rounds = int(m["rounds"])
    servers = m["servers"].split()
    reference = m.get("reference") or "wsgate"
    print(
        f"{m['model']}, {m['cpus']} cores; each server pinned to core {m['server_cpu']}, "
        f"`loadtest` to core {m['load_cpu']}; {m['duration']} s per run, {rounds} round(s), "
        f"servers in alternation; medians over the runs that passed. "
        f"wsgate {m['commit']}, {m['rustc']}, Node {m['node']}."
        + (f" Base: {m['base']}." if m.get("base") else "")
        + (f" Native uWebSockets: {m['uws_native']}." if m.get("uws_native") else "")
        + (
            f" wsgate --compression-level {m['compression_level']}."
            if m.get("compression_level")
            else ""
        )
        + (
            f" wsgate --compression-min-size {m['compression_min_size']}."
            if m.get("compression_min_size")
            else ""
        )
        + f" Reference server: {reference}."
    )
    wsgate_failed = False
    report = {"machine": m, "reference": reference, "scenarios": {}}
    for scenario in m["scenarios"].split():
        spec = SCENARIOS[scenario]
        label, getter, fmt = spec["main"]
        work_label, work, work_fmt = spec["work"]
        rows = {}
        for server in servers:
            runs = [run_result(d, scenario, server, r) for r in range(1, rounds + 1)]
            if all(s == "not run" for s, _ in runs):
                continue  # not a server of this scenario (the raw TCP echo outside echo, large)
            good = [data for s, data in runs if s == "ok"]
            if server == "wsgate" and len(good) < len(runs):
                wsgate_failed = True
            mains = [x for x in (value(getter, g) for g in good) if x is not None]
            rows[server] = {
                "runs": runs,
                "main": median(mains),
                "spread": f"{fmt(min(mains))} to {fmt(max(mains))}" if len(mains) > 1 else "",
                "cpu": median([g["_cpu"] for g in good if g.get("_cpu") is not None]),
                "wall": median([g["_wall"] for g in good if g.get("_wall") is not None]),
                "per_cpu": median([x for x in (per_cpu(work, g) for g in good) if x is not None]),
                "cols": [
                    median([x for x in (value(f, g) for g in good) if x is not None])
                    for _, f, _ in spec["columns"]
                ],
            }
        # the ratio columns: to wsgate, to the reference, to the raw TCP echo (each once)
        bases = []
        for b in ["wsgate", reference] + (["tcp-echo"] if spec.get("raw") else []):
            if b in rows and b not in bases:
                bases.append(b)
        print()
        title = spec["title"].format(
            subscribers=f"{int(m['subscribers']):,}",
            conns=f"{int(m['conns']):,}",
            window=m.get("window", "16"),
            fanout_rate=m.get("fanout_rate", "5"),
            large_size=m.get("large_size", "256MiB"),
            conn_rate=(
                f"opened at {int(m.get('conn_rate', '5000')):,}/s"
                if m.get("conn_rate", "5000") != "0"
                else "opened as fast as the server takes them"
            ),
        )
        print("### " + title)
        print()
        ratio_head = ["× raw TCP" if b == "tcp-echo" else f"× {b}" for b in bases]
        head = [
            "server",
            label,
            *ratio_head,
            "range over runs",
            "server CPU",
            work_label,
            f"× {reference} per CPU",
            *[c for c, _, _ in spec["columns"]],
            "correctness",
        ]
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + " |")
        ref_per_cpu = rows.get(reference, {}).get("per_cpu")
        out = {}
        for server, r in rows.items():
            main, cpu = r["main"], r["cpu"]
            cpu_cell = "—"
            if cpu is not None:
                cpu_cell = fmt_cpu(cpu)
                if r["wall"]:
                    cpu_cell += f" ({cpu / r['wall']:.0%})"
            ratios = {b: (main / rows[b]["main"] if main is not None and rows[b]["main"] else None)
                      for b in bases}
            cells = [
                NAMES.get(server, server),
                fmt(main) if main is not None else "—",
                *[fmt_ratio(main, rows[b]["main"]) for b in bases],
                r["spread"],
                cpu_cell,
                work_fmt(r["per_cpu"]) if r["per_cpu"] is not None else "—",
                fmt_ratio(r["per_cpu"], ref_per_cpu),
                *[
                    spec["columns"][i][2](c) if c is not None else "—"
                    for i, c in enumerate(r["cols"])
                ],
                correctness(r["runs"]),
            ]
            print("| " + " | ".join(cells) + " |")
            out[server] = {
                "name": NAMES.get(server, server),
                label: main,
                "ratios": ratios,
                "server_cpu_secs": cpu,
                work_label: r["per_cpu"],
                f"{reference} per CPU ratio": (
                    r["per_cpu"] / ref_per_cpu if r["per_cpu"] and ref_per_cpu else None
                ),
                **{c: x for (c, _, _), x in zip(spec["columns"], r["cols"])},
                "correctness": correctness(r["runs"]),
                "runs": [
                    {
                        "round": k + 1,
                        "status": st,
                        label: value(getter, data) if st in ("ok", "failed") else None,
                        "server_cpu_secs": data.get("_cpu"),
                        "loadtest_wall_secs": data.get("_wall"),
                        work_label: per_cpu(work, data) if st in ("ok", "failed") else None,
                        "why": data.get("why"),
                    }
                    for k, (st, data) in enumerate(r["runs"])
                ],
            }
        report["scenarios"][scenario] = {"title": title, "servers": out}
    (d / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    return 1 if wsgate_failed else 0


if __name__ == "__main__":
    sys.exit(main())
