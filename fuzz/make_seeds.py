"""Writes the seed corpus from real CPython traffic: what multiprocessing.connection puts on the
wire (frames, the handshake of 3.11 and 3.12+), and pickles of every protocol.
Run with the interpreters whose traffic you want: python3 fuzz/make_seeds.py
"""
import datetime
import hmac
import os
import pickle
import socket
import sys
from multiprocessing.connection import Connection

here = os.path.dirname(os.path.abspath(__file__))
tag = "py%d%d" % sys.version_info[:2]


def write(target, name, data):
    with open(os.path.join(here, "corpus", target, "seed-%s-%s" % (tag, name)), "wb") as f:
        f.write(data)


def wire_of(fn):
    a, b = socket.socketpair()
    conn = Connection(a.detach())
    fn(conn)
    conn.close()
    chunks = []
    while True:
        d = b.recv(1 << 20)
        if not d:
            break
        chunks.append(d)
    b.close()
    return b"".join(chunks)


values = [None, True, 1, 2**70, 2.25, "junk", b"bytes", [1, 2], (1, "a"), {"a": 1}, {1, 2},
          frozenset([3]), bytearray(b"ab"), [2.25, None, "junk"], {"hello": "world", "n": 1}]
for i, v in enumerate(values):
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        write("pickle", "v%d-p%d" % (i, proto), pickle.dumps(v, protocol=proto))
write("pickle", "float-type", pickle.dumps([2.25, None, "junk", float]))
write("pickle", "date", pickle.dumps(datetime.date(2026, 11, 25), protocol=2))

# Frames (1st byte of each corpus file: the read split the fuzzer uses).
write("frame_decoder", "messages", b"\x07" + wire_of(lambda c: [c.send_bytes(b"hello"), c.send({"x": [1, 2]}), c.send_bytes(b"")]))
write("frame_decoder", "many-small", b"\x00" + wire_of(lambda c: [c.send_bytes(b"%d" % i) for i in range(50)]))
write("frame_decoder", "large", b"\xff" + wire_of(lambda c: c.send_bytes(os.urandom(70000))))

# Handshake messages as CPython builds them: [selector][len][msg][len][msg]...
key, nonce = b"fuzz key", os.urandom(40)
modern = b"{sha256}" + nonce
msgs = [
    b"#CHALLENGE#" + nonce[:20],                                        # 2.7-3.11 challenge
    hmac.new(key, nonce[:20], "md5").digest(),                          # legacy reply
    b"#WELCOME#",
    b"#CHALLENGE#" + modern,                                            # 3.12+ challenge
    b"{sha256}" + hmac.new(key, modern, "sha256").digest(),             # modern reply
    b"#FAILURE#",
    b"#CHALLENGE:" + nonce[:20],                                        # processing
    hmac.new(key, nonce[:20], "sha1").digest(),
    b"#WELCOME",
]
for sel in (0, 1, 2, 4):
    write("handshake", "all-%d" % sel, bytes([sel]) + b"".join(bytes([len(m)]) + m for m in msgs))
