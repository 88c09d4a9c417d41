#!/usr/bin/env bash
# Issue 20, the async face's batch receive: tokiopeer, the reactor, the async face of this
# build and the async face of a reference build (main before the change) alternating in one
# loop, W1, W2 and W3, Unix and TCP, REPS times; the JSON lines go to $OUT (each tagged with its
# rep), then benches/async_batch_table.py prints medians of the per-rep ratios.
# Build first: cargo build --release -p mpconn-cli (copy the binary to $NEW), the reference
# binary the same way from main ($BASE), and bash ../shared/bench-anchors/build.sh.
# Usage: NEW=/tmp/mpconn-new BASE=/tmp/mpconn-main REPS=5 bash benches/async_batch.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
OUT=${OUT:-${TMPDIR:-/tmp}/async-batch.jsonl}
ANCHORS_TARGET=${ANCHORS_TARGET:-${TMPDIR:-/tmp}/bench-anchors-target}
TOKIO=$ANCHORS_TARGET/release/tokiopeer
NEW=${NEW:-target/release/mpconn}
BASE=${BASE:?the reference (main) mpconn binary}

run() {  # tag rep; one bounded run; a failure is recorded, the rest goes on
  local tag=$1 rep=$2; shift 2
  timeout -k 5 180 nice -n 0 "$@" | sed -u "s/^{/{\"tag\": \"$tag\", \"rep\": $rep, /" | tee -a "$OUT" \
    || echo "# FAILED: $*" | tee -a "$OUT" >&2
}

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus load $(cut -d' ' -f1-3 /proc/loadavg)" > "$OUT"
for rep in $(seq "$REPS"); do
  for w in W1 W2 W3; do
    for fam in unix tcp; do
      run tokio "$rep" "$TOKIO" --workload "$w" --family "$fam"
      run reactor "$rep" "$NEW" bench --workload "$w" --family "$fam" --face reactor
      run async-new "$rep" "$NEW" bench --workload "$w" --family "$fam" --face async
      run async-main "$rep" "$BASE" bench --workload "$w" --family "$fam" --face async
    done
  done
  echo "# rep $rep done $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
done
python3 benches/async_batch_table.py "$OUT"
