# a multiprocessing.managers BaseManager server on a Unix socket, key b'k'
import sys
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register('get_n', callable=lambda: 42)
m = M(address=sys.argv[1], authkey=b'k')
s = m.get_server()
print('ready'); sys.stdout.flush()
s.serve_forever()
