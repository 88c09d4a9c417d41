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

use futures_util::{SinkExt, StreamExt};
use mpconn::pickle::Value;
use mpconn::tokio::{Client, Connection, Listener};
use mpconn::{Address, AuthKey, AuthenticationError, Error, Family};

const KEY: &str = "async key";
const STEP: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn pyenv_python(prefix: &str) -> Option<PathBuf> {
    let out = Command::new("pyenv").args(["versions", "--bare"]).output().ok()?;
    let versions = String::from_utf8_lossy(&out.stdout);
    let version = versions.lines().map(str::trim).rfind(|v| v.starts_with(prefix))?.to_string();
    let out = Command::new("pyenv").args(["prefix", &version]).output().ok()?;
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/python");
    exe.exists().then_some(exe)
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
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python");
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
    assert_eq!(mpconn::pickle::repr(&got), "{'hello': 'world', 'n': 1, 'list': [1, 2.5, None, True], 'tuple': (1, 'a')}");

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
