# Writes cpython.tsv: pickles made by real CPython, with the repr mpconn must print for them.
#   $(pyenv prefix 3.13.0)/bin/python gen_cpython.py > cpython.tsv
#   $(pyenv prefix 2.7.18)/bin/python gen_cpython.py >> cpython.tsv
# Columns: interpreter and protocol, the Python expression, the pickle in hex, the expected repr.
# For plain data the expected repr is Python's own repr(); for objects it is mpconn's form.
import pickle, sys, collections
PY2 = sys.version_info[0] == 2
V = '%d.%d' % sys.version_info[:2]
if PY2:
    class Classic: pass
    class NewStyle(object): pass
    c = Classic(); c.x = 1
    n = NewStyle(); n.y = 2
    cases = [
        ("'abc'", 'abc', "'abc'"),
        ("'\\xff\\x00'", '\xff\x00', "b'\\xff\\x00'"),
        ("u'\\xe9\\u20ac'", u'\xe9\u20ac', "'\xc3\xa9\xe2\x82\xac'"),
        ("10**30", 10**30, "1000000000000000000000000000000"),
        ("-5L", eval("-5L"), "-5"),
        ("True", True, "True"),
        ("[1, 2.5, None]", [1, 2.5, None], "[1, 2.5, None]"),
        ("{'k': (1, 'a')}", {'k': (1, 'a')}, "{'k': (1, 'a')}"),
        ("set([3])", set([3]), "{3}"),
        ("frozenset()", frozenset(), "frozenset()"),
        ("bytearray('ab')", bytearray('ab'), "bytearray(b'ab')"),
        ("Classic() with x=1", c, "__main__.Classic()<state={'x': 1}>"),
        ("ValueError", ValueError, "builtins.ValueError"),
        ("'a\\nb\\\\c\\'d'", "a\nb\\c'd", '"a\\nb\\\\c\'d"'),
        ("[s, s] for s = 'shared'", ['shared'] * 2, "['shared', 'shared']"),
    ]
    protos = [0, 1, 2]
    newstyle = {0: "__main__.NewStyle(builtins.object, None)<state={'y': 2}>", 1: "__main__.NewStyle(builtins.object, None)<state={'y': 2}>", 2: "__main__.NewStyle()<state={'y': 2}>"}
    for p in protos:
        for expr, v, want in cases + [("NewStyle() with y=2", n, newstyle[p])]:
            print('\t'.join(['py%s p%d' % (V, p), expr, pickle.dumps(v, p).encode('hex'), want]))
else:
    import queue, datetime
    a = ['x']
    s = 'shared' * 10
    cases = [
        "None", "True", "False", "0", "1", "-1", "255", "256", "65535", "65536", "2**31-1", "-2**31", "2**31",
        "2**63-1", "-2**63", "2**64", "-2**100", "1.5", "-0.0", "1e100", "1e-5", "float('inf')", "float('nan')",
        "'abc'", "''", "'\\u00e9\\u20ac\\U0001f600'", "\"it's\"", "'a\"b\\'c'", "'tab\\tnl\\n\\x00\\x7f\\xa0\\u200b'",
        "b''", "b'\\x00\\xff\\'\"'", "bytearray(b'xy')", "bytearray()", "[]", "[1, [2, [3]]]", "()", "(1,)",
        "(1, 2)", "(1, 2, 3)", "(1, 2, 3, 4)", "{}", "{'b': 1, 'a': 2}",
        "{1: 'int', 2.5: 'float', (1, 2): 'tuple', None: 'none', b'k': 'bytes', frozenset({1}): 'fs'}",
        "set()", "{1, 2, 3}", "frozenset()", "frozenset({'x'})", "list(range(2001))",
        "{i: i for i in range(1001)}", "set(range(1001))", "[a, a]", "[s, s, s]", "(a, [a])",
        "{1: 'a', 1.0: 'b', True: 'c'}", "[10**40, -10**40, 2**2000]", "{(1, (2, 3)): frozenset({(4,)})}",
        "[(), (), [], []]",
    ]
    special = {
        "complex(1, 2)": "(1+2j)",
        "complex(0, -1.5)": "-1.5j",
        "collections.OrderedDict([('z', 1), ('a', 2)])": "OrderedDict({'z': 1, 'a': 2})",
        "queue.Empty()": "_queue.Empty()",
        "ValueError": "builtins.ValueError",
        "ValueError('boom', 2)": "builtins.ValueError('boom', 2)",
        "datetime.date(2026, 11, 25)": "datetime.date(b'\\x07\\xea\\x0b\\x19')",
        "collections.defaultdict(list, {'k': [1]})": "collections.defaultdict(builtins.list)<dict_items={'k': [1]}>",
    }
    for p in range(6):
        for expr in cases + list(special):
            v = eval(expr)
            want = special.get(expr, repr(v))
            if expr == "ValueError" and p < 3:
                want = "builtins.ValueError"
            print('\t'.join(['py%s p%d' % (V, p), expr, pickle.dumps(v, p).hex(), want]))
