//! The tokio face when operations are abandoned: receives cancelled by 1 ms timeouts or lost
//! `select!` races (random sizes to 16 MiB sent slowly in random slices: every message exactly
//! once, intact, in order), small sends cancelled by timeouts (each message once, whole, in
//! order; at most one left queued for a peer that never reads), and the `Stream`/`Sink` ends
//! (a clean end; a bounded queue against a peer that does not read). Every wait is bounded;
//! every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use common::tokio_face::*;

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

/// Small sends cancelled by timeouts while a late reader holds back: each message arrives once,
/// whole and in order (a dropped send leaves nothing or the whole frame queued, never a torn
/// one).
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
/// block on a slow peer): a send first waits for what earlier ones left, so at most one message
/// stays queued (were every cancelled send kept, the queue would grow without limit: 124 MiB
/// after 2,000).
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
