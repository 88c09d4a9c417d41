# -*- coding: utf-8 -*-
"""The CPython side of tests/pickle_differential.rs. Runs on CPython 3.13 and on CPython 2.7.

Modes (JSON lines on stdout; `check` and `refrepr` read JSON lines on stdin):
  gen SEED COUNT   random plain-data values, seeded: {"id", "p": {protocol: hex}, "repr"?}
  fixed            the forms issue 10 lists, plus hand-written pickles (Python 3 only)
  refrepr          {"id", "p": hex} -> {"id", "repr"}: Python 3's repr of what it loads, sets
                   shown in the order of the pickle (for pickles from Python 2, whose sets
                   Python 3 would iterate in its own hash order)
  check            {"id", "ref": hex, "cand": {protocol: hex}} -> {"id", "errors": [...]}:
                   each candidate must load to the same thing as the reference: same types,
                   same values (nan equal to nan, -0.0 apart from 0.0), same sharing of
                   mutable containers
"""
from __future__ import print_function

import json
import math
import pickle
import random
import struct
import sys

from pyshared import PY2, emit, hexs, int_types, long_, text_type, unhex, unichr_  # noqa: F401

sys.setrecursionlimit(20000)


# ---------------------------------------------------------------------------------------------
# Classes for the fixed forms (pickled as __main__.X: the checker runs this file as __main__ too)


class Plain(object):
    def __init__(self, a=None, b=None):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is Plain and (self.a, self.b) == (other.a, other.b)

    def __ne__(self, other):
        return not self == other


class Slotted(object):
    __slots__ = ("x", "y")

    def __init__(self, x=None, y=None):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is Slotted and (self.x, self.y) == (other.x, other.y)

    def __ne__(self, other):
        return not self == other


try:
    import collections

    Point = collections.namedtuple("Point", "x y")
except Exception:  # pragma: no cover
    Point = None

# ---------------------------------------------------------------------------------------------
# The random generator


INTS = [0, 1, -1, 2, 127, 128, 255, 256, -256, 65535, 65536, 2**31 - 1, 2**31, -2**31, -2**31 - 1,
        2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64, -2**64, 2**64 - 1, 2**100, -2**100,
        10**300, -10**300]
FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e16, 1e-7, 1e22, 1e-4, 9.999999999999999e-05, 5e-324,
          1.7976931348623157e308, 123456789.125, 1e15 + 0.3, 2.5e-5, float("inf"), float("-inf")]
CHARS = [u"a", u"Z", u"0", u" ", u"'", u'"', u"\\", u"\n", u"\r", u"\t", u"\x00", u"\x1f",
         u"\x7f", u"\x80", u"\x85", u"\xa0", u"\xad", u"\xe9", u"\xff", u"\u0100", u"\u2028",
         u"\u200b", u"\ufeff", u"\uffff", u"\ud7ff", u"\ue000", u"\u4e2d", u"\U0001F600",
         u"\U0001D11E", u"\U000E0001", u"\U0010FFFF", u"\u0301", u"{", u"}"]


class Gen(object):
    def __init__(self, rng, py2):
        self.r = rng
        self.py2 = py2
        self.nodes = 0
        self.pool = []  # (object, expanded size): reused to make shared sub-objects
        self.cap = 3000  # expanded nodes per value: the repr stays small

    def int_(self):
        r = self.r.random()
        if r < 0.4:
            return self.r.choice(INTS)
        if r < 0.7:
            return self.r.randint(-1000, 1000)
        bits = self.r.choice([8, 16, 31, 32, 33, 62, 63, 64, 65, 100, 200, 1000])
        v = self.r.getrandbits(bits)
        return -v if self.r.random() < 0.5 else v

    def float_(self, nan_ok):
        r = self.r.random()
        if nan_ok and r < 0.05:
            return float("nan")
        if r < 0.5:
            return self.r.choice(FLOATS)
        if r < 0.75:
            return self.r.uniform(-1e6, 1e6)
        while True:
            f = struct.unpack("<d", struct.pack("<Q", self.r.getrandbits(64)))[0]
            if f == f:
                return f

    def text(self):
        n = self.r.choice([0, 1, 2, 5, 10, 30, 300])
        if self.r.random() < 0.3:
            return u"".join(self.r.choice(u"abcdefghij") for _ in range(n))
        return u"".join(self.r.choice(CHARS) for _ in range(n))

    def raw(self):
        n = self.r.choice([0, 1, 3, 16, 100, 300])
        if self.r.random() < 0.5:
            return bytearray(self.r.getrandbits(8) for _ in range(n))
        return bytearray(self.r.choice(b"ab'\"\\\n\x00\x7f\xff") for _ in range(n)) if not PY2 \
            else bytearray(ord(self.r.choice("ab'\"\\\n\x00\x7f\xff")) for _ in range(n))

    def bytes_(self):
        if self.py2:  # a Python 2 str: ASCII only, so that Python 3 loads it as str
            return str("".join(self.r.choice("abc'\" \\\n") for _ in range(self.r.choice([0, 1, 5, 40]))))
        return bytes(self.raw())

    def scalar(self, hashable):
        self.nodes += 1
        r = self.r.random()
        if r < 0.05:
            return None
        if r < 0.1:
            return self.r.random() < 0.5
        if r < 0.35:
            return self.int_()
        if r < 0.5:
            return self.float_(nan_ok=not hashable)
        if r < 0.75:
            return self.text()
        if r < 0.9 or hashable:
            return self.bytes_()
        return self.raw()

    def hashable(self, depth):
        r = self.r.random()
        if depth > 3 or r < 0.7 or self.nodes > self.cap:
            return self.scalar(hashable=True)
        self.nodes += 1
        items = [self.hashable(depth + 1) for _ in range(self.r.randint(0, 4))]
        if r < 0.85:
            return tuple(items)
        return frozenset(items)

    def reuse(self):
        fits = [(o, s) for (o, s) in self.pool if self.nodes + s <= self.cap]
        if not fits:
            return None
        o, s = self.r.choice(fits)
        self.nodes += s
        return o

    def value(self, depth=0):
        r = self.r.random()
        if self.pool and r < 0.08:
            o = self.reuse()
            if o is not None:
                return o
        if depth > 5 or r < 0.45 or self.nodes > self.cap:
            v = self.scalar(hashable=False)
            if isinstance(v, (text_type, bytearray)) and len(v) > 3:
                self.pool.append((v, 1))
            return v
        start = self.nodes
        self.nodes += 1
        n = self.r.choice([0, 1, 2, 3, 5, 8])
        kind = self.r.random()
        if kind < 0.3:
            v = [self.value(depth + 1) for _ in range(n)]
        elif kind < 0.5:
            v = tuple(self.value(depth + 1) for _ in range(n))
        elif kind < 0.75:
            v = {}
            for _ in range(n):
                k = self.r.random()
                if k < 0.4:
                    key = self.int_()
                elif k < 0.8:
                    key = self.text()
                else:
                    key = self.hashable(depth + 1)
                v[key] = self.value(depth + 1)
        elif kind < 0.9:
            v = set(self.hashable(depth + 1) for _ in range(n))
        else:
            v = frozenset(self.hashable(depth + 1) for _ in range(n))
        if not isinstance(v, frozenset):
            self.pool.append((v, self.nodes - start))
        return v

    def chain(self):
        depth = self.r.randint(500, 900)
        v = self.scalar(hashable=False)
        for _ in range(depth):
            k = self.r.random()
            if k < 0.4:
                v = [v]
            elif k < 0.6:
                v = (v,)
            elif k < 0.8:
                v = {self.text(): v}
            else:
                v = [self.int_(), v]
        return v

    def top(self, i):
        self.nodes = 0
        self.pool = []
        if i % 25 == 7:
            return self.chain()
        return self.value()


def gen(seed, count):
    py2 = PY2
    g = Gen(random.Random(seed), py2)
    for i in range(count):
        v = g.top(i)
        protos = [2] if py2 else [2, 3, 4, 5]
        if i % 10 == 3:
            protos = [0, 1] + protos
        out = {"id": "%s-%d" % ("py27" if py2 else "py313", i),
               "p": dict((str(p), hexs(pickle.dumps(v, p))) for p in protos)}
        if not py2:
            out["repr"] = repr(v)
            out["p2_for_py27"] = out["p"]["2"]
        emit(out)


# ---------------------------------------------------------------------------------------------
# Fixed forms (Python 3)


def fixed():
    import collections
    import datetime
    import decimal
    import uuid

    def value(name, v, expect, names=(), protos=(0, 1, 2, 3, 4, 5)):
        emit({"id": name, "p": dict((str(p), hexs(pickle.dumps(v, p))) for p in protos),
              "repr": repr(v), "expect": expect, "names": list(names)})

    a = [u"x"]
    value("shared list [a, a]", [a, a], "value")
    d = {u"k": [1]}
    value("shared dict in a tuple (d, [d], {1: d})", (d, [d], {1: d}), "value")
    s = u"a string long enough to be memoised"
    value("shared str [s, s, s]", [s, s, s], "value")
    value("bytes", b"\x00\xff\"'\\ab", "value", protos=(2,))
    value("bytearray", bytearray(b"ab\x80\x00"), "value", protos=(2,))
    value("empty bytes and bytearray", [b"", bytearray()], "value", protos=(2,))
    value("set", set([1, u"a", (2, 3)]), "value", protos=(2,))
    value("frozenset", frozenset([2, b"b"]), "value", protos=(2,))
    value("empty set and frozenset", [set(), frozenset()], "value", protos=(2,))
    # Found by the random values: reprs that must be exactly CPython's.
    value("bytearray holding a single quote", [bytearray(b"'"), bytearray(b"'\""), b"'"], "value", protos=(2, 4))
    value("float 1e15 + 0.3 (a digit tie: Python rounds half to even)", [1e15 + 0.3, 2.5e-05, 1e16, 0.1], "value", protos=(2, 4))
    value("unassigned code points are escaped", u"\uffff\ud7ff\u0378\U0010fffe\U000e0080", "value", protos=(2, 4))
    value("dict insertion order", {u"b": 1, u"a": 2, 3: 3, u"c": 4, 1: 5}, "value")
    cyc = []
    cyc.append(cyc)
    value("cycle a.append(a)", cyc, "error")
    dc = {}
    dc[u"self"] = dc
    value("cycle d['self'] = d", dc, "error")
    lc = [1]
    tc = (lc,)
    lc.append(tc)
    value("cycle through a tuple", lc, "error")
    value("OrderedDict", collections.OrderedDict([(u"b", 1), (u"a", 2)]), "object", ["OrderedDict"])
    value("namedtuple", Point(1, u"y"), "object", ["Point"])
    value("plain class instance", Plain(1, [2]), "object", ["Plain"])
    value("__slots__ instance", Slotted(1, u"z"), "object", ["Slotted"], protos=(2, 3, 4, 5))
    value("uuid.UUID", uuid.UUID("12345678-1234-5678-1234-567812345678"), "object", ["UUID"])
    value("datetime.datetime", datetime.datetime(2024, 1, 2, 3, 4, 5, 6), "object", ["datetime"])
    value("datetime.date", datetime.date(2026, 11, 25), "object", ["date"])
    value("datetime.timedelta", datetime.timedelta(days=1, seconds=2), "object", ["timedelta"])
    value("Decimal", decimal.Decimal("1.10"), "object", ["Decimal"])
    value("complex", complex(1, -2), "object", ["complex"])

    def raw(name, p):
        try:
            r = repr(pickle.loads(p))
            expect = "value"
        except RecursionError:
            r, expect = None, "value"
        except Exception:
            r, expect = None, "error"
        emit({"id": name, "raw": hexs(p), "repr": r, "expect": expect, "names": []})

    raw("DUP then fill: ]2(K1K2e tuple2", b"\x80\x02]2(K\x01K\x02e\x86.")
    raw("BINPUT then fill then 2 GETs", b"\x80\x02]q\x00(K\x01e0h\x00h\x00\x86.")
    raw("MEMOIZE then fill then 2 GETs", b"\x80\x04]\x94(K\x01K\x02e0h\x00h\x00\x86.")
    raw("dict PUT then SETITEMS then GET", b"\x80\x02}q\x00(K\x01K\x02u0h\x00.")
    raw("set MEMOIZE then ADDITEMS then GET", b"\x80\x04\x8f\x94(K\x01\x900h\x00.")
    raw("memoised str fetched twice", b"\x80\x02X\x03\x00\x00\x00abcq\x00h\x00\x86.")
    raw("protocol 0 STRING", b"S'abc'\np0\n.")
    raw("protocol 0 INT bools", b"(I01\nI00\nI7\nL12345678901234567890123L\nt.")
    raw("BYTEARRAY8", b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab.")
    raw("NEXT_BUFFER out-of-band", b"\x80\x05\x97.")
    raw("READONLY_BUFFER without a buffer", b"\x80\x05\x97\x98.")
    for n in (999, 1000, 3000):
        raw("list depth %d" % n, b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    raw("tuple via MARK depth 1000", b"\x80\x02" + b"(" * 1000 + b"t" * 1000 + b".")


# ---------------------------------------------------------------------------------------------
# Reference repr of Python 2 pickles, sets in pickle order


class OSet(set):
    def __init__(self, items=()):
        items = list(items)
        set.__init__(self, items)
        self.order = dedupe(items)


class OFrozenSet(frozenset):
    def __new__(cls, items=()):
        items = list(items)
        self = frozenset.__new__(cls, items)
        self.order = dedupe(items)
        return self


def dedupe(items):
    out, seen = [], set()
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def orepr(v):
    t = type(v)
    if t is OFrozenSet:
        return "frozenset({%s})" % ", ".join(orepr(x) for x in v.order) if v.order else "frozenset()"
    if t is OSet:
        return "{%s}" % ", ".join(orepr(x) for x in v.order) if v.order else "set()"
    if t is list:
        return "[%s]" % ", ".join(orepr(x) for x in v)
    if t is tuple:
        if len(v) == 1:
            return "(%s,)" % orepr(v[0])
        return "(%s)" % ", ".join(orepr(x) for x in v)
    if t is dict:
        return "{%s}" % ", ".join("%s: %s" % (orepr(k), orepr(x)) for k, x in v.items())
    return repr(v)


def refrepr():
    import io

    class U(pickle._Unpickler):
        def find_class(self, module, name):
            if module in ("__builtin__", "builtins") and name == "set":
                return OSet
            if module in ("__builtin__", "builtins") and name == "frozenset":
                return OFrozenSet
            return pickle._Unpickler.find_class(self, module, name)

    for line in sys.stdin:
        req = json.loads(line)
        try:
            r = orepr(U(io.BytesIO(unhex(req["p"]))).load())
        except Exception as e:
            r = "<error %s: %s>" % (type(e).__name__, e)
        emit({"id": req["id"], "repr": r})


# ---------------------------------------------------------------------------------------------
# Checker


MUTABLE = (list, dict, set, bytearray)


def same(a, b, fwd, back, path):
    """None if b is a faithful copy of a, else where and how they differ."""
    ta, tb = type(a), type(b)
    if PY2:
        # int and long are one type to a Python 2 program (Rust has one int). str and unicode
        # are not: a str must come back a str (issue 18 item 9), keys and members included.
        if ta in int_types and tb in int_types and ta is not bool and tb is not bool:
            return None if a == b else "%s: %r != %r" % (path, a, b)
    if ta is not tb:
        return "%s: type %s != %s (%r vs %r)" % (path, ta.__name__, tb.__name__, a, b)
    if ta in MUTABLE:
        if id(a) in fwd or id(b) in back:
            if fwd.get(id(a)) != id(b) or back.get(id(b)) != id(a):
                return "%s: sharing differs (an object referenced twice is two objects, or the reverse)" % path
            return None
        fwd[id(a)] = id(b)
        back[id(b)] = id(a)
    if ta is float:
        if math.isnan(a) and math.isnan(b):
            return None
        if a != b or math.copysign(1, a) != math.copysign(1, b):
            return "%s: %r != %r" % (path, a, b)
        return None
    if ta in (list, tuple):
        if len(a) != len(b):
            return "%s: length %d != %d" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            e = same(x, y, fwd, back, "%s[%d]" % (path, i))
            if e:
                return e
        return None
    if ta is dict:
        if list(a.keys()) != list(b.keys()) and not PY2:
            return "%s: keys or their order differ: %r vs %r" % (path, list(a)[:10], list(b)[:10])
        if set(a.keys()) != set(b.keys()):
            return "%s: keys differ" % path
        bkeys = dict((k, k) for k in b)
        for k in a:
            e = same(k, bkeys[k], fwd, back, "%s key %r" % (path, k))
            if e:
                return e
            e = same(a[k], b[k], fwd, back, "%s[%r]" % (path, k))
            if e:
                return e
        return None
    if ta in (set, frozenset):
        if a != b:
            return "%s: %r != %r" % (path, a, b)
        bmembers = dict((x, x) for x in b)
        for x in a:
            e = same(x, bmembers[x], fwd, back, "%s member %r" % (path, x))
            if e:
                return e
        return None
    if a != b:
        return "%s: %r != %r" % (path, a, b)
    return None


def check():
    for line in sys.stdin:
        req = json.loads(line)
        errors = []
        try:
            ref = pickle.loads(unhex(req["ref"]))
        except Exception as e:
            emit({"id": req["id"], "errors": ["the reference does not load: %r" % (e,)]})
            continue
        for proto, h in sorted(req["cand"].items()):
            try:
                got = pickle.loads(unhex(h))
            except Exception as e:
                errors.append("protocol %s: CPython cannot load Rust's pickle: %s: %s" % (proto, type(e).__name__, e))
                continue
            e = same(ref, got, {}, {}, "value")
            if e:
                errors.append("protocol %s: %s" % (proto, e[:500]))
        emit({"id": req["id"], "errors": errors})


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "fixed":
        fixed()
    elif mode == "refrepr":
        refrepr()
    elif mode == "check":
        check()
    else:
        sys.exit("unknown mode %r" % mode)
    sys.stdout.flush()
