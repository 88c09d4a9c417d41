//! Peers that do not keep up with their own output, against a live reactor: a peer that never
//! reads its echoes is auto-paused at the high-water mark and then closed, by the idle timeout
//! when one is set and by the write-stall timeout otherwise (silence while output waits on the
//! peer is the peer's), while a slow reader that takes some of its output now and then keeps its
//! connection and gets every byte. Each test's doc says what the docs promise.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::reactor::{Ev, spawn_reactor, stop};
use common::servers::{framed, split_tcp};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};

/// Serves `conn_opts` on a reactor and connects a peer that writes 64 KiB messages for up to
/// 3 s (until the server stops reading it and TCP throttles it) and never reads; then waits up
/// to 5 s for the server to close it. Returns how many messages it wrote and the close reason.
fn never_read_until_closed(conn_opts: ConnectionOptions) -> (u32, Option<String>) {
    let (addr, handle, rx, t) = spawn_reactor("127.0.0.1:0", ListenOptions::new().connection(conn_opts), true);
    let addr = common::servers::address_text(&addr);
    let (mut w, _r) = split_tcp(&addr, Some("k"));
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if w.write_all(&framed(1, i, 64 * 1024)).is_err() {
            break;
        }
        i += 1;
    }
    // Now completely quiet in both directions: wait well past the deadlines under test.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = None;
    while Instant::now() < deadline {
        if let Ok(Ev::Close(_, reason)) = rx.recv_timeout(Duration::from_millis(100)) {
            closed = Some(reason);
            break;
        }
    }
    stop(handle, t);
    (i, closed)
}

/// A peer that never reads its echoes gets its connection auto-paused at the high-water mark.
/// Silence while output waits on the peer is the peer's: the idle deadline (500 ms here) closes
/// it. (Were the idle deadline suspended while paused, the peer would pin its connection and
/// full output queue, 16 MiB by default, for ever: 20 such peers held 337 MB of server RSS.)
#[test]
fn a_peer_that_never_reads_is_closed_by_the_idle_timeout() {
    let conn_opts = ConnectionOptions::new()
        .authkey("k")
        .high_water_mark(64 * 1024)
        .idle_timeout(Some(Duration::from_millis(500)))
        .write_stall_timeout(None);
    let (i, closed) = never_read_until_closed(conn_opts);
    assert!(
        closed.as_deref().is_some_and(|r| r.contains("IdleTimeout")),
        "a peer that wrote {i} messages, then neither read nor wrote for 5 s, still holds its connection \
         and its full output queue although idle_timeout is 500 ms (closed: {closed:?})"
    );
}

/// The same peer with no idle timeout at all: the write-stall deadline (default 60 s, 500 ms
/// here) closes it, and says why.
#[test]
fn a_peer_that_never_reads_is_closed_by_the_write_stall_timeout() {
    let conn_opts = ConnectionOptions::new()
        .authkey("k")
        .high_water_mark(64 * 1024)
        .write_stall_timeout(Some(Duration::from_millis(500)));
    let (i, closed) = never_read_until_closed(conn_opts);
    assert!(
        closed.as_deref().is_some_and(|r| r.contains("WriteStallTimeout")),
        "a peer that wrote {i} messages and never read was not closed by a 500 ms write-stall timeout \
         within 5 s (closed: {closed:?})"
    );
}

/// Serves `conn_opts` over a Unix socket (small kernel buffers, so the server's writes do
/// block) to a peer that writes 2 MiB of 64 KiB messages and takes 64 KiB of its echoes every
/// `pace`; returns the echoes it got (at most 20 s) and the server's close reason, if any.
fn slow_reader(conn_opts: ConnectionOptions, pace: Duration) -> (Vec<u8>, Vec<u8>, Option<String>) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow-reader");
    let (addr, handle, rx, t) =
        spawn_reactor(path.to_str().unwrap().to_string(), ListenOptions::new().connection(conn_opts), true);
    let addr = common::servers::address_text(&addr);
    let (mut w, mut r) = common::servers::split_unix(&addr, Some("k"));
    const N: u32 = 32;
    const SIZE: usize = 64 * 1024;
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            if w.write_all(&framed(2, i, SIZE)).is_err() {
                break;
            }
        }
        w
    });
    let mut expected = Vec::new();
    for i in 0..N {
        expected.extend_from_slice(&framed(2, i, SIZE));
    }
    let mut got = Vec::with_capacity(expected.len());
    let mut chunk = vec![0u8; 64 * 1024];
    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    while got.len() < expected.len() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(pace);
        let want = chunk.len().min(expected.len() - got.len());
        match r.read(&mut chunk[..want]) {
            Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    // The server's close, if any, before this side's close adds one.
    let close = rx.try_iter().find_map(|e| match e {
        Ev::Close(_, reason) => Some(reason),
        _ => None,
    });
    drop(r);
    let _w = writer.join().unwrap();
    stop(handle, t);
    (expected, got, close)
}

fn assert_every_echo(expected: &[u8], got: &[u8], close: Option<String>) {
    assert_eq!(
        close,
        None,
        "the slow reader was closed after {} of {} bytes, though it kept reading",
        got.len(),
        expected.len()
    );
    assert_eq!(got.len(), expected.len(), "echoes missing after 20 s");
    assert!(got == expected, "echoes corrupted");
}

/// A slow reader is not a stalled one: a peer that takes 64 KiB of its 2 MiB of echoes every
/// 100 ms keeps its connection under a 1 s write-stall timeout for the 3 s and more it takes,
/// since every bit of progress restarts the clock, and gets every byte back intact.
#[test]
fn a_slow_reader_is_not_closed_by_the_write_stall_timeout() {
    let conn_opts = ConnectionOptions::new()
        .authkey("k")
        .high_water_mark(256 * 1024)
        .write_stall_timeout(Some(Duration::from_secs(1)));
    let (expected, got, close) = slow_reader(conn_opts, Duration::from_millis(100));
    assert_every_echo(&expected, &got, close);
}

/// The same reader under deadlines shorter than the gaps between the kernel's reports of room
/// to write: Linux wakes a Unix-socket writer only once its buffer is three-quarters empty,
/// about 300 ms of this reader, so the reactor hears of the reader's progress less often than
/// a 150 ms idle or write-stall limit. Before closing for the peer's silence while output
/// waits, the session has the reactor try one write: a peer that took bytes meanwhile is
/// reading, and keeps its connection.
#[test]
fn a_slow_reader_is_not_closed_by_a_deadline_shorter_than_its_kernel_wake_ups() {
    for (what, conn_opts) in [
        ("idle", ConnectionOptions::new().idle_timeout(Some(Duration::from_millis(150))).write_stall_timeout(None)),
        ("write stall", ConnectionOptions::new().write_stall_timeout(Some(Duration::from_millis(150)))),
    ] {
        let conn_opts = conn_opts.authkey("k").high_water_mark(256 * 1024);
        let (expected, got, close) = slow_reader(conn_opts, Duration::from_millis(40));
        eprintln!("{what}: {} of {} bytes, close {close:?}", got.len(), expected.len());
        assert_every_echo(&expected, &got, close);
    }
}
