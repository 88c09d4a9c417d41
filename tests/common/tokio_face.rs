//! What the tokio face's test files share (`tokio_cancellation.rs`, `tokio_limits.rs`,
//! `tokio_interop.rs`, `tokio_connect.rs`): a current-thread runtime, Python child processes
//! killed on drop, deterministic message bodies and a slow random Python sender, RSS, and a lock
//! so the tests that measure this process's memory run alone. Each file uses part of it.
#![allow(dead_code, unused_imports)]

pub use mpconn::tokio::{Client, Listener};
pub use mpconn::{Error, Family};
pub use std::io::{BufRead, BufReader};
pub use std::process::{Child, Command, Stdio};
pub use std::sync::mpsc;
pub use std::thread;
pub use std::time::{Duration, Instant};

pub const STEP: Duration = Duration::from_secs(60);

/// The tests that measure this process's RSS run alone (`exclusive`); the others share the
/// process with each other (`shared`) but not with those.
static SERIAL: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

pub struct Py {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Py {
    pub fn script(code: &str, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(code)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Py { child, lines }
    }
    pub fn line(&self) -> String {
        self.lines.recv_timeout(STEP).expect("a line from python")
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deterministic body for message i of size n.
pub fn body(i: u64, n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n + 16);
    b.extend_from_slice(&i.to_be_bytes());
    b.extend_from_slice(&(n as u64).to_be_bytes());
    while b.len() < n {
        for k in 0..251u64 {
            b.push(((k * 31 + i) % 251) as u8);
        }
    }
    b.truncate(n);
    b
}

/// Python sender: sizes log-uniform 1 B .. 16 MiB, written as raw frames in random slices
/// with random pauses; bodies the same xorshift as `body`.
pub const RANDOM_SLOW_SENDER: &str = r#"
import socket, struct, sys, time, random
random.seed(int(sys.argv[2]))
count = int(sys.argv[3])
def body(i, n):
    base = bytes(((k * 31 + i) % 251) for k in range(251))
    b = (struct.pack("!QQ", i, n) + base * (n // 251 + 1))[:n]
    return b
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
sizes = [max(1, int(2 ** random.uniform(0, 24))) for _ in range(count)]
for k, n in enumerate([16 << 20, (8 << 20) + 1, 65536, 65537, 1, 65535 - 4]):
    sizes[(k * 7 + 3) % count] = n
print("SIZES", " ".join(map(str, sizes)), flush=True)
for i, n in enumerate(sizes):
    frame = struct.pack("!i", n) + body(i, n)
    at = 0
    while at < len(frame):
        k = random.randint(1, 65536)
        s.sendall(frame[at:at + k])
        at += k
        if random.random() < 0.5:
            time.sleep(random.uniform(0, 0.002))
s.close()
"#;

pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn spawn_py(exe: &str, args: &[&str]) -> Py {
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    Py { child, lines }
}
