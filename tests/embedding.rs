//! The reactor embedded in other event loops, driven by real CPython clients: the
//! `embed_tokio` example (tokio, the reactor's descriptor in an `AsyncFd`) and the `embed_poll`
//! example (a host `poll(2)` loop that also reads standard input). Each serves several
//! concurrent CPython 3.11 clients (pickled values and bytes echoed), refuses a wrong key, and
//! drops a silent peer at the handshake deadline: a deadline is a timer no descriptor
//! announces, so this proves the host loops wait on `Reactor::poll_timeout`. The async face's
//! `async_echo` example (feature `tokio`) serves the same clients.
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::servers::{Child2, example};

const KEY: &str = "embedding key";
/// The handshake deadline given to the examples.
const HANDSHAKE: Duration = Duration::from_millis(700);
const CLIENTS: usize = 8;
const ROUND_TRIPS: usize = 150;

/// One CPython client: `ROUND_TRIPS` pickled values and byte strings, each echoed and compared.
const CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
address, key, n, tag = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4]
if not address.startswith("/"):
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
c = Client(address, authkey=key)
for i in range(n):
    value = {"tag": tag, "i": i, "data": [i, str(i) * 3, 1.5 * i, None, b"x" * (i % 50), (i, -i)]}
    c.send(value)
    assert c.recv() == value, "value %d" % i
    data = bytes([i % 256]) * (i * 37 % 5000)
    c.send_bytes(data)
    assert c.recv_bytes() == data, "bytes %d" % i
c.close()
print("OK", tag, n)
"#;

/// A CPython client with the wrong key.
const WRONG_KEY: &str = r#"
import sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
address = sys.argv[1]
if not address.startswith("/"):
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
try:
    Client(address, authkey=b"not the key")
    print("ACCEPTED")
except AuthenticationError as e:
    print("REFUSED", e)
"#;

/// Runs the python3 commands at once; each must exit 0 within a bounded time. Their outputs.
fn run_pythons(commands: Vec<Vec<String>>) -> Vec<String> {
    let children: Vec<_> = commands
        .iter()
        .map(|args| Command::new("python3").args(args).stdout(Stdio::piped()).spawn().expect("start python3"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    children
        .into_iter()
        .map(|mut child| {
            loop {
                if let Some(status) = child.try_wait().expect("wait python3") {
                    let mut out = String::new();
                    child.stdout.take().expect("piped").read_to_string(&mut out).expect("read python3 output");
                    assert!(status.success(), "python3 client failed ({status}): {out}");
                    return out;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("a python3 client did not finish within 60 s");
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

/// Starts the example on `address` (with the key and the short handshake deadline).
fn start(name: &str, address: &str) -> (Child2, String) {
    let mut cmd = Command::new(example(name));
    cmd.args([address, "--authkey", KEY, "--handshake-timeout", &HANDSHAKE.as_secs_f64().to_string()]);
    // embed_poll reads commands on standard input; its end stops it.
    cmd.stdin(Stdio::piped());
    let server = Child2::spawn(cmd, name);
    let bound = server.expect_line("listening on");
    (server, bound)
}

/// Concurrent CPython clients echoed whole, and a wrong key refused.
fn serves_python_clients(bound: &str) {
    let mut commands: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| vec!["-c".into(), CLIENT.into(), bound.into(), KEY.into(), ROUND_TRIPS.to_string(), format!("c{i}")])
        .collect();
    commands.push(vec!["-c".into(), WRONG_KEY.into(), bound.into()]);
    let outputs = run_pythons(commands);
    for (i, out) in outputs[..CLIENTS].iter().enumerate() {
        assert_eq!(out.trim(), format!("OK c{i} {ROUND_TRIPS}"));
    }
    assert!(outputs[CLIENTS].starts_with("REFUSED"), "wrong key: {}", outputs[CLIENTS]);
}

/// A peer that connects and never answers the challenge: the reactor's handshake deadline,
/// fired by the host loop's timeout, closes it (the peer sees the end of the stream).
fn silent_peer_dropped(server: &Child2, mut peer: impl Read + Write) {
    let start = Instant::now();
    let mut header = [0u8; 4];
    peer.read_exact(&mut header).expect("the challenge's header");
    let mut rest = vec![0u8; u32::from_be_bytes(header) as usize];
    peer.read_exact(&mut rest).expect("the challenge");
    assert!(rest.starts_with(b"#CHALLENGE#"));
    // Silent from here on: the next read ends with the close.
    let mut buf = [0u8; 64];
    let n = peer.read(&mut buf).unwrap_or(0);
    let waited = start.elapsed();
    assert_eq!(n, 0, "expected the close, got {n} bytes");
    assert!(waited >= HANDSHAKE - Duration::from_millis(50), "closed after {waited:?}, before the deadline");
    assert!(waited < HANDSHAKE + Duration::from_secs(5), "closed only after {waited:?}");
    let line = server.find_line("conn#");
    assert!(line.ends_with("closed: the handshake timed out"), "{line}");
}

fn unix_peer(path: &str) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn tcp_peer(address: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(address).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn tokio_embedding_serves_python_and_fires_deadlines() {
    // TCP on loopback, port chosen by the system.
    let (server, bound) = start("embed_tokio", "127.0.0.1:0");
    serves_python_clients(&bound);
    silent_peer_dropped(&server, tcp_peer(&bound));
    // Clients still served after the deadline fired.
    serves_python_clients(&bound);
}

#[test]
fn poll_embedding_serves_python_and_fires_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("embed.sock");
    let (mut server, bound) = start("embed_poll", path.to_str().unwrap());
    serves_python_clients(&bound);
    silent_peer_dropped(&server, unix_peer(&bound));

    // The host loop's own descriptor works alongside: a command on standard input...
    let mut stdin = server.child.stdin.take().expect("piped stdin");
    stdin.write_all(b"stats\n").unwrap();
    let stats = server.find_line(&format!("0 open, {} echoed", CLIENTS * ROUND_TRIPS * 2));
    assert!(stats.ends_with("1 handshake timeouts"), "{stats}");
    // ... and its end stops the reactor and the program.
    drop(stdin);
    server.find_line("stopped:");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "embed_poll exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "embed_poll did not exit after its input ended");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn poll_timeout_tells_the_host_loop_about_the_handshake_deadline() {
    use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
    use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};

    struct Quiet;
    impl Handler for Quiet {
        fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    }
    let mut reactor = Reactor::new(Quiet).unwrap();
    let options =
        ListenOptions::new().connection(ConnectionOptions::default().handshake_timeout(Some(HANDSHAKE))).authkey(KEY);
    let listener = reactor.listen("127.0.0.1:0", options).unwrap();
    let address = reactor.listener_address(listener).unwrap().to_string();
    // A new listener's first accept is work for the next turn (a backlog may be waiting).
    assert_eq!(reactor.poll_timeout(), Some(Duration::ZERO));
    reactor.run_once(Some(Duration::ZERO)).unwrap();
    // Then nothing to do and no deadline: only the descriptor can bring work.
    assert_eq!(reactor.next_deadline(), None);
    assert_eq!(reactor.poll_timeout(), None);

    let peer = tcp_peer(&address);
    let started = Instant::now();
    // Turns until the connection is accepted and its handshake deadline is armed.
    while reactor.next_deadline().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "the connection was never accepted");
        assert_eq!(reactor.run_once(Some(Duration::from_millis(50))).unwrap(), Turn::Running);
    }
    let wait = reactor.poll_timeout().expect("a deadline is pending");
    assert!(wait <= HANDSHAKE, "{wait:?}");
    // Waiting what poll_timeout says, then one non-blocking turn at a time, the deadline fires:
    // the connection and its deadline are gone.
    while reactor.len() > 1 || reactor.next_deadline().is_some() {
        assert!(started.elapsed() < HANDSHAKE + Duration::from_secs(5), "the deadline never fired");
        if let Some(wait) = reactor.poll_timeout() {
            thread::sleep(wait);
        }
        reactor.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert!(started.elapsed() >= HANDSHAKE - Duration::from_millis(50));
    assert_eq!(reactor.poll_timeout(), None);
    drop(peer);
}

/// `examples/async_echo.rs` (the async face, one task per client) with the echo_server command
/// line: the same concurrent CPython clients over TCP and a Unix socket, and a wrong key refused.
#[cfg(feature = "tokio")]
#[test]
fn async_echo_example_serves_python_clients() {
    let exe = common::servers::example_with_features("async_echo", &["tokio"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async-echo.sock");
    for address in ["127.0.0.1:0", path.to_str().unwrap()] {
        let mut cmd = Command::new(&exe);
        cmd.args([address, "--authkey", KEY]).stdin(Stdio::null());
        let server = Child2::spawn(cmd, "async_echo");
        let bound = server.expect_line("listening on");
        serves_python_clients(&bound);
        // Still serving after the wrong key.
        serves_python_clients(&bound);
    }
}
