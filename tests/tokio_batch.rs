//! The tokio face's batch receive (`Connection::recv_batch`): every message of a CPython 3.11
//! `multiprocessing.connection.Client` seen once, in order, whole (small ones pipelined by the
//! thousand, messages split across reads, messages larger than the read block), many messages
//! per batch once they are buffered, and the peer's end reported after the last batch;
//! cancellation (a poll that saw messages returns them, a dropped batch loses none, against a
//! slow random sender to 16 MiB and under 1 ms timeouts); fairness (a batch of a fast streamer
//! gives the runtime a turn within the fair slice). Every wait is bounded; every Python process
//! is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::tokio_face::*;
use futures_util::FutureExt;

/// The connection's fair slice (`FAIR_SLICE` in src/tokio/connection.rs).
const FAIR_SLICE: usize = 256 * 1024;

const KEY: &str = "batch key";

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step within the bound")
}

/// The sizes the CPython sender uses, message `i`: mostly small (0-199 bytes), every 997th one
/// larger than the 64 KiB read block, one of 1 MiB.
fn size(i: u64) -> usize {
    match i {
        4_000 => 1 << 20,
        i if i % 997 == 500 => 65_536 + (i as usize % 3_000),
        i => (i * 37 % 200) as usize,
    }
}

/// CPython 3.11's `Client.send_bytes`: `sys.argv[2]` messages buffered before it says
/// `BUFFERED` and waits for a line on stdin, then the rest pipelined, then it closes. Sizes and
/// bodies as `size` and `body`.
const CPYTHON_SENDER: &str = r#"
import struct, sys
from multiprocessing.connection import Client
def size(i):
    if i == 4000: return 1 << 20
    if i % 997 == 500: return 65536 + i % 3000
    return i * 37 % 200
def body(i, n):
    base = bytes(((k * 31 + i) % 251) for k in range(251))
    return (struct.pack("!QQ", i, n) + base * (n // 251 + 1))[:n]
c = Client(sys.argv[1], authkey=sys.argv[4].encode())
first, total = int(sys.argv[2]), int(sys.argv[3])
for i in range(first):
    c.send_bytes(body(i, size(i)))
print("BUFFERED", flush=True)
sys.stdin.readline()
for i in range(first, total):
    c.send_bytes(body(i, size(i)))
print("SENT", flush=True)
c.close()
"#;

/// Every message of a CPython sender once, in order, whole: the first 100 small ones (about
/// 10 KB, in the socket before the first receive) come in one batch of many; then 20,000 more
/// pipelined with 20 larger than the read block and one of 1 MiB among them, so messages are
/// split across reads; then the peer's close, after the last message, as [`Error::Eof`].
#[test]
fn every_message_of_a_cpython_sender_once_in_order_many_per_batch() {
    let _serial = shared();
    rt().block_on(async {
        let (first, total) = (100u64, 20_100u64);
        let mut l = Listener::builder().family(Family::Unix).authkey(KEY).bind().unwrap();
        let mut py = Command::new("python3")
            .args(["-c", CPYTHON_SENDER, &l.address().to_string(), &first.to_string(), &total.to_string(), KEY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut stdin = py.stdin.take().expect("stdin");
        let stdout = py.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut conn = bounded(l.accept()).await.expect("accept");
        // Blocks the runtime, which has nothing else to do: Python writes into the socket.
        assert_eq!(lines.recv_timeout(STEP).expect("python's line"), "BUFFERED");

        let mut next = 0u64;
        let mut check = |m: &[u8]| {
            let n = size(next);
            assert_eq!(m.len(), n, "message {next} length");
            assert!(m == body(next, n).as_slice(), "message {next} intact");
            next += 1;
        };
        let in_first = bounded(conn.recv_batch(&mut check)).await.expect("the first batch");
        println!("first batch: {in_first} of the {first} messages buffered");
        assert!(in_first > 1, "the buffered messages came one per batch");
        use std::io::Write;
        writeln!(stdin, "go").expect("to python");
        let mut batches = 1u64;
        let end = loop {
            match bounded(conn.recv_batch(&mut check)).await {
                Ok(n) => {
                    assert!(n > 0, "a batch of none");
                    batches += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(end, Error::Eof), "{end:?}");
        assert_eq!(next, total, "every message");
        println!("{total} messages in {batches} batches");
        let e = bounded(conn.recv_batch(|_| panic!("a message after the end"))).await.unwrap_err();
        assert!(matches!(e, Error::Closed(_) | Error::Eof), "{e:?}");
        let _ = py.kill();
        let _ = py.wait();
    });
}

/// The random slow sender (sizes 1 B to 16 MiB, frames written in random slices with random
/// pauses) read by batches under 1 ms timeouts, and by single polls dropped at once
/// (`now_or_never`): a poll either sees nothing or returns what it saw; every message is seen
/// exactly once, intact, in order, then end of file.
#[test]
fn dropped_batches_lose_nothing_against_a_slow_random_sender() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let count = 40;
        let py = Py::script(RANDOM_SLOW_SENDER, &[&l.address().to_string(), "23", &count.to_string()]);
        let mut conn = bounded(l.accept()).await.unwrap();
        let sizes: Vec<usize> =
            py.line().strip_prefix("SIZES ").unwrap().split(' ').map(|s| s.parse().unwrap()).collect();
        let mut got = 0usize;
        let (mut timed_out, mut dropped_polls) = (0u64, 0u64);
        let until = Instant::now() + Duration::from_secs(240);
        let mut round = 0u64;
        while got < count {
            assert!(Instant::now() < until, "bounded: {got} of {count}");
            round += 1;
            let mut seen = 0usize;
            let mut check = |m: &[u8]| {
                assert_eq!(m.len(), sizes[got], "message {got} length");
                assert!(m == body(got as u64, sizes[got]), "message {got} intact");
                got += 1;
                seen += 1;
            };
            if round.is_multiple_of(2) {
                // One poll, then the future is dropped.
                match conn.recv_batch(&mut check).now_or_never() {
                    None => {
                        assert_eq!(seen, 0, "a pending batch saw messages");
                        dropped_polls += 1;
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    Some(r) => assert_eq!(r.expect("a batch"), seen, "the batch returns what it saw"),
                }
            } else {
                match tokio::time::timeout(Duration::from_millis(1), conn.recv_batch(&mut check)).await {
                    Err(_) => {
                        assert_eq!(seen, 0, "a timed-out batch saw messages");
                        timed_out += 1;
                    }
                    Ok(r) => assert_eq!(r.expect("a batch"), seen, "the batch returns what it saw"),
                }
            }
        }
        let e = bounded(conn.recv_batch(|_| panic!("no more messages"))).await.unwrap_err();
        assert!(matches!(e, Error::Eof), "{e:?}");
        println!("{count} messages through {timed_out} timeouts and {dropped_polls} dropped polls");
    });
}

/// Fairness: a peer streams 24 MiB of 64-byte messages as fast as it can while a ticker task
/// of the same current-thread runtime wants every turn. The receiving task never hands out more
/// than the fair slice (plus one read block and a tail) in one poll by the runtime: a batch
/// returns within the slice and the next receive gives the runtime a turn before reading on.
#[test]
fn a_batch_of_a_fast_streamer_yields_within_the_fair_slice() {
    const STREAMER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
chunk = (struct.pack("!i", 64) + bytes(range(64))) * 16384
for _ in range(24):
    s.sendall(chunk)
s.close()
"#;
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let _py = Py::script(STREAMER, &[&l.address().to_string()]);
        let mut conn = bounded(l.accept()).await.unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::task::yield_now().await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The runtime's polls of the receiving task, counted around its whole loop.
        let polls = std::cell::Cell::new(0u64);
        let expected: Vec<u8> = (0..64).collect();
        let mut receive = std::pin::pin!(async {
            let (mut messages, mut in_poll, mut worst, mut poll_seen) = (0u64, 0usize, 0usize, 0u64);
            let end = loop {
                let r = bounded(conn.recv_batch(|m| {
                    assert_eq!(m, expected.as_slice());
                    messages += 1;
                    if polls.get() != poll_seen {
                        poll_seen = polls.get();
                        in_poll = 0;
                    }
                    in_poll += 4 + m.len();
                    worst = worst.max(in_poll);
                }))
                .await;
                if let Err(e) = r {
                    break e;
                }
            };
            (end, messages, worst)
        });
        let (end, messages, worst) = std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            receive.as_mut().poll(cx)
        })
        .await;
        ticker.abort();
        assert!(matches!(end, Error::Eof), "{end:?}");
        assert_eq!(messages, 24 * 16384);
        println!(
            "{messages} messages in {} polls of the receiving task ({} turns of the other); at most {worst} bytes in one poll",
            polls.get(),
            ticks.load(Ordering::Relaxed)
        );
        assert!(worst <= FAIR_SLICE + 2 * 65536, "{worst} bytes handed out in one poll of the task");
        assert!(ticks.load(Ordering::Relaxed) > 0, "the other task never ran");
    });
}
