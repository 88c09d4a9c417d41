//! Writing: a connection's queue is flushed once after its reads and for every dirty connection
//! at the end of a turn; `WouldBlock` asks the poller for writability; a queue that drains below
//! the low-water mark resumes an auto-paused connection and reports `on_drained`. (A request's
//! reply does not come here when the socket takes it at once: `Core::send` writes the first reply
//! to the last whole message of a read straight away when nothing is queued before it, which
//! spares a ping-pong the queue's copy and flush; replies to a burst still leave together.)

use std::time::Instant;

use mio::{Interest, Token};

use crate::reactor::core::{Core, Entry, index_of};
use crate::reactor::{Handler, Reactor};

impl Core {
    /// Writes what a connection has queued; records drain, close, resume or the need for write
    /// readiness.
    pub(crate) fn flush(&mut self, id: u64) {
        self.flush_at(id, None);
    }

    /// [`Core::flush`] with the time, when the caller read the clock a moment ago (the read
    /// whose replies these are): one clock read serves both.
    pub(crate) fn flush_at(&mut self, id: u64, now: Option<Instant>) {
        let Some(Entry::Conn(c)) = self.entries.get_mut(index_of(id)) else {
            return;
        };
        if c.id.0 != id {
            return;
        }
        c.dirty = false;
        if c.session.is_connecting() {
            return;
        }
        let token = Token(id as usize);
        let queued_before = c.out.queued();
        let result = c.out.flush(&mut c.stream, &mut self.spare);
        if let Ok(drained) = result {
            // At most one clock read per flush: progress feeds the idle clock, a stall the
            // write-stall deadline (the session decides; see `Session::on_flush`).
            c.session.on_flush(now.unwrap_or_else(Instant::now), c.out.queued() < queued_before, drained);
        }
        // Below the low-water mark (half the high-water mark) an auto-paused connection reads
        // again.
        // Under the memory budget's pressure, a queue above SMALL_INPUT keeps it paused.
        let queued = c.out.queued();
        let resume = c.auto_paused
            && queued < c.opts.high_water_mark / 2
            && !(self.budget.under_pressure() && queued > crate::budget::SMALL_INPUT);
        if resume {
            c.auto_paused = false;
        }
        match result {
            Ok(true) => {
                if c.write_interest {
                    c.write_interest = false;
                    let _ = c.stream.reregister(self.poll.registry(), token, Interest::READABLE);
                }
                if c.backpressured {
                    c.backpressured = false;
                    self.drained.push(c.id);
                }
                c.session.flushed();
            }
            Ok(false) => {
                if !c.write_interest {
                    c.write_interest = true;
                    let _ = c.stream.reregister(self.poll.registry(), token, Interest::READABLE | Interest::WRITABLE);
                }
            }
            Err(e) => c.session.handle_io_error(e),
        }
        if resume {
            self.reading_changed(id, true);
        }
        self.budget_sync(id);
        self.pump(id);
    }
}

impl<H: Handler> Reactor<H> {
    /// Flushes every connection with queued output.
    /// A connection flushed since it was listed (after its read, say) is not flushed again.
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.core.dirty);
        for &id in &dirty {
            if self.core.conn(id).is_some_and(|c| c.dirty) {
                self.core.flush(id);
            }
        }
        // Keep the list's allocation for the next turn.
        dirty.clear();
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }
}
