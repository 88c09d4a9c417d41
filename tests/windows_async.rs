//! The async face (`mpconn::tokio`) on Windows, under Wine (`.ci/run`): named pipes in message
//! mode (no length prefix, as Python's `PipeConnection`) through the crate's pipe transport, and
//! TCP; the peer is the blocking face in a thread. Every wait is bounded.
#![cfg(all(windows, feature = "tokio"))]

use std::thread;
use std::time::Duration;

use mpconn::tokio::{Client as AsyncClient, Listener as AsyncListener};
use mpconn::{Address, AuthenticationError, Client, Error, Family, Listener, arbitrary_address};

const KEY: &str = "pipe key";
const WAIT: Duration = Duration::from_secs(20);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Sizes around the pipe's read size (8 KiB), the empty message, and a large one.
const SIZES: [usize; 8] = [0, 1, 8191, 8192, 8193, 65_536, 100_000, 1 << 20];

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("step within the bound")
}

/// A blocking client that echoes every message until the end, then sends a pickle.
fn blocking_echo_client(address: Address, key: Option<&'static str>) -> thread::JoinHandle<mpconn::Result<usize>> {
    thread::spawn(move || {
        let mut c = Client::new(address);
        if let Some(k) = key {
            c = c.authkey(k);
        }
        let mut c = c.connect()?;
        c.set_read_timeout(Some(WAIT))?;
        let mut n = 0;
        for _ in SIZES {
            let m = c.recv_bytes()?;
            c.send_bytes(&m)?;
            n += 1;
        }
        c.send(&("done", 7))?;
        Ok(n)
    })
}

#[test]
fn async_pipe_listener_keeps_every_message_boundary() {
    rt().block_on(async {
        let address = arbitrary_address(Family::Pipe).expect("pipe name");
        let mut l = AsyncListener::builder().address(&address).authkey(KEY).bind().expect("bind");
        let client = blocking_echo_client(address, Some(KEY));
        let mut conn = bounded(l.accept()).await.expect("accept");
        for (i, &n) in SIZES.iter().enumerate() {
            let m = pattern(n, i as u8);
            conn.send_bytes(&m).await.expect("send");
            let back = bounded(conn.recv_bytes()).await.expect("echo");
            assert_eq!(back.len(), n);
            assert_eq!(back, m);
        }
        let done: (String, i64) = bounded(conn.recv()).await.expect("pickle");
        assert_eq!(done, ("done".to_string(), 7));
        assert_eq!(client.join().expect("client thread").expect("client"), SIZES.len());
        assert!(matches!(bounded(conn.recv_bytes()).await, Err(Error::Eof)));
    });
}

#[test]
fn async_pipe_client_to_a_blocking_listener_and_a_wrong_key() {
    let address = arbitrary_address(Family::Pipe).expect("pipe name");
    let mut listener = Listener::builder().address(&address).authkey(KEY).bind().expect("bind");
    let server = thread::spawn(move || -> mpconn::Result<Vec<u8>> {
        // The first client has the wrong key; the second is served.
        let first = listener.accept();
        assert!(matches!(first, Err(Error::Authentication(_))), "{first:?}");
        let mut conn = listener.accept()?;
        conn.set_read_timeout(Some(WAIT))?;
        let m = conn.recv_bytes()?;
        conn.send_bytes(&m)?;
        Ok(m)
    });
    rt().block_on(async {
        let e = bounded(AsyncClient::new(&address).authkey("wrong").connect()).await.expect_err("wrong key");
        assert!(
            matches!(e, Error::Authentication(AuthenticationError::Rejected | AuthenticationError::DigestMismatch)),
            "{e:?}"
        );
        let mut conn = bounded(AsyncClient::new(&address).authkey(KEY).connect()).await.expect("connect");
        let big = pattern(300_000, 9);
        conn.send_bytes(&big).await.expect("send");
        assert_eq!(bounded(conn.recv_bytes()).await.expect("echo"), big);
    });
    assert_eq!(server.join().expect("server thread").expect("server").len(), 300_000);
}

#[test]
fn async_pipe_recv_is_cancel_safe() {
    rt().block_on(async {
        let address = arbitrary_address(Family::Pipe).expect("pipe name");
        let mut l = AsyncListener::builder().address(&address).bind().expect("bind");
        let a = address.clone();
        let sender = thread::spawn(move || -> mpconn::Result<()> {
            let mut c = Client::new(a).connect()?;
            for i in 0..8u8 {
                c.send_bytes(&pattern(200_000 + usize::from(i), i))?;
                thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        let mut conn = bounded(l.accept()).await.expect("accept");
        let mut got = 0u8;
        let mut cancelled = 0u32;
        let deadline = tokio::time::Instant::now() + WAIT;
        while got < 8 {
            assert!(tokio::time::Instant::now() < deadline, "bounded");
            match tokio::time::timeout(Duration::from_millis(1), conn.recv_bytes()).await {
                Err(_) => cancelled += 1,
                Ok(m) => {
                    assert_eq!(m.expect("message"), pattern(200_000 + usize::from(got), got));
                    got += 1;
                }
            }
        }
        sender.join().expect("sender thread").expect("sender");
        println!("8 pipe messages intact through {cancelled} cancelled receives");
    });
}

#[test]
fn async_tcp_listener_and_client_on_windows() {
    rt().block_on(async {
        let mut l = AsyncListener::builder().address("127.0.0.1:0").authkey(KEY).bind().expect("bind");
        let address = l.address().clone();
        assert_eq!(address.family(), Family::Inet);
        let client = blocking_echo_client(address.clone(), Some(KEY));
        let mut conn = bounded(l.accept()).await.expect("accept");
        for (i, &n) in SIZES.iter().enumerate() {
            let m = pattern(n, i as u8);
            conn.send_bytes(&m).await.expect("send");
            assert_eq!(bounded(conn.recv_bytes()).await.expect("echo"), m);
        }
        let _: (String, i64) = bounded(conn.recv()).await.expect("pickle");
        client.join().expect("client thread").expect("client");

        // And the async client, to an async listener on the same runtime.
        let accept = async {
            let mut c = l.accept().await?;
            let m = c.recv_bytes().await?;
            c.send_bytes(&m).await?;
            Ok::<_, Error>(c)
        };
        let connect = async {
            let mut c = AsyncClient::new(&address).authkey(KEY).connect().await?;
            c.send_bytes(b"both async").await?;
            c.recv_bytes().await
        };
        let (served, echoed) = bounded(async { tokio::join!(accept, connect) }).await;
        served.expect("served");
        assert_eq!(echoed.expect("echoed"), b"both async");
    });
}
