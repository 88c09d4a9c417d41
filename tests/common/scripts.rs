//! The Python scripts of the differential suites (`pickle_differential`, `pickle_py2_relay`):
//! input on stdin, one JSON object per stdout line, every run bounded by [`PY_WAIT`].

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The longest a script may run before it is killed and the test fails.
pub const PY_WAIT: Duration = Duration::from_secs(300);

/// Waits for a child at most [`PY_WAIT`], killing it (only it: by its pid) beyond.
pub fn finish(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PY_WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{what} did not finish within {PY_WAIT:?}");
        }
    }
}

/// Runs `script` under `py` with `args` (hash seed 0), `input` on stdin; returns its stdout as
/// JSON lines.
pub fn run_json_lines(py: &Path, script: &str, args: &[&str], input: String) -> Vec<serde_json::Value> {
    let mut child = Command::new(py)
        .arg(script)
        .args(args)
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = finish(child, &format!("{} {args:?}", py.display()));
    writer.join().unwrap();
    assert!(out.status.success(), "{} {args:?} failed: {}", py.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line from Python ({e}): {l}")))
        .collect()
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of lower-case or upper-case hex text.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
