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
//! (`Reactor::as_raw_fd`) becomes readable whenever it has work, so another event loop can wait
//! on it (on Windows, call `run_once` from the outer loop). [`Handle`] lets other threads send,
//! close and stop.

mod core;
pub mod handle;
pub mod options;
mod timers;
mod write_queue;

use std::io;
#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Token};

pub use self::core::Context;
use self::core::{Core, Entry, Phase, WAKER_TOKEN, index_of};
use self::handle::Command;
pub use self::handle::Handle;
use self::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
use self::timers::TimerKind;
use crate::address::Address;
use crate::blocking::IntoAddress;
use crate::error::Result;
use crate::wire::frame::{FrameDecoder, FrameError, SliceFrames};
use crate::wire::handshake::{HANDSHAKE_MAX_MESSAGE, Handshake, Nonce};

/// Identifies a connection of a reactor. A closed connection's id never names a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

/// Identifies a listener of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}.{}", self.0 & 0xffff_ffff, self.0 >> 32)
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
}

impl SendError {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            SendError::NoSuchConnection => "no such connection",
            SendError::Closing => "the connection is closing",
            SendError::NotOpen => "the connection is not open yet",
            SendError::Full { .. } => "the write queue is full",
        }
    }
}

/// The user's callbacks. Only `on_message` is required.
pub trait Handler {
    /// A connection is open: accepted or connected, and authenticated if it has a key.
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: &Address) {
        let _ = (ctx, conn, peer);
    }

    /// A whole message arrived. The slice is valid for the call only.
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]);

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
        let events = Events::with_capacity(config.events_capacity.max(16));
        let scratch = vec![0u8; config.read_buffer_size.max(4096)];
        Ok(Reactor { core: Core::new(config)?, handler, events, scratch, ready: Vec::new(), stopped: false })
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

    /// Deadlines pending (for tests of the timer structure's size).
    pub fn pending_deadlines(&self) -> usize {
        self.core.timers.len()
    }

    /// Runs until stopped ([`Context::stop`] or [`Handle::stop`]).
    pub fn run(&mut self) -> Result<()> {
        while self.run_once(None)? == Turn::Running {}
        Ok(())
    }

    /// One turn: waits up to `timeout` (`None`: until something happens) for events, handles
    /// them, fires due deadlines, writes queued messages, and returns.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<Turn> {
        if self.stopped {
            return Ok(Turn::Stopped);
        }
        let now = Instant::now();
        let mut wait = timeout;
        if self.core.has_pending_work() || self.core.stopping.is_some() {
            wait = Some(Duration::ZERO);
        }
        if let Some(next) = self.core.timers.next() {
            let until = next.saturating_duration_since(now);
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        match self.core.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        self.ready.clear();
        self.ready.extend(self.events.iter().map(|e| {
            let closed = e.is_read_closed() || e.is_error();
            (e.token(), e.is_readable() || closed, e.is_writable() || e.is_error(), closed)
        }));
        let events_full = self.ready.len() == self.events.capacity();
        let ready = std::mem::take(&mut self.ready);
        for &(token, readable, writable, closed) in &ready {
            if token == WAKER_TOKEN {
                self.drain_commands();
                self.drain_reported();
                continue;
            }
            self.on_event(token.0 as u64, readable, writable, closed);
            self.settle();
        }
        self.ready = ready;

        let carry = std::mem::take(&mut self.core.carry);
        for id in carry {
            self.read_conn(id, false);
            self.settle();
        }
        let retry = std::mem::take(&mut self.core.accept_retry);
        for id in retry {
            self.accept(id);
            self.settle();
        }
        self.fire_deadlines(Instant::now());
        self.flush_dirty();
        self.settle();
        if self.core.stopping.is_some() {
            self.progress_stop();
        }
        if self.stopped {
            return Ok(Turn::Stopped);
        }
        // An outer loop waiting on our descriptor must hear about work no OS event announces.
        if events_full || self.core.has_pending_work() {
            let _ = self.core.shared.waker.wake();
        }
        Ok(Turn::Running)
    }

    fn ctx(&mut self) -> (&mut H, Context<'_>) {
        (&mut self.handler, Context { core: &mut self.core })
    }

    /// Handles readiness that a transport reported itself (Windows pipes) as poller events.
    fn drain_reported(&mut self) {
        let reported = std::mem::take(&mut *self.core.shared.ready.lock().unwrap_or_else(|p| p.into_inner()));
        for token in reported {
            self.on_event(token as u64, true, true, false);
            self.settle();
        }
    }

    fn on_event(&mut self, id: u64, readable: bool, writable: bool, closed: bool) {
        match self.core.entries.get(index_of(id)) {
            Some(Entry::Listener(l)) if l.id.0 == id => self.accept(id),
            Some(Entry::Conn(c)) if c.id.0 == id => {
                if matches!(c.phase, Phase::Connecting(_)) {
                    if readable || writable {
                        self.finish_connect(id);
                    }
                    return;
                }
                if writable {
                    self.core.flush(id);
                }
                if readable {
                    // Once the peer closed or reset, a read can come back short with data
                    // still queued, and no further edge will come: read until the end.
                    self.read_conn(id, !closed);
                }
            }
            // A stale event for an entry closed earlier in this turn.
            _ => {}
        }
    }

    /// Runs the callbacks the core recorded (opened, drained, closes) until none remain.
    fn settle(&mut self) {
        loop {
            if let Some(id) = self.core.opened.pop() {
                let peer = match self.core.conn(id.0) {
                    Some(c) => c.peer.clone(),
                    None => continue,
                };
                let (h, mut ctx) = self.ctx();
                h.on_open(&mut ctx, id, &peer);
            } else if let Some((id, reason)) = self.core.to_close.pop() {
                self.finish_close(id, reason);
            } else if let Some(id) = self.core.drained.pop() {
                if self.core.conn(id.0).is_some() {
                    let (h, mut ctx) = self.ctx();
                    h.on_drained(&mut ctx, id);
                }
            } else {
                break;
            }
        }
    }

    fn finish_close(&mut self, id: ConnId, reason: CloseReason) {
        let Some(mut c) = self.core.remove_conn(id) else {
            return;
        };
        // Best effort: a last queued message (such as #FAILURE#) goes out before the close.
        let _ = c.out.flush(&mut c.stream);
        log::debug!("{id} closed: {reason}");
        drop(c);
        let (h, mut ctx) = self.ctx();
        h.on_close(&mut ctx, id, reason);
    }

    fn accept(&mut self, id: u64) {
        loop {
            if self.core.stopping.is_some() {
                return;
            }
            let backoff = self.core.config.accept_backoff;
            let Some(l) = self.core.listener(id) else {
                return;
            };
            if l.open >= l.max_connections {
                l.paused = true;
                return;
            }
            match l.socket.accept_nonblocking() {
                Ok((stream, peer)) => {
                    l.paused = false;
                    let opts = l.opts.clone();
                    let lid = l.id;
                    let phase = match opts.handshake_config() {
                        Some(config) => match Nonce::random() {
                            Ok(nonce) => Phase::Handshaking(Box::new(Handshake::listener(&config, nonce))),
                            Err(e) => {
                                log::error!("no random challenge, connection dropped: {e}");
                                continue;
                            }
                        },
                        None => Phase::Open,
                    };
                    let handshaking = matches!(phase, Phase::Handshaking(_));
                    match self.core.add_conn(stream, peer, phase, opts, Some(lid)) {
                        Ok(cid) => {
                            if let Some(l) = self.core.listener(id) {
                                l.open += 1;
                            }
                            if handshaking {
                                self.queue_handshake_output(cid.0);
                            } else {
                                self.core.opened.push(cid);
                            }
                        }
                        Err(e) => log::warn!("accepted connection dropped: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if crate::transport::is_transient_accept_error(&e) => {
                    continue;
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning; existing
                    // connections keep being served.
                    log::warn!("accept on {} failed: {e}; pausing accepts", l.socket.address());
                    l.paused = true;
                    self.core.timers.add(Instant::now() + backoff, id, TimerKind::ListenerResume);
                    return;
                }
            }
        }
    }

    fn finish_connect(&mut self, id: u64) {
        let Some(c) = self.core.conn(id) else { return };
        let cid = c.id;
        let result = match c.stream.take_error() {
            Ok(None) => c.stream.peer_address().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::NotConnected {
                return; // not finished yet (a spurious wakeup)
            }
            self.core.to_close.push((cid, CloseReason::Error(e.into())));
            return;
        }
        let Phase::Connecting(hs) = std::mem::replace(&mut c.phase, Phase::Open) else {
            return;
        };
        self.core.read_interest_only(id);
        match hs {
            Some(hs) => {
                if let Some(c) = self.core.conn(id) {
                    c.phase = Phase::Handshaking(hs);
                }
                // The listener speaks first; bytes may already be waiting.
                self.read_conn(id, false);
            }
            None => self.core.opened.push(cid),
        }
    }

    /// Moves what the handshake wants to send into the write queue.
    fn queue_handshake_output(&mut self, id: u64) {
        let Some(c) = self.core.conn(id) else { return };
        if let Phase::Handshaking(hs) = &mut c.phase {
            while let Some(m) = hs.poll_transmit() {
                c.out.push_owned(m);
            }
            let cid = c.id;
            self.core.mark_dirty(cid);
        }
    }

    /// Reads a connection within its budget and delivers what arrived.
    /// `short_read_ends`: a read that returns less than asked means the socket is empty (true
    /// for an ordinary readiness edge; false when the peer has closed, or without an edge).
    fn read_conn(&mut self, id: u64, short_read_ends: bool) {
        let budget = self.core.config.read_budget;
        let mut read = 0usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(c) = self.core.conn(id) {
            if c.closing || matches!(c.phase, Phase::Connecting(_)) {
                break;
            }
            let cid = c.id;
            // Whole messages are parsed in the shared buffer. A small incomplete tail left by
            // the last read moves to the front of it (re-framed) so reads stay large; only a
            // large message in progress reads into the connection's own buffer.
            let small_tail = scratch.len() / 16;
            // A connection streaming large messages keeps reading into its own (kept) buffer.
            let prefix = if c.decoder.capacity() >= scratch.len() {
                None
            } else if c.decoder.is_idle() {
                Some(0)
            } else {
                c.decoder.drain_pending_into(&mut scratch[..small_tail])
            };
            let own = prefix.is_none();
            let prefix = prefix.unwrap_or(0);
            // Whether a short read empties the source depends on the transport.
            let short_read_ends = short_read_ends && c.stream.short_read_drains();
            let (result, asked) = if own {
                let buf = c.decoder.read_buf();
                let asked = buf.len();
                (c.stream.read_retry(buf), asked)
            } else {
                (c.stream.read_retry(&mut scratch[prefix..]), scratch.len() - prefix)
            };
            match result {
                Ok(0) => {
                    let mid = prefix > 0 || c.decoder.in_message();
                    let reason = match &c.phase {
                        Phase::Handshaking(_) => {
                            CloseReason::AuthenticationFailed(crate::AuthenticationError::Disconnected)
                        }
                        _ if mid => CloseReason::PeerClosedMidMessage,
                        _ => CloseReason::PeerClosed,
                    };
                    self.core.to_close.push((cid, reason));
                    break;
                }
                Ok(n) => {
                    read += n;
                    let now = Instant::now();
                    c.last_activity = now;
                    let outcome = if own {
                        c.decoder.advance(n);
                        let mut decoder = std::mem::take(&mut c.decoder);
                        let r = self.deliver(cid, &mut decoder);
                        if let Some(c) = self.core.conn(id) {
                            c.decoder = decoder;
                        }
                        r
                    } else {
                        let mut frames = SliceFrames::new(&scratch[..prefix + n]);
                        let r = self.deliver(cid, &mut frames);
                        if r.is_ok() {
                            if let Some(c) = self.core.conn(id) {
                                c.decoder.feed(frames.rest());
                            }
                        }
                        r
                    };
                    match outcome {
                        Ok(completed) => self.track_partial(id, completed, now),
                        Err(reason) => {
                            self.core.to_close.push((cid, reason));
                            break;
                        }
                    }
                    if read >= budget {
                        self.core.carry.push(id);
                        break;
                    }
                    // A short read means the socket is empty now; data that arrives later
                    // raises a new edge, so no read that would only say WouldBlock.
                    if short_read_ends && n < asked {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing new: the tail goes back where it was.
                    c.decoder.feed(&scratch[..prefix]);
                    break;
                }
                Err(e) => {
                    c.decoder.feed(&scratch[..prefix]);
                    self.core.to_close.push((cid, CloseReason::Error(e.into())));
                    break;
                }
            }
        }
        self.scratch = scratch;
        // Keep the connection's own buffer while it streams; free it once quiet.
        let release_after = self.core.config.buffer_release_after;
        if let Some(c) = self.core.conn(id) {
            if c.decoder.capacity() > 0 && !c.release_armed {
                c.release_armed = true;
                let when = c.last_activity + release_after;
                self.core.timers.add(when, id, TimerKind::ReleaseBuffer);
            }
        }
        // Replies written in the callbacks leave now, in one write.
        if let Some(c) = self.core.conn(id) {
            if c.dirty {
                self.core.flush(id);
            }
        }
    }

    /// Arms the partial-message deadline when a message is left incomplete.
    fn track_partial(&mut self, id: u64, completed: usize, now: Instant) {
        let Some(c) = self.core.conn(id) else { return };
        if !c.decoder.in_message() {
            c.partial_since = None;
        } else if c.partial_since.is_none() || completed > 0 {
            c.partial_since = Some(now);
            let when = now + c.opts.partial_message_timeout;
            self.core.timers.add(when, id, TimerKind::PartialMessage);
        }
    }

    /// Hands every complete frame of `source` to the handshake or the handler. Returns how many
    /// were taken, or why the connection must close.
    fn deliver(&mut self, cid: ConnId, source: &mut impl FrameSource) -> Result<usize, CloseReason> {
        let mut count = 0;
        loop {
            let Some(c) = self.core.conn(cid.0) else {
                return Ok(count);
            };
            if c.closing {
                return Ok(count);
            }
            match &mut c.phase {
                Phase::Handshaking(hs) => {
                    let frame = match source.next(HANDSHAKE_MAX_MESSAGE) {
                        Ok(Some(f)) => f,
                        Ok(None) => return Ok(count),
                        Err(e) => {
                            return Err(CloseReason::AuthenticationFailed(crate::AuthenticationError::Protocol(
                                e.to_string(),
                            )));
                        }
                    };
                    count += 1;
                    let result = hs.handle_message(frame);
                    let done = hs.is_authenticated();
                    let dialect = hs.dialect();
                    self.queue_handshake_output(cid.0);
                    if let Err(e) = result {
                        return Err(CloseReason::AuthenticationFailed(e));
                    }
                    if done {
                        let Some(c) = self.core.conn(cid.0) else {
                            return Ok(count);
                        };
                        c.phase = Phase::Open;
                        if c.opts.dialect != dialect && c.listener.is_none() {
                            // A connecting side learned the dialect from the challenge.
                            let mut opts = (*c.opts).clone();
                            opts.dialect = dialect;
                            c.opts = Arc::new(opts);
                        }
                        let peer = c.peer.clone();
                        let (h, mut ctx) = self.ctx();
                        h.on_open(&mut ctx, cid, &peer);
                    }
                }
                Phase::Open => {
                    let limit = c.opts.max_message_size;
                    match source.next(limit) {
                        Ok(Some(frame)) => {
                            count += 1;
                            let (h, mut ctx) = (&mut self.handler, Context { core: &mut self.core });
                            h.on_message(&mut ctx, cid, frame);
                        }
                        Ok(None) => return Ok(count),
                        Err(e) => return Err(CloseReason::Protocol(e)),
                    }
                }
                Phase::Connecting(_) => return Ok(count),
            }
        }
    }

    fn fire_deadlines(&mut self, now: Instant) {
        let release_after = self.core.config.buffer_release_after;
        while let Some((id, kind)) = self.core.timers.pop_expired(now) {
            if kind == TimerKind::ListenerResume {
                if let Some(l) = self.core.listener(id) {
                    l.paused = false;
                    self.accept(id);
                    self.settle();
                }
                continue;
            }
            let Some(c) = self.core.conn(id) else {
                continue;
            };
            let cid = c.id;
            let reason = match kind {
                // A connection closing locally no longer reads: an incomplete message or
                // silence is ours now; only the close-flush deadline applies.
                TimerKind::Handshake | TimerKind::Idle | TimerKind::PartialMessage if c.closing => None,
                TimerKind::Handshake if !matches!(c.phase, Phase::Open) => Some(CloseReason::HandshakeTimeout),
                TimerKind::Idle => match c.opts.idle_timeout {
                    Some(t) if now >= c.last_activity + t => Some(CloseReason::IdleTimeout),
                    Some(t) => {
                        let when = c.last_activity + t;
                        self.core.timers.add(when, id, TimerKind::Idle);
                        None
                    }
                    None => None,
                },
                TimerKind::PartialMessage => match c.partial_since {
                    Some(since) if now >= since + c.opts.partial_message_timeout => {
                        Some(CloseReason::PartialMessageTimeout)
                    }
                    _ => None, // completed, or re-armed for a later message
                },
                TimerKind::CloseFlush if c.closing => Some(CloseReason::Local),
                TimerKind::ReleaseBuffer => {
                    let quiet_until = c.last_activity + release_after;
                    if now < quiet_until {
                        self.core.timers.add(quiet_until, id, TimerKind::ReleaseBuffer);
                    } else {
                        c.release_armed = false;
                        c.decoder.shrink_if_idle();
                    }
                    None
                }
                _ => None,
            };
            if let Some(reason) = reason {
                self.core.to_close.push((cid, reason));
                self.settle();
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.core.dirty);
        for id in dirty {
            self.core.flush(id);
        }
    }

    fn drain_commands(&mut self) {
        let commands = std::mem::take(&mut *self.core.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for command in commands {
            match command {
                Command::Send(id, msg) => {
                    if let Err((e, msg)) = self.core.send_owned(id, msg) {
                        let (h, mut ctx) = self.ctx();
                        h.on_send_refused(&mut ctx, id, msg, e);
                    }
                }
                Command::Close(id) => self.core.close(id),
                Command::Stop => {
                    let (_, mut ctx) = self.ctx();
                    ctx.stop();
                }
                Command::Call(f) => {
                    let (_, mut ctx) = self.ctx();
                    f(&mut ctx);
                }
            }
            self.settle();
        }
    }

    /// A graceful stop: listeners closed at once, connections closed as their queues drain,
    /// the rest closed at the deadline.
    fn progress_stop(&mut self) {
        let Some(deadline) = self.core.stopping else {
            return;
        };
        let keys: Vec<u64> = self
            .core
            .entries
            .iter()
            .map(|(_, e)| match e {
                Entry::Conn(c) => c.id.0,
                Entry::Listener(l) => l.id.0,
            })
            .collect();
        let past = Instant::now() >= deadline;
        for id in keys {
            if self.core.listener(id).is_some() {
                self.core.remove_listener(ListenerId(id));
                continue;
            }
            let Some(c) = self.core.conn(id) else {
                continue;
            };
            let cid = c.id;
            if past || c.out.is_empty() || !matches!(c.phase, Phase::Open) {
                self.core.to_close.push((cid, CloseReason::ReactorStopped));
            } else if !c.closing {
                c.closing = true;
                self.core.mark_dirty(cid);
            }
        }
        self.settle();
        self.flush_dirty();
        if self.core.entries.is_empty() {
            self.stopped = true;
            self.core.shared.closed.store(true, Ordering::Release);
        }
    }
}

#[cfg(unix)]
impl<H: Handler> AsRawFd for Reactor<H> {
    /// The descriptor of the reactor's poll: readable whenever a turn has work. Register it
    /// (read interest) in another event loop and call [`Reactor::run_once`] with a zero timeout
    /// when it fires.
    fn as_raw_fd(&self) -> RawFd {
        self.core.poll.as_raw_fd()
    }
}

impl<H: Handler> Drop for Reactor<H> {
    fn drop(&mut self) {
        self.core.shared.closed.store(true, Ordering::Release);
    }
}

/// Where frames come from during delivery: the shared read buffer or a connection's own.
trait FrameSource {
    fn next(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError>;
}

impl FrameSource for FrameDecoder {
    fn next(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError> {
        self.next_frame_limited(limit)
    }
}

impl FrameSource for SliceFrames<'_> {
    fn next(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError> {
        self.next_frame_limited(limit)
    }
}

// The handle crosses threads.
const _: fn() = || {
    fn is_send_sync_clone<T: Send + Sync + Clone>() {}
    is_send_sync_clone::<Handle>();
};
