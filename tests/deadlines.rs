//! Issue 11: the reactor's deadline structure stays flat however many reads a connection does.
//!
//! A peer writes a stream of 5-byte frames (4-byte length + 1 body byte) in 3-byte writes, so
//! almost no read ends on a message boundary: today every read that completes a message and
//! leaves a partial one pushes a new partial-message deadline, and the structure grows with the
//! read rate. The reactor runs on the test thread (`run_once`), so `pending_deadlines()` is
//! sampled after every turn. Every loop is bounded in count and in time.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use mpconn::Address;
use mpconn::reactor::options::{CloseReason, ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor};

/// Messages each writer sends (each 5 bytes on the wire, written 3 bytes at a time).
const MESSAGES: usize = 100_000;
/// Kinds of per-connection deadline the reactor keeps (handshake, idle, partial message,
/// close flush, buffer release) plus the listener's accept back-off: a table of fixed size per
/// connection or listener holds at most this many each.
const KINDS: usize = 6;
/// No run may take longer than this.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Count {
    messages: usize,
    bad: usize,
    per_conn: HashMap<ConnId, usize>,
    /// Connections closed before all their messages arrived.
    closed_early: Vec<String>,
}

impl Handler for Count {
    fn on_message(&mut self, _: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        self.messages += 1;
        *self.per_conn.entry(conn).or_default() += 1;
        if message.len() != 1 {
            self.bad += 1;
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let got = self.per_conn.get(&conn).copied().unwrap_or(0);
        // The writer closes once done: a close is fine once every message of it is in.
        if got != MESSAGES {
            self.closed_early.push(format!("{conn} after {got} messages: {reason:?}"));
        }
    }
}

/// The whole stream of `n` frames, each `len=1` + one byte.
fn stream(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 5);
    for i in 0..n {
        v.extend_from_slice(&1u32.to_be_bytes());
        v.push(i as u8);
    }
    v
}

/// Writes `data` 3 bytes per `write` call.
fn dribble(mut s: UnixStream, data: &[u8]) {
    for chunk in data.chunks(3) {
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

/// Runs the reactor until `want` messages arrived (or `LIMIT`); returns the largest
/// `pending_deadlines()` seen and the number of turns.
fn drive(reactor: &mut Reactor<Count>, want: usize) -> (usize, usize) {
    let start = Instant::now();
    let mut max = 0;
    let mut turns = 0;
    while reactor.handler().messages < want && start.elapsed() < LIMIT {
        reactor.run_once(Some(Duration::from_millis(50))).unwrap();
        turns += 1;
        max = max.max(reactor.pending_deadlines());
        assert!(reactor.handler().closed_early.is_empty(), "closed: {:?}", reactor.handler().closed_early);
    }
    (max, turns)
}

#[test]
fn deadlines_stay_flat_over_a_long_misaligned_stream_to_accepted_connections() {
    const CONNS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let mut reactor = Reactor::new(Count::default()).unwrap();
    reactor.listen(Address::unix(&path), ListenOptions::new()).unwrap();
    let data = stream(MESSAGES);
    let writers: Vec<_> = (0..CONNS)
        .map(|_| {
            let s = UnixStream::connect(&path).unwrap();
            let data = data.clone();
            thread::spawn(move || dribble(s, &data))
        })
        .collect();
    let (max, turns) = drive(&mut reactor, CONNS * MESSAGES);
    for w in writers {
        w.join().unwrap();
    }
    let got = reactor.handler().messages;
    println!(
        "accepted side: {got} messages in {turns} turns; pending_deadlines max {max} (bound {})",
        (CONNS + 1) * KINDS
    );
    assert_eq!(got, CONNS * MESSAGES, "every message arrives within {LIMIT:?}");
    assert_eq!(reactor.handler().bad, 0);
    assert!(
        max <= (CONNS + 1) * KINDS,
        "pending deadlines reached {max} for {CONNS} connections and one listener: the structure grows with the read rate"
    );
}

#[test]
fn deadlines_stay_flat_over_a_long_misaligned_stream_to_a_connecting_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let data = stream(MESSAGES);
    let writer = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        dribble(s, &data);
    });
    let mut reactor = Reactor::new(Count::default()).unwrap();
    reactor.connect(Address::unix(&path), ConnectionOptions::new()).unwrap();
    let (max, turns) = drive(&mut reactor, MESSAGES);
    writer.join().unwrap();
    let got = reactor.handler().messages;
    println!("connecting side: {got} messages in {turns} turns; pending_deadlines max {max} (bound {KINDS})");
    assert_eq!(got, MESSAGES, "every message arrives within {LIMIT:?}");
    assert!(max <= KINDS, "pending deadlines reached {max} for one connection");
}

#[test]
fn deadlines_stay_flat_with_a_key_and_an_idle_timeout() {
    // The handshake and idle deadlines too: one authenticated connection with an idle timeout,
    // the same misaligned stream after the handshake.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.sock");
    let mut reactor = Reactor::new(Count::default()).unwrap();
    let opts = ConnectionOptions::new().authkey("k").idle_timeout(Some(Duration::from_secs(30)));
    reactor.listen(Address::unix(&path), ListenOptions::new().connection(opts)).unwrap();
    let p = path.clone();
    let data = stream(MESSAGES);
    let writer = thread::spawn(move || {
        let conn = mpconn::Client::new(Address::unix(p)).authkey("k").connect().unwrap();
        // The handshake is done; the rest goes through a plain duplicate of the socket.
        let fd = conn.fileno().unwrap();
        // SAFETY: `fd` is open and owned by `conn`, which outlives the borrow.
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().unwrap();
        dribble(UnixStream::from(owned), &data);
        drop(conn);
    });
    let (max, turns) = drive(&mut reactor, MESSAGES);
    writer.join().unwrap();
    let got = reactor.handler().messages;
    println!("keyed, idle timeout: {got} messages in {turns} turns; pending_deadlines max {max} (bound {})", 2 * KINDS);
    assert_eq!(got, MESSAGES);
    assert!(max <= 2 * KINDS, "pending deadlines reached {max} for one connection and one listener");
}
