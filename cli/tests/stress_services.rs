//! `mpconn stress` against real CPython services that are not echo servers (`tests/python/
//! service.py`: one that answers `{'ok': True, 'n': n}`, one that answers wrongly every 10th
//! request, one that stalls 300 ms a second), and its JSON report, HdrHistogram log, threads,
//! seeds and Ctrl-C. Every run is bounded (the command is killed past `WAIT`).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value as J;

const BIN: &str = env!("CARGO_BIN_EXE_mpconn");
const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/service.py");
const WAIT: Duration = Duration::from_secs(30);
const REQUEST: &str = "{'op': 'get', 'n': {seq}}";
const EXPECT: &str = "{'ok': True, 'n': {seq}}";

/// Runs the command with a time limit (it is killed past it).
fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait(child, args)
}

fn wait(child: Child, args: &[&str]) -> Output {
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

/// The JSON object on stdout: the only thing there.
fn report(out: &Output) -> J {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}\n{}", text(&out.stdout), text(&out.stderr)))
}

/// A CPython service (`service.py MODE`) on a loopback port, key `k`; killed on drop.
struct Service {
    child: Child,
    address: String,
}

impl Service {
    fn start(mode: &str) -> Service {
        let mut child = Command::new("python3")
            .args([SERVICE, mode])
            .env("MPCONN_KEY", "k")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
        Service { child, address }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn u(j: &J) -> u64 {
    j.as_u64().unwrap_or_else(|| panic!("{j} is not a count"))
}

fn timeline_sum(r: &J, field: &str) -> u64 {
    r["timeline"].as_array().unwrap().iter().map(|s| u(&s[field])).sum()
}

#[test]
fn a_service_answering_every_request_passes_every_check() {
    let svc = Service::start("ok");
    let out = run(&[
        "stress",
        &svc.address,
        "--authkey",
        "k",
        "--clients",
        "10",
        "--messages",
        "30",
        "--request",
        REQUEST,
        "--expect",
        EXPECT,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    assert_eq!(u(&r["ok"]), 300, "{r}");
    assert_eq!(u(&r["sent"]), 300);
    assert_eq!(u(&r["errors"]), 0);
    assert!(r["errors_by_kind"].as_object().unwrap().is_empty());
    assert_eq!(r["mode"], "closed");
    assert_eq!(u(&r["clients"]), 10);
    assert_eq!(u(&r["latency_us"]["count"]), 300);
    let l = &r["latency_us"];
    let q = |k: &str| l[k].as_f64().unwrap();
    assert!(q("p50") > 0.0 && q("p50") <= q("p90") && q("p90") <= q("p99") && q("p99") <= q("p999"));
    assert!(q("p999") <= q("max"));
    assert!(r["rate"].as_f64().unwrap() > 0.0);
    assert_eq!(timeline_sum(&r, "ok"), 300);
    assert_eq!(timeline_sum(&r, "sent"), 300);
    assert_eq!(u(&r["connect_us"]["ok"]), 10);
    // The human report went to stderr.
    assert!(text(&out.stderr).contains("errors: none"), "{}", text(&out.stderr));
}

#[test]
fn wrong_replies_are_counted_by_kind_with_an_example_and_exit_3() {
    let svc = Service::start("wrong10");
    let out = run(&[
        "stress",
        &svc.address,
        "--authkey",
        "k",
        "--clients",
        "5",
        "--messages",
        "30",
        "--request",
        REQUEST,
        "--expect",
        EXPECT,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let r = report(&out);
    // Every 10th request of each connection: 3 of 30, 5 clients.
    let kind = format!("check failed: expected {EXPECT}");
    assert_eq!(u(&r["errors_by_kind"][&kind]), 15, "{r}");
    assert_eq!(u(&r["errors"]), 15);
    assert_eq!(u(&r["ok"]), 135);
    assert_eq!(r["passed"], false);
    let example = r["error_examples"][&kind].as_str().unwrap();
    assert!(example.starts_with("{'ok': False, 'n': 9}"), "{example}");
    assert!(text(&out.stderr).contains("errors: 15 x check failed"), "{}", text(&out.stderr));
    // Without --expect a service's replies all pass (it is not an echo server).
    let out =
        run(&["stress", &svc.address, "--authkey", "k", "--clients", "2", "--messages", "20", "--request", REQUEST]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("round trips: 40 in"), "{}", text(&out.stdout));
    // A wrong key is a refused handshake, counted per client.
    let out = run(&["stress", &svc.address, "--authkey", "wrong", "--clients", "3", "--messages", "2", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let r = report(&out);
    let kinds = r["errors_by_kind"].as_object().unwrap();
    assert_eq!(kinds.len(), 1, "{r}");
    let (kind, n) = kinds.iter().next().unwrap();
    assert!(kind.starts_with("handshake refused: authentication failed"), "{kind}");
    assert_eq!(u(n), 3);
    assert_eq!(u(&r["connect_us"]["failed"]), 3);
}

#[test]
fn a_service_that_never_answers_is_a_timeout_not_a_hang() {
    let svc = Service::start("silent");
    let started = std::time::Instant::now();
    let out = run(&[
        "stress",
        &svc.address,
        "--authkey",
        "k",
        "--clients",
        "3",
        "--messages",
        "5",
        "--request",
        REQUEST,
        "--timeout",
        "500ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let r = report(&out);
    assert_eq!(u(&r["errors_by_kind"]["timeout: no reply within 500ms"]), 3, "{r}");
    assert_eq!(u(&r["ok"]), 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn open_loop_latency_shows_a_stall_that_closed_loop_hides() {
    let svc = Service::start("stall");
    let common = ["stress", &svc.address, "--authkey", "k", "--clients", "10", "--request", REQUEST, "--json"];
    let open = run(&[&common[..], &["--duration", "3s", "--rate", "200"]].concat());
    assert!(open.status.success(), "{}", text(&open.stderr));
    let open = report(&open);
    let closed = run(&[&common[..], &["--duration", "3s"]].concat());
    assert!(closed.status.success(), "{}", text(&closed.stderr));
    let closed = report(&closed);
    let p = |r: &J, k: &str| r["latency_us"][k].as_f64().unwrap();
    eprintln!(
        "open loop: p50 {} p99 {} µs, rate {} of {}; closed loop: p50 {} p99 {} µs",
        p(&open, "p50"),
        p(&open, "p99"),
        open["rate"],
        open["target_rate"],
        p(&closed, "p50"),
        p(&closed, "p99")
    );
    assert_eq!(open["mode"], "open");
    assert_eq!(open["target_rate"].as_f64(), Some(200.0));
    // The 300 ms stall (two or three of them in 3 s) is in the open loop's p99: requests
    // scheduled during the stall wait for it, and that wait counts.
    assert!(p(&open, "p99") >= 250_000.0, "{open}");
    assert!(p(&open, "p99") > 10.0 * p(&closed, "p50"), "open {open}\nclosed {closed}");
    // The closed loop sends far fewer requests during a stall (each client waits once), so
    // its p99 stays below the open loop's.
    assert!(p(&closed, "p99") < p(&open, "p99"), "open {open}\nclosed {closed}");
    let rate = open["rate"].as_f64().unwrap();
    assert!(rate > 120.0 && rate < 260.0, "achieved {rate}/s of 200/s");
}

#[test]
fn hdr_out_writes_an_interval_log_that_reads_back() {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.hlog");
    let out = run(&["stress", "--clients", "20", "--messages", "50", "--json", "--hdr-out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    let log = std::fs::read(&path).unwrap();
    let mut total = 0;
    let mut intervals = 0;
    let mut d = Deserializer::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(i) = entry.unwrap() {
            let bytes = base64_decode(i.encoded_histogram());
            let h: hdrhistogram::Histogram<u64> = d.deserialize(&mut &bytes[..]).unwrap();
            total += h.len();
            intervals += 1;
        }
    }
    assert_eq!(total, 1000);
    assert_eq!(total, u(&r["ok"]));
    assert_eq!(intervals, r["timeline"].as_array().unwrap().len());
}

/// Standard base64 (the interval log's encoding), without a crate for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn two_threads_against_the_embedded_server_add_up() {
    let out = run(&["stress", "--clients", "50", "--messages", "40", "--threads", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    assert_eq!(u(&r["threads"]), 2);
    assert_eq!(u(&r["ok"]), 2000, "{r}");
    assert_eq!(u(&r["sent"]), 2000);
    assert_eq!(u(&r["errors"]), 0);
    assert_eq!(u(&r["latency_us"]["count"]), 2000);
    assert_eq!(timeline_sum(&r, "ok"), 2000);
    assert_eq!(u(&r["connect_us"]["ok"]), 50);
    // And without --json, the report lines as ever.
    let out =
        run(&["stress", "--clients", "50", "--messages", "40", "--threads", "2", "--rate", "4000", "--ramp", "200ms"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("round trips: 2000 in"), "{stdout}");
    assert!(stdout.contains("integrity: 0 lost, 0 duplicated, 0 reordered, 0 corrupted"), "{stdout}");
    assert!(stdout.contains("rate: target 4000/s after a 0.2 s ramp"), "{stdout}");
}

#[test]
fn the_same_seed_churns_the_same_clients() {
    let churned = |seed: &str| {
        let out = run(&["stress", "--clients", "20", "--messages", "50", "--churn", "0.05", "--seed", seed, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let r = report(&out);
        // A replacement client takes over its slot: the total of requests stays fixed.
        assert_eq!(u(&r["ok"]), 1000, "{r}");
        assert_eq!(u(&r["clients_started"]), 20 + u(&r["churned"]));
        u(&r["churned"])
    };
    let a = churned("7");
    assert!(a > 0);
    assert_eq!(churned("7"), a);
    assert_eq!(churned("7"), a);
}

#[test]
fn requests_take_negative_numbers_bytes_and_round_robin_values() {
    // The embedded server echoes: `--expect echo` compares each reply with its request.
    let out = run(&[
        "stress",
        "--clients",
        "4",
        "--messages",
        "9",
        "--request",
        "-5",
        "--request",
        "('k{client}', b'{seq}')",
        "--request",
        "-2**100",
        "--expect",
        "echo",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(u(&report(&out)["ok"]), 36);
    let out = run(&["stress", "--clients", "3", "--messages", "5", "--request-bytes", "00ff10", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(u(&report(&out)["ok"]), 15);
    // An echo that is not the expected value fails its check.
    let out = run(&["stress", "--clients", "2", "--messages", "3", "--request", "1", "--expect", "2", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(u(&report(&out)["errors_by_kind"]["check failed: expected 2"]), 6);
    // A placeholder that makes some requests invalid (`01` is no Python int): those are
    // errors, the others go, and the run ends.
    let out = run(&["stress", "--clients", "2", "--messages", "3", "--request", "0{seq}", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let r = report(&out);
    assert_eq!(u(&r["errors_by_kind"]["request: not a valid literal after substitution"]), 4, "{r}");
    assert_eq!(u(&r["ok"]), 2);
    // A malformed request is a usage error before anything is sent.
    let out = run(&["stress", "--clients", "2", "--request", "{'n': {seq}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("mpconn:"), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_ends_an_open_loop_run_on_two_threads_with_its_report() {
    let child = Command::new(BIN)
        .args(["stress", "--clients", "20", "--threads", "2", "--duration", "60s", "--rate", "500", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = wait(child, &["stress (ctrl-c)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out);
    assert!(u(&r["ok"]) > 100, "{r}");
    assert_eq!(u(&r["errors"]), 0, "{r}");
    assert!(r["duration_s"].as_f64().unwrap() < 30.0);
}
