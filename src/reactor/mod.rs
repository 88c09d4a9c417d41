//! The reactor: one thread, one `mio::Poll`, many listeners and connections, and callbacks.
//!
//! It accepts without blocking, reads each connection into one shared buffer and decodes frames
//! in place (a message that arrives whole is handed to [`Handler::on_message`] as a slice of that
//! buffer, without a copy; only an incomplete tail is kept per connection), runs every handshake
//! as the same sans-IO state machine the blocking API uses, and writes through a per-connection
//! queue that coalesces small messages and never copies large owned ones.
//!
//! ```
//! use mpconn::reactor::{Context, ConnId, Handler, Reactor};
//! use mpconn::reactor::options::ListenOptions;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
//!         let _ = ctx.send(conn, message);
//!     }
//! }
//!
//! # fn main() -> mpconn::Result<()> {
//! let mut reactor = Reactor::new(Echo)?;
//! let listener = reactor.listen("127.0.0.1:0", ListenOptions::new().authkey("secret"))?;
//! let address = reactor.listener_address(listener).unwrap().clone();
//! let handle = reactor.handle();
//! let client = std::thread::spawn(move || -> mpconn::Result<Vec<u8>> {
//!     let mut conn = mpconn::Client::new(address).authkey("secret").connect()?;
//!     conn.send_bytes(b"ping")?;
//!     let reply = conn.recv_bytes();
//!     handle.stop()?;
//!     reply
//! });
//! reactor.run()?;
//! assert_eq!(client.join().unwrap()?, b"ping");
//! # Ok(()) }
//! ```
//!
//! Embedding: [`Reactor::run_once`] does one turn and returns; on Unix the reactor's descriptor
//! (`AsFd` / `AsRawFd`) becomes readable whenever it has work, so another event loop can wait
//! on it: wait until the descriptor is readable or [`Reactor::poll_timeout`] has passed (the
//! reactor's deadlines, such as handshake timeouts, are timers no descriptor announces), then
//! call `run_once(Some(Duration::ZERO))`. `examples/embed_tokio.rs` (tokio's `AsyncFd`) and
//! `examples/embed_poll.rs` (a `poll(2)` loop) show both; on Windows, call `run_once` from the
//! outer loop with a timeout of at most `poll_timeout`. [`Handle`] lets other threads send,
//! close and stop.
//!
//! **Work in a callback is every connection's wait.** Callbacks run on the reactor thread, so
//! while `on_message` works nothing else is read, written or timed out. Unpickling there is the
//! usual trap: the largest allowed message (128 MiB by default) of the densest pickle
//! (`[None, None, ...]`, one value per byte) took 2.9 to 3.5 s per message to decode and print
//! in `mpconn listen` (release build), and every other client waited that long for its reply.
//! Keep callbacks to moving bytes, and decode on a worker thread: copy the message out (the
//! slice lives for the call only), pause the connection so the worker holds at most one of its
//! messages (a peer that sends faster than the worker decodes is throttled by TCP, not queued in
//! memory), and post the answer back through a [`Handle`], resuming the connection there:
//!
//! ```no_run
//! use std::sync::mpsc;
//! use mpconn::reactor::{ConnId, Context, Handle, Handler, Reactor};
//!
//! struct Offload {
//!     jobs: mpsc::Sender<(ConnId, Vec<u8>)>,
//! }
//! impl Handler for Offload {
//!     fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
//!         // Nothing more is delivered for this peer until its answer is posted back (a pause
//!         // takes effect before the next message, even one from the same read).
//!         ctx.pause_reading(conn);
//!         let _ = self.jobs.send((conn, message.to_vec()));
//!     }
//! }
//!
//! fn worker(jobs: mpsc::Receiver<(ConnId, Vec<u8>)>, handle: Handle) {
//!     for (conn, message) in jobs {
//!         let ok = mpconn::pickle::loads_value(&message).is_ok(); // seconds, off the reactor
//!         let reply = mpconn::pickle::dumps(&ok, 4).unwrap_or_default();
//!         // Runs on the reactor thread, in the order posted.
//!         let _ = handle.call(move |ctx| {
//!             let _ = ctx.send_owned(conn, reply);
//!             ctx.resume_reading(conn);
//!         });
//!     }
//! }
//! # fn main() -> mpconn::Result<()> {
//! let (tx, rx) = mpsc::channel();
//! let mut reactor = Reactor::new(Offload { jobs: tx })?;
//! let handle = reactor.handle();
//! std::thread::spawn(move || worker(rx, handle));
//! reactor.run()
//! # }
//! ```
//!
//! With one worker, one slow message still delays the others' answers (not their reads and
//! writes); several workers need an order per connection. `mpconn listen` (`cli/src/work.rs`)
//! keeps a queue per connection served by two workers, one connection at a time each, so one
//! slow peer holds up only itself, and lets a connection queue up to 8 MiB before pausing it.
//! What stays on the reactor thread is the copy out of its buffer: 64 to 90 ms for a 128 MiB
//! message into fresh memory, measured on a loaded machine.

mod accept;
mod core;
mod deadlines;
mod event_loop;
mod handle;
pub mod options;
mod read;
mod shard;
mod slots;
mod write;
mod write_queue;

#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use mio::{Events, Token};

/// The refcounted buffer [`Context::send_shared`] and [`Handle::send_shared`] take (the `bytes`
/// crate's, re-exported so a caller needs no dependency of its own).
pub use bytes::Bytes;

pub use self::core::Context;
use self::core::Core;
pub use self::handle::Handle;
use self::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
pub use self::shard::{
    Balance, MAX_SHARDS, ShardStats, Sharded, ShardedHandle, ShardedListener, ShardedStats, available_shards,
};
use crate::address::{Address, IntoAddress};
use crate::error::Result;

/// Identifies a connection of a reactor. A closed connection's id never names a later one.
///
/// Displayed as `conn#SLOT.GENERATION` for a reactor of its own, and as
/// `conn#SHARD.SLOT.GENERATION` for a shard of a [`Sharded`] group, so the ids of a group are
/// unique across its shards. Each reactor (or group) of a process numbers its generations from
/// its own start, so an id given to another reactor's handle finds no connection there (a send
/// reaches nobody) instead of the one that holds the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The index of the shard that owns this connection, for a connection of a [`Sharded`]
    /// group; `None` for one of a reactor of its own.
    pub fn shard(self) -> Option<usize> {
        let tag = (self.0 >> core::SHARD_SHIFT) & 0xff;
        (tag as usize).checked_sub(1)
    }
}

/// Identifies a listener of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = core::index_of(self.0);
        match self.shard() {
            None => write!(f, "conn#{slot}.{}", self.0 >> 32),
            Some(shard) => write!(f, "conn#{shard}.{slot}.{}", self.0 >> 32),
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed (or never existed).
    #[error("no such connection")]
    NoSuchConnection,
    /// The connection is closing.
    #[error("the connection is closing")]
    Closing,
    /// The handshake has not finished.
    #[error("the connection is not open yet")]
    NotOpen,
    /// The queue is above the high-water mark; wait for `on_drained`.
    #[error("the write queue is full ({queued} bytes queued, high-water mark {high_water_mark})")]
    Full {
        /// Bytes queued now.
        queued: usize,
        /// The connection's high-water mark.
        high_water_mark: usize,
    },
    /// The reactor's memory budget ([`options::ReactorConfig::memory_budget`]) is spent and this
    /// connection already has output queued; as for `Full`, wait for `on_drained` (its queue
    /// emptied). With `auto_pause_reading` (the default) the connection stops reading until its
    /// queue drains, so a peer that never reads its replies is not read on, each request only
    /// to be refused again.
    #[error("the reactor's memory budget is spent ({total} bytes held, budget {budget}; {queued} queued here)")]
    OverBudget {
        /// Bytes queued on this connection now.
        queued: usize,
        /// Bytes held by all connections together.
        total: usize,
        /// The budget.
        budget: usize,
    },
}

/// The user's callbacks. Only `on_message` is required. Every callback gets a [`Context`] to
/// send, close, pause or stop with, and may act on any connection, not only its own.
///
/// ```
/// use std::collections::HashSet;
/// use mpconn::Address;
/// use mpconn::CloseReason;
/// use mpconn::reactor::{ConnId, Context, Handler};
///
/// /// Counts messages per connection and answers each with the count so far.
/// #[derive(Default)]
/// struct Counter {
///     open: HashSet<ConnId>,
///     messages: u64,
/// }
///
/// impl Handler for Counter {
///     fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
///         log::info!("{conn} from {peer}");
///         self.open.insert(conn);
///     }
///     fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _message: &[u8]) {
///         self.messages += 1;
///         if ctx.send(conn, &self.messages.to_be_bytes()).is_err() {
///             ctx.close(conn); // over its high-water mark: this one does not read
///         }
///     }
///     fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
///         self.open.remove(&conn);
///         if reason != CloseReason::PeerClosed {
///             log::warn!("{conn}: {reason}");
///         }
///     }
/// }
/// # let _ = mpconn::reactor::Reactor::new(Counter::default());
/// ```
pub trait Handler {
    /// A connection is open: accepted or connected, and authenticated if it has a key.
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: &Address) {
        let _ = (ctx, conn, peer);
    }

    /// A whole message arrived. The slice is valid for the call only.
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]);

    /// A whole message arrived in the connection's own buffer, which is handed over: called
    /// instead of [`Handler::on_message`] when the message can be given away without a copy.
    /// That is a large message (above the 64 KiB read block) read into the connection's own
    /// decoder, which holds nothing else: a message larger than the shared read buffer
    /// ([`options::ReactorConfig::read_buffer_size`], 1 MiB by default), or one split across
    /// reads that grew the connection's buffer. Messages that arrive whole in the shared buffer
    /// keep the zero-copy slice of `on_message`.
    ///
    /// By default it calls `on_message` with the slice and drops the buffer. Implement it to keep
    /// a large message past the call (for a worker thread, say) without copying it on the
    /// reactor thread: copying 128 MiB into fresh memory there took 62–72 ms, during which no
    /// other connection was served (`mpconn listen` hands its large messages to its workers this
    /// way). The connection's next message gets a new buffer. Memory kept past the call can be
    /// charged to the reactor's memory budget with [`Context::hold_memory`], so that connections
    /// reading more large messages wait while it is held.
    fn on_message_owned(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>) {
        self.on_message(ctx, conn, &message);
    }

    /// A connection closed (or a connect failed); `reason` says why. Its id is dead afterwards.
    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// A connection whose `send` was refused for backpressure has drained its queue.
    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// A message sent through a [`Handle`] was refused (full queue, or the connection is gone);
    /// here it is back. By default it is logged and dropped.
    fn on_send_refused(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>, error: SendError) {
        let _ = ctx;
        log::warn!("message of {} bytes to {conn} refused: {error}", message.len());
    }
}

/// What a turn left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The reactor goes on.
    Running,
    /// The reactor stopped: every connection is closed and `run_once` does nothing more.
    Stopped,
}

/// A single-threaded event loop of listeners and connections. See the module docs.
///
/// [`Reactor::run`] runs until stopped; [`Reactor::run_once`] does one turn, for a loop of your
/// own. Between turns, [`Reactor::with_context`] sends and closes from the owning thread.
///
/// ```
/// use std::time::Duration;
/// use mpconn::reactor::options::ListenOptions;
/// use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};
///
/// struct Hello;
/// impl Handler for Hello {
///     fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mpconn::Address) {
///         let _ = ctx.send(conn, b"hello");
///     }
///     fn on_message(&mut self, ctx: &mut Context<'_>, _: ConnId, _: &[u8]) {
///         ctx.stop(); // the client answered: stop (queues flushed, connections closed)
///     }
/// }
///
/// # fn main() -> mpconn::Result<()> {
/// let mut reactor = Reactor::new(Hello)?;
/// let listener = reactor.listen("127.0.0.1:0", ListenOptions::new().authkey("key"))?;
/// let address = reactor.listener_address(listener).expect("bound").clone();
/// let client = std::thread::spawn(move || -> mpconn::Result<Vec<u8>> {
///     let mut conn = mpconn::Client::new(address).authkey("key").connect()?;
///     let greeting = conn.recv_bytes()?;
///     conn.send_bytes(b"hi")?;
///     Ok(greeting)
/// });
/// // One turn at a time (as `run` does), with a bound of our own.
/// for _ in 0..1000 {
///     if reactor.run_once(Some(Duration::from_millis(10)))? == Turn::Stopped {
///         break;
///     }
/// }
/// assert!(reactor.is_stopped());
/// assert_eq!(client.join().unwrap()?, b"hello");
/// # Ok(()) }
/// ```
pub struct Reactor<H: Handler> {
    core: Core,
    handler: H,
    events: Events,
    /// The shared read buffer (zeroed once, reused by every connection).
    scratch: Vec<u8>,
    /// Readiness of this turn, copied out of `events`.
    ready: Vec<(Token, bool, bool, bool)>,
    stopped: bool,
}

impl<H: Handler> std::fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").field("entries", &self.core.entries.len()).finish_non_exhaustive()
    }
}

impl<H: Handler> Reactor<H> {
    /// A reactor with default settings.
    pub fn new(handler: H) -> Result<Reactor<H>> {
        Reactor::with_config(handler, ReactorConfig::default())
    }

    /// A reactor with `config`.
    pub fn with_config(handler: H, config: ReactorConfig) -> Result<Reactor<H>> {
        Reactor::with_first_generation(handler, config, core::first_generation())
    }

    /// [`Reactor::with_config`] whose ids start at generation `first_generation` (a shard's:
    /// its group's).
    pub(crate) fn with_first_generation(
        handler: H,
        config: ReactorConfig,
        first_generation: u32,
    ) -> Result<Reactor<H>> {
        let events = Events::with_capacity(config.events_capacity.max(16));
        let scratch = vec![0u8; config.read_buffer_size.max(4096)];
        let core = Core::new(config, first_generation)?;
        Ok(Reactor { core, handler, events, scratch, ready: Vec::new(), stopped: false })
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// A `Send + Clone` handle for other threads.
    pub fn handle(&self) -> Handle {
        self.core.handle()
    }

    /// Listens on `address`.
    pub fn listen(&mut self, address: impl IntoAddress, options: ListenOptions) -> Result<ListenerId> {
        self.core.listen(&address.into_address()?, options)
    }

    /// Connects to `address` without blocking.
    pub fn connect(&mut self, address: impl IntoAddress, options: ConnectionOptions) -> Result<ConnId> {
        self.core.connect(&address.into_address()?, options)
    }

    /// The bound address of a listener.
    pub fn listener_address(&mut self, listener: ListenerId) -> Option<&Address> {
        self.core.listener(listener.0).map(|l| l.socket.address())
    }

    /// Runs a closure with a [`Context`], outside any callback (to send or close from the
    /// owning thread between turns).
    pub fn with_context<R>(&mut self, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        f(&mut Context { core: &mut self.core })
    }

    /// Runs a closure with the handler and a [`Context`] together, outside any callback: for
    /// work the owning thread schedules itself (paced sending, periodic broadcasts).
    pub fn with_handler<R>(&mut self, f: impl FnOnce(&mut H, &mut Context<'_>) -> R) -> R {
        let (h, mut ctx) = self.ctx();
        f(h, &mut ctx)
    }

    /// Open connections plus listeners.
    pub fn len(&self) -> usize {
        self.core.entries.len()
    }

    /// True when there are no connections and no listeners.
    pub fn is_empty(&self) -> bool {
        self.core.entries.is_empty()
    }

    /// Bytes all connections hold together by the memory budget's count, and the reads it has
    /// refused so far (see [`Context::budget_usage`]).
    pub fn budget_usage(&self) -> (usize, u64) {
        (self.core.budget.total(), self.core.budget.refusals())
    }

    /// Deadlines pending (for tests of the timer structure's size, through
    /// `mpconn::internal::pending_deadlines`).
    pub(crate) fn pending_deadlines(&self) -> usize {
        self.core.timers.len()
    }

    /// The reactor's earliest deadline (a handshake or idle timeout, a paused listener's next
    /// accept, a connection's close deadline), if any. An event loop that embeds the reactor
    /// must call [`Reactor::run_once`] by then even if the descriptor stays quiet: deadlines are
    /// timers, and no descriptor announces them.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.core.timers.next()
    }

    /// How long an embedding loop may wait before the next [`Reactor::run_once`]:
    /// `Some(Duration::ZERO)` when work is pending that no descriptor announces (reads carried
    /// over by the read budgets, queued sends from [`Reactor::with_context`], callbacks to run, a
    /// stop in progress), the time left to [`Reactor::next_deadline`] otherwise, `None` when only
    /// an event on the reactor's descriptor (or a [`Handle`]) can create work. `run_once` itself
    /// waits exactly this long (bounded by its own timeout); an outer loop waits on the reactor's
    /// descriptor with this timeout and then calls `run_once(Some(Duration::ZERO))`.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.stopped || self.core.has_pending_work() || self.core.stopping.is_some() {
            return Some(Duration::ZERO);
        }
        self.core.timers.next().map(|next| next.saturating_duration_since(Instant::now()))
    }

    /// True once the reactor stopped: every connection is closed and `run_once` does nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Runs until stopped ([`Context::stop`] or [`Handle::stop`]).
    pub fn run(&mut self) -> Result<()> {
        while self.run_once(None)? == Turn::Running {}
        Ok(())
    }
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl<H: Handler> AsRawFd for Reactor<H> {
    /// The descriptor of the reactor's poll (an epoll or kqueue descriptor): readable when there
    /// is work, then call `run_once(Some(Duration::ZERO))`. Register it (read interest; level- or
    /// edge-triggered both work, since a turn that leaves work behind makes it readable again) in
    /// another event loop, and wait at most [`Reactor::poll_timeout`] so the reactor's deadlines
    /// fire. Do not read from it or register it twice.
    fn as_raw_fd(&self) -> RawFd {
        self.core.poll.as_raw_fd()
    }
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl<H: Handler> AsFd for Reactor<H> {
    /// The reactor's poll descriptor, borrowed: see the [`AsRawFd`] implementation. Readable
    /// when there is work: call `run_once(Some(Duration::ZERO))`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        // mio's registry shares the poll's selector descriptor.
        self.core.poll.registry().as_fd()
    }
}

impl<H: Handler> Drop for Reactor<H> {
    fn drop(&mut self) {
        drop(self.core.shared.close());
    }
}

// The handle crosses threads.
const _: fn() = || {
    fn is_send_sync_clone<T: Send + Sync + Clone>() {}
    is_send_sync_clone::<Handle>();
};
