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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
    /// Marks set so far: a shard that gave back the slot of an empty accept and saw a mark
    /// accepts once more per new mark, not once per look (a mark can last: a shard stays
    /// paused while it is full).
    pauses: AtomicU64,
}

impl ListenerSlots {
    /// Slots for a socket served on `listeners.len()` shards, `max` on each (at least 1).
    pub(crate) fn new(max: usize, listeners: Vec<Option<ListenerId>>) -> Arc<ListenerSlots> {
        let open = listeners.iter().map(|_| Padded(AtomicUsize::new(0))).collect();
        let paused = listeners.iter().map(|_| AtomicBool::new(false)).collect();
        Arc::new(ListenerSlots {
            max: max.max(1),
            open,
            listeners: listeners.into(),
            paused,
            pauses: AtomicU64::new(0),
        })
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
    ///
    /// The mark and the counts form a handshake: a shard leaving the poller marks itself, then
    /// looks for room ([`ListenerSlots::any_room`]); a shard giving a slot back does so, then
    /// looks for a mark ([`Slot::give_back`]). All four accesses are `SeqCst`, so in their one
    /// total order at least one of the two sees the other: either the pausing shard finds the
    /// room and stays, or the closing shard finds the mark and accepts (found from outside
    /// with sleeps in either window: a client waited beside the room, with no bound).
    pub(crate) fn set_paused(&self, shard: usize, paused: bool) {
        if let Some(p) = self.paused.get(shard) {
            p.store(paused, Ordering::SeqCst);
            if paused {
                self.pauses.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// When some shard's listener is out of the poller: how many marks were set so far (which
    /// tells a new mark from one already seen). None when no shard is marked.
    pub(crate) fn waiting(&self) -> Option<u64> {
        let pauses = self.pauses.load(Ordering::SeqCst);
        self.any_paused().then_some(pauses)
    }

    /// Whether some shard's listener is out of the poller: a client may wait that a shard
    /// with room must accept itself.
    pub(crate) fn any_paused(&self) -> bool {
        self.paused.iter().any(|p| p.load(Ordering::SeqCst))
    }

    /// Whether some shard has a slot free now.
    pub(crate) fn any_room(&self) -> bool {
        self.open.iter().any(|open| open.0.load(Ordering::SeqCst) < self.max)
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

    /// Gives the slot back, then tells its listener and [`ListenerSlots::waiting`] (looked at
    /// after the slot is back: see [`ListenerSlots::set_paused`]).
    pub(crate) fn give_back(self) -> (Option<ListenerId>, Option<u64>) {
        let (listener, slots) = (self.listener(), self.slots.clone());
        drop(self);
        (listener, slots.waiting())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Taken by `take`, so the count is at least 1. (SeqCst: see `set_paused`.)
        self.slots.open[self.shard].0.fetch_sub(1, Ordering::SeqCst);
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

    /// The pause/close handshake: one thread marks its shard paused and looks for room, the
    /// other gives a slot back and looks for a mark, at once; in no round may both miss (the
    /// client the pausing shard was woken for would wait with room free and no shard to take
    /// it). Store-then-load on two threads is what a CPU reorders (x86 does, through its
    /// store buffer) unless the accesses are sequentially consistent.
    #[test]
    fn a_pausing_shard_and_a_closing_one_never_both_miss_each_other() {
        // With the pausing side's store `Release` and its load `Acquire`, this found 5, 28, 5
        // and 4 rounds of 2,000,000 missed in four runs of four (release build, quiet 2-core
        // x86 host); with `SeqCst`, none. Bounded in time too: spinning threads on busy cores
        // meet slowly.
        const ROUNDS: usize = 2_000_000;
        const FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(3);
        let slots = ListenerSlots::new(1, vec![None, None]);
        let _full = slots.take(0).expect("shard 0 free");
        // The two threads meet at each step by spinning (a blocking barrier would stagger them
        // by microseconds, far wider than the window), yielding now and then on a busy host.
        let arrived = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let meet = |step: usize| {
            arrived.fetch_add(1, Ordering::SeqCst);
            let mut spins = 0u32;
            while arrived.load(Ordering::Acquire) < 2 * step {
                spins += 1;
                if spins.is_multiple_of(1024) {
                    thread::yield_now();
                }
                std::hint::spin_loop();
            }
        };
        let (saw_room, saw_mark): (Vec<bool>, Vec<bool>) = thread::scope(|s| {
            let pausing = s.spawn(|| {
                let start = std::time::Instant::now();
                let mut seen = Vec::new();
                for r in 0.. {
                    if r == ROUNDS || start.elapsed() > FOR_AT_MOST {
                        stop.store(true, Ordering::SeqCst);
                    }
                    slots.set_paused(0, false);
                    meet(2 * r + 1);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    slots.set_paused(0, true);
                    seen.push(slots.any_room());
                    meet(2 * r + 2);
                }
                seen
            });
            let closing = s.spawn(|| {
                let mut seen = Vec::new();
                for r in 0.. {
                    let held = slots.take(1).expect("shard 1 free at each round's start");
                    meet(2 * r + 1);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    seen.push(held.give_back().1.is_some());
                    meet(2 * r + 2);
                }
                seen
            });
            (pausing.join().unwrap(), closing.join().unwrap())
        });
        let missed = saw_room.iter().zip(&saw_mark).filter(|(room, mark)| !**room && !**mark).count();
        println!("{} rounds, {missed} where neither saw the other", saw_room.len());
        assert!(!saw_room.is_empty(), "no round ran");
        assert_eq!(missed, 0, "rounds where neither saw the other, of {}", saw_room.len());
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
