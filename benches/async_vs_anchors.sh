#!/usr/bin/env bash
# The async face (mpconn bench --face async) beside the tokio anchor, the raw anchor, CPython and
# the reactor, W1-W4, Unix and TCP, in one run (REPS times); prints the JSON lines (saved to
# $OUT) and the median table. Build first: cargo build --release -p mpconn-cli and
# bash ../shared/bench-anchors/build.sh (binaries in $ANCHORS_TARGET/release).
# Usage: bash benches/async_vs_anchors.sh   (REPS=3 OUT=/tmp/async-bench.jsonl)
set -u -o pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/async-bench.jsonl}
ANCHORS=${ANCHORS:-/work/shared/bench-anchors}
ANCHORS_TARGET=${ANCHORS_TARGET:-${TMPDIR:-/tmp}/bench-anchors-target}
RAW=$ANCHORS_TARGET/release/rawlimit
TOKIO=$ANCHORS_TARGET/release/tokiopeer
MPCONN=${MPCONN:-target/release/mpconn}

run() {  # one bounded run; a failure is recorded, the rest goes on
  timeout -k 5 180 "$@" | tee -a "$OUT" || echo "# FAILED: $*" | tee -a "$OUT" >&2
}
run_1cpu() {  # server and client pinned to one CPU; impl gets a " [1 cpu]" suffix
  timeout -k 5 180 taskset -c 0 "$@" | sed -u 's/"impl": "\([^"]*\)"/"impl": "\1 [1 cpu]"/' \
    | tee -a "$OUT" || echo "# FAILED: taskset -c 0 $*" | tee -a "$OUT" >&2
}

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus load $(cut -d' ' -f1-3 /proc/loadavg)" > "$OUT"
for rep in $(seq "$REPS"); do
  for w in W1 W2 W3 W4; do
    for fam in unix tcp; do
      if [ "$w" = W4 ]; then
        run python3 "$ANCHORS/py_mpconn_bench.py" --workload W4 --family "$fam"
        run "$RAW" --workload W4 --family "$fam" --acceptors 1
      else
        run "$TOKIO" --workload "$w" --family "$fam"
        run "$RAW" --workload "$w" --family "$fam"
      fi
      run "$MPCONN" bench --workload "$w" --family "$fam" --face reactor
      run "$MPCONN" bench --workload "$w" --family "$fam" --face async
      if [ "$w" = W2 ]; then
        run_1cpu "$TOKIO" --workload W2 --family "$fam"
        run_1cpu "$RAW" --workload W2 --family "$fam"
        run_1cpu "$MPCONN" bench --workload W2 --family "$fam" --face reactor
        run_1cpu "$MPCONN" bench --workload W2 --family "$fam" --face async
      fi
    done
  done
done
echo "# end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT"
python3 "$ANCHORS/summarize.py" "$OUT"
