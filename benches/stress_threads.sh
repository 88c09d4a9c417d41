#!/usr/bin/env bash
# `mpconn stress --threads 1` vs `--threads 2`, closed loop, against the embedded server (the
# checksummed echo test) and against a CPython 3.11 threaded service (cli/tests/python/service.py
# ok: {'op': 'get', 'n': n} -> {'ok': True, 'n': n}, every reply checked), in one run,
# interleaved, REPS times each; prints one line per run and the medians.
#   bash benches/stress_threads.sh            (CLIENTS=200 DURATION=8s REPS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-200}
DURATION=${DURATION:-8s}
REPS=${REPS:-3}
BIN=target/release/mpconn
cargo build -q --release -p mpconn-cli
out=$(mktemp -d)
MPCONN_KEY=k python3 cli/tests/python/service.py ok > "$out/svc" &
svc=$!
trap 'kill $svc 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 50); do [ -s "$out/svc" ] && break; sleep 0.1; done
addr=$(awk '{print $3}' "$out/svc")
for rep in $(seq "$REPS"); do
  for threads in 1 2; do
    "$BIN" stress --clients "$CLIENTS" --duration "$DURATION" --threads "$threads" --json 2>/dev/null \
      > "$out/embedded-$threads-$rep.json" || true
    MPCONN_KEY=k "$BIN" stress "$addr" --authkey-env MPCONN_KEY --clients "$CLIENTS" --duration "$DURATION" \
      --threads "$threads" --request "{'op': 'get', 'n': {seq}}" --expect "{'ok': True, 'n': {seq}}" --json \
      2>/dev/null > "$out/cpython-$threads-$rep.json" || true
  done
done
python3 - "$out" "$REPS" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
print("| server | threads | requests/s (median of %d) | p50 µs | p99 µs | errors | runs (req/s) |" % reps)
print("|---|---|---|---|---|---|---|")
for server in ("embedded", "cpython"):
    for threads in (1, 2):
        runs = [json.load(open("%s/%s-%d-%d.json" % (out, server, threads, r))) for r in range(1, reps + 1)]
        rates = [r["rate"] for r in runs]
        med = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        print("| %s | %d | %.0f | %.0f | %.0f | %d | %s |" % (
            server, threads, statistics.median(rates), med["latency_us"]["p50"], med["latency_us"]["p99"],
            sum(r["errors"] for r in runs), ", ".join("%.0f" % x for x in rates)))
PY
