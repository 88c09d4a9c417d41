//! `send --pickle` and `stress --request` literals that would need unbounded time or memory to
//! build: each must be a usage error (exit 2) with a clear message, quickly, with bounded memory.
//! Before the limits, `((2**100000)**100000)**100000` ran 6 s and died by SIGABRT at 1.26 GB.
#![cfg(target_os = "linux")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mpconn");
/// Generous: a debug build on a loaded 2-core machine.
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Peak RSS allowed for refusing a literal (the command itself takes a few MiB).
const RSS_LIMIT_KIB: i64 = 150 * 1024;

struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: i64,
}

/// Runs the command and reaps it with `wait4`, which gives this child's own peak RSS; killed
/// past [`TIME_LIMIT`].
// The child is reaped by `wait4` (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str]) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, filled in by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child's pid, valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            // SAFETY: as above; this reaps the killed child.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!("mpconn {:.80?} ran past {TIME_LIMIT:?}", args);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)))
    };
    Outcome { code, signal, stderr: reader.join().unwrap(), elapsed, max_rss_kib: usage.ru_maxrss }
}

fn nasty_literals() -> Vec<(&'static str, String)> {
    vec![
        ("power of a power", "((2**100000)**100000)**100000".to_string()),
        ("power too large", "(2**100000)**100000".to_string()),
        ("power tower", "2**2**2**2**2**2".to_string()),
        ("power in a container", "[0, {'k': (7**100000)**100000}]".to_string()),
        ("str repetition", "'a'*10**9".to_string()),
        ("bytes repetition", "b'x'*2**62".to_string()),
        ("list repetition", "[0]*10**9".to_string()),
        ("tuple repetition", "(1,)*10**9".to_string()),
        ("shift", "1<<10**9".to_string()),
        ("product", "(2**100000)*(2**100000)".to_string()),
        ("many big ints", format!("[{}]", vec!["(2**1000)**1047"; 600].join(","))),
        ("many bytearrays", format!("[{}]", vec!["bytearray(1048576)"; 80].join(","))),
        ("deep brackets", format!("{}{}", "[".repeat(60_000), "]".repeat(60_000))),
        ("deep minus", format!("({}1)", "-".repeat(120_000))),
        ("deep power chain", format!("{}1", "1**".repeat(40_000))),
        ("deep calls", format!("{}{}", "tuple([".repeat(12_000), "])".repeat(12_000))),
    ]
}

#[test]
fn nasty_send_literals_are_usage_errors_quickly_with_bounded_memory() {
    for (what, literal) in nasty_literals() {
        let o = run(&["send", "127.0.0.1:1", "--pickle", &literal]);
        println!(
            "{what}: exit {:?} in {:.0} ms, peak RSS {} KiB: {:.160}",
            o.code,
            o.elapsed.as_secs_f64() * 1e3,
            o.max_rss_kib,
            o.stderr.trim()
        );
        assert_eq!(o.signal, None, "{what}: killed by a signal");
        assert_eq!(o.code, Some(2), "{what}: {}", o.stderr);
        assert!(
            o.stderr.contains("literal too large") || o.stderr.contains("not a Python literal"),
            "{what}: {}",
            o.stderr
        );
        assert!(o.stderr.len() < 4096, "{what}: the message repeats the whole literal ({} bytes)", o.stderr.len());
        assert!(o.max_rss_kib < RSS_LIMIT_KIB, "{what}: peak RSS {} KiB", o.max_rss_kib);
    }
}

#[test]
fn a_stress_request_that_is_too_large_is_a_usage_error() {
    for literal in ["((2**100000)**100000)**100000", "'a'*10**9"] {
        let o = run(&["stress", "127.0.0.1:1", "--clients", "1", "--messages", "1", "--request", literal]);
        println!("stress --request {literal}: exit {:?}, peak RSS {} KiB: {}", o.code, o.max_rss_kib, o.stderr.trim());
        assert_eq!(o.code, Some(2), "{}", o.stderr);
        assert!(o.max_rss_kib < RSS_LIMIT_KIB, "peak RSS {} KiB", o.max_rss_kib);
    }
}

#[test]
fn literals_within_the_limits_still_go_out() {
    // A listener that is not there: the literal passed the checks when the error is a runtime
    // one (exit 1: not reached), not a usage error.
    for literal in ["(2**1000)**1047", "[2**100000, -3**60000, bytearray(1048576)]", "'a' '*' "] {
        let o = run(&["send", "127.0.0.1:1", "--pickle", literal, "--timeout", "2s"]);
        if literal.ends_with("' ") {
            // Implicit concatenation is not supported: a syntax error, exit 2.
            assert_eq!(o.code, Some(2), "{literal}: {}", o.stderr);
        } else {
            assert_eq!(o.code, Some(1), "{literal}: {}", o.stderr);
        }
    }
}
