#!/bin/sh
# Reproducers for the break13 findings. Run from the repository root after `cargo build --release`.
# Each block is bounded (timeout); services are killed at the end. Key: k.
M=${M:-target/release/mpconn}; F=findings; D=$(mktemp -d)
trap 'kill $(cat $D/*.pid 2>/dev/null) 2>/dev/null; rm -rf $D' EXIT
svc() { python3 $F/svc.py $D/$1.sock $2 $3 >/dev/null 2>&1 & echo $! > $D/$1.pid; sleep 1; }

echo "== F1 --hdr-out histograms are uncompressed (HISTE..., cookie 0x1c849313): HdrHistogram log readers reject them"
timeout 60 $M stress --clients 10 --messages 50 --hdr-out $D/run.hlog >/dev/null
python3 $F/hdr_read.py $D/run.hlog | tail -2

echo "== F2 malformed values exit 1, documented 2"
for a in "--clients 0" "--rate 0" "--rate NaN" "--threads 0" "--churn 2" "--timeout 0s"; do
  timeout 10 $M stress $a >/dev/null 2>&1; echo "stress $a -> $?"; done
timeout 10 $M stress /nonexistent.sock --request "{'a':" >/dev/null 2>&1; echo "--request {'a': -> $?"
timeout 10 $M stress /nonexistent.sock --request-bytes abc >/dev/null 2>&1; echo "--request-bytes abc -> $?"

echo "== F3 unwritable --hdr-out: whole run, then no JSON on stdout, exit 1"
timeout 60 $M stress --clients 5 --messages 20 --json --hdr-out /nonexistent-dir/x.hlog > $D/out.json 2>$D/err; echo "rc=$? stdout bytes=$(wc -c < $D/out.json)"; tail -1 $D/err

svc echo echo
echo "== F4 --rate 1e-12 sends at full speed (schedule overflow)"
timeout 30 $M stress $D/echo.sock --authkey k --clients 2 --rate 1e-12 --duration 1s --request "{seq}" --json 2>/dev/null | python3 -c "import json,sys;j=json.load(sys.stdin);print('sent',j['sent'],'rate',j['rate'],'target',j['target_rate'],'passed',j['passed'])"

echo "== F5 a 2 s stall at the end of an open-loop run is hidden (passed, exit 0)"
python3 $F/svc.py $D/s2.sock stall2 1.5 >/dev/null 2>&1 & echo $! > $D/s2.pid; sleep 0.3
timeout 60 $M stress $D/s2.sock --authkey k --clients 4 --rate 2000 --duration 3s --request "{'n': {seq}}" --expect echo --json 2>/dev/null | python3 -c "import json,sys;j=json.load(sys.stdin);print('passed',j['passed'],'sent',j['sent'],'rate',j['rate'],'p99_us',j['latency_us']['p99'],'max_us',j['latency_us']['max'])"

svc double double
echo "== F6 a service that replies twice passes with the default --expect any (closed loop)"
timeout 30 $M stress $D/double.sock --authkey k --clients 3 --messages 100 --request "{'n': {seq}}" 2>&1 | grep -E "round trips|latency|errors"; 

echo "== F7 timeline errors do not add up to errors (echo test, silent after 5)"
python3 $F/bytes_echo_stop.py $D/bes.sock 5 >/dev/null & echo $! > $D/bes.pid; sleep 1
timeout 30 $M stress $D/bes.sock --authkey k --clients 2 --messages 10 --timeout 1s --json 2>/dev/null | python3 -c "import json,sys;j=json.load(sys.stdin);print('errors',j['errors'],j['errors_by_kind'],'timeline errors',sum(s['errors'] for s in j['timeline']))"

echo "== F8 Ctrl-C during the handshake waits for the 10 s handshake timeout"
python3 $F/silent_listener.py $D/sil.sock >/dev/null & echo $! > $D/sil.pid; sleep 0.5
$M stress $D/sil.sock --authkey k --clients 5 --duration 30s --request 1 > $D/cc.out 2>&1 & P=$!
sleep 1.5; kill -INT $P; s=$(date +%s); wait $P; echo "rc=$? report after $(( $(date +%s) - s )) s"

echo "== F9 Python 2.7 echo: b'abc' fails (comes back as str 'abc'), b'\\xff' passes (comes back as bytes)"
P27=$(pyenv prefix 2.7.18 2>/dev/null)
if [ -n "$P27" ]; then $P27/bin/python $F/svc.py $D/py27.sock echo >/dev/null 2>&1 & echo $! > $D/py27.pid; sleep 1
for r in "b'abc'" "b'\\xff'"; do timeout 20 $M stress $D/py27.sock --authkey k --clients 1 --messages 3 --request "$r" --expect echo 2>&1 | grep -E "^errors|^example"; done; fi

echo "== F0 a second Ctrl-C (exit 130) leaves the embedded server running, holding mpconn's stdout: a pipe reader hangs"
$M stress --clients 100 --messages 1000000 > $D/f0.out 2>&1 & P=$!; sleep 2.5
S=$(cat /proc/$P/task/$P/children)
# Unpaused (a user's double Ctrl-C): the orphan stays alive in most runs. Paused (deterministic):
# the orderly end waits on the stopped server, the second Ctrl-C exits 130 during it.
[ "${PAUSE:-1}" = 1 ] && kill -STOP $S
kill -INT $P; sleep 0.3; kill -INT $P; wait $P; echo "mpconn rc=$?"; kill -CONT $S; sleep 1
case "$(ps -p $S -o stat= 2>/dev/null)" in ""|Z*) echo "server $S gone (paused runs: it exits on SIGCONT; try PAUSE=0 a few times)";;
  *) ps -p $S -o pid,ppid,cmd; echo "^ orphaned embedded server (holds mpconn's stdout/stderr: 'mpconn stress | cat' would not end)";; esac
ls -d /tmp/mpconn-$P-* 2>/dev/null && echo "^ its socket directory"
kill $S 2>/dev/null; sleep 1; rm -rf /tmp/mpconn-$P-*
