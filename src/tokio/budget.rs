//! The memory budget on the async face: the connections accepted from one [`super::Listener`]
//! share one [`MemoryBudget`] (see [`crate::budget`]), behind a mutex, with the waker of every
//! connection the budget stopped. A connection asks before a read that would grow its decoder's
//! buffer; a refused read returns `Pending` (the session's deadline sleep stays armed beside it,
//! so a budget wait counts against the peer's deadlines) until the budget names the connection.
//!
//! Output is not counted here: on this face a send waits for the socket, so a connection holds at
//! most one queued message (or the Sink's 256 KiB batch) of its own, never a growing queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::budget::{MemoryBudget, SMALL_INPUT};
use crate::wire::frame::FrameDecoder;

/// One listener's budget, shared by its connections.
#[derive(Debug)]
pub(crate) struct SharedBudget {
    state: Mutex<State>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct State {
    budget: MemoryBudget,
    /// Connections stopped by the budget, to wake when it names them.
    wakers: HashMap<u64, Waker>,
}

impl State {
    /// The wakers of the connections the budget named (woken after the lock is released).
    fn named(&mut self) -> Vec<Waker> {
        if !self.budget.has_wake() {
            return Vec::new();
        }
        let ids = self.budget.take_wake();
        ids.into_iter().filter_map(|id| self.wakers.remove(&id)).collect()
    }
}

impl SharedBudget {
    /// A budget of `cap` bytes (`None`: none is made, connections are unbounded together).
    pub(crate) fn new(cap: Option<usize>) -> Option<Arc<SharedBudget>> {
        cap.map(|c| {
            Arc::new(SharedBudget {
                state: Mutex::new(State { budget: MemoryBudget::new(Some(c)), wakers: HashMap::new() }),
                next_id: AtomicU64::new(1),
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes held by the listener's connections together, and reads refused so far.
    pub(crate) fn usage(&self) -> (usize, u64) {
        let s = self.lock();
        (s.budget.total(), s.budget.refusals())
    }
}

/// One connection's place in its listener's budget; leaving it (drop) frees its share.
#[derive(Debug)]
pub(crate) struct BudgetSlot {
    shared: Arc<SharedBudget>,
    id: u64,
    /// The input last reported.
    seen: usize,
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl BudgetSlot {
    pub(crate) fn new(shared: Arc<SharedBudget>) -> BudgetSlot {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        BudgetSlot { shared, id, seen: 0 }
    }

    /// Before a read into `decoder`: ready when the budget lets it grow by what the read would
    /// add; otherwise the task waits until the budget names this connection. Under pressure an
    /// idle decoder's large buffer is given back first.
    pub(crate) fn poll_may_read(&mut self, cx: &mut Context<'_>, decoder: &mut FrameDecoder) -> Poll<()> {
        let growth = decoder.read_growth();
        if growth == 0 && decoder.capacity() == self.seen {
            return Poll::Ready(());
        }
        let mut s = self.shared.lock();
        if s.budget.under_pressure() && decoder.is_idle() && decoder.capacity() > SMALL_INPUT {
            decoder.shrink_if_idle();
        }
        let growth = decoder.read_growth();
        self.seen = decoder.capacity();
        s.budget.set_input(self.id, self.seen);
        let allowed = s.budget.may_read(self.id, growth);
        if !allowed {
            s.wakers.insert(self.id, cx.waker().clone());
            log::debug!("async connection stops reading: memory budget spent ({} bytes held)", s.budget.total());
        }
        let named = s.named();
        drop(s);
        wake_all(named);
        if allowed { Poll::Ready(()) } else { Poll::Pending }
    }

    /// After a read or a message taken: reports what `decoder` holds now. Under pressure an idle
    /// decoder's large buffer (a message just taken) is given back. An idle decoder holds no
    /// incomplete message, so this connection passes the lead on either way: its task may not
    /// read again for a long time (an echo blocked in `send` to a peer that never reads kept the
    /// lead, with its idle buffer, and the other large senders waited until their deadline).
    pub(crate) fn report(&mut self, decoder: &mut FrameDecoder) {
        if decoder.capacity() == self.seen && !(decoder.is_idle() && self.seen > SMALL_INPUT) {
            return;
        }
        let mut s = self.shared.lock();
        if s.budget.under_pressure() && decoder.is_idle() && decoder.capacity() > SMALL_INPUT {
            decoder.shrink_if_idle();
        }
        if decoder.is_idle() {
            s.budget.pass_lead(self.id);
        }
        if decoder.capacity() != self.seen {
            self.seen = decoder.capacity();
            s.budget.set_input(self.id, self.seen);
        }
        let named = s.named();
        drop(s);
        wake_all(named);
    }
}

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.wakers.remove(&self.id);
        s.budget.remove(self.id, 0);
        let named = s.named();
        drop(s);
        wake_all(named);
    }
}
