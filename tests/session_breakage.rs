//! Breakage found by an outside review (branch break-session). Each test states what the docs
//! promise and fails while the library does otherwise.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

mod attack;
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use attack::{framed, split_tcp};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use support::{Ev, spawn_reactor, stop};

/// A peer that never reads its echoes gets its connection auto-paused at the high-water mark.
/// From then on the session's idle deadline (set here to 500 ms) is suspended for as long as
/// the pause lasts, and nothing else bounds how long the connection and its full output queue
/// (16 MiB by default) are held: the peer pins them for ever. Measured live against
/// `mpconn listen --echo`: 20 such peers hold 337 MB of server RSS indefinitely.
/// Expected: some deadline (idle, or a write-stall deadline) closes a connection that has made
/// no progress in either direction.
#[test]
#[ignore = "known, open: while reading is paused the idle and partial-message deadlines wait, and there is no write-stall deadline (SECURITY.md says so)"]
fn a_peer_that_never_reads_is_never_closed_even_with_an_idle_timeout() {
    let conn_opts =
        ConnectionOptions::new().authkey("k").high_water_mark(64 * 1024).idle_timeout(Some(Duration::from_millis(500)));
    let (addr, handle, rx, t) = spawn_reactor("127.0.0.1:0", ListenOptions::new().connection(conn_opts), true);
    let addr = attack::address_text(&addr);
    let (mut w, _r) = split_tcp(&addr, Some("k"));
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    // Write until the server stops reading us (TCP throttles the writer), never read.
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if w.write_all(&framed(1, i, 64 * 1024)).is_err() {
            break;
        }
        i += 1;
    }
    // Now completely quiet in both directions: wait well past the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = None;
    while Instant::now() < deadline {
        if let Ok(Ev::Close(_, reason)) = rx.recv_timeout(Duration::from_millis(100)) {
            closed = Some(reason);
            break;
        }
    }
    stop(handle, t);
    assert!(
        closed.is_some(),
        "a peer that wrote {i} messages, then neither read nor wrote for 5 s, still holds its connection \
         and its full output queue although idle_timeout is 500 ms"
    );
}
