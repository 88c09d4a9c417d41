#!/usr/bin/env bash
# W2 on one CPU (issue 20): raw and mpconn alternated, ROUNDS rounds (5) on both families, each
# under `perf stat -e task-clock` (the CPU time of both processes); prints "rR FAMILY WHICH
# US_PER_RTT TASK_CLOCK_MS" lines and the medians of mpconn ÷ raw. With BEFORE=path/to/an/older
# mpconn binary, that build runs in the same rounds too, and the medians of mpconn ÷ before
# follow (an A/B in one run). With BLOCKING=1, `mpconn bench --face blocking` (the blocking face
# serving) runs in the same rounds too.
#   bash /work/shared/bench-anchors/build.sh && cargo build --release -p mpconn-cli
#   bash benches/w2_cpu.sh
#   ROUNDS=15 BEFORE=/tmp/tgt-head/release/mpconn bash benches/w2_cpu.sh
#   ROUNDS=15 BLOCKING=1 bash benches/w2_cpu.sh
set -euo pipefail
R=${RAW:-/tmp/bench-anchors-target/release/rawlimit}
M=${MPCONN:-$(dirname "$0")/../target/release/mpconn}
B=${BEFORE:-}
OUT=$(mktemp)
STAT=$(mktemp)
builds=(raw mp)
[ -n "$B" ] && builds+=(before)
[ -n "${BLOCKING:-}" ] && builds+=(blocking)
for r in $(seq 1 "${ROUNDS:-5}"); do for f in unix tcp; do
  for b in "${builds[@]}"; do
    case $b in
      raw) cmd=("$R" --workload W2 --family $f) ;;
      mp) cmd=("$M" bench --workload W2 --family $f) ;;
      before) cmd=("$B" bench --workload W2 --family $f) ;;
      blocking) cmd=("$M" bench --workload W2 --family $f --face blocking) ;;
    esac
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
builds = sorted({b for _, _, b in d} - {"raw"}, reverse=True)
for f in ("unix", "tcp"):
    rounds = sorted({r for r, g, _ in d if g == f}, key=lambda r: int(r[1:]))
    for b in builds:
        wall = [d[(r, f, b)][0] / d[(r, f, "raw")][0] for r in rounds]
        cpu = [d[(r, f, b)][1] / d[(r, f, "raw")][1] for r in rounds]
        print(f, b, "÷ raw: wall", " ".join("%.3f" % x for x in wall), "median %.3f" % statistics.median(wall),
              "| cpu", " ".join("%.3f" % x for x in cpu), "median %.3f" % statistics.median(cpu))
    if "before" in builds:
        cpu = [d[(r, f, "mp")][1] / d[(r, f, "before")][1] for r in rounds]
        print(f, "mp ÷ before: cpu", " ".join("%.3f" % x for x in cpu), "median %.3f" % statistics.median(cpu))
PY
rm -f "$OUT" "$STAT"
