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
use crate::reactor::deadlines::Timers;
use crate::reactor::handle::{Handle, Shared};
use crate::reactor::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
use crate::reactor::write_queue::WriteQueue;
use crate::reactor::{ConnId, ListenerId, SendError};
use crate::transport::{Notify, SocketListener, Stream};
use crate::wire::frame::{DEFAULT_READ_BLOCK, FrameDecoder};
use crate::wire::handshake::Nonce;
use crate::wire::session::{Event, HANDSHAKE_READ_BLOCK, Session};

/// One connection: its socket, its buffers, and its [`Session`] (where every protocol decision
/// is made); the rest is the reactor's bookkeeping.
pub(crate) struct ConnEntry {
    pub(crate) id: ConnId,
    pub(crate) stream: Stream,
    pub(crate) decoder: FrameDecoder,
    pub(crate) session: Session,
    pub(crate) out: WriteQueue,
    pub(crate) peer: Address,
    pub(crate) listener: Option<ListenerId>,
    pub(crate) opts: Arc<ConnectionOptions>,
    pub(crate) write_interest: bool,
    pub(crate) backpressured: bool,
    pub(crate) dirty: bool,
    /// The deadline this connection has in the timer set (its session's `poll_timeout` when
    /// last synced): at most one entry per connection.
    pub(crate) timer_at: Option<Instant>,
    /// On the carry-over list (read again next turn); never on it twice.
    pub(crate) carried: bool,
    /// Reading paused by the user (`pause_reading`).
    pub(crate) paused: bool,
    /// Reading paused because the output queue is above the high-water mark.
    pub(crate) auto_paused: bool,
}

impl ConnEntry {
    pub(crate) fn reading_paused(&self) -> bool {
        self.paused || self.auto_paused
    }

    /// With `auto_pause_reading`, stops reading once the output queue reaches the high-water
    /// mark (the delivery loop looks at this before each message).
    #[inline]
    pub(crate) fn check_high_water(&mut self) {
        if self.opts.auto_pause_reading && !self.auto_paused && self.out.queued() >= self.opts.high_water_mark {
            self.auto_paused = true;
            if !self.paused {
                self.session.set_reading_paused(true, Instant::now());
            }
        }
    }
}

pub(crate) struct ListenerEntry {
    pub(crate) id: ListenerId,
    /// The accept-resume deadline in the timer set, if any.
    pub(crate) timer_at: Option<Instant>,
    pub(crate) socket: SocketListener,
    pub(crate) opts: Arc<ConnectionOptions>,
    pub(crate) max_connections: usize,
    pub(crate) open: usize,
    /// Accepting is paused (out of descriptors, or at the connection limit).
    pub(crate) paused: bool,
}

/// A slot of the slab: boxed both ways, so a slot costs a pointer and a tag per connection.
pub(crate) enum Entry {
    Conn(Box<ConnEntry>),
    Listener(Box<ListenerEntry>),
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
    /// Connections whose read budget ran out with bytes left (or that were resumed): read
    /// first next turn, in this order. A connection is on it at most once (`carried`).
    pub(crate) carry: Vec<u64>,
    /// Connections put off without any read this turn (the turn's budget was spent, or reading
    /// resumed): read before `carry` next turn, so none waits behind the same streamers twice.
    pub(crate) carry_first: Vec<u64>,
    /// Bytes read in this turn, against `config.turn_read_budget`.
    pub(crate) turn_read: usize,
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
            carry_first: Vec::new(),
            turn_read: 0,
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
        if let Some(Entry::Conn(c)) = self.entries.get_mut(index_of(id))
            && c.id.0 == id
        {
            c.write_interest = false;
            let _ = c.stream.reregister(self.poll.registry(), Token(id as usize), Interest::READABLE);
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
        entry.insert(Entry::Listener(Box::new(ListenerEntry {
            id,
            timer_at: None,
            socket,
            opts: Arc::new(options.connection),
            max_connections: options.max_connections.max(1),
            open: 0,
            paused: false,
        })));
        // Clients may already be waiting.
        self.accept_retry.push(id.0);
        Ok(id)
    }

    /// Registers a new connection (accepted or connecting) with its session.
    pub(crate) fn add_conn(
        &mut self,
        mut stream: Stream,
        peer: Address,
        session: Session,
        opts: Arc<ConnectionOptions>,
        listener: Option<ListenerId>,
    ) -> Result<ConnId> {
        let connecting = session.is_connecting();
        let generation = self.generation();
        let entry = self.entries.vacant_entry();
        let id = ConnId(pack(entry.key(), generation));
        let interest = if connecting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        stream.register(self.poll.registry(), Token(id.0 as usize), interest, &self.notify)?;
        // Until authenticated, reads are bounded by the handshake's cap, not a read block.
        let read_block = if session.is_open() { DEFAULT_READ_BLOCK } else { HANDSHAKE_READ_BLOCK };
        let mut decoder = FrameDecoder::new(opts.max_message_size);
        decoder.set_read_block(read_block);
        entry.insert(Entry::Conn(Box::new(ConnEntry {
            id,
            stream,
            decoder,
            session,
            out: WriteQueue::default(),
            peer,
            listener,
            opts,
            write_interest: connecting,
            backpressured: false,
            dirty: false,
            timer_at: None,
            carried: false,
            paused: false,
            auto_paused: false,
        })));
        self.pump(id.0);
        Ok(id)
    }

    /// Carries out what a connection's session asks for: its bodies into the write queue,
    /// `Opened` onto the opened list (for callers outside a read), `Closed` onto the close list;
    /// then syncs its deadline. Returns true if the session reported `Opened`.
    pub(crate) fn pump(&mut self, id: u64) -> bool {
        let Some(c) = self.conn(id) else { return false };
        let cid = c.id;
        let mut queued = false;
        while let Some(m) = c.session.poll_transmit() {
            c.out.push_owned(m);
            queued = true;
        }
        let mut opened = false;
        let mut closed = None;
        while let Some(e) = c.session.poll_event() {
            match e {
                Event::Opened => {
                    opened = true;
                    c.decoder.set_read_block(DEFAULT_READ_BLOCK);
                }
                Event::Closed(reason) => closed = Some(reason),
            }
        }
        let next = c.session.poll_timeout();
        if next != c.timer_at {
            self.set_deadline(id, next);
        }
        if queued {
            self.mark_dirty(cid);
        }
        if let Some(reason) = closed {
            self.to_close.push((cid, reason));
        }
        opened
    }

    /// Moves the timer-set entry of a connection or listener to `next`.
    pub(crate) fn set_deadline(&mut self, id: u64, next: Option<Instant>) {
        let at = match self.entries.get_mut(index_of(id)) {
            Some(Entry::Conn(c)) if c.id.0 == id => &mut c.timer_at,
            Some(Entry::Listener(l)) if l.id.0 == id => &mut l.timer_at,
            _ => return,
        };
        self.timers.sync(id, at, next);
    }

    pub(crate) fn connect(&mut self, address: &Address, options: ConnectionOptions) -> Result<ConnId> {
        if self.stopping.is_some() {
            return Err(Error::Closed("the reactor is stopping"));
        }
        let (stream, _connected) = Stream::connect_nonblocking(address)?;
        let config = options.handshake_config();
        let nonce = match config {
            Some(_) => Some(Nonce::random()?),
            None => None,
        };
        let auth = config.as_ref().zip(nonce);
        let session = Session::connecting(auth, options.timeouts(&self.config), Instant::now());
        self.add_conn(stream, address.clone(), session, Arc::new(options), None)
    }

    /// Queues a framed message on an open connection.
    pub(crate) fn send(&mut self, id: ConnId, message: &[u8]) -> Result<(), SendError> {
        let c = self.writable_conn(id)?;
        c.out.push_copy(message);
        c.check_high_water();
        self.mark_dirty(id);
        Ok(())
    }

    pub(crate) fn send_owned(&mut self, id: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        let c = match self.writable_conn(id) {
            Ok(c) => c,
            Err(e) => return Err((e, message)),
        };
        c.out.push_owned(message);
        c.check_high_water();
        self.mark_dirty(id);
        Ok(())
    }

    fn writable_conn(&mut self, id: ConnId) -> Result<&mut ConnEntry, SendError> {
        let c = self.conn(id.0).ok_or(SendError::NoSuchConnection)?;
        if c.session.is_closing() {
            return Err(SendError::Closing);
        }
        if !c.session.is_open() {
            return Err(SendError::NotOpen);
        }
        if c.out.queued() >= c.opts.high_water_mark {
            c.backpressured = true;
            return Err(SendError::Full { queued: c.out.queued(), high_water_mark: c.opts.high_water_mark });
        }
        Ok(c)
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id.0)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id.0);
        }
    }

    /// Asks for a local close: after the queued messages are written (bounded by the stop
    /// timeout), or at once if nothing is queued.
    pub(crate) fn close(&mut self, id: ConnId) {
        let Some(c) = self.conn(id.0) else { return };
        let flushed = c.out.is_empty();
        c.session.close(Instant::now(), flushed);
        if !flushed {
            self.mark_dirty(id);
        }
        self.pump(id.0);
    }

    /// Stops (`pause`) or resumes reading a connection. False for an unknown id.
    pub(crate) fn set_paused(&mut self, id: ConnId, pause: bool) -> bool {
        let Some(c) = self.conn(id.0) else { return false };
        let was = c.reading_paused();
        c.paused = pause;
        self.reading_changed(id.0, was);
        true
    }

    /// After a change of `paused` / `auto_paused`: tells the session, and schedules a read when
    /// reading resumes (bytes may have arrived meanwhile; their edge was not acted on).
    pub(crate) fn reading_changed(&mut self, id: u64, was_paused: bool) {
        let Some(c) = self.conn(id) else { return };
        let paused = c.reading_paused();
        if paused == was_paused {
            return;
        }
        c.session.set_reading_paused(paused, Instant::now());
        if !paused {
            self.schedule_read(id, true);
        }
    }

    /// Puts a connection on the carry-over list (read at the start of the next turn), unless
    /// it is on it. `first`: it was not read at all this turn, so it goes ahead of those that
    /// used their slice.
    pub(crate) fn schedule_read(&mut self, id: u64, first: bool) {
        if let Some(c) = self.conn(id)
            && !c.carried
        {
            c.carried = true;
            if first {
                self.carry_first.push(id);
            } else {
                self.carry.push(id);
            }
        }
    }

    /// Removes a connection from the poll, the slab and the timer set; returns it if it was
    /// there.
    pub(crate) fn remove_conn(&mut self, id: ConnId) -> Option<Box<ConnEntry>> {
        self.conn(id.0)?;
        let Entry::Conn(mut c) = self.entries.remove(index_of(id.0)) else { unreachable!("checked above") };
        self.timers.sync(id.0, &mut c.timer_at, None);
        // No epoll_ctl(DEL): the descriptor is ours alone, and closing it (when the entry is
        // dropped) removes it from the epoll set.
        if let Some(l) = c.listener
            && let Some(le) = self.listener(l.0)
        {
            le.open -= 1;
            if le.paused && le.open < le.max_connections {
                self.accept_retry.push(l.0);
            }
        }
        Some(c)
    }

    pub(crate) fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener(id.0).is_none() {
            return false;
        }
        if let Entry::Listener(mut l) = self.entries.remove(index_of(id.0)) {
            self.timers.sync(id.0, &mut l.timer_at, None);
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
            || !self.carry_first.is_empty()
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
    /// try again. With `auto_pause_reading` (the default) reading `conn` stops once its queue
    /// reaches the mark, so a handler answering the connection it reads from never gets there.
    pub fn send(&mut self, conn: ConnId, message: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, message)
    }

    /// Queues a message the caller gives away; a large one is written without a copy. A refusal
    /// hands the message back.
    pub fn send_owned(&mut self, conn: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        self.core.send_owned(conn, message)
    }

    /// Pickles `value` with the protocol the peer reads (see
    /// [`crate::wire::session::Session::pickle_protocol`]: 4 for CPython 3.12+, 2 where the peer
    /// may be a Python 2) and queues it.
    #[cfg(feature = "pickle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
    pub fn send_pickle<T: serde::Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let protocol = match self.core.conn(conn.0) {
            Some(c) => c.session.pickle_protocol(),
            None => crate::wire::session::UNKNOWN_PEER_PICKLE_PROTOCOL,
        };
        let bytes = crate::pickle::dumps(value, protocol)?;
        self.core.send_owned(conn, bytes).map_err(|(e, _)| Error::Closed(e.as_str()))
    }

    /// The pickle protocol `conn`'s peer reads (what [`Context::send_pickle`] writes: see
    /// [`crate::wire::session::Session::pickle_protocol`]), for a caller that pickles values
    /// itself; `None` for an unknown id.
    pub fn pickle_protocol(&mut self, conn: ConnId) -> Option<u8> {
        self.core.conn(conn.0).map(|c| c.session.pickle_protocol())
    }

    /// Closes `conn` once its queued messages are written; `on_close` follows with
    /// [`CloseReason::Local`]. No more messages are delivered for it.
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn);
    }

    /// Stops reading `conn`: no more messages are delivered for it (messages already read stay
    /// buffered) until [`Context::resume_reading`], and the peer is throttled by the transport
    /// (TCP's window, a full Unix socket buffer). Its idle and partial-message deadlines wait
    /// meanwhile. False for an unknown id.
    pub fn pause_reading(&mut self, conn: ConnId) -> bool {
        self.core.set_paused(conn, true)
    }

    /// Resumes reading `conn` after [`Context::pause_reading`] (buffered messages are delivered
    /// first, in the next turn). Reading stays paused while the connection's own output queue is
    /// above its high-water mark with `auto_pause_reading`. False for an unknown id.
    pub fn resume_reading(&mut self, conn: ConnId) -> bool {
        self.core.set_paused(conn, false)
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
    /// `on_close` with the reason it failed. On Linux a Unix listener whose backlog is full
    /// refuses a non-blocking connect at once: that is an `Err` of kind `WouldBlock` here, to
    /// retry later (a blocking connect would wait; `mpconn stress` connects in windows of 256
    /// for this reason).
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
