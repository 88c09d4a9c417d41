//! The floor of W2 (ping-pong, issue 20) for any server built on a readiness poller: the raw
//! anchor's own client (`rawlimit --role client`) against two servers with nothing on top of
//! the socket, alternated in one run:
//!
//! * `blocking`: what the raw anchor's server does, one `read` and one `write` a round trip;
//! * `mio`: the least a reactor can do, one `epoll_wait`, one `read` (a short read is taken to
//!   have drained the socket, as mpconn's reactor does) and one `write` a round trip, with no
//!   framing work beyond finding the frame's end;
//! * `mpconn`: mpconn's [`Reactor`](mpconn::reactor::Reactor) with an echo handler, as `mpconn
//!   bench`'s W2 server (no authentication).
//!
//! The same client for all three, so the ratios are the servers' alone. mpconn's W2 ratio to
//! raw is read against `mio ÷ blocking`: the part of the gap that comes from waiting in
//! `epoll_wait` rather than in `read`, which no reactor avoids. Unix only; run
//! on one CPU as BENCH.md's W2 is:
//!
//! ```text
//! bash ../shared/bench-anchors/build.sh      # rawlimit in /tmp/bench-anchors-target/release
//! taskset -c 0 cargo bench --bench w2_floor  # RAW=path/to/rawlimit, ROUNDS=5, N=100000
//! ```
//! It prints one JSON line per run in BENCH.md's format and the ratios of each round.

#[cfg(unix)]
fn main() {
    floor::main();
}

#[cfg(unix)]
#[path = "common/w2_servers.rs"]
mod w2_servers;

#[cfg(not(unix))]
fn main() {
    eprintln!("w2_floor: Unix only");
}

#[cfg(unix)]
mod floor {
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use mpconn::Address;
    use mpconn::reactor::options::ListenOptions;
    use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};

    use crate::w2_servers::{Plain, serve_mio, serve_raw};

    /// The servers on plain sockets (mpconn's is [`run_mpconn`]).
    #[derive(Clone, Copy)]
    enum Server {
        Blocking,
        Mio,
    }

    /// Echoes `n` messages, then stops the reactor.
    struct Echo {
        left: usize,
    }

    impl Handler for Echo {
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            ctx.send(conn, message).expect("the echo queued");
            self.left -= 1;
            if self.left == 0 {
                ctx.stop();
            }
        }
    }

    /// The mpconn arm: its own listener, so only the address is shared with the others.
    fn run_mpconn(raw: &str, family: &str, n: usize) -> f64 {
        let address: Address = if family == "unix" {
            format!("/tmp/mpconn-w2-floor-{}.sock", std::process::id()).parse().expect("address")
        } else {
            "127.0.0.1:0".parse().expect("address")
        };
        let mut reactor = Reactor::new(Echo { left: n }).expect("reactor");
        let l = reactor.listen(address, ListenOptions::new()).expect("listen");
        let addr = reactor.listener_address(l).expect("bound").to_string();
        let client = spawn_client(raw, family, &addr, n);
        while reactor.run_once(None).expect("run") == Turn::Running {}
        drop(reactor);
        finish(client, "floor-mpconn", family, n)
    }

    fn spawn_client(raw: &str, family: &str, addr: &str, n: usize) -> std::process::Child {
        Command::new(raw)
            .args(["--role", "client", "--workload", "W2", "--family", family, "--addr", addr])
            .args(["--n", &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("rawlimit client")
    }

    /// Waits for the client, prints its figure under `name` and returns it (µs per round trip).
    fn finish(client: std::process::Child, name: &str, family: &str, n: usize) -> f64 {
        let out = client.wait_with_output().expect("client");
        assert!(out.status.success(), "client failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text
            .split("\"value\": ")
            .nth(1)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("the client's JSON line");
        println!(
            r#"{{"impl": "{name}", "workload": "W2", "family": "{family}", "value": {value:.3}, "unit": "us/rtt", "n": {n}}}"#
        );
        value
    }

    /// One run: the server on this thread, rawlimit's client in its own process; returns the
    /// client's µs per round trip.
    fn run(raw: &str, family: &str, server: Server, n: usize) -> f64 {
        let path = format!("/tmp/mpconn-w2-floor-{}.sock", std::process::id());
        let (accept, addr): (Box<dyn Fn() -> Plain>, String) = if family == "unix" {
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).expect("bind");
            (Box::new(move || Plain::Unix(l.accept().expect("accept").0)), path.clone())
        } else {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let a = l.local_addr().expect("address").to_string();
            (
                Box::new(move || {
                    let s = l.accept().expect("accept").0;
                    s.set_nodelay(true).expect("nodelay");
                    Plain::Tcp(s)
                }),
                a,
            )
        };
        let client = spawn_client(raw, family, &addr, n);
        let mut stream = accept();
        let name = match server {
            Server::Blocking => {
                serve_raw(stream.io());
                "floor-blocking"
            }
            Server::Mio => {
                serve_mio(stream);
                "floor-mio"
            }
        };
        let value = finish(client, name, family, n);
        let _ = std::fs::remove_file(&path);
        value
    }

    pub fn main() {
        let raw = std::env::var("RAW").unwrap_or_else(|_| "/tmp/bench-anchors-target/release/rawlimit".into());
        if !Path::new(&raw).exists() {
            eprintln!("w2_floor: no rawlimit at {raw} (bash ../shared/bench-anchors/build.sh, or RAW=...); skipped");
            return;
        }
        let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let (rounds, n) = (env("ROUNDS", 5), env("N", 100_000));
        for family in ["unix", "tcp"] {
            let mut ratios: [Vec<f64>; 3] = Default::default();
            for _ in 0..rounds {
                let blocking = run(&raw, family, Server::Blocking, n);
                let mio = run(&raw, family, Server::Mio, n);
                let mpconn = run_mpconn(&raw, family, n);
                ratios[0].push(mio / blocking);
                ratios[1].push(mpconn / blocking);
                ratios[2].push(mpconn / mio);
            }
            for (what, mut r) in ["mio ÷ blocking", "mpconn ÷ blocking", "mpconn ÷ mio"].into_iter().zip(ratios) {
                let shown: Vec<String> = r.iter().map(|x| format!("{x:.3}")).collect();
                r.sort_by(f64::total_cmp);
                eprintln!("{family}: {what} {} (median {:.3})", shown.join(" "), r[r.len() / 2]);
            }
        }
    }
}
