//! The session decides, on every face: an I/O error reaches the session, which closes with it,
//! whatever face moves the bytes.
//!
//! A TCP peer sends half a message and resets the connection (`SO_LINGER` 0, then close). On the
//! blocking and async faces the receive fails with the reset and the connection is no longer
//! readable: the session closed with the I/O reason (before, those faces filtered I/O errors
//! themselves and passed this one by the session, which stayed open); the reactor's `on_close`
//! gets the same reason. A reset before the handshake ends is `AuthenticationError::Disconnected`
//! on every face. Loopback only; every wait bounded.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mpconn::CloseReason;
use mpconn::reactor::options::ListenOptions;
use mpconn::reactor::{ConnId, Context, Handler, Reactor};
use mpconn::{AuthenticationError, Error, Listener};

/// Connects to `address`, sends half of a 10-byte message, and resets the connection.
fn reset_after_half_a_message(address: &str) {
    let mut peer = TcpStream::connect(address).unwrap();
    peer.write_all(&[0, 0, 0, 10, 1, 2]).unwrap();
    socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
    drop(peer);
}

/// Connects to `address` and resets at once (a peer gone during the handshake).
fn reset_at_once(address: &str) -> TcpStream {
    let peer = TcpStream::connect(address).unwrap();
    socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
    peer
}

fn is_reset(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn blocking_a_reset_closes_the_session_with_the_io_reason() {
    let mut listener = Listener::builder().address("127.0.0.1:0").bind().unwrap();
    let address = listener.address().to_string();
    let t = std::thread::spawn(move || reset_after_half_a_message(&address));
    let mut conn = listener.accept().unwrap();
    t.join().unwrap();
    let r = conn.recv_bytes();
    println!("blocking recv after a reset: {r:?}");
    assert!(r.as_ref().is_err_and(is_reset), "{r:?}");
    assert!(!conn.readable(), "the session closed with the reset");
    assert!(matches!(conn.recv_bytes(), Err(Error::Closed(_))), "closed stays closed");
}

#[test]
fn blocking_a_reset_during_the_handshake_is_disconnected() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey("k").bind().unwrap();
    let address = listener.address().to_string();
    let t = std::thread::spawn(move || {
        let mut peer = reset_at_once(&address);
        // Wait for the challenge so the reset comes during the handshake, not before it.
        let mut buf = [0u8; 4];
        let _ = std::io::Read::read_exact(&mut peer, &mut buf);
        drop(peer);
    });
    let r = listener.accept();
    t.join().unwrap();
    println!("blocking accept, peer reset during the handshake: {:?}", r.as_ref().err());
    assert!(matches!(r, Err(Error::Authentication(AuthenticationError::Disconnected))), "{:?}", r.err());
}

#[derive(Default)]
struct Closes {
    reasons: Vec<String>,
    reset: bool,
}

impl Handler for Closes {
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, reason: CloseReason) {
        if let CloseReason::Error(e) = &reason {
            self.reset |= is_reset(e);
        }
        self.reasons.push(format!("{reason:?}"));
    }
}

#[test]
fn reactor_a_reset_closes_the_session_with_the_io_reason() {
    let mut reactor = Reactor::new(Closes::default()).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let address = reactor.listener_address(l).unwrap().to_string();
    let t = std::thread::spawn(move || reset_after_half_a_message(&address));
    let start = Instant::now();
    while reactor.handler().reasons.is_empty() && start.elapsed() < Duration::from_secs(20) {
        reactor.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    t.join().unwrap();
    println!("reactor on_close after a reset: {:?}", reactor.handler().reasons);
    assert!(reactor.handler().reset, "{:?}", reactor.handler().reasons);
}

#[cfg(feature = "tokio")]
mod async_face {
    use super::*;
    use mpconn::tokio::Listener as AsyncListener;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn a_reset_closes_the_session_with_the_io_reason() {
        rt().block_on(async {
            let mut listener = AsyncListener::builder().address("127.0.0.1:0").bind().unwrap();
            let address = listener.address().to_string();
            let t = std::thread::spawn(move || reset_after_half_a_message(&address));
            let mut conn = listener.accept().await.unwrap();
            t.join().unwrap();
            let r = tokio::time::timeout(Duration::from_secs(20), conn.recv_bytes()).await.expect("no answer");
            println!("async recv after a reset: {r:?}");
            assert!(r.as_ref().is_err_and(is_reset), "{r:?}");
            assert!(!conn.readable(), "the session closed with the reset");
            assert!(matches!(conn.recv_bytes().await, Err(Error::Closed(_))), "closed stays closed");
        });
    }

    #[test]
    fn a_reset_during_the_handshake_is_disconnected() {
        rt().block_on(async {
            let mut listener = AsyncListener::builder().address("127.0.0.1:0").authkey("k").bind().unwrap();
            let address = listener.address().to_string();
            let t = std::thread::spawn(move || {
                let mut peer = reset_at_once(&address);
                let mut buf = [0u8; 4];
                let _ = std::io::Read::read_exact(&mut peer, &mut buf);
                drop(peer);
            });
            let r = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.expect("no answer");
            t.join().unwrap();
            println!("async accept, peer reset during the handshake: {:?}", r.as_ref().err());
            assert!(matches!(r, Err(Error::Authentication(AuthenticationError::Disconnected))), "{:?}", r.err());
        });
    }
}
