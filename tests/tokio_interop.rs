//! The tokio face against real Python: every installed CPython (2.7, 3.6-3.13) both ways with
//! the right and a wrong key, the `processing` and Red Hat dialects both ways, and 2,000
//! CPython connections at once on one current-thread runtime. A missing interpreter is skipped
//! with a message. Every wait is bounded; every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use common::tokio_face::*;

/// Every installed CPython (2.7, 3.6–3.13) as client of the async listener, right and wrong key,
/// and as listener for the async client, right and wrong key.
#[test]
fn every_cpython_both_directions_right_and_wrong_key() {
    let _serial = shared();
    const PYCLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
try:
    c = Client(sys.argv[1], authkey=sys.argv[2].encode())
    c.send_bytes(b"ping")
    print("GOT " + c.recv_bytes().decode())
except Exception as e:
    print("ERR " + type(e).__name__)
sys.stdout.flush()
"#;
    const PYLISTENER: &str = r#"
import sys, os, tempfile
from multiprocessing.connection import Listener
d = tempfile.mkdtemp()
l = Listener(os.path.join(d, "s"), authkey=sys.argv[1].encode())
print(l.address); sys.stdout.flush()
try:
    c = l.accept()
    c.send_bytes(c.recv_bytes())
    print("SERVED")
except Exception as e:
    print("ERR " + type(e).__name__)
sys.stdout.flush()
import time; time.sleep(2)
"#;
    let versions = common::python::pyenv_versions();
    let mut failures = Vec::new();
    for v in &versions {
        let Some(exe) = common::python::pyenv_python(v) else { continue };
        for (key, good) in [("k", true), ("wrong", false)] {
            // Python client -> async listener.
            rt().block_on(async {
                let mut l = Listener::builder().family(Family::Unix).authkey("k").bind().unwrap();
                let child = Command::new(&exe)
                    .args(["-c", PYCLIENT, &l.address().to_string(), key])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(20), async {
                    let mut c = l.accept().await?;
                    let m = c.recv_bytes().await?;
                    c.send_bytes(&m).await?;
                    Ok::<(), Error>(())
                })
                .await
                .expect("bounded");
                let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
                let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let ok = if good {
                    r.is_ok() && line == "GOT ping"
                } else {
                    matches!(r, Err(Error::Authentication(_))) && line == "ERR AuthenticationError"
                };
                println!("{v} client key={key}: server {r:?}, python {line}");
                if !ok {
                    failures.push(format!("{v} client key={key}: server {r:?}, python {line}"));
                }
            });
            // Async client -> Python listener.
            let mut child = Command::new(&exe).args(["-c", PYLISTENER, "k"]).stdout(Stdio::piped()).spawn().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let path = lines.next().unwrap().unwrap();
            let r = rt().block_on(async {
                tokio::time::timeout(Duration::from_secs(20), async {
                    let mut c = Client::new(path.as_str()).authkey(key).connect().await?;
                    c.send_bytes(b"pong").await?;
                    c.recv_bytes().await
                })
                .await
                .expect("bounded")
            });
            let line = lines.next().map(|l| l.unwrap()).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            let ok = if good {
                matches!(&r, Ok(m) if m == b"pong") && line == "SERVED"
            } else {
                matches!(r, Err(Error::Authentication(_))) && line == "ERR AuthenticationError"
            };
            println!("{v} listener key={key}: client {r:?}, python {line}");
            if !ok {
                failures.push(format!("{v} listener key={key}: client {r:?}, python {line}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The `processing` dialect (CPython 2.7 with the `processing` package) and Red Hat's patched
/// handshake (CPython 3.11 patched by peer.py --rhel), both directions, on the async face.
#[test]
fn processing_and_rhel_dialects_both_directions() {
    let _serial = shared();
    use mpconn::AuthKey;
    use mpconn::Dialect;
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/peer.py");
    let key_hex = AuthKey::from("dk").to_hex();
    let cases = [
        ("/root/.pyenv/versions/2.7.18/bin/python", "--processing", Dialect::Processing, Dialect::Cpython),
        ("/root/.pyenv/versions/3.11.7/bin/python", "--rhel", Dialect::Cpython, Dialect::CpythonLegacySha256),
    ];
    let mut failures = Vec::new();
    for (exe, flag, listener_dialect, client_dialect) in cases {
        // Python client -> async listener.
        let r: Result<Vec<u8>, Error> = rt().block_on(async {
            let mut l =
                Listener::builder().family(Family::Unix).authkey("dk").dialect(listener_dialect).bind().unwrap();
            let py = spawn_py(exe, &[peer, "connect", &l.address().to_string(), &key_hex, flag]);
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                let mut c = l.accept().await?;
                c.send_bytes(b"echo:hi").await?;
                c.recv_bytes().await
            })
            .await
            .expect("bounded");
            drop(py);
            r
        });
        println!("{flag} python client -> async listener: {r:?}");
        if !matches!(&r, Ok(m) if m == b"hi") {
            failures.push(format!("{flag} client: {r:?}"));
        }
        // Async client -> Python listener.
        let dir = tempfile::tempdir().unwrap();
        let address = dir.path().join("p.sock").to_str().unwrap().to_string();
        let py = spawn_py(exe, &[peer, "listen", &address, &key_hex, flag]);
        let bound = py.line();
        let bound = bound.strip_prefix("READY").unwrap_or(&bound).trim().to_string();
        let r = rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                let mut c = Client::new(bound.as_str()).authkey("dk").dialect(client_dialect).connect().await?;
                c.send_bytes(b"echo:ho").await?;
                c.recv_bytes().await
            })
            .await
            .expect("bounded")
        });
        println!("{flag} async client -> python listener: {r:?}");
        if !matches!(&r, Ok(m) if m == b"ho") {
            failures.push(format!("{flag} listener: {r:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// 2,000 CPython connections at once (one Python process) against the async listener on one
/// current-thread runtime, each handshake and echo in its own task.
#[test]
fn two_thousand_cpython_clients_on_one_current_thread_runtime() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Inet).authkey("k").bind().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/many_clients.py");
        let child = Command::new("python3")
            .args([script, &l.address().to_string(), "6b", "2000", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let server = async {
            loop {
                let inc = l.accept_incoming().await.expect("accept");
                tokio::spawn(async move {
                    let mut c = inc.handshake().await?;
                    loop {
                        match c.recv_bytes().await {
                            Ok(m) => c.send_bytes(&m).await?,
                            Err(Error::Eof) => return Ok::<(), Error>(()),
                            Err(e) => return Err(e),
                        }
                    }
                });
            }
        };
        let waiter = tokio::task::spawn_blocking(move || {
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        });
        let out = tokio::select! {
            _ = server => unreachable!(),
            o = tokio::time::timeout(Duration::from_secs(240), waiter) => o.expect("bounded").unwrap(),
        };
        assert_eq!(out.trim(), "OK 6000");
    });
}
