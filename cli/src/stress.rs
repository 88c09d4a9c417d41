//! `mpconn stress`: many concurrent authenticated clients on one reactor, each message carrying a
//! sequence number, a timestamp and a checksum; every echo is verified. Against an external
//! server, or by default an embedded one (this program, `listen --echo`, in a child process whose
//! memory is measured).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mpconn::reactor::options::{CloseReason, ConnectionOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError, Turn};
use mpconn::{Address, AuthKey, Error, Family, Result, arbitrary_address};

use crate::keys::KeyArgs;

/// Header of every stress message: sequence, send time (ns since start), client index; then
/// filler; then a 4-byte FNV-1a checksum of everything before it.
const HEADER: usize = 24;
const MIN_SIZE: usize = HEADER + 4;
/// Connects in flight at once (the server's backlog is finite).
const CONNECT_WINDOW: usize = 256;
/// Time allowed for outstanding replies once sending stops.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

pub struct StressArgs {
    pub address: Option<String>,
    pub clients: usize,
    pub messages: Option<u64>,
    pub size: usize,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub churn: f64,
    pub keys: KeyArgs,
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn build_message(buf: &mut Vec<u8>, size: usize, seq: u64, t_ns: u64, client: u64) {
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&t_ns.to_le_bytes());
    buf.extend_from_slice(&client.to_le_bytes());
    buf.extend((HEADER..size - 4).map(|i| (i as u64 ^ seq) as u8));
    let sum = fnv1a(buf);
    buf.extend_from_slice(&sum.to_le_bytes());
}

struct ClientState {
    index: u64,
    connect_started: Instant,
    opened: bool,
    sent: u64,
    received: u64,
    done: bool,
}

#[derive(Default)]
struct Integrity {
    lost: u64,
    duplicated: u64,
    reordered: u64,
    corrupted: u64,
}

struct Stress {
    start: Instant,
    size: usize,
    messages: u64,
    closed_loop: bool,
    sending: bool,
    conns: HashMap<ConnId, ClientState>,
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    integrity: Integrity,
    sent: u64,
    received: u64,
    opened: usize,
    finished: usize,
    in_flight_connects: usize,
    buf: Vec<u8>,
    /// Probability that a client hangs up after a verified echo and a new one takes its place.
    churn: f64,
    rng: u64,
    /// Replacement clients to start.
    respawn: u64,
    churned: u64,
}

impl Stress {
    fn send_next(&mut self, ctx: &mut Context<'_>, conn: ConnId) -> bool {
        let Some(st) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !st.opened || st.sent >= self.messages || !self.sending {
            return false;
        }
        let t_ns = self.start.elapsed().as_nanos() as u64;
        build_message(&mut self.buf, self.size, st.sent, t_ns, st.index);
        match ctx.send(conn, &self.buf) {
            Ok(()) => {
                st.sent += 1;
                self.sent += 1;
                true
            }
            Err(SendError::Full { .. }) => false,
            Err(e) => {
                *self.errors.entry(format!("send: {e}")).or_default() += 1;
                false
            }
        }
    }

    fn chance(&mut self) -> f64 {
        // xorshift64*: enough for choosing which client hangs up.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn finish_if_done(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        let Some(st) = self.conns.get_mut(&conn) else {
            return;
        };
        let target = if self.sending { self.messages } else { st.sent };
        if !st.done && st.received >= target && st.received == st.sent {
            st.done = true;
            self.finished += 1;
            ctx.close(conn);
        }
    }
}

impl Handler for Stress {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.in_flight_connects = self.in_flight_connects.saturating_sub(1);
        if let Some(st) = self.conns.get_mut(&conn) {
            st.opened = true;
            self.opened += 1;
            let _ = self.connect.record(st.connect_started.elapsed().as_micros() as u64);
        }
        if self.closed_loop {
            self.send_next(ctx, conn);
        }
        self.finish_if_done(ctx, conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, m: &[u8]) {
        let now_ns = self.start.elapsed().as_nanos() as u64;
        let Some(st) = self.conns.get_mut(&conn) else {
            return;
        };
        let intact = m.len() == self.size
            && fnv1a(&m[..m.len() - 4]).to_le_bytes() == m[m.len() - 4..]
            && u64::from_le_bytes(m[16..24].try_into().unwrap_or_default()) == st.index;
        if !intact {
            self.integrity.corrupted += 1;
            return;
        }
        let seq = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
        let t_ns = u64::from_le_bytes(m[8..16].try_into().unwrap_or_default());
        if seq < st.received {
            self.integrity.duplicated += 1;
            return;
        }
        if seq > st.received {
            self.integrity.reordered += 1;
            self.integrity.lost += seq - st.received;
        }
        st.received = seq + 1;
        self.received += 1;
        let _ = self.latency.record(now_ns.saturating_sub(t_ns).max(1));
        if self.churn > 0.0 && self.sending && st.received == st.sent && self.chance() < self.churn {
            // Hang up cleanly; a new client takes this one's place.
            if let Some(st) = self.conns.get_mut(&conn) {
                st.done = true;
            }
            self.finished += 1;
            self.churned += 1;
            self.respawn += 1;
            ctx.close(conn);
            return;
        }
        if self.closed_loop {
            self.send_next(ctx, conn);
        }
        self.finish_if_done(ctx, conn);
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let Some(st) = self.conns.remove(&conn) else {
            return;
        };
        if !st.opened {
            self.in_flight_connects = self.in_flight_connects.saturating_sub(1);
        }
        if st.done {
            return;
        }
        let kind = if st.opened { format!("closed early: {reason}") } else { format!("connect: {reason}") };
        *self.errors.entry(kind).or_default() += 1;
        self.integrity.lost += st.sent - st.received;
        self.finished += 1;
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        if self.closed_loop {
            self.send_next(ctx, conn);
        }
    }
}

/// Resident memory of a process in bytes (VmRSS; Linux only, unknown elsewhere).
pub fn rss_of(pid: u32) -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises the soft descriptor limit to the hard one; returns (old, new) when it changed.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    None
}

/// Raises the soft descriptor limit to the hard one; returns (old, new) when it changed.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return None;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        (libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0).then_some((old, lim.rlim_max))
    }
}

/// The embedded server: `mpconn listen --echo --quiet` in a child process.
struct EmbeddedServer {
    child: Child,
    address: Address,
    dir: Option<std::path::PathBuf>,
}

impl EmbeddedServer {
    fn start(key: &AuthKey) -> Result<EmbeddedServer> {
        if key.as_bytes().contains(&0) {
            return Err(Error::Config("a key with a NUL byte cannot be handed to the embedded server".into()));
        }
        #[cfg(unix)]
        let key_value = {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(key.as_bytes()).to_os_string()
        };
        #[cfg(not(unix))]
        let key_value = std::ffi::OsString::from(
            std::str::from_utf8(key.as_bytes())
                .map_err(|_| Error::Config("the embedded server takes a UTF-8 key here".into()))?,
        );
        let address = arbitrary_address(Family::fastest())?;
        let dir = address.unix_path().and_then(|p| p.parent()).map(|p| p.to_path_buf());
        let mut child = Command::new(std::env::current_exe()?)
            .args(["listen", "--echo", "--quiet", "--authkey-env", "MPCONN_STRESS_KEY", &address.to_string()])
            .env("MPCONN_STRESS_KEY", key_value)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or(Error::Closed("server stdout"))?).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            return Err(Error::Config(format!("the embedded server did not start: {line:?}")));
        }
        Ok(EmbeddedServer { child, address, dir })
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(p) = self.address.unix_path() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn micros(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let v = h.value_at_quantile(q);
    if v >= 10_000 { format!("{:.1} ms", v as f64 / 1000.0) } else { format!("{v} µs") }
}

fn nanos(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let v = if q >= 1.0 { h.max() } else { h.value_at_quantile(q) };
    match v {
        v if v >= 10_000_000 => format!("{:.1} ms", v as f64 / 1e6),
        v if v >= 10_000 => format!("{:.0} µs", v as f64 / 1e3),
        v => format!("{:.1} µs", v as f64 / 1e3),
    }
}

/// Runs the stress test; returns whether it passed (no error, nothing lost or corrupted).
pub fn run(args: StressArgs) -> Result<bool> {
    if args.size < MIN_SIZE {
        return Err(Error::Config(format!("--size must be at least {MIN_SIZE} bytes")));
    }
    if args.clients == 0 {
        return Err(Error::Config("--clients must be at least 1".into()));
    }
    if let Some((old, new)) = raise_fd_limit() {
        eprintln!("stress: raised the descriptor limit from {old} to {new}");
    }
    let messages = args.messages.unwrap_or(if args.duration.is_some() { u64::MAX } else { 1000 });
    let (server, address, key) = match &args.address {
        Some(a) => (None, a.parse::<Address>()?, args.keys.key()?),
        None => {
            let key = match args.keys.key()? {
                Some(k) => k,
                // A random key in printable form, so it can travel in the environment.
                None => AuthKey::from(AuthKey::generate()?.to_hex().as_str()),
            };
            let s = EmbeddedServer::start(&key)?;
            let a = s.address.clone();
            (Some(s), a, Some(key))
        }
    };
    let server_pid = server.as_ref().map(|s| s.child.id());
    let rss_before = server_pid.and_then(rss_of);
    let mut options = ConnectionOptions::new().max_message_size(args.keys.max_message_size());
    if let Some(k) = &key {
        options = options.authkey(k.clone());
    }
    println!(
        "stress: {} clients x {} messages of {} B against {}{}",
        args.clients,
        if messages == u64::MAX { "unlimited".to_string() } else { messages.to_string() },
        args.size,
        address,
        server_pid.map(|p| format!(" (embedded server, pid {p})")).unwrap_or_default()
    );

    let start = Instant::now();
    let mut reactor = Reactor::new(Stress {
        start,
        size: args.size,
        messages,
        closed_loop: args.rate.is_none(),
        sending: true,
        conns: HashMap::new(),
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| Error::Config(e.to_string()))?,
        connect: Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| Error::Config(e.to_string()))?,
        errors: BTreeMap::new(),
        integrity: Integrity::default(),
        sent: 0,
        received: 0,
        opened: 0,
        finished: 0,
        in_flight_connects: 0,
        buf: Vec::with_capacity(args.size),
        churn: args.churn,
        rng: (start.elapsed().as_nanos() as u64 ^ std::process::id() as u64) | 1,
        respawn: 0,
        churned: 0,
    })?;

    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(args.clients as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} clients done {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut to_connect: VecDeque<u64> = (0..args.clients as u64).collect();
    let mut total_clients = args.clients;
    let fds_before = count_fds(std::process::id());
    let server_fds_before = server_pid.and_then(count_fds);
    let mut server_rss: Vec<u64> = Vec::new();
    let mut rr: Vec<ConnId> = Vec::new();
    let mut rr_pos = 0usize;
    let mut last_report = Instant::now();
    let mut all_open_rss: Option<u64> = None;
    let mut sending_stopped_at: Option<Instant> = None;
    loop {
        // Start connects, a window at a time.
        while reactor.handler().in_flight_connects < CONNECT_WINDOW {
            let Some(index) = to_connect.pop_front() else {
                break;
            };
            match reactor.connect(&address, options.clone()) {
                Ok(id) => {
                    let h = reactor.handler_mut();
                    h.in_flight_connects += 1;
                    h.conns.insert(
                        id,
                        ClientState {
                            index,
                            connect_started: Instant::now(),
                            opened: false,
                            sent: 0,
                            received: 0,
                            done: false,
                        },
                    );
                    rr.push(id);
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    to_connect.push_front(index);
                    break;
                }
                Err(e) => {
                    let h = reactor.handler_mut();
                    *h.errors.entry(format!("connect: {e}")).or_default() += 1;
                    h.finished += 1;
                }
            }
        }
        // Paced sending (--rate): as many as the schedule allows by now, round robin.
        if let Some(rate) = args.rate {
            let due = (rate * start.elapsed().as_secs_f64()) as u64;
            reactor.with_handler(|h, ctx| {
                let mut misses = 0;
                while h.sent < due && misses < rr.len() {
                    rr_pos = (rr_pos + 1) % rr.len();
                    if h.send_next(ctx, rr[rr_pos]) { misses = 0 } else { misses += 1 }
                }
            });
        }
        let turn = reactor.run_once(Some(Duration::from_millis(if args.rate.is_some() { 1 } else { 50 })))?;
        let h = reactor.handler_mut();
        if all_open_rss.is_none() && h.opened + h.errors.values().sum::<u64>() as usize >= args.clients {
            all_open_rss = server_pid.and_then(rss_of);
        }
        if let Some(d) = args.duration
            && h.sending
            && start.elapsed() >= d
        {
            h.sending = false;
            sending_stopped_at = Some(Instant::now());
        }
        if h.sending && crate::interrupt::requested() {
            // Ctrl-C: stop sending and connecting, wait for what is in flight (within the grace
            // period), then report as at the end of a --duration run.
            h.sending = false;
            sending_stopped_at = Some(Instant::now());
            total_clients -= to_connect.len();
            to_connect.clear();
        }
        while h.respawn > 0 {
            h.respawn -= 1;
            to_connect.push_back(total_clients as u64);
            total_clients += 1;
        }
        if (h.finished >= total_clients && to_connect.is_empty()) || turn == Turn::Stopped {
            break;
        }
        if sending_stopped_at.is_some_and(|t| t.elapsed() > DRAIN_GRACE) {
            let open: Vec<ConnId> = h.conns.keys().copied().collect();
            *h.errors.entry("no reply within the grace period".into()).or_default() += open.len() as u64;
            break;
        }
        if !h.sending && sending_stopped_at.is_some() {
            let idle: Vec<ConnId> = h
                .conns
                .iter()
                .filter(|(_, s)| s.opened && !s.done && s.received == s.sent)
                .map(|(id, _)| *id)
                .collect();
            reactor.with_handler(|h, ctx| {
                for id in idle {
                    h.finish_if_done(ctx, id);
                }
            });
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Some(r) = server_pid.and_then(rss_of) {
                server_rss.push(r);
            }
            let h = reactor.handler();
            let errors: u64 = h.errors.values().sum();
            match &progress {
                Some(bar) => {
                    bar.set_position(h.finished as u64);
                    bar.set_message(format!("{} open, {} round trips, {} errors", h.opened, h.received, errors));
                }
                None => eprintln!(
                    "progress: {:.0} s, {} connections opened (of {} at a time), {} done, {} round trips, {} errors",
                    start.elapsed().as_secs_f64(),
                    h.opened,
                    args.clients,
                    h.finished,
                    h.received,
                    errors
                ),
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let h = reactor.handler();
    let errors: u64 = h.errors.values().sum();
    println!(
        "connect + handshake: p50 {}, p99 {}, max {} ({} ok, {} failed)",
        micros(&h.connect, 0.5),
        micros(&h.connect, 0.99),
        micros(&h.connect, 1.0),
        h.opened,
        args.clients - h.opened.min(args.clients)
    );
    println!(
        "round trips: {} in {:.2} s = {:.0} msg/s",
        h.received,
        elapsed.as_secs_f64(),
        h.received as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {}, p99 {}, p999 {}, max {}",
        nanos(&h.latency, 0.5),
        nanos(&h.latency, 0.99),
        nanos(&h.latency, 0.999),
        nanos(&h.latency, 1.0)
    );
    if errors == 0 {
        println!("errors: none");
    } else {
        for (kind, n) in &h.errors {
            println!("errors: {n} x {kind}");
        }
    }
    if h.churned > 0 {
        println!("churn: {} clients hung up and were replaced ({} clients in all)", h.churned, total_clients);
    }
    let i = &h.integrity;
    println!(
        "integrity: {} lost, {} duplicated, {} reordered, {} corrupted",
        i.lost, i.duplicated, i.reordered, i.corrupted
    );
    if let (Some(before), Some(after)) = (rss_before, all_open_rss) {
        let per = after.saturating_sub(before) as f64 / args.clients as f64;
        println!(
            "server memory: {:.0} B per open connection (RSS {:.1} MiB -> {:.1} MiB with {} clients)",
            per,
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            args.clients
        );
    }
    let passed = errors == 0 && i.lost == 0 && i.duplicated == 0 && i.reordered == 0 && i.corrupted == 0;
    if server_rss.len() >= 2 {
        let min = server_rss.iter().min().copied().unwrap_or(0);
        let max = server_rss.iter().max().copied().unwrap_or(0);
        let at = |q: usize| server_rss[(server_rss.len() - 1) * q / 4] as f64 / 1048576.0;
        println!(
            "server RSS over the run: {:.1} / {:.1} / {:.1} / {:.1} / {:.1} MiB at 0/25/50/75/100 %, min {:.1}, max {:.1} ({} samples)",
            at(0),
            at(1),
            at(2),
            at(3),
            at(4),
            min as f64 / 1048576.0,
            max as f64 / 1048576.0,
            server_rss.len()
        );
    }
    drop(reactor);
    // Descriptors after every client closed: the server's should be back where they started.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut server_fds_after = server_pid.and_then(count_fds);
    while server_fds_after > server_fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        server_fds_after = server_pid.and_then(count_fds);
    }
    let fds_after = count_fds(std::process::id());
    if fds_before.is_none() && server_fds_before.is_none() {
        println!("descriptors: not counted on this platform");
    } else {
        println!(
            "descriptors: client {} -> {}{}",
            fds_before.map_or("?".into(), |n| n.to_string()),
            fds_after.map_or("?".into(), |n| n.to_string()),
            match (server_fds_before, server_fds_after) {
                (Some(b), Some(a)) => format!(", server {b} -> {a}"),
                _ => String::new(),
            }
        );
    }
    let leaked = fds_after > fds_before || server_fds_after > server_fds_before;
    if leaked {
        println!("descriptors: LEAK");
    }
    let _ = std::io::stdout().flush();
    drop(server);
    Ok(passed && !leaked)
}

/// Open descriptors of a process (Linux: `/proc`; unknown elsewhere).
fn count_fds(pid: u32) -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_a_checksum_over_everything_before_it() {
        let mut b = Vec::new();
        build_message(&mut b, 64, 7, 123, 9);
        assert_eq!(b.len(), 64);
        assert_eq!(fnv1a(&b[..60]).to_le_bytes(), b[60..]);
        b[30] ^= 1;
        assert_ne!(fnv1a(&b[..60]).to_le_bytes(), b[60..]);
    }
}
