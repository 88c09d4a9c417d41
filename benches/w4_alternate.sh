#!/usr/bin/env bash
# W4 (issue 20): two mpconn builds alternated against raw with 4 acceptors, ROUNDS rounds of
# 2,000 handshakes; one reactor, 2 and 4 reactors; their order swapped every round. Prints
# "ROUND FAMILY WHICH VALUE" lines (conn/s), then medians of the ratios (to raw4, after ÷ before).
#   bash /work/shared/bench-anchors/build.sh && cargo build --release -p mpconn-cli
#   git worktree add /tmp/wt-before REV && (cd /tmp/wt-before && CARGO_TARGET_DIR=/tmp/wt-before-target cargo build --release -p mpconn-cli)
#   BEFORE=/tmp/wt-before-target/release/mpconn ROUNDS=30 bash benches/w4_alternate.sh
set -euo pipefail
R=${RAW:-/tmp/bench-anchors-target/release/rawlimit}
A=${AFTER:-$(dirname "$0")/../target/release/mpconn}
B=${BEFORE:?set BEFORE to the other build}
out=$(mktemp)
value() { grep -o '"value": [0-9.]*' | grep -o '[0-9.]*$'; }
for round in $(seq 1 "${ROUNDS:-30}"); do for f in ${FAMILIES:-unix tcp}; do
  echo "$round $f raw4 $("$R" --workload W4 --family "$f" --acceptors 4 | value)" | tee -a "$out"
  for cfg in "mp1:" "mpr2:--reactors 2 --clients 1" "mpr4:--reactors 4 --clients 1"; do
    name=${cfg%%:*}; args=${cfg#*:}
    for which in $( (( round % 2 )) && echo "before after" || echo "after before"); do
      bin=$A; [ "$which" = before ] && bin=$B
      # shellcheck disable=SC2086
      echo "$round $f $name-$which $("$bin" bench --workload W4 --family "$f" $args | value)" | tee -a "$out"
    done
  done
done; done
python3 - "$out" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 4:
        rows[(p[0], p[1])][p[2]] = float(p[3])
for f in sorted({f for _, f in rows}):
    rs = [v for (_, ff), v in rows.items() if ff == f]
    print(f"{f}: {len(rs)} rounds")
    for n in sorted({k for v in rs for k in v} - {"raw4"}):
        r = [v[n] / v["raw4"] for v in rs if n in v and "raw4" in v]
        q = st.quantiles(r, n=4)
        print(f"  {n:12s} / raw4 median {st.median(r):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
    for n in ["mp1", "mpr2", "mpr4"]:
        ab = [v[n + "-after"] / v[n + "-before"] for v in rs if n + "-after" in v and n + "-before" in v]
        print(f"  {n} after / before median {st.median(ab):.3f}")
PY
rm -f "$out"
