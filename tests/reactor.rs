//! The reactor over real loopback sockets: Python and Rust clients at once, reactor clients
//! against a Python listener, backpressure, deadlines, reconnect storms, id reuse, embedding
//! and cross-thread sends. Every wait is bounded.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError, Turn};
use mpconn::{Address, AuthKey, Client};

mod common;
use common::python::python_at;
use common::reactor::{Ev, WAIT, next_event, spawn_reactor, stop};

const KEY: &str = "reactor key";

#[test]
fn hundreds_of_python_and_rust_clients_at_once_on_one_reactor() {
    let dir = tempfile::tempdir().unwrap();
    for address in ["127.0.0.1:0".to_string(), dir.path().join("r.sock").to_string_lossy().into_owned()] {
        let (bound, handle, _rx, t) = spawn_reactor(address.clone(), ListenOptions::new().authkey(KEY), true);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/many_clients.py");
        let key_hex = AuthKey::from(KEY).to_hex();
        let mut pythons = Vec::new();
        for prefix in ["3.11", "3.13"] {
            match python_at(prefix) {
                Some(py) => pythons.push((
                    prefix,
                    Command::new(py).arg(&script).args([&bound.to_string(), &key_hex, "100", "5"]).output(),
                )),
                None => println!("reactor: CPython {prefix} not installed; not run"),
            }
        }
        // Meanwhile, 4 Rust threads hold 50 connections each.
        let rust: Vec<_> = (0..4)
            .map(|t| {
                let bound = bound.clone();
                thread::spawn(move || {
                    let mut conns: Vec<_> =
                        (0..50).map(|_| Client::new(&bound).authkey(KEY).connect().unwrap()).collect();
                    for round in 0..5 {
                        for (i, c) in conns.iter_mut().enumerate() {
                            c.send_bytes(format!("{t}:{i}:{round}").as_bytes()).unwrap();
                        }
                        for (i, c) in conns.iter_mut().enumerate() {
                            assert_eq!(c.recv_bytes().unwrap(), format!("{t}:{i}:{round}").as_bytes());
                        }
                    }
                    conns.len() * 5
                })
            })
            .collect();
        let rust_trips: usize = rust.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(rust_trips, 1000);
        for (prefix, out) in pythons {
            let out = out.unwrap();
            assert!(out.status.success(), "CPython {prefix}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK 500", "CPython {prefix}");
            println!("reactor: 100 CPython {prefix} clients x 5 round trips over {}: ok", bound.family());
        }
        stop(handle, t);
    }
}

/// Connects from a reactor to a Python listener, asks for an echo, then quits.
struct PythonPeerDriver {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Handler for PythonPeerDriver {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        ctx.send(conn, b"echo:from the reactor").unwrap();
        // A pickle is no command of the peer's: it answers "unknown command".
        ctx.send_pickle(conn, &0).unwrap();
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = self.tx.send(message.to_vec());
        if message == b"unknown command" {
            ctx.send(conn, b"quit").unwrap();
            ctx.stop();
        }
    }
    fn on_close(&mut self, ctx: &mut Context<'_>, _: ConnId, reason: CloseReason) {
        let _ = self.tx.send(format!("closed: {reason}").into_bytes());
        ctx.stop();
    }
}

#[test]
fn reactor_client_against_python_listeners() {
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py");
    let mut cases = vec![(python_at("3.11").unwrap(), vec![]), (python_at("2.7").unwrap(), vec!["--processing"])];
    if let Some(p) = python_at("3.13") {
        cases.push((p, vec![]));
    }
    for (py, extra) in cases {
        let mut child = Command::new(&py)
            .arg(&peer)
            .args(["listen", "127.0.0.1:0", &AuthKey::from(KEY).to_hex()])
            .args(&extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let address = line.trim().strip_prefix("READY ").unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        let mut reactor = Reactor::new(PythonPeerDriver { tx }).unwrap();
        // The whole wait bounds the handshake too: a 10 s default deadline was a timing
        // assumption on a loaded machine (this runs beside hundreds of clients of other tests).
        let options = ConnectionOptions::new().authkey(KEY).handshake_timeout(Some(WAIT));
        reactor.connect(address.as_str(), options).unwrap();
        let deadline = Instant::now() + WAIT;
        while reactor.run_once(Some(Duration::from_millis(100))).unwrap() == Turn::Running {
            assert!(Instant::now() < deadline, "{}: the conversation did not finish", py.display());
        }
        let got: Vec<String> = rx.try_iter().map(|m| String::from_utf8_lossy(&m).into_owned()).collect();
        assert!(
            got.len() >= 2 && got[0] == "from the reactor" && got[1] == "unknown command",
            "{}: the conversation went {got:?}",
            py.display()
        );
        let _ = child.kill();
        let _ = child.wait();
        println!("reactor: client against {} {:?} listener: ok", py.display(), extra);
    }
}

/// Sends 64 KiB messages until refused, then resumes on `on_drained`.
struct Flood {
    total: usize,
    sent: usize,
    refusals: usize,
    drains: usize,
    tx: mpsc::Sender<(usize, usize)>,
}

impl Flood {
    fn pump(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        while self.sent < self.total {
            let mut msg = vec![0u8; 64 * 1024];
            msg[..8].copy_from_slice(&(self.sent as u64).to_le_bytes());
            match ctx.send(conn, &msg) {
                Ok(()) => self.sent += 1,
                Err(SendError::Full { .. }) => {
                    self.refusals += 1;
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let _ = self.tx.send((self.refusals, self.drains));
    }
}

impl Handler for Flood {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.pump(ctx, conn);
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.drains += 1;
        self.pump(ctx, conn);
    }
}

#[test]
fn slow_reader_hits_the_high_water_mark_and_nothing_is_lost() {
    let (tx, rx) = mpsc::channel();
    let (addr_tx, addr_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let options = ListenOptions::new().connection(ConnectionOptions::new().high_water_mark(1 << 20));
        let mut reactor = Reactor::new(Flood { total: 1000, sent: 0, refusals: 0, drains: 0, tx }).unwrap();
        let l = reactor.listen("127.0.0.1:0", options).unwrap();
        addr_tx.send((reactor.listener_address(l).unwrap().clone(), reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (address, handle) = addr_rx.recv_timeout(WAIT).unwrap();
    let mut conn = Client::new(&address).connect().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    // Do not read for a while: the server must stop at its high-water mark.
    thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "the flood cannot have finished while nobody reads");
    for i in 0..1000u64 {
        let m = conn.recv_bytes().unwrap();
        assert_eq!(m.len(), 64 * 1024);
        assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), i, "in order, none lost");
    }
    let (refusals, drains) = rx.recv_timeout(WAIT).unwrap();
    assert!(refusals > 0 && drains > 0, "refusals {refusals}, drains {drains}");
    stop(handle, t);
}

#[test]
fn deadlines_cut_silent_and_stalling_peers_while_others_carry_on() {
    let options = ListenOptions::new().authkey(KEY).connection(
        ConnectionOptions::new()
            .authkey(KEY)
            .handshake_timeout(Some(Duration::from_millis(300)))
            .partial_message_timeout(Some(Duration::from_millis(300))),
    );
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", options, true);
    let sa = address.resolve().unwrap()[0];
    let start = Instant::now();
    // One never answers the challenge.
    let _silent = std::net::TcpStream::connect(sa).unwrap();
    // One authenticates, then stalls in the middle of a message.
    let staller = Client::new(&address).authkey(KEY).connect().unwrap();
    // A second handle on the staller's socket (a dup: the Connection keeps its own fd).
    let mut raw = std::net::TcpStream::from(std::os::fd::AsFd::as_fd(&staller).try_clone_to_owned().unwrap());
    raw.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    // A good client keeps doing round trips meanwhile.
    let mut good = Client::new(&address).authkey(KEY).connect().unwrap();
    good.set_read_timeout(Some(WAIT)).unwrap();
    let mut reasons = Vec::new();
    let mut trips = 0;
    while reasons.len() < 2 && start.elapsed() < WAIT {
        good.send_bytes(b"alive").unwrap();
        assert_eq!(good.recv_bytes().unwrap(), b"alive");
        trips += 1;
        while let Ok(ev) = rx.try_recv() {
            if let Ev::Close(_, reason) = ev {
                reasons.push(reason);
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    reasons.sort();
    assert_eq!(reasons, ["HandshakeTimeout", "PartialMessageTimeout"], "after {trips} good round trips");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The stalled connection was really closed by the server.
    let mut buf = [0u8; 1];
    raw.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    stop(handle, t);
}

#[test]
fn a_declared_length_above_the_limit_closes_only_that_connection() {
    let options = ListenOptions::new().connection(ConnectionOptions::new().max_message_size(1000));
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", options, true);
    let mut good = Client::new(&address).connect().unwrap();
    good.set_read_timeout(Some(WAIT)).unwrap();
    let mut bad = std::net::TcpStream::connect(address.resolve().unwrap()[0]).unwrap();
    bad.write_all(&[0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    loop {
        if let Ev::Close(_, reason) = next_event(&rx) {
            assert!(reason.starts_with("Protocol(TooLarge"), "{reason}");
            break;
        }
    }
    good.send_bytes(b"fine").unwrap();
    assert_eq!(good.recv_bytes().unwrap(), b"fine");
    stop(handle, t);
}

#[test]
fn reconnect_storm_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storm.sock");
    let (address, handle, rx, t) =
        spawn_reactor(path.to_str().unwrap().to_string(), ListenOptions::new().authkey(KEY), true);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let address = address.clone();
            thread::spawn(move || {
                for i in 0..500 {
                    let mut c = Client::new(&address).authkey(KEY).connect().unwrap();
                    let m = format!("{w}:{i}");
                    c.send_bytes(m.as_bytes()).unwrap();
                    assert_eq!(c.recv_bytes().unwrap(), m.as_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let (mut opened, mut closed) = (0, 0);
    while closed < 2000 {
        match next_event(&rx) {
            Ev::Open(_) => opened += 1,
            Ev::Close(_, reason) => {
                assert_eq!(reason, "PeerClosed");
                closed += 1
            }
            _ => {}
        }
    }
    assert_eq!(opened, 2000);
    let (count_tx, count_rx) = mpsc::channel();
    handle.call(move |ctx| count_tx.send(ctx.entry_count()).unwrap()).unwrap();
    assert_eq!(count_rx.recv_timeout(WAIT).unwrap(), 1, "only the listener is left");
    stop(handle, t);
}

#[test]
fn a_stale_id_never_reaches_a_new_connection() {
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", ListenOptions::new(), false);
    let first = Client::new(&address).connect().unwrap();
    let Ev::Open(old) = next_event(&rx) else { panic!() };
    drop(first);
    assert!(matches!(next_event(&rx), Ev::Close(id, _) if id == old));
    let mut second = Client::new(&address).connect().unwrap();
    let Ev::Open(new) = next_event(&rx) else { panic!() };
    assert_ne!(old, new);
    let (res_tx, res_rx) = mpsc::channel();
    handle
        .call(move |ctx| {
            res_tx.send(ctx.send(old, b"for the old one")).unwrap();
            res_tx.send(ctx.send(new, b"for the new one")).unwrap();
        })
        .unwrap();
    assert_eq!(res_rx.recv_timeout(WAIT).unwrap(), Err(SendError::NoSuchConnection));
    assert_eq!(res_rx.recv_timeout(WAIT).unwrap(), Ok(()));
    second.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(second.recv_bytes().unwrap(), b"for the new one");
    second.send_bytes(b"from the new one").unwrap();
    assert!(matches!(next_event(&rx), Ev::Msg(m) if m == b"from the new one"));
    stop(handle, t);
}

#[test]
fn cross_thread_sends_arrive_in_order() {
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", ListenOptions::new(), false);
    let mut client = Client::new(&address).connect().unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let Ev::Open(conn) = next_event(&rx) else { panic!() };
    let senders: Vec<_> = (0..2)
        .map(|s| {
            let handle = handle.clone();
            thread::spawn(move || {
                for i in 0..5000u32 {
                    handle.send(conn, format!("{s}:{i}").into_bytes()).unwrap();
                }
            })
        })
        .collect();
    let mut next: HashMap<u32, u32> = HashMap::new();
    for _ in 0..10_000 {
        let m = String::from_utf8(client.recv_bytes().unwrap()).unwrap();
        let (s, i) = m.split_once(':').unwrap();
        let (s, i): (u32, u32) = (s.parse().unwrap(), i.parse().unwrap());
        let expected = next.entry(s).or_insert(0);
        assert_eq!(i, *expected, "sender {s} out of order");
        *expected += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    stop(handle, t);
}

struct Quiet;
impl Handler for Quiet {
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = ctx.send(conn, message);
    }
}

#[test]
fn an_outer_poll_sees_the_reactor_descriptor_readable() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;

    let mut reactor = Reactor::new(Quiet).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let address = reactor.listener_address(l).unwrap().clone();
    let mut outer = Poll::new().unwrap();
    let fd = reactor.as_raw_fd();
    outer.registry().register(&mut SourceFd(&fd), Token(7), Interest::READABLE).unwrap();

    let client = thread::spawn(move || {
        let mut c = Client::new(&address).connect().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.send_bytes(b"through the outer loop").unwrap();
        c.recv_bytes().unwrap()
    });
    let mut events = Events::with_capacity(8);
    let mut wakeups = 0;
    let deadline = Instant::now() + WAIT;
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the outer loop never saw the reactor ready");
        outer.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
        if events.iter().any(|e| e.token() == Token(7)) {
            wakeups += 1;
        }
        reactor.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(client.join().unwrap(), b"through the outer loop");
    assert!(wakeups > 0);
}

#[test]
fn the_connection_limit_holds_clients_in_the_backlog_until_a_slot_frees() {
    let options = ListenOptions::new().authkey(KEY).max_connections(2);
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", options, true);
    let first = Client::new(&address).authkey(KEY).connect().unwrap();
    let _second = Client::new(&address).authkey(KEY).connect().unwrap();
    // The third connects (the kernel's backlog) but is not served: its handshake times out.
    let third = Client::new(&address).authkey(KEY).handshake_timeout(Some(Duration::from_millis(300))).connect();
    assert!(matches!(third, Err(mpconn::Error::Timeout(_))), "{third:?}");
    // A slot frees: the next client is served.
    drop(first);
    let mut fourth = Client::new(&address).authkey(KEY).connect().unwrap();
    fourth.set_read_timeout(Some(WAIT)).unwrap();
    fourth.send_bytes(b"served").unwrap();
    assert_eq!(fourth.recv_bytes().unwrap(), b"served");
    drop(rx);
    stop(handle, t);
}

/// Queues many messages on open, then stops the reactor at once: the stop must flush them.
struct SendThenStop;
impl Handler for SendThenStop {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        for i in 0..2000u32 {
            ctx.send(conn, &[i.to_le_bytes().as_slice(), &[7u8; 4096]].concat()).unwrap();
        }
        ctx.stop();
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
}

#[test]
fn a_graceful_stop_flushes_queued_messages_before_closing() {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(SendThenStop).unwrap();
        let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
        tx.send(reactor.listener_address(l).unwrap().clone()).unwrap();
        reactor.run().unwrap();
    });
    let address = rx.recv_timeout(WAIT).unwrap();
    let mut c = Client::new(&address).connect().unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    for i in 0..2000u32 {
        let m = c.recv_bytes().unwrap();
        assert_eq!(u32::from_le_bytes(m[..4].try_into().unwrap()), i);
    }
    assert!(matches!(c.recv_bytes(), Err(mpconn::Error::Eof)));
    t.join().unwrap();
}

#[test]
fn every_message_written_just_before_a_close_is_delivered() {
    // Several small writes then FIN: a read after the FIN can come back short with data still
    // queued, so the reactor must read on to the end of file.
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", ListenOptions::new(), false);
    let addr = address.resolve().unwrap()[0];
    for round in 0..200u32 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        for i in 0..3u32 {
            let body = (round * 10 + i).to_le_bytes();
            s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&body).unwrap();
        }
        drop(s);
        let mut got = Vec::new();
        loop {
            match next_event(&rx) {
                Ev::Msg(m) => got.push(u32::from_le_bytes(m.try_into().unwrap())),
                Ev::Close(_, reason) => {
                    assert_eq!(reason, "PeerClosed", "round {round}");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(got, [round * 10, round * 10 + 1, round * 10 + 2], "round {round}");
    }
    stop(handle, t);
}

/// Records how each message arrived: (length, owned, content as sent), and acknowledges it.
#[derive(Default)]
struct Owner {
    got: Vec<(usize, bool, bool)>,
    keeps_owned: bool,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

impl Owner {
    fn record(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8], owned: bool) {
        let seed = message.first().copied().unwrap_or(0);
        let intact = message == pattern(message.len(), seed).as_slice();
        self.got.push((message.len(), owned, intact));
        let _ = ctx.send(conn, &(message.len() as u64).to_be_bytes());
    }
}

impl Handler for Owner {
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        self.record(ctx, conn, message, false);
    }
    fn on_message_owned(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>) {
        if self.keeps_owned {
            self.record(ctx, conn, &message, true);
        } else {
            // What the provided method does.
            self.on_message(ctx, conn, &message);
        }
    }
}

/// Runs a reactor with `handler` until a client has sent `sizes` (one message each) and had
/// each acknowledged; returns the handler.
fn deliver_sizes(handler: Owner, sizes: &[usize]) -> Owner {
    let mut reactor = Reactor::new(handler).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new().authkey(KEY)).unwrap();
    let address = reactor.listener_address(l).unwrap().clone();
    let handle = reactor.handle();
    let sizes = sizes.to_vec();
    let client = thread::spawn(move || {
        let mut c = Client::new(&address).authkey(KEY).connect().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        for (i, &len) in sizes.iter().enumerate() {
            c.send_bytes(&pattern(len, i as u8 + 1)).unwrap();
        }
        for &len in &sizes {
            assert_eq!(c.recv_bytes().unwrap(), (len as u64).to_be_bytes());
        }
        handle.stop().unwrap();
    });
    let deadline = Instant::now() + WAIT;
    while reactor.run_once(Some(Duration::from_millis(50))).unwrap() == Turn::Running {
        assert!(Instant::now() < deadline, "the client did not finish");
    }
    client.join().unwrap();
    reactor.with_handler(|h, _| std::mem::take(h))
}

#[test]
fn large_messages_are_handed_over_owned_and_small_ones_lent() {
    // 4 and 16 MiB exceed the shared 1 MiB read buffer: read into the connection's own buffer,
    // which is moved out. Small messages (at most the 64 KiB read block) are always lent.
    let sizes = [16, 4 << 20, 100, 65536, 16 << 20, 16];
    let got = deliver_sizes(Owner { keeps_owned: true, ..Owner::default() }, &sizes).got;
    println!("delivered (length, owned, intact): {got:?}");
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), sizes, "every message, in order");
    assert!(got.iter().all(|g| g.2), "every message intact");
    for &(len, owned, _) in &got {
        if len <= 65536 {
            assert!(!owned, "a {len}-byte message was handed over owned");
        } else {
            assert!(owned, "a {len}-byte message was lent, not handed over");
        }
    }

    // A handler with only on_message gets every message there (the provided method lends it).
    let got = deliver_sizes(Owner::default(), &sizes).got;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), sizes);
    assert!(got.iter().all(|g| g.2 && !g.1));
}

/// Replies twice to every message: `a` + the message (8 MiB when the message is `big`, more
/// than the socket takes at once), then `b` + the message.
struct TwoReplies;

impl Handler for TwoReplies {
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let first = if message == b"big" { pattern(8 << 20, 7) } else { [b"a", message].concat() };
        ctx.send(conn, &first).unwrap();
        ctx.send(conn, &[b"b", message].concat()).unwrap();
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

fn read_frame(s: &mut impl Read) -> Vec<u8> {
    common::frames::read_frame(s).unwrap()
}

/// The reply to the last message of a read goes out at once when nothing is queued (a request's
/// answer skips the queue); replies to a burst are queued and leave together. Whatever the mix
/// (a burst in one write, lone requests, a first reply larger than the socket takes so that its
/// rest is queued before the second), every reply arrives once, in the order it was sent.
#[test]
fn replies_written_at_once_or_queued_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for address in ["127.0.0.1:0".to_string(), dir.path().join("two.sock").to_string_lossy().into_owned()] {
        let mut reactor = Reactor::new(TwoReplies).unwrap();
        let l = reactor.listen(address.as_str(), ListenOptions::new()).unwrap();
        let bound = reactor.listener_address(l).unwrap().clone();
        let handle = reactor.handle();
        let client = thread::spawn(move || {
            let mut s: Box<dyn ReadWrite> = match &bound {
                Address::Unix(path) => Box::new(std::os::unix::net::UnixStream::connect(path).unwrap()),
                _ => Box::new(std::net::TcpStream::connect(bound.resolve().unwrap()[0]).unwrap()),
            };
            let expect = |s: &mut Box<dyn ReadWrite>, messages: &[&[u8]]| {
                for m in messages {
                    let first = read_frame(s);
                    if *m == b"big" {
                        assert!(first == pattern(8 << 20, 7), "the large first reply arrived whole");
                    } else {
                        assert_eq!(first, [b"a", *m].concat());
                    }
                    assert_eq!(read_frame(s), [b"b", *m].concat());
                }
            };
            for round in 0..50u32 {
                let tag = round.to_string();
                // A lone request, then a burst of three in one write, then the large one.
                s.write_all(&frame(format!("one {tag}").as_bytes())).unwrap();
                expect(&mut s, &[format!("one {tag}").as_bytes()]);
                let burst: Vec<Vec<u8>> = (0..3).map(|i| format!("burst {tag}.{i}").into_bytes()).collect();
                s.write_all(&burst.iter().flat_map(|m| frame(m)).collect::<Vec<u8>>()).unwrap();
                expect(&mut s, &burst.iter().map(Vec::as_slice).collect::<Vec<_>>());
                if round % 10 == 0 {
                    s.write_all(&frame(b"big")).unwrap();
                    expect(&mut s, &[b"big"]);
                }
            }
            handle.stop().unwrap();
        });
        let deadline = Instant::now() + WAIT;
        while reactor.run_once(Some(Duration::from_millis(50))).unwrap() == Turn::Running {
            assert!(Instant::now() < deadline, "the client did not finish");
        }
        client.join().unwrap();
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}
