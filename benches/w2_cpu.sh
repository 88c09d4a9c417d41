#!/usr/bin/env bash
# W2 on one CPU (issue 20): raw and mpconn alternated, 5 rounds on both families, each under
# `perf stat -e task-clock` (the CPU time of both processes); prints "rR FAMILY WHICH US_PER_RTT
# TASK_CLOCK_MS" lines and the medians of mpconn ÷ raw.
#   bash /work/shared/bench-anchors/build.sh && cargo build --release -p mpconn-cli
#   bash benches/w2_cpu.sh
set -euo pipefail
R=${RAW:-/tmp/bench-anchors-target/release/rawlimit}
M=${MPCONN:-$(dirname "$0")/../target/release/mpconn}
OUT=$(mktemp)
STAT=$(mktemp)
for r in 1 2 3 4 5; do for f in unix tcp; do
  for b in raw mp; do
    if [ $b = raw ]; then cmd=("$R" --workload W2 --family $f); else cmd=("$M" bench --workload W2 --family $f); fi
    v=$(taskset -c 0 perf stat -x, -e task-clock -o "$STAT" "${cmd[@]}" | grep -o '"value": [0-9.]*' | grep -o '[0-9.]*$')
    echo "r$r $f $b $v $(grep task-clock "$STAT" | cut -d, -f1)" | tee -a "$OUT"
  done
done; done
python3 - "$OUT" <<'PY'
import statistics, sys
d = {}
for line in open(sys.argv[1]):
    r, f, b, v, c = line.split()
    d[(r, f, b)] = (float(v), float(c))
for f in ("unix", "tcp"):
    rounds = sorted({r for r, g, _ in d if g == f})
    wall = [d[(r, f, "mp")][0] / d[(r, f, "raw")][0] for r in rounds]
    cpu = [d[(r, f, "mp")][1] / d[(r, f, "raw")][1] for r in rounds]
    print(f, "wall", " ".join("%.3f" % x for x in wall), "median %.3f" % statistics.median(wall),
          "| cpu", " ".join("%.3f" % x for x in cpu), "median %.3f" % statistics.median(cpu))
PY
rm -f "$OUT" "$STAT"
