//! The Windows suite: named pipes (`AF_PIPE`, message-mode, no length prefix) through the
//! blocking API and the reactor, and the reactor over TCP on Windows. Built for
//! `x86_64-pc-windows-gnu` and run under Wine by `.ci/run` (see `.ci/windows/`). Every wait is
//! bounded.
#![cfg(windows)]

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor};
use mpconn::{Address, AuthenticationError, Client, Error, Family, Listener, arbitrary_address};

mod common;
use common::reactor::{Ev, WAIT, spawn_client_reactor, stop};

const KEY: &str = "pipe key";

fn fresh_pipe() -> Address {
    arbitrary_address(Family::Pipe).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Sizes around the pipe's read size (8 KiB), the empty message, and a large one.
const SIZES: [usize; 8] = [0, 1, 8191, 8192, 8193, 65_536, 100_000, 1 << 20];

#[test]
fn the_default_family_here_is_the_pipe() {
    let listener = Listener::builder().authkey(KEY).bind().unwrap();
    assert_eq!(listener.address().family(), Family::Pipe);
    assert!(listener.address().to_string().starts_with(r"\\.\pipe\"), "{}", listener.address());
}

#[test]
fn blocking_round_trips_keep_every_message_boundary() {
    let address = fresh_pipe();
    let mut listener = Listener::builder().address(&address).authkey(KEY).bind().unwrap();
    let a = address.clone();
    let client = thread::spawn(move || {
        let mut c = Client::new(a).authkey(KEY).connect().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        for (i, &n) in SIZES.iter().enumerate() {
            let m = c.recv_bytes().unwrap();
            assert_eq!(m.len(), n);
            assert_eq!(m, pattern(n, i as u8));
            c.send_bytes(&m).unwrap();
        }
        // Several small messages written back to back arrive as separate messages.
        for i in 0..100u32 {
            c.send_bytes(&i.to_be_bytes()).unwrap();
        }
        c.send(&("done", 7)).unwrap();
    });
    let mut conn = listener.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    for (i, &n) in SIZES.iter().enumerate() {
        let m = pattern(n, i as u8);
        conn.send_bytes(&m).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), m, "size {n}");
    }
    for i in 0..100u32 {
        assert_eq!(conn.recv_bytes().unwrap(), i.to_be_bytes());
    }
    let (word, n): (String, i32) = conn.recv().unwrap();
    assert_eq!((word.as_str(), n), ("done", 7));
    client.join().unwrap();
    // The client closed: end of file.
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)), "expected end of file");
}

#[test]
fn sixty_four_mib_both_ways() {
    let address = fresh_pipe();
    let mut listener = Listener::builder().address(&address).authkey(KEY).bind().unwrap();
    let a = address.clone();
    let big = pattern(64 << 20, 3);
    let sent = big.clone();
    let client = thread::spawn(move || {
        let mut c = Client::new(a).authkey(KEY).connect().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let m = c.recv_bytes().unwrap();
        assert!(m == sent, "the 64 MiB message arrived changed");
        c.send_bytes(&m).unwrap();
    });
    let mut conn = listener.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.send_bytes(&big).unwrap();
    let back = conn.recv_bytes().unwrap();
    assert!(back == big, "the 64 MiB message came back changed");
    client.join().unwrap();
}

#[test]
fn recv_bytes_into_a_short_buffer_keeps_the_message() {
    let address = fresh_pipe();
    let mut listener = Listener::bind(&address).unwrap();
    let a = address.clone();
    let client = thread::spawn(move || {
        let mut c = Client::new(a).connect().unwrap();
        c.send_bytes(&pattern(5000, 1)).unwrap();
        c.send_bytes(b"next").unwrap();
    });
    let mut conn = listener.accept().unwrap();
    let mut small = [0u8; 100];
    match conn.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(b)) => assert_eq!(b.message, pattern(5000, 1)),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    let n = conn.recv_bytes_into(&mut small).unwrap();
    assert_eq!(&small[..n], b"next");
    client.join().unwrap();
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_the_listener_keeps_serving() {
    let address = fresh_pipe();
    let mut listener = Listener::builder().address(&address).authkey(KEY).bind().unwrap();
    let a = address.clone();
    let client = thread::spawn(move || {
        let bad = Client::new(&a).authkey("not the key").connect();
        assert!(matches!(bad, Err(Error::Authentication(_))), "{bad:?}");
        let mut good = Client::new(&a).authkey(KEY).connect().unwrap();
        good.send_bytes(b"after").unwrap();
    });
    let first = listener.accept();
    assert!(matches!(first, Err(Error::Authentication(AuthenticationError::DigestMismatch))), "{:?}", first.err());
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"after");
    client.join().unwrap();
}

#[test]
fn a_pipe_name_in_use_is_an_error() {
    let address = fresh_pipe();
    let _first = Listener::bind(&address).unwrap();
    let second = Listener::bind(&address);
    assert!(second.is_err(), "a second listener on {address} was allowed");
}

#[test]
fn connecting_to_no_pipe_is_an_error_at_once() {
    let start = Instant::now();
    let r = Client::new(fresh_pipe()).connect();
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn a_client_waits_for_a_busy_pipe() {
    let address = fresh_pipe();
    // One instance: while the first client is not accepted, the pipe is busy.
    let mut listener = Listener::builder().address(&address).backlog(1).bind().unwrap();
    let mut first = Client::new(&address).connect().unwrap();
    let a = address.clone();
    let (tx, rx) = mpsc::channel();
    let second = thread::spawn(move || {
        let start = Instant::now();
        let mut c = Client::new(a).connect().unwrap();
        tx.send(start.elapsed()).unwrap();
        c.send_bytes(b"second").unwrap();
    });
    // The second client is still waiting after a while.
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err(), "the second client did not wait");
    let mut c1 = listener.accept().unwrap();
    first.send_bytes(b"first").unwrap();
    assert_eq!(c1.recv_bytes().unwrap(), b"first");
    let mut c2 = listener.accept_within(Some(WAIT)).unwrap();
    assert_eq!(c2.recv_bytes().unwrap(), b"second");
    let waited = rx.recv_timeout(WAIT).unwrap();
    assert!(waited >= Duration::from_millis(600), "waited only {waited:?}");
    second.join().unwrap();
}

#[test]
fn a_busy_pipe_that_stays_busy_is_a_timeout_not_a_hang() {
    let address = fresh_pipe();
    let _listener = Listener::builder().address(&address).backlog(1).bind().unwrap();
    let _first = Client::new(&address).connect().unwrap();
    let start = Instant::now();
    let second = Client::new(&address).connect_timeout(Some(Duration::from_millis(300))).connect();
    let took = start.elapsed();
    assert!(second.is_err(), "connected to a pipe with no free instance");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn pipe_pairs_and_wait() {
    let (mut a, mut b) = mpconn::pipe(true).unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    b.send_bytes(b"ping").unwrap();
    assert!(a.poll(Some(WAIT)).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"ping");
    let (c, mut d) = mpconn::pipe(true).unwrap();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        d.send_bytes(b"later").unwrap();
        d
    });
    let ready = mpconn::wait(&[&a, &c], Some(WAIT)).unwrap();
    assert_eq!(ready, [1]);
    let _d = t.join().unwrap();
    let none = mpconn::wait(&[&a], Some(Duration::from_millis(50))).unwrap();
    assert!(none.is_empty());
    // One-way: the first end only receives, the second only sends.
    let (mut reader, mut writer) = mpconn::pipe(false).unwrap();
    writer.send_bytes(b"one way").unwrap();
    assert_eq!(reader.recv_bytes().unwrap(), b"one way");
    assert!(reader.send_bytes(b"back").is_err(), "the receiving end of a one-way pipe sent");
}

// ---- the reactor over pipes ----

fn spawn_reactor(options: ListenOptions, echo: bool) -> (Address, Handle, mpsc::Receiver<Ev>, thread::JoinHandle<()>) {
    common::reactor::spawn_reactor(fresh_pipe(), options, echo)
}

#[test]
fn the_reactor_serves_many_pipe_clients_at_once() {
    many_clients_on(fresh_pipe());
}

#[test]
fn the_reactor_serves_many_tcp_clients_at_once() {
    many_clients_on(Address::inet("127.0.0.1", 0));
}

fn many_clients_on(address: Address) {
    const CLIENTS: usize = 64;
    const TRIPS: usize = 50;
    let (address, handle, _rx, t) = common::reactor::spawn_reactor(address, ListenOptions::new().authkey(KEY), true);
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let a = address.clone();
            thread::spawn(move || {
                let mut c = Client::new(a).authkey(KEY).connect().unwrap();
                c.set_read_timeout(Some(WAIT)).unwrap();
                for j in 0..TRIPS {
                    let m = format!("client {i} message {j}").into_bytes();
                    c.send_bytes(&m).unwrap();
                    assert_eq!(c.recv_bytes().unwrap(), m);
                }
                // One larger message, more than a pipe read, comes back whole.
                let big = pattern(300_000, i as u8);
                c.send_bytes(&big).unwrap();
                assert!(c.recv_bytes().unwrap() == big, "client {i}: the large echo changed");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(start.elapsed() < WAIT);
    stop(handle, t);
}

#[test]
fn reactor_deadlines_cut_silent_and_idle_pipe_peers_while_others_carry_on() {
    let options = ListenOptions::new().authkey(KEY).connection(
        ConnectionOptions::new()
            .authkey(KEY)
            .handshake_timeout(Some(Duration::from_millis(300)))
            .idle_timeout(Some(Duration::from_millis(600))),
    );
    let (address, handle, rx, t) = spawn_reactor(options, true);
    let Address::Pipe(name) = &address else { panic!("not a pipe: {address}") };
    let start = Instant::now();
    // One opens the pipe and never answers the challenge.
    let silent = open_raw(name);
    // One authenticates and then says nothing.
    let _idle = Client::new(&address).authkey(KEY).connect().unwrap();
    // A good client keeps doing round trips meanwhile (faster than the idle limit).
    let mut good = Client::new(&address).authkey(KEY).connect().unwrap();
    good.set_read_timeout(Some(WAIT)).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 && start.elapsed() < WAIT {
        good.send_bytes(b"alive").unwrap();
        assert_eq!(good.recv_bytes().unwrap(), b"alive");
        while let Ok(ev) = rx.try_recv() {
            if let Ev::Close(_, reason) = ev {
                reasons.push(reason);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    reasons.sort();
    assert_eq!(reasons, ["HandshakeTimeout", "IdleTimeout"]);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    drop(silent);
    stop(handle, t);
}

#[test]
fn the_reactor_connects_to_a_blocking_pipe_listener() {
    reactor_client_against(fresh_pipe());
}

#[test]
fn the_reactor_connects_to_a_blocking_tcp_listener() {
    reactor_client_against(Address::inet("127.0.0.1", 0));
}

fn reactor_client_against(address: Address) {
    let mut listener = Listener::builder().address(&address).authkey(KEY).bind().unwrap();
    let (handle, rx, t) = spawn_client_reactor(listener.address().clone(), ConnectionOptions::new().authkey(KEY));
    let mut conn = listener.accept().unwrap();
    let id = match rx.recv_timeout(WAIT).unwrap() {
        Ev::Open(id) => id,
        other => panic!("expected open, got {other:?}"),
    };
    conn.send_bytes(b"from the listener").unwrap();
    conn.send_bytes(&pattern(200_000, 9)).unwrap();
    match rx.recv_timeout(WAIT).unwrap() {
        Ev::Msg(m) => assert_eq!(m, b"from the listener"),
        other => panic!("expected a message, got {other:?}"),
    }
    match rx.recv_timeout(WAIT).unwrap() {
        Ev::Msg(m) => assert!(m == pattern(200_000, 9)),
        other => panic!("expected a message, got {other:?}"),
    }
    handle.send(id, b"from the reactor".to_vec()).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"from the reactor");
    drop(conn);
    match rx.recv_timeout(WAIT).unwrap() {
        Ev::Close(_, reason) => assert_eq!(reason, "PeerClosed"),
        other => panic!("expected a close, got {other:?}"),
    }
    stop(handle, t);
}

#[test]
fn a_reactor_client_waits_for_a_busy_pipe() {
    let address = fresh_pipe();
    let mut listener = Listener::builder().address(&address).backlog(1).bind().unwrap();
    let _first = Client::new(&address).connect().unwrap();
    let (handle, rx, t) = spawn_client_reactor(address.clone(), ConnectionOptions::new());
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "opened while the pipe was busy");
    let _c1 = listener.accept().unwrap();
    let mut c2 = listener.accept_within(Some(WAIT)).unwrap();
    let id = match rx.recv_timeout(WAIT).unwrap() {
        Ev::Open(id) => id,
        other => panic!("expected open, got {other:?}"),
    };
    handle.send(id, b"made it".to_vec()).unwrap();
    c2.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(c2.recv_bytes().unwrap(), b"made it");
    stop(handle, t);
}

#[test]
fn a_raw_pipe_client_sees_python_framing() {
    // Without a key the listener speaks first only when the client does: a raw client writes
    // one pipe message and reads the echo as one message with no length prefix, as Python's
    // PipeConnection would.
    let (address, handle, _rx, t) = spawn_reactor(ListenOptions::new(), true);
    let Address::Pipe(name) = &address else { panic!("not a pipe") };
    let mut raw = open_raw(name);
    raw.write_all(b"no prefix here").unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"no prefix here");
    stop(handle, t);
}

/// Opens the pipe as a plain file, retrying while every instance is busy (as Python's client
/// does, more briefly).
fn open_raw(name: &str) -> std::fs::File {
    let deadline = Instant::now() + WAIT;
    loop {
        match std::fs::OpenOptions::new().read(true).write(true).open(name) {
            Ok(f) => return f,
            // ERROR_PIPE_BUSY
            Err(e) if e.raw_os_error() == Some(231) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("cannot open {name}: {e}"),
        }
    }
}

#[test]
fn hostile_pipe_peers_close_only_their_own_connection() {
    // Without auto-pause, so the flood below is closed at the high-water mark (with it, the
    // default, the flooder's blocking pipe writes would simply wait, as tests/reactor_hostile.rs shows
    // over TCP).
    let options = ListenOptions::new().authkey(KEY).connection(
        ConnectionOptions::new()
            .authkey(KEY)
            .max_message_size(64 << 10)
            .high_water_mark(1 << 20)
            .auto_pause_reading(false),
    );
    let (address, handle, rx, t) = spawn_reactor(options, true);
    let Address::Pipe(name) = address.clone() else { panic!("not a pipe") };
    let mut good = Client::new(&address).authkey(KEY).connect().unwrap();
    good.set_read_timeout(Some(WAIT)).unwrap();
    let mut round_trip = || {
        good.send_bytes(b"alive").unwrap();
        assert_eq!(good.recv_bytes().unwrap(), b"alive");
    };
    let next_close = || loop {
        match rx.recv_timeout(WAIT).expect("a close within the time limit") {
            Ev::Close(_, reason) => return reason,
            _ => continue,
        }
    };
    round_trip();

    // A 10 MiB message against a 64 KiB limit: refused from its first read, not buffered.
    let mut big = Client::new(&address).authkey(KEY).connect().unwrap();
    let sender = thread::spawn(move || big.send_bytes(&vec![1u8; 10 << 20]).is_ok());
    let reason = next_close();
    assert!(reason.starts_with("Protocol(TooLarge"), "{reason}");
    assert!(!sender.join().unwrap(), "the server cannot have taken all of it");
    round_trip();

    // A client that floods and never reads its echoes: closed at the high-water mark (auto-pause
    // off).
    let mut flood = Client::new(&address).authkey(KEY).connect().unwrap();
    let flood_start = Instant::now();
    let flooder = thread::spawn(move || {
        let body = vec![9u8; 60 << 10];
        let mut sent = 0usize;
        while sent < 64 << 20 && flood.send_bytes(&body).is_ok() {
            sent += body.len();
        }
        sent
    });
    // The handler closed it; its queued echoes cannot all leave (the flooder reads nothing), so
    // the close ends when the close-flush time runs out and says the output was dropped.
    let reason = next_close();
    assert!(reason == "Local" || reason == "Error(Timeout(CloseFlush))", "{reason}");
    let sent = flooder.join().unwrap();
    assert!(sent < 64 << 20, "the flood was never stopped ({sent} bytes taken)");
    eprintln!("flood of {sent} bytes stopped after {:?}", flood_start.elapsed());
    round_trip();

    // Connect-and-drop without a word, many times: each is closed, nothing stays behind.
    for _ in 0..200 {
        drop(open_raw(&name));
    }
    for _ in 0..200 {
        let reason = next_close();
        assert!(reason.contains("Disconnected") || reason == "PeerClosed", "{reason}");
    }
    round_trip();
    let (count_tx, count_rx) = mpsc::channel();
    handle
        .call(move |ctx: &mut Context<'_>| {
            let _ = count_tx.send(ctx.entry_count());
        })
        .unwrap();
    // The listener and the good client.
    assert_eq!(count_rx.recv_timeout(WAIT).unwrap(), 2);
    stop(handle, t);
}

/// Greets every connection as it opens.
struct Greeter;

impl Handler for Greeter {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        let _ = ctx.send(conn, b"hello");
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = ctx.send(conn, message);
    }
}

#[test]
fn a_connection_outlives_the_thread_that_opened_it() {
    // A pipe's I/O must not belong to the thread that happened to start it: the thread that
    // connects here ends at once, while the server's greeting is on its way. (Under Wine, I/O
    // left by an ended thread completed with garbage, before reads moved to the pipe thread.)
    let address = fresh_pipe();
    let (ready_tx, ready_rx) = mpsc::channel();
    let a = address.clone();
    let server = thread::spawn(move || {
        let mut reactor = Reactor::new(Greeter).unwrap();
        reactor.listen(&a, ListenOptions::new()).unwrap();
        ready_tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
    });
    let handle = ready_rx.recv_timeout(WAIT).unwrap();
    for i in 0..300 {
        let a = address.clone();
        let mut client = thread::spawn(move || Client::new(a).connect().unwrap()).join().unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(client.recv_bytes().unwrap(), b"hello", "connection {i}");
        let mut client = thread::spawn(move || {
            client.send_bytes(b"from a second thread").unwrap();
            client
        })
        .join()
        .unwrap();
        assert_eq!(client.recv_bytes().unwrap(), b"from a second thread", "connection {i}");
    }
    stop(handle, server);
}

#[test]
fn a_closed_listener_frees_its_name_at_once() {
    for _ in 0..50 {
        let address = fresh_pipe();
        drop(Listener::bind(&address).unwrap());
        // The name is free again: a new listener takes it, and a client that finds no pipe
        // fails at once rather than reaching a leftover instance.
        let mut again = Listener::bind(&address).unwrap();
        let a = address.clone();
        let t = thread::spawn(move || Client::new(a).connect().map(|mut c| c.send_bytes(b"x")));
        let mut conn = again.accept_within(Some(WAIT)).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"x");
        t.join().unwrap().unwrap().unwrap();
        drop(again);
        drop(conn);
        assert!(Client::new(&address).connect().is_err(), "a closed listener still took a client");
    }
}

#[test]
fn tcp_connections_split_into_halves_and_pipe_connections_say_they_cannot() {
    use std::os::windows::io::AsRawSocket;

    // TCP: one thread sends while another receives, both ways.
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey(KEY).bind().unwrap();
    assert_eq!(listener.as_raw_socket() as usize, listener.fileno().unwrap());
    let address = listener.address().clone();
    let peer = thread::spawn(move || -> mpconn::Result<()> {
        let conn = Client::new(address).authkey(KEY).connect()?;
        let (mut reader, mut writer) = conn.into_split()?;
        let sender = thread::spawn(move || -> mpconn::Result<()> {
            for i in 0..2000u32 {
                writer.send_bytes(&i.to_be_bytes())?;
            }
            Ok(())
        });
        for i in 0..2000u32 {
            assert_eq!(reader.recv_bytes()?, i.to_be_bytes());
        }
        sender.join().unwrap()
    });
    let conn = listener.accept_within(Some(WAIT)).unwrap();
    let (mut reader, mut writer) = conn.into_split().unwrap();
    reader.set_read_timeout(Some(WAIT)).unwrap();
    writer.set_write_timeout(Some(WAIT)).unwrap();
    let sender = thread::spawn(move || -> mpconn::Result<()> {
        for i in 0..2000u32 {
            writer.send_bytes(&i.to_be_bytes())?;
        }
        Ok(())
    });
    for i in 0..2000u32 {
        assert_eq!(reader.recv_bytes().unwrap(), i.to_be_bytes());
    }
    sender.join().unwrap().unwrap();
    peer.join().unwrap().unwrap();

    // A named pipe: a clear error, not a panic.
    let (a, _b) = mpconn::pipe(true).unwrap();
    match a.into_split() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
