#!/usr/bin/env bash
# Runs mpconn's workloads beside the shared anchors (raw sockets, tokio, CPython) in one run,
# interleaved, and prints the median table; ratios are only meaningful within one run.
#   bash benches/run_table.sh            (REPS=3 FAMILIES="unix tcp" WORKLOADS="W1 W2 W3 W4")
# Raw JSON lines go to $OUT (default /tmp/mpconn-bench.jsonl).
set -u -o pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/mpconn-bench.jsonl}
FAMILIES=${FAMILIES:-unix tcp}
WORKLOADS=${WORKLOADS:-W1 W2 W3 W4 W5}
ANCHORS=${ANCHORS:-../shared/bench-anchors}
BIN=$(bash "$ANCHORS/build.sh") || exit 1
cargo build --release --quiet --bin mpconn || exit 1
MPCONN=target/release/mpconn

run() { timeout -k 5 180 "$@" | tee -a "$OUT" || echo "# FAILED: $*" | tee -a "$OUT" >&2; }
run_1cpu() {
  timeout -k 5 180 taskset -c 0 "$@" | sed -u 's/"impl": "\([^"]*\)"/"impl": "\1 [1 cpu]"/' \
    | tee -a "$OUT" || echo "# FAILED: taskset -c 0 $*" | tee -a "$OUT" >&2
}

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus $(python3 -V) $(rustc -V)" > "$OUT"
for rep in $(seq "$REPS"); do
  for w in $WORKLOADS; do
    [ "$w" = W5 ] && continue
    for fam in $FAMILIES; do
      run "$MPCONN" bench --workload "$w" --family "$fam"
      run "$BIN/rawlimit" --workload "$w" --family "$fam"
      if [ "$w" = W4 ]; then
        run "$BIN/rawlimit" --workload W4 --family "$fam" --acceptors 1
        run python3 "$ANCHORS/py_mpconn_bench.py" --workload W4 --family "$fam"
      else
        run "$BIN/tokiopeer" --workload "$w" --family "$fam"
      fi
      if [ "$w" = W2 ]; then
        run_1cpu "$MPCONN" bench --workload W2 --family "$fam"
        run_1cpu "$BIN/rawlimit" --workload W2 --family "$fam"
        run_1cpu "$BIN/tokiopeer" --workload W2 --family "$fam"
      fi
    done
  done
  [[ " $WORKLOADS " == *" W5 "* ]] && run "$MPCONN" bench --workload W5 --n 19000
done
python3 "$ANCHORS/summarize.py" "$OUT"
