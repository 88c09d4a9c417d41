#!/usr/bin/env bash
# W1 and W3 (issue 20): one reactor fed by K client processes, alternated with two reactors fed
# by the same K, with the default balance and with --acceptor (each client's connection on its
# own reactor); ROUNDS rounds; prints "ROUND WORKLOAD FAMILY WHICH VALUE" lines, then the medians
# of each round's ratios to one reactor.
#   cargo build --release -p mpconn-cli && ROUNDS=10 bash benches/w13_scaling.sh
set -euo pipefail
M=${MPCONN:-$(dirname "$0")/../target/release/mpconn}
K=${CLIENTS:-2}
out=$(mktemp)
value() { grep -o '"value": [0-9.]*' | grep -o '[0-9.]*$'; }
for round in $(seq 1 "${ROUNDS:-10}"); do
  for w in ${WORKLOADS:-W1 W3}; do
    n=$([ "$w" = W1 ] && echo "${W1_N:-20000000}" || echo "${W3_N:-64}")
    for f in ${FAMILIES:-unix tcp}; do
      for cfg in "r1:--reactors 1" "r2:--reactors 2" "r2acc:--reactors 2 --acceptor"; do
        name=${cfg%%:*}; args=${cfg#*:}
        # shellcheck disable=SC2086
        echo "$round $w $f $name $("$M" bench --workload "$w" --family "$f" --n "$n" --clients "$K" $args | value)" | tee -a "$out"
      done
    done
  done
done
python3 - "$out" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 5:
        rows[(p[0], p[1], p[2])][p[3]] = float(p[4])
for w, f in sorted({(w, f) for _, w, f in rows}):
    rs = [v for (_, ww, ff), v in rows.items() if (ww, ff) == (w, f) and "r1" in v]
    line = f"{w} {f}: one reactor median {st.median(v['r1'] for v in rs):.4g}"
    for n in ["r2", "r2acc"]:
        r = [v[n] / v["r1"] for v in rs if n in v]
        q = st.quantiles(r, n=4) if len(r) >= 4 else [min(r), 0, max(r)]
        line += f"; {n} / r1 median {st.median(r):.2f} ({q[0]:.2f}-{q[2]:.2f})"
    print(line)
PY
rm -f "$out"
