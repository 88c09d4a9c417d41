//! No key, wrong key and dialect mismatch give the same, exact outcome in both faces
//! (blocking `Client`/`Listener`, reactor) and both roles, against Rust and real Python peers
//! (CPython 3.11 `python3`, CPython 3.13 through pyenv, `processing` 0.52 on CPython 2.7), and
//! never a clean close.
//!
//! What each role can know:
//! - A connecting side with no key that meets a challenge knows the listener wants a key:
//!   `KeyRequired`, in both faces, and the challenge is never delivered as a message.
//! - A connecting side whose answer is refused: `Rejected`. A listener whose challenge is
//!   answered wrongly: `DigestMismatch`.
//! - A listener facing a peer that has no key cannot see the peer's configuration: it sees the
//!   peer leave (`Disconnected`) or a reply that is no digest (`Protocol`, or `KeyRequired` if
//!   the session chooses to name it so). It must never open the connection nor call it clean.
//! - A listener that receives, after a correct answer, a challenge of the other dialect (a
//!   `#CHALLENGE:` after a CPython handshake, a `#CHALLENGE#{sha256}` after a `processing` one)
//!   knows the dialects differ: `DialectMismatch`. A connecting side adapts to any listener's
//!   dialect, so for it every dialect must succeed.
#![cfg(unix)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::servers::{Child2, WAIT, mpconn, peer_script, pyenv_python};
use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor};
use mpconn::{Address, AuthKey, AuthenticationError, Client, Dialect, Digest, Error, Listener};

const KEY: &str = "outcome key";
const WRONG: &str = "not the key";

// ---------------------------------------------------------------------------------------------
// Peers

#[derive(Clone, Debug)]
struct Py {
    label: String,
    exe: PathBuf,
    processing: bool,
}

/// CPython 3.11 (python3), CPython 3.13 (pyenv), processing 0.52 (pyenv 2.7, if importable).
fn pythons() -> Vec<Py> {
    let mut v = vec![Py { label: "CPython python3".into(), exe: "python3".into(), processing: false }];
    match pyenv_python("3.13.") {
        Some(exe) => v.push(Py { label: "CPython 3.13".into(), exe, processing: false }),
        None => panic!("CPython 3.13 is required (pyenv install 3.13.0)"),
    }
    if let Some(exe) = pyenv_python("2.7.") {
        let ok = Command::new(&exe).args(["-c", "import processing"]).status().is_ok_and(|s| s.success());
        if ok {
            v.push(Py { label: "processing 0.52".into(), exe, processing: true });
        } else {
            println!("processing 0.52 is not installed on CPython 2.7: not run (tests/interop.rs installs it)");
        }
    }
    v
}

fn py_peer(py: &Py, mode: &str, address: &str, key: Option<&str>, accepts: usize) -> Child2 {
    let key_hex = key.map(|k| AuthKey::from(k).to_hex()).unwrap_or_else(|| "none".into());
    let mut cmd = Command::new(&py.exe);
    cmd.arg(peer_script()).args([mode, address, &key_hex, "--accepts", &accepts.to_string()]);
    if py.processing {
        cmd.arg("--processing");
    }
    Child2::spawn(cmd, &py.label)
}

/// What the reactor reported for one connection (compared through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum Ev {
    Open,
    Msg(Vec<u8>),
    Close(String),
}

struct Rec {
    tx: mpsc::Sender<Ev>,
    /// Send this once open (a command a Python peer echoes).
    greet: Option<Vec<u8>>,
    /// Echo every message (a listener serving Rust clients).
    echo: bool,
}

impl Handler for Rec {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        let _ = self.tx.send(Ev::Open);
        if let Some(g) = &self.greet {
            let _ = ctx.send(conn, g);
        }
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = self.tx.send(Ev::Msg(message.to_vec()));
        if self.echo {
            let _ = ctx.send(conn, message);
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, reason: CloseReason) {
        let _ = self.tx.send(Ev::Close(format!("{reason:?}")));
    }
}

/// A reactor on a thread that connects to `address`; its events, and the handle to stop it.
fn reactor_client(
    address: &str,
    key: Option<&str>,
    greet: Option<&[u8]>,
) -> (mpsc::Receiver<Ev>, Handle, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (htx, hrx) = mpsc::channel();
    let address = address.to_string();
    let key = key.map(str::to_string);
    let greet = greet.map(<[u8]>::to_vec);
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Rec { tx, greet, echo: false }).unwrap();
        let mut opts = ConnectionOptions::new().handshake_timeout(Some(Duration::from_secs(10)));
        if let Some(k) = key {
            opts = opts.authkey(k.as_str());
        }
        reactor.connect(address.as_str(), opts).unwrap();
        htx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
    });
    (rx, hrx.recv_timeout(WAIT).unwrap(), t)
}

/// A reactor on a thread listening on TCP loopback with `key` and `dialect`.
fn reactor_listener(key: &str, dialect: Dialect) -> (String, mpsc::Receiver<Ev>, Handle, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    let key = key.to_string();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Rec { tx, greet: None, echo: true }).unwrap();
        let opts = ConnectionOptions::new()
            .authkey(key.as_str())
            .dialect(dialect)
            .handshake_timeout(Some(Duration::from_secs(10)));
        let l = reactor.listen("127.0.0.1:0", ListenOptions::new().connection(opts)).unwrap();
        rtx.send((reactor.listener_address(l).unwrap().to_string(), reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (a, h) = rrx.recv_timeout(WAIT).unwrap();
    (a, rx, h, t)
}

/// Events until the first close (bounded); fails on a timeout.
fn until_close(rx: &mpsc::Receiver<Ev>, what: &str) -> (Vec<Ev>, String) {
    let end = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(Ev::Close(r)) => return (seen, r),
            Ok(ev) => seen.push(ev),
            Err(_) => panic!("{what}: no close within {WAIT:?}; events: {seen:?}"),
        }
    }
}

fn stop(h: Handle, t: thread::JoinHandle<()>) {
    let _ = h.stop();
    t.join().unwrap();
}

/// A Rust peer listener of one face, serving one connection on a thread: echoes one message.
enum RustListener {
    Blocking(thread::JoinHandle<Result<(), Error>>),
    Reactor(mpsc::Receiver<Ev>, Handle, thread::JoinHandle<()>),
}

fn rust_listener(reactor: bool, dialect: Dialect) -> (String, RustListener) {
    if reactor {
        let (a, rx, h, t) = reactor_listener(KEY, dialect);
        return (a, RustListener::Reactor(rx, h, t));
    }
    let mut l = Listener::builder().address("127.0.0.1:0").authkey(KEY).dialect(dialect).bind().unwrap();
    let a = l.address().to_string();
    let t = thread::spawn(move || -> Result<(), Error> {
        let mut c = l.accept_within(Some(WAIT))?;
        c.set_read_timeout(Some(WAIT))?;
        let m = c.recv_bytes()?;
        c.send_bytes(&m)
    });
    (a, RustListener::Blocking(t))
}

impl RustListener {
    fn finish(self) -> String {
        match self {
            RustListener::Blocking(t) => format!("{:?}", t.join().unwrap()),
            RustListener::Reactor(rx, h, t) => {
                let r = rx.recv_timeout(WAIT).map(|e| format!("{e:?}")).unwrap_or_else(|_| "nothing".into());
                stop(h, t);
                r
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The connecting side

/// Blocking client outcome: the error of `connect`, or of the first `recv_bytes` after sending.
fn blocking_client(address: &str, key: Option<&str>) -> Result<Vec<u8>, Error> {
    let mut c = Client::new(address).handshake_timeout(Some(Duration::from_secs(10)));
    if let Some(k) = key {
        c = c.authkey(k);
    }
    let mut conn = c.connect()?;
    conn.set_read_timeout(Some(WAIT))?;
    conn.send_bytes(b"echo:hello")?;
    conn.recv_bytes()
}

fn is_auth(r: &Result<Vec<u8>, Error>, want: &AuthenticationError) -> bool {
    matches!(r, Err(Error::Authentication(e)) if e == want)
}

/// The reactor client outcome: the close reason, and the events before it.
fn reactor_client_outcome(address: &str, key: Option<&str>) -> (Vec<Ev>, String) {
    let (rx, h, t) = reactor_client(address, key, Some(b"echo:hello"));
    let r = until_close(&rx, "reactor client");
    stop(h, t);
    r
}

/// Connects from one face with `key` and judges the refusal: the reactor client must close with
/// `AuthenticationFailed(expected)` with events that `events_ok` accepts, the blocking `Client`
/// fail with `expected`. Returns whether it did, and what happened.
fn refused_as(
    reactor_face: bool,
    address: &str,
    key: Option<&str>,
    expected: &AuthenticationError,
    events_ok: fn(&[Ev]) -> bool,
) -> (bool, String) {
    if reactor_face {
        let (events, reason) = reactor_client_outcome(address, key);
        let ok = reason == format!("AuthenticationFailed({expected:?})") && events_ok(&events);
        (ok, format!("close {reason}, events {events:?}"))
    } else {
        let r = blocking_client(address, key);
        (is_auth(&r, expected), format!("{r:?}"))
    }
}

/// Nothing delivered (an `Open` may come first: a client without a key opens at once).
fn no_message(events: &[Ev]) -> bool {
    !events.iter().any(|e| matches!(e, Ev::Msg(_)))
}

/// No event at all.
fn nothing(events: &[Ev]) -> bool {
    events.is_empty()
}

/// The outcomes a test looked at: each printed, the failures asserted on at the end.
#[derive(Default)]
struct Outcomes(Vec<String>);

impl Outcomes {
    fn check(&mut self, label: String, (ok, detail): (bool, String)) {
        println!("{} {label}: {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.0.push(format!("{label}: {detail}"));
        }
    }

    fn assert_all_ok(self) {
        assert!(self.0.is_empty(), "{:#?}", self.0);
    }
}

#[test]
fn a_client_without_a_key_reports_key_required_against_every_keyed_listener() {
    let mut outcomes = Outcomes::default();
    let key_required = AuthenticationError::KeyRequired;
    for reactor_face in [false, true] {
        let face = if reactor_face { "reactor client" } else { "blocking Client" };
        // Rust listeners of both faces.
        for listener_reactor in [false, true] {
            let (address, peer) = rust_listener(listener_reactor, Dialect::Cpython);
            let lface = if listener_reactor { "Rust reactor listener" } else { "Rust blocking Listener" };
            let outcome = refused_as(reactor_face, &address, None, &key_required, no_message);
            outcomes.check(format!("{face}, no key -> {lface}"), outcome);
            let _ = peer.finish();
        }
        // Python listeners.
        for py in pythons() {
            let peer = py_peer(&py, "listen", "127.0.0.1:0", Some(KEY), 1);
            let address = peer.expect_line("READY");
            let outcome = refused_as(reactor_face, &address, None, &key_required, no_message);
            outcomes.check(format!("{face}, no key -> {} listener", py.label), outcome);
        }
    }
    outcomes.assert_all_ok();
}

#[test]
fn a_client_with_the_wrong_key_reports_rejected_against_every_listener() {
    let mut outcomes = Outcomes::default();
    let rejected = AuthenticationError::Rejected;
    for reactor_face in [false, true] {
        let face = if reactor_face { "reactor client" } else { "blocking Client" };
        for listener_reactor in [false, true] {
            for dialect in [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing] {
                let (address, peer) = rust_listener(listener_reactor, dialect);
                let lface = if listener_reactor { "Rust reactor listener" } else { "Rust blocking Listener" };
                let label = format!("{face}, wrong key -> {lface} ({dialect:?})");
                outcomes.check(label, refused_as(reactor_face, &address, Some(WRONG), &rejected, nothing));
                let _ = peer.finish();
            }
        }
        for py in pythons() {
            let peer = py_peer(&py, "listen", "127.0.0.1:0", Some(KEY), 1);
            let address = peer.expect_line("READY");
            let label = format!("{face}, wrong key -> {} listener", py.label);
            outcomes.check(label, refused_as(reactor_face, &address, Some(WRONG), &rejected, nothing));
            peer.find_line("AUTHFAIL");
        }
    }
    outcomes.assert_all_ok();
}

#[test]
fn a_client_adapts_to_every_listener_dialect_in_both_faces() {
    let mut failures = Vec::new();
    for reactor_face in [false, true] {
        let face = if reactor_face { "reactor client" } else { "blocking Client" };
        for listener_reactor in [false, true] {
            for dialect in [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing] {
                let (address, peer) = rust_listener(listener_reactor, dialect);
                let label = format!(
                    "{face} -> Rust {} listener ({dialect:?})",
                    if listener_reactor { "reactor" } else { "blocking" }
                );
                let got = if reactor_face {
                    let (rx, h, t) = reactor_client(&address, Some(KEY), Some(b"echo:hello"));
                    let evs: Vec<Ev> = (0..2).filter_map(|_| rx.recv_timeout(WAIT).ok()).collect();
                    stop(h, t);
                    format!("{evs:?}")
                } else {
                    format!("{:?}", blocking_client(&address, Some(KEY)).map(Ev::Msg))
                };
                let want = if reactor_face {
                    "[Open, Msg([101, 99, 104, 111, 58, 104, 101, 108, 108, 111])]"
                } else {
                    "Ok(Msg([101, 99, 104, 111, 58, 104, 101, 108, 108, 111]))"
                };
                println!("{label}: {got}; listener: {}", peer.finish());
                if got != want {
                    failures.push(format!("{label}: {got}"));
                }
            }
        }
        for py in pythons() {
            let peer = py_peer(&py, "listen", "127.0.0.1:0", Some(KEY), 1);
            let address = peer.expect_line("READY");
            let label = format!("{face} -> {} listener", py.label);
            let got = if reactor_face {
                let (rx, h, t) = reactor_client(&address, Some(KEY), Some(b"echo:hello"));
                let evs: Vec<Ev> = (0..2).filter_map(|_| rx.recv_timeout(WAIT).ok()).collect();
                stop(h, t);
                format!("{evs:?}")
            } else {
                format!("{:?}", blocking_client(&address, Some(KEY)).map(Ev::Msg))
            };
            let want = if reactor_face {
                "[Open, Msg([104, 101, 108, 108, 111])]"
            } else {
                "Ok(Msg([104, 101, 108, 108, 111]))"
            };
            println!("{label}: {got}");
            if got != want {
                failures.push(format!("{label}: {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn mpconn_stress_without_a_key_against_a_keyed_python_listener_reports_authentication() {
    // A keyed CPython echo listener (threads, one per connection).
    let script = "import sys, threading\nfrom multiprocessing.connection import Listener\nl = Listener(('127.0.0.1', 0), authkey=sys.argv[1].encode())\nprint('READY %s:%d' % l.address, flush=True)\ndef serve(c):\n    try:\n        while True: c.send_bytes(c.recv_bytes())\n    except Exception: pass\nwhile True:\n    try: c = l.accept()\n    except Exception as e:\n        print('AUTHFAIL', e, flush=True); continue\n    threading.Thread(target=serve, args=(c,), daemon=True).start()\n";
    let exe = pyenv_python("3.13.").expect("CPython 3.13");
    let mut cmd = Command::new(exe);
    cmd.args(["-c", script, KEY]);
    let peer = Child2::spawn(cmd, "CPython 3.13 echo listener");
    let address = peer.expect_line("READY");
    let (tx, rx) = mpsc::channel();
    let mut child = Command::new(mpconn())
        .args(["stress", &address, "--clients", "3", "--messages", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut o = String::new();
        let mut e = String::new();
        let _ = { out }.read_to_string(&mut o);
        let _ = { err }.read_to_string(&mut e);
        let _ = tx.send((o, e, child.wait()));
    });
    let (out, err, status) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("mpconn stress did not finish within 60 s");
        }
    };
    let all = format!("{out}\n{err}");
    println!("{all}\nexit: {status:?}");
    assert!(!status.unwrap().success(), "stress must fail");
    let corrupted =
        all.lines().find(|l| l.starts_with("integrity:")).map(|l| !l.contains(", 0 corrupted")).unwrap_or(false);
    assert!(!corrupted, "no key against a keyed listener is reported as corrupted messages");
    let lower = all.to_lowercase();
    assert!(
        lower.contains("key") && lower.contains("authentication"),
        "the report names the authentication failure (a key is required)"
    );
}

// ---------------------------------------------------------------------------------------------
// The listening side

/// Our listener's outcome for one connection: the blocking `accept` error, or the reactor's
/// close reason ("Open" if it opened).
enum Ours {
    Blocking(thread::JoinHandle<String>),
    Reactor(mpsc::Receiver<Ev>, Handle, thread::JoinHandle<()>),
}

fn our_listener(reactor: bool, dialect: Dialect) -> (String, Ours) {
    if reactor {
        let (a, rx, h, t) = reactor_listener(KEY, dialect);
        return (a, Ours::Reactor(rx, h, t));
    }
    let mut l = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .dialect(dialect)
        .handshake_timeout(Some(Duration::from_secs(10)))
        .bind()
        .unwrap();
    let a = l.address().to_string();
    let t = thread::spawn(move || match l.accept_within(Some(WAIT)) {
        Ok(_) => "Open".to_string(),
        Err(Error::Authentication(e)) => format!("AuthenticationFailed({e:?})"),
        Err(e) => format!("Error({e:?})"),
    });
    (a, Ours::Blocking(t))
}

impl Ours {
    fn outcome(self) -> String {
        match self {
            Ours::Blocking(t) => t.join().unwrap(),
            Ours::Reactor(rx, h, t) => {
                let r = match rx.recv_timeout(WAIT) {
                    Ok(Ev::Close(r)) => r,
                    Ok(Ev::Open) => "Open".into(),
                    Ok(e) => format!("{e:?}"),
                    Err(_) => "nothing".into(),
                };
                stop(h, t);
                r
            }
        }
    }
}

/// A client of any kind, run against `address` on a thread; returns what it saw.
fn rust_client_thread(address: &str, key: Option<&'static str>, reactor: bool) -> thread::JoinHandle<String> {
    let address = address.to_string();
    thread::spawn(move || {
        if reactor {
            let (events, reason) = reactor_client_outcome(&address, key);
            format!("{events:?} then {reason}")
        } else {
            format!("{:?}", blocking_client(&address, key))
        }
    })
}

/// Runs one client against an address; a Python peer is returned to be kept alive meanwhile.
type ClientRun = Box<dyn FnOnce(&str) -> Option<Child2>>;

#[test]
fn a_listener_facing_a_client_without_a_key_never_opens_and_says_authentication() {
    // The listener cannot see that the peer has no key: it sees it leave (Disconnected) or
    // answer with something that is no digest (Protocol), or names it KeyRequired.
    let allowed =
        ["AuthenticationFailed(Disconnected)", "AuthenticationFailed(Protocol(", "AuthenticationFailed(KeyRequired)"];
    let mut failures = Vec::new();
    for listener_reactor in [false, true] {
        let lface = if listener_reactor { "reactor listener" } else { "blocking Listener" };
        let mut clients: Vec<(String, ClientRun)> = vec![
            (
                "Rust blocking Client".into(),
                Box::new(|a: &str| {
                    rust_client_thread(a, None, false).join().unwrap();
                    None
                }),
            ),
            (
                "Rust reactor client".into(),
                Box::new(|a: &str| {
                    rust_client_thread(a, None, true).join().unwrap();
                    None
                }),
            ),
        ];
        for py in pythons().into_iter().filter(|p| !p.processing) {
            let label = format!("{} client", py.label);
            clients.push((label, Box::new(move |a: &str| Some(py_peer(&py, "connect", a, None, 1)))));
        }
        for (label, client) in clients {
            let (address, ours) = our_listener(listener_reactor, Dialect::Cpython);
            let peer = client(&address);
            let outcome = ours.outcome();
            drop(peer);
            let ok = allowed.iter().any(|a| outcome.starts_with(a));
            println!("{} {lface} <- {label} with no key: {outcome}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failures.push(format!("{lface} <- {label}: {outcome}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_listener_facing_a_wrong_key_reports_digest_mismatch() {
    let mut failures = Vec::new();
    for listener_reactor in [false, true] {
        let lface = if listener_reactor { "reactor listener" } else { "blocking Listener" };
        for dialect in [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing] {
            for client_reactor in [false, true] {
                let (address, ours) = our_listener(listener_reactor, dialect);
                let c = rust_client_thread(&address, Some(WRONG), client_reactor);
                let outcome = ours.outcome();
                let seen = c.join().unwrap();
                let label = format!(
                    "{lface} ({dialect:?}) <- Rust {} client, wrong key",
                    if client_reactor { "reactor" } else { "blocking" }
                );
                let ok = outcome == "AuthenticationFailed(DigestMismatch)";
                println!("{} {label}: {outcome} (client: {seen})", if ok { "ok  " } else { "FAIL" });
                if !ok {
                    failures.push(format!("{label}: {outcome}"));
                }
            }
        }
        for py in pythons() {
            let dialect = if py.processing { Dialect::Processing } else { Dialect::Cpython };
            let (address, ours) = our_listener(listener_reactor, dialect);
            let peer = py_peer(&py, "connect", &address, Some(WRONG), 1);
            let outcome = ours.outcome();
            peer.find_line("AUTHFAIL");
            let label = format!("{lface} ({dialect:?}) <- {} client, wrong key", py.label);
            let ok = outcome == "AuthenticationFailed(DigestMismatch)";
            println!("{} {label}: {outcome}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failures.push(format!("{label}: {outcome}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// A client that answers the listener's challenge correctly, then challenges in the other dialect.

fn write_frame(s: &mut TcpStream, body: &[u8]) {
    common::frames::write_frame(s, body).unwrap();
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    common::frames::read_frame(s).unwrap()
}

/// Answers the challenge of a listener of `dialect` correctly, then sends a challenge of the
/// other dialect. Returns what the listener said last (or how the connection ended).
fn mixed_dialect_client(address: &str, dialect: Dialect) -> String {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let challenge = read_frame(&mut s);
    let key = KEY.as_bytes();
    match dialect {
        Dialect::Processing => {
            let nonce = challenge.strip_prefix(b"#CHALLENGE:").expect("a processing challenge");
            write_frame(&mut s, Digest::Sha1.mac(key, nonce).as_bytes());
            assert_eq!(read_frame(&mut s), b"#WELCOME");
            // Now a CPython 3.12+ challenge.
            let mut c = b"#CHALLENGE#{sha256}".to_vec();
            c.extend_from_slice(&[7u8; 40]);
            write_frame(&mut s, &c);
        }
        _ => {
            let message = challenge.strip_prefix(b"#CHALLENGE#").expect("a CPython challenge");
            assert!(message.starts_with(b"{sha256}"), "{message:?}");
            let mut reply = b"{sha256}".to_vec();
            reply.extend_from_slice(Digest::Sha256.mac(key, message).as_bytes());
            write_frame(&mut s, &reply);
            assert_eq!(read_frame(&mut s), b"#WELCOME#");
            // Now a processing challenge.
            let mut c = b"#CHALLENGE:".to_vec();
            c.extend_from_slice(&[7u8; 20]);
            write_frame(&mut s, &c);
        }
    }
    let mut h = [0u8; 4];
    match s.read_exact(&mut h) {
        Ok(()) => {
            let mut b = vec![0u8; u32::from_be_bytes(h) as usize];
            let _ = s.read_exact(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        }
        Err(e) => format!("{e}"),
    }
}

#[test]
fn a_listener_challenged_in_the_other_dialect_reports_dialect_mismatch() {
    let mut failures = Vec::new();
    for listener_reactor in [false, true] {
        let lface = if listener_reactor { "reactor listener" } else { "blocking Listener" };
        for dialect in [Dialect::Cpython, Dialect::Processing] {
            let (address, ours) = our_listener(listener_reactor, dialect);
            let a = address.clone();
            let c = thread::spawn(move || mixed_dialect_client(&a, dialect));
            let outcome = ours.outcome();
            let seen = c.join().unwrap();
            let label = format!("{lface} ({dialect:?}) <- a client challenging in the other dialect");
            let ok = outcome.starts_with("AuthenticationFailed(DialectMismatch");
            println!("{} {label}: {outcome} (client saw {seen:?})", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failures.push(format!("{label}: {outcome}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn real_python_peers_of_another_dialect_fail_authentication_on_both_sides() {
    // A Rust listener offering `processing`'s dialect to CPython clients, and CPython's to a
    // `processing` client: neither side opens; ours says which authentication failure it saw
    // (the peer leaves after our challenge: Disconnected, or DialectMismatch if recognised).
    let allowed = ["AuthenticationFailed(Disconnected)", "AuthenticationFailed(DialectMismatch"];
    let mut failures = Vec::new();
    for listener_reactor in [false, true] {
        let lface = if listener_reactor { "reactor listener" } else { "blocking Listener" };
        for py in pythons() {
            let dialect = if py.processing { Dialect::Cpython } else { Dialect::Processing };
            let (address, ours) = our_listener(listener_reactor, dialect);
            let peer = py_peer(&py, "connect", &address, Some(KEY), 1);
            let outcome = ours.outcome();
            let said = peer.lines.recv_timeout(WAIT).unwrap_or_default();
            let label = format!("{lface} ({dialect:?}) <- {} client", py.label);
            let ok = allowed.iter().any(|a| outcome.starts_with(a)) && !said.starts_with("CONNECTED");
            println!("{} {label}: {outcome}; the peer said {said:?}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failures.push(format!("{label}: {outcome}, peer {said:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Without keys on either side, every message is data (as CPython's `Listener(authkey=None)`).

#[test]
fn listeners_without_a_key_deliver_a_first_message_that_looks_like_a_handshake_message() {
    // CPython's keyless Listener hands any first message to the application. A keyed CPython
    // client never speaks first, so a first message equal to `#WELCOME#` or starting with
    // `#CHALLENGE#` comes from an application, and closing on it breaks wire compatibility.
    let firsts: [&[u8]; 3] =
        [b"#WELCOME#", b"#FAILURE#", b"#CHALLENGE#{sha256}0123456789012345678901234567890123456789"];
    let mut failures = Vec::new();
    // CPython 3.13 first: what a keyless listener does with these.
    let py = pythons().into_iter().find(|p| p.label.contains("3.13")).unwrap();
    for first in firsts {
        let peer = py_peer(&py, "listen", "127.0.0.1:0", None, 1);
        let address = peer.expect_line("READY");
        let mut conn = Client::new(address.as_str()).connect().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn.send_bytes(first).unwrap();
        let r = conn.recv_bytes();
        println!("CPython 3.13 keyless listener, first message {:?}: {r:?}", String::from_utf8_lossy(first));
        assert_eq!(r.unwrap(), b"unknown command", "CPython delivers it to the application");
    }
    for reactor in [false, true] {
        for first in firsts {
            let label = format!(
                "{} without a key, first message {:?}",
                if reactor { "reactor listener" } else { "blocking Listener" },
                String::from_utf8_lossy(first)
            );
            let got = if reactor {
                let (tx, rx) = mpsc::channel();
                let (rtx, rrx) = mpsc::channel();
                let t = thread::spawn(move || {
                    let mut r = Reactor::new(Rec { tx, greet: None, echo: false }).unwrap();
                    let l = r.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
                    rtx.send((r.listener_address(l).unwrap().to_string(), r.handle())).unwrap();
                    r.run().unwrap();
                });
                let (a, h) = rrx.recv_timeout(WAIT).unwrap();
                let mut c = Client::new(a.as_str()).connect().unwrap();
                c.send_bytes(first).unwrap();
                c.send_bytes(b"second").unwrap();
                let evs: Vec<String> = (0..3)
                    .filter_map(|_| rx.recv_timeout(Duration::from_secs(5)).ok())
                    .map(|e| match e {
                        Ev::Msg(m) => format!("Msg({:?})", String::from_utf8_lossy(&m)),
                        e => format!("{e:?}"),
                    })
                    .collect();
                stop(h, t);
                evs.join(", ")
            } else {
                let mut l = Listener::builder().address("127.0.0.1:0").bind().unwrap();
                let a = l.address().to_string();
                let first = first.to_vec();
                let c = thread::spawn(move || {
                    let mut c = Client::new(a.as_str()).connect().unwrap();
                    c.send_bytes(&first).unwrap();
                    c.send_bytes(b"second").unwrap();
                    thread::sleep(Duration::from_millis(500));
                });
                let mut conn = l.accept_within(Some(WAIT)).unwrap();
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let a = conn.recv_bytes().map(|m| String::from_utf8_lossy(&m).into_owned());
                let b = conn.recv_bytes().map(|m| String::from_utf8_lossy(&m).into_owned());
                c.join().unwrap();
                format!("Open, {a:?}, {b:?}")
            };
            let want = if reactor {
                format!("Open, Msg({:?}), Msg(\"second\")", String::from_utf8_lossy(first))
            } else {
                format!("Open, Ok({:?}), Ok(\"second\")", String::from_utf8_lossy(first))
            };
            let ok = got == want;
            println!("{} {label}: {got}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failures.push(format!("{label}: {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
