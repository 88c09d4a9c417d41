//! A listener's connection limit, kept where every thread that accepts for it sees it.
//!
//! `max_connections` bounds the connections a listener serves on each shard. A stream reaches a
//! shard three ways: the shard accepts it itself, a sibling accepts it from a socket the shards
//! share and hands it over, or the acceptor thread hands it over. Counted separately, two of
//! them could fill the same shard at once (an outside tester saw 14 served where the limit was
//! 10). So a slot is taken here, atomically against the limit, *before* a stream is accepted or
//! handed anywhere, and the [`Slot`] travels with the stream: to the shard, into the
//! connection's entry, and back here when it is dropped (the connection closed, its session
//! refused, or the stream lost with a stopping shard). The bound holds by structure, whoever
//! accepts and however the threads interleave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::reactor::ListenerId;

/// The connections open against one listener (or one socket the shards share), per shard.
pub(crate) struct ListenerSlots {
    max: usize,
    /// Per shard, each on a cache line of its own: shards taking and giving back their own
    /// slots do not pull one line back and forth between cores.
    open: Box<[Padded]>,
    /// The listener that serves the socket on each shard, by shard index: the one a closed
    /// connection tells to resume accepting. None for the acceptor thread's sockets.
    listeners: Box<[Option<ListenerId>]>,
    /// Per shard: its listener left the poller (at the limit, with every sibling full). On a
    /// socket the shards share, the kernel woke that shard alone for a client it could not
    /// place; a slot given back on any shard then retries the accept there, or the client would
    /// wait beside the room it frees (found from outside).
    paused: Box<[AtomicBool]>,
}

impl ListenerSlots {
    /// Slots for a socket served on `listeners.len()` shards, `max` on each (at least 1).
    pub(crate) fn new(max: usize, listeners: Vec<Option<ListenerId>>) -> Arc<ListenerSlots> {
        let open = listeners.iter().map(|_| Padded(AtomicUsize::new(0))).collect();
        let paused = listeners.iter().map(|_| AtomicBool::new(false)).collect();
        Arc::new(ListenerSlots { max: max.max(1), open, listeners: listeners.into(), paused })
    }

    /// A slot on `shard`, if it has fewer than `max` open; it is given back when dropped.
    pub(crate) fn take(self: &Arc<Self>, shard: usize) -> Option<Slot> {
        let taken = self
            .open
            .get(shard)?
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.max).then_some(open + 1));
        taken.ok().map(|_| Slot { slots: self.clone(), shard })
    }

    /// Whether `shard` has a slot free now (another thread may take it first).
    pub(crate) fn has_room(&self, shard: usize) -> bool {
        self.open.get(shard).is_some_and(|open| open.0.load(Ordering::Acquire) < self.max)
    }

    /// Marks `shard`'s listener out of the poller (`true`) or back in.
    pub(crate) fn set_paused(&self, shard: usize, paused: bool) {
        if let Some(p) = self.paused.get(shard) {
            p.store(paused, Ordering::Release);
        }
    }

    /// Whether some shard's listener is out of the poller: a client may wait that a shard
    /// with room must accept itself.
    pub(crate) fn any_paused(&self) -> bool {
        self.paused.iter().any(|p| p.load(Ordering::Acquire))
    }

    /// The connections open on `shard`.
    #[cfg(test)]
    pub(crate) fn open(&self, shard: usize) -> usize {
        self.open.get(shard).map_or(0, |open| open.0.load(Ordering::Acquire))
    }
}

/// An atomic count alone on its cache line (128 bytes: adjacent-line prefetching pairs lines).
#[repr(align(128))]
struct Padded(AtomicUsize);

/// One connection's place under a listener's limit on one shard; given back when dropped.
pub(crate) struct Slot {
    slots: Arc<ListenerSlots>,
    shard: usize,
}

impl Slot {
    /// The listener that serves this slot's socket on its shard, if a shard listener does.
    pub(crate) fn listener(&self) -> Option<ListenerId> {
        self.slots.listeners.get(self.shard).copied().flatten()
    }

    /// Whether some shard's listener of this socket is out of the poller.
    pub(crate) fn any_paused(&self) -> bool {
        self.slots.any_paused()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Taken by `take`, so the count is at least 1.
        self.slots.open[self.shard].0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn a_slot_is_given_back_when_dropped_and_the_limit_holds() {
        let slots = ListenerSlots::new(2, vec![Some(ListenerId(7)), None]);
        let a = slots.take(0).expect("first");
        let b = slots.take(0).expect("second");
        assert!(slots.take(0).is_none(), "a third over the limit of 2");
        assert!(!slots.has_room(0));
        assert!(slots.has_room(1), "the other shard counts apart");
        assert_eq!(a.listener(), Some(ListenerId(7)));
        assert_eq!(slots.take(1).expect("shard 1").listener(), None);
        drop(a);
        assert_eq!(slots.open(0), 1);
        assert!(slots.take(0).is_some(), "a slot given back is free again");
        drop(b);
        assert_eq!(slots.open(0), 0);
        assert!(slots.take(5).is_none(), "no such shard");
    }

    #[test]
    fn threads_racing_for_slots_never_take_more_than_the_limit() {
        const MAX: usize = 10;
        let slots = ListenerSlots::new(MAX, vec![None, None]);
        let held: Vec<Vec<Slot>> = thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let slots = &slots;
                    s.spawn(move || (0..1000).filter_map(|i| slots.take((t + i) % 2)).collect::<Vec<_>>())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let total: usize = held.iter().map(Vec::len).sum();
        assert_eq!(total, 2 * MAX, "exactly the limit on each shard is taken");
        assert_eq!((slots.open(0), slots.open(1)), (MAX, MAX));
        drop(held);
        assert_eq!((slots.open(0), slots.open(1)), (0, 0));
    }
}
