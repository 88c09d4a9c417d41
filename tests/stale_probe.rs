//! Binding a Unix path whose live listener never accepts and has a full backlog must
//! fail promptly (the path is in use), not hang in the stale-socket probe's `connect`.
//!
//! The listener is ours (a socket2 listener with backlog 0 that never accepts), filled with
//! non-blocking connects until the kernel refuses more. The bind runs on a thread; the test
//! fails if it has not returned within `LIMIT`.
#![cfg(unix)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use mpconn::Listener;
use mpconn::reactor::options::ListenOptions;
use mpconn::reactor::{ConnId, Context, Handler, Reactor};

/// Bound on the bind under test: a generous probe timeout plus a margin for a loaded machine.
const LIMIT: Duration = Duration::from_secs(15);

/// A live listener that never accepts, whose backlog is full. Returns it and the connections
/// that fill it (both must stay open for the test).
fn full_listener(path: &Path) -> (Socket, Vec<Socket>) {
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::unix(path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..64 {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&SockAddr::unix(path).unwrap()) {
            Ok(()) => fillers.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // EAGAIN: the backlog is full.
                assert!(!fillers.is_empty(), "the backlog took no connection at all");
                // A blocking connect now would wait: prove the listener is in that state.
                let probe = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
                probe.set_nonblocking(true).unwrap();
                let again = probe.connect(&SockAddr::unix(path).unwrap());
                assert!(matches!(&again, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{again:?}");
                return (listener, fillers);
            }
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    panic!("the backlog of a listen(0) socket took 64 connections without refusing one");
}

/// Runs `bind` on a thread; its result and how long it took, or a failure after `LIMIT`.
fn bounded<T: Send + 'static>(what: &str, bind: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    // The thread is detached: if the bind hangs the test fails and the process ends.
    thread::spawn(move || {
        let r = bind();
        let _ = tx.send(r);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(r) => (r, start.elapsed()),
        Err(_) => {
            panic!("{what}: binding the busy path had not returned after {LIMIT:?} (the stale-socket probe hangs)")
        }
    }
}

#[test]
fn blocking_bind_on_a_live_listener_with_a_full_backlog_returns_an_error_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let (_listener, _fillers) = full_listener(&path);
    let inode = std::fs::metadata(&path).unwrap().ino();
    let p = path.clone();
    let (r, took) = bounded("Listener::bind", move || Listener::builder().address(mpconn::Address::unix(p)).bind());
    println!("blocking bind on a busy path: {:?} after {took:?}", r.as_ref().map(|_| ()));
    let e = r.expect_err("binding a path a live listener holds must fail");
    assert!(e.to_string().contains("in use") || e.to_string().to_lowercase().contains("address"), "{e}");
    // The live listener's socket file is still there, not replaced. (No blocking connect to
    // prove it: the backlog stays full until the listener accepts.)
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "the live listener's path was taken over");
}

struct Nothing;
impl Handler for Nothing {
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
}

#[test]
fn reactor_listen_on_a_live_listener_with_a_full_backlog_returns_an_error_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let (_listener, _fillers) = full_listener(&path);
    let inode = std::fs::metadata(&path).unwrap().ino();
    let p = path.clone();
    let (r, took) = bounded("Reactor::listen", move || {
        let mut reactor = Reactor::new(Nothing).unwrap();
        reactor.listen(mpconn::Address::unix(p), ListenOptions::new()).map(|_| ())
    });
    println!("reactor listen on a busy path: {r:?} after {took:?}");
    assert!(r.is_err(), "listening on a path a live listener holds must fail");
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "the live listener's path was taken over");
}
