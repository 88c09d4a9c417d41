# A configurable multiprocessing.connection RPC service for breaking `mpconn stress`.
# usage: python3 svc.py ADDRESS MODE [ARG]; key b'k'. Counts requests; writes count to $COUNT_FILE
# every 0.1 s. Works on Python 2.7 and 3.x.
import sys, os, time, threading
from multiprocessing.connection import Listener
addr = sys.argv[1]
mode = sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
if ':' in addr:
    h, p = addr.rsplit(':', 1); addr = (h, int(p))
count = [0]
lock = threading.Lock()
stall_lock = threading.Lock()
t0 = time.time()
def writer():
    f = os.environ.get('COUNT_FILE')
    while f:
        with open(f + '.tmp', 'w') as o:
            o.write(str(count[0]))
        os.rename(f + '.tmp', f)
        time.sleep(0.1)
def maybe_stall():
    if mode == 'stall':   # every second, the first 300 ms: nobody is answered (a GIL-ish global stall)
        ph = (time.time() - t0) % 1.0
        if ph < 0.3:
            time.sleep(0.3 - ph)
    elif mode == 'stall2':  # one 2 s stall starting at t0+float(arg)
        s = t0 + float(arg or 2)
        now = time.time()
        if s <= now < s + 2:
            time.sleep(s + 2 - now)
def serve(conn):
    n = 0
    try:
        while True:
            try:
                req = conn.recv()
            except EOFError:
                return
            with lock:
                count[0] += 1
            n += 1
            maybe_stall()
            if mode == 'never':
                continue
            if mode == 'delay':
                time.sleep(float(arg))
            if mode == 'closeN' and n > int(arg):
                conn.close(); return
            if mode == 'huge':
                conn.send(b'x' * int(arg)); continue
            if mode == 'set':
                conn.send({1, 2, 3}); continue
            if mode == 'float':
                conn.send(float('nan')); continue
            if mode == 'dictorder':
                conn.send({'b': 2, 'a': 1}); continue
            if mode == 'obj':
                import fractions
                conn.send(fractions.Fraction(1, 3)); continue
            conn.send(req)
            if mode == 'double':
                conn.send(req)
    finally:
        try: conn.close()
        except Exception: pass
threading.Thread(target=writer).start() if os.environ.get('COUNT_FILE') else None
l = Listener(addr, authkey=b'k', backlog=512)
sys.stdout.write('ready\n'); sys.stdout.flush()
while True:
    c = l.accept()
    t = threading.Thread(target=serve, args=(c,)); t.daemon = True; t.start()
