"""The values of benches/pickle_typed.rs built in Python, as mpconn hands them to Python (a
struct is a dict in field order, a unit enum variant its name, None for None, a tuple a tuple),
and CPython's C pickle.dumps timed on them at protocols 4 and 3: best of N runs with
time.perf_counter, the garbage collector left on as a program has it.

With DIR (target/pickle-typed), it first checks mpconn's output there: every NAME.pP.pickle
(protocols 2 to 5) must load to a value equal to Python's (== on the whole value). Prints JSON:
{name: {dumps4_ms, dumps3_ms, bytes4, bytes3, checked}}.
Usage: python pickle_typed_cpython.py DIR [N]"""
import json
import os
import pickle
import sys
import time


def records():
    return [{"id": i, "name": "user%d" % i, "email": "u%d@mail.org" % i, "score": i * 0.5,
             "active": i % 2 == 0, "tags": ["a", "b"]} for i in range(100000)]


def dicts():
    return [{"a": i, "b": i * 2, "c": -i} for i in range(100000)]


def orders():
    cities = ["Paris", "Berlin", "Tokyo"]
    status = ["Pending", "Shipped", "Delivered"]
    out = []
    for i in range(20000):
        out.append({
            "id": i,
            "customer": {
                "name": "customer %d" % i,
                "address": {"street": "%d Main Street" % (i % 1000), "city": cities[i % 3],
                            "zip": "%05d" % (i % 100000)},
            },
            "items": [{"sku": "sku-%d" % ((i + k) % 50), "qty": k + 1, "price": k * 2.5 + 0.25}
                      for k in range(3)],
            "status": status[i % 3],
            "note": "note %d" % i if i % 4 == 0 else None,
        })
    return out


def tuples():
    return [(i * 7 - 50000, i * 0.25, i % 3 == 0) for i in range(100000)]


PAYLOADS = (("records", records), ("dicts", dicts), ("orders", orders), ("tuples", tuples))


def best(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main():
    d = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    out = {"python": sys.version.split()[0], "runs": n}
    for name, make in PAYLOADS:
        value = make()
        checked = 0
        for proto in (2, 3, 4, 5):
            path = os.path.join(d, "%s.p%d.pickle" % (name, proto))
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                loaded = pickle.loads(f.read())
            if loaded != value:
                sys.exit("%s: mpconn's protocol %d pickle loads to a different value" % (name, proto))
            checked += 1
        out[name] = {
            "dumps4_ms": best(lambda: pickle.dumps(value, protocol=4), n),
            "dumps3_ms": best(lambda: pickle.dumps(value, protocol=3), n),
            "bytes4": len(pickle.dumps(value, protocol=4)),
            "bytes3": len(pickle.dumps(value, protocol=3)),
            "checked": checked,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
