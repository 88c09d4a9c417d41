//! The `mpconn` command end to end: exit codes, output shapes, stress runs. Bounded in time.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mpconn");
const WAIT: Duration = Duration::from_secs(60);

/// Runs the command with a time limit (it is killed past it).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("mpconn {args:?} did not finish within {WAIT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `mpconn listen` in the background; killed on drop. Lines of its stdout arrive on a channel.
struct Listening {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
}

impl Listening {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Listening {
        let mut cmd = Command::new(BIN);
        cmd.arg("listen").args(args).stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let first = lines.recv_timeout(WAIT).unwrap();
        let address = first.strip_prefix("listening on ").expect("the address line").to_string();
        Listening { child, address, lines }
    }

    fn expect_line(&self, contains: &str) -> String {
        loop {
            let l = self.lines.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no line containing {contains:?}"));
            if l.contains(contains) {
                return l;
            }
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listen_prints_events_and_send_gets_echoes_of_bytes_and_pickles() {
    let env = [("CLI_KEY", "secret password")];
    let server = Listening::start(&["--echo", "--authkey-env", "CLI_KEY", "127.0.0.1:0"], &env);
    let out = run(&["send", &server.address, "hello", "world", "--recv", "2", "--authkey-env", "CLI_KEY"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "b'hello'\nb'world'\n");
    server.expect_line("open ");
    let line = server.expect_line("message ");
    assert!(line.ends_with("(5 bytes): b'hello'"), "{line}");
    let line = server.expect_line("message ");
    assert!(line.ends_with("(5 bytes): b'world'"), "{line}");

    let out = run(
        &[
            "send",
            &server.address,
            "--pickle",
            r#"{"a": [1, 2.5, null, {"$bytes": "6869"}]}"#,
            "--recv",
            "1",
            "--authkey-env",
            "CLI_KEY",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{'a': [1, 2.5, None, b'hi']}\n");
    let line = server.expect_line("message ");
    assert!(line.ends_with("{'a': [1, 2.5, None, b'hi']}"), "{line}");
    server.expect_line("close ");
}

#[test]
fn a_python_client_talks_to_mpconn_listen() {
    let server = Listening::start(&["--echo", "--authkey", "k", "127.0.0.1:0"], &[]);
    let (host, port) = server.address.rsplit_once(':').unwrap();
    let script = format!(
        "from multiprocessing.connection import Client\nc = Client(('{host}', {port}), authkey=b'k')\nc.send({{'x': (1, 'y')}})\nprint(c.recv())"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{'x': (1, 'y')}\n");
    assert!(server.expect_line("message ").ends_with("{'x': (1, 'y')}"));
}

#[test]
fn errors_are_one_line_on_stderr_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nobody-listens");
    let out = run(&["send", nowhere.to_str().unwrap(), "x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mpconn: "), "{err}");

    // A malformed value is a usage error (2), as the README's exit-code table says.
    let out = run(&["send", nowhere.to_str().unwrap(), "--pickle", "{not json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nor JSON"), "{}", text(&out.stderr));

    let out = run(&["send", "x", "--authkey", "a", "--authkey-env", "B"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("give the key once"));

    let out = run(&["stress", "--size", "3"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["listen", "send", "bench", "stress"] {
        let out = run(&[sub, "--help"], &[]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Example"), "{sub} --help has no example");
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[test]
fn bench_prints_json_lines_in_the_standard_shape() {
    for (w, family, n, unit) in [
        ("W1", "unix", "20000", "msg/s"),
        ("W2", "tcp", "2000", "us/rtt"),
        ("W3", "unix", "3", "GB/s"),
        ("W4", "unix", "100", "conn/s"),
    ] {
        let out = run(&["bench", "--workload", w, "--family", family, "--n", n], &[]);
        assert!(out.status.success(), "{w}: {}", text(&out.stderr));
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{w}");
        let l = &lines[0];
        assert_eq!(l["impl"], "mpconn-reactor");
        assert_eq!(l["workload"], w);
        assert_eq!(l["family"], family);
        assert_eq!(l["unit"], unit);
        assert_eq!(l["n"].as_u64().unwrap().to_string(), n);
        assert!(l["value"].as_f64().unwrap() > 0.0);
    }
    // The blocking face, W2 and W4 (whose server once accepted one client fewer than the
    // bench's clients opened: the last one's handshake timed out).
    for (w, n) in [("W2", "2000"), ("W4", "50")] {
        let out = run(&["bench", "--workload", w, "--n", n, "--face", "blocking"], &[]);
        assert!(out.status.success(), "{w}: {}", text(&out.stderr));
        let lines = json_lines(&out);
        assert_eq!(lines[0]["impl"], "mpconn-blocking", "{w}");
        assert_eq!(lines[0]["n"].as_u64().unwrap().to_string(), n, "{w}");
    }
    // The async face (mpconn::tokio on a current-thread runtime), W1-W4, each one JSON line.
    for (w, n) in [("W1", "20000"), ("W2", "2000"), ("W3", "4"), ("W4", "50")] {
        let out = run(&["bench", "--workload", w, "--n", n, "--face", "async"], &[]);
        assert!(out.status.success(), "{w}: {}", text(&out.stderr));
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{w}");
        assert_eq!(lines[0]["impl"], "mpconn-async", "{w}");
        assert_eq!(lines[0]["workload"], w);
        assert!(lines[0]["value"].as_f64().unwrap() > 0.0, "{w}");
    }
}

/// `--reactors` (and `--acceptor`): the aggregate of a sharded group, one JSON line, its impl
/// naming the reactors, the client processes and the acceptor when chosen.
#[test]
fn bench_with_reactors_reports_the_groups_aggregate() {
    for (w, n, family, acceptor) in [
        ("W4", "200", "unix", false),
        ("W4", "200", "tcp", true),
        ("W4", "200", "unix", true),
        ("W1", "20000", "tcp", false),
    ] {
        let mut args = vec!["bench", "--workload", w, "--family", family, "--n", n, "--reactors", "2"];
        args.extend(["--clients", "2"]);
        if acceptor {
            args.push("--acceptor");
        }
        let out = run(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{args:?}");
        let want = format!("mpconn-reactor/2-reactors/2-clients{}", if acceptor { "/acceptor" } else { "" });
        assert_eq!(lines[0]["impl"], want.as_str(), "{args:?}");
        assert_eq!(lines[0]["n"].as_u64().unwrap().to_string(), n, "{args:?}");
        assert!(lines[0]["value"].as_f64().unwrap() > 0.0, "{args:?}");
    }
}

#[test]
fn bench_w5_holds_connections_and_reports_memory_per_connection() {
    let out = run(&["bench", "--workload", "W5", "--n", "500"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let mem = lines.iter().find(|l| l["workload"] == "W5").unwrap();
    assert_eq!(mem["unit"], "bytes/conn");
    assert_eq!(mem["n"], 500);
    assert!(lines.iter().any(|l| l["workload"] == "W5-idle-turn"));
}

#[test]
fn stress_with_hundreds_of_clients_loses_nothing() {
    let out = run(&["stress", "--clients", "300", "--messages", "20"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("round trips: 6000 in"), "{stdout}");
    assert!(stdout.contains("integrity: 0 lost, 0 duplicated, 0 reordered, 0 corrupted"), "{stdout}");
    assert!(stdout.contains("errors: none"), "{stdout}");
    assert!(stdout.contains("server memory:"), "{stdout}");
}

#[test]
fn stress_against_a_server_that_drops_connections_reports_errors_and_ends() {
    // A server that echoes one message per connection, then hangs up.
    let mut listener = mpconn::Listener::builder().address("127.0.0.1:0").authkey("k").bind().unwrap();
    let address = listener.address().to_string();
    thread::spawn(move || {
        for _ in 0..20 {
            let Ok(mut c) = listener.accept() else {
                continue;
            };
            if let Ok(m) = c.recv_bytes() {
                let _ = c.send_bytes(&m);
            }
        }
    });
    let out = run(&["stress", &address, "--authkey", "k", "--clients", "20", "--messages", "10"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("closed early"), "{stdout}");
    assert!(!stdout.contains("errors: none"), "{stdout}");
}

#[test]
fn send_pickle_takes_python_literals_and_negative_numbers() {
    let server = Listening::start(&["--echo", "--authkey", "k", "127.0.0.1:0"], &[]);
    let literal = "{'a': {1, 2}, 'b': b'x', 3: (1, -2**100)}";
    let out =
        run(&["send", &server.address, "--authkey", "k", "--pickle", literal, "-1", "2**100", "--recv", "3"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{'a': {1, 2}, 'b': b'x', 3: (1, -1267650600228229401496703205376)}\n-1\n1267650600228229401496703205376\n"
    );
    // JSON still works, and --json reads JSON only.
    let out = run(&["send", &server.address, "--authkey", "k", "--json", "[1, null]", "--recv", "1"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "[1, None]\n");
    let out = run(&["send", &server.address, "--authkey", "k", "--pickle", "__import__('os')"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn send_without_key_to_a_keyed_listener_fails_without_recv() {
    let server = Listening::start(&["--authkey", "k", "127.0.0.1:0"], &[]);
    let out = run(&["send", &server.address, "hello"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("challenge") || err.contains("key"), "{err}");
    // A keyless listener: delivered, exit 0.
    let open = Listening::start(&["127.0.0.1:0"], &[]);
    let out = run(&["send", &open.address, "hello"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    open.expect_line("message ");
}

/// tests/python/peer.py listening with key "k" (hex 6b) on python3; its address.
fn python_peer(extra: &[&str]) -> (Child, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/peer.py");
    let mut child = Command::new("python3")
        .args([script, "listen", "127.0.0.1:0", "6b"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first.strip_prefix("READY ").expect("READY line").to_string();
    thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (child, address)
}

#[test]
fn send_dialect_and_protocol_are_honoured() {
    // A Red Hat (FIPS) listener: only with --dialect legacy-sha256.
    let (mut rhel, address) = python_peer(&["--rhel", "--accepts", "2"]);
    let out = run(&["send", &address, "--authkey", "k", "echo:x", "--recv", "1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("legacy-sha256"), "the error names the likely cause: {}", text(&out.stderr));
    let out = run(&["send", &address, "--authkey", "k", "--dialect", "legacy-sha256", "echo:rhel", "--recv", "1"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "b'rhel'\n");
    let _ = rhel.kill();
    let _ = rhel.wait();

    // --protocol: a Python listener answers with the first two bytes of each pickle (PROTO n).
    let script = "import sys\nfrom multiprocessing.connection import Listener\nl = Listener(('127.0.0.1', 0), authkey=b'k')\nprint('READY %s:%d' % l.address)\nsys.stdout.flush()\nfor _ in range(2):\n    c = l.accept()\n    c.send_bytes(c.recv_bytes()[:2].hex().encode())\n    c.close()\n";
    let mut py = Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let address = lines.next().unwrap().unwrap().strip_prefix("READY ").unwrap().to_string();
    let default = run(&["send", &address, "--authkey", "k", "--pickle", "(1, 'x')", "--recv", "1"], &[]);
    let chosen = run(&["send", &address, "--authkey", "k", "--protocol", "5", "--pickle", "1", "--recv", "1"], &[]);
    let _ = py.kill();
    let _ = py.wait();
    assert!(default.status.success(), "{}", text(&default.stderr));
    // python3 is a CPython <= 3.11 here (legacy handshake): protocol 2; 3.12+ would say 4.
    assert!(["b'8002'\n", "b'8004'\n"].contains(&text(&default.stdout).as_str()), "{}", text(&default.stdout));
    assert!(chosen.status.success(), "{}", text(&chosen.stderr));
    assert_eq!(text(&chosen.stdout), "b'8005'\n");
    let out = run(&["send", "x", "--protocol", "9", "--pickle", "1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--protocol"), "{}", text(&out.stderr));
}

/// `send` sends its challenge with its answer unless `--no-early-challenge` says to wait for
/// `#WELCOME#`: a CPython listener driven step by step looks (`Connection.poll`) for the
/// client's challenge before it sends `#WELCOME#` and prints what it saw.
#[test]
fn send_no_early_challenge_waits_for_welcome() {
    let script = r##"
import sys, os, hmac, socket
from multiprocessing.connection import Connection, answer_challenge
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(2)
print("READY %s:%d" % s.getsockname()); sys.stdout.flush()
for look in (10.0, 0.3):
    a, _ = s.accept()
    c = Connection(a.detach())
    message = b"{sha256}" + os.urandom(40)
    c.send_bytes(b"#CHALLENGE#" + message)
    assert c.recv_bytes(256) == b"{sha256}" + hmac.new(b"k", message, "sha256").digest()
    print("EARLY" if c.poll(look) else "LATE"); sys.stdout.flush()
    c.send_bytes(b"#WELCOME#")
    answer_challenge(c, b"k")
    c.send_bytes(c.recv_bytes())
    c.close()
"##;
    let mut py = Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let address = lines.next().unwrap().unwrap().strip_prefix("READY ").unwrap().to_string();
    let early = run(&["send", &address, "--authkey", "k", "one", "--recv", "1"], &[]);
    let late = run(&["send", &address, "--authkey", "k", "--no-early-challenge", "two", "--recv", "1"], &[]);
    let seen: Vec<String> = lines.take(2).map_while(Result::ok).collect();
    let _ = py.kill();
    let _ = py.wait();
    assert!(early.status.success() && late.status.success(), "{} {}", text(&early.stderr), text(&late.stderr));
    assert_eq!((text(&early.stdout), text(&late.stdout)), ("b'one'\n".to_string(), "b'two'\n".to_string()));
    assert_eq!(seen, ["EARLY", "LATE"]);
}

/// Waits (bounded) for `child` to exit; kills it and panics past `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on a process this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Whether a process with this id exists (a zombie counts).
fn exists(pid: u32) -> bool {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// One `listen` on a fresh Unix socket (key "right"; extra options and environment given), a
/// `send` with the wrong key, then SIGINT (SIGTERM if `-q` is among the options). Checks the exit (0) and that the socket file is gone;
/// returns listen's stdout (its address replaced by ADDR) and stderr.
fn listen_refuse_interrupt(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.arg("listen").args(args).args(["--authkey", "right"]).arg(&socket).env_remove("RUST_LOG");
    cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = lines.recv_timeout(WAIT).unwrap();
    assert!(first.starts_with("listening on "), "{first}");
    assert!(socket.exists());
    let sent = run(&["send", socket.to_str().unwrap(), "--authkey", "wrong", "hi"], &[]);
    assert_eq!(sent.status.code(), Some(1), "{}", text(&sent.stderr));
    // The refusal is handled (and logged) before the client hears it; a moment for the line.
    thread::sleep(Duration::from_millis(200));
    signal(&child, if args.contains(&"-q") { libc::SIGTERM } else { libc::SIGINT });
    let status = wait_bounded(&mut child, WAIT);
    assert_eq!(status.code(), Some(0), "Ctrl-C (or SIGTERM) ends listen normally");
    assert!(!socket.exists(), "the socket file is removed");
    let mut stdout = vec![first];
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        stdout.push(l);
    }
    let stdout = stdout.join("\n").replace(socket.to_str().unwrap(), "ADDR");
    (stdout, std::fs::read_to_string(&err_path).unwrap())
}

#[test]
fn log_lines_go_to_stderr_with_v_or_rust_log_and_stdout_is_unchanged() {
    let (plain, plain_err) = listen_refuse_interrupt(&[], &[]);
    assert_eq!(plain, "listening on ADDR\nclose conn#1.2: authentication failed: digest received was wrong");
    assert_eq!(plain_err, "", "the default (warn) logs nothing for a refused handshake");
    for (args, env) in [(&["-vv"][..], &[][..]), (&[][..], &[("RUST_LOG", "debug")][..])] {
        let (out, err) = listen_refuse_interrupt(args, env);
        assert_eq!(out, plain, "{args:?} {env:?}: stdout is the same");
        assert!(
            err.lines().any(|l| l.contains("DEBUG mpconn::wire::session: session closing: authentication failed")),
            "{args:?} {env:?}: {err}"
        );
    }
    // RUST_LOG wins over -v.
    let (_, err) = listen_refuse_interrupt(&["-vv"], &[("RUST_LOG", "error")]);
    assert_eq!(err, "");
    // -q: errors only, and listen prints only the address line (its old --quiet).
    let (out, err) = listen_refuse_interrupt(&["--quiet"], &[]);
    assert_eq!((out.as_str(), err.as_str()), ("listening on ADDR", ""));
    let (out, err) = listen_refuse_interrupt(&["-q", "-vv"], &[]);
    assert_eq!(out, "listening on ADDR");
    assert!(err.contains("session closing: authentication failed"), "-v wins over -q for the log: {err}");

    // The client side too: its log line, then its error line.
    let server = Listening::start(&["--authkey", "right", "127.0.0.1:0"], &[]);
    let out = run(&["-v", "-v", "send", &server.address, "--authkey", "wrong", "hi"], &[("RUST_LOG", "")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(err.contains("DEBUG mpconn::wire::session: session closing: authentication failed"), "{err}");
    assert!(err.lines().last().unwrap().starts_with("mpconn: authentication failed"), "{err}");
    let out = run(&["send", &server.address, "--authkey", "wrong", "hi", "-q"], &[("RUST_LOG", "")]);
    assert_eq!(text(&out.stderr).lines().count(), 1, "-q: only the error: {}", text(&out.stderr));
}

#[test]
fn ctrl_c_ends_bench_with_a_partial_report_and_no_client_left() {
    // n far larger than what runs before the signal, so the run is cut short.
    let mut bench = Command::new(BIN)
        .args(["bench", "--workload", "W1", "--n", "2000000000"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let client = loop {
        let out = Command::new("pgrep").args(["-P", &bench.id().to_string()]).output().unwrap();
        if let Some(pid) = text(&out.stdout).lines().next() {
            break pid.trim().parse::<u32>().unwrap();
        }
        assert!(start.elapsed() < WAIT, "no bench client process");
        thread::sleep(Duration::from_millis(20));
    };
    // Time to measure something.
    thread::sleep(Duration::from_millis(1500));
    signal(&bench, libc::SIGINT);
    let status = wait_bounded(&mut bench, WAIT);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut bench.stdout.take().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stderr, "", "the client is stopped before it sees a broken connection");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let l = &lines[0];
    assert_eq!(l["partial"], true);
    assert_eq!(l["workload"], "W1");
    assert_eq!(l["unit"], "msg/s");
    let n = l["n"].as_u64().unwrap();
    assert!(n > 1 && n < 2_000_000_000, "{stdout}");
    assert!(l["value"].as_f64().unwrap() > 0.0);
    assert!(!exists(client), "the client process {client} is gone");
}

#[test]
fn exit_codes_usage_2_runtime_1_and_every_help_lists_them() {
    for args in [&["send", "x", "--bogus"][..], &["bench", "--workload", "W9"], &["listen", "--family", "x"], &["nope"]]
    {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
    // Nobody listens on port 1; a Unix socket path that does not exist; an address not bindable.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none").join("s");
    for args in [
        &["send", "127.0.0.1:1", "x"][..],
        &["send", missing.to_str().unwrap(), "x"],
        &["listen", missing.to_str().unwrap()],
    ] {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("mpconn: "), "{args:?}: {}", text(&out.stderr));
    }
    for sub in ["listen", "send", "bench", "stress"] {
        let help = text(&run(&[sub, "--help"], &[]).stdout);
        assert!(help.contains("Exit codes:\n  0  ok\n  1  runtime error"), "{sub}: {help}");
        assert!(help.contains("  2  usage error"), "{sub}: {help}");
        assert_eq!(help.contains("  3  stress found errors"), sub == "stress", "{sub}: {help}");
    }
}

#[test]
fn negative_values_after_pickle_need_no_double_dash() {
    let server = Listening::start(&["--echo", "--authkey", "k", "127.0.0.1:0"], &[]);
    for (value, printed) in [("-1", "-1"), ("-1.5", "-1.5"), ("-2**100", "-1267650600228229401496703205376")] {
        let out = run(&["send", &server.address, "--authkey", "k", "--pickle", value, "--recv", "1"], &[]);
        assert!(out.status.success(), "{value}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{printed}\n"));
        let line = server.expect_line("message ");
        assert!(line.ends_with(&format!("): {printed}")), "{line}");
    }
    // Several, between options; and a bytes message that starts like one is sent as it is.
    let out = run(&["send", &server.address, "--pickle", "-2**2", "-(3)", "--recv", "2", "--authkey", "k"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "-4\n-3\n");
    let out = run(&["send", &server.address, "--authkey", "k", "-5x", "--recv", "1"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "b'-5x'\n");
}
