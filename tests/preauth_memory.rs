//! Memory before authentication is bounded by the handshake's 256-byte cap, not by a
//! read block. N clients connect to a keyed `mpconn listen` child process and dribble their
//! handshake reply one byte a second; the server's resident memory per connection is read from
//! `/proc/PID/status` before and while they dribble.
//!
//! ```text
//! cargo test --release --test preauth_memory -- --nocapture                     # N = 2,000
//! MPCONN_PREAUTH_N=10000 cargo test --release --test preauth_memory -- --nocapture
//! MPCONN_PREAUTH_SERVER=/path/to/mpconn ...   # measure another build of the server
//! ```
//! The server is a child process and the clients are in the test process, so each side holds
//! N descriptors (the per-process limit here is 20,000; the test raises its soft limit to the
//! hard one, and the child inherits it).
//!
//! The bound: 1 KiB per connection (the issue's target for user-space memory per
//! unauthenticated connection, which covers the connection's entry, its handshake state and the
//! partial reply of at most 256 bytes) plus 256 bytes of slack per connection for what the
//! allocator and the containers add on top of the live bytes: the slab and the poll's tables
//! grow by doubling, malloc rounds small blocks up and keeps freed ones in per-size lists, and
//! RSS counts whole 4 KiB pages. Measured (2,000 connections): 645-649 B per connection once
//! accepted and 782-854 B at the peak, debug and release alike: the entry (400 B), the
//! handshake state (160 B) and the timer set's share. Before the challenge was written straight
//! to the socket it took a 512-byte coalescing buffer and a chunk list for a turn, freed between
//! the live entries: 1.39 KiB once accepted, 1.48-1.55 KiB at the peak, which failed a CI run
//! against the old 1.5 KiB bound (66.7 KiB before issue 11). Kernel memory (socket buffers) is
//! not in the process's RSS. Separately, what dribbling adds on top of an accepted connection
//! is bounded by one partial handshake frame: at most 512 bytes (64 KiB before issue 11: a read
//! block).
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::servers::{Child2, mpconn};

const KEY: &str = "preauth key";
/// Bytes of user-space memory allowed per unauthenticated connection (the target).
const TARGET: usize = 1024;
/// Slack per connection for allocator and container overhead (see the module docs).
const SLACK: usize = 256;
/// What dribbling part of a handshake message may add per connection.
const DRIBBLE: usize = 512;

fn status_kib(pid: u32, field: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises this process's soft descriptor limit to the hard one; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur
}

#[test]
fn unauthenticated_connections_dribbling_their_reply_cost_at_most_a_kib_each() {
    let n: usize = std::env::var("MPCONN_PREAUTH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let limit = raise_fd_limit();
    assert!(limit as usize > n + 100, "the descriptor limit {limit} is too low for {n} connections");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preauth.sock");
    // MPCONN_PREAUTH_SERVER: another `mpconn` build to measure (a release build, an older commit).
    let server_exe = std::env::var("MPCONN_PREAUTH_SERVER").unwrap_or_else(|_| mpconn().display().to_string());
    let mut cmd = Command::new(&server_exe);
    cmd.args(["listen", path.to_str().unwrap(), "--quiet", "--authkey", KEY]);
    let server = Child2::spawn(cmd, "mpconn listen");
    server.expect_line("listening on");
    let pid = server.pid();
    // A few connections first, so the allocator's and the reactor's start-up costs are paid.
    let warm: Vec<UnixStream> = (0..50).map(|_| UnixStream::connect(&path).unwrap()).collect();
    thread::sleep(Duration::from_millis(500));
    let rss0 = status_kib(pid, "VmRSS:");
    let anon0 = status_kib(pid, "RssAnon:");

    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match UnixStream::connect(&path) {
            Ok(s) => conns.push(s),
            Err(e) => panic!("connection {i} of {n} failed: {e}"),
        }
    }
    let connected = start.elapsed();
    thread::sleep(Duration::from_millis(300));
    let rss_open = status_kib(pid, "VmRSS:");

    // The reply to a `{sha256}` challenge is 8 + 32 = 40 bytes: its frame is 00 00 00 28 then
    // the body. One byte a second of a reply that never completes (the body is garbage, and
    // the default handshake timeout is 10 s: 7 rounds stay within it).
    let reply: Vec<u8> = [0u8, 0, 0, 40].into_iter().chain(*b"{sha256}").collect();
    let mut peak_rss = rss_open;
    let mut peak_anon = status_kib(pid, "RssAnon:");
    let mut dropped = 0;
    for (round, byte) in reply.iter().take(7).enumerate() {
        let t = Instant::now();
        for c in conns.iter_mut() {
            if c.write_all(&[*byte]).is_err() {
                dropped += 1;
            }
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        let rss = status_kib(pid, "VmRSS:");
        let anon = status_kib(pid, "RssAnon:");
        println!(
            "round {}: {} bytes of the reply sent by each; server VmRSS {rss} KiB, RssAnon {anon} KiB",
            round + 1,
            round + 1
        );
        peak_rss = peak_rss.max(rss);
        peak_anon = peak_anon.max(anon);
    }
    let per_conn = (peak_rss.saturating_sub(rss0)) * 1024 / n;
    let per_conn_anon = (peak_anon.saturating_sub(anon0)) * 1024 / n;
    let open_only = (rss_open.saturating_sub(rss0)) * 1024 / n;
    println!(
        "{n} unauthenticated connections (connected in {connected:?}): server VmRSS {rss0} -> {rss_open} KiB open -> peak {peak_rss} KiB dribbling; \
         {open_only} B per connection once accepted, {per_conn} B per connection at the peak (RssAnon: {per_conn_anon} B); bound {} B",
        TARGET + SLACK
    );
    // What dribbling adds on top of an accepted connection: at most one partial handshake frame
    // (header + 256-byte cap = 268 bytes) and malloc's rounding of it, well under 512 bytes.
    let dribble = (peak_rss.saturating_sub(rss_open)) * 1024 / n;
    println!(
        "dribbling adds {dribble} B per connection (bound {DRIBBLE} B); the issue's target of {TARGET} B per connection is {}",
        if per_conn <= TARGET { "met" } else { "NOT met (the test allows the slack)" }
    );
    assert_eq!(dropped, 0, "writes failed: the server closed connections before their handshake timeout");
    assert!(dribble <= DRIBBLE, "a partial handshake message costs {dribble} bytes per connection (a read block?)");
    drop(warm);
    assert!(
        per_conn <= TARGET + SLACK,
        "{per_conn} bytes of server memory per unauthenticated connection (bound {} = {TARGET} + {SLACK} slack)",
        TARGET + SLACK
    );
}
