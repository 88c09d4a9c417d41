//! The event loop: one turn of the reactor.
//!
//! A turn (`run_once`):
//! 1. waits for events (not at all when work is pending: carried reads, closes, opens);
//! 2. handles this turn's events in order (waker: cross-thread commands and pipe readiness;
//!    listener: accept; connection: write, then read), then reads the connections carried over
//!    from the last turn, in the order they were carried;
//! 3. retries accepts, fires due deadlines, flushes every connection with queued output, and
//!    runs the callbacks all of this recorded (`settle`).
//!
//! Reads are bounded: each connection gets at most `read_budget` bytes per turn (one read at
//! most that large), and a turn reads at most `turn_read_budget` in all; a connection that hits
//! either limit with data left goes on the carry-over list, once. Next turn, after the new
//! events, the connections that got no read at all go first, then those that used their slice,
//! so a connection put off by the turn's budget is read in the next turn whatever the streamers
//! ahead of it do.

use std::io;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::reactor::core::{Entry, WAKER_TOKEN, index_of};
use crate::reactor::handle::Command;
use crate::reactor::options::CloseReason;
use crate::reactor::{ConnId, Context, Handler, ListenerId, Reactor, Turn};

impl<H: Handler> Reactor<H> {
    /// One turn: waits up to `timeout` (`None`: until something happens) for events, handles
    /// them, fires due deadlines, writes queued messages, and returns.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<Turn> {
        if self.stopped {
            return Ok(Turn::Stopped);
        }
        let mut wait = timeout;
        if self.core.has_pending_work() || self.core.stopping.is_some() {
            wait = Some(Duration::ZERO);
        }
        // The clock is read only when a deadline is pending (none is, on a busy connection with
        // no partial message and nothing waiting to be written).
        if let Some(next) = self.core.timers.next() {
            let until = next.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        if let Some(g) = &self.core.gauges {
            g.set_busy(false);
        }
        let polled = self.core.poll.poll(&mut self.events, wait);
        if let Some(g) = &self.core.gauges {
            g.set_busy(true);
        }
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        self.core.turn_read = 0;
        // Last turn's carry-over list, read after the events (those carried during this turn's
        // events wait for the next turn): no connection gets two slices in one turn.
        let mut carry = std::mem::take(&mut self.core.carry_first);
        carry.append(&mut self.core.carry);
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

        // Then the connections carried over from the last turn, each once (a carried connection
        // with an event was not read above): those that got no read at all last turn first,
        // then those that used their slice. Events go first so a connection that just became
        // readable (an interactive peer) does not wait behind the streamers' slices.
        for &id in &carry {
            if let Some(c) = self.core.conn(id) {
                c.carried = false;
                self.read_conn(id, false);
                self.settle();
            }
        }
        // Keep the list's allocation for the next turn.
        carry.clear();
        if self.core.carry.is_empty() {
            self.core.carry = carry;
        }

        let retry = std::mem::take(&mut self.core.accept_retry);
        for id in retry {
            self.accept(id);
            self.settle();
        }
        if self.core.timers.next().is_some() {
            self.fire_deadlines(Instant::now());
        }
        self.flush_dirty();
        self.settle();
        if self.core.stopping.is_some() {
            self.progress_stop();
        }
        self.core.announce_free_lead();
        self.core.publish();
        if self.stopped {
            return Ok(Turn::Stopped);
        }
        // An outer loop waiting on our descriptor must hear about work no OS event announces.
        if events_full || self.core.has_pending_work() {
            let _ = self.core.shared.waker.wake();
        }
        Ok(Turn::Running)
    }

    pub(super) fn ctx(&mut self) -> (&mut H, Context<'_>) {
        (&mut self.handler, Context { core: &mut self.core })
    }

    /// Handles readiness that a transport reported itself (Windows pipes) as poller events.
    fn drain_reported(&mut self) {
        let reported =
            std::mem::take(&mut *self.core.shared.ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for token in reported {
            self.on_event(token as u64, true, true, false);
            self.settle();
        }
    }

    fn on_event(&mut self, id: u64, readable: bool, writable: bool, closed: bool) {
        match self.core.entries.get(index_of(id)) {
            Some(Entry::Listener(l)) if l.id.0 == id => self.accept(id),
            Some(Entry::Conn(c)) if c.id.0 == id => {
                if c.session.is_connecting() {
                    if readable || writable {
                        self.finish_connect(id);
                    }
                    return;
                }
                // A carried connection is read from the carry-over list, not a second time here.
                let read = readable && !c.carried;
                if writable {
                    self.core.flush(id);
                }
                if read {
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
    pub(super) fn settle(&mut self) {
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
        let mut spare = crate::reactor::write_queue::Spare::default();
        while let Some(m) = c.session.poll_transmit() {
            c.out.push_owned(m, &mut spare);
        }
        let _ = c.out.flush(&mut c.stream, &mut spare);
        log::debug!("{id} closed: {reason}");
        drop(c);
        let (h, mut ctx) = self.ctx();
        h.on_close(&mut ctx, id, reason);
    }

    fn drain_commands(&mut self) {
        let commands =
            std::mem::take(&mut *self.core.shared.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for command in commands {
            match command {
                Command::Send(id, msg) => {
                    if let Err((e, msg)) = self.core.send_owned(id, msg) {
                        let (h, mut ctx) = self.ctx();
                        h.on_send_refused(&mut ctx, id, msg, e);
                    }
                }
                Command::SendShared(id, msg) => {
                    if let Err(e) = self.core.send_shared(id, &msg) {
                        let (h, mut ctx) = self.ctx();
                        h.on_send_refused(&mut ctx, id, Vec::from(msg), e);
                    }
                }
                Command::Close(id) => self.core.close(id),
                Command::PauseReading(id) => {
                    self.core.set_paused(id, true);
                }
                Command::ResumeReading(id) => {
                    self.core.set_paused(id, false);
                }
                Command::Stop => {
                    let (_, mut ctx) = self.ctx();
                    ctx.stop();
                }
                Command::Call(f) => {
                    let (_, mut ctx) = self.ctx();
                    f(&mut ctx);
                }
                Command::Adopt(a) => self.adopt(*a),
                Command::LeadFree => {
                    self.core.budget.retry_lead();
                    self.core.budget_wake();
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
        let now = Instant::now();
        let past = now >= deadline;
        for id in keys {
            if self.core.listener(id).is_some() {
                self.core.remove_listener(ListenerId(id));
                continue;
            }
            let Some(c) = self.core.conn(id) else {
                continue;
            };
            // Open connections flush first (a closing one keeps flushing until the deadline);
            // one still connecting or authenticating closes at once.
            let unopened = c.session.is_connecting() || c.session.is_handshaking();
            if past || c.out.is_empty() || unopened {
                c.session.abort("the reactor stopped");
            } else if c.session.is_open() {
                c.session.close(now, false);
                let cid = c.id;
                self.core.mark_dirty(cid);
            }
            self.core.pump(id);
        }
        self.settle();
        self.flush_dirty();
        if self.core.entries.is_empty() {
            self.stopped = true;
            drop(self.core.shared.close());
        }
    }
}
