"""A real Python at the other end of the wire, for mpconn's interop tests.

    peer.py listen  ADDRESS KEY [--processing | --rhel] [--accepts N]
    peer.py connect ADDRESS KEY [--processing | --rhel]

ADDRESS is host:port, a Unix socket path, or \\0name (abstract). KEY is hex, or "none".
Runs on CPython 2.7 (with --processing: the original `processing` package) and 3.x.
With --rhel (CPython 3.6-3.11) the handshake is patched as Red Hat's Python is (FIPS:
HMAC_DIGEST_NAME = 'sha256': the legacy 20-byte challenge answered with a raw HMAC-SHA256).
Prints READY <address> once listening, CONNECTED once a client is authenticated, AUTHFAIL <why>
when a handshake fails, DONE at the end. Each connection then obeys the commands the Rust side
sends (see serve()), until "quit" or end of file.
"""
import array
import binascii
import sys

args = sys.argv[1:]
PROCESSING = "--processing" in args
RHEL = "--rhel" in args
accepts = 1
if "--accepts" in args:
    accepts = int(args[args.index("--accepts") + 1])
mode, address_text, key_text = args[0], args[1], args[2]

if PROCESSING:
    from processing.connection import Listener, Client, AuthenticationError
    from processing import BufferTooShort
    SEND, RECV, RECV_INTO = "sendBytes", "recvBytes", "recvBytesInto"
else:
    from multiprocessing.connection import Listener, Client
    from multiprocessing import AuthenticationError, BufferTooShort
    SEND, RECV, RECV_INTO = "send_bytes", "recv_bytes", "recv_bytes_into"



def patch_like_rhel():
    """Red Hat's downstream patch to multiprocessing/connection.py (quoted in instructlab/sdg#587):
    deliver_challenge and answer_challenge use HMAC_DIGEST_NAME = 'sha256' where upstream 3.11
    and older use 'md5'. The bodies below are 3.11's, with that one change."""
    import hmac
    import os
    import multiprocessing.connection as mc

    def deliver_challenge(connection, authkey):
        message = os.urandom(mc.MESSAGE_LENGTH)
        connection.send_bytes(mc.CHALLENGE + message)
        digest = hmac.new(authkey, message, "sha256").digest()
        response = connection.recv_bytes(256)
        if response == digest:
            connection.send_bytes(mc.WELCOME)
        else:
            connection.send_bytes(mc.FAILURE)
            raise AuthenticationError("digest received was wrong")

    def answer_challenge(connection, authkey):
        message = connection.recv_bytes(256)
        assert message[:len(mc.CHALLENGE)] == mc.CHALLENGE, "message = %r" % message
        message = message[len(mc.CHALLENGE):]
        digest = hmac.new(authkey, message, "sha256").digest()
        connection.send_bytes(digest)
        response = connection.recv_bytes(256)
        if response != mc.WELCOME:
            raise AuthenticationError("digest sent was rejected")

    mc.deliver_challenge = deliver_challenge
    mc.answer_challenge = answer_challenge


if RHEL:
    patch_like_rhel()

key = None if key_text == "none" else binascii.unhexlify(key_text.encode("ascii"))


def log(*parts):
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def parse_address(text):
    if text.startswith("\\0"):
        return "\0" + text[2:]
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and "/" not in text:
        return (host, int(port))
    return text


def show_address(a):
    if isinstance(a, tuple):
        return "%s:%d" % a[:2]
    if a.startswith("\0"):
        return "\\0" + a[1:]
    return a


def pattern(n):
    return (bytes(bytearray(range(251))) * (n // 251 + 1))[:n]


PY2 = sys.version_info[0] == 2


def value_set():
    """The fixed value set of the interop matrix: every plain type, big ints, unicode, nested and
    shared values. The same literal means the same values on Python 2.7 and 3.x."""
    shared = [1, u"shared"]
    return [
        None, True, False, 0, -1, 255, 256, 65535, 2**31 - 1, -2**31, 2**63, -2**100, 2**1000,
        1.5, -0.0, 1e300, float("inf"), u"", u"ascii", u"\xe9\u20ac\U0001f600", b"", b"\x00\xffbytes",
        (), (1,), (1, 2, 3), [], [1, [2, [3, []]]], {}, {u"a": 1, 2: u"b", (1, 2): [3]},
        set([1, 2]), frozenset([u"x"]), bytearray(b"ab"), shared, shared, {u"k": shared},
    ]


def values(conn, send_bytes, recv_bytes):
    """Sends the value set and its repr, reads it back from the other side and says whether the
    copy is equal (identical repr on Python 3, shared items still shared)."""
    v = value_set()
    conn.send(v)
    send_bytes(repr(v).encode("utf-8"))
    try:
        back = conn.recv()
    except Exception as e:
        send_bytes(("error: %s: %s" % (type(e).__name__, e)).encode("utf-8"))
        return
    ok = back == v and back[-3] is back[-2] and back[-1][u"k"] is back[-2]
    ok = ok and (PY2 or repr(back) == repr(v))
    send_bytes(b"ok" if ok else ("mismatch: %r" % (back,)).encode("utf-8"))


def serve(conn):
    send_bytes, recv_bytes, recv_into = getattr(conn, SEND), getattr(conn, RECV), getattr(conn, RECV_INTO)
    while True:
        try:
            msg = recv_bytes()
        except EOFError:
            return
        cmd, _, arg = msg.partition(b":")
        if cmd == b"echo":
            send_bytes(arg)
        elif cmd == b"obj":
            obj = conn.recv()
            conn.send(obj)
            send_bytes(repr(obj).encode("utf-8"))
        elif cmd == b"send_obj":
            conn.send({"hello": "world", "n": 1, "list": [1, 2.5, None, True], "tuple": (1, "a")})
        elif cmd == b"send_class":
            conn.send([1, float])
        elif cmd == b"big":
            send_bytes(pattern(int(arg)))
        elif cmd == b"recvbig":
            data = recv_bytes()
            ok = b"match" if data == pattern(len(data)) else b"mismatch"
            send_bytes(ok + (":%d" % len(data)).encode("ascii"))
        elif cmd == b"into":
            # An array, not a bytearray: processing's recvBytesInto wants a "pinned buffer".
            buf = array.array("b", [0] * int(arg))
            try:
                n = recv_into(buf)
                raw = (getattr(buf, "tobytes", None) or buf.tostring)()
                send_bytes(("ok:%d:" % n).encode("ascii") + raw[:n])
            except BufferTooShort as e:
                send_bytes(("short:%d" % len(e.args[0])).encode("ascii"))
        elif cmd == b"values":
            values(conn, send_bytes, recv_bytes)
        elif cmd == b"version":
            send_bytes(sys.version.split()[0].encode("ascii"))
        elif cmd == b"quit":
            conn.close()
            return
        else:
            send_bytes(b"unknown command")


address = parse_address(address_text)
if mode == "listen":
    if PROCESSING:
        listener = Listener(address, authenticate=key is not None, authkey=key)
    else:
        listener = Listener(address, authkey=key)
    log("READY", show_address(listener.address))
    for _ in range(accepts):
        try:
            conn = listener.accept()
        except AuthenticationError as e:
            log("AUTHFAIL", e)
            continue
        except (OSError, IOError, EOFError) as e:
            log("ERROR", type(e).__name__, e)
            continue
        log("CONNECTED")
        serve(conn)
    listener.close()
else:
    try:
        conn = Client(address, authkey=key)
    except AuthenticationError as e:
        log("AUTHFAIL", e)
        log("DONE")
        sys.exit(0)
    log("CONNECTED")
    serve(conn)
log("DONE")
