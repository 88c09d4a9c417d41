//! What the attack suites (flow_control, auth_outcomes, preauth_memory, handshake_security) share: server
//! child processes killed on drop, authenticated connections split into plain streams, and
//! bounded waits. Unix only.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpconn::{Address, Client};

/// The longest any test waits for one thing.
pub const WAIT: Duration = Duration::from_secs(30);

use super::cli_binary;
use super::python;
#[allow(unused_imports)]
pub use python::pyenv_python;

/// The `mpconn` command (built on first use).
pub fn mpconn() -> &'static Path {
    cli_binary::mpconn()
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
pub struct Child2 {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub label: String,
}

impl Child2 {
    pub fn spawn(mut cmd: Command, label: &str) -> Child2 {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {label}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    // Nobody listens any more: keep draining so the child never blocks.
                    continue;
                }
            }
        });
        Child2 { child, lines, label: label.to_string() }
    }

    /// The next line, which must start with `prefix`; returns the rest, trimmed.
    pub fn expect_line(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{}: no line starting with {prefix:?} within {WAIT:?}", self.label));
        assert!(line.starts_with(prefix), "{}: expected {prefix:?}, got {line:?}", self.label);
        line[prefix.len()..].trim().to_string()
    }

    /// Lines until one starts with `prefix` (bounded by `WAIT`); returns it whole.
    pub fn find_line(&self, prefix: &str) -> String {
        let end = std::time::Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!("{}: no line starting with {prefix:?} within {WAIT:?}", self.label),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The target directory of this build (where `cargo build --example` puts examples).
pub fn target_dir() -> PathBuf {
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The echo_server example, built for this profile if it is not there yet.
pub fn echo_server_example() -> PathBuf {
    example("echo_server")
}

/// The example `name`, built (with `cargo build --example`) for this profile.
pub fn example(name: &str) -> PathBuf {
    example_with_features(name, &[])
}

/// An example that needs cargo features (`async_echo`: `tokio`), built as [`example`].
pub fn example_with_features(name: &str, features: &[&str]) -> PathBuf {
    let dir = target_dir();
    let exe = dir.join("examples").join(name);
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--quiet", "--example", name]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if profile == "release" {
        cmd.arg("--release");
    }
    // The target directory of the outer build (a parent of the profile directory).
    cmd.env("CARGO_TARGET_DIR", dir.parent().unwrap());
    let status = cmd.status().unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
    assert!(status.success(), "cargo build --example {name} failed");
    assert!(exe.exists(), "{} missing after the build", exe.display());
    exe
}

/// An authenticated blocking connection (or a plain one with no key), turned into two plain
/// streams on duplicates of its socket so one thread writes while another reads.
pub fn split_tcp(address: &str, key: Option<&str>) -> (TcpStream, TcpStream) {
    let (a, b) = split_fd(address, key);
    (TcpStream::from(a), TcpStream::from(b))
}

pub fn split_unix(address: &str, key: Option<&str>) -> (UnixStream, UnixStream) {
    let (a, b) = split_fd(address, key);
    (UnixStream::from(a), UnixStream::from(b))
}

fn split_fd(address: &str, key: Option<&str>) -> (OwnedFd, OwnedFd) {
    let mut c = Client::new(address);
    if let Some(k) = key {
        c = c.authkey(k);
    }
    let conn = c.connect().unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    let fd = conn.fileno().unwrap();
    // SAFETY: `fd` is open and owned by `conn`, which outlives the borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let a = borrowed.try_clone_to_owned().unwrap();
    let b = borrowed.try_clone_to_owned().unwrap();
    drop(conn);
    (a, b)
}

/// The bytes of message `i` of a client `seed`: its index, then a pattern.
pub fn message(seed: u8, i: u32, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&i.to_be_bytes());
    m.extend((4..size).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add(i as u8)));
    m
}

/// `message` framed (4-byte big-endian length first).
pub fn framed(seed: u8, i: u32, size: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(size + 4);
    f.extend_from_slice(&(size as u32).to_be_bytes());
    f.extend_from_slice(&message(seed, i, size));
    f
}

pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py")
}

pub fn address_text(a: &Address) -> String {
    a.to_string()
}
