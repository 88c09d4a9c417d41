//! Running out of file descriptors: the reactor backs off instead of spinning and keeps serving
//! the connections it has. This lowers the process's soft RLIMIT_NOFILE, so it is a test binary of
//! its own (one test), not sharing a process with other tests.
// Unix sockets, descriptors and Python peers: the Windows suite is tests/windows.rs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mpconn::Client;
use mpconn::reactor::options::ListenOptions;
use mpconn::reactor::{ConnId, Context, Handler, Reactor};

/// Counts the reactor's "pausing accepts" warnings, to prove it really ran out.
struct PauseCounter;
static PAUSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
impl log::Log for PauseCounter {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.args().to_string().contains("pausing accepts") {
            PAUSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let _ = ctx.send(conn, message);
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// User plus system CPU time of this process (getrusage: needs no descriptor).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[test]
fn out_of_descriptors_the_reactor_backs_off_and_keeps_serving() {
    log::set_logger(&PauseCounter).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fd.sock");
    let (tx, rx) = mpsc::channel();
    let reactor_path = path.clone();
    let t = thread::spawn(move || {
        let mut reactor = Reactor::new(Echo).unwrap();
        reactor.listen(reactor_path.as_path(), ListenOptions::new()).unwrap();
        tx.send(reactor.handle()).unwrap();
        reactor.run().unwrap();
    });
    let handle = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut good = Client::new(path.as_path()).connect().unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    good.send_bytes(b"before").unwrap();
    assert_eq!(good.recv_bytes().unwrap(), b"before");

    // Leave room for about 20 more descriptors in this process.
    let limit = (open_fds() + 20) as libc::rlim_t;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with valid pointers to initialised rlimit structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let low = libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }

    // A Python process (its own limit raised back) opens 60 connections: more than we can take.
    let script = "import resource,sys,time\nfrom multiprocessing.connection import Client\nsoft,hard=resource.getrlimit(resource.RLIMIT_NOFILE)\nresource.setrlimit(resource.RLIMIT_NOFILE,(hard,hard))\ncs=[Client(sys.argv[1]) for _ in range(60)]\nprint('OPEN', flush=True)\ntime.sleep(30)";
    let mut py =
        Command::new("python3").args(["-c", script, path.to_str().unwrap()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "OPEN");

    // For a second the reactor is out of descriptors: it must not spin, and `good` is served.
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut trips = 0;
    while start.elapsed() < Duration::from_secs(1) {
        good.send_bytes(b"during").unwrap();
        assert_eq!(good.recv_bytes().unwrap(), b"during");
        trips += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let cpu = cpu_seconds() - cpu0;
    assert!(trips > 10, "only {trips} round trips while out of descriptors");
    assert!(cpu < 0.5, "{cpu:.2} s of CPU in 1 s: the reactor is spinning");
    let pauses = PAUSES.load(std::sync::atomic::Ordering::Relaxed);
    assert!(pauses >= 2, "the reactor never ran out of descriptors ({pauses} pauses)");

    // Descriptors come back: the reactor accepts again.
    let _ = py.kill();
    let _ = py.wait();
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0);
    }
    let mut late = Client::new(path.as_path()).connect().unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    late.send_bytes(b"after").unwrap();
    assert_eq!(late.recv_bytes().unwrap(), b"after");
    println!("fd exhaustion: {pauses} accept pauses, {trips} round trips served, {cpu:.3} s CPU in 1 s");
    handle.stop().unwrap();
    t.join().unwrap();
}
