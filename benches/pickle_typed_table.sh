#!/usr/bin/env bash
# Typed pickle encoding (issue 20): mpconn's `dumps` beside the serde-pickle crate (Criterion,
# benches/pickle_typed.rs) and CPython 3.13's C pickle.dumps on the same values
# (benches/pickle_typed_cpython.py), in one run:
#   bash benches/pickle_typed_table.sh        (RUNS=7: CPython's best of RUNS, before and after)
# CPython also loads every pickle mpconn wrote (protocols 2-5) and compares it with its values.
# Prints a markdown table: best times (mpconn, serde-pickle: the fastest Criterion sample, per
# iteration; CPython: best of RUNS with time.perf_counter, gc on), ratios, and the bytes each
# writes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-7}
if command -v pyenv >/dev/null && pyenv prefix 3.13.0 >/dev/null 2>&1; then
  PY="$(pyenv prefix 3.13.0)/bin/python"
else
  PY=python3
fi
DIR=target/pickle-typed
mkdir -p "$DIR"
rm -rf target/criterion/typed_encode_*
nice cargo bench --bench pickle_typed -- --noplot > "$DIR/criterion.log" 2>&1 || { tail -n 40 "$DIR/criterion.log"; exit 1; }
"$PY" benches/pickle_typed_cpython.py "$DIR" "$RUNS" > "$DIR/cpython-before.json"
nice cargo bench --bench pickle_typed -- --noplot >> "$DIR/criterion.log" 2>&1 || { tail -n 40 "$DIR/criterion.log"; exit 1; }
"$PY" benches/pickle_typed_cpython.py "$DIR" "$RUNS" > "$DIR/cpython-after.json"
"$PY" - "$DIR" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
before = json.load(open(os.path.join(d, "cpython-before.json")))
after = json.load(open(os.path.join(d, "cpython-after.json")))
sizes = json.load(open(os.path.join(d, "sizes.json")))

def best_ms(name, fn, which="new"):
    s = json.load(open(os.path.join("target/criterion", "typed_encode_" + name, fn, which, "sample.json")))
    return min(t / i for t, i in zip(s["times"], s["iters"])) / 1e6

def both(name, fn):
    # The fastest of the two Criterion runs (before and after CPython's second timing).
    runs = [best_ms(name, fn, "new")]
    try:
        runs.append(best_ms(name, fn, "base"))
    except OSError:
        pass
    return min(runs)

labels = {"records": "100,000 records (struct)", "dicts": "100,000 BTreeMap<String, i64>",
          "orders": "20,000 nested orders", "tuples": "100,000 (i64, f64, bool)"}
print("| payload | mpconn p4 ms | mpconn p3 ms | serde-pickle p3 ms | CPython 3.13 p4 ms | old path (to_value + dumps_value) p4 ms | mpconn p3 / serde-pickle | mpconn p4 / CPython p4 | bytes: mpconn p4 / CPython p4 | mpconn p3 / CPython p3 | serde-pickle / CPython p3 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("records", "dicts", "orders", "tuples"):
    m4, m3, sp, old = both(name, "mpconn_p4"), both(name, "mpconn_p3"), both(name, "serde_pickle_p3"), both(name, "via_value_p4")
    py4 = min(before[name]["dumps4_ms"], after[name]["dumps4_ms"])
    sz = sizes[name]
    b4, b3 = before[name]["bytes4"], before[name]["bytes3"]
    print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× | %s / %s B (%.3f×) | %.3f× | %.3f× |" % (
        labels[name], m4, m3, sp, py4, old, m3 / sp, m4 / py4,
        format(sz["mpconn_p4"], ","), format(b4, ","), sz["mpconn_p4"] / b4, sz["mpconn_p3"] / b3,
        sz["serde_pickle_p3"] / b3))
print()
print("CPython %s, best of %d runs, twice (around the second Criterion run); mpconn and serde-pickle: "
      "fastest Criterion sample of two runs (release build). CPython loaded mpconn's pickles at "
      "protocols 2-5 and found them equal to its values (%s)." % (
          before["python"], before["runs"],
          ", ".join("%s: %d" % (n, before[n]["checked"]) for n in ("records", "dicts", "orders", "tuples"))))
PYEOF
