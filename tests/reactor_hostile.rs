//! Hostile peers against a live reactor while a well-behaved client keeps doing round trips:
//! each case asserts how the hostile connection ends and that the good client never noticed.
//! Plus the security properties: nothing reaches the handler before both directions of the
//! handshake succeeded, challenges are never reused, keys never show up in Debug or logs, Unix
//! socket files are 0600 and removed. Every wait is bounded. (The same attacks on every face,
//! with latency and RSS figures, are `tests/attacks.rs`.)
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::frames::read_frame;

use mpconn::CloseReason;
use mpconn::internal::handshake::{Handshake, HandshakeConfig, Nonce};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor};
use mpconn::{Address, AuthKey, Client, Digest};

const KEY: &str = "hostile-test-secret-key";

/// These tests measure memory and use short deadlines: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Ev {
    Open(ConnId),
    Msg(ConnId),
    Close(ConnId, String),
}

/// Echoes; a connection whose queue is full is closed (a reader that never reads).
struct Guard {
    tx: mpsc::Sender<Ev>,
}

impl Handler for Guard {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &Address) {
        let _ = self.tx.send(Ev::Open(conn));
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = self.tx.send(Ev::Msg(conn));
        if ctx.send(conn, message).is_err() {
            ctx.close(conn);
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let _ = self.tx.send(Ev::Close(conn, format!("{reason:?}")));
    }
}

struct Server {
    addr: SocketAddr,
    address: Address,
    handle: Handle,
    events: mpsc::Receiver<Ev>,
    thread: Option<thread::JoinHandle<()>>,
    good: ConnId,
    good_stop: Arc<AtomicBool>,
    good_trips: Arc<AtomicUsize>,
    good_failures: Arc<Mutex<Vec<String>>>,
    good_thread: Option<thread::JoinHandle<()>>,
    /// Messages the handler got from connections other than the good one.
    hostile_messages: std::cell::Cell<usize>,
}

fn options() -> ListenOptions {
    ListenOptions::new().connection(
        ConnectionOptions::new()
            .authkey(KEY)
            .max_message_size(1 << 20)
            .high_water_mark(1 << 20)
            .handshake_timeout(Some(Duration::from_secs(1)))
            .partial_message_timeout(Some(Duration::from_secs(1))),
    )
}

impl Server {
    fn start() -> Server {
        let (tx, events) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut reactor = Reactor::new(Guard { tx }).unwrap();
            let l = reactor.listen("127.0.0.1:0", options()).unwrap();
            ready_tx.send((reactor.listener_address(l).unwrap().clone(), reactor.handle())).unwrap();
            reactor.run().unwrap();
        });
        let (address, handle) = ready_rx.recv_timeout(WAIT).unwrap();
        let addr = address.resolve().unwrap()[0];
        // The well-behaved client: one connection, round trips until told to stop.
        let good_stop = Arc::new(AtomicBool::new(false));
        let good_trips = Arc::new(AtomicUsize::new(0));
        let good_failures = Arc::new(Mutex::new(Vec::new()));
        let mut conn = Client::new(&address).authkey(KEY).connect().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let Ev::Open(good) = events.recv_timeout(WAIT).unwrap() else { panic!("the good client did not open") };
        let (stop, trips, failures) = (good_stop.clone(), good_trips.clone(), good_failures.clone());
        let good_thread = thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = i.to_le_bytes();
                match conn.send_bytes(&m).and_then(|()| conn.recv_bytes()) {
                    Ok(back) if back == m => {
                        trips.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        return;
                    }
                }
                i += 1;
                thread::sleep(Duration::from_millis(2));
            }
        });
        Server {
            addr,
            address,
            handle,
            events,
            thread: Some(thread),
            good,
            good_stop,
            good_trips,
            good_failures,
            good_thread: Some(good_thread),
            hostile_messages: std::cell::Cell::new(0),
        }
    }

    /// The close reason of the next connection other than the good one that closes.
    fn next_hostile_close(&self) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.events.recv_timeout(WAIT) {
                Ok(Ev::Close(id, reason)) if id != self.good => return reason,
                Ok(Ev::Msg(id)) if id != self.good => self.hostile_messages.set(self.hostile_messages.get() + 1),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no hostile connection closed within {WAIT:?}");
    }

    fn assert_good_client_unharmed(&self) {
        let before = self.good_trips.load(Ordering::Relaxed);
        let deadline = Instant::now() + WAIT;
        while self.good_trips.load(Ordering::Relaxed) < before + 5 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(self.good_trips.load(Ordering::Relaxed) >= before + 5, "the good client stalled");
        assert!(self.good_failures.lock().unwrap().is_empty(), "{:?}", self.good_failures.lock().unwrap());
    }

    fn count_entries(&self) -> usize {
        let (tx, rx) = mpsc::channel();
        self.handle.call(move |ctx| tx.send(ctx.entry_count()).unwrap()).unwrap();
        rx.recv_timeout(WAIT).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.good_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.good_thread.take() {
            let _ = t.join();
        }
        let _ = self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_frame(s: &mut TcpStream, body: &[u8]) {
    common::frames::write_frame(s, body).unwrap();
}

fn raw(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A raw socket that completed the real handshake (through the sans-IO state machine).
fn authenticated(server: &Server) -> TcpStream {
    let mut s = raw(server);
    let mut hs = Handshake::client(&HandshakeConfig::new(AuthKey::from(KEY)), Nonce::random().unwrap());
    loop {
        while let Some(m) = hs.poll_transmit() {
            write_frame(&mut s, &m);
        }
        if hs.is_complete() {
            return s;
        }
        let m = read_frame(&mut s).unwrap();
        hs.handle_message(&m).unwrap();
    }
}

/// RSS of this process in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn hostile_handshakes_are_cut_and_the_good_client_carries_on() {
    let _serial = serial();
    let server = Server::start();
    let rss0 = rss();

    // Declared lengths no handshake message may have, as the reply to the challenge.
    for header in [
        &[0x7f, 0xff, 0xff, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
        &[0xff, 0xff, 0xff, 0xfb],
        &[0, 0, 1, 1],
    ] {
        let mut s = raw(&server);
        read_frame(&mut s).unwrap();
        s.write_all(header).unwrap();
        let reason = server.next_hostile_close();
        assert!(reason.starts_with("AuthenticationFailed(Protocol("), "{header:?}: {reason}");
    }
    // A reply of 257 bytes, declared and sent.
    let mut s = raw(&server);
    read_frame(&mut s).unwrap();
    write_frame(&mut s, &[b'x'; 257]);
    assert!(server.next_hostile_close().starts_with("AuthenticationFailed(Protocol("));

    // The wrong key: #FAILURE# comes back.
    let mut s = raw(&server);
    let challenge = read_frame(&mut s).unwrap();
    let mac = Digest::Sha256.mac(b"wrong key", &challenge[11..]);
    write_frame(&mut s, &[b"{sha256}".as_slice(), mac.as_bytes()].concat());
    assert_eq!(read_frame(&mut s).unwrap(), b"#FAILURE#");
    assert_eq!(server.next_hostile_close(), "AuthenticationFailed(DigestMismatch)");

    // The wrong dialect: a processing-style SHA-1 reply to a CPython challenge.
    let mut s = raw(&server);
    let challenge = read_frame(&mut s).unwrap();
    write_frame(&mut s, Digest::Sha1.mac(KEY.as_bytes(), &challenge[11..]).as_bytes());
    assert!(server.next_hostile_close().starts_with("AuthenticationFailed("));

    // Never answering, and dribbling the reply a byte at a time: the handshake deadline.
    let _silent = raw(&server);
    let t = Instant::now();
    assert_eq!(server.next_hostile_close(), "HandshakeTimeout");
    assert!(t.elapsed() < Duration::from_secs(5));
    let mut dribbler = raw(&server);
    read_frame(&mut dribbler).unwrap();
    let dribble = thread::spawn(move || {
        for b in [0u8, 0, 0, 40].into_iter().chain(1..=26) {
            if dribbler.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(server.next_hostile_close(), "HandshakeTimeout");
    dribble.join().unwrap();

    // Half-close right away.
    let s = raw(&server);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.next_hostile_close(), "AuthenticationFailed(Disconnected)");

    // A user frame instead of the client's challenge, after a correct reply: never delivered.
    let mut s = raw(&server);
    let challenge = read_frame(&mut s).unwrap();
    let mac = Digest::Sha256.mac(KEY.as_bytes(), &challenge[11..]);
    write_frame(&mut s, &[b"{sha256}".as_slice(), mac.as_bytes()].concat());
    assert_eq!(read_frame(&mut s).unwrap(), b"#WELCOME#");
    write_frame(&mut s, &mpconn::pickle::dumps(&("a", "pickle"), 3).unwrap());
    assert!(server.next_hostile_close().starts_with("AuthenticationFailed(Protocol("));

    server.assert_good_client_unharmed();
    assert_eq!(server.hostile_messages.get(), 0, "nothing reaches the handler before the handshake succeeded");
    let grown = rss().saturating_sub(rss0);
    assert!(grown < 32 << 20, "memory grew by {grown} bytes");
    println!("hostile handshakes: memory grew by {} KiB", grown / 1024);
}

#[test]
fn hostile_frames_after_authentication_close_only_that_connection() {
    let _serial = serial();
    let server = Server::start();
    let rss0 = rss();
    for (header, expected) in [
        (&[0x7f, 0xff, 0xff, 0xff][..], "Protocol(TooLarge"),
        (&[0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0][..], "Protocol(TooLarge"),
        (&[0xff, 0xff, 0xff, 0xfe][..], "Protocol(NegativeLength(-2))"),
        (&[0, 0x10, 0, 1][..], "Protocol(TooLarge"),
    ] {
        let mut s = authenticated(&server);
        s.write_all(header).unwrap();
        let reason = server.next_hostile_close();
        assert!(reason.starts_with(expected), "{header:?}: {reason}");
    }
    // A frame dribbled forever: the partial-message deadline.
    let mut s = authenticated(&server);
    s.write_all(&[0, 0, 0, 100, 1, 2]).unwrap();
    let dribble = thread::spawn(move || {
        for _ in 0..20 {
            if s.write_all(&[7]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(server.next_hostile_close(), "PartialMessageTimeout");
    dribble.join().unwrap();

    // A reset in the middle of a frame.
    let mut s = authenticated(&server);
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let reason = server.next_hostile_close();
    // The reset may overtake the client's last handshake message (an RST discards what the
    // server had not read yet): then the session sees a peer gone during the handshake.
    assert!(
        reason == "PeerClosedMidMessage"
            || reason.starts_with("Error(")
            || reason == "AuthenticationFailed(Disconnected)",
        "{reason}"
    );

    // A reader that never reads, while it floods: with `auto_pause_reading` (the default) the
    // server stops reading it once its queue reaches the high-water mark, so TCP throttles the
    // flood instead of the server dropping it; memory stays bounded. When the flooder gives up
    // (its write times out) and goes, the connection closes.
    let mut s = authenticated(&server);
    let body = vec![9u8; 64 * 1024];
    let flood = thread::spawn(move || {
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut sent = 0;
        for _ in 0..3200 {
            // 200 MiB offered.
            if s.write_all(&(body.len() as u32).to_be_bytes()).is_err() || s.write_all(&body).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let reason = server.next_hostile_close();
    assert!(reason.starts_with("Error(") || reason.starts_with("PeerClosed"), "{reason}");
    let sent = flood.join().unwrap();
    assert!(sent < 3200, "the flood was throttled, not swallowed ({sent} messages went out)");
    server.assert_good_client_unharmed();
    let grown = rss().saturating_sub(rss0);
    assert!(grown < 48 << 20, "memory grew by {grown} bytes");
    println!("hostile frames: memory grew by {} KiB", grown / 1024);
}

#[test]
fn thousands_of_connect_and_drop_leave_nothing_behind() {
    let _serial = serial();
    let server = Server::start();
    for _ in 0..3000 {
        drop(TcpStream::connect(server.addr).unwrap());
    }
    let mut closed = 0;
    while closed < 3000 {
        match server.events.recv_timeout(WAIT).unwrap() {
            Ev::Close(id, reason) if id != server.good => {
                assert!(
                    // A drop is seen as end of file, a reset, or (on a starved machine) not before
                    // the handshake deadline: closed every time, never leaked.
                    reason.starts_with("AuthenticationFailed(Disconnected)")
                        || reason.starts_with("Error(")
                        || reason == "HandshakeTimeout",
                    "{reason}"
                );
                closed += 1;
            }
            _ => {}
        }
    }
    assert_eq!(server.count_entries(), 2, "the listener and the good client");
    server.assert_good_client_unharmed();
}

#[test]
fn garbage_instead_of_a_challenge_fails_a_reactor_client() {
    let _serial = serial();
    let raw_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw_server.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = raw_server.accept().unwrap();
        write_frame(&mut s, b"#NOT-A-CHALLENGE# hello");
        thread::sleep(Duration::from_millis(500));
    });
    let (tx, rx) = mpsc::channel();
    let mut reactor = Reactor::new(Guard { tx }).unwrap();
    reactor.connect(addr, ConnectionOptions::new().authkey(KEY)).unwrap();
    let deadline = Instant::now() + WAIT;
    let reason = loop {
        reactor.run_once(Some(Duration::from_millis(50))).unwrap();
        if let Ok(Ev::Close(_, r)) = rx.try_recv() {
            break r;
        }
        assert!(Instant::now() < deadline);
    };
    assert!(reason.starts_with("AuthenticationFailed(Protocol("), "{reason}");
    assert!(rx.try_iter().all(|e| !matches!(e, Ev::Open(_) | Ev::Msg(..))), "nothing delivered");
    t.join().unwrap();
}

#[test]
fn challenges_come_fresh_for_every_connection() {
    let _serial = serial();
    let server = Server::start();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let mut s = raw(&server);
        let c = read_frame(&mut s).unwrap();
        assert_eq!(c.len(), 59);
        assert!(seen.insert(c[19..].to_vec()), "a challenge was reused");
    }
}

/// Collects every log line.
struct Capture(Mutex<Vec<String>>);
impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!("{} {}", r.target(), r.args()));
    }
    fn flush(&self) {}
}
static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn keys_never_show_in_debug_output_logs_or_errors() {
    let _serial = serial();
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let secret = KEY;
    let debug_views = [
        format!("{:?}", AuthKey::from(secret)),
        format!("{:?}", options()),
        format!("{:?}", HandshakeConfig::new(AuthKey::from(secret))),
        format!("{:?}", Handshake::client(&HandshakeConfig::new(AuthKey::from(secret)), Nonce::random().unwrap())),
        format!("{:?}", Client::new("127.0.0.1:1").authkey(secret)),
        format!("{:?}", mpconn::Listener::builder().authkey(secret)),
    ];
    for d in &debug_views {
        assert!(!d.contains(secret) && !d.contains(&AuthKey::from(secret).to_hex()), "{d}");
    }
    // A failing handshake, logged at trace level on both sides.
    let server = Server::start();
    let e = Client::new(&server.address).authkey("another-secret-value").connect().unwrap_err();
    assert!(!e.to_string().contains("another-secret-value"));
    let _ = server.next_hostile_close();
    drop(server);
    let lines = CAPTURE.0.lock().unwrap();
    assert!(!lines.is_empty(), "the reactor logged nothing at trace level");
    for l in lines.iter() {
        assert!(!l.contains(secret) && !l.contains("another-secret-value"), "{l}");
    }
}

#[test]
fn reactor_unix_socket_files_are_0600_and_removed() {
    let _serial = serial();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let (tx, _rx) = mpsc::channel();
    let mut reactor = Reactor::new(Guard { tx }).unwrap();
    let l = reactor.listen(path.as_path(), ListenOptions::new()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(reactor.with_context(|ctx| ctx.close_listener(l)));
    assert!(!path.exists());
    let path2 = dir.path().join("r2.sock");
    reactor.listen(path2.as_path(), ListenOptions::new()).unwrap();
    drop(reactor);
    assert!(!path2.exists(), "dropping the reactor removes its socket files");
}
