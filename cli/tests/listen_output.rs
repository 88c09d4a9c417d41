//! `mpconn listen`'s stdout is a line grammar scripts parse (`listening on`, `open`, `message`,
//! `close`, `echo to ... refused`), and a peer must not be able to break it or reach the terminal
//! raw. Before, a class named "x\nclose 1 ok\n\x1b[2J" printed as it was: a forged `close` line
//! and a clear-screen sequence on stdout; a client's abstract socket name went out raw in `open`.
#![cfg(target_os = "linux")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mpconn");

/// A keyless peer on a Unix socket bound to hostile names, sending pickles whose class names,
/// strs and bytes hold newlines, ESC, BEL, NUL, C1 and bidi controls, and whose abstract name
/// holds invisible format characters (soft hyphen, a tag character, an Arabic number sign). Frames are written by
/// hand (no key: nothing to negotiate).
const EVIL_PEER: &str = r#"
import socket, struct, sys, os, time
path, tmp = sys.argv[1], sys.argv[2]
name = "x\nclose 1 ok\n\x1b[2J\x07\x00\u009b\u202e".encode()
def frame(b): return struct.pack('!i', len(b)) + b
def stack_global(mod, nm):
    return b'\x8c' + bytes([len(mod)]) + mod + b'\x8c' + bytes([len(nm)]) + nm + b'\x93'
pickles = [
    b'\x80\x04' + stack_global(b'builtins', name) + b'.',                     # a Global
    b'\x80\x04' + stack_global(b'mod\nopen 7 from x', name) + b')R.',       # an Object (REDUCE)
    b'\x80\x04' + stack_global(b'm', b'C') + b')\x81' + b'}\x8c\x02k\n\x8c\x03\x1b[ms' + b'b.',  # state
    b'\x80\x04\x8c\x0cstr\nclose 1\x1b\x94.',                               # a str
    b"raw bytes\nclose 1 ok\n\x1b[2J",                                       # not a pickle
]
for bind in [b'\0abstract\nclose 3 ok\n\x1b]0;title\x07' + '\u00ad\U000e0041\u0600'.encode(), os.path.join(tmp, 'file\nclose 4 ok\x1b[2J').encode()]:
    s = socket.socket(socket.AF_UNIX)
    s.bind(bind)
    s.connect(path)
    for p in pickles:
        s.sendall(frame(p))
    time.sleep(0.3)
    s.close()
print("sent")
"#;

/// The `listen` lines of the grammar; `None` when `line` is none of them.
fn kind(line: &str) -> Option<&'static str> {
    let conn_then = |rest: &str| -> Option<usize> {
        let rest = rest.strip_prefix("conn#")?;
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        Some("conn#".len() + end)
    };
    if line.starts_with("listening on ") {
        return Some("listening");
    }
    if let Some(rest) = line.strip_prefix("open ") {
        let n = conn_then(rest)?;
        return rest[n..].starts_with(" from ").then_some("open");
    }
    if let Some(rest) = line.strip_prefix("message ") {
        let n = conn_then(rest)?;
        let r = rest[n..].strip_prefix(" (")?;
        let digits = r.find(|c: char| !c.is_ascii_digit())?;
        return (digits > 0 && r[digits..].starts_with(" bytes): ")).then_some("message");
    }
    if let Some(rest) = line.strip_prefix("close ") {
        let n = conn_then(rest)?;
        return rest[n..].starts_with(": ").then_some("close");
    }
    if let Some(rest) = line.strip_prefix("echo to ") {
        let n = conn_then(rest)?;
        return rest[n..].starts_with(" refused: ").then_some("refused");
    }
    None
}

#[test]
fn hostile_names_and_addresses_cannot_forge_lines_or_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("listen.sock");
    let mut listen = Command::new(BIN)
        .args(["listen", sock.to_str().unwrap(), "--echo", "-vv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !sock.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "listen did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let peer = Command::new("python3")
        .args(["-c", EVIL_PEER, sock.to_str().unwrap(), dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(peer.status.success(), "{}", String::from_utf8_lossy(&peer.stderr));
    // Both connections closed: wait for their close lines, then stop listen with SIGINT.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: our own child.
    unsafe { libc::kill(listen.id() as libc::pid_t, libc::SIGINT) };
    let mut out = Vec::new();
    let mut err = Vec::new();
    listen.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    listen.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let _ = listen.wait();

    for (what, bytes) in [("stdout", &out), ("stderr", &err)] {
        let bad: Vec<u8> = bytes.iter().copied().filter(|&b| (b < 0x20 && b != b'\n') || b == 0x7f).collect();
        assert!(bad.is_empty(), "{what} holds control bytes {bad:?}");
        let text = String::from_utf8_lossy(bytes);
        let hidden: Vec<char> = text.chars().filter(|&c| c != '\n' && !mpconn::pickle::is_printable(c)).collect();
        assert!(hidden.is_empty(), "{what} holds characters Python's isprintable rejects: {hidden:?}");
    }
    let text = String::from_utf8(out).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let k = kind(line).unwrap_or_else(|| panic!("a line outside the grammar: {line:?}"));
        *counts.entry(k).or_insert(0) += 1;
        println!("{line}");
    }
    assert_eq!(counts.get("open"), Some(&2), "{text}");
    assert_eq!(counts.get("close"), Some(&2), "{text}");
    assert_eq!(counts.get("message"), Some(&10), "{text}");
    // The forged text is there, escaped, inside the lines that carry it.
    assert!(text.contains(r"builtins.x\nclose 1 ok\n\x1b[2J\x07\x00\x9b\u202e"), "{text}");
    assert!(text.contains(r"mod\nopen 7 from x.x\nclose 1 ok"), "{text}");
    assert!(text.contains(r"from \0abstract\nclose 3 ok\n\x1b]0;title\x07\xad\U000e0041\u0600"), "{text}");
    assert!(text.contains(r"file\nclose 4 ok\x1b[2J"), "{text}");
    assert!(text.contains(r"m.C()<state={'k\n': '\x1b[m'}>"), "{text}");
    assert!(text.contains(r"'str\nclose 1\x1b'"), "{text}");
    for line in String::from_utf8_lossy(&err).lines() {
        assert!(line.as_bytes().get(2) == Some(&b':'), "a log line that does not start with the time: {line:?}");
    }
}
