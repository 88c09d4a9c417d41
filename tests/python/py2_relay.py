# -*- coding: utf-8 -*-
"""The CPython side of tests/pickle_py2_relay.rs: Python 2 values relayed through Rust's `Value`.

Modes (JSON lines on stdout; the check modes read JSON lines on stdin):
  gen SEED COUNT   (Python 2.7) random values, seeded: str (ASCII and not), unicode, int, long,
                   float, bool, None, nested lists, tuples, dicts (str, unicode, int and tuple
                   keys), sets, frozensets, datetime.date/time/datetime/timedelta,
                   decimal.Decimal, collections.OrderedDict; pickled at protocols 0, 1 and 2:
                   {"id", "p": {protocol: hex}, "repr"}
  check2           (Python 2.7) {"id", "ref": hex, "cand": hex} -> {"id", "errors"}: the
                   candidate (Rust's re-encoding) must load to what the reference (Python 2's own
                   pickle) loads to: `type(x) is type(y) and x == y`, recursively, dict keys and
                   set members included (a str key must come back a str key, not a unicode one).
                   The one allowance: int and long are one type (see the Rust test's doc).
  check3           (Python 3) {"id", "ref": hex, "cand": {protocol: hex}} -> {"id", "errors",
                   "ref_kind"}: each candidate, loaded by `pickle.loads` as multiprocessing's
                   Connection.recv does, must equal CPython 3's own reading of Python 2's pickle,
                   types included: `pickle.loads(ref)` (encoding='ASCII', the default) when that
                   works ("ascii"); when it raises UnicodeDecodeError (a Python 2 str with a byte
                   beyond ASCII), the same unpickler with such a str read as bytes, as
                   encoding='bytes' would ("bytes-beyond-ascii").
  relay ADDRESS KEY SEED COUNT
                   (Python 2.7) connects to a relay (multiprocessing.connection.Client), sends
                   COUNT random values, receives each back and checks it as check2 does;
                   prints {"sent", "errors"} at the end.
"""
from __future__ import print_function

import collections
import datetime
import decimal
import io
import json
import pickle
import random
import struct
import sys

from pyshared import PY2, emit, hexs, int_types, long_, text_type, unhex, unichr_  # noqa: F401

sys.setrecursionlimit(10000)


# ---------------------------------------------------------------------------------------------
# The generator (Python 2.7)

ASCII = [chr(c) for c in range(128)] if PY2 else []
WORDS = ["", "a", "abc", "key", "x y", "it's", 'say "hi"', "back\\slash", "tab\there", "nl\n", "\x00\x01\x7f"]
UCHARS = [u"a", u"\xe9", u"\xff", u"\u20ac", u"\u4e2d", u"\U0001F600", u"\n", u"'", u"\\", u"\x00"]


class Gen(object):
    def __init__(self, rng):
        self.r = rng
        self.nodes = 0

    def pystr(self):
        """A Python 2 str: ASCII words, random ASCII, or random bytes (most beyond ASCII)."""
        r = self.r.random()
        if r < 0.4:
            return self.r.choice(WORDS)
        n = self.r.choice([0, 1, 4, 10, 40, 300])
        if r < 0.8:
            return "".join(self.r.choice(ASCII) for _ in range(n))
        return "".join(chr(self.r.getrandbits(8)) for _ in range(n))

    def uni(self):
        r = self.r.random()
        n = self.r.choice([0, 1, 3, 10, 300])
        if r < 0.4:  # ASCII unicode: equal to the str of the same text, but another type
            return text_type(self.r.choice(WORDS))
        return u"".join(self.r.choice(UCHARS) for _ in range(n))

    def integer(self):
        r = self.r.random()
        if r < 0.5:
            return self.r.randint(-300, 70000)
        if r < 0.7:
            return self.r.choice([2**31 - 1, 2**31, -2**31 - 1, 2**62, -2**63])
        if r < 0.85:
            return long_(self.r.randint(-1000, 1000))
        return long_(self.r.getrandbits(self.r.choice([64, 65, 100, 300])))

    def float_(self):
        if self.r.random() < 0.5:
            return self.r.choice([0.0, -0.0, 1.5, 1e300, -2.5e-300, float("inf")])
        f = struct.unpack("<d", struct.pack("<Q", self.r.getrandbits(64)))[0]
        return f if f == f else 0.25

    def when(self):
        r = self.r.random()
        year = self.r.choice([1, 1999, 2000, 2024, 2050, 2100, 9999, self.r.randint(1, 9999)])
        month, day = self.r.randint(1, 12), self.r.randint(1, 28)
        h, m, s = self.r.randint(0, 23), self.r.randint(0, 59), self.r.randint(0, 59)
        us = self.r.choice([0, 0, 1, 999999, self.r.randint(0, 999999)])
        if r < 0.25:
            return datetime.date(year, month, day)
        if r < 0.5:
            return datetime.time(h, m, s, us)
        if r < 0.75:
            return datetime.datetime(year, month, day, h, m, s, us)
        if r < 0.85:
            return datetime.timedelta(self.r.randint(-1000, 1000), self.r.randint(0, 86399), us)
        return decimal.Decimal(self.r.choice(["1.10", "-0", "1e-7", "123456789.000001", "NaN", "Infinity"]))

    def scalar(self, hashable):
        self.nodes += 1
        r = self.r.random()
        if r < 0.04:
            return None
        if r < 0.08:
            return self.r.random() < 0.5
        if r < 0.2:
            return self.integer()
        if r < 0.27:
            return self.float_()
        if r < 0.55:
            return self.pystr()
        if r < 0.75:
            return self.uni()
        return self.when()

    def hashable(self, depth):
        r = self.r.random()
        if depth > 3 or r < 0.75:
            v = self.scalar(True)
            if isinstance(v, decimal.Decimal) and v.is_nan():
                return v.is_nan()  # NaN is no key: it is not equal to itself
            return v
        self.nodes += 1
        items = [self.hashable(depth + 1) for _ in range(self.r.randint(0, 3))]
        return tuple(items) if r < 0.9 else frozenset(items)

    def key(self, depth):
        r = self.r.random()
        if r < 0.4:
            return self.pystr()
        if r < 0.6:
            return self.uni()
        if r < 0.7:
            return self.integer()
        return self.hashable(depth + 1)

    def value(self, depth=0):
        r = self.r.random()
        if depth > 4 or r < 0.4 or self.nodes > 400:
            return self.scalar(False)
        self.nodes += 1
        n = self.r.choice([0, 1, 2, 3, 5, 8])
        k = self.r.random()
        if k < 0.25:
            return [self.value(depth + 1) for _ in range(n)]
        if k < 0.45:
            return tuple(self.value(depth + 1) for _ in range(n))
        if k < 0.75:
            return dict((self.key(depth), self.value(depth + 1)) for _ in range(n))
        if k < 0.85:
            return set(self.hashable(depth + 1) for _ in range(n))
        if k < 0.9:
            return frozenset(self.hashable(depth + 1) for _ in range(n))
        return collections.OrderedDict((self.key(depth), self.value(depth + 1)) for _ in range(n))

    def top(self, i):
        self.nodes = 0
        if i % 10 == 0:  # the values of the issue, and a shared str (memoised by Python 2)
            s = "shared"
            return [datetime.time(1, 2, 3), datetime.date(2050, 1, 1), datetime.datetime(2100, 1, 1),
                    "abc", u"abc", {"abc": u"abc", u"k": "k"}, s, s, self.value()]
        return self.value()


def has_nan(v):
    return isinstance(v, decimal.Decimal) and v.is_nan()


def gen(seed, count):
    g = Gen(random.Random(seed))
    for i in range(count):
        v = g.top(i)
        emit({"id": "py27-relay-%d" % i, "p": dict((str(p), hexs(pickle.dumps(v, p))) for p in (0, 1, 2)),
              "repr": repr(v)[:300]})


# ---------------------------------------------------------------------------------------------
# Strict comparison: type(x) is type(y) and x == y, recursively


def tname(t):
    return "long" if PY2 and t is long_ else t.__name__


def same(a, b, path):
    """None if b is a, type for type and value for value; else where and how they differ."""
    ta, tb = type(a), type(b)
    if PY2 and ta in int_types and tb in int_types:
        ta = tb = int  # int and long: one type to Python 2 programs (see the module doc)
    if ta is not tb:
        return "%s: type %s != %s (%r vs %r)" % (path, tname(type(a)), tname(type(b)), a, b)
    if ta is float:
        if a != b or struct.pack("<d", a) != struct.pack("<d", b):
            return "%s: %r != %r" % (path, a, b)
        return None
    if ta is decimal.Decimal:
        return None if str(a) == str(b) else "%s: %r != %r" % (path, a, b)
    if ta in (list, tuple):
        if len(a) != len(b):
            return "%s: length %d != %d" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            e = same(x, y, "%s[%d]" % (path, i))
            if e:
                return e
        return None
    if ta in (dict, collections.OrderedDict):
        if len(a) != len(b):
            return "%s: %d keys != %d" % (path, len(a), len(b))
        if ta is collections.OrderedDict and list(a) != list(b):
            return "%s: OrderedDict order differs" % path
        bkeys = dict((k, k) for k in b)
        for k in a:
            if k not in bkeys:
                return "%s: key %r missing" % (path, k)
            e = same(k, bkeys[k], "%s key %r" % (path, k)) or same(a[k], b[k], "%s[%r]" % (path, k))
            if e:
                return e
        return None
    if ta in (set, frozenset):
        if len(a) != len(b):
            return "%s: %d members != %d" % (path, len(a), len(b))
        bmembers = dict((x, x) for x in b)
        for x in a:
            if x not in bmembers:
                return "%s: member %r missing" % (path, x)
            e = same(x, bmembers[x], "%s member %r" % (path, x))
            if e:
                return e
        return None
    if a != b:
        return "%s: %r != %r" % (path, a, b)
    return None


def check2():
    for line in sys.stdin:
        req = json.loads(line)
        try:
            ref = pickle.loads(unhex(req["ref"]))
            got = pickle.loads(unhex(req["cand"]))
            e = same(ref, got, "value")
            errors = [e[:600]] if e else []
        except Exception as ex:
            errors = ["CPython 2.7 cannot load Rust's pickle: %s: %s" % (type(ex).__name__, ex)]
        emit({"id": req["id"], "errors": errors})


def py3_reference(p):
    """CPython 3's reading of a Python 2 pickle, and which reading it is."""
    try:
        return pickle.loads(p), "ascii"
    except UnicodeDecodeError:
        pass

    class U(pickle._Unpickler):
        def _decode_string(self, value):
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return value

    return U(io.BytesIO(p)).load(), "bytes-beyond-ascii"


def check3():
    for line in sys.stdin:
        req = json.loads(line)
        errors = []
        try:
            ref, kind = py3_reference(unhex(req["ref"]))
        except Exception as ex:
            emit({"id": req["id"], "errors": ["CPython 3 cannot load the Python 2 pickle: %r" % (ex,)], "ref_kind": "none"})
            continue
        for proto, h in sorted(req["cand"].items()):
            try:
                got = pickle.loads(unhex(h))
            except Exception as ex:
                errors.append("protocol %s: CPython cannot load Rust's pickle: %s: %s" % (proto, type(ex).__name__, ex))
                continue
            e = same(ref, got, "value")
            if e:
                errors.append("protocol %s: %s" % (proto, e[:600]))
        emit({"id": req["id"], "errors": errors, "ref_kind": kind})


def relay(address, key, seed, count):
    from multiprocessing.connection import Client

    host, port = address.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=key.encode("ascii"))
    g = Gen(random.Random(seed))
    errors = []
    for i in range(count):
        v = g.top(i)
        conn.send(v)
        try:
            back = conn.recv()
        except Exception as ex:
            errors.append("value %d: the reply does not load: %s: %s" % (i, type(ex).__name__, ex))
            continue
        e = same(v, back, "value %d" % i)
        if e:
            errors.append(e[:600])
    conn.send("quit")
    conn.close()
    emit({"sent": count, "errors": errors})


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "check2":
        check2()
    elif mode == "check3":
        check3()
    elif mode == "relay":
        relay(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit("unknown mode %r" % mode)
    sys.stdout.flush()
