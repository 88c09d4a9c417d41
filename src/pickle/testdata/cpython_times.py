# CPython's C pickle on the payloads of bench_payloads.py: wall time, best of 11, GC off.
#   $(pyenv prefix 3.13.0)/bin/python src/pickle/testdata/cpython_times.py /tmp/pk
import pickle, sys, time, gc
d = sys.argv[1] if len(sys.argv) > 1 else '/tmp/pk'
gc.disable()
for name in ['records', 'ints', 'strings']:
    b = open('%s/%s.pkl' % (d, name), 'rb').read()
    bl = bd = 1e9
    for _ in range(11):
        t = time.perf_counter(); v = pickle.loads(b); del v; bl = min(bl, time.perf_counter() - t)
    v = pickle.loads(b)
    for _ in range(11):
        t = time.perf_counter(); out = pickle.dumps(v, 4); bd = min(bd, time.perf_counter() - t)
    print('%s: %d bytes in; loads %.1f ms; dumps %.1f ms, %d bytes out' % (name, len(b), bl * 1e3, bd * 1e3, len(out)))
