//! The tokio face's limits and deadlines: the handshake deadline against a dribbling peer and a
//! silent listener, none at all without a key, a huge first frame refused at once, a declared but
//! unsent large message and a terabyte long header, and the memory 2,000 unauthenticated
//! connections hold. Every wait is bounded; every Python process is killed on drop.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use common::tokio_face::*;

/// A Unix-socket listener with the key "k" and the given handshake deadline.
fn keyed_unix_listener(handshake: Duration) -> Listener {
    Listener::builder().family(Family::Unix).authkey("k").handshake_timeout(Some(handshake)).bind().unwrap()
}

/// A client that answers the challenge one byte every 400 ms: the handshake deadline (1.5 s)
/// must still end it (each byte must not re-arm or starve the deadline).
#[test]
fn handshake_deadline_fires_for_a_dribbling_peer() {
    let _serial = shared();
    const DRIBBLE: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(4096)
frame = struct.pack("!i", 100) + b"x" * 100
print("DRIBBLING", flush=True)
for b in frame:
    try:
        s.send(bytes([b]))
    except OSError:
        print("GONE", flush=True)
        break
    time.sleep(0.4)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = keyed_unix_listener(Duration::from_millis(1500));
        let py = Py::script(DRIBBLE, &[&l.address().to_string()]);
        let t = Instant::now();
        let e = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap_err();
        assert_eq!(py.line(), "DRIBBLING");
        let took = t.elapsed();
        println!("dribbling peer: {e:?} after {took:?}");
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    });
}

/// A client whose first frame declares 100 MB during the handshake: refused at once (not at the
/// deadline), with the blocking face's error.
#[test]
fn huge_first_frame_during_handshake_is_refused_at_once() {
    let _serial = shared();
    const HUGE: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(4096)
s.sendall(struct.pack("!i", 100000000) + b"y" * 1000)
print("SENT", flush=True)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = keyed_unix_listener(Duration::from_secs(20));
        let _py = Py::script(HUGE, &[&l.address().to_string()]);
        let t = Instant::now();
        let e = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap_err();
        println!("huge first frame: {e:?} / {e} after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, Error::Authentication(_) | Error::Protocol(_)), "{e:?}");
    });
}

/// An async client with a key meeting a CPython listener that accepts and says nothing: the
/// client's handshake deadline must fire.
#[test]
fn async_client_handshake_deadline_against_a_silent_listener() {
    let _serial = exclusive();
    const SILENT_LISTENER: &str = r#"
import socket, sys, time, os, tempfile
d = tempfile.mkdtemp()
p = os.path.join(d, "s")
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(p); l.listen(5)
print(p, flush=True)
c, _ = l.accept()
time.sleep(30)
"#;
    let py = Py::script(SILENT_LISTENER, &[]);
    let path = py.line();
    rt().block_on(async {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            Client::new(path.as_str()).authkey("k").handshake_timeout(Some(Duration::from_millis(700))).connect(),
        )
        .await
        .expect("the client's handshake deadline did not fire within 20 s");
        let e = r.unwrap_err();
        println!("silent listener: {e:?} after {:?}", t.elapsed());
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    });
}

/// Without a key there is no handshake: a handshake timeout must not end a keyless connection
/// whose peer is quiet for longer (client side and listener side).
#[test]
fn keyless_connections_have_no_handshake_deadline() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder()
            .family(Family::Unix)
            .handshake_timeout(Some(Duration::from_millis(300)))
            .bind()
            .unwrap();
        let addr = l.address().to_string();
        let client = tokio::spawn(async move {
            let mut c =
                Client::new(addr.as_str()).handshake_timeout(Some(Duration::from_millis(300))).connect().await.unwrap();
            // Quiet for 1 s, then talk.
            let first = c.recv_bytes().await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            c.send_bytes(b"late").await.unwrap();
            first
        });
        let mut s = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        s.send_bytes(b"late too").await.unwrap();
        let got = tokio::time::timeout(STEP, s.recv_bytes()).await.unwrap();
        let first = client.await.unwrap();
        assert_eq!(first.expect("client's first receive after 1 s"), b"late too");
        assert_eq!(got.expect("listener's receive after 2 s"), b"late");
    });
}

/// A peer that declares a 120 MiB message (under the 128 MiB default limit), sends 1 MiB of it
/// and stalls: the receiver must hold about what arrived, not what was declared.
#[test]
fn declared_but_unsent_large_message_does_not_allocate_its_length() {
    let _serial = exclusive();
    const STALL: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("!i", 120 << 20) + b"z" * (1 << 20))
print("SENT", flush=True)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let py = Py::script(STALL, &[&l.address().to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let before = rss_kib();
        let r = tokio::time::timeout(Duration::from_secs(3), conn.recv_bytes()).await;
        assert!(r.is_err(), "no whole message");
        assert_eq!(py.line(), "SENT");
        let after = rss_kib();
        println!("RSS {before} KiB -> {after} KiB after 1 MiB of a declared 120 MiB message");
        assert!(after - before < 8 * 1024, "{} KiB", after - before);
    });
}

/// A long header declaring 2^40 bytes: refused at once as too large.
#[test]
fn long_header_of_a_terabyte_is_refused() {
    let _serial = shared();
    const TB: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40) + b"q" * 100)
time.sleep(30)
"#;
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let _py = Py::script(TB, &[&l.address().to_string()]);
        let mut conn = tokio::time::timeout(STEP, l.accept()).await.unwrap().unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), conn.recv_bytes())
            .await
            .expect("refused at once")
            .unwrap_err();
        println!("terabyte header: {e:?} / {e}");
        assert!(e.to_string().contains("bad message length"), "{e}");
    });
}

/// 2,000 unauthenticated clients that connected and sent one byte, each handshake in its own
/// task (as examples/async_echo.rs does): the server holds under 8 KiB for each (64-byte read
/// blocks while authenticating, as the reactor's few hundred bytes; measured and printed).
#[test]
fn memory_held_by_2000_handshaking_connections() {
    let _serial = exclusive();
    const N: usize = 2000;
    rt().block_on(async {
        let mut l = keyed_unix_listener(Duration::from_secs(60));
        let path = l.address().to_string();
        let before = rss_kib();
        let clients = thread::spawn(move || {
            use std::io::{Read, Write};
            let mut v = Vec::new();
            for _ in 0..N {
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                let mut ch = [0u8; 4096];
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let _ = s.read(&mut ch).unwrap();
                s.write_all(&[0]).unwrap();
                v.push(s);
            }
            v
        });
        let mut tasks = Vec::new();
        for _ in 0..N {
            let inc = tokio::time::timeout(STEP, l.accept_incoming()).await.unwrap().unwrap();
            tasks.push(tokio::spawn(inc.handshake()));
        }
        // Let every handshake read its byte.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib();
        let per = (after.saturating_sub(before)) * 1024 / N as u64;
        println!("RSS {before} KiB -> {after} KiB: {per} bytes per handshaking connection");
        let socks = clients.join().unwrap();
        drop(socks);
        for t in tasks {
            t.abort();
        }
        assert!(per < 8 * 1024, "{per} bytes per unauthenticated connection (reactor: a few hundred)");
    });
}
