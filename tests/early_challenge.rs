//! A connecting side's challenge travels with its answer to the listener's (two round trips
//! instead of three), on every face, and a real CPython listener reads it in turn; with
//! `early_challenge(false)` the client waits for `#WELCOME#`, as Python's own `Client` does.
//!
//! The listener is CPython 3.11's `Connection` driven step by step with the library's own
//! `answer_challenge`: after checking the client's answer and *before* sending `#WELCOME#`, it
//! looks whether the client's challenge is already readable (`Connection.poll`). Early: it is
//! (the wait ends as soon as it arrives). Late: nothing can arrive before `#WELCOME#`, so a
//! 300 ms look finds nothing. Then the handshake completes and one message is echoed, so the
//! early challenge also proves readable in order by a listener that did not expect it.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::reactor::{Ev, WAIT, next_event, spawn_client_reactor, stop};
use mpconn::reactor::options::ConnectionOptions;
use mpconn::{Address, Client};

const KEY: &str = "early-key";

/// A CPython listener that reports whether the client's challenge came before `#WELCOME#`.
const LISTENER: &str = r##"
import sys, os, hmac, socket
from multiprocessing.connection import Connection, answer_challenge
key = sys.argv[1].encode()
look = float(sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print("ADDR %s:%d" % s.getsockname()); sys.stdout.flush()
a, _ = s.accept()
c = Connection(a.detach())
message = b"{sha256}" + os.urandom(40)
c.send_bytes(b"#CHALLENGE#" + message)
response = c.recv_bytes(256)
if response != b"{sha256}" + hmac.new(key, message, "sha256").digest():
    c.send_bytes(b"#FAILURE#")
    print("AUTHFAIL"); sys.stdout.flush()
    sys.exit(0)
print("EARLY" if c.poll(look) else "LATE"); sys.stdout.flush()
c.send_bytes(b"#WELCOME#")
answer_challenge(c, key)
c.send_bytes(c.recv_bytes())
print("SERVED"); sys.stdout.flush()
"##;

struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn start(look: Duration) -> (Peer, Address) {
        let mut child = Command::new("python3")
            .args(["-c", LISTENER, KEY, &look.as_secs_f64().to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let peer = Peer { child, lines };
        let first = peer.line();
        let address = first.strip_prefix("ADDR ").expect("the listener's address").parse().expect("an address");
        (peer, address)
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).expect("a line from the python listener")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the listener looks for the client's challenge before `#WELCOME#`: long when it is
/// expected (the look ends when it arrives), short when it must not come.
fn look(early: bool) -> Duration {
    if early { WAIT } else { Duration::from_millis(300) }
}

fn expected(early: bool) -> [&'static str; 2] {
    [if early { "EARLY" } else { "LATE" }, "SERVED"]
}

#[test]
fn the_blocking_client_sends_its_challenge_with_its_answer_unless_told_not_to() {
    for early in [true, false] {
        let (peer, address) = Peer::start(look(early));
        let mut conn = Client::new(&address).authkey(KEY).early_challenge(early).connect().expect("handshake");
        let seen = peer.line();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn.send_bytes(b"hello").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello");
        assert_eq!([seen.as_str(), peer.line().as_str()], expected(early), "early_challenge({early})");
    }
}

#[test]
fn the_reactor_client_sends_its_challenge_with_its_answer_unless_told_not_to() {
    for early in [true, false] {
        let (peer, address) = Peer::start(look(early));
        let options = ConnectionOptions::new().authkey(KEY).early_challenge(early);
        let (handle, rx, t) = spawn_client_reactor(address, options);
        let Ev::Open(conn) = next_event(&rx) else { panic!("early_challenge({early}): not opened") };
        let seen = peer.line();
        handle.send(conn, b"hello".to_vec()).unwrap();
        let echo = next_event(&rx);
        stop(handle, t);
        assert!(matches!(&echo, Ev::Msg(m) if m == b"hello"), "early_challenge({early}): {echo:?}");
        assert_eq!([seen.as_str(), peer.line().as_str()], expected(early), "early_challenge({early})");
    }
}

#[cfg(feature = "tokio")]
#[test]
fn the_async_client_sends_its_challenge_with_its_answer_unless_told_not_to() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for early in [true, false] {
        let (peer, address) = Peer::start(look(early));
        let echo = rt.block_on(async {
            let mut conn = mpconn::tokio::Client::new(&address).authkey(KEY).early_challenge(early).connect().await?;
            conn.send_bytes(b"hello").await?;
            conn.recv_bytes().await
        });
        assert_eq!(echo.expect("echo"), b"hello");
        assert_eq!([peer.line().as_str(), peer.line().as_str()], expected(early), "early_challenge({early})");
    }
}

/// A listener that refuses the answer reads nothing further: the early challenge is left unread
/// and the listener closes (over TCP a close with unread data is a reset). The client still
/// reports the refusal, from the `#FAILURE#` that came first.
#[test]
fn a_refused_early_client_reports_rejected_though_its_challenge_was_never_read() {
    for _ in 0..5 {
        let (peer, address) = Peer::start(WAIT);
        let got = Client::new(&address).authkey("not-the-key").connect().map(|_| ());
        assert_eq!(peer.line(), "AUTHFAIL");
        assert!(matches!(&got, Err(mpconn::Error::Authentication(mpconn::AuthenticationError::Rejected))), "{got:?}");
    }
}

/// A stock CPython listener (Nagle on, as every CPython leaves it) accepting in a loop.
const STOCK_LISTENER: &str = r##"
import sys
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0), authkey=sys.argv[1].encode())
print("ADDR %s:%d" % l.address); sys.stdout.flush()
while True:
    try:
        l.accept().close()
    except Exception:
        pass
"##;

/// Connects `n` times with `connect` and returns the median time of one connect.
fn median_connect(n: usize, mut connect: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            connect();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// Against a stock CPython listener over TCP, the listener writes `#WELCOME#` and its answer to
/// the early challenge back to back, and Nagle holds the answer until `#WELCOME#` is
/// acknowledged: unless the client acknowledges at once (`Session::wants_prompt_ack`,
/// `TCP_QUICKACK`), every early connect waits for the 40 ms delayed-ACK timer (an outside
/// tester measured 2.21 s for 50 connects early, 0.015-0.037 s late). The early median must not
/// exceed the late one by half that timer: on a loaded machine both slow down alike, while the
/// stall is at least 40 ms each time.
#[test]
fn early_connects_to_a_stock_python_tcp_listener_do_not_wait_for_the_delayed_ack() {
    const N: usize = 9;
    let mut child =
        Command::new("python3").args(["-c", STOCK_LISTENER, KEY]).stdout(Stdio::piped()).spawn().expect("python3");
    let first = BufReader::new(child.stdout.take().expect("piped stdout")).lines().next();
    let address: Address = first
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("ADDR ").map(str::to_string))
        .expect("the listener's address")
        .parse()
        .expect("an address");
    let blocking = |early: bool| {
        median_connect(N, || {
            Client::new(&address).authkey(KEY).early_challenge(early).connect().expect("handshake");
        })
    };
    let reactor = |early: bool| {
        median_connect(N, || {
            let options = ConnectionOptions::new().authkey(KEY).early_challenge(early);
            let (handle, rx, t) = spawn_client_reactor(address.clone(), options);
            let opened = next_event(&rx);
            stop(handle, t);
            assert!(matches!(opened, Ev::Open(_)), "{opened:?}");
        })
    };
    #[cfg(feature = "tokio")]
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    #[cfg(feature = "tokio")]
    let tokio = |early: bool| {
        median_connect(N, || {
            rt.block_on(mpconn::tokio::Client::new(&address).authkey(KEY).early_challenge(early).connect())
                .expect("handshake");
        })
    };
    let mut faces: Vec<(&str, &dyn Fn(bool) -> Duration)> = vec![("blocking", &blocking), ("reactor", &reactor)];
    #[cfg(feature = "tokio")]
    faces.push(("tokio", &tokio));
    let mut failures = Vec::new();
    for (face, median) in faces {
        let (late, early) = (median(false), median(true));
        println!("{face}: median connect to a CPython TCP listener: early {early:?}, late {late:?}");
        if early > late + Duration::from_millis(20) {
            failures.push(format!("{face}: early {early:?} against late {late:?}"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "early connects waited for the delayed ACK: {failures:?}");
}
