//! `mpconn bench`: the standard workloads of BENCH.md, server in this process, client in a
//! second process (this program run again with `--role client`), one JSON line per result.
//!
//! The figure is taken where BENCH.md says: W1 and W3 at the server from the first whole message
//! to the last, W2 at the client over all round trips, W4 at the server from the first completed
//! handshake to the last. The W1 client writes 1,024 frames per write(2), as the raw anchor's
//! does, so the server is what is measured.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor};
use mpconn::wire::frame::encode_frame;
use mpconn::{Address, Client, Family, Listener, arbitrary_address};

pub const PAYLOAD: usize = 64;
pub const BULK: usize = 16 << 20;
const W1_BATCH: usize = 1024;
const KEY: &str = "secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
}

impl Workload {
    pub fn default_n(self) -> usize {
        match self {
            Workload::W1 => 1_000_000,
            Workload::W2 => 100_000,
            Workload::W3 => 32,
            Workload::W4 => 2_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Face {
    /// The mio reactor with a callback per message.
    Reactor,
    /// The blocking API (Listener / Connection), one thread.
    Blocking,
}

pub struct BenchArgs {
    pub workload: Workload,
    pub family: Family,
    pub n: usize,
    pub face: Face,
    pub threads: usize,
}

pub fn emit(imp: &str, w: &str, family: &str, value: f64, unit: &str, n: usize) {
    println!(
        r#"{{"impl": "{imp}", "workload": "{w}", "family": "{family}", "value": {value:.3}, "unit": "{unit}", "n": {n}}}"#
    );
    let _ = std::io::stdout().flush();
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "tcp",
        Family::Unix => "unix",
        Family::Pipe => "pipe",
    }
}

/// The server's counters; the figure is computed from them.
struct BenchServer {
    workload: Workload,
    n: usize,
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl BenchServer {
    fn tick(&mut self) -> bool {
        self.count += 1;
        if self.count == 1 {
            self.first = Some(Instant::now());
        }
        if self.count == self.n {
            self.last = Some(Instant::now());
            return true;
        }
        false
    }

    fn result(&self) -> Option<(f64, &'static str)> {
        let secs = (self.last? - self.first?).as_secs_f64();
        let n = (self.n - 1) as f64;
        match self.workload {
            Workload::W1 => Some((n / secs, "msg/s")),
            Workload::W3 => Some((n * BULK as f64 / secs / 1e9, "GB/s")),
            Workload::W4 => Some((n / secs, "conn/s")),
            Workload::W2 => None,
        }
    }
}

impl Handler for BenchServer {
    fn on_open(&mut self, ctx: &mut Context<'_>, _: ConnId, _: &Address) {
        if self.workload == Workload::W4 && self.tick() {
            ctx.stop();
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        match self.workload {
            Workload::W2 => {
                let _ = ctx.send(conn, message);
                if self.tick() {
                    ctx.stop();
                }
            }
            Workload::W1 | Workload::W3 => {
                if self.tick() {
                    let _ = ctx.send(conn, b"");
                    ctx.stop();
                }
            }
            Workload::W4 => {}
        }
    }
}

pub fn run_server(args: &BenchArgs) -> mpconn::Result<()> {
    let address = arbitrary_address(args.family)?;
    let exe = std::env::current_exe()?;
    let spawn_client = |address: &Address| {
        Command::new(&exe)
            .args([
                "bench",
                "--role",
                "client",
                "--workload",
                args.workload.name(),
            ])
            .args([
                "--family",
                family_name(args.family),
                "--addr",
                &address.to_string(),
            ])
            .args([
                "--n",
                &args.n.to_string(),
                "--threads",
                &args.threads.to_string(),
            ])
            .args([
                "--face",
                match args.face {
                    Face::Reactor => "reactor",
                    Face::Blocking => "blocking",
                },
            ])
            .stdout(Stdio::inherit())
            .spawn()
    };
    let authenticated = args.workload == Workload::W4;
    let conn_options = ConnectionOptions::new()
        .max_message_size(BULK + 1024)
        .high_water_mark(64 << 20);
    let conn_options = if authenticated {
        conn_options.authkey(KEY)
    } else {
        conn_options
    };
    let (result, imp) = match args.face {
        Face::Reactor => {
            let mut reactor = Reactor::new(BenchServer {
                workload: args.workload,
                n: args.n,
                count: 0,
                first: None,
                last: None,
            })?;
            let l = reactor.listen(
                address,
                ListenOptions::new().connection(conn_options).backlog(4096),
            )?;
            let bound = reactor.listener_address(l).cloned().expect("bound");
            let mut child = spawn_client(&bound)?;
            reactor.run()?;
            let status = child.wait()?;
            if !status.success() {
                return Err(mpconn::Error::Config(format!(
                    "bench client failed: {status}"
                )));
            }
            (reactor.handler().result(), "mpconn-reactor")
        }
        Face::Blocking => {
            let mut builder = Listener::builder()
                .address(address)
                .backlog(4096)
                .max_message_size(BULK + 1024);
            if authenticated {
                builder = builder.authkey(KEY);
            }
            let mut listener = builder.bind()?;
            let mut child = spawn_client(listener.address())?;
            let mut s = BenchServer {
                workload: args.workload,
                n: args.n,
                count: 0,
                first: None,
                last: None,
            };
            if args.workload == Workload::W4 {
                while !s.tick() {
                    drop(listener.accept()?);
                }
            } else {
                let mut conn = listener.accept()?;
                let mut buf = vec![0u8; BULK];
                loop {
                    let done = match args.workload {
                        Workload::W2 => {
                            let m = conn.recv_bytes()?;
                            conn.send_bytes(&m)?;
                            s.tick()
                        }
                        Workload::W3 => {
                            conn.recv_bytes_into(&mut buf)?;
                            s.tick()
                        }
                        _ => {
                            conn.recv_bytes_into(&mut buf)?;
                            s.tick()
                        }
                    };
                    if done {
                        break;
                    }
                }
                if args.workload != Workload::W2 {
                    conn.send_bytes(b"")?;
                }
                let _ = conn.recv_bytes();
            }
            let status = child.wait()?;
            if !status.success() {
                return Err(mpconn::Error::Config(format!(
                    "bench client failed: {status}"
                )));
            }
            (s.result(), "mpconn-blocking")
        }
    };
    if let Some((value, unit)) = result {
        emit(
            imp,
            args.workload.name(),
            family_name(args.family),
            value,
            unit,
            args.n,
        );
    }
    Ok(())
}

pub fn run_client(args: &BenchArgs, address: &str, imp: &str) -> mpconn::Result<()> {
    let address: Address = address.parse()?;
    if args.workload == Workload::W4 {
        let threads = args.threads.max(1);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let address = address.clone();
                let share = args.n / threads + usize::from(t < args.n % threads);
                std::thread::spawn(move || -> mpconn::Result<()> {
                    for _ in 0..share {
                        drop(Client::new(&address).authkey(KEY).connect()?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| mpconn::Error::Config("client thread panicked".into()))??;
        }
        return Ok(());
    }
    let mut conn = Client::new(&address)
        .max_message_size(BULK + 1024)
        .connect()?;
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    match args.workload {
        Workload::W1 => {
            let mut batch = Vec::new();
            for _ in 0..W1_BATCH {
                encode_frame(&[0xAB; PAYLOAD], &mut batch);
            }
            let frame = PAYLOAD + 4;
            let mut left = args.n;
            while left > 0 {
                let k = left.min(W1_BATCH);
                conn.send_frames(&batch[..k * frame])?;
                left -= k;
            }
            conn.recv_bytes()?;
        }
        Workload::W2 => {
            let msg = [0xABu8; PAYLOAD];
            let t0 = Instant::now();
            for _ in 0..args.n {
                conn.send_bytes(&msg)?;
                conn.recv_bytes()?;
            }
            let us = t0.elapsed().as_secs_f64() * 1e6 / args.n as f64;
            emit(imp, "W2", family_name(args.family), us, "us/rtt", args.n);
        }
        Workload::W3 => {
            let bulk = vec![0xABu8; BULK];
            for _ in 0..args.n {
                conn.send_bytes(&bulk)?;
            }
            conn.recv_bytes()?;
        }
        Workload::W4 => unreachable!("handled above"),
    }
    Ok(())
}
