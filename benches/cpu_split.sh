#!/usr/bin/env bash
# The CPU a workload costs the server and its client process, apart (issue 20: what bounds the
# aggregate of sharded reactors when the clients share the cores). Runs `mpconn bench` and reads
# both processes' user + system ticks (1/100 s) from /proc until the client exits.
#   cargo build --release -p mpconn-cli
#   bash benches/cpu_split.sh unix 50000000 W1; bash benches/cpu_split.sh unix 200 W3
set -euo pipefail
M=${MPCONN:-$(dirname "$0")/../target/release/mpconn}
family=${1:-unix} n=${2:-20000000} workload=${3:-W1}
out=$(mktemp)
"$M" bench --workload "$workload" --family "$family" --n "$n" > "$out" 2>&1 &
server=$!
client=""
for _ in $(seq 1 100); do
  client=$(pgrep -P "$server" -f "role client" | head -1 || true)
  [ -n "$client" ] && break
  sleep 0.01
done
server_ticks=0 client_ticks=0
while [ -n "$client" ] && kill -0 "$client" 2>/dev/null; do
  c=$(awk '{print $14 + $15}' "/proc/$client/stat" 2>/dev/null) && client_ticks=$c
  s=$(awk '{print $14 + $15}' "/proc/$server/stat" 2>/dev/null) && server_ticks=$s
  sleep 0.05
done
wait "$server"
echo "$workload $family: server_ticks=$server_ticks client_ticks=$client_ticks"
cat "$out"
rm -f "$out"
