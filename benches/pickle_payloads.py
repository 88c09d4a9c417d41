"""Writes the three pickle benchmark payloads (deterministic), each pickled by this CPython at
protocol 4: records.pickle (100,000 record dicts), ints.pickle (1,000,000 ints of mixed sizes),
strings.pickle (300,000 short strings). Usage: python pickle_payloads.py OUTDIR
Files already there with the same content are left alone."""
import os
import pickle
import random
import sys

PROTOCOL = 4


def records():
    return [{"id": i, "name": "user%d" % i, "email": "u%d@mail.org" % i, "score": i * 0.5,
             "active": i % 2 == 0, "tags": ["a", "b"]} for i in range(100000)]


def ints():
    r = random.Random(1)
    out = []
    for _ in range(1000000):
        k = r.random()
        if k < 0.4:
            out.append(r.randint(0, 255))             # BININT1
        elif k < 0.6:
            out.append(r.randint(256, 65535))         # BININT2
        elif k < 0.85:
            out.append(r.randint(-2**31, 2**31 - 1))  # BININT
        elif k < 0.97:
            out.append(r.randint(-2**63, 2**63 - 1))  # LONG1, 8 bytes
        else:
            out.append(r.getrandbits(100))            # LONG1, beyond 64 bits
    return out


def strings():
    r = random.Random(2)
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ēta", "theta", "日本", "kappa"]
    return ["%s %d" % (r.choice(words), i) for i in range(300000)]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, make in (("records", records), ("ints", ints), ("strings", strings)):
        data = pickle.dumps(make(), protocol=PROTOCOL)
        path = os.path.join(out, name + ".pickle")
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        with open(path, "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (path, len(data)), file=sys.stderr)


if __name__ == "__main__":
    main()
