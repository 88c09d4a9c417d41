//! The standing adversary harness: one echo server on each face of the library, a good client
//! that measures its round trips while an attack runs, and the process's RSS sampled meanwhile.
//!
//! * [`Face::Blocking`]: a `Listener` on a thread (each `accept` runs the handshake), a thread
//!   per accepted connection; the connection gets a read and a write timeout (`stall`), as an
//!   application guarding itself would set, since the blocking face has no partial-message or
//!   write-stall deadline of its own.
//! * [`Face::Reactor`]: a `Reactor` on a thread, `partial_message_timeout` and
//!   `write_stall_timeout` set to `stall`, a 1 MiB high-water mark.
//! * [`Face::Tokio`]: a current-thread runtime on a thread, `accept_incoming` with each handshake
//!   in a task of its own, each receive and send wrapped in `tokio::time::timeout(stall)`
//!   (receiving is cancel-safe), for the same reason as the blocking face.
//! * [`Face::Sharded`]: two reactors of a `Sharded` group on threads, with the reactor's settings
//!   (on Linux one `SO_REUSEPORT` socket per shard, so the kernel spreads attackers and the good
//!   client over both): the budgets and deadlines hold per shard and in total.
//!
//! Every end of a connection other than the good client's (a failed handshake, a timeout, a
//! peer leaving) arrives on [`Server::ended`] as its reason's text. Server and attackers share the
//! test process, so the RSS figure is the process's (attackers hold little: raw sockets). Runs are
//! serialised ([`serial`]) so one run's memory does not show in another's figure. Loopback only;
//! every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use mpconn::CloseReason;
use mpconn::internal::handshake::{Handshake, HandshakeConfig, Nonce};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor, Sharded, ShardedHandle};
use mpconn::{Address, AuthKey, Client, DigestPolicy};

/// The key of every harness server.
pub const KEY: &str = "adversary-suite-key";

/// The longest the harness waits for one thing.
pub const WAIT: Duration = Duration::from_secs(30);

/// One face of the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Blocking,
    Reactor,
    Tokio,
    Sharded,
}

pub const FACES: [Face; 4] = [Face::Blocking, Face::Reactor, Face::Tokio, Face::Sharded];

/// Shards of [`Face::Sharded`].
pub const SHARDS: usize = 2;

impl Face {
    pub fn name(self) -> &'static str {
        match self {
            Face::Blocking => "blocking",
            Face::Reactor => "reactor",
            Face::Tokio => "tokio",
            Face::Sharded => "sharded",
        }
    }
}

/// Runs that measure memory or latency run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub key: String,
    pub policy: DigestPolicy,
    pub handshake_timeout: Duration,
    /// Partial-message and write-stall deadline (reactor); read and write timeouts (blocking,
    /// tokio).
    pub stall: Duration,
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            key: KEY.into(),
            policy: DigestPolicy::CpythonCompatible,
            handshake_timeout: Duration::from_secs(1),
            stall: Duration::from_secs(1),
            max_message_size: 1 << 20,
        }
    }
}

/// What the server reports.
#[derive(Debug)]
pub enum Ev {
    Opened,
    /// A connection ended (or its handshake failed): the reason's text.
    Ended(String),
}

/// A live echo server on one face.
pub struct Server {
    pub face: Face,
    pub addr: SocketAddr,
    pub address: Address,
    events: mpsc::Receiver<Ev>,
    stop: Arc<AtomicBool>,
    reactor: Stopper,
    thread: Option<thread::JoinHandle<()>>,
    /// `Opened` events seen while waiting for ends.
    pub opened: std::cell::Cell<usize>,
}

impl Server {
    pub fn start(face: Face, config: &Config) -> Server {
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let config = config.clone();
        let flag = stop.clone();
        let thread = thread::spawn(move || match face {
            Face::Blocking => blocking_server(config, tx, flag, ready_tx),
            Face::Reactor => reactor_server(config, tx, ready_tx),
            Face::Tokio => tokio_server(config, tx, flag, ready_tx),
            Face::Sharded => sharded_server(config, tx, ready_tx),
        });
        let (address, reactor): (Address, Stopper) = ready_rx.recv_timeout(WAIT).expect("server ready");
        let addr = address.resolve().unwrap()[0];
        Server { face, addr, address, events, stop, reactor, thread: Some(thread), opened: Default::default() }
    }

    /// The reasons of the next `n` connection ends, waiting at most `within` in all.
    pub fn ended(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ev::Ended(r)) => out.push(r),
                Ok(Ev::Opened) => self.opened.set(self.opened.get() + 1),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits (at most `within`) until one more connection opened; false if none did.
    pub fn wait_opened(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let before = self.opened.get();
        while self.opened.get() == before {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ev::Opened) => self.opened.set(self.opened.get() + 1),
                Ok(Ev::Ended(r)) => panic!("a connection ended while waiting for an open: {r}"),
                Err(_) => return false,
            }
        }
        true
    }

    /// Every event already reported (no wait): ends, counting opens.
    pub fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            match e {
                Ev::Ended(r) => out.push(r),
                Ev::Opened => self.opened.set(self.opened.get() + 1),
            }
        }
        out
    }

    /// A raw TCP connection with a read timeout.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// A raw connection that completed the real handshake with `key` (through the sans-IO state
    /// machine), ready for framed messages.
    pub fn authenticated(&self, key: &str) -> TcpStream {
        let mut s = self.raw();
        let mut hs = Handshake::client(&HandshakeConfig::new(AuthKey::from(key)), Nonce::random().unwrap());
        for _ in 0..8 {
            while let Some(m) = hs.poll_transmit() {
                write_frame(&mut s, &m).unwrap();
            }
            if hs.is_complete() {
                return s;
            }
            let m = read_frame(&mut s).unwrap();
            hs.handle_message(&m).unwrap();
        }
        panic!("the handshake did not complete");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        match std::mem::replace(&mut self.reactor, Stopper::Flag) {
            Stopper::Reactor(h) => {
                let _ = h.stop();
            }
            Stopper::Sharded(h) => {
                let _ = h.stop();
            }
            Stopper::Flag => {}
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a server is stopped besides its flag.
enum Stopper {
    Flag,
    Reactor(Handle),
    Sharded(ShardedHandle),
}

type Ready = mpsc::Sender<(Address, Stopper)>;

fn blocking_server(config: Config, tx: mpsc::Sender<Ev>, stop: Arc<AtomicBool>, ready: Ready) {
    let mut listener = mpconn::Listener::builder()
        .address("127.0.0.1:0")
        .authkey(config.key.as_str())
        .digest_policy(config.policy)
        .handshake_timeout(Some(config.handshake_timeout))
        .max_message_size(config.max_message_size)
        .bind()
        .unwrap();
    ready.send((listener.address().clone(), Stopper::Flag)).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept_within(Some(Duration::from_millis(50))) {
            Ok(mut conn) => {
                let _ = tx.send(Ev::Opened);
                let (tx, stall) = (tx.clone(), config.stall);
                thread::spawn(move || {
                    conn.set_read_timeout(Some(stall)).unwrap();
                    conn.set_write_timeout(Some(stall)).unwrap();
                    let reason = loop {
                        match conn.recv_bytes().and_then(|m| conn.send_bytes(&m)) {
                            Ok(()) => {}
                            Err(e) => break e.to_string(),
                        }
                    };
                    let _ = tx.send(Ev::Ended(reason));
                });
            }
            Err(mpconn::Error::Timeout(mpconn::Timeout::Accept)) => {}
            Err(e) => {
                let _ = tx.send(Ev::Ended(e.to_string()));
            }
        }
    }
}

struct Echo {
    tx: mpsc::Sender<Ev>,
}

impl Handler for Echo {
    fn on_open(&mut self, _: &mut Context<'_>, _: ConnId, _: &Address) {
        let _ = self.tx.send(Ev::Opened);
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if ctx.send(conn, message).is_err() {
            ctx.close(conn);
        }
    }
    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, reason: CloseReason) {
        let _ = self.tx.send(Ev::Ended(reason.to_string()));
    }
}

/// The reactor's listen options (every reactor shard's too).
fn reactor_options(config: &Config) -> ListenOptions {
    ListenOptions::new().connection(
        ConnectionOptions::new()
            .authkey(config.key.as_str())
            .digest_policy(config.policy)
            .max_message_size(config.max_message_size)
            .high_water_mark(1 << 20)
            .handshake_timeout(Some(config.handshake_timeout))
            .partial_message_timeout(Some(config.stall))
            .write_stall_timeout(Some(config.stall)),
    )
}

fn reactor_server(config: Config, tx: mpsc::Sender<Ev>, ready: Ready) {
    let mut reactor = Reactor::new(Echo { tx }).unwrap();
    let l = reactor.listen("127.0.0.1:0", reactor_options(&config)).unwrap();
    ready.send((reactor.listener_address(l).unwrap().clone(), Stopper::Reactor(reactor.handle()))).unwrap();
    reactor.run().unwrap();
}

fn sharded_server(config: Config, tx: mpsc::Sender<Ev>, ready: Ready) {
    let mut group = Sharded::new(SHARDS, ReactorConfig::default(), |_| Echo { tx: tx.clone() }).unwrap();
    let l = group.listen("127.0.0.1:0", reactor_options(&config)).unwrap();
    ready.send((l.address().clone(), Stopper::Sharded(group.handle()))).unwrap();
    group.run().unwrap();
}

fn tokio_server(config: Config, tx: mpsc::Sender<Ev>, stop: Arc<AtomicBool>, ready: Ready) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut listener = mpconn::tokio::Listener::builder()
            .address("127.0.0.1:0")
            .authkey(config.key.as_str())
            .digest_policy(config.policy)
            .handshake_timeout(Some(config.handshake_timeout))
            .max_message_size(config.max_message_size)
            .bind()
            .unwrap();
        ready.send((listener.address().clone(), Stopper::Flag)).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let incoming = match tokio::time::timeout(Duration::from_millis(50), listener.accept_incoming()).await {
                Err(_) => continue,
                Ok(Err(e)) => {
                    let _ = tx.send(Ev::Ended(e.to_string()));
                    continue;
                }
                Ok(Ok(i)) => i,
            };
            let (tx, stall) = (tx.clone(), config.stall);
            tokio::spawn(async move {
                let mut conn = match incoming.handshake().await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Ev::Ended(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ev::Opened);
                let reason = loop {
                    let m = match tokio::time::timeout(stall, conn.recv_bytes()).await {
                        Err(_) => break format!("no complete message within {stall:?} (receive timed out)"),
                        Ok(Err(e)) => break e.to_string(),
                        Ok(Ok(m)) => m,
                    };
                    match tokio::time::timeout(stall, conn.send_bytes(&m)).await {
                        Err(_) => break format!("the peer took no output within {stall:?} (send timed out)"),
                        Ok(Err(e)) => break e.to_string(),
                        Ok(Ok(())) => {}
                    }
                };
                let _ = tx.send(Ev::Ended(reason));
            });
        }
    });
}

pub use super::frames::{read_frame, write_frame};

/// Reads until end of file (or a reset): true if the peer closed within `within`.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        s.set_read_timeout(Some(end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// This process's resident set, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What one attack run measured.
#[derive(Debug)]
pub struct Report {
    pub attack: String,
    pub face: Face,
    /// Round trips of the good client during the attack.
    pub good_trips: usize,
    pub good_p50: Duration,
    pub good_max: Duration,
    /// Errors of the good client (must stay empty).
    pub good_failures: Vec<String>,
    /// A fresh good client's connect + handshake, started 200 ms into the attack.
    pub fresh_connect: Result<Duration, String>,
    pub rss_base_kib: u64,
    pub rss_peak_kib: u64,
    pub attack_time: Duration,
}

impl Report {
    /// The generous bound every attack must meet: the good client was served throughout, with
    /// no round trip over `max`, and a new client got in.
    pub fn assert_good_client_served(&self, max: Duration) {
        assert!(
            self.good_failures.is_empty(),
            "{} on {}: good client failed: {:?}",
            self.attack,
            self.face.name(),
            self.good_failures
        );
        assert!(
            self.good_trips >= 5,
            "{} on {}: good client made only {} round trips",
            self.attack,
            self.face.name(),
            self.good_trips
        );
        assert!(
            self.good_max <= max,
            "{} on {}: a good round trip took {:?} (bound {max:?})",
            self.attack,
            self.face.name(),
            self.good_max
        );
        assert!(
            self.fresh_connect.is_ok(),
            "{} on {}: a new client could not connect: {:?}",
            self.attack,
            self.face.name(),
            self.fresh_connect
        );
    }
}

/// Runs `attack` against `server` while a good client (connected before the attack) sends an
/// 8-byte message every 10 ms and times each echo, a second good client connects 200 ms into
/// the attack, and RSS is sampled every 10 ms. Prints one line:
/// `attack=X face=F good_n=.. good_p50=.. good_max=.. fresh_connect=.. rss_base=.. rss_peak=.. attack_time=..`.
pub fn run<F: FnOnce(&Server)>(name: &str, server: &Server, attack: F) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let mut good = Client::new(&server.address).authkey(KEY).connect().expect("good client connects");
    good.set_read_timeout(Some(WAIT)).unwrap();
    // Its open event is not an attacker's.
    assert!(server.wait_opened(WAIT), "the server reported the good client's open");
    let rss_base = rss_kib();
    let peak = Arc::new(AtomicU64::new(rss_base));
    let (good_stop, sampler_stop) = (stop.clone(), stop.clone());
    let good_thread = thread::spawn(move || {
        let (mut lat, mut failures) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while !good_stop.load(Ordering::Relaxed) && i < 100_000 {
            let m = i.to_le_bytes();
            let t = Instant::now();
            match good.send_bytes(&m).and_then(|()| good.recv_bytes()) {
                Ok(back) if back == m => lat.push(t.elapsed()),
                other => {
                    failures.push(format!("{other:?}"));
                    break;
                }
            }
            i += 1;
            thread::sleep(Duration::from_millis(10));
        }
        (lat, failures, good)
    });
    let peak2 = peak.clone();
    let sampler = thread::spawn(move || {
        while !sampler_stop.load(Ordering::Relaxed) {
            peak2.fetch_max(rss_kib(), Ordering::Relaxed);
            thread::sleep(Duration::from_millis(10));
        }
    });
    let address = server.address.clone();
    // The fresh client stays connected until the run ends, so its end is not taken for an
    // attacker's.
    let fresh_thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        match Client::new(&address).authkey(KEY).connect() {
            Ok(c) => (Ok(t.elapsed()), Some(c)),
            Err(e) => (Err(e.to_string()), None),
        }
    });
    let started = Instant::now();
    attack(server);
    let attack_time = started.elapsed();
    let (fresh_connect, _fresh) = fresh_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut lat, good_failures, _good) = good_thread.join().unwrap();
    sampler.join().unwrap();
    lat.sort();
    let report = Report {
        attack: name.into(),
        face: server.face,
        good_trips: lat.len(),
        good_p50: lat.get(lat.len() / 2).copied().unwrap_or_default(),
        good_max: lat.last().copied().unwrap_or_default(),
        good_failures,
        fresh_connect,
        rss_base_kib: rss_base,
        rss_peak_kib: peak.load(Ordering::Relaxed).max(rss_kib()),
        attack_time,
    };
    println!(
        "attack={} face={} good_n={} good_p50={:.2}ms good_max={:.2}ms fresh_connect={} rss_base={}KiB rss_peak={}KiB (+{}KiB) attack_time={:.2}s",
        report.attack,
        report.face.name(),
        report.good_trips,
        report.good_p50.as_secs_f64() * 1e3,
        report.good_max.as_secs_f64() * 1e3,
        match &report.fresh_connect {
            Ok(d) => format!("{:.1}ms", d.as_secs_f64() * 1e3),
            Err(e) => format!("FAILED({e})"),
        },
        report.rss_base_kib,
        report.rss_peak_kib,
        report.rss_peak_kib.saturating_sub(report.rss_base_kib),
        report.attack_time.as_secs_f64(),
    );
    report
}
