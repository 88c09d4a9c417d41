//! Outside review of issue 14 (the tokio face, branch break14): reproducers that try to break its
//! claims; the findings are fixed and these keep them fixed.
//! Every wait is bounded; every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::tokio::{Client, Listener};
use mpconn::{Error, Family};

const STEP: Duration = Duration::from_secs(60);

/// The tests that measure this process's RSS run alone (`exclusive`); the others share the
/// process with each other (`shared`) but not with those.
static SERIAL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Py {
    fn script(code: &str, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(code)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Py { child, lines }
    }
    fn line(&self) -> String {
        self.lines.recv_timeout(STEP).expect("a line from python")
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deterministic body for message i of size n.
fn body(i: u64, n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n + 16);
    b.extend_from_slice(&i.to_be_bytes());
    b.extend_from_slice(&(n as u64).to_be_bytes());
    while b.len() < n {
        for k in 0..251u64 {
            b.push(((k * 31 + i) % 251) as u8);
        }
    }
    b.truncate(n);
    b
}

/// Python sender: sizes log-uniform 1 B .. 16 MiB, written as raw frames in random slices
/// with random pauses; bodies the same xorshift as `body`.
const RANDOM_SLOW_SENDER: &str = r#"
import socket, struct, sys, time, random
random.seed(int(sys.argv[2]))
count = int(sys.argv[3])
def body(i, n):
    base = bytes(((k * 31 + i) % 251) for k in range(251))
    b = (struct.pack("!QQ", i, n) + base * (n // 251 + 1))[:n]
    return b
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
sizes = [max(1, int(2 ** random.uniform(0, 24))) for _ in range(count)]
for k, n in enumerate([16 << 20, (8 << 20) + 1, 65536, 65537, 1, 65535 - 4]):
    sizes[(k * 7 + 3) % count] = n
print("SIZES", " ".join(map(str, sizes)), flush=True)
for i, n in enumerate(sizes):
    frame = struct.pack("!i", n) + body(i, n)
    at = 0
    while at < len(frame):
        k = random.randint(1, 65536)
        s.sendall(frame[at:at + k])
        at += k
        if random.random() < 0.5:
            time.sleep(random.uniform(0, 0.002))
s.close()
"#;

/// Cancellation by `timeout(1ms)` against random sizes up to 16 MiB, sent slowly in random
/// slices: every message exactly once, intact, in order; then a clean end of file.
#[test]
fn recv_cancelled_by_1ms_timeouts_random_sizes_to_16mib() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let count = 40;
        let py = Py::script(RANDOM_SLOW_SENDER, &[&l.address().to_string(), "7", &count.to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let sizes: Vec<usize> =
            py.line().strip_prefix("SIZES ").unwrap().split(' ').map(|s| s.parse().unwrap()).collect();
        let (mut got, mut cancelled) = (0usize, 0u64);
        let until = Instant::now() + Duration::from_secs(240);
        while got < count {
            assert!(Instant::now() < until, "bounded: {got} of {count}");
            match tokio::time::timeout(Duration::from_millis(1), conn.recv_bytes()).await {
                Err(_) => cancelled += 1,
                Ok(m) => {
                    let m = m.expect("message");
                    assert_eq!(m.len(), sizes[got], "message {got} length");
                    assert!(m == body(got as u64, sizes[got]), "message {got} intact");
                    got += 1;
                }
            }
        }
        let e = tokio::time::timeout(STEP, conn.recv_bytes()).await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Eof), "{e:?}");
        println!("{count} messages ({sizes:?}) through {cancelled} cancellations");
    });
}

/// The same with `select!` against a 1 ms interval branch.
#[test]
fn recv_in_select_against_an_interval_random_sizes() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let count = 40;
        let py = Py::script(RANDOM_SLOW_SENDER, &[&l.address().to_string(), "11", &count.to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let sizes: Vec<usize> =
            py.line().strip_prefix("SIZES ").unwrap().split(' ').map(|s| s.parse().unwrap()).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let (mut got, mut ticks) = (0usize, 0u64);
        let until = Instant::now() + Duration::from_secs(240);
        while got < count {
            assert!(Instant::now() < until, "bounded");
            tokio::select! {
                m = conn.recv_bytes() => {
                    let m = m.expect("message");
                    assert!(m == body(got as u64, sizes[got]), "message {got} intact");
                    got += 1;
                }
                _ = tick.tick() => ticks += 1,
            }
        }
        println!("{count} messages, {ticks} ticks won");
    });
}

/// Linux refuses a non-blocking connect to a Unix socket whose backlog is full with EAGAIN
/// (not EINPROGRESS). Python's Client and the blocking face wait until the listener accepts;
/// the async client should too (it should not fail with "Resource temporarily unavailable").
#[test]
fn async_unix_client_waits_for_a_full_backlog() {
    let _serial = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    sock.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    sock.listen(1).unwrap();
    let listener: std::os::unix::net::UnixListener = std::os::fd::OwnedFd::from(sock).into();
    let acceptor = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let mut kept = Vec::new();
        for _ in 0..8 {
            kept.push(listener.accept().unwrap().0);
        }
        thread::sleep(Duration::from_secs(1));
    });
    // The blocking face's client, for comparison, in threads: expected to wait, and succeed.
    rt().block_on(async {
        let addr = path.to_str().unwrap().to_string();
        let mut conns = Vec::new();
        for i in 0..8 {
            let r = tokio::time::timeout(Duration::from_secs(10), Client::new(addr.as_str()).connect()).await;
            match r {
                Ok(Ok(c)) => conns.push(c),
                Ok(Err(e)) => panic!("async connect {i} failed while the listener's backlog was full: {e:?}"),
                Err(_) => panic!("async connect {i} timed out"),
            }
        }
    });
    acceptor.join().unwrap();
}

/// A client that answers the challenge one byte every 400 ms: the handshake deadline (1.5 s)
/// must still end it (each byte must not re-arm or starve the deadline).
#[test]
fn handshake_deadline_fires_for_a_dribbling_peer() {
    let _serial = shared();
    const DRIBBLE: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(4096)
frame = struct.pack("!i", 100) + b"x" * 100
print("DRIBBLING", flush=True)
for b in frame:
    try:
        s.send(bytes([b]))
    except OSError:
        print("GONE", flush=True)
        break
    time.sleep(0.4)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .authkey("k")
            .handshake_timeout(Some(Duration::from_millis(1500)))
            .bind()
            .unwrap();
        let py = Py::script(DRIBBLE, &[&l.address().to_string()]);
        let t = Instant::now();
        let e = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap_err();
        assert_eq!(py.line(), "DRIBBLING");
        let took = t.elapsed();
        println!("dribbling peer: {e:?} after {took:?}");
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    });
}

/// A client whose first frame declares 100 MB during the handshake: refused at once (not at the
/// deadline), with the blocking face's error.
#[test]
fn huge_first_frame_during_handshake_is_refused_at_once() {
    let _serial = shared();
    const HUGE: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(4096)
s.sendall(struct.pack("!i", 100000000) + b"y" * 1000)
print("SENT", flush=True)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .authkey("k")
            .handshake_timeout(Some(Duration::from_secs(20)))
            .bind()
            .unwrap();
        let _py = Py::script(HUGE, &[&l.address().to_string()]);
        let t = Instant::now();
        let e = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap_err();
        println!("huge first frame: {e:?} / {e} after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, Error::Authentication(_) | Error::Protocol(_)), "{e:?}");
    });
}

/// An async client with a key meeting a CPython listener that accepts and says nothing: the
/// client's handshake deadline must fire.
#[test]
fn async_client_handshake_deadline_against_a_silent_listener() {
    let _serial = exclusive();
    const SILENT_LISTENER: &str = r#"
import socket, sys, time, os, tempfile
d = tempfile.mkdtemp()
p = os.path.join(d, "s")
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(p); l.listen(5)
print(p, flush=True)
c, _ = l.accept()
time.sleep(30)
"#;
    let py = Py::script(SILENT_LISTENER, &[]);
    let path = py.line();
    rt().block_on(async {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            Client::new(path.as_str()).authkey("k").handshake_timeout(Some(Duration::from_millis(700))).connect(),
        )
        .await
        .expect("the client's handshake deadline did not fire within 20 s");
        let e = r.unwrap_err();
        println!("silent listener: {e:?} after {:?}", t.elapsed());
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    });
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 2,000 unauthenticated clients that connected and sent one byte, each handshake in its own
/// task (as examples/async_echo.rs does): what does the server hold for them? The reactor holds
/// a few hundred bytes per handshaking connection (HANDSHAKE_READ_BLOCK); here we measure.
#[test]
fn memory_held_by_2000_handshaking_connections() {
    let _serial = exclusive();
    const N: usize = 2000;
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .authkey("k")
            .handshake_timeout(Some(Duration::from_secs(60)))
            .bind()
            .unwrap();
        let path = l.address().to_string();
        let before = rss_kib();
        let clients = thread::spawn(move || {
            use std::io::{Read, Write};
            let mut v = Vec::new();
            for _ in 0..N {
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                let mut ch = [0u8; 4096];
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let _ = s.read(&mut ch).unwrap();
                s.write_all(&[0]).unwrap();
                v.push(s);
            }
            v
        });
        let mut tasks = Vec::new();
        for _ in 0..N {
            let inc = tokio::time::timeout(STEP, l.accept_incoming()).await.unwrap().unwrap();
            tasks.push(tokio::spawn(inc.handshake()));
        }
        // Let every handshake read its byte.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib();
        let per = (after.saturating_sub(before)) * 1024 / N as u64;
        println!("RSS {before} KiB -> {after} KiB: {per} bytes per handshaking connection");
        let socks = clients.join().unwrap();
        drop(socks);
        for t in tasks {
            t.abort();
        }
        assert!(per < 8 * 1024, "{per} bytes per unauthenticated connection (reactor: a few hundred)");
    });
}

/// 2,000 CPython connections at once (one Python process) against the async listener on one
/// current-thread runtime, each handshake and echo in its own task.
#[test]
fn two_thousand_cpython_clients_on_one_current_thread_runtime() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Inet).authkey("k").bind().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/many_clients.py");
        let child = Command::new("python3")
            .args([script, &l.address().to_string(), "6b", "2000", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let server = async {
            loop {
                let inc = l.accept_incoming().await.expect("accept");
                tokio::spawn(async move {
                    let mut c = inc.handshake().await?;
                    loop {
                        match c.recv_bytes().await {
                            Ok(m) => c.send_bytes(&m).await?,
                            Err(Error::Eof) => return Ok::<(), Error>(()),
                            Err(e) => return Err(e),
                        }
                    }
                });
            }
        };
        let waiter = tokio::task::spawn_blocking(move || {
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        });
        let out = tokio::select! {
            _ = server => unreachable!(),
            o = tokio::time::timeout(Duration::from_secs(240), waiter) => o.expect("bounded").unwrap(),
        };
        assert_eq!(out.trim(), "OK 6000");
    });
}

/// The realistic face of the EAGAIN finding: 1,000 async clients connecting at once to an async
/// Unix listener on the same runtime (backlog 128). Python's Client would wait for the accept;
/// here, count how many connects fail with WouldBlock.
#[test]
fn thousand_concurrent_async_unix_clients_to_an_async_listener() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let addr = l.address().to_string();
        let server = tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                match l.accept().await {
                    Ok(c) => kept.push(c),
                    Err(e) => panic!("accept: {e:?}"),
                }
            }
        });
        let mut clients = Vec::new();
        for _ in 0..1000 {
            let a = addr.clone();
            clients.push(tokio::spawn(async move { Client::new(a.as_str()).connect().await }));
        }
        let (mut ok, mut would_block, mut other) = (0, 0, 0);
        for c in clients {
            match tokio::time::timeout(STEP, c).await.expect("bounded").unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => {
                    other += 1;
                    println!("{e:?}");
                }
            }
        }
        server.abort();
        println!("{ok} connected, {would_block} failed with WouldBlock, {other} other errors");
        assert_eq!(ok, 1000, "{would_block} connects failed with EAGAIN");
    });
}

/// A peer that declares a 120 MiB message (under the 128 MiB default limit), sends 1 MiB of it
/// and stalls: the receiver must hold about what arrived, not what was declared.
#[test]
fn declared_but_unsent_large_message_does_not_allocate_its_length() {
    let _serial = exclusive();
    const STALL: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("!i", 120 << 20) + b"z" * (1 << 20))
print("SENT", flush=True)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let py = Py::script(STALL, &[&l.address().to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let before = rss_kib();
        let r = tokio::time::timeout(Duration::from_secs(3), conn.recv_bytes()).await;
        assert!(r.is_err(), "no whole message");
        assert_eq!(py.line(), "SENT");
        let after = rss_kib();
        println!("RSS {before} KiB -> {after} KiB after 1 MiB of a declared 120 MiB message");
        assert!(after - before < 8 * 1024, "{} KiB", after - before);
    });
}

/// A long header declaring 2^40 bytes: refused at once as too large.
#[test]
fn long_header_of_a_terabyte_is_refused() {
    let _serial = shared();
    const TB: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40) + b"q" * 100)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let _py = Py::script(TB, &[&l.address().to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), conn.recv_bytes())
            .await
            .expect("refused at once")
            .unwrap_err();
        println!("terabyte header: {e:?} / {e}");
        assert!(e.to_string().contains("bad message length"), "{e}");
    });
}

/// Stream/Sink between two async ends: the Sink's close flushes and the Stream ends cleanly;
/// a Sink feeding a peer that does not read is held back (bounded queue), not unbounded.
#[test]
fn stream_ends_cleanly_and_sink_applies_backpressure() {
    let _serial = shared();
    use futures_util::{SinkExt, StreamExt};
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let addr = l.address().to_string();
        let client = tokio::spawn(async move {
            let mut c = Client::new(addr.as_str()).connect().await.unwrap();
            for i in 0..3u8 {
                c.feed(vec![i; 10]).await.unwrap();
            }
            SinkExt::<Vec<u8>>::close(&mut c).await.unwrap();
            // Keep the read side open a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let mut s = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let got: Vec<_> = tokio::time::timeout(STEP, (&mut s).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|m| m.is_ok()));
        assert!(s.next().await.is_none(), "stream stays ended");
        client.await.unwrap();

        // Backpressure: the peer never reads.
        let addr = l.address().to_string();
        let _quiet = Client::new(addr.as_str()).connect().await.unwrap();
        let mut s = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let mut fed = 0usize;
        let msg = vec![1u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_millis(500), s.feed(msg.as_slice())).await {
                Ok(r) => {
                    r.unwrap();
                    fed += 1;
                }
                Err(_) => break,
            }
            assert!(fed < 200_000, "the sink took {fed} KiB without pushing back");
        }
        println!("sink pushed back after {fed} KiB queued/sent (queued now {})", s.queued_len());
    });
}

/// Every installed CPython (2.7, 3.6–3.13) as client of the async listener, right and wrong key,
/// and as listener for the async client, right and wrong key.
#[test]
fn every_cpython_both_directions_right_and_wrong_key() {
    let _serial = shared();
    const PYCLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
try:
    c = Client(sys.argv[1], authkey=sys.argv[2].encode())
    c.send_bytes(b"ping")
    print("GOT " + c.recv_bytes().decode())
except Exception as e:
    print("ERR " + type(e).__name__)
sys.stdout.flush()
"#;
    const PYLISTENER: &str = r#"
import sys, os, tempfile
from multiprocessing.connection import Listener
d = tempfile.mkdtemp()
l = Listener(os.path.join(d, "s"), authkey=sys.argv[1].encode())
print(l.address); sys.stdout.flush()
try:
    c = l.accept()
    c.send_bytes(c.recv_bytes())
    print("SERVED")
except Exception as e:
    print("ERR " + type(e).__name__)
sys.stdout.flush()
import time; time.sleep(2)
"#;
    let out = Command::new("pyenv").args(["versions", "--bare"]).output().unwrap();
    let versions: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|s| s.trim().to_string()).collect();
    let mut failures = Vec::new();
    for v in &versions {
        let exe = format!("/root/.pyenv/versions/{v}/bin/python");
        for (key, good) in [("k", true), ("wrong", false)] {
            // Python client -> async listener.
            rt().block_on(async {
                let mut l = Listener::builder().family(Family::Unix).authkey("k").bind().unwrap();
                let child = Command::new(&exe)
                    .args(["-c", PYCLIENT, &l.address().to_string(), key])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(20), async {
                    let mut c = l.accept().await?;
                    let m = c.recv_bytes().await?;
                    c.send_bytes(&m).await?;
                    Ok::<(), Error>(())
                })
                .await
                .expect("bounded");
                let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let ok = if good {
                    r.is_ok() && line == "GOT ping"
                } else {
                    matches!(r, Err(Error::Authentication(_))) && line == "ERR AuthenticationError"
                };
                println!("{v} client key={key}: server {r:?}, python {line}");
                if !ok {
                    failures.push(format!("{v} client key={key}: server {r:?}, python {line}"));
                }
            });
            // Async client -> Python listener.
            let mut child = Command::new(&exe).args(["-c", PYLISTENER, "k"]).stdout(Stdio::piped()).spawn().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let path = lines.next().unwrap().unwrap();
            let r = rt().block_on(async {
                tokio::time::timeout(Duration::from_secs(20), async {
                    let mut c = Client::new(path.as_str()).authkey(key).connect().await?;
                    c.send_bytes(b"pong").await?;
                    c.recv_bytes().await
                })
                .await
                .expect("bounded")
            });
            let line = lines.next().map(|l| l.unwrap()).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            let ok = if good {
                matches!(&r, Ok(m) if m == b"pong") && line == "SERVED"
            } else {
                matches!(r, Err(Error::Authentication(_))) && line == "ERR AuthenticationError"
            };
            println!("{v} listener key={key}: client {r:?}, python {line}");
            if !ok {
                failures.push(format!("{v} listener key={key}: client {r:?}, python {line}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// For comparison (passes): the blocking face's client waits for a full backlog, as Python does.
#[test]
fn blocking_unix_client_waits_for_a_full_backlog() {
    let _serial = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    sock.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    sock.listen(1).unwrap();
    let listener: std::os::unix::net::UnixListener = std::os::fd::OwnedFd::from(sock).into();
    let acceptor = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let mut kept = Vec::new();
        for _ in 0..8 {
            kept.push(listener.accept().unwrap().0);
        }
        thread::sleep(Duration::from_secs(1));
    });
    let addr = path.to_str().unwrap().to_string();
    let mut conns = Vec::new();
    for i in 0..8 {
        match mpconn::Client::new(addr.as_str()).connect() {
            Ok(c) => conns.push(c),
            Err(e) => panic!("blocking connect {i}: {e:?}"),
        }
    }
    acceptor.join().unwrap();
}

/// Without a key there is no handshake: a handshake timeout must not end a keyless connection
/// whose peer is quiet for longer (client side and listener side).
#[test]
fn keyless_connections_have_no_handshake_deadline() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .handshake_timeout(Some(Duration::from_millis(300)))
            .bind()
            .unwrap();
        let addr = l.address().to_string();
        let client = tokio::spawn(async move {
            let mut c =
                Client::new(addr.as_str()).handshake_timeout(Some(Duration::from_millis(300))).connect().await.unwrap();
            // Quiet for 1 s, then talk.
            let first = c.recv_bytes().await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            c.send_bytes(b"late").await.unwrap();
            first
        });
        let mut s = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        s.send_bytes(b"late too").await.unwrap();
        let got = tokio::time::timeout(STEP, s.recv_bytes()).await.unwrap();
        let first = client.await.unwrap();
        assert_eq!(first.expect("client's first receive after 1 s"), b"late too");
        assert_eq!(got.expect("listener's receive after 2 s"), b"late");
    });
}

/// The `processing` dialect (CPython 2.7 with the `processing` package) and Red Hat's patched
/// handshake (CPython 3.11 patched by peer.py --rhel), both directions, on the async face.
#[test]
fn processing_and_rhel_dialects_both_directions() {
    let _serial = shared();
    use mpconn::AuthKey;
    use mpconn::wire::handshake::Dialect;
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/peer.py");
    let key_hex = AuthKey::from("dk").to_hex();
    let cases = [
        ("/root/.pyenv/versions/2.7.18/bin/python", "--processing", Dialect::Processing, Dialect::Cpython),
        ("/root/.pyenv/versions/3.11.7/bin/python", "--rhel", Dialect::Cpython, Dialect::CpythonLegacySha256),
    ];
    let mut failures = Vec::new();
    for (exe, flag, listener_dialect, client_dialect) in cases {
        // Python client -> async listener.
        let r: Result<Vec<u8>, Error> = rt().block_on(async {
            let mut l =
                Listener::builder().family(Family::Unix).authkey("dk").dialect(listener_dialect).bind().unwrap();
            let py = spawn_py(exe, &[peer, "connect", &l.address().to_string(), &key_hex, flag]);
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                let mut c = l.accept().await?;
                c.send_bytes(b"echo:hi").await?;
                c.recv_bytes().await
            })
            .await
            .expect("bounded");
            drop(py);
            r
        });
        println!("{flag} python client -> async listener: {r:?}");
        if !matches!(&r, Ok(m) if m == b"hi") {
            failures.push(format!("{flag} client: {r:?}"));
        }
        // Async client -> Python listener.
        let dir = tempfile::tempdir().unwrap();
        let address = dir.path().join("p.sock").to_str().unwrap().to_string();
        let py = spawn_py(exe, &[peer, "listen", &address, &key_hex, flag]);
        let bound = py.line();
        let bound = bound.strip_prefix("READY").unwrap_or(&bound).trim().to_string();
        let r = rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                let mut c = Client::new(bound.as_str()).authkey("dk").dialect(client_dialect).connect().await?;
                c.send_bytes(b"echo:ho").await?;
                c.recv_bytes().await
            })
            .await
            .expect("bounded")
        });
        println!("{flag} async client -> python listener: {r:?}");
        if !matches!(&r, Ok(m) if m == b"ho") {
            failures.push(format!("{flag} listener: {r:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn spawn_py(exe: &str, args: &[&str]) -> Py {
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    Py { child, lines }
}

#[test]
fn cancelled_small_sends_arrive_once_in_order() {
    let _serial = shared();
    const LATE_READER: &str = r#"
import sys, time
from multiprocessing.connection import Client
c = Client(sys.argv[1])
time.sleep(1.5)
n, last = 0, -1
while True:
    try:
        m = c.recv_bytes()
    except EOFError:
        break
    assert int(m[:8]) > last, (m[:8], last)
    assert len(m) == 1000 + (int(m[:8]) * 37) % 60000, (m[:8], len(m))
    last = int(m[:8])
    n += 1
print("GOT", n, flush=True)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let py = Py::script(LATE_READER, &[&l.address().to_string()]);
        let mut c = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let mut seq = 0usize;
        let (mut cancelled, mut completed) = (0, 0);
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let mut m = format!("{seq:08}").into_bytes();
            m.resize(1000 + (seq * 37) % 60_000, b'.');
            match tokio::time::timeout(Duration::from_millis(5), c.send_bytes(&m)).await {
                Ok(r) => {
                    r.unwrap();
                    completed += 1;
                }
                Err(_) => cancelled += 1,
            }
            seq += 1;
        }
        tokio::time::timeout(STEP, c.flush()).await.unwrap().unwrap();
        c.close().await.unwrap();
        // A cancelled send is either not queued (cancelled while earlier ones drained) or queued
        // whole and delivered: every completed one arrives, nothing twice, in order, whole.
        let got: usize = py.line().strip_prefix("GOT ").and_then(|n| n.parse().ok()).expect("GOT n");
        assert!(
            got >= completed && got <= seq,
            "{got} arrived of {seq} sends: {completed} completed, {cancelled} cancelled"
        );
        println!("{seq} sends: {completed} completed, {cancelled} cancelled; {got} arrived once, in order, whole");
    });
}

/// A peer that never reads, and small sends each bounded by a timeout (a common way to not
/// block on a slow peer). Found by the review: every cancelled send stayed queued, so the queue
/// grew without limit (124 MiB after 2,000). Now a send first waits for what earlier ones left,
/// so at most one message stays queued.
#[test]
fn timed_out_small_sends_to_a_non_reader_leave_at_most_one_message_queued() {
    let _serial = exclusive();
    const NO_READER: &str = r#"
import sys, time
from multiprocessing.connection import Client
c = Client(sys.argv[1])
time.sleep(60)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let _py = Py::script(NO_READER, &[&l.address().to_string()]);
        let mut c = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let before = rss_kib();
        let msg = vec![b'm'; 64 * 1024];
        let mut errors = 0;
        for _ in 0..2000 {
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(1), c.send_bytes(&msg)).await {
                errors += 1;
            }
        }
        let after = rss_kib();
        println!(
            "2000 timed-out 64 KiB sends: queued {} MiB, RSS {} -> {} MiB, {errors} errors",
            c.queued_len() >> 20,
            before >> 10,
            after >> 10
        );
        assert!(c.queued_len() <= (64 << 10) + 16, "{} KiB queued for a peer that never reads", c.queued_len() >> 10);
    });
}
