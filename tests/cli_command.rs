//! The `mpconn` command against real peers: what `send` reports when a keyed listener refuses
//! a keyless message, how `send --pickle` reads Python literals (named escapes, underscores in
//! ints), and `listen --dialect legacy-sha256` with stock CPython clients. Every process started
//! here is waited for or killed.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mpconn::Listener;

mod common;
use common::cli_binary::mpconn;

/// `mpconn send` (no key, no --recv) exits non-zero when the message was not delivered, also
/// when a keyed Python listener calls accept() late (busy with another client: it is
/// single-threaded) and then rejects the message. Open: the 1 s verdict wait sees nothing.
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

/// `\N{...}` in a str literal is Python's named escape: `mpconn send --pickle` sends
/// '\N{GREEK SMALL LETTER ALPHA}' as 'α' (not as its 30 characters of text) or refuses it, and refuses
/// '\N{bogus}', a SyntaxError in Python.
#[test]
fn named_unicode_escape_is_the_character_or_an_error() {
    let (ok, got) = send_pickle_and_receive(r"'\N{GREEK SMALL LETTER ALPHA}'");
    if ok {
        assert_eq!(got.as_deref(), Some("'α'"), "'\\N{{GREEK SMALL LETTER ALPHA}}' was sent as {got:?}");
    }
    let (ok, got) = send_pickle_and_receive(r"'\N{bogus}'");
    assert!(!ok, "'\\N{{bogus}}' is a SyntaxError in Python, yet it was sent as {got:?}");
}

/// `1_`, `0_` and `1__0` are SyntaxErrors in Python ("invalid decimal literal"): `send --pickle`
/// refuses them rather than sending 1, 0, 10.
#[test]
fn misplaced_underscores_in_ints_are_not_python_literals() {
    for lit in ["1_", "0_", "1__0"] {
        let (ok, got) = send_pickle_and_receive(lit);
        assert!(!ok, "{lit} is not a Python literal, yet it was sent as {got:?}");
    }
}

/// `mpconn listen --dialect legacy-sha256` either refuses the option or keeps serving stock
/// clients: a listener that answered every client's challenge with a raw HMAC-SHA256 would fail
/// CPython 3.11 and 2.7 ("digest received was wrong") while its log blamed the client.
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
