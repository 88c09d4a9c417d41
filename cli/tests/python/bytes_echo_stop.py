# echoes raw messages (recv_bytes/send_bytes) but goes silent after N of them on each connection
import sys, threading
from multiprocessing.connection import Listener
N = int(sys.argv[2])
def serve(c):
    n = 0
    while True:
        try: m = c.recv_bytes()
        except EOFError: return
        n += 1
        if n <= N: c.send_bytes(m)
l = Listener(sys.argv[1], authkey=b'k', backlog=64)
print('ready'); sys.stdout.flush()
while True:
    t = threading.Thread(target=serve, args=(l.accept(),)); t.daemon = True; t.start()
