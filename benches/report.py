#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench -p wsgate-benches` run as Markdown tables, with
the ratio of each entry to wsgate's (time of the entry / time of wsgate: above 1 means wsgate
is faster). Reads criterion's saved estimates under target/criterion.

Usage: python3 benches/report.py [target/criterion]
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target", "criterion")
groups = {}
for dirpath, _, files in os.walk(root):
    if "estimates.json" not in files or os.path.basename(dirpath) != "new":
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    median = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]["point_estimate"]
    name = bench["function_id"] + ("/" + bench["value_str"] if bench.get("value_str") else "")
    groups.setdefault(bench["group_id"], {})[name] = (median, bench.get("throughput"))


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_rate(ns, tp):
    if not tp or "Bytes" not in tp:
        return ""
    gib = tp["Bytes"] / ns * 1e9 / 2**30
    return f"{gib:.1f} GiB/s"


def order(name):
    return (0 if name.startswith("wsgate") else 1, name)


for group in sorted(groups):
    entries = groups[group]
    print(f"\n{group}\n")
    print("| entry | median | throughput | time / wsgate's |")
    print("| --- | --- | --- | --- |")
    for name in sorted(entries, key=order):
        ns, tp = entries[name]
        kind = name.split("/", 1)[1] if "/" in name else None
        ours = entries.get("wsgate" + ("/" + kind if kind else ""))
        ratio = f"{ns / ours[0]:.2f}x" if ours else ""
        print(f"| {name} | {fmt_time(ns)} | {fmt_rate(ns, tp)} | {ratio} |")
