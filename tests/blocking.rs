//! The blocking API against itself over real loopback sockets: every case is bounded in time.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::{Address, AuthenticationError, Client, Error, Family, Listener, pipe, wait};

const KEY: &str = "secret password";

fn unix_address(dir: &tempfile::TempDir, name: &str) -> Address {
    Address::unix(dir.path().join(name))
}

/// Runs `client` in a thread against the listener; returns the accepted connection and the
/// client's thread.
fn with_client<T: Send + 'static>(
    listener: &mut Listener,
    client: impl FnOnce(Address) -> T + Send + 'static,
) -> (mpconn::Result<mpconn::Connection>, thread::JoinHandle<T>) {
    let address = listener.address().clone();
    let t = thread::spawn(move || client(address));
    let accepted = listener.accept();
    (accepted, t)
}

#[test]
fn round_trip_over_unix_tcp_and_abstract_with_authentication() {
    let dir = tempfile::tempdir().unwrap();
    for address in [
        unix_address(&dir, "s"),
        Address::inet("127.0.0.1", 0),
        Address::abstract_name(format!("mpconn-test-{}", std::process::id())),
    ] {
        let mut listener = Listener::builder().address(address.clone()).authkey(KEY).bind().unwrap();
        let (conn, reply) = with_client(&mut listener, |a| {
            let mut c = Client::new(a).authkey(KEY).connect()?;
            c.send_bytes(b"ping")?;
            c.recv_bytes()
        });
        let mut conn = conn.unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"ping", "{address}");
        conn.send_bytes(b"pong").unwrap();
        drop(conn);
        assert_eq!(reply.join().unwrap().unwrap(), b"pong", "{address}");
        assert!(listener.last_accepted().is_some());
    }
}

#[test]
fn wrong_key_fails_on_both_sides_and_the_listener_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::builder().address(unix_address(&dir, "s")).authkey(KEY).bind().unwrap();
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).authkey("wrong").connect().map(|_| ()));
    assert!(matches!(accepted, Err(Error::Authentication(AuthenticationError::DigestMismatch))), "{accepted:?}");
    let client = client.join().unwrap();
    assert!(matches!(client, Err(Error::Authentication(AuthenticationError::Rejected))), "{client:?}");
    // The next, well-behaved client is served.
    let (accepted, client) = with_client(&mut listener, |a| {
        let mut c = Client::new(a).authkey(KEY).connect()?;
        c.recv_bytes()
    });
    accepted.unwrap().send_bytes(b"still here").unwrap();
    assert_eq!(client.join().unwrap().unwrap(), b"still here");
}

#[test]
fn client_without_key_gets_a_clear_error_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::builder()
        .address(unix_address(&dir, "s"))
        .authkey(KEY)
        .handshake_timeout(Some(Duration::from_secs(5)))
        .bind()
        .unwrap();
    let (accepted, client) = with_client(&mut listener, |a| {
        let mut c = Client::new(a).connect()?;
        c.recv_bytes()
    });
    let client = client.join().unwrap();
    assert!(matches!(client, Err(Error::Authentication(AuthenticationError::KeyRequired))), "{client:?}");
    assert!(accepted.is_err());
}

#[test]
fn buffer_too_short_carries_the_message_and_the_connection_stays_usable() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(b"0123456789").unwrap();
    a.send_bytes(b"ok").unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(e)) => {
            assert_eq!(e.message, b"0123456789");
            assert_eq!(e.buffer_len, 4);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(small, [0; 4], "the buffer is untouched");
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 2);
    assert_eq!(&small[..2], b"ok");
}

#[test]
fn recv_bytes_into_at_an_offset() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(&42i32.to_ne_bytes()).unwrap();
    let mut buf = [0u8; 12];
    assert_eq!(b.recv_bytes_into(&mut buf[4..]).unwrap(), 4);
    assert_eq!(&buf[4..8], &42i32.to_ne_bytes());
}

#[test]
fn maxlength_refuses_a_long_message_and_leaves_the_connection_unreadable() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(&[1; 100]).unwrap();
    let e = b.recv_bytes_max(10).unwrap_err();
    assert!(e.to_string().contains("bad message length"), "{e}");
    assert!(!b.readable());
    assert!(matches!(b.recv_bytes(), Err(Error::Closed(_))));
}

#[test]
fn end_of_file_is_distinct_from_end_of_file_inside_a_message() {
    let (a, mut b) = pipe(true).unwrap();
    drop(a);
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));

    // Half a message by hand from a raw socket, then close.
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::bind(unix_address(&dir, "s")).unwrap();
    let path = listener.address().unix_path().unwrap().to_path_buf();
    let mut raw = std::os::unix::net::UnixStream::connect(path).unwrap();
    raw.write_all(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(raw);
    let mut b = listener.accept().unwrap();
    assert!(matches!(b.recv_bytes(), Err(Error::EofInMessage)));
}

#[test]
fn poll_sees_buffered_messages_and_times_out_otherwise() {
    let (mut a, mut b) = pipe(true).unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(50))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(45));
    a.send_bytes(b"1").unwrap();
    a.send_bytes(b"2").unwrap();
    assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(b.recv_bytes().unwrap(), b"1");
    // The second message came in the same read: the socket is empty, poll still sees it.
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv_bytes().unwrap(), b"2");
}

#[test]
fn wait_returns_the_ready_connections() {
    let (mut a1, b1) = pipe(true).unwrap();
    let (_a2, b2) = pipe(true).unwrap();
    assert!(wait(&[&b1, &b2], Some(Duration::from_millis(20))).unwrap().is_empty());
    a1.send_bytes(b"x").unwrap();
    assert_eq!(wait(&[&b1, &b2], Some(Duration::from_secs(5))).unwrap(), vec![0]);
}

/// One connection ready by what it holds already (a second message read with the first) must
/// not hide the others whose sockets are ready: Python's `wait` returns them all (an outside
/// tester saw `[0]` where `[0, 1]` were ready, and at 15,000 connections 1,364 of 2,728).
#[test]
fn wait_reports_every_ready_connection_when_one_is_ready_by_what_it_holds() {
    let (mut a1, mut b1) = pipe(true).unwrap();
    let (mut a2, b2) = pipe(true).unwrap();
    let (a3, b3) = pipe(true).unwrap();
    let (_a4, b4) = pipe(true).unwrap();
    let mut two = Vec::new();
    mpconn::encode_frame(b"first", &mut two);
    mpconn::encode_frame(b"second", &mut two);
    a1.send_frames(&two).unwrap();
    assert_eq!(b1.recv_bytes().unwrap(), b"first");
    a2.send_bytes(b"in the socket").unwrap();
    let all = [&b1, &b2, &b3, &b4];
    assert_eq!(wait(&all, Some(Duration::from_secs(5))).unwrap(), vec![0, 1]);
    // End of file in a socket is ready too.
    drop(a3);
    assert_eq!(wait(&all, Some(Duration::from_secs(5))).unwrap(), vec![0, 1, 2]);
    assert_eq!(wait(&all, Some(Duration::ZERO)).unwrap(), vec![0, 1, 2]);
}

/// After the peer's end of file was received, `poll` says a receive will not block (it returns
/// the error again), as Python's `poll` returns True after its `EOFError`; it was an error.
#[test]
fn poll_after_the_end_of_file_was_received_says_ready() {
    let (a, mut b) = pipe(true).unwrap();
    drop(a);
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(wait(&[&b], Some(Duration::ZERO)).unwrap(), vec![0]);
    assert!(b.recv_bytes().is_err());
    // Closed on this side: an error, as Python's OSError.
    b.close().unwrap();
    assert!(matches!(b.poll(Some(Duration::ZERO)), Err(Error::Closed(_))));
}

#[test]
fn one_way_pipe_reads_on_one_end_only() {
    let (mut r, mut w) = pipe(false).unwrap();
    w.send_bytes(b"one way").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"one way");
    assert!(r.send_bytes(b"back").is_err());
}

#[test]
fn closed_connection_reports_closed() {
    let (mut a, _b) = pipe(true).unwrap();
    a.close().unwrap();
    assert!(a.closed());
    assert!(matches!(a.send_bytes(b"x"), Err(Error::Closed(_))));
    assert!(a.fileno().is_err());
}

#[test]
fn unix_socket_file_is_0600_and_removed_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let address = unix_address(&dir, "s");
    let mut listener = Listener::bind(address.clone()).unwrap();
    let path = address.unix_path().unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    listener.close();
    assert!(!path.exists());
}

#[test]
fn arbitrary_unix_address_and_its_directory_are_removed_on_drop() {
    let listener = Listener::builder().family(Family::Unix).bind().unwrap();
    let path = listener.address().unix_path().unwrap().to_path_buf();
    assert!(path.exists());
    drop(listener);
    assert!(!path.exists());
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn stale_socket_is_replaced_but_other_files_and_live_sockets_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap()); // leaves the file behind
    assert!(stale.exists());
    Listener::bind(stale.as_path()).unwrap();

    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    let e = Listener::bind(file.as_path()).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let live = dir.path().join("live");
    let _first = Listener::bind(live.as_path()).unwrap();
    let e = Listener::bind(live.as_path()).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
}

#[test]
fn accept_timeout_returns_when_nobody_connects() {
    let mut listener =
        Listener::builder().address("127.0.0.1:0").accept_timeout(Some(Duration::from_millis(50))).bind().unwrap();
    let t = Instant::now();
    assert!(matches!(listener.accept(), Err(Error::Timeout(_))));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn silent_peer_is_cut_by_the_handshake_deadline_and_the_listener_keeps_serving() {
    let mut listener = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(Some(Duration::from_millis(200)))
        .bind()
        .unwrap();
    let addr = listener.address().resolve().unwrap()[0];
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    let r = listener.accept();
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).authkey(KEY).connect().map(|_| ()));
    accepted.unwrap();
    client.join().unwrap().unwrap();
}

#[test]
fn oversized_handshake_reply_is_refused_without_reading_it() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey(KEY).bind().unwrap();
    let addr = listener.address().resolve().unwrap()[0];
    let t = thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Declare 0x7fffffff bytes as the reply to the challenge.
        s.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
        s
    });
    let r = listener.accept();
    assert!(matches!(r, Err(Error::Authentication(AuthenticationError::Protocol(_)))), "{r:?}");
    drop(t.join().unwrap());
}

#[test]
fn family_mismatch_and_pipe_addresses_are_clear_errors() {
    let e = Listener::builder().address("127.0.0.1:0").family(Family::Unix).bind().unwrap_err();
    assert!(e.to_string().contains("not of family"), "{e}");
    let e = Listener::bind(r"\\.\pipe\mpconn-test").unwrap_err();
    assert!(matches!(e, Error::UnsupportedFamily("AF_PIPE")), "{e}");
    let e = Client::new(r"\\.\pipe\x").connect().unwrap_err();
    assert!(matches!(e, Error::UnsupportedFamily(_)), "{e}");
}

#[test]
fn connection_refused_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let e = Client::new(unix_address(&dir, "nobody")).connect().unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn ipv6_loopback_works() {
    let Ok(mut listener) = Listener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).connect()?.recv_bytes());
    accepted.unwrap().send_bytes(b"v6").unwrap();
    assert_eq!(client.join().unwrap().unwrap(), b"v6");
}

#[test]
fn authenticate_uses_the_process_default_key_on_both_sides() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(true).bind().unwrap();
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).authenticate(true).connect()?.recv_bytes());
    accepted.unwrap().send_bytes(b"default key").unwrap();
    assert_eq!(client.join().unwrap().unwrap(), b"default key");
}

#[test]
fn strict_policy_listener_refuses_a_legacy_md5_client_but_serves_a_modern_one() {
    use mpconn::internal::handshake::{CHALLENGE, FAILURE};
    use mpconn::{Digest, DigestPolicy};
    use std::io::Read;
    let mut listener = Listener::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .digest_policy(DigestPolicy::RequireSha256)
        .bind()
        .unwrap();
    let addr = listener.address().resolve().unwrap()[0];
    // A hand-written legacy client: raw HMAC-MD5 over the challenge, as Python <= 3.11 sends.
    let t = thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut challenge).unwrap();
        let mac = Digest::Md5.mac(KEY.as_bytes(), &challenge[CHALLENGE.len()..]);
        s.write_all(&16u32.to_be_bytes()).unwrap();
        s.write_all(mac.as_bytes()).unwrap();
        s.read_exact(&mut len).unwrap();
        let mut verdict = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut verdict).unwrap();
        verdict
    });
    let r = listener.accept();
    assert!(matches!(r, Err(Error::Authentication(AuthenticationError::DigestRefused(ref d))) if d == "md5"), "{r:?}");
    assert_eq!(t.join().unwrap(), FAILURE);
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).authkey(KEY).connect().map(|_| ()));
    accepted.unwrap();
    client.join().unwrap().unwrap();
}

#[test]
fn accepted_tcp_connections_have_nodelay() {
    let mut listener = Listener::bind("127.0.0.1:0").unwrap();
    let (accepted, client) = with_client(&mut listener, |a| Client::new(a).connect().map(|_| ()));
    let conn = accepted.unwrap();
    client.join().unwrap().unwrap();
    let fd = conn.fileno().unwrap();
    // SAFETY: the descriptor belongs to `conn`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    assert!(socket2::SockRef::from(&borrowed).tcp_nodelay().unwrap());
}

#[test]
fn binding_over_a_live_listener_with_a_full_backlog_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let address = unix_address(&dir, "busy.sock");
    let _live = Listener::builder().address(&address).backlog(0).bind().unwrap();
    // Fill the backlog: nobody accepts, so these wait in it (or are refused once it is full).
    let path = address.unix_path().unwrap().to_path_buf();
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&socket2::SockAddr::unix(&path).unwrap());
        waiting.push(s);
    }
    let t0 = Instant::now();
    let again = Listener::builder().address(&address).bind();
    assert!(t0.elapsed() < Duration::from_secs(5), "the probe waited {:?}", t0.elapsed());
    match again {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    assert!(path.exists(), "a live listener's socket file is never removed");
}
