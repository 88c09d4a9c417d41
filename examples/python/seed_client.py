"""The seed's client, for Python 3 and 2.7 (multiprocessing) and Python 2 with the `processing` package.

    python3 examples/python/seed_client.py [ADDRESS]
    $(pyenv prefix 2.7.18)/bin/python examples/python/seed_client.py [ADDRESS]
    $(pyenv prefix 2.7.18)/bin/python examples/python/seed_client.py [ADDRESS] --processing

ADDRESS is host:port (default localhost:6000) or a Unix socket path.
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
    from processing.connection import Client
    conn = Client(address, authkey="secret password")
    recv_bytes, recv_bytes_into = conn.recvBytes, conn.recvBytesInto
else:
    from multiprocessing.connection import Client
    conn = Client(address, authkey=b"secret password")
    recv_bytes, recv_bytes_into = conn.recv_bytes, conn.recv_bytes_into

print(conn.recv())                 # => [2.25, None, 'junk']
message = recv_bytes()
print(message.decode("ascii") if not isinstance(message, str) else message)   # => hello
arr = array("i", [0, 0, 0, 0, 0])
print(recv_bytes_into(arr))        # => 8
print(arr)                         # => array('i', [42, 1729, 0, 0, 0])
sys.stdout.flush()
