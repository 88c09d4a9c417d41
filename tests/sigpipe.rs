//! A host process that keeps SIGPIPE's default action (a C program embedding the library; Rust
//! and Python programs ignore the signal) is not killed when a peer goes away: every write to a
//! socket passes `MSG_NOSIGNAL` where the platform has it, so a write to a closed peer is an
//! error the session closes the connection with.
//!
//! Its own test binary: it sets SIGPIPE to its default action for the whole process, which a
//! test sharing the process with others would impose on them.
#![cfg(target_os = "linux")]

use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpconn::reactor::options::ConnectionOptions;
use mpconn::reactor::{ConnId, Context, Handler, Reactor};
use mpconn::{Address, Client, CloseReason};

const WAIT: Duration = Duration::from_secs(30);

/// Restores SIGPIPE's default action: a write that raises it now ends the process.
fn sigpipe_kills() {
    // SAFETY: setting a signal's disposition to its default; no handler runs.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
}

/// A Unix socket whose every connection is accepted and closed at once.
fn closing_peer(dir: &std::path::Path) -> (std::path::PathBuf, thread::JoinHandle<()>) {
    let path = dir.join("peer.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let t = thread::spawn(move || {
        // One connection per face tried: the reactor, the blocking face, the tokio face.
        for _ in 0..(2 + usize::from(cfg!(feature = "tokio"))) {
            let Ok((s, _)) = listener.accept() else { return };
            drop(s);
        }
    });
    (path, t)
}

/// Sends a large message as soon as the connection opens, then reports how it closed.
struct Sender {
    tx: mpsc::Sender<String>,
}

impl Handler for Sender {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        // Give the peer time to close first, so the flush writes to a closed socket.
        thread::sleep(Duration::from_millis(200));
        let _ = ctx.send(conn, &vec![7u8; 1 << 20]);
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    fn on_close(&mut self, ctx: &mut Context<'_>, _: ConnId, reason: CloseReason) {
        let _ = self.tx.send(format!("{reason:?}"));
        ctx.stop();
    }
}

#[test]
fn writes_to_a_closed_peer_are_errors_not_a_fatal_signal() {
    sigpipe_kills();
    let dir = tempfile::tempdir().unwrap();
    let (path, peer) = closing_peer(dir.path());

    // The reactor: its flush (a vectored write) meets the closed peer.
    let (tx, rx) = mpsc::channel();
    let address = Address::Unix(path.clone());
    let reactor = thread::spawn(move || {
        let mut reactor = Reactor::new(Sender { tx }).unwrap();
        reactor.connect(&address, ConnectionOptions::new()).unwrap();
        reactor.run().unwrap();
    });
    let reason = rx.recv_timeout(WAIT).expect("the connection closes");
    println!("reactor: closed with {reason}");
    assert!(reason.contains("Io") || reason.contains("Error") || reason.contains("Peer"), "{reason}");
    reactor.join().unwrap();

    // The blocking face: its sends meet the closed peer.
    let mut conn = Client::new(Address::Unix(path.clone())).connect().unwrap();
    thread::sleep(Duration::from_millis(200));
    let results: Vec<String> = (0..3).map(|_| format!("{:?}", conn.send_bytes(&vec![7u8; 1 << 20]))).collect();
    println!("blocking: {results:?}");
    assert!(results.iter().any(|r| r.starts_with("Err")), "{results:?}");

    // The tokio face (its writes are the transport's too).
    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let results: Vec<String> = rt.block_on(async {
            let address = Address::Unix(path.clone());
            let mut conn = mpconn::tokio::Client::new(address).connect().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut results = Vec::new();
            for _ in 0..3 {
                let r = tokio::time::timeout(WAIT, conn.send_bytes(&vec![7u8; 1 << 20])).await;
                results.push(format!("{r:?}"));
            }
            results
        });
        println!("tokio: {results:?}");
        assert!(results.iter().any(|r| r.starts_with("Ok(Err")), "{results:?}");
    }
    peer.join().unwrap();
}
