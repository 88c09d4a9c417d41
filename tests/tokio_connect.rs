//! Connecting on the tokio face when the listener is slow to accept: a Unix listener whose
//! backlog is full makes a non-blocking connect fail with EAGAIN on Linux; the async client
//! waits for the accept instead, as Python's Client and the blocking face do (1,000 clients at
//! once against a backlog of 128). Every wait is bounded.
#![cfg(all(unix, feature = "tokio"))]

mod common;

use common::tokio_face::*;

/// A Unix listener at `path` with a backlog of 1 whose thread starts accepting only after
/// 500 ms, then takes 8 clients (and holds them 1 s): clients connecting meanwhile find its
/// backlog full.
fn slow_listener_with_backlog_1(path: &std::path::Path) -> thread::JoinHandle<()> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    sock.bind(&socket2::SockAddr::unix(path).unwrap()).unwrap();
    sock.listen(1).unwrap();
    let listener: std::os::unix::net::UnixListener = std::os::fd::OwnedFd::from(sock).into();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let mut kept = Vec::new();
        for _ in 0..8 {
            kept.push(listener.accept().unwrap().0);
        }
        thread::sleep(Duration::from_secs(1));
    })
}

/// Linux refuses a non-blocking connect to a Unix socket whose backlog is full with EAGAIN
/// (not EINPROGRESS). Python's Client and the blocking face wait until the listener accepts;
/// the async client should too (it should not fail with "Resource temporarily unavailable").
#[test]
fn async_unix_client_waits_for_a_full_backlog() {
    let _serial = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let acceptor = slow_listener_with_backlog_1(&path);
    // The blocking face's client, for comparison, in threads: expected to wait, and succeed.
    rt().block_on(async {
        let addr = path.to_str().unwrap().to_string();
        let mut conns = Vec::new();
        for i in 0..8 {
            let r = tokio::time::timeout(Duration::from_secs(10), Client::new(addr.as_str()).connect()).await;
            match r {
                Ok(Ok(c)) => conns.push(c),
                Ok(Err(e)) => panic!("async connect {i} failed while the listener's backlog was full: {e:?}"),
                Err(_) => panic!("async connect {i} timed out"),
            }
        }
    });
    acceptor.join().unwrap();
}

/// 1,000 async clients connecting at once to an async Unix listener on the same runtime
/// (backlog 128): every one connects, as Python's Client would, waiting for the accept rather
/// than failing with EAGAIN (`WouldBlock`).
#[test]
fn thousand_concurrent_async_unix_clients_to_an_async_listener() {
    let _serial = shared();
    rt().block_on(async {
        let mut l = Listener::builder().family(Family::Unix).bind().unwrap();
        let addr = l.address().to_string();
        let server = tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                match l.accept().await {
                    Ok(c) => kept.push(c),
                    Err(e) => panic!("accept: {e:?}"),
                }
            }
        });
        let mut clients = Vec::new();
        for _ in 0..1000 {
            let a = addr.clone();
            clients.push(tokio::spawn(async move { Client::new(a.as_str()).connect().await }));
        }
        let (mut ok, mut would_block, mut other) = (0, 0, 0);
        for c in clients {
            match tokio::time::timeout(STEP, c).await.expect("bounded").unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => {
                    other += 1;
                    println!("{e:?}");
                }
            }
        }
        server.abort();
        println!("{ok} connected, {would_block} failed with WouldBlock, {other} other errors");
        assert_eq!(ok, 1000, "{would_block} connects failed with EAGAIN");
    });
}

/// The blocking face's client waits for a full backlog too, as Python does.
#[test]
fn blocking_unix_client_waits_for_a_full_backlog() {
    let _serial = shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let acceptor = slow_listener_with_backlog_1(&path);
    let addr = path.to_str().unwrap().to_string();
    let mut conns = Vec::new();
    for i in 0..8 {
        match mpconn::Client::new(addr.as_str()).connect() {
            Ok(c) => conns.push(c),
            Err(e) => panic!("blocking connect {i}: {e:?}"),
        }
    }
    acceptor.join().unwrap();
}
