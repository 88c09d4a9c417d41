//! Interop with real Python interpreters, in both directions, over loopback TCP and Unix sockets.
//!
//! Peers: CPython 3.11 (`python3`, required), CPython 3.12 and 3.13 (through pyenv, wherever
//! installed), and the original `processing` 0.52 package on CPython 2.7 (required: `.ci/run`
//! installs it). Every interpreter that ran is named in the output (`--show-output`). Every wait
//! on a peer is bounded.
//!
//! The matrix tests (`matrix_*`) run every CPython pyenv has (2.7 with stock `multiprocessing`,
//! 3.6-3.13), `processing` 0.52 on 2.7 and Red Hat-patched 3.9 and 3.11 (peer.py `--rhel`), both
//! directions, TCP and Unix, bytes and a fixed value set, and a wrong key; one Python process
//! per peer, direction and family. A peer the machine lacks is named as SKIPPED in the output.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod common;
use common::python::pyenv_python;

use mpconn::pickle::{Value, repr};
use mpconn::{Address, AuthKey, AuthenticationError, Client, Connection, Dialect, Error, Listener};

const KEY: &str = "interop key";
const STEP: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Python {
    label: String,
    exe: PathBuf,
    processing: bool,
}

fn version_of(exe: &Path) -> Option<String> {
    let out = Command::new(exe).args(["-c", "import sys; print(sys.version.split()[0])"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The interpreters to test against, found (and `processing` installed) once per run. Fails
/// when a required one is missing.
fn pythons() -> Vec<Python> {
    static FOUND: std::sync::OnceLock<Vec<Python>> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_pythons).clone()
}

fn find_pythons() -> Vec<Python> {
    let mut found = Vec::new();
    let py3 = PathBuf::from("python3");
    let v = version_of(&py3).expect("python3 is required for the interop tests");
    found.push(Python { label: format!("CPython {v} (python3)"), exe: py3, processing: false });
    for minor in ["3.12.", "3.13."] {
        match pyenv_python(minor).and_then(|exe| version_of(&exe).map(|v| (exe, v))) {
            Some((exe, v)) => found.push(Python { label: format!("CPython {v}"), exe, processing: false }),
            None => println!("interop: CPython {minor}x not installed here; not run"),
        }
    }
    let py2 = pyenv_python("2.7.").expect("CPython 2.7 (pyenv) is required for the processing interop tests");
    let has_processing = || {
        Command::new(&py2).args(["-c", "import processing"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !has_processing() {
        // The test set-up installs the original package from PyPI, once.
        let status = Command::new(&py2).args(["-m", "pip", "install", "-q", "processing==0.52"]).status();
        println!("interop: installed processing 0.52 with pip: {status:?}");
    }
    assert!(
        has_processing(),
        "processing 0.52 is missing and could not be installed: {} -m pip install processing==0.52",
        py2.display()
    );
    found.push(Python {
        label: format!("processing 0.52 on CPython {}", version_of(&py2).unwrap()),
        exe: py2,
        processing: true,
    });
    found
}

/// A running Python peer whose stdout lines arrive on a channel; killed on drop.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    label: String,
}

impl Peer {
    fn start(py: &Python, mode: &str, address: &str, key: Option<&str>, extra: &[&str]) -> Peer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py");
        let key_hex = key.map(|k| AuthKey::from(k).to_hex()).unwrap_or_else(|| "none".into());
        let mut cmd = Command::new(&py.exe);
        cmd.arg(script).args([mode, address, &key_hex]).args(extra);
        if py.processing {
            cmd.arg("--processing");
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start python");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines, label: py.label.clone() }
    }

    fn expect_line(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("{}: no line starting with {prefix:?} within {STEP:?}", self.label));
        assert!(line.starts_with(prefix), "{}: expected {prefix:?}, got {line:?}", self.label);
        line[prefix.len()..].trim().to_string()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ask(conn: &mut Connection, command: &[u8]) -> Vec<u8> {
    conn.send_bytes(command).unwrap();
    conn.recv_bytes().unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn dialect_for(py: &Python) -> Dialect {
    if py.processing { Dialect::Processing } else { Dialect::Cpython }
}

/// The conversation every peer goes through: bytes, objects both ways, recv_bytes_into.
fn converse(conn: &mut Connection, py: &Python) {
    conn.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(ask(conn, b"echo:hello"), b"hello", "{}", py.label);
    assert_eq!(ask(conn, b"echo:"), b"", "{}", py.label);
    let version = String::from_utf8(ask(conn, b"version")).unwrap();
    assert!(py.label.contains(&version), "{} reports {version}", py.label);

    // A Rust value to Python and back; Python also reports what it saw.
    conn.send_bytes(b"obj").unwrap();
    let sent = Value::from(vec![
        Value::Int(1),
        Value::Float(2.5),
        Value::None,
        Value::Bool(true),
        Value::Bytes(b"b\x00".to_vec()),
    ]);
    conn.send_value(&sent).unwrap();
    let back = conn.recv_value().unwrap();
    let python_repr = String::from_utf8(conn.recv_bytes().unwrap()).unwrap();
    if py.processing {
        assert_eq!(python_repr, "[1, 2.5, None, True, 'b\\x00']", "{}", py.label);
    } else {
        assert_eq!(python_repr, "[1, 2.5, None, True, b'b\\x00']", "{}", py.label);
    }
    if py.processing {
        // Python 2 reads bytes as its str and sends them back as str: ASCII, so a Rust str.
        let Value::List(items) = &back else { panic!("{}: {back:?}", py.label) };
        assert_eq!(items[4], Value::Str("b\x00".into()), "{}", py.label);
        assert_eq!(items[..4], sent.as_slice().unwrap()[..4], "{}", py.label);
    } else {
        assert_eq!(back, sent, "{}", py.label);
    }

    // A Python object to Rust.
    conn.send_bytes(b"send_obj").unwrap();
    let v = conn.recv_value().unwrap();
    let shown = repr(&v);
    if py.processing {
        // Python 2's str is bytes, read as a Rust str when ASCII; its dicts have no order.
        assert_eq!(
            shown, "{'tuple': (1, 'a'), 'list': [1, 2.5, None, True], 'hello': 'world', 'n': 1}",
            "{}",
            py.label
        );
    } else {
        assert_eq!(
            shown, "{'hello': 'world', 'n': 1, 'list': [1, 2.5, None, True], 'tuple': (1, 'a')}",
            "{}",
            py.label
        );
    }

    // A Python type object is a Global by name; a decoder told to refuse objects names it.
    conn.send_bytes(b"send_class").unwrap();
    let bytes = conn.recv_bytes().unwrap();
    let v = mpconn::pickle::loads_value(&bytes).unwrap();
    assert_eq!(repr(&v), "[1, builtins.float]", "{}", py.label);
    let refuse = mpconn::pickle::DecodeOptions::new().objects(mpconn::pickle::ObjectPolicy::Refuse);
    let e = mpconn::pickle::loads_value_with(&bytes, &refuse).unwrap_err();
    assert!(e.to_string().contains("builtins.float"), "{}: {e}", py.label);
    assert_eq!(ask(conn, b"echo:after"), b"after", "{}", py.label);

    // recv_bytes_into on the Python side: fits, and BufferTooShort.
    conn.send_bytes(b"into:8").unwrap();
    conn.send_bytes(b"12345").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"ok:5:12345", "{}", py.label);
    conn.send_bytes(b"into:4").unwrap();
    conn.send_bytes(b"123456789").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"short:9", "{}", py.label);

    // BufferTooShort on the Rust side, then the connection is still usable.
    conn.send_bytes(b"big:1000").unwrap();
    let mut small = [0u8; 10];
    match conn.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(e)) => assert_eq!(e.message, pattern(1000), "{}", py.label),
        other => panic!("{}: {other:?}", py.label),
    }
    assert_eq!(ask(conn, b"echo:still usable"), b"still usable", "{}", py.label);
}

fn addresses(dir: &Path, tag: &str) -> Vec<Address> {
    vec![Address::inet("127.0.0.1", 0), Address::unix(dir.join(format!("{tag}.sock")))]
}

#[test]
fn rust_listener_serves_python_clients_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    for py in pythons() {
        for address in addresses(dir.path(), "l") {
            let mut listener =
                Listener::builder().address(address).authkey(KEY).dialect(dialect_for(&py)).bind().unwrap();
            let peer = Peer::start(&py, "connect", &listener.address().to_string(), Some(KEY), &[]);
            let mut conn = listener.accept_within(Some(STEP)).unwrap();
            peer.expect_line("CONNECTED");
            converse(&mut conn, &py);
            conn.send_bytes(b"quit").unwrap();
            peer.expect_line("DONE");
            println!("interop: Rust listener <- {} client over {}: ok", py.label, listener.address().family());
        }
    }
}

#[test]
fn rust_client_talks_to_python_listeners_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    for py in pythons() {
        for (i, address) in addresses(dir.path(), "c").into_iter().enumerate() {
            let address = match address {
                Address::Unix(p) => Address::Unix(p.with_file_name(format!("c{i}-{}.sock", py.label.len()))),
                a => a,
            };
            let peer = Peer::start(&py, "listen", &address.to_string(), Some(KEY), &[]);
            let bound = peer.expect_line("READY");
            let mut conn = Client::new(bound.as_str()).authkey(KEY).connect().unwrap();
            assert_eq!(conn.dialect(), dialect_for(&py), "{}", py.label);
            peer.expect_line("CONNECTED");
            converse(&mut conn, &py);
            conn.send_bytes(b"quit").unwrap();
            peer.expect_line("DONE");
            println!("interop: Rust client -> {} listener at {bound}: ok", py.label);
        }
    }
}

#[test]
fn wrong_key_fails_on_both_sides_and_listeners_keep_serving() {
    for py in pythons() {
        // Python client with the wrong key against a Rust listener.
        let mut listener =
            Listener::builder().address("127.0.0.1:0").authkey(KEY).dialect(dialect_for(&py)).bind().unwrap();
        let peer = Peer::start(&py, "connect", &listener.address().to_string(), Some("wrong"), &[]);
        let r = listener.accept_within(Some(STEP));
        assert!(matches!(r, Err(Error::Authentication(AuthenticationError::DigestMismatch))), "{}: {r:?}", py.label);
        peer.expect_line("AUTHFAIL");
        let peer = Peer::start(&py, "connect", &listener.address().to_string(), Some(KEY), &[]);
        let mut conn = listener.accept_within(Some(STEP)).unwrap();
        peer.expect_line("CONNECTED");
        conn.set_read_timeout(Some(STEP)).unwrap();
        assert_eq!(ask(&mut conn, b"echo:served"), b"served", "{}", py.label);

        // Rust client with the wrong key against a Python listener that accepts twice.
        let peer = Peer::start(&py, "listen", "127.0.0.1:0", Some(KEY), &["--accepts", "2"]);
        let bound = peer.expect_line("READY");
        let r = Client::new(bound.as_str()).authkey("wrong").connect();
        assert!(matches!(r, Err(Error::Authentication(AuthenticationError::Rejected))), "{}: {r:?}", py.label);
        peer.expect_line("AUTHFAIL");
        let mut conn = Client::new(bound.as_str()).authkey(KEY).connect().unwrap();
        peer.expect_line("CONNECTED");
        conn.set_read_timeout(Some(STEP)).unwrap();
        assert_eq!(ask(&mut conn, b"echo:served"), b"served", "{}", py.label);
        println!("interop: wrong key against/from {}: both sides fail, listeners keep serving", py.label);
    }
}

#[test]
fn client_without_key_against_python_listener_with_key_fails_clearly() {
    let py = pythons().remove(0);
    let peer = Peer::start(&py, "listen", "127.0.0.1:0", Some(KEY), &[]);
    let bound = peer.expect_line("READY");
    let mut conn = Client::new(bound.as_str()).connect().unwrap();
    conn.set_read_timeout(Some(STEP)).unwrap();
    let r = conn.recv_bytes();
    assert!(matches!(r, Err(Error::Authentication(AuthenticationError::KeyRequired))), "{r:?}");
}

#[test]
fn a_64_mib_message_crosses_both_ways() {
    const BIG: usize = 64 * 1024 * 1024;
    let py = pythons().remove(0);
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey(KEY).bind().unwrap();
    let _peer = Peer::start(&py, "connect", &listener.address().to_string(), Some(KEY), &[]);
    let mut conn = listener.accept_within(Some(STEP)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    conn.send_bytes(format!("big:{BIG}").as_bytes()).unwrap();
    let got = conn.recv_bytes().unwrap();
    assert_eq!(got.len(), BIG);
    assert!(got == pattern(BIG), "the 64 MiB message from Python arrived intact");
    conn.send_bytes(b"recvbig").unwrap();
    conn.send_bytes(&got).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), format!("match:{BIG}").as_bytes());
    println!("interop: 64 MiB both ways with {}: ok", py.label);
}

#[test]
fn python_client_sees_the_abstract_unix_name() {
    let py = pythons().remove(0);
    let name = format!("mpconn-interop-{}", std::process::id());
    let mut listener = Listener::builder().address(Address::abstract_name(name.clone())).authkey(KEY).bind().unwrap();
    let _peer = Peer::start(&py, "connect", &listener.address().to_string(), Some(KEY), &[]);
    let mut conn = listener.accept_within(Some(STEP)).unwrap();
    conn.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(ask(&mut conn, b"echo:abstract"), b"abstract");
}

#[path = "../examples/seed_listener.rs"]
mod seed_listener;

#[path = "../examples/seed_client.rs"]
mod seed_client;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn seed_example_against_python_both_ways() {
    let seed_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    // Plus CPython 2.7's own multiprocessing, with no setting on either side: the handshake
    // tells the Rust side to write protocol 2.
    let mut peers = pythons();
    match pyenv_python("2.7.").and_then(|exe| version_of(&exe).map(|v| (exe, v))) {
        Some((exe, v)) => peers.push(Python { label: format!("CPython {v} multiprocessing"), exe, processing: false }),
        None => skip_loudly("CPython 2.7 multiprocessing (pyenv) for the seed example"),
    }
    for py in peers {
        let py2 = py.label.contains(" 2.7.");
        // The Rust seed listener and the seed's Python client.
        let address = format!("127.0.0.1:{}", free_tcp_port());
        let mut args = vec![address.clone()];
        if py.processing {
            args.extend(["--dialect".to_string(), "processing".to_string()]);
        }
        let server = thread::spawn(move || {
            let mut out = Vec::new();
            seed_listener::run(&args, &mut out).map(|()| String::from_utf8(out).unwrap())
        });
        let mut client = Command::new(&py.exe);
        client.arg(seed_dir.join("seed_client.py")).arg(&address);
        if py.processing {
            client.arg("--processing");
        }
        let out = retry_until_listening(&mut client);
        // Python 2 prints a str that came from Python 3 (or Rust) as unicode.
        let junk = if py2 && !py.processing { "u'junk'" } else { "'junk'" };
        assert_eq!(out, format!("[2.25, None, {junk}]\nhello\n8\narray('i', [42, 1729, 0, 0, 0])\n"), "{}", py.label);
        server.join().unwrap().unwrap();

        // The seed's Python listener and the Rust seed client.
        let address = format!("127.0.0.1:{}", free_tcp_port());
        let mut extra = vec![];
        if py.processing {
            extra.push("--processing");
        }
        let mut cmd = Command::new(&py.exe);
        cmd.arg(seed_dir.join("seed_listener.py")).arg(&address).args(&extra).stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().starts_with("listening on"));
        let mut out = Vec::new();
        seed_client::run(&[address], &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        // The type object `float` is a Global by name (Python 2's __builtin__ read as builtins).
        assert_eq!(
            out, "[2.25, None, 'junk', builtins.float]\nb'hello'\n8\narray('i', [42, 1729, 0, 0, 0])\n",
            "{}",
            py.label
        );
        let _ = child.wait();
        println!("interop: seed example both ways with {}: ok", py.label);
    }
}

/// Runs the seed's Python client until the Rust listener thread is up (bounded: 50 tries).
fn retry_until_listening(cmd: &mut Command) -> String {
    for _ in 0..50 {
        let out = cmd.output().unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        if !String::from_utf8_lossy(&out.stderr).contains("Connection refused") {
            panic!("seed client failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("the seed listener never listened");
}

#[test]
fn pickles_of_every_protocol_python_writes_are_read() {
    let script = "import pickle,sys\nv={'a':[1,2.5,None,True,b'x','\\u00e9'],'big':2**70,'t':(1,),'ba':bytearray(b'ab')}\nfor p in range(pickle.HIGHEST_PROTOCOL+1): print(pickle.dumps(v,protocol=p).hex())";
    for py in pythons().into_iter().filter(|p| !p.processing) {
        let out = Command::new(&py.exe).args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "{}", py.label);
        let lines = String::from_utf8(out.stdout).unwrap();
        let mut protocols = 0;
        for (proto, hex) in lines.lines().enumerate() {
            let bytes = AuthKey::from_hex(hex).unwrap();
            let v = mpconn::pickle::loads_value(bytes.as_bytes())
                .unwrap_or_else(|e| panic!("{} protocol {proto}: {e}", py.label));
            assert_eq!(
                repr(&v),
                "{'a': [1, 2.5, None, True, b'x', 'é'], 'big': 1180591620717411303424, 't': (1,), 'ba': bytearray(b'ab')}",
                "{} protocol {proto}",
                py.label
            );
            protocols += 1;
        }
        assert!(protocols >= 6, "{}", py.label);
        println!("interop: pickle protocols 0-{} from {} read", protocols - 1, py.label);
    }
}

#[test]
fn a_python_child_inherits_the_default_key() {
    // The child takes its key from the environment, as the docs tell Python children to.
    let mut listener = Listener::builder().address("127.0.0.1:0").authenticate(true).bind().unwrap();
    let script = "import os,sys\nfrom multiprocessing import current_process\nfrom multiprocessing.connection import Client\ncurrent_process().authkey = bytes.fromhex(os.environ['MPCONN_AUTHKEY'])\nhost, port = sys.argv[1].rsplit(':', 1)\nc = Client((host, int(port)), authkey=current_process().authkey)\nc.send_bytes(b'inherited')";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &listener.address().to_string()]);
    mpconn::default_authkey().unwrap().export_to(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut conn = listener.accept_within(Some(STEP)).unwrap();
    conn.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"inherited");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_large_realistic_pickle_with_shared_references_decodes() {
    // The memory budget must not refuse ordinary data: 200,000 rows
    // with a string shared by reference, floats, nested lists, 8 MiB of pickle.
    let script = "import pickle,sys\ns='shared string value'\nv={'rows':[{'id':i,'name':'n%d'%i,'tags':[s,s],'score':i*0.5} for i in range(200000)],'nan':float('nan'),'keys':{1.5:'a',2:'b'}}\nsys.stdout.buffer.write(pickle.dumps(v,protocol=4))";
    let out = Command::new("python3").args(["-c", script]).output().unwrap();
    assert!(out.status.success());
    let v = mpconn::pickle::loads_value(&out.stdout).unwrap();
    let rows = v.get("rows").and_then(Value::as_list).expect("rows");
    assert_eq!(rows.len(), 200_000);
    // The shared string is one object referenced from every row.
    assert_eq!(rows[7].get("tags").and_then(Value::as_slice).map(|t| t[1].as_str()), Some(Some("shared string value")));
}

// ---------------------------------------------------------------------------------------------
// The interop matrix: every Python peer the machine has, both directions, TCP and Unix, bytes
// and objects (a fixed value set, compared by Python's equality and repr), and a wrong key.

/// One peer of the matrix: an interpreter and how peer.py runs on it.
#[derive(Clone, Debug)]
struct MatrixPeer {
    label: String,
    exe: PathBuf,
    /// Extra peer.py flags (`--processing`, `--rhel`).
    flags: Vec<&'static str>,
    /// A Python 2 (its repr differs from Rust's, which prints as Python 3 does).
    py2: bool,
    /// The dialect a Rust listener must offer (`processing` answers only its own).
    listener_dialect: Dialect,
    /// The dialect a Rust client needs (a RHEL listener's challenge looks like the legacy one).
    client_dialect: Dialect,
    /// The version `sys.version` reports.
    version: String,
}

const MATRIX_VERSIONS: [&str; 9] = ["2.7.", "3.6.", "3.7.", "3.8.", "3.9.", "3.10.", "3.11.", "3.12.", "3.13."];

/// Every peer of the matrix this machine has; a missing one is named loudly.
fn matrix_peers() -> Vec<MatrixPeer> {
    static FOUND: std::sync::OnceLock<Vec<MatrixPeer>> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_matrix_peers).clone()
}

fn skip_loudly(what: &str) {
    println!("interop matrix: SKIPPED {what}: not installed on this machine");
    eprintln!("interop matrix: SKIPPED {what}: not installed on this machine");
}

fn find_matrix_peers() -> Vec<MatrixPeer> {
    let mut found = Vec::new();
    for prefix in MATRIX_VERSIONS {
        let Some((exe, version)) = pyenv_python(prefix).and_then(|exe| version_of(&exe).map(|v| (exe, v))) else {
            skip_loudly(&format!("CPython {prefix}x (pyenv)"));
            continue;
        };
        let plain = MatrixPeer {
            label: format!("CPython {version} multiprocessing"),
            exe: exe.clone(),
            flags: vec![],
            py2: prefix == "2.7.",
            listener_dialect: Dialect::Cpython,
            client_dialect: Dialect::Cpython,
            version: version.clone(),
        };
        if prefix == "2.7." {
            let has_processing = || {
                Command::new(&exe)
                    .args(["-c", "import processing"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !has_processing() {
                let status = Command::new(&exe).args(["-m", "pip", "install", "-q", "processing==0.52"]).status();
                println!("interop matrix: installed processing 0.52 with pip: {status:?}");
            }
            if has_processing() {
                found.push(MatrixPeer {
                    label: format!("processing 0.52 on CPython {version}"),
                    flags: vec!["--processing"],
                    listener_dialect: Dialect::Processing,
                    client_dialect: Dialect::Processing,
                    ..plain.clone()
                });
            } else {
                skip_loudly(&format!(
                    "processing 0.52 on CPython {version} ({} -m pip install processing==0.52)",
                    exe.display()
                ));
            }
        }
        if prefix == "3.9." || prefix == "3.11." {
            found.push(MatrixPeer {
                label: format!("RHEL-patched CPython {version}"),
                flags: vec!["--rhel"],
                client_dialect: Dialect::CpythonLegacySha256,
                ..plain.clone()
            });
        }
        found.push(plain);
    }
    found
}

impl MatrixPeer {
    fn start(&self, mode: &str, address: &str, key: Option<&str>, extra: &[&str]) -> Peer {
        let py = Python { label: self.label.clone(), exe: self.exe.clone(), processing: false };
        let mut args: Vec<&str> = self.flags.clone();
        args.extend_from_slice(extra);
        Peer::start(&py, mode, address, key, &args)
    }
}

/// The batched conversation of the matrix: bytes both ways, the value set from Python to Rust
/// and back, with no protocol setting (the handshake chose it).
fn matrix_converse(conn: &mut Connection, peer: &MatrixPeer) {
    let who = &peer.label;
    // What the handshake taught: 4 for CPython 3.12+ and Red Hat's, 2 where it may be a Python 2.
    let modern =
        peer.flags.contains(&"--rhel") || ["3.12.", "3.13.", "3.14."].iter().any(|v| peer.version.starts_with(v));
    assert_eq!(conn.pickle_protocol(), if modern { 4 } else { 2 }, "{who}");
    conn.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(String::from_utf8(ask(conn, b"version")).unwrap(), peer.version, "{who}");
    assert_eq!(ask(conn, b"echo:hello"), b"hello", "{who}");
    assert_eq!(ask(conn, b"echo:"), b"", "{who}");
    assert_eq!(ask(conn, b"big:100000"), pattern(100_000), "{who}");
    conn.send_bytes(b"recvbig").unwrap();
    conn.send_bytes(&pattern(70_000)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"match:70000", "{who}");

    conn.send_bytes(b"values").unwrap();
    let v = conn.recv_value().unwrap_or_else(|e| panic!("{who}: the value set from Python: {e}"));
    let python_repr = String::from_utf8(conn.recv_bytes().unwrap()).unwrap();
    if !peer.py2 {
        assert_eq!(repr(&v), python_repr, "{who}: Rust's repr of Python's value set");
    }
    conn.send_value(&v).unwrap();
    let verdict = String::from_utf8(conn.recv_bytes().unwrap()).unwrap();
    assert_eq!(
        verdict,
        "ok",
        "{who}: Python's verdict on the value set sent back (protocol {})",
        conn.pickle_protocol()
    );
    // Rust's own value, with no setting: the peer must read it.
    conn.send_bytes(b"obj").unwrap();
    let sent = Value::from(vec![Value::Int(-7), Value::Str("é€".into()), Value::Bytes(b"\x00\xff".to_vec())]);
    conn.send_value(&sent).unwrap();
    let _back = conn.recv_value().unwrap_or_else(|e| panic!("{who}: {e}"));
    let shown = String::from_utf8(conn.recv_bytes().unwrap()).unwrap();
    let expected = if peer.py2 { "[-7, u'\\xe9\\u20ac', '\\x00\\xff']" } else { "[-7, 'é€', b'\\x00\\xff']" };
    assert_eq!(shown, expected, "{who}");
}

fn matrix_addresses(dir: &Path, tag: &str) -> Vec<Address> {
    vec![Address::inet("127.0.0.1", 0), Address::unix(dir.join(format!("{tag}.sock")))]
}

#[test]
fn matrix_rust_listener_serves_every_python_client() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    for (i, peer) in matrix_peers().into_iter().enumerate() {
        for address in matrix_addresses(dir.path(), &format!("l{i}")) {
            // The default listener, but for `processing`, which answers only its own dialect.
            let mut listener =
                Listener::builder().address(address).authkey(KEY).dialect(peer.listener_dialect).bind().unwrap();
            let family = listener.address().family();
            let p = peer.start("connect", &listener.address().to_string(), Some(KEY), &[]);
            let mut conn = listener.accept_within(Some(STEP)).unwrap_or_else(|e| panic!("{}: {e}", peer.label));
            p.expect_line("CONNECTED");
            matrix_converse(&mut conn, &peer);
            conn.send_bytes(b"quit").unwrap();
            p.expect_line("DONE");
            println!("interop matrix: Rust listener <- {} client over {family}: ok", peer.label);
        }
        // A wrong key from the Python client: both sides fail.
        let mut listener =
            Listener::builder().address("127.0.0.1:0").authkey(KEY).dialect(peer.listener_dialect).bind().unwrap();
        let p = peer.start("connect", &listener.address().to_string(), Some("wrong"), &[]);
        let r = listener.accept_within(Some(STEP));
        assert!(matches!(r, Err(Error::Authentication(AuthenticationError::DigestMismatch))), "{}: {r:?}", peer.label);
        p.expect_line("AUTHFAIL");
        println!("interop matrix: Rust listener <- {} client with a wrong key: refused both sides", peer.label);
    }
    println!("interop matrix: Rust listener side took {:?}", started.elapsed());
}

#[test]
fn matrix_rust_client_talks_to_every_python_listener() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    for (i, peer) in matrix_peers().into_iter().enumerate() {
        for address in matrix_addresses(dir.path(), &format!("c{i}")) {
            // Twice: a wrong key first (refused on both sides), then the conversation.
            let p = peer.start("listen", &address.to_string(), Some(KEY), &["--accepts", "2"]);
            let bound = p.expect_line("READY");
            let auth = |key: &str| mpconn::AuthOptions::new().authkey(key).dialect(peer.client_dialect);
            // Client::dialect here, AuthOptions::dialect below: the same setting.
            let r = Client::new(bound.as_str()).authkey("wrong").dialect(peer.client_dialect).connect();
            assert!(matches!(r, Err(Error::Authentication(AuthenticationError::Rejected))), "{}: {r:?}", peer.label);
            p.expect_line("AUTHFAIL");
            let mut conn = Client::new(bound.as_str())
                .auth(auth(KEY))
                .connect()
                .unwrap_or_else(|e| panic!("{} at {bound}: {e}", peer.label));
            p.expect_line("CONNECTED");
            matrix_converse(&mut conn, &peer);
            conn.send_bytes(b"quit").unwrap();
            p.expect_line("DONE");
            println!("interop matrix: Rust client -> {} listener at {bound}: ok (wrong key refused first)", peer.label);
        }
    }
    println!("interop matrix: Rust client side took {:?}", started.elapsed());
}

#[test]
fn keyless_python_client_against_keyed_rust_listener_is_an_authentication_failure() {
    let py = pythons().remove(0);
    let mut listener = Listener::builder().address("127.0.0.1:0").authkey(KEY).bind().unwrap();
    for _ in 0..5 {
        let _peer = Peer::start(&py, "connect", &listener.address().to_string(), None, &[]);
        let r = listener.accept_within(Some(STEP));
        assert!(matches!(r, Err(Error::Authentication(_))), "an authentication failure, not a reset: {r:?}");
    }
}
