//! Sharded reactors: one process, N single-threaded reactors (one per core by default), each
//! with a handler of its own built by a factory.
//!
//! Connections are spread over the shards two ways:
//!
//! * **TCP on Linux**: every shard listens on a socket of its own bound with `SO_REUSEPORT` to
//!   the same address, and the kernel spreads incoming connections over them (a hash of the
//!   peer's address and port). Nothing is handed between threads.
//! * **Unix sockets on Linux**: every shard polls the one listening socket (a `dup` each),
//!   registered level-triggered with `EPOLLEXCLUSIVE`, so the kernel wakes one waiting shard per
//!   client; a woken shard accepts a few, and one well ahead of the least-loaded shard hands the
//!   stream over to it (`should_hand_over`). No thread sits between the socket and the shards.
//! * **Everywhere else** (TCP on other systems; Linux before 4.5): one acceptor thread accepts
//!   and hands each accepted stream, before its handshake, to the least-loaded shard (the fewest
//!   connections, counting those handed over and not yet taken; ties go round-robin) through the
//!   shard's command queue and `mio::Waker`. The handshake runs on the shard.
//!
//! A connection lives on one shard from its accept to its close; its [`ConnId`] carries the
//! shard ([`ConnId::shard`]), so a [`ShardedHandle`] reaches it from any thread. Windows named
//! pipes are not served by sharded reactors (`listen` says so); use one [`Reactor`] there.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mio::{Events, Poll, Token, Waker};

use crate::address::{Address, IntoAddress};
use crate::error::{Error, Result};
use crate::reactor::core::Gauges;
use crate::reactor::handle::{Adopted, Handle};
use crate::reactor::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
use crate::reactor::slots::ListenerSlots;
use crate::reactor::{Bytes, ConnId, Context, Handler, Reactor, SendError};
use crate::transport::{Notify, SocketListener};

/// The most shards a [`Sharded`] runs (ids keep the shard in 8 bits).
pub const MAX_SHARDS: usize = 255;

/// A shard running one turn for longer than this is not handed new streams.
const STUCK_MS: u64 = 50;

/// How long the acceptor waits before trying again when every shard is at its connection limit.
const FULL_RETRY: Duration = Duration::from_millis(10);

const ACCEPTOR_WAKER: Token = Token(usize::MAX);

/// The number of shards "one per core" means here: the parallelism the OS reports (at least 1,
/// at most [`MAX_SHARDS`]).
pub fn available_shards() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).clamp(1, MAX_SHARDS)
}

/// How a [`Sharded`] listener spreads its connections over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// One shard: it listens itself.
    Single,
    /// One `SO_REUSEPORT` socket per shard; the kernel spreads the connections (TCP on Linux).
    ReusePort,
    /// One acceptor thread hands accepted streams to the least-loaded shard.
    Acceptor,
    /// Every shard accepts from one shared socket, registered `EPOLLEXCLUSIVE` so the kernel
    /// wakes one waiting shard per client (Unix sockets on Linux); a shard well ahead of the
    /// least-loaded one hands what it accepted over to it.
    Shared,
}

/// A listener of a [`Sharded`]: the address it is bound to and how it spreads connections.
#[derive(Debug, Clone)]
pub struct ShardedListener {
    address: Address,
    balance: Balance,
}

impl ShardedListener {
    /// The bound address (with the real port when 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How connections are spread over the shards.
    pub fn balance(&self) -> Balance {
        self.balance
    }
}

/// The figures of one shard (or, in [`ShardedStats::total`], of all shards added up). Each is
/// read without stopping anything: a snapshot as of the shard's last turn (connections, budget)
/// or last callback (the counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Connections now: accepted or handed over and not yet closed, authenticated or not.
    pub connections: usize,
    /// Connections opened so far (`on_open` calls).
    pub opened: u64,
    /// Connections closed so far (`on_close` calls, also of connections that never opened).
    pub closed: u64,
    /// Messages delivered so far.
    pub messages: u64,
    /// Bytes of the messages delivered so far.
    pub bytes: u64,
    /// Bytes held by the shard's memory budget's count.
    pub budget_held: usize,
    /// Reads the shard's memory budget has refused so far.
    pub budget_refusals: u64,
}

impl ShardStats {
    fn add(&mut self, other: &ShardStats) {
        self.connections += other.connections;
        self.opened += other.opened;
        self.closed += other.closed;
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.budget_held += other.budget_held;
        self.budget_refusals += other.budget_refusals;
    }
}

/// The figures of every shard and their total (see [`ShardedHandle::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardedStats {
    /// One entry per shard, by index.
    pub shards: Vec<ShardStats>,
    /// All shards added up.
    pub total: ShardStats,
}

/// What a shard's handler wrapper counts: written by the shard's thread alone (a load and a
/// store, no locked instruction), read by any thread.
#[derive(Debug, Default)]
struct Counts {
    opened: AtomicU64,
    closed: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    // One writer (the shard's thread): no read-modify-write instruction is needed.
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

/// The user's handler with the shard's counts around it.
struct Counted<H> {
    inner: H,
    counts: Arc<Counts>,
}

impl<H: Handler> Handler for Counted<H> {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: &Address) {
        bump(&self.counts.opened, 1);
        self.inner.on_open(ctx, conn, peer);
    }

    #[inline]
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        bump(&self.counts.messages, 1);
        bump(&self.counts.bytes, message.len() as u64);
        self.inner.on_message(ctx, conn, message);
    }

    fn on_message_owned(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>) {
        bump(&self.counts.messages, 1);
        bump(&self.counts.bytes, message.len() as u64);
        self.inner.on_message_owned(ctx, conn, message);
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        bump(&self.counts.closed, 1);
        self.inner.on_close(ctx, conn, reason);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.inner.on_drained(ctx, conn);
    }

    fn on_send_refused(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>, error: SendError) {
        self.inner.on_send_refused(ctx, conn, message, error);
    }
}

/// The acceptor's wake-up and stop flag, shared with the handles.
struct AcceptorShared {
    waker: Waker,
    stop: AtomicBool,
}

impl Notify for AcceptorShared {
    fn notify(&self, _token: usize) {
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake the acceptor: {e}");
        }
    }
}

struct AcceptListener {
    socket: SocketListener,
    opts: Arc<ConnectionOptions>,
    /// Its limit on each shard: a slot there is taken before each accept.
    slots: Arc<ListenerSlots>,
}

/// The acceptor thread's state: its own poll, the listeners it serves for the shards.
struct Acceptor {
    poll: Poll,
    shared: Arc<AcceptorShared>,
    listeners: Vec<AcceptListener>,
}

impl Acceptor {
    fn new() -> Result<Acceptor> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), ACCEPTOR_WAKER)?;
        Ok(Acceptor {
            poll,
            shared: Arc::new(AcceptorShared { waker, stop: AtomicBool::new(false) }),
            listeners: Vec::new(),
        })
    }

    /// Serves `socket` for `shards` shards.
    fn add(&mut self, mut socket: SocketListener, options: &ListenOptions, shards: usize) -> Result<()> {
        let notify: Arc<dyn Notify> = self.shared.clone();
        socket.register(self.poll.registry(), Token(self.listeners.len()), &notify)?;
        self.listeners.push(AcceptListener {
            socket,
            opts: Arc::new(options.connection.clone()),
            slots: ListenerSlots::new(options.max_connections, vec![None; shards]),
        });
        Ok(())
    }

    /// Accepts until stopped, handing each stream to a shard. The listeners are closed on return
    /// (a Unix socket file is removed).
    fn run(&mut self, shards: &ShardedHandle, backoff: Duration) {
        let siblings = &shards.inner.siblings;
        let n = siblings.len();
        let mut events = Events::with_capacity(64);
        let mut next = 0usize;
        let mut wait = None;
        'serve: loop {
            match self.poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("the acceptor's poll failed: {e}; accepting stops");
                    break;
                }
            }
            wait = None;
            // Mio's events are edge-triggered: each wake-up (or retry) accepts on every listener
            // until it would block, so no waiting client is left without an edge to come.
            for l in &self.listeners {
                loop {
                    if self.shared.stop.load(Ordering::Acquire) {
                        break 'serve;
                    }
                    // The acceptor alone takes these slots, so the one it saw free is still free.
                    let slot = siblings.least_loaded(next, |i| l.slots.has_room(i)).and_then(|(shard, _)| {
                        let slot = l.slots.take(shard)?;
                        Some((shard, slot))
                    });
                    let Some((shard, slot)) = slot else {
                        // Every shard is at the limit: clients wait in the backlog.
                        wait = Some(FULL_RETRY);
                        break;
                    };
                    match l.socket.accept_nonblocking() {
                        Ok((stream, peer)) => {
                            next = (shard + 1) % n;
                            let adopted = Adopted { stream, peer, opts: l.opts.clone(), slot: Some(slot) };
                            if let Err(e) = siblings.hand(shard, adopted) {
                                log::debug!("shard {shard} is gone; a connection was dropped: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if crate::transport::is_transient_accept_error(&e) => {}
                        Err(e) => {
                            // Out of descriptors or memory: back off instead of spinning.
                            log::warn!("accept on {} failed: {e}; pausing accepts", l.socket.address());
                            wait = Some(backoff);
                            break;
                        }
                    }
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        for mut l in self.listeners.drain(..) {
            let _ = l.socket.deregister(self.poll.registry());
        }
    }
}

/// Every shard's handle and gauges, and the streams handed to each: what the acceptor thread, or
/// a shard accepting from a socket the shards share, looks at to pick the least-loaded shard.
pub(crate) struct Siblings {
    handles: Vec<Handle>,
    gauges: Vec<Arc<Gauges>>,
    /// Streams handed to each shard so far, by anyone (its gauges count those it took).
    handed: Vec<AtomicU64>,
}

impl Siblings {
    /// The number of shards.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// A handle to each shard.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Shard `i`'s connections: its published count plus the streams handed to it that it has
    /// not taken yet.
    pub(crate) fn load(&self, i: usize) -> usize {
        let g = &self.gauges[i];
        let in_flight = self.handed[i].load(Ordering::Relaxed).saturating_sub(g.adopted.load(Ordering::Relaxed));
        g.connections.load(Ordering::Relaxed).saturating_add(usize::try_from(in_flight).unwrap_or(usize::MAX))
    }

    /// The shard with the fewest connections among those `has_room` (under a listener's limit),
    /// and its load, looking from `start` on so that ties go round-robin. A shard stuck in one
    /// turn for more than [`STUCK_MS`] (a handler that blocks) is passed over: a stream handed
    /// to it would wait as long as it is stuck.
    pub(crate) fn least_loaded(&self, start: usize, has_room: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        let n = self.len();
        let now = crate::reactor::core::group_clock_ms();
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.load(i);
            if best.is_none_or(|(_, b)| load < b) && has_room(i) && !self.gauges[i].stuck(now, STUCK_MS) {
                best = Some((i, load));
            }
        }
        best
    }

    /// Hands an accepted stream to shard `i`, which runs its handshake.
    pub(crate) fn hand(&self, i: usize, adopted: Adopted) -> Result<()> {
        self.handed[i].fetch_add(1, Ordering::Relaxed);
        self.handles[i].adopt(adopted)
    }
}

/// Whether a shard with `own` connections that accepted one more from a shared socket hands it to
/// the least-loaded shard, at `least`: only when it is ahead by more than 1/8 of that load plus 4.
/// So a burst that one shard takes, or a server that one shard serves while the others idle
/// (the kernel wakes the first waiting shard), stays spread; short connections (a handful open
/// per shard) never move.
pub(crate) fn should_hand_over(own: usize, least: usize) -> bool {
    own > least + least / 8 + 4
}

struct HandleInner {
    siblings: Arc<Siblings>,
    counts: Vec<Arc<Counts>>,
    acceptor: Arc<AcceptorShared>,
}

/// A `Send + Clone` handle to every shard of a [`Sharded`], for other threads: sends and closes
/// reach the shard that owns the connection (its id says which), `stop` stops them all, and
/// `stats` reads each shard's figures.
#[derive(Clone)]
pub struct ShardedHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for ShardedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedHandle").field("shards", &self.inner.siblings.handles.len()).finish_non_exhaustive()
    }
}

impl ShardedHandle {
    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.siblings.handles.len()
    }

    /// The [`Handle`] of shard `index`, to act on that shard alone (run a closure there with
    /// [`Handle::call`], say).
    pub fn shard(&self, index: usize) -> Option<&Handle> {
        self.inner.siblings.handles.get(index)
    }

    /// The handle of the shard that owns `conn`; `SendError::NoSuchConnection` for an id of
    /// no shard of this group.
    fn owner(&self, conn: ConnId) -> Result<&Handle> {
        conn.shard().and_then(|s| self.inner.siblings.handles.get(s)).ok_or(Error::Send(SendError::NoSuchConnection))
    }

    /// Queues `message` for `conn` on the shard that owns it (see [`Handle::send`]).
    pub fn send(&self, conn: ConnId, message: Vec<u8>) -> Result<()> {
        self.owner(conn)?.send(conn, message)
    }

    /// Queues a shared message for `conn` on the shard that owns it (see [`Handle::send_shared`]).
    pub fn send_shared(&self, conn: ConnId, message: Bytes) -> Result<()> {
        self.owner(conn)?.send_shared(conn, message)
    }

    /// Closes `conn` after its queued messages are written.
    pub fn close(&self, conn: ConnId) -> Result<()> {
        self.owner(conn)?.close(conn)
    }

    /// Stops reading `conn` (see [`Context::pause_reading`]).
    pub fn pause_reading(&self, conn: ConnId) -> Result<()> {
        self.owner(conn)?.pause_reading(conn)
    }

    /// Resumes reading `conn` (see [`Context::resume_reading`]).
    pub fn resume_reading(&self, conn: ConnId) -> Result<()> {
        self.owner(conn)?.resume_reading(conn)
    }

    /// Runs `f` on the thread of the shard that owns `conn`, with that shard's [`Context`].
    pub fn call_on(&self, conn: ConnId, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<()> {
        self.owner(conn)?.call(f)
    }

    /// Runs a clone of `f` on every shard's thread, with its index and its [`Context`] (a
    /// broadcast to every shard's connections, say). Shards already stopped are skipped.
    pub fn call_each(&self, f: impl Fn(usize, &mut Context<'_>) + Send + Sync + 'static) -> Result<()> {
        let f = Arc::new(f);
        for (i, h) in self.inner.siblings.handles.iter().enumerate() {
            let f = f.clone();
            match h.call(move |ctx| f(i, ctx)) {
                Ok(()) | Err(Error::Closed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stops every shard gracefully (queues flushed, connections closed, as
    /// [`Handle::stop`]) and the acceptor; [`Sharded::run`] returns once all are done. Stopping
    /// a group that stopped already does nothing.
    pub fn stop(&self) -> Result<()> {
        self.inner.acceptor.stop.store(true, Ordering::Release);
        let woken = self.inner.acceptor.waker.wake();
        for h in &self.inner.siblings.handles {
            match h.stop() {
                Ok(()) | Err(Error::Closed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(woken?)
    }

    /// The figures of each shard and their total, read without stopping anything.
    pub fn stats(&self) -> ShardedStats {
        let mut stats = ShardedStats::default();
        for (g, c) in self.inner.siblings.gauges.iter().zip(&self.inner.counts) {
            let s = ShardStats {
                connections: g.connections.load(Ordering::Relaxed),
                opened: c.opened.load(Ordering::Relaxed),
                closed: c.closed.load(Ordering::Relaxed),
                messages: c.messages.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                budget_held: g.budget_held.load(Ordering::Relaxed),
                budget_refusals: g.budget_refusals.load(Ordering::Relaxed),
            };
            stats.total.add(&s);
            stats.shards.push(s);
        }
        stats
    }
}

/// N single-threaded reactors in one process, one per core by default, each with its own
/// handler.
///
/// Connections are spread over the shards three ways ([`Balance`]):
///
/// * **TCP on Linux**: every shard listens on a socket of its own bound with `SO_REUSEPORT` to
///   the same address, and the kernel spreads incoming connections over them (by a hash of the
///   peer's address and port, blind to load). Nothing is handed between threads.
/// * **Unix sockets on Linux**: every shard polls the one listening socket (`EPOLLEXCLUSIVE`:
///   the kernel wakes one waiting shard per client); a shard well ahead of the least-loaded one
///   hands a stream it accepted over to it, and the stream counts against the receiving shard's
///   `max_connections`.
/// * **Everywhere else** (TCP on other systems): one acceptor thread accepts and
///   hands each stream, before its handshake, to the least-loaded shard (fewest connections,
///   counting those handed over and not yet taken; ties round-robin) through the shard's command
///   queue and waker. The handshake runs on the shard.
///
/// A shard that has been running one turn for more than 50 ms (a handler that blocks) is never
/// chosen to receive a stream: it would serve it only when it returns.
///
/// A connection lives on one shard from accept to close; its [`ConnId`] carries the shard
/// ([`ConnId::shard`]), so a [`ShardedHandle`] reaches it from any thread. Windows named pipes
/// are refused by [`Sharded::listen`]: serve a pipe with one [`Reactor`].
///
/// Each shard is a [`Reactor`] with the same [`ReactorConfig`], except the memory budget: the
/// group's budget is split evenly, each shard getting `budget / N`, and the shards share the
/// one leader that may read a large message past the budget, so the shards together hold what
/// one reactor with the whole budget would (see [`crate::budget`]). Shards share nothing else: a handler sees the connections of
/// its own shard, and reaches the others through a [`ShardedHandle`].
///
/// Stopping any shard ([`Context::stop`] in a handler, an error, a panic) stops them all;
/// [`Sharded::run`] returns when every shard has stopped.
///
/// ```
/// use mpconn::reactor::options::{ListenOptions, ReactorConfig};
/// use mpconn::reactor::{ConnId, Context, Handler, Sharded};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
///         let _ = ctx.send(conn, message);
///     }
/// }
///
/// # fn main() -> mpconn::Result<()> {
/// // Two shards, each with its own handler (the factory gets the shard's index).
/// let mut sharded = Sharded::new(2, ReactorConfig::default(), |_shard| Echo)?;
/// let listener = sharded.listen("127.0.0.1:0", ListenOptions::new().authkey("secret"))?;
/// let address = listener.address().clone();
/// let handle = sharded.handle();
/// let clients = std::thread::spawn(move || -> mpconn::Result<()> {
///     for _ in 0..4 {
///         let mut conn = mpconn::Client::new(address.clone()).authkey("secret").connect()?;
///         conn.send_bytes(b"ping")?;
///         assert_eq!(conn.recv_bytes()?, b"ping");
///     }
///     handle.stop()
/// });
/// sharded.run()?; // one thread per shard, until stopped
/// clients.join().unwrap()?;
/// let stats = sharded.handle().stats();
/// assert_eq!(stats.total.messages, 4);
/// assert_eq!(stats.shards.len(), 2);
/// # Ok(()) }
/// ```
pub struct Sharded<H: Handler> {
    shards: Vec<Reactor<Counted<H>>>,
    acceptor: Acceptor,
    handle: ShardedHandle,
    config: ReactorConfig,
}

impl<H: Handler> std::fmt::Debug for Sharded<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharded")
            .field("shards", &self.shards.len())
            .field("acceptor_listeners", &self.acceptor.listeners.len())
            .finish_non_exhaustive()
    }
}

impl<H: Handler + Send> Sharded<H> {
    /// `shards` reactors (0: [`available_shards`], one per core) with `config`, the memory budget
    /// split evenly among them, and a handler each from `factory(shard_index)`. More than
    /// [`MAX_SHARDS`] is an error.
    pub fn new(shards: usize, config: ReactorConfig, mut factory: impl FnMut(usize) -> H) -> Result<Sharded<H>> {
        let n = if shards == 0 { available_shards() } else { shards };
        if n > MAX_SHARDS {
            return Err(Error::Config(format!("{n} shards: at most {MAX_SHARDS}")));
        }
        let mut config = config;
        config.memory_budget = config.memory_budget.map(|b| (b / n).max(1));
        let acceptor = Acceptor::new()?;
        let mut reactors = Vec::with_capacity(n);
        let (mut handles, mut gauges, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        // One range of ids for the group: its shards' ids differ by their shard.
        let first_generation = super::core::first_generation();
        // One memory-budget leader in the whole group, as in one reactor with the whole budget.
        let lead = Arc::new(crate::budget::GroupLead::default());
        for i in 0..n {
            let c = Arc::new(Counts::default());
            let g = Arc::new(Gauges::default());
            let counted = Counted { inner: factory(i), counts: c.clone() };
            let mut r = Reactor::with_first_generation(counted, config.clone(), first_generation)?;
            r.core.make_shard(i, g.clone());
            r.core.budget.share_lead(lead.clone(), i + 1);
            handles.push(r.handle());
            gauges.push(g);
            counts.push(c);
            reactors.push(r);
        }
        let handed = (0..n).map(|_| AtomicU64::new(0)).collect();
        let siblings = Arc::new(Siblings { handles, gauges, handed });
        for r in &mut reactors {
            r.core.siblings = Some(siblings.clone());
        }
        let handle =
            ShardedHandle { inner: Arc::new(HandleInner { siblings, counts, acceptor: acceptor.shared.clone() }) };
        Ok(Sharded { shards: reactors, acceptor, handle, config })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The configuration of each shard (the memory budget is the group's divided by the number
    /// of shards).
    pub fn shard_config(&self) -> &ReactorConfig {
        &self.config
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ShardedHandle {
        self.handle.clone()
    }

    /// The handler of shard `index`.
    pub fn handler(&self, index: usize) -> Option<&H> {
        self.shards.get(index).map(|r| &r.handler().inner)
    }

    /// The handler of shard `index`, mutably.
    pub fn handler_mut(&mut self, index: usize) -> Option<&mut H> {
        self.shards.get_mut(index).map(|r| &mut r.handler_mut().inner)
    }

    /// Every handler, by shard index.
    pub fn handlers(&self) -> impl Iterator<Item = &H> {
        self.shards.iter().map(|r| &r.handler().inner)
    }

    /// Runs a closure with shard `index`'s handler and [`Context`], outside any callback (before
    /// [`Sharded::run`]: to connect out from a given shard, say). `None` for no such shard.
    pub fn with_shard<R>(&mut self, index: usize, f: impl FnOnce(&mut H, &mut Context<'_>) -> R) -> Option<R> {
        let r = self.shards.get_mut(index)?;
        Some(r.with_handler(|h, ctx| f(&mut h.inner, ctx)))
    }

    /// Listens on `address` for every shard: on Linux a TCP address gets one `SO_REUSEPORT`
    /// socket per shard (the kernel balances) and a Unix address one socket every shard polls
    /// (`EPOLLEXCLUSIVE`; [`Balance::Shared`]); anything else one socket that the acceptor
    /// thread serves, handing each accepted stream to the least-loaded shard. One shard listens
    /// itself. `options.max_connections` applies per shard. A Windows named pipe is refused.
    /// [`Sharded::listen_with`] chooses the balance instead.
    pub fn listen(&mut self, address: impl IntoAddress, options: ListenOptions) -> Result<ShardedListener> {
        let address = address.into_address()?;
        let balance = if self.shards.len() == 1 {
            Balance::Single
        } else if cfg!(target_os = "linux") && matches!(address, Address::Inet { .. }) {
            Balance::ReusePort
        } else if cfg!(target_os = "linux") {
            Balance::Shared
        } else {
            Balance::Acceptor
        };
        self.listen_with(address, options, balance)
    }

    /// [`Sharded::listen`] with the balance chosen: [`Balance::Acceptor`] serves any address
    /// but a named pipe, on every OS, and spreads by load where the kernel's `SO_REUSEPORT`
    /// hash ignores it (a service with a few long, heavy connections: BENCHMARKS.md, "accept
    /// balance"), at the cost of one thread doing every accept; [`Balance::ReusePort`] is for
    /// TCP on Linux, [`Balance::Shared`] for Linux (falling back to the acceptor on kernels
    /// before 4.5), [`Balance::Single`] for a group of one shard. Another choice is refused
    /// ([`Error::Config`]) before anything is bound.
    ///
    /// ```no_run
    /// # use mpconn::reactor::{Balance, Context, ConnId, Handler, Sharded, options::{ListenOptions, ReactorConfig}};
    /// # struct Echo;
    /// # impl Handler for Echo {
    /// #     fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, m: &[u8]) { let _ = ctx.send(conn, m); }
    /// # }
    /// let mut group = Sharded::new(4, ReactorConfig::default(), |_| Echo)?;
    /// // Least-loaded placement for TCP too, instead of the kernel's hash.
    /// let l = group.listen_with("127.0.0.1:6000", ListenOptions::new().authkey("secret"), Balance::Acceptor)?;
    /// assert_eq!(l.balance(), Balance::Acceptor);
    /// group.run()?;
    /// # Ok::<(), mpconn::Error>(())
    /// ```
    pub fn listen_with(
        &mut self,
        address: impl IntoAddress,
        options: ListenOptions,
        balance: Balance,
    ) -> Result<ShardedListener> {
        let address = address.into_address()?;
        if matches!(address, Address::Pipe(_)) && self.shards.len() > 1 {
            return Err(Error::Config(
                "sharded reactors do not serve named pipes: use one Reactor for a pipe address".into(),
            ));
        }
        let refused = |why: &str| Err(Error::Config(format!("{balance:?} balance for {address}: {why}")));
        match balance {
            Balance::Single if self.shards.len() != 1 => return refused("a group of one shard only"),
            Balance::ReusePort if !(cfg!(target_os = "linux") && matches!(address, Address::Inet { .. })) => {
                return refused("TCP on Linux only");
            }
            Balance::Shared if !cfg!(target_os = "linux") => return refused("Linux only"),
            Balance::Acceptor | Balance::Shared | Balance::ReusePort if self.shards.len() == 1 => {
                return refused("a group of several shards only");
            }
            _ => {}
        }
        // Settings no peer could authenticate under are refused here, before the bind.
        options.connection.session_factory(&self.config)?;
        match balance {
            Balance::Single => {
                let l = self.shards[0].listen(address, options)?;
                let address = self.shards[0].listener_address(l).cloned().ok_or(Error::Closed("the listener"))?;
                Ok(ShardedListener { address, balance: Balance::Single })
            }
            #[cfg(target_os = "linux")]
            Balance::ReusePort => self.listen_reuse_port(&address, options),
            Balance::Shared | Balance::Acceptor => {
                let socket = crate::transport::bind_listener(Some(address), None, options.backlog)?;
                #[cfg(target_os = "linux")]
                let socket = match balance {
                    Balance::Shared => match self.listen_shared_socket(socket, options.clone())? {
                        Ok(listener) => return Ok(listener),
                        Err(socket) => socket,
                    },
                    _ => socket,
                };
                let address = socket.address().clone();
                self.acceptor.add(socket, &options, self.shards.len())?;
                Ok(ShardedListener { address, balance: Balance::Acceptor })
            }
            #[allow(unreachable_patterns)] // ReusePort off Linux: refused above
            _ => refused("not offered here"),
        }
    }

    /// Every shard polls `socket` ([`Balance::Shared`]); `Ok(Err(socket))` gives it back when the
    /// kernel cannot (`EPOLLEXCLUSIVE` needs Linux 4.5), for the acceptor thread.
    #[cfg(target_os = "linux")]
    fn listen_shared_socket(
        &mut self,
        socket: SocketListener,
        options: ListenOptions,
    ) -> Result<std::result::Result<ShardedListener, SocketListener>> {
        let address = socket.address().clone();
        match self.listen_shared(&socket, &options) {
            Ok(mut ids) => {
                // The first shard keeps the socket file (and removes it when it stops).
                let max = options.max_connections;
                match self.shards[0].core.add_listener_with(socket, options, true) {
                    Ok(first) => ids.insert(0, first),
                    Err(e) => {
                        for (i, id) in ids.into_iter().enumerate() {
                            self.shards[i + 1].core.remove_listener(id);
                        }
                        return Err(e);
                    }
                }
                // One set of slots for all the shards' entries: a stream handed over counts
                // against the receiving shard's connection limit, taken before it is accepted.
                let slots = ListenerSlots::new(max, ids.iter().copied().map(Some).collect());
                for (shard, (reactor, &id)) in self.shards.iter_mut().zip(ids.iter()).enumerate() {
                    reactor.core.set_listener_slots(id, slots.clone(), shard);
                }
                Ok(Ok(ShardedListener { address, balance: Balance::Shared }))
            }
            Err(e) => {
                log::info!("{address}: no shared accept ({e}); one acceptor thread serves the shards");
                Ok(Err(socket))
            }
        }
    }

    /// Gives every shard but the first a handle of `socket`, registered exclusive, and returns
    /// their listener ids (shards 1, 2, ...); on failure removes what it added.
    #[cfg(target_os = "linux")]
    fn listen_shared(
        &mut self,
        socket: &SocketListener,
        options: &ListenOptions,
    ) -> Result<Vec<crate::reactor::ListenerId>> {
        let mut added = Vec::new();
        for (i, reactor) in self.shards.iter_mut().enumerate().skip(1) {
            let result = socket
                .try_clone_sharing()
                .map_err(Error::from)
                .and_then(|handle| reactor.core.add_listener_with(handle, options.clone(), true));
            match result {
                Ok(id) => added.push((i, id)),
                Err(e) => {
                    for (i, id) in added {
                        self.shards[i].core.remove_listener(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(added.into_iter().map(|(_, id)| id).collect())
    }

    #[cfg(target_os = "linux")]
    fn listen_reuse_port(&mut self, address: &Address, options: ListenOptions) -> Result<ShardedListener> {
        // The first socket learns the port (when 0 was asked for); the others join it.
        let first = SocketListener::bind_reuse_port(address, options.backlog)?;
        let bound = first.address().clone();
        let mut sockets = vec![first];
        for _ in 1..self.shards.len() {
            sockets.push(SocketListener::bind_reuse_port(&bound, options.backlog)?);
        }
        log::debug!("listening on {bound} with {} SO_REUSEPORT sockets", sockets.len());
        for (reactor, socket) in self.shards.iter_mut().zip(sockets) {
            reactor.core.add_listener(socket, options.clone())?;
        }
        Ok(ShardedListener { address: bound, balance: Balance::ReusePort })
    }

    /// Runs every shard on a thread of its own (and the acceptor, if a listener needs it) until
    /// stopped: by [`ShardedHandle::stop`], or when any shard stops. Returns the first error a
    /// shard returned; a shard that panicked is reported as [`Error::Closed`].
    pub fn run(&mut self) -> Result<()> {
        let handle = self.handle.clone();
        let backoff = self.config.accept_backoff;
        let acceptor = &mut self.acceptor;
        let shards = &mut self.shards;
        std::thread::scope(|s| {
            let mut threads = Vec::with_capacity(shards.len());
            let mut result = Ok(());
            for (i, reactor) in shards.iter_mut().enumerate() {
                let guard = StopAll(handle.clone());
                let spawned =
                    std::thread::Builder::new().name(format!("mpconn-shard-{i}")).spawn_scoped(s, move || {
                        let _guard = guard; // however this shard ends, the others stop too
                        reactor.run()
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let accepting = if result.is_ok() && !acceptor.listeners.is_empty() {
                let h = handle.clone();
                match std::thread::Builder::new().name("mpconn-acceptor".into()).spawn_scoped(s, move || {
                    let _guard = StopAll(h.clone());
                    acceptor.run(&h, backoff);
                }) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        result = Err(e.into());
                        None
                    }
                }
            } else {
                None
            };
            if result.is_err() {
                let _ = handle.stop();
            }
            for t in threads {
                let r = t.join().unwrap_or(Err(Error::Closed("a shard's thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            if let Some(t) = accepting
                && t.join().is_err()
                && result.is_ok()
            {
                result = Err(Error::Closed("the acceptor's thread panicked"));
            }
            result
        })
    }
}

/// Stops the whole group when dropped: each shard's thread and the acceptor hold one, so one
/// that ends (stopped, failed or panicked) takes the others with it.
struct StopAll(ShardedHandle);

impl Drop for StopAll {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            log::debug!("stopping the other shards: {e}");
        }
    }
}
