//! The settings of every face: no setter undoes another. Above all the key: a listener told to
//! demand one never accepts a client without it because some other setting came later.
//!
//! Each test says what the code did before the settings core.

mod common;

use std::time::{Duration, Instant};

use common::reactor::{Ev, next_event, spawn_reactor, stop};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::{AuthOptions, AuthenticationError, Client, Error, Listener};

const KEY: &str = "settings key";

/// A client with no key against `address`: what its first receive says.
fn keyless_round_trip(address: &mpconn::Address) -> mpconn::Result<Vec<u8>> {
    let mut conn = Client::new(address).handshake_timeout(Some(Duration::from_secs(10))).connect()?;
    conn.send_bytes(b"let me in")?;
    conn.recv_bytes()
}

fn assert_refused(result: mpconn::Result<Vec<u8>>) {
    match result {
        Err(Error::Authentication(AuthenticationError::KeyRequired)) => {}
        other => panic!("a keyless client must be refused (KeyRequired), got {other:?}"),
    }
}

/// Before: `.connection(..)` replaced the whole connection settings, key included, so this
/// listener accepted (and echoed to) a client with no key.
#[test]
fn reactor_listener_keeps_its_key_when_connection_settings_come_after() {
    let options = ListenOptions::new()
        .authkey(KEY)
        .connection(ConnectionOptions::new().idle_timeout(Some(Duration::from_secs(30))));
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", options, true);
    assert_refused(keyless_round_trip(&address));
    // The key still works.
    let mut conn = Client::new(&address).authkey(KEY).connect().unwrap();
    conn.send_bytes(b"ping").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"ping");
    drop(conn);
    drop(rx);
    stop(handle, t);
}

/// Before: the same trap through `.auth(..)`: an `AuthOptions` without a key replaced the key.
#[test]
fn auth_options_without_a_key_keep_the_key_already_set() {
    let mut listener = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .auth(AuthOptions::new().handshake_timeout(Some(Duration::from_secs(5))))
        .bind()
        .unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || keyless_round_trip(&address));
    // The listener's side of the refused handshake is an error too.
    assert!(listener.accept().is_err());
    assert_refused(client.join().unwrap());
}

/// Before: there was no `ListenOptions::idle_timeout`; the only way to set it was the trap.
#[test]
fn listen_options_set_connection_limits_directly_and_keep_the_key() {
    let options = ListenOptions::new()
        .authkey(KEY)
        .idle_timeout(Some(Duration::from_millis(300)))
        .high_water_mark(1 << 20)
        .max_message_size(1000);
    let (address, handle, rx, t) = spawn_reactor("127.0.0.1:0", options, false);
    assert_refused(keyless_round_trip(&address));
    let mut conn = Client::new(&address).authkey(KEY).connect().unwrap();
    let start = Instant::now();
    // The idle timeout closes the authenticated connection.
    let mut saw_idle = false;
    for _ in 0..10 {
        match next_event(&rx) {
            Ev::Close(_, reason) if reason.contains("IdleTimeout") => {
                saw_idle = true;
                break;
            }
            _ => {}
        }
    }
    assert!(saw_idle, "the idle timeout closes the connection");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(conn.recv_bytes().is_err());
    stop(handle, t);
}

/// `.connection(..)` merges what it sets: settings made before it that it leaves alone stay.
#[test]
fn connection_settings_merge_in_either_order() {
    let a = ListenOptions::new()
        .authkey(KEY)
        .max_message_size(1000)
        .connection(ConnectionOptions::new().idle_timeout(Some(Duration::from_secs(7))));
    let b = ListenOptions::new()
        .connection(ConnectionOptions::new().idle_timeout(Some(Duration::from_secs(7))))
        .max_message_size(1000)
        .authkey(KEY);
    for o in [a, b] {
        assert!(o.connection_options().auth_options().authkey.is_some());
        assert_eq!(o.connection_options().max_message_size, 1000);
        assert_eq!(o.connection_options().idle_timeout, Some(Duration::from_secs(7)));
    }
}

/// Before: `timeouts(Timeouts { handshake: Some(1 s), .. })` was ignored (the handshake's came
/// only from `handshake_timeout`): a silent peer held `accept` for the default 10 s. Now the
/// field sets it, and a `Timeouts` that leaves it at the default keeps one set before.
#[test]
fn the_handshake_field_of_timeouts_is_the_handshake_timeout() {
    use mpconn::Timeouts;
    let one_second = Timeouts { handshake: Some(Duration::from_secs(1)), ..Timeouts::DEFAULT };
    let by_timeouts = Listener::builder().address("127.0.0.1:0").authkey(KEY).timeouts(one_second);
    let kept = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(Some(Duration::from_secs(1)))
        .timeouts(Timeouts::DEFAULT);
    for (what, builder) in [("timeouts", by_timeouts), ("handshake_timeout then default timeouts", kept)] {
        let mut listener = builder.bind().unwrap();
        let address = listener.address().to_string();
        // A peer that connects and says nothing.
        let silent = std::net::TcpStream::connect(address).unwrap();
        let started = Instant::now();
        let result = listener.accept();
        let took = started.elapsed();
        println!("{what}: accept of a silent peer ended after {took:?}: {:?}", result.as_ref().err());
        assert!(result.is_err(), "{what}");
        assert!(took < Duration::from_secs(8), "{what}: the 1 s handshake deadline was not applied ({took:?})");
        drop(silent);
    }
}

/// Before: both of these bound, then refused every peer (the message limit broke the handshake
/// itself with a message naming the wrong limit; the dialect cannot give SHA-256). Now binding
/// or listening says why, on every face.
#[test]
fn settings_no_peer_could_authenticate_under_are_refused_when_binding() {
    use mpconn::{Dialect, DigestPolicy};
    let tiny = |e: Error| matches!(&e, Error::Config(m) if m.contains("handshake"));
    let sha1_only = |e: Error| matches!(&e, Error::Config(m) if m.contains("processing"));

    let blocking = Listener::builder().address("127.0.0.1:0").authkey(KEY).max_message_size(16).bind();
    assert!(tiny(blocking.unwrap_err()));
    let blocking = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .dialect(Dialect::Processing)
        .digest_policy(DigestPolicy::RequireSha256)
        .bind();
    assert!(sha1_only(blocking.unwrap_err()));
    // Without a key there is no handshake: a tiny limit is the application's business.
    assert!(Listener::builder().address("127.0.0.1:0").max_message_size(16).bind().is_ok());

    let (tx, _rx) = std::sync::mpsc::channel();
    let mut reactor = mpconn::reactor::Reactor::new(common::reactor::Recorder { tx, echo: false }).unwrap();
    let listen = reactor.listen("127.0.0.1:0", ListenOptions::new().authkey(KEY).max_message_size(16));
    assert!(tiny(listen.unwrap_err()));
    let connect = reactor.connect("127.0.0.1:9", ConnectionOptions::new().authkey(KEY).max_message_size(16));
    assert!(tiny(connect.unwrap_err()));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tokio_listener = mpconn::tokio::Listener::builder()
            .address("127.0.0.1:0")
            .authkey(KEY)
            .dialect(Dialect::Processing)
            .digest_policy(DigestPolicy::RequireSha256)
            .bind();
        assert!(sha1_only(tokio_listener.unwrap_err()));
    });
}
