//! Deadlines: a min-heap of (when, connection, kind) with lazy deletion. Only connections that
//! have a deadline are in it, each at most once per kind, and a turn pops only what expired, so
//! the cost of a turn does not grow with idle connections. A popped entry whose connection is
//! gone or whose deadline moved is dropped or re-armed by the caller.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Connect plus handshake must finish.
    Handshake,
    /// No traffic for the idle timeout.
    Idle,
    /// One message incomplete too long.
    PartialMessage,
    /// Flushing before a local close must finish.
    CloseFlush,
    /// A quiet connection's read buffer may be freed.
    ReleaseBuffer,
    /// A listener paused after running out of descriptors may accept again.
    ListenerResume,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
}

impl Timers {
    pub(crate) fn add(&mut self, when: Instant, id: u64, kind: TimerKind) {
        self.heap.push(Reverse((when, id, kind)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Pops one deadline that has passed at `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(u64, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => self.heap.pop().map(|Reverse((_, id, kind))| (id, kind)),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.add(t0 + Duration::from_secs(3), 3, TimerKind::Idle);
        t.add(t0 + Duration::from_secs(1), 1, TimerKind::Handshake);
        t.add(t0 + Duration::from_secs(2), 2, TimerKind::PartialMessage);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_expired(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(t.pop_expired(now), Some((1, TimerKind::Handshake)));
        assert_eq!(t.pop_expired(now), Some((2, TimerKind::PartialMessage)));
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(t.len(), 1);
    }
}
