"""The seed's listener, for Python 3 and 2.7 (multiprocessing) and Python 2 with the `processing` package.

    python3 examples/python/seed_listener.py [ADDRESS]
    $(pyenv prefix 2.7.18)/bin/python examples/python/seed_listener.py [ADDRESS]
    $(pyenv prefix 2.7.18)/bin/python examples/python/seed_listener.py [ADDRESS] --processing

Prints "listening on ADDRESS" once ready, accepts one client, sends the seed's messages.
"""
import sys
from array import array


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and "/" not in text:
        return (host, int(port))
    return text


args = [a for a in sys.argv[1:] if not a.startswith("--")]
address = parse_address(args[0]) if args else ("localhost", 6000)

if "--processing" in sys.argv:
    from processing.connection import Listener
    listener = Listener(address, authkey="secret password")
else:
    from multiprocessing.connection import Listener
    listener = Listener(address, authkey=b"secret password")
print("listening on %s" % (listener.address,))
sys.stdout.flush()

conn = listener.accept()
print("connection accepted from %s" % (listener.last_accepted,))
send_bytes = getattr(conn, "send_bytes", None) or conn.sendBytes
conn.send([2.25, None, "junk", float])
send_bytes(b"hello")
send_bytes(array("i", [42, 1729]))
conn.close()
listener.close()
