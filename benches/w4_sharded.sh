#!/usr/bin/env bash
# W4 (issue 20): raw with 4 and 1 acceptors beside mpconn with 1, 2 and 4 reactors, alternated,
# 3 rounds on both families; prints "round R FAMILY WHICH VALUE" lines (conn/s).
#   bash /work/shared/bench-anchors/build.sh && cargo build --release -p mpconn-cli
#   bash benches/w4_sharded.sh
set -euo pipefail
R=${RAW:-/tmp/bench-anchors-target/release/rawlimit}
M=${MPCONN:-$(dirname "$0")/../target/release/mpconn}
value() { grep -o '"value": [0-9.]*' | grep -o '[0-9.]*$'; }
for round in 1 2 3; do for f in tcp unix; do
  echo "round $round $f raw4 $("$R" --workload W4 --family $f --acceptors 4 | value)"
  echo "round $round $f raw1 $("$R" --workload W4 --family $f --acceptors 1 | value)"
  echo "round $round $f mp1 $("$M" bench --workload W4 --family $f | value)"
  echo "round $round $f mpr2 $("$M" bench --workload W4 --family $f --reactors 2 --clients 1 | value)"
  echo "round $round $f mpr4 $("$M" bench --workload W4 --family $f --reactors 4 --clients 1 | value)"
done; done
