//! break-peers (outside tester): failing reproducers for the Python 2.7 / CLI claims of issue 12.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mpconn::Listener;

mod cli_binary;
use cli_binary::mpconn;

fn py27() -> PathBuf {
    let out = Command::new("pyenv").args(["prefix", "2.7.18"]).output().expect("pyenv");
    let mut p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    p.push("bin/python");
    p
}

/// A Python 2.7 `date`/`datetime`/`time` whose state bytes happen to be ASCII (1900-01-01) is
/// received as a Value whose argument is a `str`; re-sent with `send_value` (protocol 2, the one
/// chosen for a Python 2 peer) it becomes `unicode` and Python 2 raises
/// `TypeError: an integer is required`. Python 2's own objects do not survive a Rust relay.
#[test]
#[ignore = "known, open: a Python 2 str that is ASCII decodes as str and goes back to 2.7 as unicode; datetime state bytes then break (see the closing note of issue 12)"]
fn python27_date_relayed_through_rust_values_comes_back() {
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(false).bind().unwrap();
    let addr = listener.address().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "import datetime\nfrom multiprocessing.connection import Client\n\
         for v in [datetime.date(1900, 1, 1), datetime.datetime(1900, 1, 1, 1, 1, 1), datetime.time(1, 2, 3)]:\n\
         \x20   c = Client(('{host}', {port}))\n\
         \x20   c.send(v)\n\
         \x20   try:\n\
         \x20       print(repr(c.recv()))\n\
         \x20   except Exception as e:\n\
         \x20       print('EXC %r' % e)\n"
    );
    let child = Command::new(py27()).args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    for _ in 0..3 {
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.pickle_protocol(), 2);
        let v = conn.recv_value().unwrap();
        conn.send_value(&v).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["datetime.date(1900, 1, 1)", "datetime.datetime(1900, 1, 1, 1, 1, 1)", "datetime.time(1, 2, 3)"],
        "Python 2.7 got back:\n{out}"
    );
}

/// `mpconn send` (no key, no --recv) claims to exit non-zero when the message was not delivered.
/// A keyed Python listener that calls accept() a little late (busy with another client: it is
/// single-threaded) rejects the message, yet `send` exits 0: the 1 s verdict wait sees nothing.
#[test]
#[ignore = "known, open: a keyless send waits 1 s for a challenge; a keyed listener that accepts later is not detected (see the closing note of issue 12)"]
fn keyless_send_to_a_late_accepting_keyed_listener_is_not_reported_as_delivered() {
    let script = "import sys, time\nfrom multiprocessing.connection import Listener\n\
                  l = Listener(('127.0.0.1', 0), authkey=b'k')\n\
                  print(l.address[1]); sys.stdout.flush()\n\
                  time.sleep(2.5)\n\
                  try:\n    c = l.accept(); print('DELIVERED %r' % c.recv_bytes())\n\
                  except Exception as e:\n    print('REJECTED %s' % type(e).__name__)\n";
    let mut child = Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let st = Command::new(mpconn()).args(["send", &format!("127.0.0.1:{port}"), "hello"]).status().unwrap();
    let verdict = lines.next().unwrap().unwrap();
    child.wait().unwrap();
    assert!(verdict.starts_with("REJECTED"), "{verdict}");
    assert!(!st.success(), "the listener rejected the message ({verdict}) but `mpconn send` exited 0");
}

fn send_pickle_and_receive(literal: &str) -> (bool, Option<String>) {
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(false).bind().unwrap();
    let addr = listener.address().to_string();
    let mut child =
        Command::new(mpconn()).args(["send", &addr, "--pickle", literal]).stderr(Stdio::null()).spawn().unwrap();
    let got = match listener.accept_within(Some(std::time::Duration::from_secs(5))) {
        Ok(mut c) => c.recv_value().ok().map(|v| format!("{v:?}")),
        Err(_) => None,
    };
    (child.wait().unwrap().success(), got)
}

/// `\N{...}` in a str literal is Python's named escape: '\N{GREEK SMALL LETTER ALPHA}' is 'α'.
/// `mpconn send --pickle` sends the 30-character text '\\N{GREEK SMALL LETTER ALPHA}' instead
/// (and '\N{bogus}', a SyntaxError in Python, is sent too): a wrong value, silently.
#[test]
fn named_unicode_escape_is_the_character_or_an_error() {
    let (ok, got) = send_pickle_and_receive(r"'\N{GREEK SMALL LETTER ALPHA}'");
    if ok {
        assert_eq!(got.as_deref(), Some("'α'"), "'\\N{{GREEK SMALL LETTER ALPHA}}' was sent as {got:?}");
    }
    let (ok, got) = send_pickle_and_receive(r"'\N{bogus}'");
    assert!(!ok, "'\\N{{bogus}}' is a SyntaxError in Python, yet it was sent as {got:?}");
}

/// `1_`, `0_` and `1__0` are SyntaxErrors in Python ("invalid decimal literal"); mpconn sends 1, 0, 10.
#[test]
fn misplaced_underscores_in_ints_are_not_python_literals() {
    for lit in ["1_", "0_", "1__0"] {
        let (ok, got) = send_pickle_and_receive(lit);
        assert!(!ok, "{lit} is not a Python literal, yet it was sent as {got:?}");
    }
}

/// `mpconn listen --dialect legacy-sha256` is accepted (the help lists cpython, legacy and
/// processing for a listener), and the listener then answers every stock client's challenge with
/// a raw HMAC-SHA256: CPython 3.11 (and 2.7) fail with "digest received was wrong", while the
/// listener's log blames the client ("digest sent was rejected ... needs legacy-sha256").
/// Either refuse the option on a listener or keep stock clients working.
#[test]
fn listener_in_legacy_sha256_dialect_refuses_the_option_or_serves_stock_clients() {
    let mut child = Command::new(mpconn())
        .args(["listen", "127.0.0.1:0", "--authkey", "k", "--dialect", "legacy-sha256", "--echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        _ => {
            // Refused at start-up: fine.
            assert!(!child.wait().unwrap().success());
            return;
        }
    };
    let port = first.rsplit(':').next().unwrap().trim().to_string();
    let script = format!(
        "from multiprocessing.connection import Client\n\
         c = Client(('127.0.0.1', {port}), authkey=b'k'); c.send('x'); print(repr(c.recv()))"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "stock CPython 3.11 client vs `listen --dialect legacy-sha256`: {}",
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
    );
}
