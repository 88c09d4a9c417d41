//! `mpconn bench`: the standard workloads of BENCH.md, server in this process, client in a
//! second process (this program run again with `--role client`), one JSON line per result.
//!
//! The figure is taken where BENCH.md says: W1 and W3 at the server from the first whole message
//! to the last, W2 at the client over all round trips, W4 at the server from the first completed
//! handshake to the last. The W1 client writes 1,024 frames per write(2), as the raw anchor's
//! does, so the server is what is measured.
//!
//! Ctrl-C (or SIGTERM) ends a run early: the client processes are killed and reaped, and the
//! workload under way is reported from what the server measured so far, on one JSON line marked
//! `"partial": true` whose `n` is the messages (connections for W4) measured; `--all` stops
//! there. A complete result's line is unchanged.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mpconn::internal::frame::encode_frame;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};
use mpconn::{Address, Client, Family, Listener, arbitrary_address};

pub const PAYLOAD: usize = 64;
pub const BULK: usize = 16 << 20;
const W1_BATCH: usize = 1024;
const KEY: &str = "secret";
/// How long a reactor turn waits at most, so Ctrl-C is seen within this even when nothing moves.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

/// A client process, killed and reaped if it still runs when this is dropped (Ctrl-C, an error):
/// a bench leaves no client behind.
struct ClientProcess(Child);

/// How long an error from the client may precede the Ctrl-C that caused it (see
/// [`crate::interrupt::requested_within`]).
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

impl ClientProcess {
    /// Ends the client now (before this side closes its connection, so it reports no error).
    fn stop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Waits for the client's normal end; an error if it failed.
    fn finish(mut self) -> mpconn::Result<()> {
        let status = self.0.wait()?;
        if !status.success() {
            return Err(mpconn::Error::Config(format!("bench client failed: {status}")));
        }
        Ok(())
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
}

impl Workload {
    pub fn default_n(self) -> usize {
        match self {
            Workload::W1 => 1_000_000,
            Workload::W2 => 100_000,
            Workload::W3 => 32,
            Workload::W4 => 2_000,
            Workload::W5 => 19_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Face {
    /// The mio reactor with a callback per message.
    Reactor,
    /// The blocking API (Listener / Connection), one thread.
    Blocking,
    /// The async face (`mpconn::tokio`) on a current-thread tokio runtime.
    Async,
}

pub struct BenchArgs {
    pub workload: Workload,
    pub family: Family,
    pub n: usize,
    pub face: Face,
    pub threads: usize,
    /// `Some(N)`: N sharded reactors (`mpconn::reactor::Sharded`) serve, fed by `clients`
    /// client processes (W1, W3: each sends its share of `n`, the last message marked; W4: each
    /// opens its share of the connections with `threads` threads).
    pub reactors: Option<usize>,
    pub clients: usize,
    /// With `reactors`: the acceptor thread spreads the connections (`Balance::Acceptor`).
    pub acceptor: bool,
    /// W4 clients send their challenge with their answer (false: after the #WELCOME#).
    pub early_challenge: bool,
    /// Client side: the last message of this client is marked (sharded runs).
    pub mark_last: bool,
}

/// The first byte of a sharded run's last message from each client: the server answers it.
const LAST_MARK: u8 = 0xCD;

pub fn emit(imp: &str, w: &str, family: &str, value: f64, unit: &str, n: usize) {
    println!(
        r#"{{"impl": "{imp}", "workload": "{w}", "family": "{family}", "value": {value:.3}, "unit": "{unit}", "n": {n}}}"#
    );
    let _ = std::io::stdout().flush();
}

/// A result cut short by Ctrl-C: the same line with `"partial": true`, `n` = what was measured.
pub fn emit_partial(imp: &str, w: &str, family: &str, value: f64, unit: &str, n: usize) {
    println!(
        r#"{{"impl": "{imp}", "workload": "{w}", "family": "{family}", "value": {value:.3}, "unit": "{unit}", "n": {n}, "partial": true}}"#
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
    /// W5: every open connection, and a broadcast in flight (start, echoes still to come).
    conns: Vec<ConnId>,
    broadcast: Option<(Instant, usize, Option<Duration>)>,
}

impl BenchServer {
    fn new(workload: Workload, n: usize) -> BenchServer {
        BenchServer { workload, n, count: 0, first: None, last: None, conns: Vec::new(), broadcast: None }
    }
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
            Workload::W2 | Workload::W5 => None,
        }
    }

    /// The figure from what was counted until now (Ctrl-C), and that count; `None` before two
    /// ticks. W2's is the server's view: the time between echoes, per round trip.
    fn partial_result(&self) -> Option<(f64, &'static str, usize)> {
        if self.count < 2 {
            return None;
        }
        let secs = self.first?.elapsed().as_secs_f64();
        let n = (self.count - 1) as f64;
        let (value, unit) = match self.workload {
            Workload::W1 => (n / secs, "msg/s"),
            Workload::W2 => (secs * 1e6 / n, "us/rtt"),
            Workload::W3 => (n * BULK as f64 / secs / 1e9, "GB/s"),
            Workload::W4 => (n / secs, "conn/s"),
            Workload::W5 => return None,
        };
        Some((value, unit, self.count))
    }
}

/// Reports the partial result of an interrupted run (or says on stderr that there is none).
fn report_interrupted(server: &BenchServer, imp: &str, family: Family) {
    match server.partial_result() {
        Some((value, unit, n)) => emit_partial(imp, server.workload.name(), family_name(family), value, unit, n),
        None => eprintln!("bench: interrupted before {} measured anything", server.workload.name()),
    }
}

impl Handler for BenchServer {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        if self.workload == Workload::W5 {
            self.conns.push(conn);
        }
        if self.workload == Workload::W4 {
            // The handshake is what W4 measures: close at once, as the raw anchor's server does
            // (no wait for the client's end of file).
            ctx.close(conn);
            if self.tick() {
                ctx.stop();
            }
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
            Workload::W5 => match &mut self.broadcast {
                Some((start, left, done)) => {
                    *left -= 1;
                    if *left == 0 {
                        *done = Some(start.elapsed());
                    }
                }
                None => {
                    let _ = ctx.send(conn, message);
                    self.tick();
                }
            },
        }
    }
}

/// The command that runs a bench client process: this binary, `--role client`, with the run's
/// settings and its share `n`.
fn client_command(exe: &std::path::Path, args: &BenchArgs, address: &Address, n: usize) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--role", "client", "--workload", args.workload.name()])
        .args(["--family", family_name(args.family), "--addr", &address.to_string()])
        .args(["--n", &n.to_string(), "--threads", &args.threads.to_string()])
        .args([
            "--face",
            match args.face {
                Face::Reactor => "reactor",
                Face::Blocking => "blocking",
                Face::Async => "async",
            },
        ])
        .stdout(Stdio::inherit());
    if !args.early_challenge {
        cmd.arg("--no-early-challenge");
    }
    cmd
}

pub fn run_server(args: &BenchArgs) -> mpconn::Result<()> {
    if args.workload == Workload::W5 {
        return w5::server(args);
    }
    if let Some(reactors) = args.reactors {
        return sharded::server(args, reactors);
    }
    let address = arbitrary_address(args.family)?;
    let exe = std::env::current_exe()?;
    let spawn_client = |address: &Address| client_command(&exe, args, address, args.n).spawn();
    let authenticated = args.workload == Workload::W4;
    let conn_options = ConnectionOptions::new().max_message_size(BULK + 1024).high_water_mark(64 << 20);
    let conn_options = if authenticated { conn_options.authkey(KEY) } else { conn_options };
    let (result, imp) = match args.face {
        Face::Reactor => {
            let imp = "mpconn-reactor";
            let mut reactor = Reactor::new(BenchServer::new(args.workload, args.n))?;
            let l = reactor.listen(address, ListenOptions::new().connection(conn_options).backlog(4096))?;
            let bound = reactor.listener_address(l).cloned().ok_or(mpconn::Error::Closed("the listener"))?;
            let client = ClientProcess(spawn_client(&bound)?);
            // Turns wait with no timeout (a timed wait arms a kernel timer each turn: about
            // 0.5 us of a W2 round trip); Ctrl-C wakes the reactor through its handle.
            let handle = reactor.handle();
            let wake = crate::interrupt::Wake::register(move || {
                let _ = handle.call(|_| {});
            });
            loop {
                if crate::interrupt::requested() {
                    drop(client);
                    report_interrupted(reactor.handler(), imp, args.family);
                    return Ok(());
                }
                if reactor.run_once(None)? != Turn::Running {
                    break;
                }
            }
            drop(wake);
            client.finish()?;
            (reactor.handler().result(), imp)
        }
        Face::Blocking => {
            let mut builder = Listener::builder().address(address).backlog(4096).max_message_size(BULK + 1024);
            if authenticated {
                builder = builder.authkey(KEY);
            }
            let imp = "mpconn-blocking";
            let mut listener = builder.bind()?;
            let mut client = ClientProcess(spawn_client(listener.address())?);
            let mut s = BenchServer::new(args.workload, args.n);
            let unblocker = Unblocker::start(listener.address().clone());
            let served = serve_blocking(&mut listener, &mut s, args.workload, &mut client);
            drop(unblocker);
            // Ctrl-C: seen between messages, or as the error of a client the terminal's Ctrl-C
            // ended too.
            let interrupted = match served {
                Ok(()) => s.last.is_none() && crate::interrupt::requested(),
                Err(_) => crate::interrupt::requested_within(INTERRUPT_GRACE),
            };
            if interrupted {
                drop(client);
                report_interrupted(&s, imp, args.family);
                return Ok(());
            }
            served?;
            client.finish()?;
            (s.result(), imp)
        }
        Face::Async => {
            let imp = "mpconn-async";
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let mut s = BenchServer::new(args.workload, args.n);
            let (client, served) =
                runtime.block_on(async_server(args, address, authenticated, &spawn_client, &mut s))?;
            // Ctrl-C: seen between messages, or as the error of a client the terminal's Ctrl-C
            // ended too (as the blocking face).
            let interrupted = match served {
                Ok(()) => s.last.is_none() && crate::interrupt::requested(),
                Err(_) => crate::interrupt::requested_within(INTERRUPT_GRACE),
            };
            if interrupted {
                drop(client);
                report_interrupted(&s, imp, args.family);
                return Ok(());
            }
            served?;
            client.finish()?;
            (s.result(), imp)
        }
    };
    if let Some((value, unit)) = result {
        emit(imp, args.workload.name(), family_name(args.family), value, unit, args.n);
    }
    Ok(())
}

/// For the blocking face: on Ctrl-C, one throwaway connection to the listener, so an `accept`
/// that waits for a client that will not come (the terminal's Ctrl-C ended it too) returns.
struct Unblocker {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unblocker {
    fn start(address: Address) -> Unblocker {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = done.clone();
        let thread = std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                if crate::interrupt::requested() {
                    let client = Client::new(&address).authenticate(false).connect_timeout(Some(INTERRUPT_GRACE));
                    drop(client.connect());
                    return;
                }
                std::thread::sleep(INTERRUPT_CHECK);
            }
        });
        Unblocker { done, thread: Some(thread) }
    }
}

impl Drop for Unblocker {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The blocking face's server loop; returns early (`Ok`) when Ctrl-C was pressed, after stopping
/// the client (while the connection is still open: a client cut off mid-write would print an
/// error).
fn serve_blocking(
    listener: &mut Listener,
    s: &mut BenchServer,
    workload: Workload,
    client: &mut ClientProcess,
) -> mpconn::Result<()> {
    let mut interrupted = || {
        let yes = crate::interrupt::requested();
        if yes {
            client.stop();
        }
        yes
    };
    if workload == Workload::W4 {
        // Counted once each handshake is done (counting before the accept served one client
        // fewer than the clients open, and the last one's handshake timed out).
        loop {
            if interrupted() {
                return Ok(());
            }
            drop(listener.accept()?);
            if s.tick() {
                return Ok(());
            }
        }
    }
    let mut conn = listener.accept()?;
    let mut buf = vec![0u8; BULK];
    loop {
        if interrupted() {
            return Ok(());
        }
        let done = match workload {
            Workload::W2 => {
                let m = conn.recv_bytes()?;
                conn.send_bytes(&m)?;
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
    if workload != Workload::W2 {
        conn.send_bytes(b"")?;
    }
    let _ = conn.recv_bytes();
    Ok(())
}

/// The server of `--face async`: the async face on the current-thread runtime it runs on. W4
/// accepts while earlier clients authenticate (each handshake a task of its own).
/// Returns the client process and how serving ended (`Ok` early on Ctrl-C, the client already
/// stopped); binding or starting the client failing is the outer error.
async fn async_server(
    args: &BenchArgs,
    address: Address,
    authenticated: bool,
    spawn_client: &dyn Fn(&Address) -> std::io::Result<std::process::Child>,
    s: &mut BenchServer,
) -> mpconn::Result<(ClientProcess, mpconn::Result<()>)> {
    use mpconn::tokio::Listener as AsyncListener;
    let mut builder = AsyncListener::builder().address(address).backlog(4096).max_message_size(BULK + 1024);
    if authenticated {
        builder = builder.authkey(KEY);
    }
    let mut listener = builder.bind()?;
    let mut client = ClientProcess(spawn_client(listener.address())?);
    let served = async_serve(args.workload, &mut listener, s, &mut client).await;
    Ok((client, served))
}

/// The async face's server loop; returns early (`Ok`) on Ctrl-C after stopping the client.
async fn async_serve(
    workload: Workload,
    listener: &mut mpconn::tokio::Listener,
    s: &mut BenchServer,
    client: &mut ClientProcess,
) -> mpconn::Result<()> {
    let mut interrupted = || {
        let yes = crate::interrupt::requested();
        if yes {
            client.stop();
        }
        yes
    };
    if workload == Workload::W4 {
        let mut handshakes = tokio::task::JoinSet::new();
        loop {
            if interrupted() {
                return Ok(());
            }
            tokio::select! {
                incoming = listener.accept_incoming() => {
                    let incoming = incoming?;
                    handshakes.spawn(async move { incoming.handshake().await.map(drop) });
                }
                Some(done) = handshakes.join_next() => {
                    done.map_err(|e| mpconn::Error::Config(format!("handshake task: {e}")))??;
                    if s.tick() {
                        return Ok(());
                    }
                }
                // Wakes the loop to look for a Ctrl-C when no client comes any more.
                _ = tokio::time::sleep(INTERRUPT_CHECK) => {}
            }
        }
    }
    // Without a key an accept has no handshake to lose when the sleep wins.
    let mut conn = loop {
        tokio::select! {
            conn = listener.accept() => break conn?,
            _ = tokio::time::sleep(INTERRUPT_CHECK) => {
                if interrupted() {
                    return Ok(());
                }
            }
        }
    };
    let mut buf = vec![0u8; PAYLOAD];
    if workload == Workload::W2 {
        loop {
            // Ctrl-C is looked at every 1,024 messages (the reactor looks once a turn), not per
            // message; a client ended by the same Ctrl-C ends the receive with an error anyway.
            if s.count.is_multiple_of(1024) && interrupted() {
                return Ok(());
            }
            let n = conn.recv_bytes_into(&mut buf).await?;
            conn.send_bytes(&buf[..n]).await?;
            if s.tick() {
                break;
            }
        }
    } else {
        // W1 and W3: every message ready seen in place, in one loop per batch, as the reactor's
        // on_message sees each message of a read. Ctrl-C is looked at once a batch.
        let mut done = false;
        while !done {
            if interrupted() {
                return Ok(());
            }
            conn.recv_batch(|_| done |= s.tick()).await?;
        }
    }
    if workload != Workload::W2 {
        conn.send_bytes(b"").await?;
    }
    let _ = conn.recv_bytes().await;
    Ok(())
}

pub fn run_client(args: &BenchArgs, address: &str, imp: &str) -> mpconn::Result<()> {
    let address: Address = address.parse()?;
    if args.workload == Workload::W5 {
        return w5::client(args, &address);
    }
    if args.workload == Workload::W4 {
        let threads = args.threads.max(1);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let address = address.clone();
                let share = args.n / threads + usize::from(t < args.n % threads);
                let early = args.early_challenge;
                std::thread::spawn(move || -> mpconn::Result<()> {
                    for _ in 0..share {
                        drop(Client::new(&address).authkey(KEY).early_challenge(early).connect()?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| mpconn::Error::Config("client thread panicked".into()))??;
        }
        return Ok(());
    }
    let mut conn = Client::new(&address).max_message_size(BULK + 1024).connect()?;
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
                if args.mark_last && k == left {
                    // The last frame's first payload byte says "answer me" (sharded runs).
                    let mut last = batch[..k * frame].to_vec();
                    last[(k - 1) * frame + 4] = LAST_MARK;
                    conn.send_frames(&last)?;
                } else {
                    conn.send_frames(&batch[..k * frame])?;
                }
                left -= k;
            }
            conn.recv_bytes()?;
        }
        Workload::W2 => {
            let msg = [0xABu8; PAYLOAD];
            // Replies land in one reused buffer, as the raw and tokio anchors read them.
            let mut reply = [0u8; PAYLOAD];
            let t0 = Instant::now();
            for _ in 0..args.n {
                conn.send_bytes(&msg)?;
                conn.recv_bytes_into(&mut reply)?;
            }
            let us = t0.elapsed().as_secs_f64() * 1e6 / args.n as f64;
            emit(imp, "W2", family_name(args.family), us, "us/rtt", args.n);
        }
        Workload::W3 => {
            let mut bulk = vec![0xABu8; BULK];
            for i in 0..args.n {
                if args.mark_last && i + 1 == args.n {
                    bulk[0] = LAST_MARK;
                }
                conn.send_bytes(&bulk)?;
            }
            conn.recv_bytes()?;
        }
        Workload::W4 | Workload::W5 => unreachable!("handled above"),
    }
    Ok(())
}

/// W5: many concurrent authenticated Unix connections on one reactor thread, each doing one round
/// trip, then idle. Reports user-space memory per idle connection (RSS growth / N) and the cost of
/// an idle reactor turn. Clients are spread over processes of at most `PER_PROCESS` connections
/// (one process may hold 20,000 descriptors here).
mod w5 {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use mpconn::CloseReason;
    use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
    use mpconn::reactor::{ConnId, Context, Handler, Reactor};
    use mpconn::{Address, Error, Family, Result, arbitrary_address};

    use super::{BenchArgs, BenchServer, ClientProcess, KEY, PAYLOAD, emit, emit_partial};
    use crate::interrupt;
    use crate::stress::{raise_fd_limit, rss_of};

    const PER_PROCESS: usize = 9_500;
    const WINDOW: usize = 256;
    const LIMIT: Duration = Duration::from_secs(300);

    pub fn server(args: &BenchArgs) -> Result<()> {
        if let Some((old, new)) = raise_fd_limit() {
            eprintln!("bench: raised the descriptor limit from {old} to {new}");
        }
        let address = arbitrary_address(Family::Unix)?;
        let server = BenchServer::new(super::Workload::W5, args.n);
        let mut reactor = Reactor::new(server)?;
        let options = ListenOptions::new().backlog(4096).connection(ConnectionOptions::new().authkey(KEY));
        let l = reactor.listen(address, options)?;
        let bound = reactor.listener_address(l).cloned().ok_or(Error::Closed("listener"))?;
        let before = rss_of(std::process::id()).unwrap_or(0);
        let exe = std::env::current_exe()?;
        let (tx, rx) = mpsc::channel();
        let mut children = Vec::new();
        let mut left = args.n;
        while left > 0 {
            let share = left.min(PER_PROCESS);
            left -= share;
            let mut child = Command::new(&exe)
                .args(["bench", "--role", "client", "--workload", "W5", "--family", "unix"])
                .args(["--addr", &bound.to_string(), "--n", &share.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let out = child.stdout.take();
            let child = ClientProcess(child);
            let out = out.ok_or(Error::Closed("client stdout"))?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
                    let _ = tx.send(line);
                }
            });
            children.push(child);
        }
        let start = Instant::now();
        let mut ready = 0;
        let mut client_errors = 0u64;
        while ready < children.len() || reactor.handler().count < args.n {
            if start.elapsed() > LIMIT {
                return Err(Error::Timeout(mpconn::Timeout::Other("W5 clients did not all finish their round trip")));
            }
            if interrupt::requested() {
                // The time so far, for the connections that made their round trip.
                drop(children);
                let n = reactor.handler().count;
                emit_partial("mpconn-reactor", "W5-connect-all", "unix", start.elapsed().as_secs_f64(), "s", n);
                return Ok(());
            }
            reactor.run_once(Some(Duration::from_millis(10)))?;
            while let Ok(line) = rx.try_recv() {
                if let Some(errors) = line.strip_prefix("READY ") {
                    ready += 1;
                    client_errors += errors.trim().parse::<u64>().unwrap_or(1);
                }
            }
            if client_errors > 0 {
                return Err(Error::Config(format!("W5: {client_errors} client connections failed")));
            }
        }
        let connect_secs = start.elapsed().as_secs_f64();
        // A moment for the last replies to leave, then one turn to settle.
        std::thread::sleep(Duration::from_millis(200));
        reactor.run_once(Some(Duration::ZERO))?;
        let after = rss_of(std::process::id()).unwrap_or(0);
        let per_conn = after.saturating_sub(before) as f64 / args.n as f64;
        let turns = 2000;
        let t0 = Instant::now();
        for _ in 0..turns {
            reactor.run_once(Some(Duration::ZERO))?;
        }
        let turn_us = t0.elapsed().as_secs_f64() * 1e6 / turns as f64;
        eprintln!(
            "W5: {} connections open and idle after {:.2} s; RSS {:.1} MiB -> {:.1} MiB; idle turn {:.2} µs; {} open",
            args.n,
            connect_secs,
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            turn_us,
            reactor.len() - 1
        );
        // A broadcast: one 64-byte message to every connection; each client echoes it.
        reactor.with_handler(|h, ctx| {
            for &c in &h.conns {
                let _ = ctx.send(c, &[0xCD; PAYLOAD]);
            }
            h.broadcast = Some((Instant::now(), h.conns.len(), None));
        });
        let deadline = Instant::now() + LIMIT;
        let broadcast = loop {
            reactor.run_once(Some(Duration::from_millis(10)))?;
            if let Some((_, _, Some(d))) = reactor.handler().broadcast {
                break d;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(mpconn::Timeout::Other("W5 broadcast echoes did not all arrive")));
            }
            if interrupt::requested() {
                // What was measured before the broadcast is complete.
                drop(children);
                emit("mpconn-reactor", "W5", "unix", per_conn, "bytes/conn", args.n);
                emit("mpconn-reactor", "W5-idle-turn", "unix", turn_us, "us/turn", args.n);
                emit("mpconn-reactor", "W5-connect-all", "unix", connect_secs, "s", args.n);
                return Ok(());
            }
        };
        eprintln!(
            "W5: broadcast to {} connections and every echo back: {:.1} ms",
            args.n,
            broadcast.as_secs_f64() * 1e3
        );
        emit("mpconn-reactor", "W5", "unix", per_conn, "bytes/conn", args.n);
        emit("mpconn-reactor", "W5-broadcast", "unix", broadcast.as_secs_f64() * 1e3, "ms", args.n);
        emit("mpconn-reactor", "W5-idle-turn", "unix", turn_us, "us/turn", args.n);
        emit("mpconn-reactor", "W5-connect-all", "unix", connect_secs, "s", args.n);
        for mut c in children {
            drop(c.0.stdin.take());
            let _ = c.0.wait();
        }
        Ok(())
    }

    struct W5Client {
        done: usize,
        in_flight: usize,
        errors: u64,
        answered: std::collections::HashSet<ConnId>,
    }

    impl Handler for W5Client {
        fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
            if ctx.send(conn, &[0xAB; PAYLOAD]).is_err() {
                self.errors += 1;
            }
        }
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            if self.answered.insert(conn) {
                // The echo of our own round trip.
                self.done += 1;
                self.in_flight -= 1;
            } else {
                // A broadcast from the server: echo it.
                let _ = ctx.send(conn, message);
            }
        }
        fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, reason: CloseReason) {
            self.errors += 1;
            self.in_flight = self.in_flight.saturating_sub(1);
            eprintln!("W5 client: a connection closed: {reason}");
        }
    }

    pub fn client(args: &BenchArgs, address: &Address) -> Result<()> {
        raise_fd_limit();
        let mut reactor = Reactor::new(W5Client { done: 0, in_flight: 0, errors: 0, answered: Default::default() })?;
        let options = ConnectionOptions::new().authkey(KEY).handshake_timeout(Some(Duration::from_secs(120)));
        let mut started = 0;
        let start = Instant::now();
        while reactor.handler().done + (reactor.handler().errors as usize) < args.n {
            if start.elapsed() > LIMIT {
                break;
            }
            while started < args.n && reactor.handler().in_flight < WINDOW {
                reactor.connect(address, options.clone())?;
                reactor.handler_mut().in_flight += 1;
                started += 1;
            }
            reactor.run_once(Some(Duration::from_millis(10)))?;
        }
        let errors =
            reactor.handler().errors + (args.n - reactor.handler().done - reactor.handler().errors as usize) as u64;
        println!("READY {errors}");
        std::io::stdout().flush()?;
        // Hold the connections open (idle) until the server closes our stdin.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = tx.send(());
        });
        while rx.try_recv().is_err() {
            reactor.run_once(Some(Duration::from_millis(100)))?;
        }
        Ok(())
    }
}

/// `--reactors N`: W1, W3 and W4 served by N sharded reactors, fed by `--clients` processes. The
/// figure is the aggregate at the server: all messages (connections for W4) over the time from
/// the first one on any shard to the last one on any shard.
mod sharded {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
    use mpconn::reactor::{Balance, ConnId, Context, Handler, Sharded};
    use mpconn::{Address, Error, Result, arbitrary_address};

    use super::{BULK, ClientProcess, KEY, LAST_MARK, Workload, emit, emit_partial, family_name};

    /// One shard's counts: its messages (W1, W3) or handshakes (W4), first and last.
    struct Counter {
        workload: Workload,
        count: usize,
        first: Option<Instant>,
        last: Option<Instant>,
    }

    impl Counter {
        #[inline]
        fn tick(&mut self) {
            let now = Instant::now();
            if self.first.is_none() {
                self.first = Some(now);
            }
            self.last = Some(now);
            self.count += 1;
        }
    }

    impl Handler for Counter {
        fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
            if self.workload == Workload::W4 {
                // Closed at once, as the raw anchor's acceptors close after the handshake.
                ctx.close(conn);
                self.tick();
            }
        }

        #[inline]
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            self.count += 1;
            if self.first.is_none() {
                self.first = Some(Instant::now());
            }
            if message.first() == Some(&LAST_MARK) {
                self.last = Some(Instant::now());
                let _ = ctx.send(conn, b"");
            }
        }
    }

    pub fn server(args: &super::BenchArgs, reactors: usize) -> Result<()> {
        if !matches!(args.workload, Workload::W1 | Workload::W3 | Workload::W4) {
            return Err(Error::Config("--reactors serves W1, W3 and W4".into()));
        }
        let clients = args.clients.max(1);
        let w4 = args.workload == Workload::W4;
        let workload = args.workload;
        let mut group = Sharded::new(reactors, ReactorConfig::default(), |_| Counter {
            workload,
            count: 0,
            first: None,
            last: None,
        })?;
        let n = group.shard_count();
        let balance = if args.acceptor { "/acceptor" } else { "" };
        let imp = format!("mpconn-reactor/{n}-reactors/{clients}-clients{balance}");
        let mut options = ConnectionOptions::new().max_message_size(BULK + 1024).high_water_mark(64 << 20);
        if w4 {
            options = options.authkey(KEY);
        }
        let (address, options) =
            (arbitrary_address(args.family)?, ListenOptions::new().connection(options).backlog(4096));
        let listener = match args.acceptor {
            true => group.listen_with(address, options, Balance::Acceptor)?,
            false => group.listen(address, options)?,
        };
        log::info!("bench: {n} reactors, listener balanced by {:?}", listener.balance());
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(clients);
        for c in 0..clients {
            let share = args.n / clients + usize::from(c < args.n % clients);
            let mut cmd = super::client_command(&exe, args, listener.address(), share);
            children.push(ClientProcess(cmd.arg("--mark-last").spawn()?));
        }
        // The clients end when served; then the group stops. Ctrl-C kills them and stops it.
        let handle = group.handle();
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        let waiter = std::thread::spawn(move || -> Result<()> {
            let mut result = Ok(());
            for mut c in children {
                loop {
                    if crate::interrupt::requested() {
                        flag.store(true, Ordering::Relaxed);
                        c.stop();
                        break;
                    }
                    match c.0.try_wait() {
                        Ok(Some(status)) => {
                            if !status.success() && result.is_ok() {
                                result = Err(Error::Config(format!("bench client failed: {status}")));
                            }
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                        Err(e) => {
                            result = Err(e.into());
                            break;
                        }
                    }
                }
            }
            let _ = handle.stop();
            result
        });
        let ran = group.run();
        let waited = waiter.join().map_err(|_| Error::Config("the client waiter panicked".into()))?;
        ran?;
        let counted: usize = group.handlers().map(|h| h.count).sum();
        let first = group.handlers().filter_map(|h| h.first).min();
        let last = group.handlers().filter_map(|h| h.last).max();
        let spread: Vec<usize> = group.handlers().map(|h| h.count).collect();
        log::info!("bench: per reactor {spread:?}");
        let (Some(first), Some(last)) = (first, last) else {
            eprintln!("bench: nothing measured");
            return waited;
        };
        let secs = (last - first).as_secs_f64().max(1e-9);
        let per = (counted.saturating_sub(1)) as f64 / secs;
        let (value, unit) = match args.workload {
            Workload::W1 => (per, "msg/s"),
            Workload::W3 => (per * BULK as f64 / 1e9, "GB/s"),
            _ => (per, "conn/s"),
        };
        if interrupted.load(Ordering::Relaxed) {
            emit_partial(&imp, args.workload.name(), family_name(args.family), value, unit, counted);
            return Ok(());
        }
        waited?;
        emit(&imp, args.workload.name(), family_name(args.family), value, unit, counted);
        Ok(())
    }
}
