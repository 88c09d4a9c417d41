//! The async face (`mpconn::tokio`) against real CPython: an async listener serving
//! `multiprocessing.connection.Client`s of CPython 3.11 and 3.13 (TCP and Unix, right and wrong
//! key, pickled objects both ways, 50 clients at once on one current-thread runtime), an async
//! client of CPython 3.11 and 2.7 listeners, cancellation safety of receive, the refusal to send
//! after a torn send, the handshake deadline against a silent peer, an oversized message and end
//! of file mid-frame. Every wait is bounded (`STEP`), every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;
use common::python::pyenv_python;

use futures_util::{SinkExt, StreamExt};
use mpconn::pickle::Value;
use mpconn::tokio::{Client, Connection, Listener};
use mpconn::{Address, AuthKey, AuthenticationError, Error, Family};

const KEY: &str = "async key";
const STEP: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// CPython 3.11 (`python3`, required) and 3.13 (pyenv, when installed: named SKIPPED otherwise).
fn cpythons() -> Vec<(String, PathBuf)> {
    let mut found = vec![("3.11".to_string(), PathBuf::from("python3"))];
    match pyenv_python("3.13") {
        Some(p) => found.push(("3.13".into(), p)),
        None => println!("SKIPPED: CPython 3.13 (not installed)"),
    }
    found
}

/// A Python process whose stdout lines arrive on a channel; killed on drop.
struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Py {
    fn spawn(exe: &Path, args: &[&str]) -> Py {
        let mut child =
            Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start python");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Py { child, lines }
    }

    /// peer.py in `mode` (`listen` / `connect`) at `address` with `key` (None: no key).
    fn peer(exe: &Path, mode: &str, address: &str, key: Option<&str>) -> Py {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py");
        let key_hex = key.map(|k| AuthKey::from(k).to_hex()).unwrap_or_else(|| "none".into());
        Py::spawn(exe, &[script.to_str().expect("utf-8 path"), mode, address, &key_hex])
    }

    /// An inline script with `sys.argv[1:] = args`.
    fn script(code: &str, args: &[&str]) -> Py {
        let mut all = vec!["-c", code];
        all.extend_from_slice(args);
        Py::spawn(Path::new("python3"), &all)
    }

    fn expect_line(&self, prefix: &str) -> String {
        let line = self.lines.recv_timeout(STEP).unwrap_or_else(|_| panic!("no line {prefix:?} within {STEP:?}"));
        assert!(line.starts_with(prefix), "expected {prefix:?}, got {line:?}");
        line[prefix.len()..].trim().to_string()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step within the bound")
}

async fn ask(conn: &mut Connection, command: &[u8]) -> Vec<u8> {
    bounded(async {
        conn.send_bytes(command).await.expect("send");
        conn.recv_bytes().await.expect("recv")
    })
    .await
}

fn listener(family: Family, key: Option<&str>) -> Listener {
    let b = match family {
        Family::Inet => Listener::builder().address("127.0.0.1:0"),
        f => Listener::builder().family(f),
    };
    match key {
        Some(k) => b.authkey(k).bind().expect("bind"),
        None => b.bind().expect("bind"),
    }
}

/// The conversation with a peer.py serving a connection: bytes, objects both ways, big
/// messages both ways, recv_bytes_into on the Python side.
async fn converse(conn: &mut Connection, version: &str) {
    assert_eq!(ask(conn, b"echo:hello").await, b"hello");
    assert_eq!(ask(conn, b"echo:").await, b"");
    let v = String::from_utf8(ask(conn, b"version").await).expect("utf-8");
    assert!(v.starts_with(version), "CPython {version} reports {v}");

    // A Rust value to Python and back; Python also reports its repr.
    let sent = Value::from(vec![Value::Int(1), Value::Float(2.5), Value::from("é€"), Value::None]);
    bounded(async {
        conn.send_bytes(b"obj").await.expect("send");
        conn.send_value(&sent).await.expect("send value");
        let back = conn.recv_value().await.expect("recv value");
        assert_eq!(back, sent);
        let repr = conn.recv_bytes().await.expect("repr");
        assert_eq!(repr, "[1, 2.5, 'é€', None]".as_bytes());
    })
    .await;

    // A Python value to Rust.
    let got: Value = bounded(async {
        conn.send_bytes(b"send_obj").await.expect("send");
        conn.recv_value().await.expect("recv")
    })
    .await;
    assert_eq!(
        mpconn::pickle::repr(&got),
        "{'hello': 'world', 'n': 1, 'list': [1, 2.5, None, True], 'tuple': (1, 'a')}"
    );

    // Big both ways (the large-message write path and the decoder's large reads).
    assert_eq!(ask(conn, b"big:3000000").await, pattern(3_000_000));
    bounded(async {
        conn.send_bytes(b"recvbig").await.expect("send");
        conn.send_bytes(&pattern(5_000_000)).await.expect("send big");
        assert_eq!(conn.recv_bytes().await.expect("verdict"), b"match:5000000");
    })
    .await;
    // Python's recv_bytes_into of our next message, too short and long enough.
    bounded(async {
        conn.send_bytes(b"into:4").await.expect("send");
        assert_eq!(ask(conn, b"hello").await, b"short:5");
        conn.send_bytes(b"into:10").await.expect("send");
        assert_eq!(ask(conn, b"hello").await, b"ok:5:hello");
    })
    .await;
}

#[test]
fn cpython_clients_over_tcp_and_unix_with_the_right_key() {
    rt().block_on(async {
        for (version, exe) in cpythons() {
            for family in [Family::Inet, Family::Unix] {
                let mut l = listener(family, Some(KEY));
                let py = Py::peer(&exe, "connect", &l.address().to_string(), Some(KEY));
                let mut conn = bounded(l.accept()).await.expect("accept");
                py.expect_line("CONNECTED");
                converse(&mut conn, &version).await;
                conn.send_bytes(b"quit").await.expect("quit");
                assert!(matches!(bounded(conn.recv_bytes()).await, Err(Error::Eof)));
                py.expect_line("DONE");
                println!("CPython {version} client over {family:?}: ok");
            }
        }
    });
}

#[test]
fn cpython_client_with_a_wrong_key_fails_that_accept_only() {
    rt().block_on(async {
        for family in [Family::Inet, Family::Unix] {
            let mut l = listener(family, Some(KEY));
            let address = l.address().to_string();
            let bad = Py::peer(Path::new("python3"), "connect", &address, Some("not the key"));
            let e = bounded(l.accept()).await.expect_err("a wrong key must fail");
            assert!(matches!(e, Error::Authentication(AuthenticationError::DigestMismatch)), "{e:?}");
            assert!(bad.expect_line("AUTHFAIL").contains("digest"), "Python names the failure");
            // The listener keeps serving.
            let good = Py::peer(Path::new("python3"), "connect", &address, Some(KEY));
            let mut conn = bounded(l.accept()).await.expect("accept");
            good.expect_line("CONNECTED");
            assert_eq!(ask(&mut conn, b"echo:after").await, b"after");
        }
    });
}

#[test]
fn async_client_to_cpython_listeners_311_and_27() {
    let mut pythons = vec![("3.11".to_string(), PathBuf::from("python3"))];
    match pyenv_python("2.7") {
        Some(p) => pythons.push(("2.7".into(), p)),
        None => println!("SKIPPED: CPython 2.7 (not installed)"),
    }
    rt().block_on(async {
        for (version, exe) in pythons {
            for family in ["127.0.0.1:0", "unix"] {
                let dir = tempfile::tempdir().expect("temp dir");
                let address = match family {
                    "unix" => dir.path().join("py.sock").to_str().expect("utf-8").to_string(),
                    a => a.to_string(),
                };
                let py = Py::peer(&exe, "listen", &address, Some(KEY));
                let bound = py.expect_line("READY");
                let mut conn = bounded(Client::new(bound.as_str()).authkey(KEY).connect()).await.expect("connect");
                py.expect_line("CONNECTED");
                assert_eq!(ask(&mut conn, b"echo:hi").await, b"hi");
                let v = String::from_utf8(ask(&mut conn, b"version").await).expect("utf-8");
                assert!(v.starts_with(&version), "{v}");
                // Python 2.7 reads protocol 2, what an md5 handshake tells us.
                let expected_protocol = if version == "2.7" || version == "3.11" { 2 } else { 4 };
                assert_eq!(conn.pickle_protocol(), expected_protocol);
                bounded(async {
                    conn.send_bytes(b"obj").await.expect("send");
                    conn.send(&vec![1i64, 2, 3]).await.expect("send obj");
                    let back: Vec<i64> = conn.recv().await.expect("recv obj");
                    assert_eq!(back, [1, 2, 3]);
                    assert_eq!(conn.recv_bytes().await.expect("repr"), b"[1, 2, 3]");
                })
                .await;
                conn.send_bytes(b"quit").await.expect("quit");
                py.expect_line("DONE");
                println!("async client to CPython {version} listener at {address}: ok");
            }
        }
    });
}

#[test]
fn keyless_async_client_meeting_a_keyed_cpython_listener_is_told_a_key_is_required() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = dir.path().join("keyed.sock").to_str().expect("utf-8").to_string();
        let py = Py::peer(Path::new("python3"), "listen", &address, Some(KEY));
        let bound = py.expect_line("READY");
        let mut conn = bounded(Client::new(bound.as_str()).connect()).await.expect("connect without key");
        let e = bounded(conn.recv_bytes()).await.expect_err("no key");
        assert!(matches!(e, Error::Authentication(AuthenticationError::KeyRequired)), "{e:?}");
    });
}

#[test]
fn fifty_cpython_clients_at_once_on_one_current_thread_runtime() {
    rt().block_on(async {
        let mut l = listener(Family::Unix, Some(KEY));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/many_clients.py");
        let key_hex = AuthKey::from(KEY).to_hex();
        let address = l.address().to_string();
        let py = Py::spawn(Path::new("python3"), &[script.to_str().expect("utf-8"), &address, &key_hex, "50", "20"]);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for _ in 0..50 {
                    let incoming = bounded(l.accept_incoming()).await.expect("accept");
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut conn = incoming.handshake().await?;
                        let mut echoed = 0;
                        loop {
                            match conn.recv_bytes().await {
                                Ok(m) => {
                                    conn.send_bytes(&m).await?;
                                    echoed += 1;
                                }
                                Err(Error::Eof) => return Ok::<usize, Error>(echoed),
                                Err(e) => return Err(e),
                            }
                        }
                    }));
                }
                let mut total = 0;
                for t in tasks {
                    total += bounded(t).await.expect("task").expect("connection served");
                }
                assert_eq!(total, 50 * 20);
            })
            .await;
        assert_eq!(py.expect_line("OK"), "1000");
    });
}

/// Python writes large messages in small slices with pauses (raw socket, the real framing);
/// the receive is cancelled by a 1 ms timeout again and again; every message must arrive whole.
#[test]
fn recv_is_cancel_safe_under_repeated_timeouts() {
    const SLOW_SENDER: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for i in range(12):
    n = 100000 + 7919 * i
    body = (bytes(bytearray(range(251))) * (n // 251 + 1))[:n]
    frame = struct.pack("!i", n) + body
    for at in range(0, len(frame), 6000):
        s.sendall(frame[at:at + 6000])
        time.sleep(0.0005)
s.close()
"#;
    rt().block_on(async {
        let mut l = listener(Family::Unix, None);
        let _py = Py::script(SLOW_SENDER, &[&l.address().to_string()]);
        let mut conn = bounded(l.accept()).await.expect("accept");
        let mut cancelled = 0u32;
        let mut received = 0usize;
        let deadline = tokio::time::Instant::now() + STEP;
        while received < 12 {
            assert!(tokio::time::Instant::now() < deadline, "bounded");
            match tokio::time::timeout(Duration::from_millis(1), conn.recv_bytes()).await {
                Err(_) => cancelled += 1,
                Ok(m) => {
                    let m = m.expect("message");
                    assert_eq!(m, pattern(100000 + 7919 * received), "message {received} intact");
                    received += 1;
                }
            }
        }
        assert!(matches!(bounded(conn.recv_bytes()).await, Err(Error::Eof)));
        assert!(cancelled > 12, "the receive was cancelled mid-message ({cancelled} times)");
        println!("12 messages intact through {cancelled} cancelled receives");
    });
}

/// A send of a large message dropped mid-frame (the peer does not read) leaves the connection
/// refusing further sends with a clear error; receiving still works.
#[test]
fn a_cancelled_large_send_refuses_further_sends() {
    const NO_READER: &str = r#"
import sys, time
from multiprocessing.connection import Client
c = Client(sys.argv[1])
c.send_bytes(b"before")
time.sleep(3)
c.send_bytes(b"after")
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = listener(Family::Unix, None);
        let _py = Py::script(NO_READER, &[&l.address().to_string()]);
        let mut conn = bounded(l.accept()).await.expect("accept");
        assert_eq!(bounded(conn.recv_bytes()).await.expect("first"), b"before");
        let big = vec![7u8; 64 << 20];
        let r = tokio::time::timeout(Duration::from_millis(200), conn.send_bytes(&big)).await;
        assert!(r.is_err(), "64 MiB cannot go out to a peer that does not read");
        let e = conn.send_bytes(b"small").await.expect_err("a torn stream must refuse sends");
        assert!(matches!(e, Error::Closed(why) if why.contains("cancelled")), "{e:?}");
        let e = conn.feed_bytes(b"small").expect_err("feeding too");
        assert!(matches!(e, Error::Closed(_)), "{e:?}");
        assert_eq!(bounded(conn.recv_bytes()).await.expect("receiving still works"), b"after");
    });
}

/// A client that connects and says nothing: the handshake deadline ends the accept.
#[test]
fn handshake_deadline_ends_a_silent_peer() {
    const SILENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("CONNECTED", flush=True)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .authkey(KEY)
            .handshake_timeout(Some(Duration::from_millis(300)))
            .bind()
            .expect("bind");
        let py = Py::script(SILENT, &[&l.address().to_string()]);
        let started = std::time::Instant::now();
        let e = bounded(l.accept()).await.expect_err("a silent peer cannot authenticate");
        py.expect_line("CONNECTED");
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(10), "{took:?}");
    });
}

#[test]
fn oversized_message_is_a_clear_error() {
    const BIG: &str = r#"
import sys, time
from multiprocessing.connection import Client
c = Client(sys.argv[1])
c.send_bytes(b"x" * 2000)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).max_message_size(1024).bind().expect("bind");
        let _py = Py::script(BIG, &[&l.address().to_string()]);
        let mut conn = bounded(l.accept()).await.expect("accept");
        let e = bounded(conn.recv_bytes()).await.expect_err("over the limit");
        assert!(matches!(e, Error::Protocol(mpconn::FrameError::TooLarge { len: 2000, limit: 1024 })), "{e:?}");
        assert!(e.to_string().contains("bad message length"), "{e}");
        assert!(!conn.readable());
        assert!(matches!(conn.recv_bytes().await, Err(Error::Closed(_))));
    });
}

#[test]
fn end_of_file_mid_frame_is_a_clear_error() {
    const TORN: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("!i", 3) + b"abc" + struct.pack("!i", 100) + b"0123456789")
s.close()
"#;
    rt().block_on(async {
        let mut l = listener(Family::Unix, None);
        let _py = Py::script(TORN, &[&l.address().to_string()]);
        let mut conn = bounded(l.accept()).await.expect("accept");
        assert_eq!(bounded(conn.recv_bytes()).await.expect("whole message first"), b"abc");
        let e = bounded(conn.recv_bytes()).await.expect_err("torn frame");
        assert!(matches!(e, Error::EofInMessage), "{e:?}");
    });
}

/// The Sink batches (feed many, flush once) and the Stream yields each reply, against a CPython
/// client echoing; poll() mirrors Python's conn.poll(timeout).
#[test]
fn stream_sink_and_poll_against_cpython() {
    rt().block_on(async {
        let mut l = listener(Family::Inet, Some(KEY));
        let py = Py::peer(Path::new("python3"), "connect", &l.address().to_string(), Some(KEY));
        let mut conn = bounded(l.accept()).await.expect("accept");
        py.expect_line("CONNECTED");
        assert!(!conn.poll(Some(Duration::ZERO)).await.expect("poll"), "nothing yet");
        conn.send_bytes(b"echo:ping").await.expect("send");
        assert!(bounded(conn.poll(None)).await.expect("poll"), "the echo arrives");
        assert!(conn.has_buffered_message());
        assert_eq!(conn.recv_bytes().await.expect("recv"), b"ping");

        let commands: Vec<Vec<u8>> = (0..1000).map(|i| format!("echo:{i}").into_bytes()).collect();
        bounded(async {
            for c in &commands {
                conn.feed(c.as_slice()).await.expect("feed");
            }
            conn.flush().await.expect("flush");
        })
        .await;
        for i in 0..1000 {
            let m = bounded(conn.next()).await.expect("an item").expect("a message");
            assert_eq!(m, format!("{i}").into_bytes());
        }
        SinkExt::<&[u8]>::send(&mut conn, b"quit".as_slice()).await.expect("quit");
        assert!(bounded(conn.next()).await.is_none(), "the stream ends at the peer's clean close");
        py.expect_line("DONE");
        let addr: Address = l.address().clone();
        assert_eq!(addr.family(), Family::Inet);
    });
}

/// `recv_bytes_with` hands each message to a closure as a slice of the buffer: a CPython
/// client's empty, small and 5 MB messages arrive whole (length and checksum as Python computed
/// them), after an authenticated handshake.
#[test]
fn recv_bytes_with_sees_every_message_whole_without_copying() {
    const SENDER: &str = r#"
import sys
from multiprocessing.connection import Client
c = Client(sys.argv[1], authkey=sys.argv[2].encode())
for n in (0, 1, 1000, 5000000):
    data = bytes((i * 7 + n) % 251 for i in range(n))
    c.send_bytes(data)
    print(n, sum(data), flush=True)
c.recv_bytes()
"#;
    rt().block_on(async {
        let mut l = listener(Family::Unix, Some(KEY));
        let py = Py::script(SENDER, &[&l.address().to_string(), KEY]);
        let mut conn = bounded(l.accept()).await.expect("accept");
        for _ in 0..4 {
            let (len, sum) = bounded(conn.recv_bytes_with(|m| (m.len(), m.iter().map(|&b| u64::from(b)).sum::<u64>())))
                .await
                .expect("a message");
            let expected = py.lines.recv_timeout(STEP).expect("python's line");
            assert_eq!(format!("{len} {sum}"), expected);
        }
        conn.send_bytes(b"done").await.expect("send");
    });
}

/// Before: the async `Connection` could not be split, so one task could not send while another
/// received (`&mut self` on both), and it had no `AsFd`/`AsRawFd`. Here a CPython client sends
/// 8 MiB from a thread while its main thread receives 8 MiB: a single task that sent everything
/// before receiving would deadlock once both socket buffers are full; the two halves, in two
/// tasks of a current-thread runtime, finish. Closing the writer gives the peer end of file
/// while the reader still receives.
#[test]
fn split_halves_send_and_receive_at_once_against_cpython() {
    const BOTH_WAYS: &str = r#"
import sys, threading
from multiprocessing.connection import Client
c = Client(sys.argv[1], authkey=sys.argv[2].encode())
N, SIZE = 64, 128 * 1024
def send():
    for i in range(N):
        c.send_bytes(bytes([i % 251]) * SIZE)
t = threading.Thread(target=send)
t.start()
ok = all(c.recv_bytes() == bytes([(i * 7) % 251]) * SIZE for i in range(N))
try:
    c.recv_bytes()
    print("NO EOF", flush=True)
except EOFError:
    print("EOF", flush=True)
t.join()
c.send_bytes(b"after the writer closed")
print("OK" if ok else "BAD", flush=True)
c.close()
"#;
    const N: usize = 64;
    const SIZE: usize = 128 * 1024;
    rt().block_on(async {
        let mut l = listener(Family::Unix, Some(KEY));
        let py = Py::script(BOTH_WAYS, &[&l.address().to_string(), KEY]);
        let conn = bounded(l.accept()).await.expect("accept");
        {
            use std::os::fd::{AsFd, AsRawFd};
            assert_eq!(conn.as_raw_fd(), conn.fileno().expect("fileno"));
            assert_eq!(conn.as_fd().as_raw_fd(), conn.fileno().expect("fileno"));
        }
        let (mut reader, mut writer) = conn.into_split().expect("split");
        {
            use std::os::fd::AsRawFd;
            assert_ne!(reader.as_raw_fd(), writer.as_raw_fd(), "the writer has a descriptor of its own");
            assert_eq!(reader.as_raw_fd(), reader.fileno().expect("fileno"));
            // Two descriptors of one socket.
            let socket_of = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("a descriptor");
            #[cfg(target_os = "linux")]
            assert_eq!(socket_of(reader.as_raw_fd()), socket_of(writer.as_raw_fd()));
            let _ = socket_of;
        }

        let sender = tokio::spawn(async move {
            for i in 0..N {
                writer.send_bytes(&vec![((i * 7) % 251) as u8; SIZE]).await?;
            }
            writer.close().await?;
            assert!(writer.send_bytes(b"late").await.is_err(), "a closed writer refuses sends");
            Ok::<_, Error>(())
        });
        let received = bounded(async {
            let mut n = 0;
            while n < N {
                let m = reader.recv_bytes().await.expect("a message");
                assert_eq!(m, vec![(n % 251) as u8; SIZE], "message {n}");
                n += 1;
            }
            n
        })
        .await;
        assert_eq!(received, N);
        bounded(sender).await.expect("sender task").expect("sender");
        py.expect_line("EOF");
        assert_eq!(bounded(reader.recv_bytes()).await.expect("still reading"), b"after the writer closed");
        py.expect_line("OK");
        assert!(matches!(bounded(reader.recv_bytes()).await, Err(Error::Eof)));
    });
}

/// The halves are a Stream and a Sink as the whole connection is.
#[test]
fn split_halves_are_a_stream_and_a_sink() {
    rt().block_on(async {
        let mut l = listener(Family::Unix, Some(KEY));
        let address = l.address().clone();
        let client = tokio::spawn(async move {
            let mut conn = Client::new(address).authkey(KEY).connect().await?;
            for _ in 0..100 {
                let m = conn.recv_bytes().await?;
                conn.send_bytes(&m).await?;
            }
            Ok::<_, Error>(())
        });
        let (mut reader, mut writer) = bounded(l.accept()).await.expect("accept").into_split().expect("split");
        bounded(async {
            for i in 0..100u32 {
                writer.feed(i.to_be_bytes().to_vec()).await.expect("feed");
            }
            writer.flush().await.expect("flush");
        })
        .await;
        for i in 0..100u32 {
            let m = bounded(reader.next()).await.expect("an item").expect("a message");
            assert_eq!(m, i.to_be_bytes());
        }
        bounded(client).await.expect("client task").expect("client");
        assert!(bounded(reader.next()).await.is_none(), "the stream ends at the peer's clean close");
    });
}
