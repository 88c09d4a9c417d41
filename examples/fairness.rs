//! The fairness figure of issue 11: a well-behaved client's round trip while four
//! authenticated clients stream bulk through the same echo server.
//!
//! ```text
//! cargo build --release --examples
//! cargo run --release --example fairness -- [--server reactor|python|ADDRESS] [--streamers 4]
//!     [--seconds 10] [--size 65536] [--probe 64] [--python python3] [--read-pause-ms 0]
//! ```
//! `--server reactor` (the default) starts `examples/echo_server` (the release build next to this
//! example) on TCP 127.0.0.1 as a child process; `--server python` starts a threaded CPython
//! echo listener (one thread per connection) for reference (`--echo-server PATH` runs another
//! build of the echo example, such as one of an older commit); anything else is the address of an
//! echo server already running with the same key (`--authkey`, default `fairness`).
//!
//! Each streamer writes `--size`-byte messages as fast as TCP takes them on one thread and reads
//! its echoes on another (with `--read-pause-ms N`, the reader sleeps N ms after each MiB it
//! reads: streamers that write faster than they read, which a server must throttle, not drop).
//! After a one-second warm-up, the probe client sends `--probe`-byte
//! messages and waits for each echo, for `--seconds` seconds. Printed: the probe's round trip
//! p50/p99/p99.9/max (hdrhistogram), the bytes streamed and echoed, and how many streamers the
//! server closed or reset before the end. One JSON line follows for scripts.

#[cfg(unix)]
fn main() {
    if let Err(e) = unix::main() {
        eprintln!("fairness: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("fairness: Unix only (it drives raw duplicated TCP descriptors)");
}

#[cfg(unix)]
mod unix {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::os::fd::FromRawFd;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use hdrhistogram::Histogram;
    use mpconn::Client;

    const PY_ECHO: &str = r#"
import sys, threading
from multiprocessing.connection import Listener
l = Listener(('127.0.0.1', 0), authkey=sys.argv[1].encode())
print('listening on %s:%d' % l.address, flush=True)
def serve(c):
    try:
        while True:
            c.send_bytes(c.recv_bytes())
    except (EOFError, OSError):
        pass
    finally:
        c.close()
while True:
    try:
        c = l.accept()
    except Exception as e:
        print('accept failed:', e, flush=True)
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

    struct Args {
        server: String,
        streamers: usize,
        seconds: f64,
        size: usize,
        probe: usize,
        key: String,
        python: String,
        read_pause: Duration,
        echo_server: Option<PathBuf>,
    }

    fn parse() -> Result<Args, String> {
        let mut a = Args {
            server: "reactor".into(),
            streamers: 4,
            seconds: 10.0,
            size: 65536,
            probe: 64,
            key: "fairness".into(),
            python: "python3".into(),
            read_pause: Duration::ZERO,
            echo_server: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--server" => a.server = value()?,
                "--streamers" => a.streamers = value()?.parse().map_err(|e| format!("--streamers: {e}"))?,
                "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
                "--size" => a.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
                "--probe" => a.probe = value()?.parse().map_err(|e| format!("--probe: {e}"))?,
                "--authkey" => a.key = value()?,
                "--python" => a.python = value()?,
                "--echo-server" => a.echo_server = Some(PathBuf::from(value()?)),
                "--read-pause-ms" => {
                    a.read_pause = Duration::from_millis(value()?.parse().map_err(|e| format!("--read-pause-ms: {e}"))?)
                }
                "--bench" => {} // cargo bench passes this
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if a.size < 1 || a.probe < 1 || !(a.seconds > 0.0 && a.seconds <= 600.0) {
            return Err("--size and --probe must be positive, --seconds in (0, 600]".into());
        }
        Ok(a)
    }

    /// A server child process, killed on drop.
    struct Server {
        child: Child,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start_server(args: &Args) -> Result<(Option<Server>, String, String), String> {
        let mut cmd = match args.server.as_str() {
            "reactor" => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let dir = exe.parent().ok_or("no directory")?;
                // examples/fairness and examples/echo_server are built side by side.
                let echo: PathBuf = args.echo_server.clone().unwrap_or_else(|| dir.join("echo_server"));
                if !echo.exists() {
                    return Err(format!("{} is missing: cargo build --release --examples", echo.display()));
                }
                let mut c = Command::new(echo);
                c.args(["127.0.0.1:0", "--authkey", &args.key]);
                c
            }
            "python" => {
                let mut c = Command::new(&args.python);
                c.args(["-c", PY_ECHO, &args.key]);
                c
            }
            address => return Ok((None, address.to_string(), format!("external echo server at {address}"))),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let server = Server { child };
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "the server did not start in 30 s")?;
        let address = line.strip_prefix("listening on ").ok_or(format!("unexpected first line {line:?}"))?.trim();
        let label = if args.server == "reactor" {
            "mpconn reactor (examples/echo_server)".to_string()
        } else {
            "CPython threaded echo listener".to_string()
        };
        Ok((Some(server), address.to_string(), label))
    }

    /// An authenticated connection as two plain TCP streams (reader, writer) on duplicates of
    /// its descriptor, so one thread can write while another reads.
    fn connect_split(address: &str, key: &str) -> Result<(TcpStream, TcpStream), String> {
        let conn = Client::new(address).authkey(key).connect().map_err(|e| format!("connect: {e}"))?;
        let fd = conn.fileno().map_err(|e| e.to_string())?;
        // SAFETY: `fd` is an open socket owned by `conn`; dup gives descriptors we own.
        let (r, w) = unsafe {
            let r = libc::dup(fd);
            let w = libc::dup(fd);
            if r < 0 || w < 0 {
                return Err("dup failed".into());
            }
            (TcpStream::from_raw_fd(r), TcpStream::from_raw_fd(w))
        };
        drop(conn);
        Ok((r, w))
    }

    #[derive(Default)]
    struct StreamStats {
        written: AtomicU64,
        echoed: AtomicU64,
        /// Set when the server closed or reset the connection before the end.
        dropped: AtomicBool,
        corrupted: AtomicBool,
    }

    fn frame(size: usize, seed: u8) -> Vec<u8> {
        let mut f = Vec::with_capacity(size + 4);
        f.extend_from_slice(&(size as u32).to_be_bytes());
        f.extend((0..size).map(|i| (i as u8).wrapping_add(seed)));
        f
    }

    fn streamer(
        address: &str,
        key: &str,
        size: usize,
        seed: u8,
        read_pause: Duration,
        stop: Arc<AtomicBool>,
        stats: Arc<StreamStats>,
    ) -> Result<(Vec<thread::JoinHandle<()>>, TcpStream), String> {
        let (mut reader, mut writer) = connect_split(address, key)?;
        let control = reader.try_clone().map_err(|e| e.to_string())?;
        let stop_w = stop.clone();
        let stats_w = stats.clone();
        let w = thread::spawn(move || {
            let f = frame(size, seed);
            while !stop_w.load(Ordering::Relaxed) {
                match writer.write_all(&f) {
                    Ok(()) => {
                        stats_w.written.fetch_add(size as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        if !stop_w.load(Ordering::Relaxed) {
                            stats_w.dropped.store(true, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
        });
        let r = thread::spawn(move || {
            let expect = frame(size, seed);
            let mut buf = vec![0u8; size + 4];
            let mut since_pause = 0usize;
            loop {
                match reader.read_exact(&mut buf) {
                    Ok(()) => {
                        if buf != expect {
                            stats.corrupted.store(true, Ordering::Relaxed);
                        }
                        stats.echoed.fetch_add(size as u64, Ordering::Relaxed);
                        since_pause += size;
                        if !read_pause.is_zero() && since_pause >= 1 << 20 {
                            since_pause = 0;
                            thread::sleep(read_pause);
                        }
                    }
                    Err(_) => {
                        // An end or a reset before the stop is the server's doing.
                        if !stop.load(Ordering::Relaxed) {
                            stats.dropped.store(true, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            }
        });
        Ok((vec![w, r], control))
    }

    fn us(h: &Histogram<u64>, q: f64) -> f64 {
        h.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn main() -> Result<(), String> {
        let args = parse()?;
        let (_server, address, label) = start_server(&args)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Vec<Arc<StreamStats>> = (0..args.streamers).map(|_| Arc::default()).collect();
        let mut threads = Vec::new();
        let mut controls = Vec::new();
        for (i, s) in stats.iter().enumerate() {
            let (t, control) =
                streamer(&address, &args.key, args.size, i as u8, args.read_pause, stop.clone(), s.clone())?;
            threads.extend(t);
            controls.push(control);
        }
        thread::sleep(Duration::from_secs(1));

        let mut probe =
            Client::new(address.as_str()).authkey(args.key.as_str()).connect().map_err(|e| e.to_string())?;
        probe.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let msg = vec![7u8; args.probe];
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
        let before: u64 = stats.iter().map(|s| s.echoed.load(Ordering::Relaxed)).sum();
        let start = Instant::now();
        let limit = Duration::from_secs_f64(args.seconds);
        let mut probe_error = None;
        while start.elapsed() < limit {
            let t = Instant::now();
            if let Err(e) = probe.send_bytes(&msg) {
                probe_error = Some(e.to_string());
                break;
            }
            match probe.recv_bytes() {
                Ok(m) if m == msg => {}
                Ok(m) => {
                    probe_error = Some(format!("wrong echo of {} bytes", m.len()));
                    break;
                }
                Err(e) => {
                    probe_error = Some(e.to_string());
                    break;
                }
            }
            let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let echoed_during: u64 = stats.iter().map(|s| s.echoed.load(Ordering::Relaxed)).sum::<u64>() - before;
        stop.store(true, Ordering::Relaxed);
        // Let the writers notice, then end the readers.
        thread::sleep(Duration::from_millis(200));
        let dropped = stats.iter().filter(|s| s.dropped.load(Ordering::Relaxed)).count();
        let corrupted = stats.iter().filter(|s| s.corrupted.load(Ordering::Relaxed)).count();
        let written: u64 = stats.iter().map(|s| s.written.load(Ordering::Relaxed)).sum();
        let echoed: u64 = stats.iter().map(|s| s.echoed.load(Ordering::Relaxed)).sum();
        drop(probe);
        // Ending our side unblocks writers stuck on a full socket; then the server goes.
        for c in &controls {
            let _ = c.shutdown(Shutdown::Both);
        }
        drop(_server);
        for t in threads {
            let _ = t.join();
        }

        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("server: {label} at {address}");
        println!(
            "load: {} streamers of {}-byte messages (reading pause {:?} per MiB); probe: {}-byte round trips for {elapsed:.1} s",
            args.streamers, args.size, args.read_pause, args.probe
        );
        println!(
            "probe round trip: n={} p50={:.3} ms p99={:.3} ms p99.9={:.3} ms max={:.3} ms",
            hist.len(),
            us(&hist, 0.5) / 1000.0,
            us(&hist, 0.99) / 1000.0,
            us(&hist, 0.999) / 1000.0,
            hist.max() as f64 / 1e6
        );
        println!(
            "streamed: {:.0} MiB written, {:.0} MiB echoed in total ({:.0} MiB/s echoed while probing)",
            mib(written),
            mib(echoed),
            mib(echoed_during) / elapsed
        );
        println!("streamers closed or reset by the server: {dropped} of {}", args.streamers);
        if corrupted > 0 {
            println!("streamers that saw a corrupted echo: {corrupted}");
        }
        if let Some(e) = &probe_error {
            println!("probe failed: {e}");
        }
        println!(
            "{{\"server\":{:?},\"streamers\":{},\"read_pause_ms\":{},\"size\":{},\"probe_n\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"written_mib\":{:.0},\"echoed_mib\":{:.0},\"dropped\":{dropped},\"probe_error\":{}}}",
            args.server,
            args.streamers,
            args.read_pause.as_millis(),
            args.size,
            hist.len(),
            us(&hist, 0.5) / 1000.0,
            us(&hist, 0.99) / 1000.0,
            hist.max() as f64 / 1e6,
            mib(written),
            mib(echoed),
            probe_error.is_some()
        );
        Ok(())
    }
}
