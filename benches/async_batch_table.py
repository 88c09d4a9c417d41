"""Medians of per-rep ratios for benches/async_batch.sh's JSON lines (argv[1])."""
import json, statistics, sys
from collections import defaultdict

v = defaultdict(dict)  # (workload, family, rep) -> tag -> value
unit = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        v[(r["workload"], r["family"], r["rep"])][r["tag"]] = r["value"]
        unit[r["workload"]] = r["unit"]
    elif line.startswith("#"):
        print(line.rstrip())

def ratios(w, fam, a, b, lower_is_better=False):
    out = []
    for (ww, ff, rep), t in sorted(v.items()):
        if ww == w and ff == fam and a in t and b in t:
            out.append(t[b] / t[a] if lower_is_better else t[a] / t[b])
    return out

def fmt(xs):
    return f"**{statistics.median(xs):.2f}** ({', '.join(f'{x:.2f}' for x in xs)})" if xs else "-"

def med(w, fam, tag):
    xs = [t[tag] for (ww, ff, _), t in v.items() if ww == w and ff == fam and tag in t]
    return statistics.median(xs) if xs else float("nan")

print("| workload | family | async-new / tokio | async-main / tokio | async-new / async-main | reactor / tokio | medians: tokio, reactor, async-new, async-main |")
print("|---|---|---|---|---|---|---|")
for w in ("W1", "W2", "W3"):
    lower = w == "W2"  # us/rtt: a ratio > 1 means faster here too
    for fam in ("unix", "tcp"):
        cells = [fmt(ratios(w, fam, a, b, lower)) for a, b in
                 (("async-new", "tokio"), ("async-main", "tokio"), ("async-new", "async-main"), ("reactor", "tokio"))]
        m = ", ".join(f"{med(w, fam, t):.4g}" for t in ("tokio", "reactor", "async-new", "async-main"))
        print(f"| {w} ({unit.get(w, '')}) | {fam} | " + " | ".join(cells) + f" | {m} |")
