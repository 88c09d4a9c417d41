//! The memory budget across connections (issue 18 item 7): many peers each sending most of a
//! large message cost at most the budget plus a stated slack, not N × the message; a small
//! ping-pong client is served meanwhile; attackers that finish their messages are served in turn
//! (no deadlock); a peer that never finishes is closed at the partial-message deadline even while
//! the budget holds it paused; a send beyond the budget is refused.
//!
//! Attackers authenticate with a real handshake, then write raw frames from one shared 1 MiB
//! buffer (the test process holds the server, so its RSS is the server's plus a few MiB). Every
//! wait is bounded. The tests that measure RSS run one at a time (`SERIAL`).
#![cfg(unix)]

mod common;

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::servers::split_unix;
use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError};
use mpconn::{Address, Client, Family};

const KEY: &str = "budget key";
const MIB: usize = 1 << 20;
/// Attackers, the size each declares, and how much of it each sends before stopping.
const ATTACKERS: usize = 16;
const DECLARED: usize = 127 * MIB;
const SENT_FIRST: usize = 120 * MIB;
/// The budget under test.
const BUDGET: usize = 256 * MIB;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Samples this process's RSS every 20 ms until dropped; `peak()` is the highest sample.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    t: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let (s, p) = (stop.clone(), peak.clone());
        let t = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler { stop, peak, t: Some(t) }
    }

    fn peak(&self) -> u64 {
        self.peak.fetch_max(rss_kib(), Ordering::Relaxed).max(rss_kib())
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

/// One attacker: sends the header of a `declared`-byte message, then body bytes up to
/// `first`, then (once `go_on` is set) the rest, from a shared zero buffer, never blocking for
/// more than 100 ms at a time; gives up at `until`. Returns the body bytes it wrote.
fn attacker(
    mut s: UnixStream,
    declared: usize,
    first: usize,
    go_on: Arc<AtomicBool>,
    finish: bool,
    until: Instant,
    chunk: Arc<Vec<u8>>,
) -> usize {
    s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    s.write_all(&(declared as u32).to_be_bytes()).unwrap();
    let mut sent = 0usize;
    while Instant::now() < until {
        let target = if finish && go_on.load(Ordering::Relaxed) { declared } else { first };
        if sent >= target {
            if sent >= declared {
                break;
            }
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = chunk.len().min(target - sent);
        match s.write(&chunk[..n]) {
            Ok(k) => sent += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break, // closed by the server
        }
    }
    // Keep the socket open until the deadline unless it finished (a never-finishing peer stays).
    if !finish {
        while Instant::now() < until && s.write(&[]).is_ok() {
            thread::sleep(Duration::from_millis(50));
        }
    }
    sent
}

/// A good client: 4-byte pings, each answered; returns the round-trip times.
fn pinger(address: Address, stop: Arc<AtomicBool>, until: Instant) -> Vec<Duration> {
    let mut c = Client::new(address).authkey(KEY).connect().expect("good client connects");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rtts = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let t = Instant::now();
        if c.send_bytes(b"ping").is_err() {
            break;
        }
        match c.recv_bytes() {
            Ok(m) if m == b"ping" => rtts.push(t.elapsed()),
            _ => break,
        }
        thread::sleep(Duration::from_millis(20));
    }
    rtts
}

fn summary(mut rtts: Vec<Duration>) -> String {
    if rtts.is_empty() {
        return "no replies".into();
    }
    rtts.sort();
    format!(
        "{} replies, p50 {:?}, p99 {:?}, max {:?}",
        rtts.len(),
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100],
        rtts[rtts.len() - 1]
    )
}

/// Echoes small messages, counts large ones, reports closes.
struct Server {
    large: Arc<AtomicUsize>,
    closes: mpsc::Sender<(ConnId, CloseReason, Instant)>,
    opens: Arc<Mutex<Vec<ConnId>>>,
}

impl Handler for Server {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.opens.lock().unwrap().push(conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if message.len() > MIB {
            self.large.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = ctx.send(conn, message);
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let _ = self.closes.send((conn, reason, Instant::now()));
    }
}

struct ReactorServer {
    address: Address,
    handle: mpconn::reactor::Handle,
    large: Arc<AtomicUsize>,
    closes: mpsc::Receiver<(ConnId, CloseReason, Instant)>,
    opens: Arc<Mutex<Vec<ConnId>>>,
    t: thread::JoinHandle<(usize, u64)>,
}

fn reactor_server(budget: Option<usize>, partial: Duration) -> ReactorServer {
    let large = Arc::new(AtomicUsize::new(0));
    let (tx, closes) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let l2 = large.clone();
    let opens = Arc::new(Mutex::new(Vec::new()));
    let o2 = opens.clone();
    let t = thread::spawn(move || {
        let config = ReactorConfig::default().memory_budget(budget);
        let mut reactor = Reactor::with_config(Server { large: l2, closes: tx, opens: o2 }, config).unwrap();
        let options = ListenOptions::new()
            .authkey(KEY)
            .connection(ConnectionOptions::new().authkey(KEY).partial_message_timeout(Some(partial)));
        let address = mpconn::arbitrary_address(Family::Unix).unwrap();
        let l = reactor.listen(address, options).unwrap();
        ready_tx.send((reactor.listener_address(l).unwrap().clone(), reactor.handle())).unwrap();
        let mut peak = 0;
        while reactor.run_once(Some(Duration::from_millis(50))).unwrap() == mpconn::reactor::Turn::Running {
            peak = peak.max(reactor.budget_usage().0);
        }
        (peak, reactor.budget_usage().1)
    });
    let (address, handle) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    ReactorServer { address, handle, large, closes, opens, t }
}

/// The figures of one flood: attackers send most of their messages, a good client pings;
/// then (phase 2) the attackers finish.
struct Flood {
    baseline_kib: u64,
    peak_phase1_kib: u64,
    peak_kib: u64,
    sent_first: Vec<usize>,
    rtts: Vec<Duration>,
}

impl Flood {
    /// Prints what the flood did to `face`'s server (RSS growth while unfinished and overall, the
    /// budget's own count, completed messages, the good client's round trips); returns the
    /// overall RSS growth in KiB.
    fn report(&self, face: &str, done: usize, peak_counted: usize, refusals: u64) -> u64 {
        let grew1 = self.peak_phase1_kib.saturating_sub(self.baseline_kib);
        let grew = self.peak_kib.saturating_sub(self.baseline_kib);
        println!(
            "{face}, budget {} MiB, {ATTACKERS} x {} MiB of {} MiB: RSS {} MiB -> peak +{} MiB while unfinished, +{} MiB overall \
             (budget's own count peaked at {} MiB, {refusals} reads refused); {done}/{ATTACKERS} messages completed; \
             MiB sent per attacker: {:?}; good client: {}",
            BUDGET / MIB,
            SENT_FIRST / MIB,
            DECLARED / MIB,
            self.baseline_kib / 1024,
            grew1 / 1024,
            grew / 1024,
            peak_counted / MIB,
            self.sent_first.iter().map(|s| s / MIB).collect::<Vec<_>>(),
            summary(self.rtts.clone()),
        );
        grew
    }
}

fn flood(address: &Address, phase1: Duration, limit: Duration, large_done: impl Fn() -> usize) -> Flood {
    let chunk = Arc::new(vec![0u8; MIB]);
    let go_on = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + limit;
    let path = address.to_string();
    // Handshakes first (real ones), then the raw frames.
    let socks: Vec<UnixStream> = (0..ATTACKERS).map(|_| split_unix(&path, Some(KEY)).0).collect();
    let baseline_kib = rss_kib();
    let sampler = RssSampler::start();
    let good = {
        let (a, s) = (address.clone(), stop.clone());
        thread::spawn(move || pinger(a, s, until))
    };
    let attackers: Vec<_> = socks
        .into_iter()
        .map(|s| {
            let (g, c) = (go_on.clone(), chunk.clone());
            thread::spawn(move || attacker(s, DECLARED, SENT_FIRST, g, true, until, c))
        })
        .collect();
    thread::sleep(phase1);
    let peak_phase1_kib = sampler.peak();
    go_on.store(true, Ordering::Relaxed);
    while large_done() < ATTACKERS && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let sent_first: Vec<usize> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    let rtts = good.join().unwrap();
    let peak_kib = sampler.peak();
    Flood { baseline_kib, peak_phase1_kib, peak_kib, sent_first, rtts }
}

/// The slack stated in SECURITY.md above the budget: the leader's message (one maximum-size
/// message), 1 MiB per connection, and 64 MiB for everything else in this test process.
fn slack_kib() -> u64 {
    ((128 * MIB + ATTACKERS * MIB + 64 * MIB) / 1024) as u64
}

/// 16 attackers × 120 MiB of a declared 127 MiB message against a reactor with a 256 MiB
/// budget: RSS stays under budget + slack (without the budget it was 16 × 120 MiB = 1.9 GiB),
/// the good client is served throughout, and once the attackers finish, all 16 messages are
/// delivered (no deadlock).
#[test]
fn reactor_flood_of_unfinished_messages_stays_within_the_budget() {
    let _serial = serial();
    let server = reactor_server(Some(BUDGET), Duration::from_secs(120));
    let large = server.large.clone();
    let f = flood(&server.address, Duration::from_secs(6), Duration::from_secs(150), || large.load(Ordering::Relaxed));
    let done = server.large.load(Ordering::Relaxed);
    server.handle.stop().unwrap();
    let (peak_counted, refusals) = server.t.join().unwrap();
    let grew = f.report("reactor", done, peak_counted, refusals);
    assert!(grew <= (BUDGET / 1024) as u64 + slack_kib(), "RSS grew {} MiB", grew / 1024);
    assert!(f.rtts.len() >= 10, "the good client got {} replies", f.rtts.len());
    assert_eq!(done, ATTACKERS, "every attacker that finished its message was served");
    assert!(refusals > 0, "the budget never refused a read: the test did not reach it");
}

/// Peers that never finish their messages are closed at the partial-message deadline, paused
/// by the budget or not: paused time counts against the peer (otherwise N such peers would hold
/// the budget for N deadlines, one after the other).
#[test]
fn reactor_peers_that_never_finish_are_closed_at_the_partial_message_deadline() {
    let _serial = serial();
    let partial = Duration::from_secs(3);
    let server = reactor_server(Some(64 * MIB), partial);
    let chunk = Arc::new(vec![0u8; MIB]);
    let path = server.address.to_string();
    let until = Instant::now() + Duration::from_secs(40);
    let start = Instant::now();
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let s = split_unix(&path, Some(KEY)).0;
            let c = chunk.clone();
            // 40 MiB of 100 MiB each: more than the 64 MiB budget together; never finished.
            thread::spawn(move || attacker(s, 100 * MIB, 40 * MIB, Arc::new(AtomicBool::new(false)), false, until, c))
        })
        .collect();
    let mut closed = Vec::new();
    while closed.len() < 4 {
        match server.closes.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok((_, reason, at)) => closed.push((reason, at - start)),
            Err(_) => break,
        }
    }
    // A good client still works afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let a = server.address.clone();
    let good = thread::spawn(move || pinger(a, s2, Instant::now() + Duration::from_secs(10)));
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let rtts = good.join().unwrap();
    server.handle.stop().unwrap();
    let (_, refusals) = server.t.join().unwrap();
    let sent: Vec<usize> = attackers.into_iter().map(|t| t.join().unwrap() / MIB).collect();
    println!(
        "never-finishing peers (MiB sent {sent:?}, {refusals} reads refused): closed {closed:?}; good client {}",
        summary(rtts.clone())
    );
    assert_eq!(closed.len(), 4, "every never-finishing peer is closed: {closed:?}");
    for (reason, after) in &closed {
        assert!(matches!(reason, CloseReason::PartialMessageTimeout), "{reason:?}");
        // Each at its own deadline (3 s after its message began), not one deadline after another.
        assert!(*after < partial * 3 + Duration::from_secs(10), "closed after {after:?}");
    }
    assert!(refusals > 0, "the budget never paused anyone: the test did not reach it");
    assert!(!rtts.is_empty(), "the good client got no reply");
}

/// A leader whose reading the user pauses passes the lead on: three peers over a 64 MiB budget
/// (A and B sending most of 60 MiB messages, then C, arriving last and so never the leader,
/// sending a whole 20 MiB one); the user pauses A and B. C's message must be delivered; if the
/// lead stayed with a paused connection, C would wait until its partial-message deadline.
#[test]
fn reactor_leader_paused_by_the_user_passes_the_lead() {
    let _serial = serial();
    let server = reactor_server(Some(64 * MIB), Duration::from_secs(120));
    let chunk = Arc::new(vec![0u8; MIB]);
    let path = server.address.to_string();
    let until = Instant::now() + Duration::from_secs(40);
    let mut attackers = Vec::new();
    for (declared, first) in [(60 * MIB, 40 * MIB), (60 * MIB, 30 * MIB), (20 * MIB, 20 * MIB)] {
        let s = split_unix(&path, Some(KEY)).0;
        let c = chunk.clone();
        let finish = declared == first;
        attackers.push(thread::spawn(move || {
            attacker(s, declared, first, Arc::new(AtomicBool::new(false)), finish, until, c)
        }));
        thread::sleep(Duration::from_millis(1500));
    }
    let ids = server.opens.lock().unwrap().clone();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let before = server.large.load(Ordering::Relaxed);
    server.handle.pause_reading(ids[0]).unwrap();
    server.handle.pause_reading(ids[1]).unwrap();
    let t = Instant::now();
    while server.large.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(50));
    }
    let delivered = server.large.load(Ordering::Relaxed);
    let waited = t.elapsed();
    server.handle.stop().unwrap();
    let (_, refusals) = server.t.join().unwrap();
    let sent: Vec<usize> = attackers.into_iter().map(|t| t.join().unwrap() / MIB).collect();
    println!(
        "paused leader: C's message delivered {delivered} ({before} before the pauses) {waited:?} after them; MiB sent {sent:?}; {refusals} reads refused"
    );
    assert!(refusals > 0, "the budget never paused anyone: the test did not reach it");
    assert_eq!(delivered, 1, "C's message was not delivered while the user paused the others");
}

/// Output counts too: a handler flooding a peer that never reads is refused with
/// `SendError::OverBudget` once the budget is spent (its high-water mark is far above), and the
/// queue stops there.
#[test]
fn reactor_send_beyond_the_budget_is_refused() {
    let _serial = serial();
    struct Flooder {
        out: mpsc::Sender<(usize, Option<SendError>)>,
    }
    impl Handler for Flooder {
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &[u8]) {
            let mut queued = 0;
            let mut refused = None;
            for _ in 0..64 {
                match ctx.send_owned(conn, vec![7u8; 4 * MIB]) {
                    Ok(()) => queued += 4 * MIB,
                    Err((e, _)) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            let _ = self.out.send((queued, refused));
        }
    }
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let config = ReactorConfig::default().memory_budget(Some(32 * MIB));
        let mut reactor = Reactor::with_config(Flooder { out: tx }, config).unwrap();
        let options = ListenOptions::new()
            .authkey(KEY)
            .connection(ConnectionOptions::new().authkey(KEY).high_water_mark(1 << 30));
        let l = reactor.listen(mpconn::arbitrary_address(Family::Unix).unwrap(), options).unwrap();
        ready_tx.send((reactor.listener_address(l).unwrap().clone(), reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (address, handle) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let mut c = Client::new(address).authkey(KEY).connect().unwrap();
    c.send_bytes(b"flood me").unwrap();
    let (queued, refused) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    println!("queued {} MiB to a peer that does not read, then: {refused:?}", queued / MIB);
    handle.stop().unwrap();
    t.join().unwrap();
    drop(c);
    assert!(matches!(refused, Some(SendError::OverBudget { .. })), "{refused:?}");
    assert!(queued <= 32 * MIB + 4 * MIB, "queued {} MiB beyond a 32 MiB budget", queued / MIB);
}

/// Peers that send small requests forever and never read the large replies: once the budget
/// refuses a peer's reply, that peer stops being read (as at the high-water mark), so the handler
/// does not build reply after refused reply for it while a good client waits. Counted, not
/// timed: the refusals stay at about one per peer (they were tens of thousands, and the good
/// client's round trip took 1-1.7 s, before), and the good client is answered throughout.
#[test]
fn reactor_peers_whose_replies_the_budget_refuses_stop_being_read() {
    let _serial = serial();
    const HOGS: usize = 8;
    const REPLY: usize = 256 << 10;
    struct Replier {
        refused: Arc<AtomicU64>,
    }
    impl Handler for Replier {
        fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
            let reply = if message == b"ping" { b"pong".to_vec() } else { vec![5u8; REPLY] };
            if let Err(SendError::OverBudget { .. }) = ctx.send(conn, &reply) {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let refused = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel();
    let counter = refused.clone();
    let t = thread::spawn(move || {
        let config = ReactorConfig::default().memory_budget(Some(8 * MIB));
        let mut reactor = Reactor::with_config(Replier { refused: counter }, config).unwrap();
        let options = ListenOptions::new()
            .authkey(KEY)
            .connection(ConnectionOptions::new().authkey(KEY).high_water_mark(64 * MIB));
        let l = reactor.listen(mpconn::arbitrary_address(Family::Unix).unwrap(), options).unwrap();
        ready_tx.send((reactor.listener_address(l).unwrap().clone(), reactor.handle())).unwrap();
        reactor.run().unwrap();
    });
    let (address, handle) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(60);
    // The hogs: authenticated, then 9-byte requests written as fast as the socket takes them.
    let hogs: Vec<_> = (0..HOGS)
        .map(|_| {
            let (address, stop) = (address.clone(), stop.clone());
            thread::spawn(move || {
                let (mut s, _reader) = split_unix(&address.to_string(), Some(KEY));
                s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
                let request: Vec<u8> = [&5u32.to_be_bytes()[..], b"hello"].concat().repeat(1000);
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    match s.write(&request) {
                        Ok(n) => sent += n,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                sent
            })
        })
        .collect();
    // The good client, for 3 s once the hogs have filled the budget.
    thread::sleep(Duration::from_secs(1));
    let mut good = Client::new(address).authkey(KEY).connect().unwrap();
    good.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rtts = Vec::new();
    let measure_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < measure_until {
        let t0 = Instant::now();
        good.send_bytes(b"ping").unwrap();
        assert_eq!(good.recv_bytes().unwrap(), b"pong");
        rtts.push(t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let sent: usize = hogs.into_iter().map(|h| h.join().unwrap()).sum();
    handle.stop().unwrap();
    t.join().unwrap();
    let refused = refused.load(Ordering::Relaxed);
    println!(
        "{HOGS} hogs wrote {} KiB of requests; {refused} replies refused by the budget; good client: {}",
        sent / 1024,
        summary(rtts)
    );
    assert!(refused <= 4 * HOGS as u64, "{refused} refusals: the hogs kept being read");
}

/// The tokio face: 16 attackers against one Listener's connections (each in its own task, as
/// a server would run them) with a 256 MiB budget: RSS within budget + slack, the good client
/// served, every attacker's message delivered once they finish.
#[cfg(feature = "tokio")]
#[test]
fn tokio_listener_connections_share_the_budget() {
    let _serial = serial();
    let large = Arc::new(AtomicUsize::new(0));
    let (addr_tx, addr_rx) = mpsc::channel();
    let usage = Arc::new(Mutex::new((0usize, 0u64)));
    let quit = Arc::new(AtomicBool::new(false));
    let (l2, u2, q2) = (large.clone(), usage.clone(), quit.clone());
    let server = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut listener = mpconn::tokio::Listener::builder()
                .family(Family::Unix)
                .authkey(KEY)
                .memory_budget(Some(BUDGET))
                .bind()
                .unwrap();
            addr_tx.send(listener.address().clone()).unwrap();
            while !q2.load(Ordering::Relaxed) {
                let inc = tokio::select! {
                    inc = listener.accept_incoming() => inc,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        let now = listener.budget_usage();
                        let mut u = u2.lock().unwrap();
                        *u = (u.0.max(now.0), now.1);
                        continue;
                    }
                };
                let Ok(inc) = inc else { continue };
                let large = l2.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = inc.handshake().await else { return };
                    while let Ok(m) = conn.recv_bytes().await {
                        if m.len() > MIB {
                            large.fetch_add(1, Ordering::Relaxed);
                        } else if conn.send_bytes(&m).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    let address = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let l3 = large.clone();
    let f = flood(&address, Duration::from_secs(6), Duration::from_secs(150), || l3.load(Ordering::Relaxed));
    let done = large.load(Ordering::Relaxed);
    quit.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let (peak_counted, refusals) = *usage.lock().unwrap();
    let grew = f.report("tokio", done, peak_counted, refusals);
    // recv_bytes hands a whole message to the task (127 MiB), which drops it: one more message
    // of slack than the reactor, whose handler sees a slice.
    assert!(grew <= (BUDGET / 1024) as u64 + slack_kib() + (128 * MIB / 1024) as u64, "RSS grew {} MiB", grew / 1024);
    assert!(f.rtts.len() >= 10, "the good client got {} replies", f.rtts.len());
    assert_eq!(done, ATTACKERS, "every attacker that finished its message was served");
    assert!(refusals > 0, "the budget never refused a read: the test did not reach it");
}
