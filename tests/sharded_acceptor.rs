//! The acceptor thread of a `Sharded` group (`listen_with(.., Balance::Acceptor)`, the only
//! balance off Linux) under chaos, over TCP and Unix sockets: rounds of clients that reset at
//! once, use a wrong key, send garbage, never speak (the handshake deadline closes them), drop,
//! reset mid-handshake, or are good; after each round no shard went over its limit and the whole
//! capacity is there again (no slot leaked), and a close on any shard lets a waiting client in.
//! From an outside attack's suite (27 attacks on the acceptor, none failed; BENCHMARKS.md has
//! its figures). Loopback only; every wait bounded.
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::shards::{Echo, connect_to_shard};
use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
use mpconn::reactor::{Balance, Sharded, ShardedHandle};
use mpconn::{Address, Client};

const KEY: &str = "attack-acceptor-key";
const WAIT: Duration = Duration::from_secs(30);

struct Group {
    address: Address,
    handle: ShardedHandle,
    t: thread::JoinHandle<mpconn::Result<()>>,
    _dir: tempfile::TempDir,
}

fn group(shards: usize, tcp: bool, config: ReactorConfig, options: ListenOptions) -> Group {
    let dir = tempfile::tempdir().unwrap();
    let address = if tcp { Address::inet("127.0.0.1", 0) } else { Address::Unix(dir.path().join("acc.sock")) };
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut sharded = Sharded::new(shards, config, |shard| Echo { shard, opens: None })?;
        let l = sharded.listen_with(address, options, Balance::Acceptor)?;
        let _ = ready_tx.send((l.address().clone(), l.balance(), sharded.handle()));
        sharded.run()
    });
    let (address, balance, handle) = ready_rx.recv_timeout(WAIT).expect("the group listens");
    assert_eq!(balance, Balance::Acceptor);
    Group { address, handle, t, _dir: dir }
}

impl Group {
    /// Stops, bounded: panics on a hang; returns how long run() took to return.
    fn stop(self) -> Duration {
        let t0 = Instant::now();
        self.handle.stop().unwrap();
        finish(self.t, &self.address, t0)
    }
}

fn finish(t: thread::JoinHandle<mpconn::Result<()>>, address: &Address, t0: Instant) -> Duration {
    while !t.is_finished() && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(2));
    }
    assert!(t.is_finished(), "run() did not return within 10 s of the stop (hang)");
    let took = t0.elapsed();
    t.join().expect("the group's thread panicked").expect("run returns Ok");
    if let Some(p) = address.unix_path() {
        assert!(!p.exists(), "the Unix socket file {} is left after the stop", p.display());
    }
    took
}

fn per_shard(h: &ShardedHandle) -> Vec<usize> {
    h.stats().shards.iter().map(|s| s.connections).collect()
}

// ---------- raw clients ----------

enum Raw {
    T(TcpStream),
    U(UnixStream),
}

impl Raw {
    fn connect(a: &Address) -> io::Result<Raw> {
        let r = match a.unix_path() {
            Some(p) => Raw::U(UnixStream::connect(p)?),
            None => Raw::T(TcpStream::connect(a.to_string())?),
        };
        r.timeout(Some(Duration::from_secs(10)))?;
        Ok(r)
    }
    fn timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Raw::T(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Raw::U(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
    /// TCP: RST (SO_LINGER 0). Unix: plain close.
    fn reset(self) {
        if let Raw::T(s) = &self {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut n = [0u8; 4];
        self.read_exact(&mut n)?;
        let mut b = vec![0; u32::from_be_bytes(n) as usize];
        self.read_exact(&mut b)?;
        Ok(b)
    }
    /// Reads until EOF/error; true if the server closed (EOF or reset) within the timeout.
    fn closed_within(&mut self, within: Duration) -> bool {
        let _ = self.timeout(Some(within));
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return false,
                Err(_) => return true,
            }
            if t0.elapsed() > within {
                return false;
            }
        }
    }
}

impl Read for Raw {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::T(s) => s.read(b),
            Raw::U(s) => s.read(b),
        }
    }
}
impl Write for Raw {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Raw::T(s) => s.write(b),
            Raw::U(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client of `a` (with `key`) whose connect and handshake wait at most `within`.
fn client(a: &Address, key: Option<&str>, within: Duration) -> Client {
    let c = Client::new(a.clone()).handshake_timeout(Some(within)).connect_timeout(Some(within));
    match key {
        Some(k) => c.authkey(k.to_string()),
        None => c,
    }
}

/// Samples each shard's connection count every millisecond; returns the peaks.
struct Peak {
    stop: Arc<AtomicBool>,
    t: thread::JoinHandle<Vec<usize>>,
}
impl Peak {
    fn start(h: &ShardedHandle) -> Peak {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, h) = (stop.clone(), h.clone());
        let t = thread::spawn(move || {
            let mut peak = vec![0; h.shard_count()];
            while !s.load(Ordering::Relaxed) {
                for (p, n) in peak.iter_mut().zip(per_shard(&h)) {
                    *p = (*p).max(n);
                }
                thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        Peak { stop, t }
    }
    fn end(self) -> Vec<usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.t.join().unwrap()
    }
}

fn pct(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!("n={} p50={:?} p99={:?} max={:?}", v.len(), p(0.5), p(0.99), v[v.len() - 1])
}

/// The whole capacity is there again: no connection left, `shards * max` clients served (each
/// shard exactly max), the next one waits, and is served as soon as one closes on shard `close_on`.
/// Returns the time from the close to the waiting client's answer.
fn full_capacity(g: &Group, shards: usize, max: usize, key: Option<&str>, close_on: usize, what: &str) -> Duration {
    let until = Instant::now() + Duration::from_secs(15);
    while g.handle.stats().total.connections != 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(g.handle.stats().total.connections, 0, "{what}: connections left: {:?}", per_shard(&g.handle));
    let mut held = Vec::new();
    for i in 0..shards * max {
        match connect_to_shard(client(&g.address, key, Duration::from_secs(5)), Duration::from_secs(5)) {
            Ok(x) => held.push(x),
            Err(e) => panic!(
                "{what}: only {i} of {} served ({e}): slot leak? per shard {:?}",
                shards * max,
                per_shard(&g.handle)
            ),
        }
    }
    let mut counts = vec![0; shards];
    for (s, _) in &held {
        counts[*s] += 1;
    }
    assert!(counts.iter().all(|&c| c == max), "{what}: per shard {counts:?}, want {max} each");
    let (tx, rx) = mpsc::channel();
    let (a, k) = (g.address.clone(), key.map(str::to_string));
    let extra = thread::spawn(move || {
        let r = connect_to_shard(client(&a, k.as_deref(), Duration::from_secs(10)), Duration::from_secs(10));
        let _ = tx.send(Instant::now());
        r
    });
    thread::sleep(Duration::from_millis(250));
    assert!(rx.try_recv().is_err(), "{what}: a client over the limit was served: {:?}", per_shard(&g.handle));
    let pos = held.iter().position(|(s, _)| *s == close_on).unwrap();
    let closed_at = Instant::now();
    drop(held.remove(pos));
    let served_at = rx.recv_timeout(Duration::from_secs(12)).expect("the extra client finished");
    let (shard, _c) = extra.join().unwrap().unwrap_or_else(|e| panic!("{what}: waiting client not served: {e}"));
    assert_eq!(shard, close_on, "{what}: the freed room was on shard {close_on}");
    served_at.saturating_duration_since(closed_at)
}

// ---------- chaos rounds: the limit, no slot leaked ----------

/// What one chaotic client does (kind = i % 7). Returns the good client's latency.
fn chaos_client(a: &Address, kind: usize) -> Option<Duration> {
    match kind {
        0 => {
            if let Ok(r) = Raw::connect(a) {
                r.reset();
            }
        }
        1 => {
            let r =
                Client::new(a.clone()).authkey("wrong key").handshake_timeout(Some(Duration::from_secs(8))).connect();
            assert!(r.is_err(), "a wrong key was accepted");
        }
        2 => {
            if let Ok(mut r) = Raw::connect(a) {
                let _ = r.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]);
                let _ = r.closed_within(Duration::from_secs(8));
            }
        }
        3 => {
            // Half-open: never speaks; the handshake deadline must close it.
            if let Ok(mut r) = Raw::connect(a) {
                let _ = r.closed_within(Duration::from_secs(8));
            }
        }
        4 => drop(Raw::connect(a)),
        5 => {
            let t0 = Instant::now();
            let mut c =
                Client::new(a.clone()).authkey(KEY).handshake_timeout(Some(Duration::from_secs(10))).connect().ok()?;
            c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            c.send_bytes(b"good").ok()?;
            assert_eq!(c.recv_bytes().ok()?, b"good");
            return Some(t0.elapsed());
        }
        _ => {
            // Reads the challenge, then resets mid-handshake.
            if let Ok(mut r) = Raw::connect(a) {
                let _ = r.read_frame();
                r.reset();
            }
        }
    }
    None
}

fn chaos_rounds(tcp: bool) {
    const SHARDS: usize = 3;
    const MAX: usize = 4;
    const CLIENTS: usize = 56;
    const ROUNDS: usize = 8;
    let options = ListenOptions::new()
        .authkey(KEY)
        .max_connections(MAX)
        .backlog(512)
        .connection(ConnectionOptions::new().authkey(KEY).handshake_timeout(Some(Duration::from_millis(300))));
    let g = group(SHARDS, tcp, ReactorConfig::default(), options);
    let mut closes = Vec::new();
    let mut good = Vec::new();
    let mut peaks = vec![0; SHARDS];
    for round in 0..ROUNDS {
        let peak = Peak::start(&g.handle);
        let t0 = Instant::now();
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let a = g.address.clone();
                thread::spawn(move || chaos_client(&a, (i + round) % 7))
            })
            .collect();
        for t in threads {
            if let Some(d) = t.join().expect("a chaos client") {
                good.push(d);
            }
        }
        let chaos_took = t0.elapsed();
        let p = peak.end();
        for (a, b) in peaks.iter_mut().zip(&p) {
            *a = (*a).max(*b);
        }
        assert!(p.iter().all(|&x| x <= MAX), "round {round}: a shard over its limit {MAX}: peaks {p:?}");
        let d = full_capacity(&g, SHARDS, MAX, Some(KEY), round % SHARDS, &format!("tcp={tcp} round {round}"));
        println!("tcp={tcp} round {round}: chaos {chaos_took:?}, peaks {p:?}, close->served {d:?}");
        closes.push(d);
    }
    let stop = g.stop();
    println!(
        "chaos tcp={tcp}: {ROUNDS} rounds x {CLIENTS} clients, {SHARDS}x{MAX}: peak per shard {peaks:?}; close->waiting served {}; good clients {}; stop {stop:?}",
        pct(&mut closes),
        pct(&mut good)
    );
}

#[test]
fn chaos_rounds_leave_no_slot_leaked_tcp() {
    chaos_rounds(true);
}

#[test]
fn chaos_rounds_leave_no_slot_leaked_unix() {
    chaos_rounds(false);
}
