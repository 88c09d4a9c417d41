"""A multiprocessing.connection service for `mpconn stress` tests and benchmarks.

    python3 service.py MODE [ADDRESS]      (authkey from MPCONN_KEY, default b'k')

Prints "listening on ADDRESS" and serves each connection in its own thread:
  ok       answers {'op': 'get', 'n': n} with {'ok': True, 'n': n}
  wrong10  as ok, but every 10th request of a connection gets {'ok': False, 'n': n}
  stall    as ok, but the whole service stalls 300 ms once a second (like a GC pause)
  echo     sends every message back (conn.send_bytes(conn.recv_bytes()))
  silent   reads requests and never answers
"""
import os
import sys
import threading
import time
from multiprocessing.connection import Listener

MODE = sys.argv[1]
STALL = threading.Lock()


def staller():
    while True:
        time.sleep(0.7)
        with STALL:
            time.sleep(0.3)


def serve(conn):
    count = 0
    try:
        while True:
            if MODE == "echo":
                conn.send_bytes(conn.recv_bytes())
                continue
            req = conn.recv()
            count += 1
            if MODE == "silent":
                continue
            if MODE == "stall":
                with STALL:
                    pass
            ok = not (MODE == "wrong10" and count % 10 == 0)
            conn.send({"ok": ok, "n": req["n"]})
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    address = sys.argv[2] if len(sys.argv) > 2 else ("127.0.0.1", 0)
    key = os.environ.get("MPCONN_KEY", "k").encode()
    listener = Listener(address, authkey=key, backlog=1024)
    a = listener.address
    print("listening on", a if isinstance(a, str) else "%s:%d" % a, flush=True)
    if MODE == "stall":
        threading.Thread(target=staller, daemon=True).start()
    while True:
        try:
            conn = listener.accept()
        except Exception:  # a client that failed the handshake
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
