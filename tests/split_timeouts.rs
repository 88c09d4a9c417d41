//! A connection split into halves (one thread sends while another receives) and the write
//! timeout, against real CPython 3.11 peers; the listener's descriptor in another poller.
#![cfg(unix)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mpconn::{Address, Error, Listener};

const KEY: &str = "split key";
const MESSAGES: usize = 10_000;

/// A CPython client: a thread sends MESSAGES byte strings (up to ~2 KiB, so together far more
/// than the socket buffers hold) and a pickled ("done", N), while the main thread receives and
/// checks the Rust side's MESSAGES and its ("done", N).
const BOTH_WAYS: &str = r#"
import sys, threading
from multiprocessing.connection import Client
address, key, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
if not address.startswith("/"):
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
c = Client(address, authkey=key)
def sender():
    for i in range(n):
        c.send_bytes(b"p%d:" % i + b"x" * (i % 2000))
    c.send(("done", n))
t = threading.Thread(target=sender)
t.start()
for i in range(n):
    m = c.recv_bytes()
    assert m == b"r%d:" % i + b"y" * (i % 2000), "message %d: %r" % (i, m[:40])
last = c.recv()
assert tuple(last) == ("done", n), repr(last)
t.join()
print("OK", n)
"#;

/// A CPython client that authenticates and then never reads, until its standard input ends.
const NEVER_READS: &str = r#"
import sys
from multiprocessing.connection import Client
address, key = sys.argv[1], sys.argv[2].encode()
if not address.startswith("/"):
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
c = Client(address, authkey=key)
print("CONNECTED", flush=True)
sys.stdin.read()
"#;

/// A python3 child, killed on drop.
struct Py(Child);

impl Py {
    fn spawn(args: &[&str]) -> Py {
        Py(Command::new("python3")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3"))
    }

    /// Waits (bounded) for a successful exit; returns its output.
    fn finish(mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait python3") {
                let mut out = String::new();
                self.0.stdout.take().expect("piped").read_to_string(&mut out).expect("read output");
                assert!(status.success(), "python3 failed ({status}): {out}");
                return out;
            }
            assert!(Instant::now() < deadline, "python3 did not finish within {within:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listeners(dir: &tempfile::TempDir) -> Vec<Listener> {
    [Address::unix(dir.path().join("split.sock")), Address::inet("127.0.0.1", 0)]
        .into_iter()
        .map(|a| Listener::builder().address(a).authkey(KEY).bind().unwrap())
        .collect()
}

#[test]
fn split_halves_send_and_receive_10000_messages_both_ways_with_cpython() {
    let dir = tempfile::tempdir().unwrap();
    for mut listener in listeners(&dir) {
        let address = listener.address().to_string();
        let peer = Py::spawn(&["-c", BOTH_WAYS, &address, KEY, &MESSAGES.to_string()]);
        let conn = listener.accept_within(Some(Duration::from_secs(30))).unwrap();
        let (mut reader, mut writer) = conn.into_split().unwrap();
        // Bounds: neither side may hang forever if the other stalls.
        reader.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        writer.set_write_timeout(Some(Duration::from_secs(30))).unwrap();

        let sending = thread::spawn(move || -> mpconn::Result<()> {
            for i in 0..MESSAGES {
                let mut m = format!("r{i}:").into_bytes();
                m.resize(m.len() + i % 2000, b'y');
                writer.send_bytes(&m)?;
            }
            writer.send(&("done".to_string(), MESSAGES as i64))
        });
        for i in 0..MESSAGES {
            let m = reader.recv_bytes().unwrap();
            let mut expected = format!("p{i}:").into_bytes();
            expected.resize(expected.len() + i % 2000, b'x');
            assert_eq!(m, expected, "message {i} from {address}");
        }
        let (done, n): (String, i64) = reader.recv().unwrap();
        assert_eq!((done.as_str(), n), ("done", MESSAGES as i64));
        sending.join().unwrap().unwrap();
        assert_eq!(peer.finish(Duration::from_secs(60)).trim(), format!("OK {MESSAGES}"));
    }
}

#[test]
fn write_timeout_ends_a_64_mib_send_to_a_peer_that_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 64 << 20];
    for (i, mut listener) in listeners(&dir).into_iter().enumerate() {
        let address = listener.address().to_string();
        let mut peer = Py::spawn(&["-c", NEVER_READS, &address, KEY]);
        let mut conn = listener.accept_within(Some(Duration::from_secs(30))).unwrap();
        let zero = conn.set_write_timeout(Some(Duration::ZERO));
        assert!(matches!(zero, Err(Error::Config(_))), "a zero write timeout is refused: {zero:?}");
        let started = Instant::now();
        let (result, after) = if i == 0 {
            conn.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
            let r = conn.send_bytes(&big);
            // Once timed out, sends are refused: the peer's stream is mid-message.
            (r, conn.send_bytes(b"more"))
        } else {
            // The writer half has the same rule.
            let (_reader, mut writer) = conn.into_split().unwrap();
            writer.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
            let r = writer.send_bytes(&big);
            (r, writer.send_bytes(b"more"))
        };
        let took = started.elapsed();
        assert!(matches!(result, Err(Error::Timeout(_))), "{address}: {result:?}");
        assert!(took < Duration::from_secs(10), "{address}: the timed-out send took {took:?}");
        assert!(matches!(after, Err(Error::Closed(_))), "{address}: {after:?}");
        eprintln!("{address}: 64 MiB send to a peer that never reads: {result:?} after {took:?}");
        drop(peer.0.stdin.take());
    }
}

#[test]
fn writer_close_is_end_of_file_for_cpython_while_the_reader_still_receives() {
    const SCRIPT: &str = r#"
import sys
from multiprocessing.connection import Client
c = Client(sys.argv[1], authkey=sys.argv[2].encode())
assert c.recv_bytes() == b"last words"
try:
    c.recv_bytes()
    print("NO EOF")
except EOFError:
    c.send_bytes(b"still heard")
    print("EOF")
"#;
    let dir = tempfile::tempdir().unwrap();
    let mut listener =
        Listener::builder().address(Address::unix(dir.path().join("close.sock"))).authkey(KEY).bind().unwrap();
    let peer = Py::spawn(&["-c", SCRIPT, &listener.address().to_string(), KEY]);
    let conn = listener.accept_within(Some(Duration::from_secs(30))).unwrap();
    let (mut reader, mut writer) = conn.into_split().unwrap();
    reader.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    writer.send_bytes(b"last words").unwrap();
    writer.close().unwrap();
    assert!(matches!(writer.send_bytes(b"x"), Err(Error::Closed(_))));
    assert_eq!(reader.recv_bytes().unwrap(), b"still heard");
    assert_eq!(peer.finish(Duration::from_secs(30)).trim(), "EOF");
}

#[test]
fn listener_descriptor_turns_readable_in_another_poller_when_a_client_waits() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};

    let dir = tempfile::tempdir().unwrap();
    for mut listener in listeners(&dir) {
        let mut poll = Poll::new().unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(fd, listener.fileno().unwrap());
        poll.registry().register(&mut SourceFd(&fd), Token(1), Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
        assert!(events.is_empty(), "readable before any client");

        let address = listener.address().to_string();
        let peer = Py::spawn(&[
            "-c",
            "import sys\nfrom multiprocessing.connection import Client\na=sys.argv[1]\nif not a.startswith('/'):\n    h,p=a.rsplit(':',1); a=(h,int(p))\nc=Client(a, authkey=sys.argv[2].encode())\nc.send_bytes(b'hello')\n",
            &address,
            KEY,
        ]);
        poll.poll(&mut events, Some(Duration::from_secs(30))).unwrap();
        assert!(events.iter().any(|e| e.token() == Token(1) && e.is_readable()), "{address}: no readiness");
        let mut conn = listener.accept_within(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello");
        peer.finish(Duration::from_secs(30));
    }
}
