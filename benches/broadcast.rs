//! A broadcast on the reactor: one message to every connection, copied per recipient
//! (`Context::send`) against one refcounted buffer that every queue references
//! (`Context::send_shared`). Measures, per round, the time to queue the message on every
//! connection, the time of the turn that writes them all, and the bytes allocated while queueing
//! (a counting global allocator).
//!
//! ```text
//! cargo bench --bench broadcast -- [CONNECTIONS] [MESSAGE_BYTES] [ROUNDS]    # 10000 1024 30
//! ```
//!
//! Descriptors: both ends of 10,000 connections in one process would need 20,000, the whole hard
//! limit here, so the client ends live in a child process (this program run again with
//! `MPCONN_BROADCAST_CHILD` set), which connects them over a Unix socket and reads everything
//! through mio until its parent closes them. Listener without a key: the handshake is not what
//! is measured.

#[cfg(unix)]
mod unix {

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use mpconn::CloseReason;
    use mpconn::reactor::options::ListenOptions;
    use mpconn::reactor::{ConnId, Context, Handler, Reactor};
    use mpconn::{Address, Family, arbitrary_address};

    /// Counts bytes and calls of every allocation (reallocations count their new size).
    struct Counting;

    static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
    static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    const CHILD_ENV: &str = "MPCONN_BROADCAST_CHILD";

    #[derive(Default)]
    struct Members {
        open: Vec<ConnId>,
        closed: usize,
    }

    impl Handler for Members {
        fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &Address) {
            self.open.push(conn);
        }
        fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
        fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, _: CloseReason) {
            self.closed += 1;
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Copy,
        Shared,
    }

    struct Round {
        queue: Duration,
        write: Duration,
        bytes: usize,
        allocations: usize,
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn main() {
        if let Ok(address) = std::env::var(CHILD_ENV) {
            child(&address);
            return;
        }
        // `cargo bench` passes `--bench`; the rest are ours.
        let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        let connections = args.first().copied().unwrap_or(10_000);
        let size = args.get(1).copied().unwrap_or(1024);
        let rounds = args.get(2).copied().unwrap_or(30);

        let address = arbitrary_address(Family::Unix).expect("a socket path");
        let mut reactor = Reactor::new(Members::default()).expect("reactor");
        reactor.listen(address.clone(), ListenOptions::new().backlog(1024)).expect("listen");

        let mut child = Command::new(std::env::current_exe().expect("this program"))
            .env(CHILD_ENV, address.to_string())
            .args([connections.to_string(), (connections * rounds * 2 * (size + 4)).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let start = Instant::now();
        while reactor.handler().open.len() < connections {
            assert!(start.elapsed() < Duration::from_secs(120), "connections did not open in time");
            reactor.run_once(Some(Duration::from_millis(10))).expect("turn");
        }
        println!("{connections} connections open in {:.2?}", start.elapsed());

        let message = vec![0x5a_u8; size];
        let mut results: Vec<(Mode, Round)> = Vec::new();
        for round in 0..rounds * 2 {
            // Alternate, so both see the same machine.
            let mode = if round % 2 == 0 { Mode::Copy } else { Mode::Shared };
            let (bytes0, allocs0) = (ALLOCATED.load(Ordering::Relaxed), ALLOCATIONS.load(Ordering::Relaxed));
            let t0 = Instant::now();
            reactor.with_handler(|members, ctx| match mode {
                Mode::Copy => {
                    for &m in &members.open {
                        ctx.send(m, &message).expect("queued");
                    }
                }
                Mode::Shared => {
                    let shared = Bytes::copy_from_slice(&message);
                    for &m in &members.open {
                        ctx.send_shared(m, &shared).expect("queued");
                    }
                }
            });
            let queue = t0.elapsed();
            let bytes = ALLOCATED.load(Ordering::Relaxed) - bytes0;
            let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocs0;
            // The turn flushes every dirty connection.
            let t1 = Instant::now();
            reactor.run_once(Some(Duration::ZERO)).expect("turn");
            let write = t1.elapsed();
            let left: usize = reactor
                .with_handler(|members, ctx| members.open.iter().map(|&m| ctx.queued_bytes(m).unwrap_or(0)).sum());
            assert_eq!(left, 0, "every queue was written in one turn");
            results.push((mode, Round { queue, write, bytes, allocations }));
            // Let the child read before the next round.
            std::thread::sleep(Duration::from_millis(20));
        }

        println!("{connections} connections, a {size}-byte message, {rounds} rounds each (median per round):");
        for mode in [Mode::Copy, Mode::Shared] {
            let of = |f: &dyn Fn(&Round) -> f64| {
                median(results.iter().filter(|(m, _)| *m == mode).map(|(_, r)| f(r)).collect())
            };
            println!(
                "  {:<24} queue {:>8.3} ms  write turn {:>8.3} ms  allocated {:>11.0} bytes in {:>6.0} allocations",
                if mode == Mode::Copy { "send (a copy each)" } else { "send_shared (one Bytes)" },
                of(&|r| r.queue.as_secs_f64() * 1e3),
                of(&|r| r.write.as_secs_f64() * 1e3),
                of(&|r| r.bytes as f64),
                of(&|r| r.allocations as f64),
            );
        }

        // The child stops once it has read everything (or after a minute).
        let mut received = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut received);
        }
        let _ = child.wait();
        let expected = connections * rounds * 2 * (size + 4);
        println!("client process read {} bytes (expected {expected})", received.trim());
    }

    /// The client ends: connect `n` sockets to `address`, read until `expected` bytes arrived (or a
    /// minute passed), then print the bytes read.
    fn child(address: &str) {
        let arg = |i: usize| -> usize { std::env::args().nth(i).and_then(|a| a.parse().ok()).expect("a count") };
        let (n, expected) = (arg(1), arg(2));
        let mut poll = mio::Poll::new().expect("poll");
        let mut sockets = Vec::with_capacity(n);
        for i in 0..n {
            let s = std::os::unix::net::UnixStream::connect(address).expect("connect");
            s.set_nonblocking(true).expect("non-blocking");
            let mut s = mio::net::UnixStream::from_std(s);
            poll.registry().register(&mut s, mio::Token(i), mio::Interest::READABLE).expect("register");
            sockets.push(s);
        }
        let mut events = mio::Events::with_capacity(4096);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        let mut deadline = Instant::now() + Duration::from_secs(600);
        while total < expected && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
            for e in &events {
                let s = &mut sockets[e.token().0];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            total += k;
                            // A minute after the first byte at most.
                            deadline = deadline.min(Instant::now() + Duration::from_secs(60));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
        }
        println!("{total}");
    }
}

#[cfg(unix)]
fn main() {
    unix::main();
}

/// Unix sockets and `fork`-free child processes of this program: Unix only.
#[cfg(not(unix))]
fn main() {}
