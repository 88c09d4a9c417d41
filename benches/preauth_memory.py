#!/usr/bin/env python3
"""Pre-auth memory: N connections each dribble one byte of the handshake reply per second to a
keyed `mpconn listen` server; prints the server's RSS growth per connection.

    python3 benches/preauth_memory.py target/release/mpconn tcp|unix N [SECONDS]

SECONDS (default 5) stays under the server's 10 s handshake deadline."""
import os, socket, subprocess, sys, time

binary, family, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
secs = float(sys.argv[4]) if len(sys.argv) > 4 else 5
addr = '127.0.0.1:0' if family == 'tcp' else '/tmp/dribble-%d.sock' % os.getpid()
srv = subprocess.Popen([binary, 'listen', addr, '--authkey', 'k', '--quiet'], stdout=subprocess.PIPE, text=True)
line = srv.stdout.readline().strip()
bound = line.split('listening on ', 1)[1]
def rss(pid):
    for l in open('/proc/%d/status' % pid):
        if l.startswith('VmRSS:'):
            return int(l.split()[1]) * 1024
time.sleep(0.3)
r0 = rss(srv.pid)
socks = []
for i in range(n):
    if family == 'tcp':
        h, p = bound.rsplit(':', 1)
        s = socket.create_connection((h, int(p)))
    else:
        s = socket.socket(socket.AF_UNIX); s.connect(bound)
    s.setblocking(False)
    socks.append(s)
# The reply to the challenge: a 4-byte header then `{sha256}` + 32 bytes, one byte a second.
reply = (40).to_bytes(4, 'big') + b'{sha256}' + b'x' * 32
t0 = time.time(); k = 0
peak = 0
while time.time() - t0 < secs and k < len(reply):
    for s in socks:
        try:
            s.send(reply[k:k + 1])
        except OSError:
            pass
    k += 1
    time.sleep(1)
    peak = max(peak, rss(srv.pid))
r1 = rss(srv.pid)
print('%s n=%d bytes_sent_each=%d rss_before=%d rss_after=%d peak=%d delta_per_conn=%.0f B (peak %.0f B)' % (
    family, n, k, r0, r1, peak, (r1 - r0) / n, (peak - r0) / n))
for s in socks:
    s.close()
srv.kill()
