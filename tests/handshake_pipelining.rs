//! An early client pipelining its handshake into our listeners, on every face (blocking,
//! reactor, tokio, sharded reactors): its answer, its own challenge and more in one write, cut at
//! every point, cut short, or followed by a bad frame. A listener reads the answer and the
//! challenge together and writes `#WELCOME#` and its answer in one write (ARCHITECTURE.md, the
//! handshake); these check what the client reads, against CPython 3.12's listener where they
//! differ by face. Raw sockets over loopback; every wait bounded. (An outside attack's suite:
//! it found the blocking and tokio listeners dropping the held `#WELCOME#` when the frame after
//! a right answer failed the handshake.)
#![cfg(all(unix, feature = "tokio"))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::adversary::{Config, FACES, KEY, Server, read_frame, serial};
use mpconn::{Client, Digest};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const NONCE: [u8; 32] = [7u8; 32];

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn answer(key: &[u8], challenge: &[u8]) -> Vec<u8> {
    let message = &challenge[CHALLENGE.len()..];
    let mut out = b"{sha256}".to_vec();
    out.extend_from_slice(Digest::Sha256.mac(key, message).as_bytes());
    out
}

fn my_challenge() -> Vec<u8> {
    [CHALLENGE, b"{sha256}", &NONCE].concat()
}

fn expected_reply() -> Vec<u8> {
    answer(KEY.as_bytes(), &my_challenge())
}

/// How a read sequence ended.
#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Timeout,
    Error(String),
}

/// Frames until close or `within`.
fn frames_for(s: &mut TcpStream, within: Duration) -> (Vec<Vec<u8>>, End) {
    frames_upto(s, usize::MAX, within)
}

/// Frames until `most` arrived (then [`End::Timeout`]), the close, or `within`.
fn frames_upto(s: &mut TcpStream, most: usize, within: Duration) -> (Vec<Vec<u8>>, End) {
    let end = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Take whole frames from buf.
        while buf.len() >= 4 {
            let n = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + n {
                break;
            }
            out.push(buf[4..4 + n].to_vec());
            buf.drain(..4 + n);
        }
        if out.len() >= most {
            return (out, End::Timeout);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, End::Timeout);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (out, End::Timeout);
            }
            Err(e) => return (out, End::Error(format!("{:?}", e.kind()))),
        }
    }
}

fn show(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            if f == &expected_reply() {
                "<answer>".to_string()
            } else if f.starts_with(CHALLENGE) {
                "<challenge>".into()
            } else {
                String::from_utf8_lossy(&f[..f.len().min(40)]).into_owned()
            }
        })
        .collect()
}

/// Connects raw, reads the server's challenge, returns the stream and the right answer frame.
fn start(server: &Server) -> (TcpStream, Vec<u8>) {
    let mut s = server.raw();
    s.set_nodelay(true).unwrap();
    let c = read_frame(&mut s).unwrap();
    assert!(c.starts_with(b"#CHALLENGE#{sha256}"));
    let a = frame(&answer(KEY.as_bytes(), &c));
    (s, a)
}

fn fast_config() -> Config {
    Config { handshake_timeout: Duration::from_millis(800), ..Config::default() }
}

/// A good client must still get in and echo after each attack.
fn good_client_works(server: &Server) {
    let t = Instant::now();
    let mut c = Client::new(&server.address).authkey(KEY).connect().expect("good client connects");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_bytes(b"ping").unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"ping");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}: good client slow: {:?}", server.face, t.elapsed());
}

/// right answer + challenge + client's #WELCOME# + message, one write: WELCOME, answer, echo.
#[test]
fn answer_challenge_welcome_and_a_message_in_one_write() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for _ in 0..3 {
            let (mut s, a) = start(&server);
            let bytes = [a, frame(&my_challenge()), frame(b"#WELCOME#"), frame(b"hello")].concat();
            s.write_all(&bytes).unwrap();
            let (frames, end) = frames_for(&mut s, Duration::from_millis(600));
            println!("pipelined {face:?}: {:?} {end:?}", show(&frames));
            assert_eq!(show(&frames), ["#WELCOME#", "<answer>", "hello"], "{face:?}");
        }
        good_client_works(&server);
    }
}

/// right answer + challenge + one extra frame of a kind, one write. Records what each face
/// sends before closing; a listener must never hang, must close within the handshake timeout.
#[test]
fn answer_and_challenge_then_a_bad_frame_end_without_waiting() {
    let _s = serial();
    let extras: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", frame(b"garbage!")),
        ("zero-length", frame(b"")),
        ("huge-len", 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ("ext-len", [0xffu8, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 0].to_vec()),
        ("second-challenge", frame(&my_challenge())),
        ("failure", frame(b"#FAILURE#")),
    ];
    let mut summary = Vec::new();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for (name, extra) in &extras {
            let (mut s, a) = start(&server);
            let bytes = [a, frame(&my_challenge()), extra.clone()].concat();
            s.write_all(&bytes).unwrap();
            let (frames, end) = frames_for(&mut s, Duration::from_secs(3));
            let line = format!("bad third frame {face:?} {name}: {:?} {end:?}", show(&frames));
            println!("{line}");
            summary.push((face, *name, show(&frames), end));
        }
        good_client_works(&server);
    }
    // As from CPython: the replies to the two good frames, then the close.
    for (face, name, frames, end) in &summary {
        assert_ne!(*end, End::Timeout, "{face:?} {name}: still open after 3 s");
        assert_eq!(frames, &["#WELCOME#", "<answer>"], "{face:?} {name}");
    }
}

/// right answer + one extra frame (not a challenge), one write.
#[test]
fn answer_then_a_bad_frame_instead_of_the_challenge_ends_without_waiting() {
    let _s = serial();
    let extras: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", frame(b"garbage!")),
        ("zero-length", frame(b"")),
        ("huge-len", 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ("welcome", frame(b"#WELCOME#")),
    ];
    let mut summary = Vec::new();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for (name, extra) in &extras {
            let (mut s, a) = start(&server);
            let bytes = [a, extra.clone()].concat();
            s.write_all(&bytes).unwrap();
            let (frames, end) = frames_for(&mut s, Duration::from_secs(3));
            println!("bad second frame {face:?} {name}: {:?} {end:?}", show(&frames));
            summary.push((face, *name, show(&frames), end));
        }
        good_client_works(&server);
    }
    // As from CPython: #WELCOME# for the right answer, then the close.
    for (face, name, frames, end) in &summary {
        assert_ne!(*end, End::Timeout, "{face:?} {name}: still open after 3 s");
        assert_eq!(frames, &["#WELCOME#"], "{face:?} {name}");
    }
}

/// wrong answer + challenge (+ WELCOME + message), one write: only #FAILURE#, then close.
#[test]
fn a_wrong_answer_then_a_challenge_gets_failure_only() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for tail in [false, true] {
            let (mut s, _a) = start(&server);
            let wrong = frame(&[b"{sha256}".as_slice(), &[1u8; 32]].concat());
            let mut bytes = [wrong, frame(&my_challenge())].concat();
            if tail {
                bytes.extend_from_slice(&[frame(b"#WELCOME#"), frame(b"hello")].concat());
            }
            s.write_all(&bytes).unwrap();
            let (frames, end) = frames_for(&mut s, Duration::from_secs(3));
            println!("wrong answer {face:?} tail={tail}: {:?} {end:?}", show(&frames));
            assert_eq!(show(&frames), ["#FAILURE#"], "{face:?}");
            assert_ne!(end, End::Timeout, "{face:?}");
        }
        good_client_works(&server);
    }
}

/// answer + partial challenge; the rest a byte at a time. #WELCOME# must come without
/// waiting for the rest; after the rest, the answer; then the handshake completes.
#[test]
fn welcome_leaves_before_a_challenge_cut_short_and_its_answer_after_the_rest() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &Config { handshake_timeout: Duration::from_secs(3), ..Config::default() });
        for cut in [1usize, 3, 4, 5, 20, 54] {
            let (mut s, a) = start(&server);
            let ch = frame(&my_challenge());
            let bytes = [a, ch[..cut].to_vec()].concat();
            s.write_all(&bytes).unwrap();
            let (first, end) = frames_for(&mut s, Duration::from_millis(300));
            assert_eq!(show(&first), ["#WELCOME#"], "{face:?} cut={cut}: WELCOME before the rest ({end:?})");
            for b in &ch[cut..] {
                s.write_all(&[*b]).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
            let (second, end) = frames_for(&mut s, Duration::from_millis(300));
            assert_eq!(show(&second), ["<answer>"], "{face:?} cut={cut} ({end:?})");
            s.write_all(&[frame(b"#WELCOME#"), frame(b"x")].concat()).unwrap();
            let (third, end) = frames_for(&mut s, Duration::from_millis(500));
            assert_eq!(show(&third), ["x"], "{face:?} cut={cut} ({end:?})");
        }
        println!("cut challenge {face:?}: ok");
        good_client_works(&server);
    }
}

/// answer + partial challenge, rest never: WELCOME, then closed by the handshake deadline.
#[test]
fn a_challenge_never_finished_ends_at_the_handshake_deadline_after_welcome() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        let (mut s, a) = start(&server);
        let ch = frame(&my_challenge());
        let t = Instant::now();
        s.write_all(&[a, ch[..30].to_vec()].concat()).unwrap();
        let (frames, end) = frames_for(&mut s, Duration::from_secs(4));
        println!("never finished {face:?}: {:?} {end:?} after {:?}", show(&frames), t.elapsed());
        assert_eq!(show(&frames), ["#WELCOME#"], "{face:?}");
        assert_ne!(end, End::Timeout, "{face:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{face:?}: {:?}", t.elapsed());
        // Also: answer + full challenge + partial WELCOME, never the rest.
        let (mut s, a) = start(&server);
        let t = Instant::now();
        s.write_all(&[a, frame(&my_challenge()), frame(b"#WELCOME#")[..6].to_vec()].concat()).unwrap();
        let (frames, end) = frames_for(&mut s, Duration::from_secs(4));
        println!("never welcomed {face:?}: {:?} {end:?} after {:?}", show(&frames), t.elapsed());
        assert_eq!(show(&frames), ["#WELCOME#", "<answer>"], "{face:?}");
        assert_ne!(end, End::Timeout, "{face:?}");
        good_client_works(&server);
    }
}

/// answer + challenge + EOF (write side shut): WELCOME and answer, then close.
#[test]
fn answer_and_challenge_then_end_of_file_get_both_replies() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for _ in 0..3 {
            let (mut s, a) = start(&server);
            s.write_all(&[a, frame(&my_challenge())].concat()).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let (frames, end) = frames_for(&mut s, Duration::from_secs(3));
            println!("eof {face:?}: {:?} {end:?}", show(&frames));
            assert_eq!(show(&frames), ["#WELCOME#", "<answer>"], "{face:?}");
            assert_ne!(end, End::Timeout, "{face:?}");
        }
        good_client_works(&server);
    }
}

/// the whole early sequence split at every offset into two writes (and once byte by byte).
#[test]
fn the_pipelined_handshake_cut_at_every_point() {
    let _s = serial();
    for face in FACES {
        let server = Server::start(face, &fast_config());
        let mut fails = Vec::new();
        let (_s0, a0) = start(&server);
        let total = [a0, frame(&my_challenge()), frame(b"#WELCOME#"), frame(b"hello")].concat().len();
        drop(_s0);
        for cut in 0..=total {
            let (mut s, a) = start(&server);
            let bytes = [a, frame(&my_challenge()), frame(b"#WELCOME#"), frame(b"hello")].concat();
            s.write_all(&bytes[..cut]).unwrap();
            thread::sleep(Duration::from_millis(2));
            s.write_all(&bytes[cut..]).unwrap();
            let (frames, end) = frames_upto(&mut s, 3, Duration::from_secs(2));
            if show(&frames) != ["#WELCOME#", "<answer>", "hello"] {
                fails.push(format!("cut={cut}: {:?} {end:?}", show(&frames)));
            }
        }
        // Byte by byte.
        let (mut s, a) = start(&server);
        let bytes = [a, frame(&my_challenge()), frame(b"#WELCOME#"), frame(b"hello")].concat();
        for b in bytes {
            s.write_all(&[b]).unwrap();
        }
        let (frames, end) = frames_upto(&mut s, 3, Duration::from_secs(2));
        if show(&frames) != ["#WELCOME#", "<answer>", "hello"] {
            fails.push(format!("bytewise: {:?} {end:?}", show(&frames)));
        }
        println!("every cut {face:?}: {} cuts, failures: {fails:?}", total + 1);
        assert!(fails.is_empty(), "{face:?}: {fails:?}");
        good_client_works(&server);
    }
}

/// A right answer followed, in the same write, by a frame that fails the rest of the handshake
/// (garbage instead of the challenge, or after it). The answer was right, so the listener's
/// #WELCOME# (and its answer to a valid challenge) still leave before the close, as CPython
/// 3.12's listener sends them (run beside ours here). The blocking and tokio listeners dropped
/// them once their replies were held for the next buffered frame.
#[test]
fn a_right_answer_then_a_bad_frame_still_gets_welcome() {
    let _s = serial();
    // CPython reference.
    let listener = r#"
import sys
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0), authkey=sys.argv[1].encode())
print("%d" % l.address[1]); sys.stdout.flush()
while True:
    try:
        l.accept().close()
    except Exception:
        pass
"#;
    // CPython 3.12+: it sends and checks `{sha256}` challenges (3.11 speaks raw MD5).
    let py312 = common::python::pyenv_python("3.12").expect("pyenv python 3.12");
    let mut child = Command::new(py312).args(["-c", listener, KEY]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    }
    let py: std::net::SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().unwrap();
    // A case: its name, the bytes sent after the challenge given the answer frame, the replies.
    type Case = (&'static str, fn(Vec<u8>) -> Vec<u8>, &'static [&'static str]);
    let cases: [Case; 2] = [
        ("answer+garbage", |a| [a, frame(b"garbage!")].concat(), &["#WELCOME#"]),
        (
            "answer+challenge+garbage",
            |a| [a, frame(&my_challenge()), frame(b"garbage!")].concat(),
            &["#WELCOME#", "<answer>"],
        ),
    ];
    let mut failures = Vec::new();
    let run = |addr: std::net::SocketAddr, bytes: &dyn Fn(Vec<u8>) -> Vec<u8>| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let c = read_frame(&mut s).unwrap();
        s.write_all(&bytes(frame(&answer(KEY.as_bytes(), &c)))).unwrap();
        frames_for(&mut s, Duration::from_secs(3))
    };
    for (name, bytes, _want) in &cases {
        let (frames, end) = run(py, bytes);
        println!("bad frame after a right answer python3.12 {name}: {:?} {end:?}", show(&frames));
    }
    for face in FACES {
        let server = Server::start(face, &fast_config());
        for (name, bytes, want) in &cases {
            let (frames, end) = run(server.addr, bytes);
            println!("bad frame after a right answer {face:?} {name}: {:?} {end:?}", show(&frames));
            if show(&frames) != *want {
                failures.push(format!("{face:?} {name}: got {:?}, want {want:?}", show(&frames)));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "{failures:#?}");
}
