//! `mpconn stress` against services that misbehave, and the command's own edges: the findings of
//! the outside review of issue 13 ("break it"), one test each, kept as regression tests. Each
//! names what went wrong before its fix (a second Ctrl-C orphaning the embedded server, an
//! `--hdr-out` log HdrHistogram's readers refuse, malformed values exiting 1, a lost `--hdr-out`
//! report, a tiny `--rate`, a stall at the end of an open-loop run, a service replying twice,
//! errors counted twice, Ctrl-C during handshakes). Services are CPython scripts in
//! `tests/python/` (key `k`, Unix sockets in a temp dir). Every command is bounded (killed past
//! `WAIT`). Each test's doc is the reviewer's description of the behaviour *before* the fix
//! (README.md and ARCHITECTURE.md say what the command does now).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as J;

const BIN: &str = env!("CARGO_BIN_EXE_mpconn");
const SVC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stress_svc.py");
const BYTES_STOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/bytes_echo_stop.py");
const SILENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/silent_listener.py");
const HDRH_READ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/hdrh_read.py");
const WAIT: Duration = Duration::from_secs(40);

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn wait(child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("mpconn did not finish within {WAIT:?}");
        }
    }
}

fn sigint(pid: u32) {
    // SAFETY: a signal to a process this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
}

fn run(args: &[&str]) -> Output {
    wait(spawn(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn report(out: &Output) -> J {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}\n{}", text(&out.stdout), text(&out.stderr)))
}

/// A Python service on a Unix socket in a temp dir; killed on drop.
struct Service {
    child: Child,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Service {
    fn start(script: &str, args: &[&str]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        Service { child, _dir: dir, path }
    }

    fn addr(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// README: "2 | usage error: an unknown option or subcommand, a malformed value". Every one of
/// these is a malformed value rejected before anything runs, yet exits 1 ("runtime error").
#[test]
fn malformed_values_are_usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["stress", "--clients", "0"],
        &["stress", "--rate", "0"],
        &["stress", "--rate", "NaN"],
        &["stress", "--rate", "inf"],
        &["stress", "--threads", "0"],
        &["stress", "--clients", "2", "--threads", "5"],
        &["stress", "--ramp", "1s"],
        &["stress", "--churn", "2"],
        &["stress", "--timeout", "0s"],
        &["stress", "/nonexistent.sock", "--request", "{'a':"],
        &["stress", "/nonexistent.sock", "--expect", "{1,"],
        &["stress", "/nonexistent.sock", "--request-bytes", "abc"],
        &["stress", "/nonexistent.sock", "--request-bytes", "zz"],
        &["send", "/nonexistent.sock", "--pickle", "hello"],
    ];
    let mut wrong = Vec::new();
    for args in cases {
        let out = run(args);
        if out.status.code() != Some(2) {
            wrong.push(format!("{args:?} -> {:?}: {}", out.status.code(), text(&out.stderr).trim()));
        }
    }
    assert!(wrong.is_empty(), "usage errors not exiting 2:\n{}", wrong.join("\n"));
}

/// HdrHistogram's log readers (Java `HistogramLogReader` -> `decodeFromCompressedByteBuffer`,
/// HdrHistogram_c `hdr_log_read`, Python `hdrh`) accept only *compressed* histograms in an
/// interval log: cookie 0x1c849304|0x10, base64 "HISTF...". `--hdr-out` writes the uncompressed
/// V2 encoding (`V2Serializer`, cookie 0x1c849313, "HISTE..."), which Java rejects with "The
/// buffer does not contain a compressed Histogram". The crate's own Deserializer reads both,
/// which is why the existing read-back test passes.
#[test]
fn hdr_out_intervals_are_compressed_histograms_as_log_readers_require() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hlog");
    let out = run(&["stress", "--clients", "10", "--messages", "50", "--hdr-out", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = std::fs::read_to_string(&log).unwrap();
    let intervals: Vec<&str> =
        body.lines().filter(|l| !l.starts_with('#') && !l.starts_with("\"StartTimestamp\"")).collect();
    assert!(!intervals.is_empty());
    for line in intervals {
        let b64 = line.rsplit(',').next().unwrap();
        assert!(b64.starts_with("HISTF"), "not a compressed V2 histogram (Java's reader throws): {line:.60}");
    }
    // The official Python reader (`pip install hdrhistogram`) decodes every interval.
    let read = Command::new("python3").arg(HDRH_READ).arg(&log).output().expect("python3 runs");
    if read.status.code() == Some(77) {
        eprintln!("SKIPPED the hdrh check: the Python package hdrhistogram is not installed");
        return;
    }
    assert!(read.status.success(), "hdrh could not read the log: {}", text(&read.stderr));
    let counts: Vec<u64> = text(&read.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(counts.get(1), Some(&500), "hdrh read {}", text(&read.stdout));
}

/// An `--hdr-out` path that cannot be written is found only after the whole run, and then the
/// `--json` object is never printed: the run's results are lost (stdout empty, exit 1).
#[test]
fn an_unwritable_hdr_out_does_not_lose_the_runs_json() {
    let out = run(&[
        "stress",
        "--clients",
        "5",
        "--messages",
        "20",
        "--json",
        "--hdr-out",
        "/nonexistent-dir-break13/x.hlog",
    ]);
    let ran = text(&out.stderr).contains("round trips:");
    if ran {
        let r = report(&out);
        assert_eq!(r["ok"], 100);
    } else {
        assert_eq!(out.status.code(), Some(2), "rejected up front as a usage error");
    }
}

/// `--rate 1e-12` passes validation; the schedule's due time (`t0 + due * 1e9 as u64`, saturated
/// to u64::MAX) wraps, so every request is "due" and the run goes at full closed-loop speed
/// (tens of thousands a second against a target of 1e-12/s) with made-up latencies, exit 0.
#[test]
fn a_tiny_rate_does_not_send_at_full_speed() {
    let svc = Service::start(SVC, &["echo"]);
    let out = run(&[
        "stress",
        svc.addr(),
        "--authkey",
        "k",
        "--clients",
        "2",
        "--rate",
        "1e-12",
        "--duration",
        "1s",
        "--request",
        "{seq}",
        "--json",
    ]);
    if out.status.code() == Some(2) {
        return; // rejected as a usage error: fine
    }
    let r = report(&out);
    assert!(r["sent"].as_u64().unwrap() <= 2, "target 1e-12/s but sent {} (rate {})", r["sent"], r["rate"]);
}

/// A service that stalls 2 s near the end of a `--duration` run: the requests scheduled during
/// the stall are never sent, so they are in no histogram; the run reports p99 of a few ms,
/// `passed: true`, exit 0, while 1/3 of the schedule was missed (achieved rate ~40 % of target).
/// The coordinated-omission correction stops at the end of the run.
#[test]
fn a_stall_at_the_end_of_an_open_loop_run_shows_or_fails_the_run() {
    // The service stalls from 1.5 s after it starts for 2 s; the run lasts 3 s.
    let svc = Service::start(SVC, &["stall2", "1.5"]);
    let out = run(&[
        "stress",
        svc.addr(),
        "--authkey",
        "k",
        "--clients",
        "4",
        "--rate",
        "2000",
        "--duration",
        "3s",
        "--request",
        "{'n': {seq}}",
        "--expect",
        "echo",
        "--seed",
        "1",
        "--json",
    ]);
    let r = report(&out);
    let p99 = r["latency_us"]["p99"].as_f64().unwrap();
    let rate = r["rate"].as_f64().unwrap();
    assert!(
        p99 >= 500_000.0 || r["passed"] == false,
        "a 2 s stall hidden: p99 {p99} µs, passed {}, achieved {rate}/s of 2000/s, sent {}",
        r["passed"],
        r["sent"]
    );
}

/// A service that answers every request twice passes the default check (`--expect any`) in
/// closed loop: each duplicate is taken as the reply to the next request (latency ~40 µs), the
/// last duplicates are dropped unseen when the clients close, exit 0.
#[test]
fn a_service_that_replies_twice_does_not_pass() {
    let svc = Service::start(SVC, &["double"]);
    let out = run(&[
        "stress",
        svc.addr(),
        "--authkey",
        "k",
        "--clients",
        "3",
        "--messages",
        "100",
        "--request",
        "{'n': {seq}}",
        "--json",
    ]);
    let r = report(&out);
    assert_ne!(out.status.code(), Some(0), "double replies passed: ok {}, errors {}", r["ok"], r["errors_by_kind"]);
}

/// The echo test against a service that goes silent after 5 echoes per connection: one lost
/// echo per client is counted twice in `errors` (`timeout` and `echo lost`) but once in the
/// timeline, so the timeline's errors do not add up to the total.
#[test]
fn timeline_errors_add_up_to_the_total() {
    let svc = Service::start(BYTES_STOP, &["5"]);
    let out = run(&[
        "stress",
        svc.addr(),
        "--authkey",
        "k",
        "--clients",
        "2",
        "--messages",
        "10",
        "--timeout",
        "1s",
        "--json",
    ]);
    let r = report(&out);
    let timeline: u64 = r["timeline"].as_array().unwrap().iter().map(|s| s["errors"].as_u64().unwrap()).sum();
    assert_eq!(timeline, r["errors"].as_u64().unwrap(), "{}", r);
}

/// Ctrl-C while the clients are still in their handshake (a listener that accepts and never
/// speaks): the report comes only when the 10 s handshake timeout ends every connect.
#[test]
fn ctrl_c_while_connecting_reports_promptly() {
    let svc = Service::start(SILENT, &[]);
    let child =
        spawn(&["stress", svc.addr(), "--authkey", "k", "--clients", "5", "--duration", "30s", "--request", "1"]);
    thread::sleep(Duration::from_millis(1500));
    sigint(child.id());
    let t = Instant::now();
    let out = wait(child);
    let took = t.elapsed();
    assert!(text(&out.stdout).contains("round trips:"), "{}", text(&out.stdout));
    assert!(took < Duration::from_secs(3), "the report took {took:?} after Ctrl-C");
}

/// A second Ctrl-C exits 130 at once (`std::process::exit`), skipping the embedded server's
/// drop: the `listen --echo` child, in its own process group so the terminal's Ctrl-C never
/// reaches it, is left running (reparented to init) with its socket directory in /tmp, and it
/// still holds mpconn's stdout and stderr, so a reader of mpconn's output (`mpconn stress | tee`,
/// `$(...)`, a CI harness) never sees EOF and hangs. (Here the server is paused with SIGSTOP so
/// the second Ctrl-C surely lands during the orderly end; the socket directory is then left
/// every time, the live orphan in most unpaused runs: seen by hand in the review.)
#[test]
fn a_second_ctrl_c_leaves_no_embedded_server_behind() {
    // Directories already in the temporary folder are not this run's: with pids reused (32,768
    // on a busy CI machine), an earlier process of the same pid may have left one.
    let socket_dirs = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("mpconn-"))
            .collect()
    };
    let before = socket_dirs();
    let mut child = spawn(&["stress", "--clients", "100", "--messages", "1000000"]);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut server: Option<u32> = None;
    while server.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        server = kids.split_whitespace().next().and_then(|s| s.parse().ok());
    }
    let server = server.expect("the embedded server started");
    thread::sleep(Duration::from_millis(1500));
    // The server paused, the first Ctrl-C's orderly end waits for in-flight replies, so the
    // second Ctrl-C surely comes during it (as a user's second Ctrl-C on a slow end does).
    let _ = Command::new("kill").arg("-STOP").arg(server.to_string()).status();
    sigint(pid);
    thread::sleep(Duration::from_millis(500));
    sigint(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill").arg("-CONT").arg(server.to_string()).status();
    thread::sleep(Duration::from_millis(1000));
    let alive = std::fs::read_to_string(format!("/proc/{server}/cmdline")).unwrap_or_default().contains("listen");
    let dirs: Vec<String> =
        socket_dirs().into_iter().filter(|n| n.starts_with(&format!("mpconn-{pid}-")) && !before.contains(n)).collect();
    if alive {
        let _ = Command::new("kill").arg("-9").arg(server.to_string()).status(); // clean up the orphan
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(d));
    }
    assert!(
        !alive,
        "embedded server pid {server} still running (and holding mpconn's stdout/stderr) after the second Ctrl-C; mpconn exit {status:?}"
    );
    assert!(dirs.is_empty(), "socket directories left: {dirs:?}");
}
