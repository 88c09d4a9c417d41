# replies with an instance of a class defined in __main__ (a pickle a Rust decoder cannot build)
import sys, threading
from multiprocessing.connection import Listener
class Foo(object):
    def __init__(self, n): self.n = n
    def __eq__(self, o): return True
def serve(c):
    while True:
        try: r = c.recv()
        except EOFError: return
        c.send(Foo(r))
l = Listener(sys.argv[1], authkey=b'k', backlog=64)
print('ready'); sys.stdout.flush()
while True:
    t = threading.Thread(target=serve, args=(l.accept(),)); t.daemon = True; t.start()
