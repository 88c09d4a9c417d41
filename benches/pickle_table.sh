#!/usr/bin/env bash
# mpconn's pickle codec beside CPython 3.13's C pickle, on the same three payloads in one run:
#   bash benches/pickle_table.sh        (RUNS=7: CPython's best of RUNS, before and after mpconn's)
# Prints a markdown table: best times (mpconn: the fastest Criterion sample, per iteration;
# CPython: best of RUNS with time.perf_counter, gc on), and the bytes each writes at protocol 4.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-7}
if command -v pyenv >/dev/null && pyenv prefix 3.13.0 >/dev/null 2>&1; then
  PY="$(pyenv prefix 3.13.0)/bin/python"
else
  PY=python3
fi
DIR=target/pickle-payloads
"$PY" benches/pickle_payloads.py "$DIR"
"$PY" benches/pickle_cpython.py "$DIR" "$RUNS" > "$DIR/cpython-before.json"
rm -rf target/criterion/pickle_decode target/criterion/pickle_encode
cargo bench --bench pickle -- --noplot > "$DIR/criterion.log" 2>&1 || { tail -n 40 "$DIR/criterion.log"; exit 1; }
"$PY" benches/pickle_cpython.py "$DIR" "$RUNS" > "$DIR/cpython-after.json"
"$PY" - "$DIR" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
before = json.load(open(os.path.join(d, "cpython-before.json")))
after = json.load(open(os.path.join(d, "cpython-after.json")))
sizes = json.load(open(os.path.join(d, "mpconn-sizes.json")))

def best_ms(group, name):
    s = json.load(open(os.path.join("target/criterion", group, name, "new/sample.json")))
    return min(t / i for t, i in zip(s["times"], s["iters"])) / 1e6

print("| payload (CPython 3.13, protocol 4) | mpconn decode ms | CPython loads ms | ratio | mpconn encode ms | CPython dumps ms | ratio | mpconn bytes (protocol) | CPython bytes | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
labels = {"records": "100,000 record dicts", "ints": "1,000,000 ints", "strings": "300,000 short strings"}
for name in ("records", "ints", "strings"):
    py_l = min(before[name]["loads_ms"], after[name]["loads_ms"])
    py_d = min(before[name]["dumps_ms"], after[name]["dumps_ms"])
    rs_l = best_ms("pickle_decode", name)
    rs_d = best_ms("pickle_encode", name)
    pb = before[name]["dumps_bytes"]
    rb = sizes[name]["bytes"]
    print("| %s, %.1f MB | %.1f | %.1f | %.2f× | %.1f | %.1f | %.2f× | %.2f MB (%d) | %.2f MB | %.2f× |" % (
        labels[name], before[name]["file_bytes"] / 1e6, rs_l, py_l, rs_l / py_l, rs_d, py_d, rs_d / py_d,
        rb / 1e6, sizes[name]["protocol"], pb / 1e6, rb / pb))
print()
print("ratio = mpconn / CPython (below 1 is faster or smaller). CPython %s, best of %d runs twice; "
      "mpconn: fastest of Criterion's samples (release build)." % (before["python"], before["runs"]))
PYEOF
