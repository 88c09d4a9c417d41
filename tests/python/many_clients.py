"""Opens N authenticated multiprocessing connections to ADDRESS at once and does ROUNDS echo
round trips on each, checking every reply. Prints "OK <round trips>" or raises.

    many_clients.py ADDRESS KEYHEX N ROUNDS
"""
import binascii
import sys
from multiprocessing.connection import Client

address_text, key_hex, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, sep, port = address_text.rpartition(":")
address = (host, int(port)) if sep and port.isdigit() and "/" not in address_text else address_text
key = binascii.unhexlify(key_hex)

conns = [Client(address, authkey=key) for _ in range(n)]
done = 0
for r in range(rounds):
    for i, c in enumerate(conns):
        c.send_bytes(b"%d:%d" % (i, r))
    for i, c in enumerate(conns):
        got = c.recv_bytes()
        assert got == b"%d:%d" % (i, r), (got, i, r)
        done += 1
for c in conns:
    c.close()
print("OK %d" % done)
