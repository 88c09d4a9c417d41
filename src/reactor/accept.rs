//! Accepting and connecting: a new socket gets its session (listener or client role, keyed or
//! not) and joins the reactor; the session decides the rest.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::address::Address;
use crate::reactor::handle::Adopted;
use crate::reactor::options::ConnectionOptions;
use crate::reactor::shard::should_hand_over;
use crate::reactor::slots::{ListenerSlots, Slot};
use crate::reactor::{Handler, Reactor};
use crate::settings::Side;
use crate::transport::Stream;

/// A stream just accepted, in its slot.
struct Accepted {
    stream: Stream,
    peer: Address,
    slot: Slot,
}

/// Connections one shard takes per wake-up from a socket the shards share: the others, woken
/// one at a time by the kernel, take the rest of a burst.
const SHARED_ACCEPT_BATCH: usize = 4;

impl<H: Handler> Reactor<H> {
    /// Accepts on a listener until it would block, the connection limit is reached, or the
    /// process is out of descriptors (then accepting pauses for the backoff); a listener whose
    /// socket the shards share takes at most [`SHARED_ACCEPT_BATCH`] per call. A slot under the
    /// limit is taken before each accept and travels with the stream ([`crate::reactor::slots`]).
    pub(super) fn accept(&mut self, id: u64) {
        // A shared listener taken out of the poller while paused is back in to accept.
        self.core.shared_listener_interest(id, true);
        if let Some(l) = self.core.listener(id) {
            l.slots.set_paused(l.shard, false);
        }
        let mut taken = 0;
        // The marks counted when an empty accept last gave its slot back and looked once more
        // (see the `WouldBlock` arm).
        let mut rechecked_at = None;
        loop {
            if self.core.stopping.is_some() {
                return;
            }
            let backoff = self.core.config.accept_backoff;
            let Some(l) = self.core.listener(id) else {
                return;
            };
            if l.shared && taken == SHARED_ACCEPT_BATCH {
                return; // level-triggered: the rest is reported again, to whichever shard waits
            }
            let me = l.shard;
            let place = match l.slots.take(me) {
                Some(slot) => Some((me, slot)),
                // Full here, on a socket the shards share: the kernel woke this shard alone for
                // the client waiting, so a sibling with room gets it from here (or it would
                // wait in the backlog for a close or the next client to wake a shard again).
                None if l.shared => {
                    let slots = l.slots.clone();
                    self.sibling_slot(&slots, me)
                }
                None => None,
            };
            let Some(l) = self.core.listener(id) else {
                return;
            };
            let Some((to, slot)) = place else {
                // At the limit (counting streams handed here by other threads), and every
                // sibling too: the slot given back by the next close, here or (on a shared
                // socket) on any shard, resumes accepting. Marked first, then the room looked
                // at again: a slot given back meanwhile on another shard, whose shard looked
                // for a mark before this one was set, is found here (`set_paused` says why).
                l.slots.set_paused(l.shard, true);
                if l.shared && l.slots.any_room() {
                    l.slots.set_paused(l.shard, false);
                    continue;
                }
                l.paused = true;
                self.core.shared_listener_interest(id, false);
                return;
            };
            taken += 1;
            match l.socket.accept_nonblocking() {
                Ok((stream, peer)) => {
                    l.paused = false;
                    let opts = l.opts.clone();
                    let accepted = Accepted { stream, peer, slot };
                    let kept = if to != me {
                        self.hand_to(to, accepted, &opts);
                        None
                    } else if l.shared {
                        let slots = l.slots.clone();
                        self.hand_over_if_ahead(accepted, &opts, &slots, me)
                    } else {
                        Some(accepted)
                    };
                    let Some(Accepted { stream, peer, slot }) = kept else { continue };
                    // The settings were checked by `listen`; what can fail is the random source.
                    let session = match opts
                        .session_factory(&self.core.config)
                        .and_then(|f| f.session(Side::Listener, Instant::now()))
                    {
                        Ok(s) => s,
                        Err(e) => {
                            log::error!("no session for an accepted connection, dropped: {e}");
                            continue;
                        }
                    };
                    match self.core.add_conn(stream, peer, session, opts, Some(slot)) {
                        Ok(cid) => {
                            // add_conn pumped the session: the challenge is queued, or the
                            // connection opened (no key).
                            if self.core.conn(cid.0).is_some_and(|c| c.session.is_open()) {
                                self.core.opened.push(cid);
                            }
                        }
                        Err(e) => log::warn!("accepted connection dropped: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The slot was taken for a client that was not there. A shard woken for a
                    // client meanwhile may have found no room because of it, marked itself and
                    // paused: so the slot goes back by the handshake (`ListenerSlots::set_paused`),
                    // and on a mark one more accept takes the client that shard was woken for,
                    // queued before its mark (an outside attack's trace: shard 3 held the slot of
                    // an empty accept while shard 1, woken, found all full; the client waited).
                    // Once per new mark: a mark seen before was looked after, and a mark lasts
                    // while its shard is full, so once per look would spin.
                    let (_, waiting) = slot.give_back();
                    if waiting.is_some() && waiting != rechecked_at {
                        rechecked_at = waiting;
                        continue;
                    }
                    return;
                }
                Err(e) if crate::transport::is_transient_accept_error(&e) => {
                    continue;
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning; existing
                    // connections keep being served.
                    log::warn!("accept on {} failed: {e}; pausing accepts", l.socket.address());
                    l.paused = true;
                    self.core.shared_listener_interest(id, false);
                    self.core.set_deadline(id, Some(Instant::now() + backoff));
                    return;
                }
            }
        }
    }

    /// A slot on the least-loaded sibling of shard `me` that has room under `slots`, and its
    /// index; none when every other shard is full or this reactor has no siblings. A sibling
    /// stuck in its handler is taken only when no other has room: the client waits for it to
    /// come back, where in the backlog it would wait for a close (nothing wakes a shard again
    /// for a client already reported).
    fn sibling_slot(&self, slots: &Arc<ListenerSlots>, me: usize) -> Option<(usize, Slot)> {
        let siblings = self.core.siblings.as_ref()?;
        if let Some((i, _)) = siblings.least_loaded(me + 1, |i| i != me && slots.has_room(i))
            && let Some(slot) = slots.take(i)
        {
            return Some((i, slot));
        }
        (1..siblings.len()).map(|k| (me + k) % siblings.len()).find_map(|i| Some((i, slots.take(i)?)))
    }

    /// Hands an accepted stream, in its slot on shard `to`, to that shard.
    fn hand_to(&self, to: usize, accepted: Accepted, opts: &Arc<ConnectionOptions>) {
        let Some(siblings) = &self.core.siblings else { return };
        let Accepted { stream, peer, slot } = accepted;
        let adopted = Adopted { stream, peer, opts: opts.clone(), slot: Some(slot) };
        if let Err(e) = siblings.hand(to, adopted) {
            log::debug!("shard {to} is gone; a connection was dropped: {e}");
        }
    }

    /// A shard that accepted from a socket the shards share (as shard `me` of `slots`) keeps the
    /// stream unless it is well ahead of the least-loaded shard with room ([`should_hand_over`])
    /// and a slot there can be taken; then that shard gets it, with that slot, and this one's is
    /// given back. Returns the stream if kept.
    fn hand_over_if_ahead(
        &self,
        accepted: Accepted,
        opts: &Arc<ConnectionOptions>,
        slots: &Arc<ListenerSlots>,
        me: usize,
    ) -> Option<Accepted> {
        let Some(siblings) = &self.core.siblings else { return Some(accepted) };
        let own = self.core.connections;
        let Some((least, load)) = siblings.least_loaded(me + 1, |i| slots.has_room(i)) else {
            return Some(accepted);
        };
        if least == me || !should_hand_over(own, load) {
            return Some(accepted);
        }
        // Another shard (or the acceptor) may have filled it since it was looked at: then the
        // stream stays here, in the slot it has.
        let Some(theirs) = slots.take(least) else { return Some(accepted) };
        let Accepted { stream, peer, slot } = accepted;
        drop(slot);
        self.hand_to(least, Accepted { stream, peer, slot: theirs }, opts);
        None
    }

    /// Serves a stream another thread accepted (the acceptor of [`crate::reactor::Sharded`], or
    /// a sibling sharing a socket): the handshake runs here, as for a connection accepted by a
    /// listener of this reactor, in the slot the other thread took for it here.
    pub(super) fn adopt(&mut self, adopted: Adopted) {
        let Adopted { stream, peer, opts, slot } = adopted;
        self.core.adopted += 1;
        if self.core.stopping.is_some() {
            return; // dropped (and the slot given back): the peer sees the close
        }
        let session =
            match opts.session_factory(&self.core.config).and_then(|f| f.session(Side::Listener, Instant::now())) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("no session for a handed-over connection, dropped: {e}");
                    return;
                }
            };
        match self.core.add_conn(stream, peer, session, opts, slot) {
            Ok(cid) => {
                if self.core.conn(cid.0).is_some_and(|c| c.session.is_open()) {
                    self.core.opened.push(cid);
                }
            }
            Err(e) => log::warn!("handed-over connection dropped: {e}"),
        }
    }

    /// A non-blocking connect finished (or failed).
    pub(super) fn finish_connect(&mut self, id: u64) {
        let Some(c) = self.core.conn(id) else { return };
        let result = match c.stream.take_error() {
            Ok(None) => c.stream.peer_address().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::NotConnected {
                return; // not finished yet (a spurious wakeup)
            }
            c.session.handle_io_error(e);
            self.core.pump(id);
            return;
        }
        c.session.handle_connected(Instant::now());
        let open = c.session.is_open();
        let cid = c.id;
        self.core.read_interest_only(id);
        if open {
            self.core.pump(id);
            self.core.opened.push(cid);
        } else {
            // The listener speaks first; bytes may already be waiting.
            self.read_conn(id, false);
        }
    }
}
