//! The public API's shape: conversions, trait implementations and the ways a refused send is
//! reported (issue 19, frictions a new user met writing programs from the docs alone). Each test
//! fails to compile or fails its assertion on the API before the change it names.
// Reactor tests use Unix sockets; the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError};
use mpconn::{Address, Client, Error};

/// The longest any test waits for one thing.
const WAIT: Duration = Duration::from_secs(30);

/// A handler that runs `check` once in `on_open` of the first connection, sends its result on a
/// channel, and stops the reactor.
struct OnOpen<F> {
    check: Option<F>,
}

impl<F, R> Handler for OnOpen<F>
where
    F: FnOnce(&mut Context<'_>, ConnId) -> R,
{
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        if let Some(check) = self.check.take() {
            check(ctx, conn);
            ctx.stop();
        }
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
}

/// Runs a reactor (this thread, bounded in time) with one listener using `options`, connects one
/// blocking client to it, and runs `check` in `on_open`.
fn with_open_connection<R: Send + 'static>(
    options: ConnectionOptions,
    check: impl FnOnce(&mut Context<'_>, ConnId) -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let mut reactor = Reactor::new(OnOpen {
        check: Some(move |ctx: &mut Context<'_>, conn| {
            let _ = tx.send(check(ctx, conn));
        }),
    })
    .expect("reactor");
    let listener = reactor.listen("127.0.0.1:0", ListenOptions::new().connection(options)).expect("listen");
    let address = reactor.listener_address(listener).expect("bound").clone();
    let client = thread::spawn(move || {
        let mut conn = Client::new(address).connect().expect("connect");
        // Hold the connection until the reactor closes it.
        let _ = conn.recv_bytes();
    });
    let start = Instant::now();
    while !reactor.is_stopped() {
        assert!(start.elapsed() < WAIT, "the reactor did not stop in time");
        reactor.run_once(Some(Duration::from_millis(50))).expect("turn");
    }
    client.join().expect("client thread");
    rx.recv_timeout(WAIT).expect("the check ran")
}

/// Before: a full queue made `send_pickle` report `Error::Closed("the write queue is full")`, as
/// if the connection were gone. Now it is `Error::Send(SendError::Full { .. })` with the cause as
/// the error's source, and nothing was queued.
#[test]
#[cfg(feature = "pickle")]
fn send_pickle_to_a_full_queue_says_full_and_keeps_the_cause() {
    let (error, queued_before, queued_after) =
        with_open_connection(ConnectionOptions::new().high_water_mark(1024), |ctx, conn| {
            ctx.send(conn, &[7u8; 4096]).expect("the first message fits under the mark");
            let before = ctx.queued_bytes(conn);
            let error = ctx.send_pickle(conn, &"hello").expect_err("the queue is over its mark");
            (error, before, ctx.queued_bytes(conn))
        });
    assert!(
        matches!(error, Error::Send(SendError::Full { high_water_mark: 1024, .. })),
        "a full queue is reported as full: {error:?}"
    );
    assert_eq!(queued_before, queued_after, "a refused pickle queues nothing");
    let source = std::error::Error::source(&error).expect("the SendError is the source");
    assert!(source.to_string().contains("full"), "{source}");
    assert!(!error.to_string().contains("closed"), "{error}");
}

/// Before: `SendError` had no conversion into `Error`, so `?` did not work on `Context::send`
/// or `send_owned` in a function returning `mpconn::Result`.
#[test]
fn send_errors_convert_into_error_with_question_mark() {
    fn send(ctx: &mut Context<'_>, conn: ConnId) -> mpconn::Result<()> {
        ctx.send(conn, b"fits")?;
        Ok(())
    }
    fn send_owned(ctx: &mut Context<'_>, conn: ConnId) -> mpconn::Result<()> {
        ctx.send_owned(conn, b"fits".to_vec())?;
        Ok(())
    }
    let (sent, unknown, owned_unknown) = with_open_connection(ConnectionOptions::new(), |ctx, conn| {
        let sent = send(ctx, conn).is_ok();
        let gone = conn;
        ctx.close(gone);
        (sent, send(ctx, gone).unwrap_err(), send_owned(ctx, gone).unwrap_err())
    });
    assert!(sent);
    assert!(matches!(unknown, Error::Send(SendError::Closing | SendError::NoSuchConnection)), "{unknown:?}");
    assert!(
        matches!(owned_unknown, Error::Send(SendError::Closing | SendError::NoSuchConnection)),
        "{owned_unknown:?}"
    );
    let e: Error = SendError::NotOpen.into();
    assert_eq!(std::error::Error::source(&e).map(|s| s.to_string()), Some(SendError::NotOpen.to_string()));
}

/// Before: `&String`, `&SocketAddr` and `(String, u16)` were no `IntoAddress`, and `String` no
/// `AuthKey`, so `Client::new(&args[1])` or `.authkey(env_var)` did not compile.
#[test]
fn addresses_and_keys_from_owned_and_borrowed_strings() {
    use mpconn::{AuthKey, IntoAddress, Listener};

    let text = String::from("127.0.0.1:6000");
    let socket: std::net::SocketAddr = "127.0.0.1:6000".parse().expect("socket address");
    let expected = Address::inet("127.0.0.1", 6000);
    assert_eq!((&text).into_address().expect("&String"), expected);
    assert_eq!((&socket).into_address().expect("&SocketAddr"), expected);
    assert_eq!(("127.0.0.1".to_string(), 6000).into_address().expect("(String, u16)"), expected);
    assert_eq!(Address::from(("127.0.0.1".to_string(), 6000u16)), expected);
    assert_eq!(AuthKey::from(String::from("key")).as_bytes(), b"key");
    assert_eq!(AuthKey::from(&String::from("key")).as_bytes(), b"key");

    // And through the builders, end to end.
    let key = String::from("a key from the environment");
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey(key.clone()).bind().expect("bind");
    let port = match listener.address() {
        Address::Inet { port, .. } => *port,
        other => panic!("a TCP listener: {other}"),
    };
    let host = String::from("127.0.0.1");
    let client_key = key.clone();
    let client = thread::spawn(move || {
        let mut conn = Client::new((host, port)).authkey(&client_key).connect().expect("connect");
        conn.send_bytes(b"hi").expect("send");
    });
    let mut conn = listener.accept().expect("accept");
    assert_eq!(conn.recv_bytes().expect("recv"), b"hi");
    client.join().expect("client thread");
}

/// Before: `CloseReason` had no `PartialEq` (so `reason == CloseReason::PeerClosed` did not
/// compile) and `Context` no `Debug` (so `#[derive(Debug)]` on a struct holding what a callback
/// saw, or `dbg!(ctx)`, did not).
#[test]
fn close_reasons_compare_and_context_prints() {
    use mpconn::CloseReason;
    use mpconn::FrameError;

    assert_eq!(CloseReason::PeerClosed, CloseReason::PeerClosed);
    assert_ne!(CloseReason::PeerClosed, CloseReason::Local);
    assert_eq!(
        CloseReason::Protocol(FrameError::NegativeLength(-2)),
        CloseReason::Protocol(FrameError::NegativeLength(-2))
    );
    assert_ne!(
        CloseReason::Protocol(FrameError::NegativeLength(-2)),
        CloseReason::Protocol(FrameError::NegativeLength(-3))
    );
    let reset = || CloseReason::Error(Error::Io(std::io::ErrorKind::ConnectionReset.into()));
    assert_eq!(reset(), reset());
    assert_ne!(reset(), CloseReason::Error(Error::Io(std::io::ErrorKind::BrokenPipe.into())));
    assert_ne!(reset(), CloseReason::Error(Error::Eof));
    assert_eq!(
        CloseReason::Error(Error::Timeout(mpconn::Timeout::Idle)),
        CloseReason::Error(Error::Timeout(mpconn::Timeout::Idle))
    );

    let printed = with_open_connection(ConnectionOptions::new(), |ctx, _| format!("{ctx:?}"));
    assert!(printed.starts_with("Context"), "{printed}");
    assert!(printed.contains("connections: 1"), "{printed}");
    assert!(printed.contains("listeners: 1"), "{printed}");
}

/// Before: `from_value` took `&Value` only, so `from_value(value)` on a value just received did
/// not compile. Both forms work now, and naming the type still does.
#[test]
#[cfg(feature = "pickle")]
fn from_value_takes_a_value_or_a_reference() {
    use mpconn::pickle::{Value, from_value, to_value};

    let value: Value = to_value(&("answer", 42u32)).expect("to_value");
    let borrowed: (String, u32) = from_value(&value).expect("by reference");
    let named = from_value::<(String, u32)>(&value).expect("by reference, type named");
    let owned: (String, u32) = from_value(value).expect("by value");
    assert_eq!(borrowed, ("answer".to_string(), 42));
    assert_eq!(named, borrowed);
    assert_eq!(owned, borrowed);
}

/// A broadcast handler: once `expect` connections are open, sends one shared message to all of
/// them, and reports their ids and what a send to a closed one says.
struct Broadcast {
    expect: usize,
    members: Vec<ConnId>,
    tx: mpsc::Sender<(Vec<ConnId>, Vec<usize>, Option<SendError>)>,
}

impl Handler for Broadcast {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.members.push(conn);
        if self.members.len() < self.expect {
            return;
        }
        let shared = mpconn::reactor::Bytes::from_static(b"to everyone");
        for &m in &self.members {
            ctx.send_shared(m, &shared).expect("queued");
        }
        let queued = self.members.iter().map(|&m| ctx.queued_bytes(m).unwrap_or(0)).collect();
        // The last one closes: a shared send to it is refused as a copy would be.
        let last = self.members[self.members.len() - 1];
        ctx.close(last);
        let refused = ctx.send_shared(last, &shared).err();
        let _ = self.tx.send((self.members.clone(), queued, refused));
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
}

/// Before: a broadcast copied the message into every recipient's queue. `send_shared` queues a
/// reference to one `Bytes` (the unit test in `write_queue.rs` checks every queue points at the
/// same body); here, every recipient gets the message, from `Context` and from `Handle`.
#[test]
fn send_shared_reaches_every_recipient_from_context_and_handle() {
    const CLIENTS: usize = 8;
    let (tx, rx) = mpsc::channel();
    let mut reactor = Reactor::new(Broadcast { expect: CLIENTS, members: Vec::new(), tx }).expect("reactor");
    let listener = reactor.listen("127.0.0.1:0", ListenOptions::new()).expect("listen");
    let address = reactor.listener_address(listener).expect("bound").clone();
    let handle = reactor.handle();
    let server = thread::spawn(move || reactor.run());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let address = address.clone();
            thread::spawn(move || -> Vec<Vec<u8>> {
                let mut conn = Client::new(address).connect().expect("connect");
                conn.set_read_timeout(Some(WAIT)).expect("timeout");
                (0..2).map_while(|_| conn.recv_bytes().ok()).collect()
            })
        })
        .collect();
    let (members, queued, refused) = rx.recv_timeout(WAIT).expect("every client opened");
    assert_eq!(queued, vec![4 + 11; CLIENTS], "each queue holds the header and the body");
    assert!(matches!(refused, Some(SendError::Closing)), "{refused:?}");
    // From another thread: one Bytes, a clone (a reference count) per recipient.
    let second = mpconn::reactor::Bytes::from_static(b"second");
    for &m in &members[..CLIENTS - 1] {
        handle.send_shared(m, second.clone()).expect("reactor running");
    }
    let got: Vec<Vec<Vec<u8>>> = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    for (i, messages) in got.iter().enumerate() {
        // Which client got which id is not known; the one closed got the first message only.
        assert_eq!(messages[0], b"to everyone", "client {i}");
    }
    let with_second = got.iter().filter(|m| m.len() == 2 && m[1] == b"second").count();
    assert_eq!(with_second, CLIENTS - 1);
    handle.stop().expect("stop");
    server.join().expect("reactor thread").expect("reactor run");
}

#[path = "../examples/chat_server.rs"]
#[allow(dead_code)]
mod chat_server;

/// Before: `examples/chat_server.rs`, "broadcast with backpressure", dropped the messages a slow
/// reader's full queue refused (and told it "you missed messages") while senders went on at
/// full speed. Now the room stops reading while a recipient is over its mark: a sender of 4 MiB
/// is held back while one member does not read, and that member then gets every message, in
/// order.
#[test]
fn chat_server_holds_senders_back_and_loses_nothing_for_a_slow_reader() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MESSAGES: usize = 4096;
    const SIZE: usize = 1024;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut reactor = Reactor::new(chat_server::Room::default()).expect("reactor");
    let listener = reactor.listen(dir.path().join("chat.sock"), chat_server::listen_options()).expect("listen");
    let address = reactor.listener_address(listener).expect("bound").clone();
    let handle = reactor.handle();
    let server = thread::spawn(move || reactor.run());

    let mut slow = Client::new(&address).connect().expect("connect the slow reader");
    slow.set_read_timeout(Some(WAIT)).expect("timeout");
    // `connect` returns when the client sent its last handshake message; the room counts the
    // member only once the server read it. Until a probe's join notice reaches the slow reader,
    // it is not a member yet.
    let mut probes = Vec::new();
    for _ in 0..20 {
        probes.push(Client::new(&address).connect().expect("connect a probe"));
        if slow.poll(Some(Duration::from_secs(1))).expect("poll") {
            break;
        }
    }
    let probe_joined = slow.recv_bytes().expect("a probe's join notice");
    assert!(probe_joined.ends_with(b" joined"), "{}", String::from_utf8_lossy(&probe_joined));
    drop(probes); // their "left" notices are skipped below
    let sent = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let sender = {
        let (address, sent) = (address.clone(), sent.clone());
        thread::spawn(move || {
            let mut conn = Client::new(address).connect().expect("connect the sender");
            go_rx.recv_timeout(WAIT).expect("go");
            for i in 0..MESSAGES {
                let mut m = format!("{i:06}").into_bytes();
                m.resize(SIZE, b'.');
                conn.send_bytes(&m).expect("send");
                sent.store(i + 1, Ordering::Release);
            }
            conn
        })
    };
    // The sender's arrival proves it is a member before it speaks.
    let joined = loop {
        let m = slow.recv_bytes().expect("the join notice");
        if !m.ends_with(b" joined") {
            continue;
        }
        break m;
    };
    assert!(joined.starts_with(b"* ") && joined.ends_with(b" joined"), "{}", String::from_utf8_lossy(&joined));
    go_tx.send(()).expect("go");

    // The slow member reads nothing for a while: the sender must be held back.
    let start = Instant::now();
    thread::sleep(Duration::from_millis(800));
    let while_slow = sent.load(Ordering::Acquire);
    assert!(while_slow < MESSAGES, "the sender sent all {MESSAGES} messages while a member was not reading");

    // Now it reads: every message, in order, none missed.
    let mut next = 0;
    while next < MESSAGES {
        assert!(start.elapsed() < WAIT, "bounded");
        let m = slow.recv_bytes().expect("a message");
        let text = String::from_utf8_lossy(&m);
        if text.starts_with("* ") {
            continue; // a probe's notice (join or leave)
        }
        assert!(!text.contains("missed"), "{text}");
        let Some((_, body)) = text.split_once(": ") else { panic!("a member's message: {text}") };
        assert_eq!(&body[..6], format!("{next:06}"), "messages in order, none missing");
        assert_eq!(body.len(), SIZE);
        next += 1;
    }
    let conn = sender.join().expect("sender thread");
    assert_eq!(sent.load(Ordering::Acquire), MESSAGES);
    println!(
        "chat_server: {while_slow} of {MESSAGES} messages sent while a member did not read; all {MESSAGES} arrived"
    );
    drop(conn);
    handle.stop().expect("stop");
    server.join().expect("reactor thread").expect("reactor run");
}
