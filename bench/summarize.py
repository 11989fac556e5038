"""Summarises bench/compare.sh results as markdown: medians per cell and peer, and
sockit/tokio ratios. usage: summarize.py results.jsonl [hold.jsonl]"""
import json
import statistics
import sys
from collections import defaultdict


def rps(report):
    if "requests_per_sec" in report:
        return report["requests_per_sec"]
    elapsed = report.get("elapsed_secs")
    if elapsed is None and isinstance(report.get("elapsed"), dict):
        elapsed = report["elapsed"]["secs"] + report["elapsed"]["nanos"] / 1e9
    return report.get("requests", 0) / elapsed if elapsed else 0.0


def fmt(x):
    return f"{x:,.0f}"


def echo_table(path):
    cells = defaultdict(lambda: defaultdict(list))
    order = []
    for line in open(path):
        row = json.loads(line)
        rep = row["report"]
        if row["cell"] not in order:
            order.append(row["cell"])
        if not rep:
            continue
        cells[row["cell"]][row["peer"]].append(
            (rps(rep), rep.get("p99_us", 0), rep.get("errors", 0) + rep.get("lost", 0))
        )
    print("| cell | sockit req/s | tokio req/s | python req/s | sockit/tokio | "
          "sockit p99 µs | tokio p99 µs | p99 ratio | errors s/t/p |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for cell in order:
        med = {}
        for peer in ("sockit", "tokio", "python"):
            runs = cells[cell].get(peer, [])
            if runs:
                med[peer] = (
                    statistics.median(r[0] for r in runs),
                    statistics.median(r[1] for r in runs),
                    sum(r[2] for r in runs),
                )
            else:
                med[peer] = (0.0, 0, 0)
        s, t, p = med["sockit"], med["tokio"], med["python"]
        ratio = s[0] / t[0] if t[0] else float("nan")
        p99r = s[1] / t[1] if t[1] else float("nan")
        print(f"| {cell} | {fmt(s[0])} | {fmt(t[0])} | {fmt(p[0])} | {ratio:.2f} | "
              f"{s[1]} | {t[1]} | {p99r:.2f} | {s[2]}/{t[2]}/{p[2]} |")


def hold_table(path):
    rows = [json.loads(line) for line in open(path)]
    if not rows:
        return
    print()
    print("| server | held conns | established | alive at end | RSS before KiB | RSS peak KiB | "
          "growth per conn | probe p50 µs | probe p99 µs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['peer']} | {r['conns']:,} | skipped: {r['skipped']} | | | | | | |")
            continue
        rep = r["report"] or {}
        est = rep.get("established", 0)
        growth = (r["peak_kib"] - r["base_kib"]) * 1024 / est if est else float("nan")
        print(f"| {r['peer']} | {r['conns']:,} | {est:,} | {rep.get('alive_at_end', 0):,} | "
              f"{r['base_kib']:,} | {r['peak_kib']:,} | {growth:,.0f} B | "
              f"{rep.get('probe_p50_us', '-')} | {rep.get('probe_p99_us', '-')} |")


if __name__ == "__main__":
    echo_table(sys.argv[1])
    if len(sys.argv) > 2:
        hold_table(sys.argv[2])
