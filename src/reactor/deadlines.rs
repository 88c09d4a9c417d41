//! Deadlines: one ordered set of `(when, id)` holding, for each connection, the earliest
//! deadline of its session's table (`Session::poll_timeout`), and for a listener paused after
//! running out of descriptors, when to accept again. Each connection or listener has at most
//! one entry, moved only when its earliest deadline changes (sessions arm their slots lazily,
//! so not per read): the set's size is bounded by the number of entries, whatever the read
//! rate, and a turn pops only what is due.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::reactor::{Handler, Reactor};

#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, u64)>,
}

impl Timers {
    /// Moves `id`'s entry from `*at` to `next` (either may be none).
    #[inline]
    pub(crate) fn sync(&mut self, id: u64, at: &mut Option<Instant>, next: Option<Instant>) {
        if *at == next {
            return;
        }
        if let Some(old) = at.take() {
            self.set.remove(&(old, id));
        }
        if let Some(when) = next {
            self.set.insert((when, id));
        }
        *at = next;
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(when, _)| when)
    }

    /// Removes and returns one entry due at `now`; the caller clears the owner's `at`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        match self.set.first() {
            Some(&(when, _)) if when <= now => self.set.pop_first().map(|(_, id)| id),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

impl<H: Handler> Reactor<H> {
    /// Runs every deadline due at `now`: a listener's accept resumes; a connection's session
    /// handles its table (a close, a buffer to release) and its next deadline is synced.
    pub(super) fn fire_deadlines(&mut self, now: Instant) {
        while let Some(id) = self.core.timers.pop_expired(now) {
            if let Some(l) = self.core.listener(id) {
                l.timer_at = None;
                l.paused = false;
                self.accept(id);
                self.settle();
                continue;
            }
            let Some(c) = self.core.conn(id) else {
                continue;
            };
            c.timer_at = None;
            let due = c.session.handle_timeout(now);
            if due.release_buffer {
                c.decoder.shrink_if_idle();
                self.core.budget_sync(id);
            }
            if due.try_write {
                // The peer may be reading what waits, unreported by the poller: one write
                // tells (the session decides at the next call, due at once unless bytes moved).
                self.core.flush_at(id, Some(now));
            }
            self.core.pump(id);
            self.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_entry_per_owner_popped_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let (mut a1, mut a2, mut a3) = (None, None, None);
        t.sync(3, &mut a3, Some(t0 + Duration::from_secs(3)));
        t.sync(1, &mut a1, Some(t0 + Duration::from_secs(1)));
        t.sync(2, &mut a2, Some(t0 + Duration::from_secs(2)));
        // Moving a deadline replaces the entry.
        for i in 0..100 {
            t.sync(2, &mut a2, Some(t0 + Duration::from_millis(2000 + i)));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_expired(t0), None);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(t.pop_expired(now), Some(1));
        assert_eq!(t.pop_expired(now), Some(2));
        t.sync(3, &mut a3, None);
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(t.len(), 0);
    }
}
