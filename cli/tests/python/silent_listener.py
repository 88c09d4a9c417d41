# accepts connections and never says anything (the handshake never starts)
import socket, sys, os, time
s = socket.socket(socket.AF_UNIX); 
try: os.unlink(sys.argv[1])
except OSError: pass
s.bind(sys.argv[1]); s.listen(1024); held = []
print("ready"); sys.stdout.flush()
while True:
    c, _ = s.accept(); held.append(c)
