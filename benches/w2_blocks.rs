//! W2 (ping-pong, issue 20) with every client and server pair in one run, **interleaved in
//! blocks**: on a host whose speed drifts by 20–50 % from one second to the next (2 shared
//! vCPUs), separate runs a second apart compare the drift as much as the code; here one client
//! process holds a connection to each pair's server at once and takes turns, a block of
//! `BLOCK` round trips on each (the order rotated every round), so every pair sees the same
//! machine state. The servers run on threads of this process, idle ones asleep in their wait.
//!
//! The pairs (client → server):
//!
//! * `raw`: the raw anchor's W2 on both sides (one `write` of the frame, reads until it is
//!   whole; the server the same: `rawlimit`'s loops);
//! * `raw → mio`: a bare mio server (one `epoll_wait`, one `read`, one `write` a round trip):
//!   the floor of any server that waits in a readiness poller;
//! * `raw → reactor`, `raw → blocking face`: mpconn's servers (a [`Reactor`] with an echo
//!   handler, as `mpconn bench`'s; the blocking face's `recv_bytes_into` and `send_bytes`);
//! * `mpconn → raw`: mpconn's blocking [`Client`] against the raw server (the client's share);
//! * `mpconn → reactor`, `mpconn → blocking face`: W2 as `mpconn bench --workload W2` runs it,
//!   with the reactor and with `--face blocking` serving.
//!
//! Each pair's µs per round trip (the total of its blocks) and its ratio to `raw`, the ratio of
//! every round's blocks too (their median and quartiles), one JSON line per pair in BENCH.md's
//! format. No authentication (W2 measures messages). Unix only; on one CPU as BENCH.md's W2:
//!
//! ```text
//! taskset -c 0 cargo bench --bench w2_blocks     # ROUNDS=200, BLOCK=500, FAMILIES="unix tcp"
//! ```

#[cfg(unix)]
fn main() {
    blocks::main();
}

#[cfg(unix)]
#[path = "common/w2_servers.rs"]
mod w2_servers;

#[cfg(not(unix))]
fn main() {
    eprintln!("w2_blocks: Unix only");
}

#[cfg(unix)]
mod blocks {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::process::{Command, Stdio};
    use std::thread::JoinHandle;
    use std::time::Instant;

    use mpconn::reactor::options::ListenOptions;
    use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};
    use mpconn::{Address, Client, Listener};

    use crate::w2_servers::{Plain, read_frame, serve_mio, serve_raw};

    /// BENCH.md's W2 payload.
    const PAYLOAD: usize = 64;
    /// Set in the client process's environment: the family, its arguments the servers' addresses.
    const CLIENT_ENV: &str = "MPCONN_W2_BLOCKS_CLIENT";

    #[derive(Clone, Copy, PartialEq)]
    enum Side {
        Raw,
        Mpconn,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Server {
        Raw,
        Mio,
        Reactor,
        BlockingFace,
    }

    const PAIRS: [(&str, Side, Server); 7] = [
        ("raw", Side::Raw, Server::Raw),
        ("raw → mio", Side::Raw, Server::Mio),
        ("raw → reactor", Side::Raw, Server::Reactor),
        ("raw → blocking face", Side::Raw, Server::BlockingFace),
        ("mpconn → raw", Side::Mpconn, Server::Raw),
        ("mpconn → reactor", Side::Mpconn, Server::Reactor),
        ("mpconn → blocking face", Side::Mpconn, Server::BlockingFace),
    ];

    fn env(k: &str, d: usize) -> usize {
        std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
    }

    /// Echoes every message; stops the reactor when the client closes.
    struct Echo;

    impl Handler for Echo {
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            ctx.send(conn, message).expect("the echo queued");
        }
        fn on_close(&mut self, ctx: &mut Context<'_>, _: ConnId, _: mpconn::CloseReason) {
            ctx.stop();
        }
    }

    fn unix_path(i: usize) -> String {
        format!("/tmp/mpconn-w2-blocks-{}-{i}.sock", std::process::id())
    }

    /// Starts pair `i`'s server on a thread of its own; returns its address and the thread.
    fn start_server(family: &str, i: usize, server: Server) -> (String, JoinHandle<()>) {
        let address = if family == "unix" {
            let _ = std::fs::remove_file(unix_path(i));
            unix_path(i)
        } else {
            "127.0.0.1:0".to_string()
        };
        match server {
            Server::Raw | Server::Mio => {
                let (addr, accept): (String, Box<dyn FnOnce() -> Plain + Send>) = if family == "unix" {
                    let l = UnixListener::bind(&address).expect("bind");
                    (address, Box::new(move || Plain::Unix(l.accept().expect("accept").0)))
                } else {
                    let l = TcpListener::bind(&address).expect("bind");
                    let a = l.local_addr().expect("address").to_string();
                    (
                        a,
                        Box::new(move || {
                            let s = l.accept().expect("accept").0;
                            s.set_nodelay(true).expect("nodelay");
                            Plain::Tcp(s)
                        }),
                    )
                };
                let t = std::thread::spawn(move || match server {
                    Server::Raw => serve_raw(accept().io()),
                    _ => serve_mio(accept()),
                });
                (addr, t)
            }
            Server::Reactor => {
                let address: Address = address.parse().expect("address");
                let (tx, rx) = std::sync::mpsc::channel();
                let t = std::thread::spawn(move || {
                    let mut reactor = Reactor::new(Echo).expect("reactor");
                    let l = reactor.listen(address, ListenOptions::new()).expect("listen");
                    tx.send(reactor.listener_address(l).expect("bound").to_string()).expect("address");
                    while reactor.run_once(None).expect("run") == Turn::Running {}
                });
                (rx.recv().expect("the reactor's address"), t)
            }
            Server::BlockingFace => {
                let address: Address = address.parse().expect("address");
                let mut l = Listener::bind(address).expect("bind");
                let addr = l.address().to_string();
                let t = std::thread::spawn(move || {
                    let mut conn = l.accept().expect("accept");
                    let mut buf = [0u8; PAYLOAD];
                    while let Ok(n) = conn.recv_bytes_into(&mut buf) {
                        conn.send_bytes(&buf[..n]).expect("send");
                    }
                });
                (addr, t)
            }
        }
    }

    /// One client connection: the raw anchor's loop, or mpconn's blocking client.
    enum Conn {
        Raw(Plain),
        Mpconn(Box<mpconn::Connection>),
    }

    impl Conn {
        fn connect(family: &str, side: Side, addr: &str) -> Conn {
            match side {
                Side::Raw if family == "unix" => Conn::Raw(Plain::Unix(UnixStream::connect(addr).expect("connect"))),
                Side::Raw => {
                    let s = TcpStream::connect(addr).expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    Conn::Raw(Plain::Tcp(s))
                }
                Side::Mpconn => {
                    let address: Address = addr.parse().expect("address");
                    Conn::Mpconn(Box::new(Client::new(address).connect().expect("connect")))
                }
            }
        }

        /// `n` round trips; their time in seconds.
        fn round_trips(&mut self, n: usize) -> f64 {
            let t0 = Instant::now();
            match self {
                Conn::Raw(s) => {
                    let mut frame = (PAYLOAD as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&[0xAB; PAYLOAD]);
                    let mut buf = [0u8; 4096];
                    for _ in 0..n {
                        s.io().write_all(&frame).expect("write");
                        assert_eq!(read_frame(s.io(), &mut buf), Some(frame.len()));
                    }
                }
                Conn::Mpconn(c) => {
                    let msg = [0xABu8; PAYLOAD];
                    let mut reply = [0u8; PAYLOAD];
                    for _ in 0..n {
                        c.send_bytes(&msg).expect("send");
                        assert_eq!(c.recv_bytes_into(&mut reply).expect("recv"), PAYLOAD);
                    }
                }
            }
            t0.elapsed().as_secs_f64()
        }
    }

    /// The client process: connects to every pair's server, then the rounds; prints one line
    /// per round (the seconds of each pair's block, in `PAIRS` order).
    fn client(family: &str, addrs: &[String]) {
        let (rounds, block) = (env("ROUNDS", 200), env("BLOCK", 500));
        let mut conns: Vec<Conn> =
            PAIRS.iter().zip(addrs).map(|((_, side, _), a)| Conn::connect(family, *side, a)).collect();
        for c in &mut conns {
            c.round_trips(block); // warm up
        }
        let mut out = std::io::stdout().lock();
        for r in 0..rounds {
            let mut secs = vec![0.0; conns.len()];
            for k in 0..conns.len() {
                let i = (r + k) % conns.len();
                secs[i] = conns[i].round_trips(block);
            }
            let line: Vec<String> = secs.iter().map(|s| format!("{s:.9}")).collect();
            writeln!(out, "{}", line.join(" ")).expect("stdout");
        }
    }

    fn quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    fn run_family(family: &str) {
        let started: Vec<(String, JoinHandle<()>)> =
            PAIRS.iter().enumerate().map(|(i, (_, _, server))| start_server(family, i, *server)).collect();
        let exe = std::env::current_exe().expect("this program");
        let output = Command::new(exe)
            .env(CLIENT_ENV, family)
            .args(started.iter().map(|(a, _)| a))
            .stderr(Stdio::inherit())
            .output()
            .expect("the client process");
        assert!(output.status.success(), "client failed: {}", output.status);
        for (_, t) in started {
            t.join().expect("a server thread");
        }
        for i in 0..PAIRS.len() {
            let _ = std::fs::remove_file(unix_path(i));
        }
        let rows: Vec<Vec<f64>> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split(' ').map(|v| v.parse().expect("seconds")).collect())
            .collect();
        let block = env("BLOCK", 500) as f64;
        let totals: Vec<f64> = (0..PAIRS.len()).map(|i| rows.iter().map(|r| r[i]).sum()).collect();
        for (i, (name, _, _)) in PAIRS.iter().enumerate() {
            let us = totals[i] * 1e6 / (block * rows.len() as f64);
            println!(
                r#"{{"impl": "blocks {name}", "workload": "W2", "family": "{family}", "value": {us:.3}, "unit": "us/rtt", "n": {}}}"#,
                block as usize * rows.len()
            );
        }
        for (i, (name, _, _)) in PAIRS.iter().enumerate().skip(1) {
            let mut per_round: Vec<f64> = rows.iter().map(|r| r[i] / r[0]).collect();
            per_round.sort_by(f64::total_cmp);
            eprintln!(
                "{family}: {name} ÷ raw {:.3} (rounds' ratios: quartiles {:.3} / median {:.3} / {:.3})",
                totals[i] / totals[0],
                quantile(&per_round, 0.25),
                quantile(&per_round, 0.5),
                quantile(&per_round, 0.75)
            );
        }
    }

    pub fn main() {
        if let Ok(family) = std::env::var(CLIENT_ENV) {
            let addrs: Vec<String> = std::env::args().skip(1).collect();
            return client(&family, &addrs);
        }
        let families = std::env::var("FAMILIES").unwrap_or_else(|_| "unix tcp".into());
        for family in families.split_whitespace() {
            run_family(family);
        }
    }
}
