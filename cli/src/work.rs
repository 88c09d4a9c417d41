//! `listen`'s decoding and printing, off the reactor thread.
//!
//! Why: unpickling the largest allowed message (128 MiB by default; the densest or slowest
//! pickles take seconds to decode even linearly) on the reactor thread stalled every other
//! connection for that long. Now the reactor thread only queues a message (a large one is handed
//! over in the connection's own buffer, `Handler::on_message_owned`, without a copy; a small one
//! is copied); a small pool of worker threads decodes, prints, and posts deferred echoes back
//! through the reactor's [`Handle`].
//!
//! - **Order per connection.** Each connection has its own queue (its `open` line, its messages,
//!   its `close` line). A connection is handed to one worker at a time, so its lines print in
//!   order, while other connections' queues go to the other workers: a slow message holds up
//!   only its own connection.
//! - **Echoes keep their order without waiting for a decode.** A small message (≤
//!   [`IMMEDIATE_ECHO`]) on a connection with no deferred echo outstanding is echoed at once from
//!   the reactor thread (one copy, as before). A large one is copied once into the queue and its
//!   echo sent by the worker after printing, moving the buffer (no second copy on the reactor
//!   thread); later echoes of that connection are deferred too until it went out, so echoes
//!   leave in the order the messages came.
//! - **Bounded queues, backpressure by read pause.** A connection whose queue holds
//!   [`CONN_QUEUE_LIMIT`] bytes or more, or holds more than [`SMALL_SHARE`] while all queues
//!   together hold [`TOTAL_QUEUE_LIMIT`] or more, is paused (`Context::pause_reading`: the
//!   transport throttles the peer) and resumed by the reactor thread once its queue is below a
//!   quarter of the limit. So a peer that sends faster than the workers decode holds at most its
//!   limit plus one message here, and a peer with little queued is never paused for another's
//!   backlog.
//! - **Queued messages are charged to the reactor's memory budget** (`Context::hold_memory`,
//!   given back through the handle as the workers finish them, in batches of [`RELEASE_BATCH`]).
//!   The per-connection limits above pause a connection only after its message is queued, so
//!   without the charge N connections could each queue one whole message (N × 128 MiB) while the
//!   workers were busy; with it, once reactor and queues together hold the budget, connections
//!   reading large messages wait until the workers catch up.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use mpconn::reactor::{ConnId, Context, Handle};

use crate::clean;
use crate::show::show;

/// Messages up to this size are echoed from the reactor thread at once (when no larger echo of
/// the same connection is still deferred).
pub const IMMEDIATE_ECHO: usize = 64 << 10;
/// A connection's queued bytes at which its reading pauses.
pub const CONN_QUEUE_LIMIT: usize = 8 << 20;
/// All queues' bytes at which connections holding more than [`SMALL_SHARE`] pause.
pub const TOTAL_QUEUE_LIMIT: usize = 256 << 20;
/// What a connection may hold without being paused for the total.
pub const SMALL_SHARE: usize = 256 << 10;
/// Worker threads.
pub const WORKERS: usize = 2;
/// Finished bytes a worker collects before it gives them back to the memory budget (also when
/// it runs out of work).
pub const RELEASE_BATCH: usize = 1 << 20;

enum Item {
    /// A line to print as it is (already cleaned).
    Line(String),
    /// A message: printed as a `message` line when `show`, echoed by the worker when `echo`.
    Message { body: Vec<u8>, show: bool, echo: bool },
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Line(l) => l.len(),
            Item::Message { body, .. } => body.len(),
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// A worker holds this connection.
    busy: bool,
    bytes: usize,
    /// We paused its reading (only the reactor thread changes this).
    paused: bool,
    /// A worker asked the reactor thread to look at resuming it.
    resume_asked: bool,
    /// Echoes handed to workers and not yet queued on the connection by the reactor thread.
    deferred_echoes: usize,
    /// Its `close` line is queued: the entry goes when the queue is empty.
    closed: bool,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Queue>,
    /// Connections with items and no worker.
    ready: VecDeque<ConnId>,
    bytes: usize,
    stopping: bool,
    /// The most bytes ever queued at once (for the measurements).
    peak_bytes: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Set by [`Pool::start`], before any worker runs.
    handle: OnceLock<Handle>,
    /// Bytes of finished messages not yet given back to the memory budget.
    unreleased: AtomicUsize,
    quiet: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker pool of one `listen`.
/// See [`Pool::echo_probe`].
pub struct EchoProbe(Arc<Shared>);

impl EchoProbe {
    /// As [`Pool::echoes_pending`].
    pub fn echoes_pending(&self) -> bool {
        self.0.lock().conns.values().any(|q| q.deferred_echoes > 0)
    }
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool without workers yet (the reactor that owns it gives the handle to [`Pool::start`]).
    pub fn new(quiet: bool) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            handle: OnceLock::new(),
            unreleased: AtomicUsize::new(0),
            quiet,
        });
        Pool { shared, threads: Vec::new() }
    }

    /// Starts the workers; deferred echoes and resumes go through `handle`.
    pub fn start(&mut self, handle: Handle) -> std::io::Result<()> {
        let _ = self.shared.handle.set(handle);
        for i in 0..WORKERS {
            let s = self.shared.clone();
            self.threads
                .push(std::thread::Builder::new().name(format!("listen-worker-{i}")).spawn(move || worker(&s))?);
        }
        Ok(())
    }

    /// Queues a line for `conn` (its `open` line; `close` goes through [`Pool::close`]).
    pub fn line(&self, conn: ConnId, line: String) {
        if self.shared.quiet {
            return;
        }
        push(&self.shared, conn, Item::Line(line));
    }

    /// Queues `conn`'s `close` line; the connection's entry goes once it is printed.
    pub fn close(&self, conn: ConnId, line: String) {
        let mut st = self.shared.lock();
        st.conns.entry(conn).or_default().closed = true;
        drop(st);
        if self.shared.quiet {
            self.forget_if_idle(conn);
            return;
        }
        push(&self.shared, conn, Item::Line(line));
    }

    fn forget_if_idle(&self, conn: ConnId) {
        let mut st = self.shared.lock();
        if st.conns.get(&conn).is_some_and(|q| q.items.is_empty() && !q.busy && q.deferred_echoes == 0) {
            st.conns.remove(&conn);
        }
    }

    /// A message arrived on `conn` in the reactor's shared buffer (called on the reactor thread,
    /// from `on_message`): echoed at once when small and nothing of this connection's is
    /// deferred, else copied and queued with its echo; printed by a worker unless quiet.
    pub fn message(&self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8], echo: bool) {
        let Some((show, defer)) = self.plan(ctx, conn, message, echo) else { return };
        self.queue(ctx, conn, message.to_vec(), show, defer);
    }

    /// A large message handed over in the connection's own buffer (from `on_message_owned`):
    /// queued as it is, no copy on the reactor thread.
    pub fn message_owned(&self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>, echo: bool) {
        let Some((show, defer)) = self.plan(ctx, conn, &message, echo) else { return };
        self.queue(ctx, conn, message, show, defer);
    }

    /// Echoes `message` at once if it may go now; says whether it is still to be printed and
    /// whether its echo is deferred (`None`: nothing more to do).
    fn plan(&self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8], echo: bool) -> Option<(bool, bool)> {
        let show = !self.shared.quiet;
        let mut st = self.shared.lock();
        let q = st.conns.entry(conn).or_default();
        let echo_now = echo && q.deferred_echoes == 0 && message.len() <= IMMEDIATE_ECHO;
        let defer = echo && !echo_now;
        if defer {
            q.deferred_echoes += 1;
        }
        drop(st);
        if echo_now && let Err(e) = ctx.send(conn, message) {
            self.line(conn, clean::text(&format!("echo to {conn} refused: {e}")).into_owned());
        }
        (show || defer).then_some((show, defer))
    }

    /// Queues a message for the workers, charges it to the memory budget, and pauses `conn` when
    /// its queue is over its share.
    fn queue(&self, ctx: &mut Context<'_>, conn: ConnId, body: Vec<u8>, show: bool, echo: bool) {
        ctx.hold_memory(body.len());
        push(&self.shared, conn, Item::Message { body, show, echo });
        let st = self.shared.lock();
        if let Some(q) = st.conns.get(&conn) {
            let over = q.bytes >= CONN_QUEUE_LIMIT || (st.bytes >= TOTAL_QUEUE_LIMIT && q.bytes > SMALL_SHARE);
            if over {
                drop(st);
                // Always asked again (it is idempotent): our flag could be stale.
                ctx.pause_reading(conn);
                let mut st = self.shared.lock();
                if let Some(q) = st.conns.get_mut(&conn) {
                    q.paused = true;
                }
            }
        }
    }

    /// The most bytes queued at once so far.
    pub fn peak_bytes(&self) -> usize {
        self.shared.lock().peak_bytes
    }

    /// True while an echo handed to a worker has not reached its connection's queue.
    pub fn echoes_pending(&self) -> bool {
        self.shared.lock().conns.values().any(|q| q.deferred_echoes > 0)
    }

    /// The same question from another thread (the interrupt watcher of a sharded `listen`,
    /// whose pools live on the shards' threads).
    pub fn echo_probe(&self) -> EchoProbe {
        EchoProbe(self.shared.clone())
    }

    /// Prints what is queued, then ends the workers.
    pub fn finish(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn push(shared: &Arc<Shared>, conn: ConnId, item: Item) {
    let mut st = shared.lock();
    let n = item.bytes();
    st.bytes += n;
    st.peak_bytes = st.peak_bytes.max(st.bytes);
    let q = st.conns.entry(conn).or_default();
    q.bytes += n;
    q.items.push_back(item);
    let schedule = !q.busy && q.items.len() == 1;
    if schedule {
        st.ready.push_back(conn);
        drop(st);
        shared.wake.notify_one();
    }
}

fn worker(shared: &Arc<Shared>) {
    let mut st = shared.lock();
    loop {
        let Some(conn) = st.ready.pop_front() else {
            if st.stopping {
                return;
            }
            st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let Some(q) = st.conns.get_mut(&conn) else { continue };
        let Some(item) = q.items.pop_front() else {
            continue;
        };
        q.busy = true;
        drop(st);
        let n = item.bytes();
        let charged = if matches!(item, Item::Message { .. }) { n } else { 0 };
        run(shared, conn, item);
        st = shared.lock();
        if charged > 0 {
            let idle = st.ready.is_empty();
            drop(st);
            give_back(shared, charged, idle);
            st = shared.lock();
        }
        st.bytes -= n;
        let Some(q) = st.conns.get_mut(&conn) else { continue };
        q.bytes -= n;
        q.busy = false;
        let resume = q.paused && !q.resume_asked && q.bytes < CONN_QUEUE_LIMIT / 4;
        if resume {
            q.resume_asked = true;
        }
        if !q.items.is_empty() {
            st.ready.push_back(conn);
        } else if q.closed && q.deferred_echoes == 0 {
            st.conns.remove(&conn);
        }
        if resume {
            drop(st);
            ask_resume(shared, conn);
            st = shared.lock();
        }
    }
}

/// Gives `bytes` of finished messages back to the reactor's memory budget, in batches of
/// [`RELEASE_BATCH`] or when the workers have nothing left to do (`idle`).
fn give_back(shared: &Arc<Shared>, bytes: usize, idle: bool) {
    let pending = shared.unreleased.fetch_add(bytes, Ordering::AcqRel) + bytes;
    if pending < RELEASE_BATCH && !idle {
        return;
    }
    let batch = shared.unreleased.swap(0, Ordering::AcqRel);
    if batch > 0
        && let Some(handle) = shared.handle.get()
    {
        // A stopped reactor has no budget left to give back to.
        let _ = handle.call(move |ctx| ctx.release_memory(batch));
    }
}

/// Asks the reactor thread to resume `conn`, deciding there (where `message` pauses), so a
/// pause and a resume cannot cross.
fn ask_resume(shared: &Arc<Shared>, conn: ConnId) {
    let s = shared.clone();
    let Some(handle) = shared.handle.get() else { return };
    let _ = handle.call(move |ctx| {
        let mut st = s.lock();
        let total = st.bytes;
        let Some(q) = st.conns.get_mut(&conn) else { return };
        q.resume_asked = false;
        let under = q.bytes < CONN_QUEUE_LIMIT / 4 && (total < TOTAL_QUEUE_LIMIT / 2 || q.bytes <= SMALL_SHARE);
        if q.paused && under {
            q.paused = false;
            drop(st);
            ctx.resume_reading(conn);
        }
    });
}

/// Decodes and prints one item; posts a deferred echo.
fn run(shared: &Arc<Shared>, conn: ConnId, item: Item) {
    match item {
        Item::Line(l) => print_line(&l),
        Item::Message { body, show: shown, echo } => {
            if shown {
                let started = std::time::Instant::now();
                let repr = show(&body);
                log::debug!("{conn}: {} bytes shown in {:?}", body.len(), started.elapsed());
                print_line(&format!("message {conn} ({} bytes): {}", body.len(), clean::text(&repr)));
                if body.len() > IMMEDIATE_ECHO {
                    release_free_memory();
                }
            }
            if echo {
                let s = shared.clone();
                let Some(handle) = shared.handle.get() else { return };
                let posted = handle.call(move |ctx| {
                    let refused = ctx.send_owned(conn, body).err().map(|(e, _)| e);
                    let mut st = s.lock();
                    if let Some(q) = st.conns.get_mut(&conn) {
                        q.deferred_echoes -= 1;
                        if q.closed && q.deferred_echoes == 0 && q.items.is_empty() && !q.busy {
                            st.conns.remove(&conn);
                        }
                    }
                    drop(st);
                    if let Some(e) = refused
                        && !s.quiet
                    {
                        push(&s, conn, Item::Line(clean::text(&format!("echo to {conn} refused: {e}")).into_owned()));
                    }
                });
                if posted.is_err() {
                    // The reactor is gone (stopped): nothing more is sent.
                    if let Some(q) = shared.lock().conns.get_mut(&conn) {
                        q.deferred_echoes -= 1;
                    }
                }
            }
        }
    }
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Gives the memory a large decode freed back to the system. Each worker allocates from its own
/// glibc arena, which keeps what a decode freed for that thread's later use; across two workers
/// that retention added up (a 1M-deep dict after 90 other hostile pickles peaked at 585 MiB in
/// `tests/pickle_hostile.rs`, over its 512 MiB bound, where the reactor thread's single arena
/// had reused its own). `malloc_trim` returns the free pages of every arena.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it touches nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
