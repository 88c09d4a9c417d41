//! The cross-thread handle: other threads queue commands and wake the reactor through a
//! `mio::Waker`. One queue keeps the order: two sends from one thread arrive in that order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::reactor::{ConnId, Context};

/// A closure run on the reactor thread with a [`Context`].
pub type Call = Box<dyn FnOnce(&mut Context<'_>) + Send>;

pub(crate) enum Command {
    Send(ConnId, Vec<u8>),
    SendShared(ConnId, bytes::Bytes),
    Close(ConnId),
    PauseReading(ConnId),
    ResumeReading(ConnId),
    Stop,
    Call(Call),
    /// A stream accepted by a sharded acceptor, to serve here (boxed: the queue's slots stay
    /// small).
    Adopt(Box<Adopted>),
    /// The sharded group's memory-budget lead was given back: elect a leader if one waits.
    LeadFree,
}

/// A stream accepted on another thread, with what its listener says.
pub(crate) struct Adopted {
    pub(crate) stream: crate::transport::Stream,
    pub(crate) peer: crate::address::Address,
    pub(crate) opts: Arc<crate::reactor::options::ConnectionOptions>,
    /// Its place under the limit of the listener it came through, on the receiving shard
    /// (taken before it was accepted, given back when the connection is dropped).
    pub(crate) slot: Option<crate::reactor::slots::Slot>,
}

pub(crate) struct Shared {
    pub(crate) queue: Mutex<VecDeque<Command>>,
    pub(crate) waker: mio::Waker,
    pub(crate) closed: AtomicBool,
    /// Tokens that a transport without poller events (Windows pipes) reported ready.
    pub(crate) ready: Mutex<Vec<usize>>,
}

impl Shared {
    /// Marks the reactor gone and takes what was queued for it. `push` checks the mark under
    /// the same lock, so nothing is queued after: a stream handed to a shard as it stopped
    /// would otherwise wait in its queue, its client hanging, until the last handle is dropped.
    /// The caller drops what is returned (streams closed, closures dropped unrun).
    #[must_use = "drop the commands outside the lock"]
    pub(crate) fn close(&self) -> VecDeque<Command> {
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *q)
    }
}

impl crate::transport::Notify for Shared {
    fn notify(&self, token: usize) {
        self.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(token);
        if let Err(e) = self.waker.wake() {
            log::warn!("cannot wake the reactor: {e}");
        }
    }
}

/// A `Send + Clone` handle to a reactor, for other threads: send, close, stop, or run a closure
/// on the reactor thread. Commands from one thread are carried out in the order given.
///
/// ```
/// use std::sync::mpsc;
/// use mpconn::reactor::{ConnId, Context, Handler, Reactor};
///
/// struct Quiet;
/// impl Handler for Quiet {
///     fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
/// }
///
/// # fn main() -> mpconn::Result<()> {
/// let mut reactor = Reactor::new(Quiet)?;
/// let handle = reactor.handle();
/// let (tx, rx) = mpsc::channel();
/// let other = std::thread::spawn(move || -> mpconn::Result<()> {
///     // Runs on the reactor's thread, with a Context.
///     handle.call(move |ctx| {
///         let _ = tx.send(ctx.entry_count());
///     })?;
///     handle.stop() // run() returns once this is carried out
/// });
/// reactor.run()?;
/// other.join().unwrap()?;
/// assert_eq!(rx.recv().unwrap(), 0); // no listener, no connection
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    fn push(&self, c: Command) -> Result<()> {
        let was_empty = {
            let mut q = self.shared.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Under the lock that `Shared::close` takes: once closed, nothing more is queued.
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed("the reactor is gone"));
            }
            let was_empty = q.is_empty();
            q.push_back(c);
            was_empty
        };
        if was_empty {
            self.shared.waker.wake()?;
        }
        Ok(())
    }

    /// Queues `message` for `conn`. If the connection is over its high-water mark when the
    /// reactor gets to it, the message goes to [`crate::reactor::Handler::on_send_refused`].
    pub fn send(&self, conn: ConnId, message: Vec<u8>) -> Result<()> {
        self.push(Command::Send(conn, message))
    }

    /// Queues a shared (refcounted) message for `conn`, as [`Context::send_shared`]: give each
    /// recipient a clone of one [`bytes::Bytes`] (a reference count, not a copy). A refusal goes
    /// to [`crate::reactor::Handler::on_send_refused`] as [`Handle::send`]'s do (there as a
    /// `Vec<u8>`: a copy of the body, made only for a refused message).
    pub fn send_shared(&self, conn: ConnId, message: bytes::Bytes) -> Result<()> {
        self.push(Command::SendShared(conn, message))
    }

    /// Closes `conn` (after its queued messages are written).
    pub fn close(&self, conn: ConnId) -> Result<()> {
        self.push(Command::Close(conn))
    }

    /// Stops reading `conn` (see [`Context::pause_reading`]); an unknown id is ignored.
    pub fn pause_reading(&self, conn: ConnId) -> Result<()> {
        self.push(Command::PauseReading(conn))
    }

    /// Resumes reading `conn` (see [`Context::resume_reading`]); an unknown id is ignored.
    pub fn resume_reading(&self, conn: ConnId) -> Result<()> {
        self.push(Command::ResumeReading(conn))
    }

    /// Stops the reactor gracefully.
    pub fn stop(&self) -> Result<()> {
        self.push(Command::Stop)
    }

    /// Hands an accepted stream to the reactor (a sharded acceptor's hand-off). On an error the
    /// stream is dropped, which closes it.
    pub(crate) fn adopt(&self, adopted: Adopted) -> Result<()> {
        self.push(Command::Adopt(Box::new(adopted)))
    }

    /// Tells a shard that its group's memory-budget lead is free.
    pub(crate) fn lead_free(&self) -> Result<()> {
        self.push(Command::LeadFree)
    }

    /// Runs `f` on the reactor thread.
    pub fn call(&self, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<()> {
        self.push(Command::Call(Box::new(f)))
    }
}
