//! The reactor's state without the user's handler: the mio `Poll`, the slab of listeners and
//! connections, deadlines and the work lists of a turn. [`Context`] is the user's view of it
//! inside callbacks. Everything that must call the handler lives in `reactor/mod.rs`; this
//! module only records what happened (opened, drained, to close) for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use mio::{Interest, Poll, Token};
use slab::Slab;

use crate::address::Address;
use crate::budget::{MemoryBudget, SMALL_INPUT};
use crate::error::{Error, Result};
use crate::reactor::deadlines::Timers;
use crate::reactor::handle::{Handle, Shared};
use crate::reactor::options::{CloseReason, ConnectionOptions, ListenOptions, ReactorConfig};
use crate::reactor::slots::{ListenerSlots, Slot};
use crate::reactor::write_queue::{Spare, WriteQueue};
use crate::reactor::{ConnId, ListenerId, SendError};
use crate::settings::Side;
use crate::transport::{Notify, SocketListener, Stream};
use crate::wire::frame::FrameDecoder;
use crate::wire::session::{Event, Session};

/// One connection: its socket, its buffers, and its [`Session`] (where every protocol decision
/// is made); the rest is the reactor's bookkeeping.
pub(crate) struct ConnEntry {
    pub(crate) id: ConnId,
    pub(crate) stream: Stream,
    pub(crate) decoder: FrameDecoder,
    pub(crate) session: Session,
    pub(crate) out: WriteQueue,
    pub(crate) peer: Address,
    /// Its place under its listener's connection limit (none for a connection we made).
    pub(crate) slot: Option<Slot>,
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
    /// Reading paused because the output queue is above the high-water mark (or, under the
    /// memory budget's pressure, above `SMALL_INPUT`).
    pub(crate) auto_paused: bool,
    /// Reading stopped by the memory budget (not told to the session: the partial-message
    /// clock keeps running); the budget names the connection when it may read again.
    pub(crate) budget_paused: bool,
    /// What the budget was last told this connection holds: input, output.
    pub(crate) budget_seen: (usize, usize),
    /// A reply went out during the read being delivered, written at once rather than queued:
    /// the read tells the session (its idle clock) with the clock read it makes anyway.
    pub(crate) wrote_now: bool,
}

impl ConnEntry {
    pub(crate) fn reading_paused(&self) -> bool {
        self.paused || self.auto_paused
    }

    /// With `auto_pause_reading`, stops reading once the output queue reaches the high-water
    /// mark, or holds more than `SMALL_INPUT` while the memory budget is under pressure
    /// (`pressure`) (the delivery loop looks at this before each message).
    #[inline]
    pub(crate) fn check_high_water(&mut self, pressure: bool) {
        let queued = self.out.queued();
        if queued >= self.opts.high_water_mark || (pressure && queued > SMALL_INPUT) {
            self.auto_pause();
        }
    }

    /// With `auto_pause_reading`, stops reading for the output's sake (it reads again when its
    /// queue drains, `Core::flush_at`).
    pub(crate) fn auto_pause(&mut self) {
        if self.opts.auto_pause_reading && !self.auto_paused {
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
    /// Its connection limit: a slot is taken before each accept.
    pub(crate) slots: Arc<ListenerSlots>,
    /// This shard's index in `slots` (0 for a listener of its own).
    pub(crate) shard: usize,
    /// Accepting is paused (out of descriptors, or at the connection limit).
    pub(crate) paused: bool,
    /// The socket is shared with other shards' pollers, registered level-triggered and
    /// exclusive: each wake-up accepts a few, so the shards share a burst.
    pub(crate) shared: bool,
    /// In the poller. A shared (level-triggered) listener leaves it while paused, or it would be
    /// reported every turn.
    pub(crate) registered: bool,
}

/// A slot of the slab: boxed both ways, so a slot costs a pointer and a tag per connection.
pub(crate) enum Entry {
    Conn(Box<ConnEntry>),
    Listener(Box<ListenerEntry>),
}

pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// Ids pack a generation above the slab index, so a stale id never reaches a reused slot; bits
/// 24 to 31 carry the shard tag (0 for a reactor of its own, shard index + 1 for a shard of
/// [`crate::reactor::Sharded`]), so an id says which shard owns it. The slab index has the 24
/// bits below: at most [`MAX_ENTRIES`] listeners and connections per reactor.
/// Reactors (or sharded groups) created in this process so far.
static GROUPS: AtomicU32 = AtomicU32::new(0);

/// The first generation of the ids of a new reactor or sharded group: 1 for the first in the
/// process, then the golden-ratio sequence (2^32 / φ apart, the next ones in the largest
/// gaps), so that the ids of different reactors differ: an id taken to another reactor's
/// handle is refused as no connection of its own, not delivered to whichever connection
/// holds the same slot and generation there. (Two reactors' ids meet only after one has
/// counted through the gap to the other's start: with two reactors in a process, at least 1.6
/// billion connections and listeners; with a hundred, at least 21 million.)
pub(crate) fn first_generation() -> u32 {
    let group = GROUPS.fetch_add(1, Ordering::Relaxed);
    group.wrapping_mul(0x9E37_79B9).wrapping_add(1).max(1)
}

pub(crate) fn pack(index: usize, generation: u32, shard_tag: u64) -> u64 {
    u64::from(generation) << 32 | shard_tag << SHARD_SHIFT | index as u64
}

/// Where the shard tag starts in an id.
pub(crate) const SHARD_SHIFT: u32 = 24;
/// The bits of an id that hold the slab index.
const INDEX_MASK: u64 = (1 << SHARD_SHIFT) - 1;
/// The most listeners and connections one reactor holds (16,777,216).
pub(crate) const MAX_ENTRIES: usize = 1 << SHARD_SHIFT;

pub(crate) fn index_of(id: u64) -> usize {
    (id & INDEX_MASK) as usize
}

/// What a shard of [`crate::reactor::Sharded`] publishes at the end of each turn for other threads
/// (its stats, and the acceptor's choice of the least-loaded shard): written by the shard's thread
/// alone, read by any.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Connections (accepted, adopted or connecting, not yet closed).
    pub(crate) connections: AtomicUsize,
    /// Streams adopted from the acceptor so far.
    pub(crate) adopted: AtomicU64,
    /// Bytes held by the memory budget's count.
    pub(crate) budget_held: AtomicUsize,
    /// Reads the memory budget refused so far.
    pub(crate) budget_refusals: AtomicU64,
    /// When the shard's thread came back from waiting for events ([`group_clock_ms`] + 1), or 0
    /// while it waits: a shard busy for long (a handler that blocks) is passed over when
    /// streams are handed out, since it would not serve one before it returns.
    pub(crate) busy_since: AtomicU64,
}

impl Gauges {
    /// The shard left its wait for events and is running its turn.
    #[inline]
    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy_since.store(if busy { group_clock_ms() + 1 } else { 0 }, Ordering::Relaxed);
    }

    /// True when the shard has been running one turn for more than `limit_ms` at `now_ms`.
    pub(crate) fn stuck(&self, now_ms: u64, limit_ms: u64) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        since != 0 && now_ms.saturating_sub(since - 1) > limit_ms
    }
}

/// Milliseconds on a clock every shard of the process shares (its zero: first use).
pub(crate) fn group_clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
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
    /// The memory budget shared by every connection (`ReactorConfig::memory_budget`).
    pub(crate) budget: MemoryBudget,
    /// Connections now (not listeners).
    pub(crate) connections: usize,
    /// Streams adopted from a sharded acceptor so far.
    pub(crate) adopted: u64,
    /// The shard tag of every id (0: not a shard), already shifted into place by `pack`.
    shard_tag: u64,
    /// A shard's published figures (`None` for a reactor of its own).
    pub(crate) gauges: Option<Arc<Gauges>>,
    /// A shard's group: where a stream accepted from a shared socket is handed when this shard
    /// is well ahead of the least-loaded one.
    pub(crate) siblings: Option<Arc<crate::reactor::shard::Siblings>>,
    /// Write-queue storage a drained queue left for the next one.
    pub(crate) spare: Spare,
    /// The connection whose message is being delivered, while no other complete message
    /// follows it in the bytes read: its handler's first reply is written at once when its
    /// queue is empty (a request's answer leaves without a queue and a flush; the replies to a
    /// burst still leave together, queued and flushed once).
    pub(crate) reply_now: Option<u64>,
}

impl Core {
    /// A reactor's core whose ids start at generation `first_generation` ([`first_generation`]
    /// for a reactor of its own; its group's for a shard).
    pub(crate) fn new(config: ReactorConfig, first_generation: u32) -> Result<Core> {
        let config_budget = config.memory_budget;
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
            next_generation: first_generation,
            timers: Timers::default(),
            config,
            shared,
            notify,
            dirty: Vec::new(),
            carry: Vec::new(),
            carry_first: Vec::new(),
            turn_read: 0,
            reply_now: None,
            to_close: Vec::new(),
            opened: Vec::new(),
            drained: Vec::new(),
            accept_retry: Vec::new(),
            stopping: None,
            budget: MemoryBudget::new(config_budget),
            connections: 0,
            adopted: 0,
            shard_tag: 0,
            gauges: None,
            siblings: None,
            spare: Spare::default(),
        })
    }

    /// Makes this reactor shard `index` of a sharded group (built with the group's first
    /// generation, so its shards' ids differ by their shard alone): its ids carry the shard,
    /// and it publishes its figures to `gauges` each turn. Before any entry exists.
    pub(crate) fn make_shard(&mut self, index: usize, gauges: Arc<Gauges>) {
        debug_assert!(self.entries.is_empty());
        self.shard_tag = index as u64 + 1;
        self.gauges = Some(gauges);
    }

    /// Publishes the shard's figures (a few relaxed stores; nothing for a reactor of its own).
    #[inline]
    pub(crate) fn publish(&self) {
        if let Some(g) = &self.gauges {
            g.connections.store(self.connections, Ordering::Relaxed);
            g.adopted.store(self.adopted, Ordering::Relaxed);
            g.budget_held.store(self.budget.total(), Ordering::Relaxed);
            g.budget_refusals.store(self.budget.refusals(), Ordering::Relaxed);
        }
    }

    /// Refuses a new entry once the reactor holds [`MAX_ENTRIES`] (ids have no more room).
    fn check_room(&self) -> Result<()> {
        if self.entries.vacant_key() >= MAX_ENTRIES {
            return Err(Error::Config(format!("a reactor holds at most {MAX_ENTRIES} listeners and connections")));
        }
        Ok(())
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
        // Settings no peer could authenticate under are refused here, before the bind.
        options.connection.session_factory(&self.config)?;
        let socket = crate::transport::bind_listener(Some(address.clone()), None, options.backlog)?;
        self.add_listener(socket, options)
    }

    /// Serves connections from a listener bound already (settings checked by the caller).
    pub(crate) fn add_listener(&mut self, socket: SocketListener, options: ListenOptions) -> Result<ListenerId> {
        self.add_listener_with(socket, options, false)
    }

    /// Serves connections from a listener bound already; `shared`: its socket is shared with
    /// other shards (Linux), registered exclusive and level-triggered.
    pub(crate) fn add_listener_with(
        &mut self,
        mut socket: SocketListener,
        options: ListenOptions,
        shared: bool,
    ) -> Result<ListenerId> {
        if self.stopping.is_some() {
            return Err(Error::Closed("the reactor is stopping"));
        }
        self.check_room()?;
        let generation = self.generation();
        let shard_tag = self.shard_tag;
        let entry = self.entries.vacant_entry();
        let id = ListenerId(pack(entry.key(), generation, shard_tag));
        #[cfg(target_os = "linux")]
        if shared {
            socket.register_exclusive(self.poll.registry(), Token(id.0 as usize))?;
        } else {
            socket.register(self.poll.registry(), Token(id.0 as usize), &self.notify)?;
        }
        #[cfg(not(target_os = "linux"))]
        socket.register(self.poll.registry(), Token(id.0 as usize), &self.notify)?;
        entry.insert(Entry::Listener(Box::new(ListenerEntry {
            id,
            timer_at: None,
            socket,
            opts: Arc::new(options.connection),
            slots: ListenerSlots::new(options.max_connections, vec![Some(id)]),
            shard: 0,
            paused: false,
            shared,
            registered: true,
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
        slot: Option<Slot>,
    ) -> Result<ConnId> {
        let connecting = session.is_connecting();
        self.check_room()?;
        let generation = self.generation();
        let shard_tag = self.shard_tag;
        let entry = self.entries.vacant_entry();
        let id = ConnId(pack(entry.key(), generation, shard_tag));
        let interest = if connecting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        stream.register(self.poll.registry(), Token(id.0 as usize), interest, &self.notify)?;
        // The session says the read block: until authenticated, the handshake's, not 64 KiB.
        let decoder = FrameDecoder::with_read_block(opts.max_message_size, session.read_block());
        entry.insert(Entry::Conn(Box::new(ConnEntry {
            id,
            stream,
            decoder,
            session,
            out: WriteQueue::default(),
            peer,
            slot,
            opts,
            write_interest: connecting,
            backpressured: false,
            dirty: false,
            timer_at: None,
            carried: false,
            paused: false,
            auto_paused: false,
            budget_paused: false,
            budget_seen: (0, 0),
            wrote_now: false,
        })));
        self.connections += 1;
        self.pump(id.0);
        Ok(id)
    }

    /// Carries out what a connection's session asks for: its bodies into the write queue,
    /// `Opened` onto the opened list (for callers outside a read), `Closed` onto the close list;
    /// then syncs its deadline. Returns true if the session reported `Opened`.
    pub(crate) fn pump(&mut self, id: u64) -> bool {
        let Some(c) = self.conn(id) else { return false };
        let cid = c.id;
        // Handshake messages and a last #FAILURE#: at most two at a time (an early client's
        // answer and challenge), written at once when nothing waits before them.
        // (An open connection has none: the common case costs one check.)
        let mut queued = false;
        if let Some(first) = c.session.poll_transmit() {
            let mut batch: [Vec<u8>; 2] = [first, Vec::new()];
            let mut count = 1;
            while let Some(m) = c.session.poll_transmit() {
                if count == batch.len() {
                    queued |= c.out.write_now_or_queue(&mut c.stream, &mut batch[..count]);
                    count = 0;
                }
                batch[count] = m;
                count += 1;
            }
            queued |= c.out.write_now_or_queue(&mut c.stream, &mut batch[..count]);
            if c.session.wants_prompt_ack() {
                c.stream.acknowledge_promptly();
            }
        }
        let mut opened = false;
        let mut closed = None;
        while let Some(e) = c.session.poll_event() {
            match e {
                Event::Opened => {
                    opened = true;
                    c.decoder.set_read_block(c.session.read_block());
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
        let session = options.session_factory(&self.config)?.session(Side::Connecting, Instant::now())?;
        self.add_conn(stream, address.clone(), session, Arc::new(options), None)
    }

    /// Queues a framed message on an open connection.
    pub(crate) fn send(&mut self, id: ConnId, message: &[u8]) -> Result<(), SendError> {
        let pressure = self.budget.under_pressure();
        let at_once = self.reply_now == Some(id.0);
        if at_once {
            self.reply_now = None;
        }
        let (c, spare) = self.writable_conn(id, message.len())?;
        if at_once {
            let (written, queued) = c.out.write_now_or_copy(&mut c.stream, message, spare);
            c.wrote_now |= written > 0;
            if !queued {
                return Ok(());
            }
        } else {
            c.out.push_copy(message, spare);
        }
        c.check_high_water(pressure);
        self.mark_dirty(id);
        self.budget_after_send(id.0);
        Ok(())
    }

    pub(crate) fn send_owned(&mut self, id: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        let pressure = self.budget.under_pressure();
        let (c, spare) = match self.writable_conn(id, message.len()) {
            Ok(c) => c,
            Err(e) => return Err((e, message)),
        };
        c.out.push_owned(message, spare);
        c.check_high_water(pressure);
        self.mark_dirty(id);
        self.budget_after_send(id.0);
        Ok(())
    }

    /// Queues a message whose body is shared with other connections' queues (a reference).
    pub(crate) fn send_shared(&mut self, id: ConnId, message: &bytes::Bytes) -> Result<(), SendError> {
        let pressure = self.budget.under_pressure();
        let (c, _) = self.writable_conn(id, message.len())?;
        c.out.push_shared(message);
        c.check_high_water(pressure);
        self.mark_dirty(id);
        // A shared body counts in full for each connection: the budget stays an upper bound.
        self.budget_after_send(id.0);
        Ok(())
    }

    /// The connection, if a message of `len` bytes may be queued on it now: open, under its
    /// high-water mark, and within the memory budget; with the spare write-queue storage.
    fn writable_conn(&mut self, id: ConnId, len: usize) -> Result<(&mut ConnEntry, &mut Spare), SendError> {
        let (total, cap) = (self.budget.total(), self.config.memory_budget.unwrap_or(usize::MAX));
        let budget = &self.budget;
        let c = match self.entries.get_mut(index_of(id.0)) {
            Some(Entry::Conn(c)) if c.id == id => c,
            _ => return Err(SendError::NoSuchConnection),
        };
        // What the budget was last told this connection queued.
        let allowed = budget.may_queue(c.budget_seen.1, len);
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
        if !allowed {
            c.backpressured = true;
            // A connection whose output the budget refuses stops reading, as at the high-water
            // mark: every request it sent on would cost the handler its work for one more
            // refusal, turn after turn, while the connections it crowds out wait.
            c.auto_pause();
            return Err(SendError::OverBudget { queued: c.out.queued(), total, budget: cap });
        }
        Ok((c, &mut self.spare))
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
        } else if self.budget.enabled() {
            self.budget.pass_lead(id);
            self.budget_wake();
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
        self.connections -= 1;
        self.timers.sync(id.0, &mut c.timer_at, None);
        if self.budget.enabled() {
            self.budget.remove(id.0, c.budget_seen.1);
            self.budget_wake();
        }
        // No epoll_ctl(DEL): the descriptor is ours alone, and closing it (when the entry is
        // dropped) removes it from the epoll set.
        // The slot is given back; its listener, paused at the limit, may accept again. On a
        // socket the shards share, a client may wait that a paused sibling was woken for: this
        // shard, with room now, tries an accept (one call that may find nothing).
        if let Some(slot) = c.slot.take() {
            let (listener, group_waits) = slot.give_back();
            if let Some(l) = listener
                && let Some(le) = self.listener(l.0)
                && (le.paused || (le.shared && group_waits.is_some()))
                && le.slots.has_room(le.shard)
            {
                self.accept_retry.push(l.0);
            }
        }
        Some(c)
    }

    /// When this shard gave its group's memory-budget lead back while another shard waited
    /// for it: every shard of the group (this one too) is told, and elects a leader if one
    /// waits and it can take the lead. Once a turn, at its end.
    #[inline]
    pub(crate) fn announce_free_lead(&mut self) {
        if !self.budget.take_lead_freed() {
            return;
        }
        if let Some(siblings) = &self.siblings {
            for h in siblings.handles() {
                // A shard that is gone has no connection waiting.
                let _ = h.lead_free();
            }
        }
    }

    /// Tells the memory budget what a connection holds now (its decoder's buffer, its queued
    /// output), if that changed, and resumes the connections the budget lets read again.
    #[inline(always)]
    pub(crate) fn budget_sync(&mut self, id: u64) {
        if !self.budget.enabled() {
            return;
        }
        let Some(c) = self.conn(id) else { return };
        let now = (c.decoder.capacity(), c.out.queued());
        if now == c.budget_seen {
            return;
        }
        let seen = std::mem::replace(&mut c.budget_seen, now);
        if now.0 != seen.0 {
            self.budget.set_input(id, now.0);
        }
        self.budget.output_changed(seen.1, now.1);
        if self.budget.has_wake() {
            self.budget_wake();
        }
    }

    /// After a send: the budget learns the queue's size, and a leader that the send paused
    /// (its queue reached the high-water mark) passes the lead on.
    fn budget_after_send(&mut self, id: u64) {
        if !self.budget.enabled() {
            return;
        }
        if self.conn(id).is_some_and(|c| c.auto_paused) {
            self.budget.pass_lead(id);
        }
        self.budget_sync(id);
        self.budget_wake();
    }

    /// Resumes the connections the budget named (they are read first next turn).
    /// A connection named while its reading is paused otherwise (by the user, or by its own
    /// output queue) passes the lead on, so it cannot stall the others.
    pub(crate) fn budget_wake(&mut self) {
        while self.budget.has_wake() {
            for id in self.budget.take_wake() {
                let Some(c) = self.conn(id) else { continue };
                let elsewhere = c.reading_paused();
                if c.budget_paused {
                    c.budget_paused = false;
                    if !elsewhere {
                        self.schedule_read(id, true);
                    }
                }
                if elsewhere {
                    self.budget.pass_lead(id);
                }
            }
        }
    }

    /// Before a read of `id`: may it read, by the memory budget? Under pressure an idle
    /// decoder's large buffer is given back first. A refusal stops reading the connection until
    /// the budget resumes it.
    pub(crate) fn budget_allows_read(&mut self, id: u64, large: usize) -> bool {
        if !self.budget.enabled() {
            return true;
        }
        let pressure = self.budget.under_pressure();
        let Some(c) = self.conn(id) else { return false };
        if pressure && c.decoder.is_idle() && c.decoder.capacity() >= large {
            c.decoder.shrink_if_idle();
        }
        let growth = if c.decoder.in_message() { c.decoder.read_growth() } else { 0 };
        self.budget_sync(id);
        if self.budget.may_read(id, growth) {
            // Being elected may have named others (or this one) to wake.
            if self.budget.has_wake() {
                self.budget_wake();
            }
            return true;
        }
        let total = self.budget.total();
        if let Some(c) = self.conn(id)
            && !c.budget_paused
        {
            c.budget_paused = true;
            log::debug!("{} stops reading: memory budget spent ({total} bytes held by all)", c.id);
        }
        self.budget_wake();
        false
    }

    /// Makes a listener of a socket the shards share count its connections in the slots of
    /// all of them, as shard `shard` (before any connection is accepted).
    #[cfg(target_os = "linux")]
    pub(crate) fn set_listener_slots(&mut self, id: ListenerId, slots: Arc<ListenerSlots>, shard: usize) {
        if let Some(l) = self.listener(id.0) {
            l.slots = slots;
            l.shard = shard;
        }
    }

    /// Puts a shared listener in the poller (`on`) or takes it out: level-triggered, a paused
    /// one would be reported every turn. Nothing for other listeners.
    pub(crate) fn shared_listener_interest(&mut self, id: u64, on: bool) {
        let Core { poll, entries, .. } = self;
        let Some(Entry::Listener(l)) = entries.get_mut(index_of(id)) else { return };
        if l.id.0 != id || !l.shared || l.registered == on {
            return;
        }
        #[cfg(target_os = "linux")]
        let result = if on {
            l.socket.register_exclusive(poll.registry(), Token(id as usize))
        } else {
            l.socket.deregister(poll.registry())
        };
        #[cfg(not(target_os = "linux"))]
        let result: std::io::Result<()> = {
            // Only Linux shares a listening socket between shards.
            let _ = poll;
            Ok(())
        };
        match result {
            Ok(()) => l.registered = on,
            Err(e) => log::error!("listener {}: cannot change its poller registration: {e}", l.socket.address()),
        }
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
/// [`crate::reactor::Handler`] method, and by [`crate::reactor::Reactor::with_context`] between
/// turns.
///
/// ```
/// use mpconn::reactor::options::ListenOptions;
/// use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError};
///
/// /// Sends every message to every connection but its sender.
/// #[derive(Default)]
/// struct Relay {
///     members: Vec<ConnId>,
/// }
///
/// impl Handler for Relay {
///     fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mpconn::Address) {
///         self.members.push(conn);
///     }
///     fn on_message(&mut self, ctx: &mut Context<'_>, from: ConnId, message: &[u8]) {
///         let shared = mpconn::reactor::Bytes::copy_from_slice(message); // one copy for all
///         for &to in self.members.iter().filter(|&&m| m != from) {
///             match ctx.send_shared(to, &shared) {
///                 Ok(()) => {}
///                 // Over its high-water mark: this recipient misses it. (examples/chat_server.rs
///                 // keeps it instead, and pauses the senders until the queue drains.)
///                 Err(SendError::Full { .. }) => log::warn!("{to} is slow"),
///                 Err(_) => {} // closing: on_close follows
///             }
///         }
///     }
/// }
///
/// # fn main() -> mpconn::Result<()> {
/// let mut reactor = Reactor::new(Relay::default())?;
/// reactor.listen("127.0.0.1:0", ListenOptions::new())?;
/// // Outside callbacks too, between turns:
/// let entries = reactor.with_context(|ctx| ctx.entry_count());
/// assert_eq!(entries, 1); // the listener
/// # Ok(()) }
/// ```
pub struct Context<'a> {
    pub(crate) core: &'a mut Core,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.core.entries.iter().filter(|(_, e)| matches!(e, Entry::Conn(_))).count();
        f.debug_struct("Context")
            .field("connections", &connections)
            .field("listeners", &(self.core.entries.len() - connections))
            .field("stopping", &self.core.stopping.is_some())
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// Queues `message` on `conn` (copied; small messages are coalesced into one write). Refused
    /// with [`SendError::Full`] while the connection's queue is above its high-water mark; the
    /// caller still has the message, and [`crate::reactor::Handler::on_drained`] says when to
    /// try again. With `auto_pause_reading` (the default) reading `conn` stops once its queue
    /// reaches the mark, so a handler answering the connection it reads from never gets there.
    ///
    /// Called from `on_message` for the last whole message of a read, the first reply to that
    /// connection is written to the socket at once when nothing is queued before it (a request's
    /// answer leaves without the queue's copy and flush; what the socket does not take is
    /// queued). Replies to the earlier messages of a burst are queued and leave together.
    pub fn send(&mut self, conn: ConnId, message: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, message)
    }

    /// Queues a message the caller gives away; a large one is written without a copy. A refusal
    /// hands the message back.
    pub fn send_owned(&mut self, conn: ConnId, message: Vec<u8>) -> Result<(), (SendError, Vec<u8>)> {
        self.core.send_owned(conn, message)
    }

    /// Queues a message whose body is a refcounted [`bytes::Bytes`]: the connection's queue holds
    /// a reference (and the message's few header bytes), not a copy, so a broadcast to many
    /// connections keeps one copy of the body in memory however many queues hold it, and
    /// sending costs a reference count, not a copy, per recipient. The same refusal as
    /// [`Context::send`] (the caller keeps its `Bytes`). For many tiny messages to one
    /// connection, [`Context::send`] is better: copies coalesce into one buffer, references are
    /// written as one slice each.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use mpconn::reactor::{ConnId, Context};
    ///
    /// fn broadcast(ctx: &mut Context<'_>, members: &[ConnId], text: &[u8]) {
    ///     let shared = Bytes::copy_from_slice(text); // the one copy
    ///     for &member in members {
    ///         if let Err(e) = ctx.send_shared(member, &shared) {
    ///             log::debug!("{member}: {e}");
    ///         }
    ///     }
    /// }
    /// ```
    pub fn send_shared(&mut self, conn: ConnId, message: &bytes::Bytes) -> Result<(), SendError> {
        self.core.send_shared(conn, message)
    }

    /// Pickles `value` with the protocol the peer reads (what the handshake proved: 4 for
    /// CPython 3.12+, 2 where the peer may be a Python 2; see [`Context::pickle_protocol`]) and
    /// queues it. A refusal is [`Error::Send`] with the reason: a full
    /// queue is `SendError::Full` (nothing was queued and the caller still has `value`: send it
    /// again after [`crate::reactor::Handler::on_drained`]), a gone connection
    /// `SendError::NoSuchConnection`.
    #[cfg(feature = "pickle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
    pub fn send_pickle<T: serde::Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let protocol = match self.core.conn(conn.0) {
            Some(c) => c.session.pickle_protocol(),
            None => crate::wire::session::UNKNOWN_PEER_PICKLE_PROTOCOL,
        };
        let bytes = crate::pickle::dumps(value, protocol)?;
        Ok(self.core.send_owned(conn, bytes)?)
    }

    /// The pickle protocol `conn`'s peer reads, for a caller that pickles values itself (what
    /// [`Context::send_pickle`] writes): 4 when the handshake proved a CPython 3.12+ peer (the
    /// `{sha256}` digest prefix), else 2, which every Python since 2.3 reads; `None` for an
    /// unknown id.
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
            self.core.stopping = Some(crate::transport::deadline_after(Instant::now(), self.core.config.stop_timeout));
        }
    }

    /// The address a connection's peer has (for accepted Unix sockets usually the empty path).
    pub fn peer_address(&mut self, conn: ConnId) -> Option<&Address> {
        self.core.conn(conn.0).map(|c| &c.peer)
    }

    /// Bytes all connections hold together by the memory budget's count (decoder buffers,
    /// queued output and what the handler holds by [`Context::hold_memory`]; 0 when the budget is
    /// off), and how many reads it has refused so far.
    pub fn budget_usage(&self) -> (usize, u64) {
        (self.core.budget.total(), self.core.budget.refusals())
    }

    /// Charges `bytes` the handler keeps of its connections' messages past the callback (a
    /// whole message handed to a worker thread by [`crate::reactor::Handler::on_message_owned`],
    /// say) to the reactor's memory budget ([`ReactorConfig::memory_budget`]), until
    /// [`Context::release_memory`]. While the budget is over its cap, connections reading large
    /// messages wait (small ones go on), so the memory a reactor and its handler hold together
    /// stays bounded however many connections hand messages over at once. Nothing when the
    /// budget is off.
    ///
    /// [`ReactorConfig::memory_budget`]: crate::reactor::options::ReactorConfig::memory_budget
    pub fn hold_memory(&mut self, bytes: usize) {
        self.core.budget.hold(bytes);
        self.core.budget_wake();
    }

    /// Gives back `bytes` charged by [`Context::hold_memory`] (from another thread: through
    /// [`Handle::call`]); connections the budget stopped resume once it is under its low-water
    /// mark.
    pub fn release_memory(&mut self, bytes: usize) {
        self.core.budget.release(bytes);
        self.core.budget_wake();
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
