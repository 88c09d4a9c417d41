"""Times CPython's C pickle on the payloads of pickle_payloads.py: pickle.loads of each file and
pickle.dumps (protocol 4) of what it loads, best of N runs with time.perf_counter, the garbage
collector left on as a program has it. Prints JSON: {name: {loads_ms, dumps_ms, dumps_bytes,
file_bytes}}. Usage: python pickle_cpython.py DIR [N]"""
import json
import os
import pickle
import sys
import time


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
    for name in ("records", "ints", "strings"):
        with open(os.path.join(d, name + ".pickle"), "rb") as f:
            data = f.read()
        value = pickle.loads(data)
        out[name] = {
            "file_bytes": len(data),
            "loads_ms": best(lambda: pickle.loads(data), n),
            "dumps_ms": best(lambda: pickle.dumps(value, protocol=4), n),
            "dumps_bytes": len(pickle.dumps(value, protocol=4)),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
