# Writes the three ~5 MB payloads of the codec's timing harness, pickled by CPython at protocol 4:
#   $(pyenv prefix 3.13.0)/bin/python src/pickle/testdata/bench_payloads.py /tmp/pk
# records.pkl: 100,000 record dicts; ints.pkl: 1,000,000 random 32-bit ints; strings.pkl: 300,000
# short strings.
import pickle, random, sys, os
d = sys.argv[1] if len(sys.argv) > 1 else '/tmp/pk'
os.makedirs(d, exist_ok=True)
random.seed(1)
payloads = {
    'records': [{'id': i, 'name': 'user%d' % i, 'score': i * 0.5, 'active': i % 2 == 0, 'tags': ['a', 'b']}
                for i in range(100000)],
    'ints': [random.randrange(-2**31, 2**31) for _ in range(1000000)],
    'strings': ['s%07d-%s' % (i, 'x' * (i % 8)) for i in range(300000)],
}
for name, v in payloads.items():
    b = pickle.dumps(v, 4)
    open(os.path.join(d, name + '.pkl'), 'wb').write(b)
    print(name, len(b))
