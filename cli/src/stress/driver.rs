//! One reactor thread's clients: connecting them (a window at a time), sending each client's
//! requests (closed loop: the next when the reply to the last arrives; open loop: when the
//! schedule says, one outstanding request per connection), judging the replies, churning, and
//! ending in order (`--duration`, Ctrl-C, a grace period for the last replies).
//!
//! A client *slot* outlives its connections: a churned client's replacement takes over its slot,
//! its request count and its schedule, so a run's total of requests is fixed by `--messages`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mpconn::CloseReason;
use mpconn::pickle::Value;
use mpconn::reactor::options::ConnectionOptions;
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError, Turn};
use mpconn::{Address, Error, Result};

use super::check::{self, build_message, filler_seq};
use super::plan::{Expect, Payload, Plan};
use super::schedule::{Rng, Schedule};
use super::stats::Stats;

/// Connects in flight at once per thread (the server's backlog is finite).
const CONNECT_WINDOW: usize = 256;
/// Time allowed for outstanding replies once sending stops.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// The pickle protocol when the connection cannot say (it always can once open).
const FALLBACK_PROTOCOL: u8 = 2;

/// What every thread runs with.
pub struct Config {
    pub address: Address,
    pub options: ConnectionOptions,
    pub messages: u64,
    pub size: usize,
    pub duration: Option<Duration>,
    pub churn: f64,
    /// A reply not here this long after its request went out is an error and ends the client.
    pub timeout: Duration,
    pub schedule: Option<Schedule>,
    pub plan: Plan,
}

/// A thread's running counts, for the progress line and the server-memory sample.
#[derive(Default)]
pub struct Progress {
    pub opened: AtomicUsize,
    pub connect_failed: AtomicUsize,
    pub finished: AtomicUsize,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

/// What the threads share.
pub struct Shared {
    pub start: Instant,
    /// Client slots in all threads.
    pub clients: usize,
    /// Slots whose first connection opened or failed.
    pub settled: AtomicUsize,
    /// When the open-loop schedule starts (ns since `start`): once every first connection settled.
    pub schedule_start: OnceLock<u64>,
    /// Set when any thread hits an error that ends the run.
    pub abort: AtomicBool,
    pub progress: Vec<Progress>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

struct Slot {
    client: u64,
    sent: u64,
    phase: f64,
    conn: Option<ConnId>,
    settled: bool,
    finished: bool,
}

struct Pending {
    seq: u64,
    /// Latency counts from here: the intended time (open loop) or the actual send (closed).
    from_ns: u64,
    /// When it actually went out (the reply timeout counts from here).
    sent_ns: u64,
    value: Option<Value>,
    bytes: Vec<u8>,
}

/// What one try to send gave.
enum Attempt {
    Sent,
    /// Not now: not open, waiting for a reply, not due, no requests left, or a full queue.
    NotNow,
    /// The request could not be made (counted); the next may be tried.
    Failed,
}

struct Conn {
    slot: usize,
    started: Instant,
    opened: bool,
    done: bool,
    pending: Option<Pending>,
}

struct Driver {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    conns: HashMap<ConnId, Conn>,
    stats: Stats,
    sending: bool,
    rng: Rng,
    buf: Vec<u8>,
    finished: usize,
    in_flight_connects: usize,
    respawn: Vec<usize>,
    /// Closed loop: connections whose reply came in this reactor turn; their next request goes
    /// out after the turn, so a second reply to the same request read in the same turn finds no
    /// request pending and is counted as `reply without a request` (not taken as the next one's).
    replied: Vec<ConnId>,
}

impl Driver {
    fn settle(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot)
            && !s.settled
        {
            s.settled = true;
            self.shared.settled.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn finish_slot(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot)
            && !s.finished
        {
            s.finished = true;
            self.finished += 1;
        }
    }

    /// Sends the connection's next request if it may: open, idle, requests left, and (open
    /// loop) due. A request that cannot be made (a `{seq}` that makes the literal invalid) is
    /// counted as an error and the next one is tried, so a client never waits for nothing.
    fn send_next(&mut self, ctx: &mut Context<'_>, conn: ConnId) -> bool {
        loop {
            match self.try_send(ctx, conn) {
                Attempt::Sent => return true,
                Attempt::NotNow => return false,
                Attempt::Failed => {}
            }
        }
    }

    fn try_send(&mut self, ctx: &mut Context<'_>, conn: ConnId) -> Attempt {
        let Some(c) = self.conns.get(&conn) else {
            return Attempt::NotNow;
        };
        if !c.opened || c.done || c.pending.is_some() || !self.sending {
            return Attempt::NotNow;
        }
        let slot_index = c.slot;
        let Some(slot) = self.slots.get(slot_index) else {
            return Attempt::NotNow;
        };
        if slot.sent >= self.cfg.messages {
            return Attempt::NotNow;
        }
        let now_ns = self.shared.now_ns();
        let from_ns = match &self.cfg.schedule {
            None => now_ns,
            Some(s) => {
                let Some(t0) = self.shared.schedule_start.get() else {
                    return Attempt::NotNow;
                };
                let due = t0.saturating_add((s.due(slot.phase, slot.sent) * 1e9) as u64);
                if due > now_ns {
                    return Attempt::NotNow;
                }
                due
            }
        };
        let (seq, client) = (slot.sent, slot.client);
        let (value, bytes) = match &self.cfg.plan.payload {
            Payload::Filler => {
                build_message(&mut self.buf, self.cfg.size, seq, now_ns, client);
                (None, std::mem::take(&mut self.buf))
            }
            _ => {
                let protocol = ctx.pickle_protocol(conn).unwrap_or(FALLBACK_PROTOCOL);
                match self.cfg.plan.request(seq, client, protocol) {
                    Ok(Some((v, b))) => (v, b),
                    Ok(None) => (None, Vec::new()),
                    Err(e) => {
                        // Counted as sent and failed, so the slot moves on.
                        self.slots[slot_index].sent += 1;
                        let kind = "request: not a valid literal after substitution".to_string();
                        self.stats.record_error(now_ns, kind, Some(e.to_string()), 1);
                        return Attempt::Failed;
                    }
                }
            }
        };
        let result = ctx.send(conn, &bytes);
        match result {
            Ok(()) => {
                self.slots[slot_index].sent += 1;
                self.stats.record_sent(now_ns);
                // Bytes are kept for the echo check; the filler buffer is reused.
                let keep = match self.cfg.plan.payload {
                    Payload::Bytes(_) => bytes,
                    Payload::Filler => {
                        self.buf = bytes;
                        Vec::new()
                    }
                    Payload::Values(_) => Vec::new(),
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.pending = Some(Pending { seq, from_ns, sent_ns: now_ns, value, bytes: keep });
                }
                Attempt::Sent
            }
            Err(SendError::Full { .. } | SendError::OverBudget { .. }) => Attempt::NotNow,
            Err(e) => {
                // The connection is going away; `on_close` ends the client.
                self.stats.record_error(now_ns, format!("send: {e}"), None, 1);
                Attempt::NotNow
            }
        }
    }

    /// Ends the clients whose reply is overdue: counted as `timeout`, the connection closed (a
    /// late reply could not be told from the next one's), the slot finished.
    fn expire(&mut self, ctx: &mut Context<'_>) {
        let now_ns = self.shared.now_ns();
        let limit = self.cfg.timeout.as_nanos() as u64;
        let overdue: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.done && c.pending.as_ref().is_some_and(|p| now_ns.saturating_sub(p.sent_ns) > limit))
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.done = true;
            let slot = c.slot;
            let kind = format!("timeout: no reply within {:?}", self.cfg.timeout);
            // Counted once, as this timeout (not also as a lost echo: one request, one error).
            self.stats.record_error(now_ns, kind, None, 1);
            self.finish_slot(slot);
            ctx.close(id);
        }
    }

    /// Open loop, when sending stops: the requests that were due by now but never went out (a
    /// client still waiting on a stalled reply) get a latency from their intended send time to
    /// now, as wrk2 does, and are counted as `unsent`; without this a stall at the end of a run
    /// would be in no histogram.
    fn count_unsent(&mut self) {
        let (Some(s), Some(&t0)) = (self.cfg.schedule, self.shared.schedule_start.get()) else {
            return;
        };
        let now_ns = self.shared.now_ns();
        for slot in &mut self.slots {
            let alive = slot.conn.and_then(|id| self.conns.get(&id)).is_some_and(|c| c.opened && !c.done);
            if !alive {
                continue;
            }
            while slot.sent < self.cfg.messages {
                let due = t0.saturating_add((s.due(slot.phase, slot.sent) * 1e9) as u64);
                if due > now_ns {
                    break;
                }
                self.stats.record_unsent(now_ns, now_ns - due);
                slot.sent += 1;
            }
        }
    }

    /// On Ctrl-C (or another thread's failure): closes the clients not yet open (connecting, or
    /// in their handshake) at once, counted as `interrupted`, not errors, so a silent listener
    /// does not hold the report for the handshake timeout. (At the end of `--duration` they are
    /// left to finish their handshake, as before, and then end without sending.)
    fn close_unopened(&mut self, ctx: &mut Context<'_>) {
        let unopened: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| !c.opened && !c.done).map(|(id, _)| *id).collect();
        for id in unopened {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.done = true;
            let slot = c.slot;
            self.stats.interrupted += 1;
            self.settle(slot);
            self.finish_slot(slot);
            ctx.close(id);
        }
    }

    /// Closed loop, after a reactor turn: the next request of each client whose reply came.
    fn send_after_replies(&mut self, ctx: &mut Context<'_>) {
        let replied = std::mem::take(&mut self.replied);
        for &conn in &replied {
            self.send_next(ctx, conn);
            self.finish_if_done(ctx, conn);
        }
        self.replied = replied;
        self.replied.clear();
    }

    fn finish_if_done(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(slot) = self.slots.get(c.slot) else {
            return;
        };
        if !c.done && c.opened && c.pending.is_none() && (slot.sent >= self.cfg.messages || !self.sending) {
            let s = c.slot;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.done = true;
            }
            self.finish_slot(s);
            ctx.close(conn);
        }
    }
}

impl Handler for Driver {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.in_flight_connects = self.in_flight_connects.saturating_sub(1);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.opened = true;
        let (slot, started) = (c.slot, c.started);
        self.stats.opened += 1;
        let _ = self.stats.connect.record(started.elapsed().as_micros() as u64);
        self.settle(slot);
        self.send_next(ctx, conn);
        self.finish_if_done(ctx, conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, m: &[u8]) {
        let now_ns = self.shared.now_ns();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(p) = c.pending.take() else {
            self.stats.record_error(now_ns, "reply without a request".into(), Some(check::shown(m)), 1);
            return;
        };
        let slot_index = c.slot;
        let client = self.slots.get(slot_index).map_or(0, |s| s.client);
        let plan = &self.cfg.plan;
        let failure = match (&plan.payload, &plan.expect) {
            (Payload::Filler, Expect::Echo) => match filler_seq(m, self.cfg.size, client) {
                None => {
                    self.stats.integrity.corrupted += 1;
                    self.stats.record_integrity(now_ns, 1);
                    self.send_next(ctx, conn);
                    self.finish_if_done(ctx, conn);
                    return;
                }
                Some(seq) if seq < p.seq => {
                    self.stats.integrity.duplicated += 1;
                    self.stats.record_integrity(now_ns, 1);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.pending = Some(p);
                    }
                    return;
                }
                Some(seq) => {
                    if seq > p.seq {
                        self.stats.integrity.reordered += 1;
                        self.stats.integrity.lost += seq - p.seq;
                        self.stats.record_integrity(now_ns, 1 + (seq - p.seq));
                    }
                    None
                }
            },
            (Payload::Filler, Expect::Any) => None,
            _ => check::check(plan, m, p.value.as_ref(), &p.bytes, p.seq, client),
        };
        match failure {
            None => self.stats.record_ok(now_ns, now_ns.saturating_sub(p.from_ns)),
            Some(f) => self.stats.record_error(now_ns, f.kind, Some(f.example), 1),
        }
        let more = self.slots.get(slot_index).is_some_and(|s| s.sent < self.cfg.messages);
        if self.cfg.churn > 0.0 && more && self.sending && self.rng.next_f64() < self.cfg.churn {
            // Hang up cleanly; a new client takes this one's slot.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.done = true;
            }
            if let Some(s) = self.slots.get_mut(slot_index) {
                s.conn = None;
            }
            self.stats.churned += 1;
            self.respawn.push(slot_index);
            ctx.close(conn);
            return;
        }
        // The echo test's sequence numbers catch a duplicate already; a service's replies carry
        // none, so there the next request waits for the end of the turn.
        if self.cfg.schedule.is_some() || matches!(self.cfg.plan.payload, Payload::Filler) {
            self.send_next(ctx, conn);
            self.finish_if_done(ctx, conn);
        } else {
            self.replied.push(conn);
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if !c.opened {
            self.in_flight_connects = self.in_flight_connects.saturating_sub(1);
        }
        if c.done {
            return;
        }
        let now_ns = self.shared.now_ns();
        let kind = match (&reason, c.opened) {
            // A refused handshake can show after the open when the client has no key (the
            // listener's challenge comes first), so it is named apart from a close.
            (CloseReason::AuthenticationFailed(_), _) => format!("handshake refused: {reason}"),
            (_, true) => format!("closed early: {reason}"),
            (_, false) => format!("connect: {reason}"),
        };
        // The echo still pending is counted by this error (one request, one error).
        self.stats.record_error(now_ns, kind, None, 1);
        self.settle(c.slot);
        self.finish_slot(c.slot);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.send_next(ctx, conn);
    }
}

/// Runs `slots` (global client numbers) on a reactor in this thread until every slot is done,
/// sending stopped and the last replies came (or the grace period ended); returns the counts.
pub fn run_thread(cfg: Arc<Config>, shared: Arc<Shared>, thread: usize, slots: Vec<u64>, seed: u64) -> Result<Stats> {
    let mut rng = Rng::new(seed);
    let clients = shared.clients as f64;
    let slots: Vec<Slot> = slots
        .into_iter()
        .map(|client| Slot {
            client,
            sent: 0,
            phase: rng.next_f64() * clients,
            conn: None,
            settled: false,
            finished: false,
        })
        .collect();
    let n_slots = slots.len();
    let size = cfg.size;
    let open_loop = cfg.schedule.is_some();
    let mut reactor = Reactor::new(Driver {
        cfg: cfg.clone(),
        shared: shared.clone(),
        slots,
        conns: HashMap::new(),
        stats: Stats::new()?,
        sending: true,
        rng,
        buf: Vec::with_capacity(size),
        finished: 0,
        in_flight_connects: 0,
        respawn: Vec::new(),
        replied: Vec::new(),
    })?;
    let progress = &shared.progress[thread];
    let mut to_connect: VecDeque<usize> = (0..n_slots).collect();
    let mut stopped_at: Option<Instant> = None;
    let mut idle: Vec<ConnId> = Vec::new();
    let mut last_expiry = Instant::now();
    loop {
        while reactor.handler().in_flight_connects < CONNECT_WINDOW {
            let Some(slot) = to_connect.pop_front() else {
                break;
            };
            match reactor.connect(&cfg.address, cfg.options.clone()) {
                Ok(id) => {
                    let h = reactor.handler_mut();
                    h.in_flight_connects += 1;
                    h.stats.clients_started += 1;
                    h.conns
                        .insert(id, Conn { slot, started: Instant::now(), opened: false, done: false, pending: None });
                    h.slots[slot].conn = Some(id);
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    to_connect.push_front(slot);
                    break;
                }
                Err(e) => {
                    let h = reactor.handler_mut();
                    let now_ns = shared.now_ns();
                    h.stats.record_error(now_ns, format!("connect: {e}"), None, 1);
                    h.settle(slot);
                    h.finish_slot(slot);
                }
            }
        }
        if open_loop {
            if shared.schedule_start.get().is_none() && shared.settled.load(Ordering::SeqCst) >= shared.clients {
                shared.schedule_start.get_or_init(|| shared.now_ns());
            }
            reactor.with_handler(|h, ctx| {
                idle.clear();
                idle.extend(h.slots.iter().filter_map(|s| s.conn));
                for &id in &idle {
                    h.send_next(ctx, id);
                    h.finish_if_done(ctx, id);
                }
            });
        }
        if last_expiry.elapsed() >= Duration::from_millis(100) {
            last_expiry = Instant::now();
            reactor.with_handler(|h, ctx| h.expire(ctx));
        }
        let turn = reactor.run_once(Some(Duration::from_millis(if open_loop { 1 } else { 50 })))?;
        if !reactor.handler().replied.is_empty() {
            reactor.with_handler(|h, ctx| h.send_after_replies(ctx));
        }
        let h = reactor.handler_mut();
        let stop = cfg.duration.is_some_and(|d| shared.start.elapsed() >= d)
            || crate::interrupt::requested()
            || shared.abort.load(Ordering::SeqCst);
        if h.sending && stop {
            // Stop sending and connecting, wait for what is in flight (within the grace
            // period), then report.
            h.sending = false;
            stopped_at = Some(Instant::now());
            for slot in to_connect.drain(..) {
                h.settle(slot);
                h.finish_slot(slot);
            }
            for slot in std::mem::take(&mut h.respawn) {
                h.finish_slot(slot);
            }
            // On Ctrl-C, clients still connecting or in their handshake are closed now, not left
            // to the handshake timeout (a silent listener would hold the report for it).
            let interrupted = crate::interrupt::requested() || shared.abort.load(Ordering::SeqCst);
            reactor.with_handler(|h, ctx| {
                h.count_unsent();
                if interrupted {
                    h.close_unopened(ctx);
                }
            });
        }
        let h = reactor.handler_mut();
        for slot in h.respawn.drain(..) {
            to_connect.push_back(slot);
        }
        progress.opened.store(h.stats.opened, Ordering::Relaxed);
        progress.finished.store(h.finished, Ordering::Relaxed);
        progress.ok.store(h.stats.ok, Ordering::Relaxed);
        progress.errors.store(h.stats.error_count() + h.stats.integrity.total(), Ordering::Relaxed);
        let failed = h
            .stats
            .errors
            .iter()
            .filter(|(k, _)| k.starts_with("connect") || k.starts_with("handshake refused"))
            .map(|(_, n)| *n)
            .sum::<u64>();
        progress.connect_failed.store(failed as usize, Ordering::Relaxed);
        if (h.finished >= n_slots && to_connect.is_empty()) || turn == Turn::Stopped {
            break;
        }
        if stopped_at.is_some_and(|t| t.elapsed() > DRAIN_GRACE) {
            let waiting = h.conns.values().filter(|c| !c.done).count() as u64;
            let now_ns = shared.now_ns();
            h.stats.record_error(now_ns, "no reply within the grace period".into(), None, waiting);
            break;
        }
        if !h.sending {
            idle.clear();
            idle.extend(h.conns.iter().filter(|(_, c)| c.opened && !c.done && c.pending.is_none()).map(|(id, _)| *id));
            reactor.with_handler(|h, ctx| {
                for &id in &idle {
                    h.finish_if_done(ctx, id);
                }
            });
        }
    }
    let stats = std::mem::replace(&mut reactor.handler_mut().stats, Stats::new()?);
    Ok(stats)
}
