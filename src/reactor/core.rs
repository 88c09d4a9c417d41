//! The reactor's state without the user's handler: the mio `Poll`, the slab of listeners and
//! connections, deadlines and the work lists of a turn. [`Context`] is the user's view of it
//! inside callbacks. Everything that must call the handler lives in `reactor/mod.rs`; this
//! module only records what happened (opened, drained, to close) for it.

use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Poll, Token};
use slab::Slab;

use crate::address::Address;
use crate::error::{Error, Result};
use crate::reactor::handle::{Handle, Shared};
use crate::reactor::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
use crate::reactor::timers::{TimerKind, Timers};
use crate::reactor::write_queue::WriteQueue;
use crate::reactor::{ConnId, ListenerId, SendError};
use crate::transport::{Notify, SocketListener, Stream};
use crate::wire::frame::FrameDecoder;
use crate::wire::handshake::{Handshake, Nonce};

/// Where a connection is in its life.
pub(crate) enum Phase {
    /// A non-blocking connect in progress; the handshake to run once connected.
    Connecting(Option<Box<Handshake>>),
    /// The challenge-response in progress.
    Handshaking(Box<Handshake>),
    /// Authenticated (or no key): messages flow.
    Open,
}

pub(crate) struct ConnEntry {
    pub(crate) id: ConnId,
    pub(crate) stream: Stream,
    pub(crate) decoder: FrameDecoder,
    pub(crate) phase: Phase,
    pub(crate) out: WriteQueue,
    pub(crate) peer: Address,
    pub(crate) listener: Option<ListenerId>,
    pub(crate) opts: Arc<ConnectionOptions>,
    pub(crate) write_interest: bool,
    pub(crate) backpressured: bool,
    /// A local close was asked for: no more reads or deliveries; close once flushed.
    pub(crate) closing: bool,
    pub(crate) last_activity: Instant,
    pub(crate) partial_since: Option<Instant>,
    pub(crate) dirty: bool,
    /// A buffer-release deadline is pending.
    pub(crate) release_armed: bool,
}

pub(crate) struct ListenerEntry {
    pub(crate) id: ListenerId,
    pub(crate) socket: SocketListener,
    pub(crate) opts: Arc<ConnectionOptions>,
    pub(crate) max_connections: usize,
    pub(crate) open: usize,
    /// Accepting is paused (out of descriptors, or at the connection limit).
    pub(crate) paused: bool,
}

pub(crate) enum Entry {
    Conn(Box<ConnEntry>),
    Listener(ListenerEntry),
}

pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// Ids pack a generation above the slab index, so a stale id never reaches a reused slot.
pub(crate) fn pack(index: usize, generation: u32) -> u64 {
    (generation as u64) << 32 | index as u64
}

pub(crate) fn index_of(id: u64) -> usize {
    (id & 0xffff_ffff) as usize
}

pub(crate) struct Core {
    pub(crate) poll: Poll,
    pub(crate) entries: Slab<Entry>,
    next_generation: u32,
    pub(crate) timers: Timers,
    pub(crate) config: ReactorConfig,
    pub(crate) shared: Arc<Shared>,
    /// Where transports without poller events (Windows pipes) report readiness: `shared`.
    notify: Arc<dyn Notify>,
    /// Connections with queued output, flushed at the end of the turn.
    pub(crate) dirty: Vec<u64>,
    /// Connections whose read budget ran out with bytes left: read again next turn.
    pub(crate) carry: Vec<u64>,
    /// Connections to close, with why.
    pub(crate) to_close: Vec<(ConnId, CloseReason)>,
    /// Connections that became open outside a read (to call `on_open`).
    pub(crate) opened: Vec<ConnId>,
    /// Connections whose queue drained after backpressure (to call `on_drained`).
    pub(crate) drained: Vec<ConnId>,
    /// Listeners to try accepting on again (a slot freed up, or the backoff ended).
    pub(crate) accept_retry: Vec<u64>,
    /// A graceful stop is in progress, until this deadline.
    pub(crate) stopping: Option<Instant>,
}

impl Core {
    pub(crate) fn new(config: ReactorConfig) -> Result<Core> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shared = Arc::new(Shared {
            queue: Default::default(),
            waker,
            closed: Default::default(),
            ready: Default::default(),
        });
        let notify: Arc<dyn Notify> = shared.clone();
        Ok(Core {
            poll,
            entries: Slab::new(),
            next_generation: 1,
            timers: Timers::default(),
            config,
            shared,
            notify,
            dirty: Vec::new(),
            carry: Vec::new(),
            to_close: Vec::new(),
            opened: Vec::new(),
            drained: Vec::new(),
            accept_retry: Vec::new(),
            stopping: None,
        })
    }

    fn generation(&mut self) -> u32 {
        let g = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        g
    }

    pub(crate) fn conn(&mut self, id: u64) -> Option<&mut ConnEntry> {
        match self.entries.get_mut(index_of(id)) {
            Some(Entry::Conn(c)) if c.id.0 == id => Some(c),
            _ => None,
        }
    }

    /// Stops asking the poller for writability of a connection.
    pub(crate) fn read_interest_only(&mut self, id: u64) {
        if let Some(Entry::Conn(c)) = self.entries.get_mut(index_of(id)) {
            if c.id.0 == id {
                c.write_interest = false;
                let _ = c.stream.reregister(self.poll.registry(), Token(id as usize), Interest::READABLE);
            }
        }
    }

    pub(crate) fn listener(&mut self, id: u64) -> Option<&mut ListenerEntry> {
        match self.entries.get_mut(index_of(id)) {
            Some(Entry::Listener(l)) if l.id.0 == id => Some(l),
            _ => None,
        }
    }

    pub(crate) fn listen(&mut self, address: &Address, options: ListenOptions) -> Result<ListenerId> {
        if self.stopping.is_some() {
            return Err(Error::Closed("the reactor is stopping"));
        }
        let mut socket = SocketListener::bind(address, options.backlog)?;
        let generation = self.generation();
        let entry = self.entries.vacant_entry();
        let id = ListenerId(pack(entry.key(), generation));
        socket.register(self.poll.registry(), Token(id.0 as usize), &self.notify)?;
        entry.insert(Entry::Listener(ListenerEntry {
            id,
            socket,
            opts: Arc::new(options.connection),
            max_connections: options.max_connections.max(1),
            open: 0,
            paused: false,
        }));
        // Clients may already be waiting.
        self.accept_retry.push(id.0);
        Ok(id)
    }

    /// Registers a new connection (accepted or connecting) and arms its handshake deadline.
    pub(crate) fn add_conn(
        &mut self,
        mut stream: Stream,
        peer: Address,
        phase: Phase,
        opts: Arc<ConnectionOptions>,
        listener: Option<ListenerId>,
    ) -> Result<ConnId> {
        let now = Instant::now();
        let connecting = matches!(phase, Phase::Connecting(_));
        let has_deadline = !matches!(phase, Phase::Open);
        let generation = self.generation();
        let entry = self.entries.vacant_entry();
        let id = ConnId(pack(entry.key(), generation));
        let interest = if connecting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        stream.register(self.poll.registry(), Token(id.0 as usize), interest, &self.notify)?;
        let idle = opts.idle_timeout;
        let handshake_timeout = opts.handshake_timeout;
        let max = opts.max_message_size;
        entry.insert(Entry::Conn(Box::new(ConnEntry {
            id,
            stream,
            decoder: FrameDecoder::new(max),
            phase,
            out: WriteQueue::default(),
            peer,
            listener,
            opts,
            write_interest: connecting,
            backpressured: false,
            closing: false,
            last_activity: now,
            partial_since: None,
            dirty: false,
            release_armed: false,
        })));
        if has_deadline {
            self.timers.add(now + handshake_timeout, id.0, TimerKind::Handshake);
        }
        if let Some(t) = idle {
            self.timers.add(now + t, id.0, TimerKind::Idle);
        }
        Ok(id)
    }

    pub(crate) fn connect(&mut self, address: &Address, options: ConnectionOptions) -> Result<ConnId> {
        if self.stopping.is_some() {
            return Err(Error::Closed("the reactor is stopping"));
        }
        let (stream, _connected) = Stream::connect_nonblocking(address)?;
        let handshake = match options.handshake_config() {
            Some(c) => Some(Box::new(Handshake::client(&c, Nonce::random()?))),
            None => None,
        };
        self.add_conn(stream, address.clone(), Phase::Connecting(handshake), Arc::new(options), None)
    }

    /// Queues a framed message on an open connection.
    pub(crate) fn send(&mut self, id: ConnId, message: &[u8]) -> Result<(), SendError> {
        let c = self.writable_conn(id)?;
        c.out.push_copy(message);
        self.mark_dirty(id);
        Ok(())
    }

    pub(crate) fn send_owned(&mut self, id: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        let c = match self.writable_conn(id) {
            Ok(c) => c,
            Err(e) => return Err((e, message)),
        };
        c.out.push_owned(message);
        self.mark_dirty(id);
        Ok(())
    }

    fn writable_conn(&mut self, id: ConnId) -> Result<&mut ConnEntry, SendError> {
        let c = self.conn(id.0).ok_or(SendError::NoSuchConnection)?;
        if c.closing {
            return Err(SendError::Closing);
        }
        if !matches!(c.phase, Phase::Open) {
            return Err(SendError::NotOpen);
        }
        if c.out.queued() >= c.opts.high_water_mark {
            c.backpressured = true;
            return Err(SendError::Full { queued: c.out.queued(), high_water_mark: c.opts.high_water_mark });
        }
        Ok(c)
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id.0) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id.0);
            }
        }
    }

    /// Asks for a local close: after the queued messages are written (bounded by the stop
    /// timeout), or at once if nothing is queued.
    pub(crate) fn close(&mut self, id: ConnId) {
        let timeout = self.config.stop_timeout;
        let Some(c) = self.conn(id.0) else { return };
        if c.closing {
            return;
        }
        c.closing = true;
        if c.out.is_empty() || !matches!(c.phase, Phase::Open) {
            self.to_close.push((id, CloseReason::Local));
        } else {
            self.mark_dirty(id);
            self.timers.add(Instant::now() + timeout, id.0, TimerKind::CloseFlush);
        }
    }

    /// Writes what a connection has queued; records drain, close or the need for write
    /// readiness.
    pub(crate) fn flush(&mut self, id: u64) {
        let Some(c) = self.entries.get_mut(index_of(id)) else {
            return;
        };
        let Entry::Conn(c) = c else { return };
        if c.id.0 != id {
            return;
        }
        c.dirty = false;
        if matches!(c.phase, Phase::Connecting(_)) {
            return;
        }
        let token = Token(id as usize);
        match c.out.flush(&mut c.stream) {
            Ok(true) => {
                if c.write_interest {
                    c.write_interest = false;
                    let _ = c.stream.reregister(self.poll.registry(), token, Interest::READABLE);
                }
                if c.backpressured {
                    c.backpressured = false;
                    self.drained.push(c.id);
                }
                if c.closing {
                    self.to_close.push((c.id, CloseReason::Local));
                }
            }
            Ok(false) => {
                if !c.write_interest {
                    c.write_interest = true;
                    let _ = c.stream.reregister(self.poll.registry(), token, Interest::READABLE | Interest::WRITABLE);
                }
            }
            Err(e) => {
                let id = c.id;
                self.to_close.push((id, CloseReason::Error(e.into())));
            }
        }
    }

    /// Removes a connection from the poll and the slab; returns it if it was there.
    pub(crate) fn remove_conn(&mut self, id: ConnId) -> Option<Box<ConnEntry>> {
        self.conn(id.0)?;
        let Entry::Conn(c) = self.entries.remove(index_of(id.0)) else { unreachable!("checked above") };
        // No epoll_ctl(DEL): the descriptor is ours alone, and closing it (when the entry is
        // dropped) removes it from the epoll set.
        if let Some(l) = c.listener {
            if let Some(le) = self.listener(l.0) {
                le.open -= 1;
                if le.paused && le.open < le.max_connections {
                    self.accept_retry.push(l.0);
                }
            }
        }
        Some(c)
    }

    pub(crate) fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener(id.0).is_none() {
            return false;
        }
        if let Entry::Listener(mut l) = self.entries.remove(index_of(id.0)) {
            let _ = l.socket.deregister(self.poll.registry());
        }
        true
    }

    pub(crate) fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// True when work is waiting that no OS event will announce.
    pub(crate) fn has_pending_work(&self) -> bool {
        !self.carry.is_empty()
            || !self.dirty.is_empty()
            || !self.to_close.is_empty()
            || !self.opened.is_empty()
            || !self.drained.is_empty()
            || !self.accept_retry.is_empty()
    }
}

/// What a callback can do: send, close, listen, connect, stop. Given to every
/// [`crate::reactor::Handler`] method.
pub struct Context<'a> {
    pub(crate) core: &'a mut Core,
}

impl Context<'_> {
    /// Queues `message` on `conn` (copied; small messages are coalesced into one write). Refused
    /// with [`SendError::Full`] while the connection's queue is above its high-water mark; the
    /// caller still has the message, and [`crate::reactor::Handler::on_drained`] says when to
    /// try again.
    pub fn send(&mut self, conn: ConnId, message: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, message)
    }

    /// Queues a message the caller gives away; a large one is written without a copy. A refusal
    /// hands the message back.
    pub fn send_owned(&mut self, conn: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        self.core.send_owned(conn, message)
    }

    /// Pickles `value` (protocol 3, or 2 for `processing` peers) and queues it.
    #[cfg(feature = "pickle")]
    pub fn send_pickle<T: serde::Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let protocol = match self.core.conn(conn.0) {
            Some(c) => match &c.phase {
                Phase::Open => c.opts.dialect.pickle_protocol(),
                _ => 3,
            },
            None => 3,
        };
        let bytes = crate::pickle::dumps(value, protocol)?;
        self.core.send_owned(conn, bytes).map_err(|(e, _)| Error::Closed(e.as_str()))
    }

    /// Closes `conn` once its queued messages are written; `on_close` follows with
    /// [`CloseReason::Local`]. No more messages are delivered for it.
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn);
    }

    /// Listens on `address`.
    pub fn listen(&mut self, address: &Address, options: ListenOptions) -> Result<ListenerId> {
        self.core.listen(address, options)
    }

    /// Stops and removes a listener (a Unix socket file it created is removed). Its connections
    /// stay open.
    pub fn close_listener(&mut self, listener: ListenerId) -> bool {
        self.core.remove_listener(listener)
    }

    /// Connects to `address` without blocking; `on_open` follows after the handshake, or
    /// `on_close` with the reason it failed.
    pub fn connect(&mut self, address: &Address, options: ConnectionOptions) -> Result<ConnId> {
        self.core.connect(address, options)
    }

    /// Stops the reactor gracefully: no more accepts, queues flushed (up to the stop timeout),
    /// every connection closed, then `run` returns.
    pub fn stop(&mut self) {
        if self.core.stopping.is_none() {
            self.core.stopping = Some(Instant::now() + self.core.config.stop_timeout);
        }
    }

    /// The address a connection's peer has (for accepted Unix sockets usually the empty path).
    pub fn peer_address(&mut self, conn: ConnId) -> Option<&Address> {
        self.core.conn(conn.0).map(|c| &c.peer)
    }

    /// Bytes queued for `conn` and not yet written.
    pub fn queued_bytes(&mut self, conn: ConnId) -> Option<usize> {
        self.core.conn(conn.0).map(|c| c.out.queued())
    }

    /// The bound address of a listener.
    pub fn listener_address(&mut self, listener: ListenerId) -> Option<&Address> {
        self.core.listener(listener.0).map(|l| l.socket.address())
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        self.core.handle()
    }

    /// Number of open connections and listeners.
    pub fn entry_count(&self) -> usize {
        self.core.entries.len()
    }
}
