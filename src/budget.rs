//! The memory budget shared by connections: one bound on the bytes a reactor (or the connections
//! of one tokio listener) holds for all its peers together, buffered input (the decoders of
//! incomplete messages) plus queued output.
//!
//! Every other limit is per connection, so N peers each sending most of a maximum-size message
//! cost N × that size. The budget bounds the sum. It is pure bookkeeping, driven by the faces:
//! they report what each connection holds (`set_input`,
//! `output_changed`), ask before a read that would grow a connection's buffer
//! (`may_read`) and before queueing output (`may_queue`), and
//! resume the connections the budget names (`take_wake`).
//!
//! Input is kept per connection here (the leader rule needs it); output only in the total: the
//! face keeps what it last reported for each connection and says it when it asks or leaves, so
//! a message sent and written costs two additions, no lookup.
//!
//! The policy:
//!
//! * Under the cap nothing is refused.
//! * Once the total goes over the cap (or a read would take it there), the budget is *under
//!   pressure* until the total falls to the low-water mark (three quarters of the cap). Under
//!   pressure, a connection that holds more than [`SMALL_INPUT`] and wants to grow its input stops
//!   reading: the largest consumers stop first, since they are the ones whose buffers grow by
//!   doubling. One exception avoids a deadlock (a paused connection's message can never
//!   complete, so paused connections alone would never free anything): the **largest holder**
//!   among them, the *leader*, keeps reading until its message completes and its buffer is
//!   freed; then the next largest leads. A connection holding at most [`SMALL_INPUT`] (a
//!   ping-pong client, a handshake) always reads, so small requests are still served.
//! * Output: under pressure a connection may queue a message only while its queue is empty or
//!   stays within [`SMALL_INPUT`]; otherwise the send is refused, as at the high-water mark.
//!
//! * What the application keeps of the connections' messages past the callback (a whole
//!   message handed to a worker thread through `on_message_owned`) can be charged here too
//!   (`hold`, `release`): it counts in the total, so readers of large messages wait while the
//!   application catches up, instead of each connection adding one more message to its queues.
//!   Held bytes free nothing when a leader's message completes (the message joins them), so a
//!   leader is elected only while the application holds at most a quarter of the cap: with the
//!   leader rule the total stays under the cap plus a quarter plus one message. Under pressure
//!   with more than [`SMALL_INPUT`] held, small connections stop growing too (a thousand peers each completing one 500 KB message
//!   added 485 MB over a 64 MiB budget), and each connection is read at most
//!   [`HELD_PRESSURE_READ`] per turn: a message that arrives whole in that is served, a larger
//!   one waits in its connection's buffer (counted) until the application gives memory back.
//!
//! So the memory held is at most the cap, plus what the leader still receives of its message
//! (at most one maximum-size message), plus [`SMALL_INPUT`] and one queued message per
//! connection. Time a connection spends paused by the budget counts against its peer: the
//! partial-message deadline keeps running (see SECURITY.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Default memory budget: 1 GiB, eight messages of the default maximum size
/// ([`crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE`], 128 MiB) in flight at once.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// What the reactor reads of one connection per turn while the budget is under pressure and the
/// application holds more than [`SMALL_INPUT`] (`MemoryBudget::held_pressure`): the read block.
pub const HELD_PRESSURE_READ: usize = 64 << 10;

/// Input a connection may hold and still grow under pressure: the reactor's shared read buffer
/// (1 MiB). A connection whose messages arrive whole in a read never gets near it.
pub const SMALL_INPUT: usize = 1 << 20;

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    input: usize,
    /// Refused a read; to be woken (named by `take_wake`) when it may read again.
    waiting: bool,
}

/// The shared budget's bookkeeping. See the module docs.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    cap: Option<usize>,
    low: usize,
    total: usize,
    users: HashMap<u64, Usage>,
    pressure: bool,
    leader: Option<u64>,
    /// Connections that may read again and must be told.
    wake: Vec<u64>,
    /// How many times a read was refused (for tests and logs).
    refusals: u64,
    /// Bytes the application keeps for the connections (whole messages handed to it), part of
    /// `total` until it gives them back.
    held: usize,
    /// The lead shared by the shards of a sharded group, and this shard's tag in it (see
    /// [`GroupLead`]); `None` for a budget of its own.
    group: Option<(Arc<GroupLead>, usize)>,
    /// This budget holds the group's lead (its leader, if any, is the group's one).
    holds_group_lead: bool,
    /// The group's lead was given back while another shard waited for it: the face tells the
    /// group's shards ([`MemoryBudget::take_lead_freed`]).
    lead_freed: bool,
}

/// The one lead of a sharded group. Each shard keeps its own budget (the group's divided by
/// the shards), but a leader may grow past it by up to a whole message: with a leader per
/// shard, N shards could hold N such messages where one reactor with the whole budget holds
/// one. So a shard elects a leader only while it holds this lead; a shard that wanted it and
/// could not take it is told when it is given back.
#[derive(Debug, Default)]
pub(crate) struct GroupLead {
    /// 0 when free, else the tag of the shard that holds it.
    holder: AtomicUsize,
    /// A shard could not take the lead and waits to be told when it is free.
    wanted: AtomicBool,
}

impl MemoryBudget {
    /// A budget of `cap` bytes (`None`: unbounded, nothing is ever refused).
    pub(crate) fn new(cap: Option<usize>) -> MemoryBudget {
        MemoryBudget {
            cap,
            low: cap.map_or(0, |c| c / 4 * 3),
            total: 0,
            users: HashMap::new(),
            pressure: false,
            leader: None,
            wake: Vec::new(),
            refusals: 0,
            held: 0,
            group: None,
            holds_group_lead: false,
            lead_freed: false,
        }
    }

    /// Makes this budget one shard's (tag `tag`, not 0) of a group sharing `lead`.
    pub(crate) fn share_lead(&mut self, lead: Arc<GroupLead>, tag: usize) {
        debug_assert!(tag != 0 && self.leader.is_none());
        self.group = Some((lead, tag));
    }

    /// True once after the group's lead was given back while another shard waited for it: the
    /// face asks every shard of the group, this one included, to try again
    /// ([`MemoryBudget::retry_lead`]).
    pub(crate) fn take_lead_freed(&mut self) -> bool {
        std::mem::take(&mut self.lead_freed)
    }

    /// The group's lead may be free: elects a leader if one is needed and the lead can be taken
    /// (the elected connection is named by [`MemoryBudget::take_wake`]).
    pub(crate) fn retry_lead(&mut self) {
        if self.pressure && self.leader.is_none() && self.needs_leader() {
            self.elect();
        }
    }

    /// Takes the group's lead for this shard (always granted to a budget of its own).
    fn take_group_lead(&mut self) -> bool {
        let Some((lead, tag)) = &self.group else { return true };
        if self.holds_group_lead {
            return true;
        }
        let take = || lead.holder.compare_exchange(0, *tag, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        // Asking after a failed try, then trying once more: a shard giving the lead back
        // between the two either sees the request or leaves the lead free for the second try.
        let taken = take() || {
            lead.wanted.store(true, Ordering::SeqCst);
            take()
        };
        self.holds_group_lead = taken;
        taken
    }

    /// The leader stopped leading. In a group, the lead goes back, and a shard waiting for it
    /// is told ([`MemoryBudget::take_lead_freed`]); this shard's own waiting connections then
    /// ask like the others' (its face tells it too), instead of taking it straight back.
    /// Returns whether this shard may elect again now.
    fn lead_ended(&mut self) -> bool {
        self.leader = None;
        let Some((lead, _)) = &self.group else { return true };
        if !self.holds_group_lead {
            return true;
        }
        self.holds_group_lead = false;
        lead.holder.store(0, Ordering::SeqCst);
        if !lead.wanted.swap(false, Ordering::SeqCst) {
            return true;
        }
        self.lead_freed = true;
        false
    }

    /// True when the budget bounds anything.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.cap.is_some()
    }

    /// Bytes held by every connection together, as last reported.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// True while the total is over the cap and has not yet fallen to the low-water mark.
    #[inline]
    pub(crate) fn under_pressure(&self) -> bool {
        self.pressure
    }

    /// Reads refused so far.
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals
    }

    /// The connection allowed to grow while the others wait.
    #[cfg(test)]
    pub(crate) fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// Forgets a connection (closed): its bytes leave the total. `output`: the output it last
    /// reported ([`MemoryBudget::output_changed`]).
    pub(crate) fn remove(&mut self, id: u64, output: usize) {
        if self.cap.is_none() {
            return;
        }
        let input = match self.users.remove(&id) {
            Some(u) => u.input,
            None if output == 0 => return,
            None => 0,
        };
        self.total -= input + output;
        if self.leader == Some(id) {
            self.lead_ended();
        }
        self.rebalance();
    }

    /// The application keeps `bytes` more for the connections (a message handed to a worker
    /// thread, say): they count in the total until [`MemoryBudget::release`].
    pub(crate) fn hold(&mut self, bytes: usize) {
        if self.cap.is_none() {
            return;
        }
        self.held = self.held.saturating_add(bytes);
        self.total = self.total.saturating_add(bytes);
        self.rebalance();
    }

    /// The application gave back `bytes` it held (at most what it holds).
    pub(crate) fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.total -= bytes;
        self.rebalance();
    }

    /// Bytes the application holds ([`MemoryBudget::hold`]).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Reports the input `id` holds now (its decoder's buffer).
    pub(crate) fn set_input(&mut self, id: u64, bytes: usize) {
        if self.cap.is_none() {
            return;
        }
        let u = self.users.entry(id).or_default();
        if u.input == bytes {
            return;
        }
        self.total = self.total - u.input + bytes;
        u.input = bytes;
        self.rebalance();
    }

    /// Reports that a connection's queued output went from `before` (what it last reported) to
    /// `after`. The face keeps the figure per connection (see the module docs).
    #[inline]
    pub(crate) fn output_changed(&mut self, before: usize, after: usize) {
        if self.cap.is_none() || before == after {
            return;
        }
        self.total = self.total - before + after;
        self.rebalance();
    }

    /// May `id` read now, if the read can grow its input by `growth` bytes? If not, `id` is
    /// recorded as waiting and will be named by [`MemoryBudget::take_wake`] when it may.
    #[inline]
    pub(crate) fn may_read(&mut self, id: u64, growth: usize) -> bool {
        let Some(cap) = self.cap else { return true };
        if growth == 0 || (!self.pressure && self.total.saturating_add(growth) <= cap) {
            return true;
        }
        self.may_read_over(id, growth)
    }

    /// [`MemoryBudget::may_read`] for a read that the total leaves no room for, or under
    /// pressure.
    #[inline(never)]
    fn may_read_over(&mut self, id: u64, growth: usize) -> bool {
        self.pressure = true;
        if self.leader == Some(id) {
            return true;
        }
        let held_pressure = self.held_pressure();
        let u = self.users.entry(id).or_default();
        if !held_pressure && u.input.saturating_add(growth) <= SMALL_INPUT {
            return true;
        }
        u.waiting = true;
        if self.leader.is_none() && self.needs_leader() {
            self.elect();
            if self.leader == Some(id) {
                // Elected now: no wake needed, it reads at once.
                self.wake.retain(|&w| w != id);
                return true;
            }
        }
        self.refusals += 1;
        false
    }

    /// May a connection that reported `queued` bytes of output queue `len` more? Always under
    /// the cap; under pressure only while its queue is empty (one message always goes) or stays
    /// within [`SMALL_INPUT`].
    #[inline]
    pub(crate) fn may_queue(&self, queued: usize, len: usize) -> bool {
        let Some(cap) = self.cap else { return true };
        if queued == 0 || queued.saturating_add(len) <= SMALL_INPUT {
            return true;
        }
        !self.pressure && self.total.saturating_add(len) <= cap
    }

    /// `id` will not read for now (its reading was paused by its owner): if it leads, the lead
    /// passes to the largest waiting connection, so a paused leader cannot stall the others.
    pub(crate) fn pass_lead(&mut self, id: u64) {
        if self.leader == Some(id) && self.lead_ended() && self.needs_leader() {
            self.elect();
        }
    }

    /// True while the application holds more than [`SMALL_INPUT`] and the budget is under
    /// pressure: then no connection but the leader grows its input at all (not even a small one: many small
    /// messages completed and handed over would add up past any bound), and the reactor reads at
    /// most [`HELD_PRESSURE_READ`] per connection per turn, so a message that arrives whole in
    /// that (a ping) is still served, and each connection buffers at most that much until the
    /// application gives memory back.
    #[inline]
    pub(crate) fn held_pressure(&self) -> bool {
        self.pressure && self.held > SMALL_INPUT
    }

    /// True when one waiting connection must lead: the connections' own bytes keep the budget
    /// under pressure (a waiting connection's message can only complete if it reads), and the
    /// application holds at most a quarter of the cap. A completed message handed to the
    /// application frees nothing, so each leader could add one more message to what it holds;
    /// past a quarter of the cap nobody leads until the application gives memory back, which
    /// bounds what leaders add to a quarter of the cap plus one message.
    fn needs_leader(&self) -> bool {
        let quarter = self.cap.map_or(usize::MAX, |c| c / 4);
        self.total - self.held > self.low && self.held <= quarter
    }

    /// The connections that may read again (each named once per refusal).
    pub(crate) fn take_wake(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.wake)
    }

    /// True when some connection must be told it may read again.
    #[inline]
    pub(crate) fn has_wake(&self) -> bool {
        !self.wake.is_empty()
    }

    /// After any change: leaves pressure at the low-water mark (everyone waiting may read), or
    /// hands the lead on when the leader no longer holds a large incomplete message.
    fn rebalance(&mut self) {
        let Some(cap) = self.cap else { return };
        if self.pressure && self.total <= self.low {
            self.pressure = false;
            self.lead_ended();
            for (&id, u) in &mut self.users {
                if u.waiting {
                    u.waiting = false;
                    self.wake.push(id);
                }
            }
            return;
        }
        if !self.pressure && self.total > cap {
            self.pressure = true;
        }
        if !self.pressure {
            return;
        }
        if let Some(l) = self.leader
            && self.users.get(&l).is_none_or(|u| u.input <= SMALL_INPUT)
            && !self.lead_ended()
        {
            return; // handed to another shard: this one asks again when told
        }
        if self.leader.is_none() && self.needs_leader() {
            self.elect();
        }
    }

    /// The waiting connection holding the most input leads (and is woken), if this shard can
    /// take its group's lead; not while the lead it gave back waits to be announced.
    fn elect(&mut self) {
        if self.lead_freed {
            return;
        }
        let best = self
            .users
            .iter()
            .filter(|(_, u)| u.waiting)
            .max_by_key(|&(id, u)| (u.input, std::cmp::Reverse(*id)))
            .map(|(&id, _)| id);
        if let Some(id) = best {
            if !self.take_group_lead() {
                return;
            }
            self.leader = Some(id);
            if let Some(u) = self.users.get_mut(&id) {
                u.waiting = false;
            }
            self.wake.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_group_has_one_leader_and_its_lead_passes_to_the_shard_that_waits() {
        let lead = Arc::new(GroupLead::default());
        let (mut a, mut b) = (MemoryBudget::new(Some(64 * MIB)), MemoryBudget::new(Some(64 * MIB)));
        a.share_lead(lead.clone(), 1);
        b.share_lead(lead.clone(), 2);
        // Each shard over its cap with three large holders that want to grow (one completing
        // leaves the shard under pressure).
        for (budget, ids) in [(&mut a, [1, 2, 3]), (&mut b, [4, 5, 6])] {
            for id in ids {
                budget.set_input(id, 30 * MIB);
            }
        }
        assert!(a.may_read(1, 8 * MIB), "the first to ask leads its shard and the group");
        assert!(!a.may_read(2, 8 * MIB));
        assert!(!b.may_read(4, 8 * MIB), "the other shard cannot lead while the group's lead is taken");
        assert_eq!((a.leader(), b.leader()), (Some(1), None));
        assert!(!a.take_lead_freed() && !b.take_lead_freed());
        // The leader's message completes: the lead goes to the shard that waited, not straight
        // back to the waiting connection of its own shard.
        a.set_input(1, 0);
        assert!(a.under_pressure());
        assert_eq!(a.leader(), None, "a does not take the lead it gave back");
        assert!(a.take_lead_freed(), "the shards are told");
        b.retry_lead();
        a.retry_lead();
        assert_eq!((a.leader(), b.leader()), (None, Some(4)), "taken by the first told (b), a asks again");
        assert!(b.take_wake().contains(&4), "the new leader is woken");
        // And back to a when that one completes.
        b.set_input(4, 0);
        assert!(b.take_lead_freed());
        a.retry_lead();
        assert_eq!((a.leader(), b.leader()), (Some(2), None));
        assert!(a.take_wake().contains(&2));
        // A leader that leaves (closed) gives the lead back too; nobody else wants it now.
        a.remove(2, 0);
        assert!(!a.take_lead_freed(), "no shard waited for it");
        assert_eq!(a.leader(), None);
        assert_eq!(lead.holder.load(Ordering::SeqCst), 0, "free");
    }

    #[test]
    fn unbounded_refuses_nothing_and_tracks_nothing() {
        let mut b = MemoryBudget::new(None);
        b.set_input(1, 10 << 30);
        assert!(b.may_read(1, 1 << 30));
        assert!(b.may_queue(1, 1 << 30));
        assert_eq!(b.total(), 0);
    }

    #[test]
    fn bytes_the_application_holds_count_until_released() {
        let mut b = MemoryBudget::new(Some(256 * MIB));
        b.hold(200 * MIB);
        for id in [1, 2] {
            b.set_input(id, 2 * MIB);
            assert!(!b.may_read(id, 60 * MIB), "over the cap with the held bytes: large readers wait");
        }
        assert_eq!(b.leader(), None, "nobody leads: giving back the held bytes ends the pressure");
        assert!(b.may_read(3, 0), "a new message that arrives whole in one read is still served");
        assert!(b.held_pressure());
        assert!(!b.may_read(3, 4096), "while the application holds over a quarter, nobody grows, small or not");
        b.release(200 * MIB);
        assert!(!b.under_pressure());
        let woken = b.take_wake();
        assert!(woken.contains(&1) && woken.contains(&2), "the waiting readers are woken once the bytes are back");
        b.release(MIB); // more than held: ignored
        assert_eq!((b.held(), b.total()), (0, 4 * MIB));

        // Connections' own bytes over the low-water mark still need a leader while the
        // application holds little, and none once it holds over a quarter of the cap.
        b.set_input(4, 250 * MIB);
        b.hold(10 * MIB);
        assert!(b.under_pressure());
        b.set_input(5, 2 * MIB);
        assert!(b.may_read(4, MIB), "the largest holder leads");
        assert!(!b.may_read(5, 60 * MIB));
        b.set_input(4, 0);
        b.hold(100 * MIB); // its message, handed over
        b.set_input(6, 200 * MIB);
        assert!(!b.may_read(6, MIB), "the application holds 110 MiB, over a quarter: nobody leads");
        assert_eq!(b.leader(), None);
        b.release(100 * MIB);
        assert_eq!(b.leader(), Some(6), "given back: the largest waiting holder leads");
    }

    #[test]
    fn under_the_cap_everyone_reads() {
        let mut b = MemoryBudget::new(Some(256 * MIB));
        for id in 0..4 {
            b.set_input(id, 60 * MIB);
            assert!(b.may_read(id, MIB));
        }
        assert!(!b.under_pressure());
        assert_eq!(b.total(), 240 * MIB);
    }

    #[test]
    fn over_the_cap_only_the_largest_grows_and_small_ones_read() {
        let mut b = MemoryBudget::new(Some(256 * MIB));
        b.set_input(1, 100 * MIB);
        b.set_input(2, 120 * MIB);
        b.set_input(3, 30 * MIB);
        b.set_input(9, 4096); // a ping-pong client
        // A read that would cross the cap: pressure. 3 is the first (so far the only) one to
        // wait, so it is elected at once and reads.
        assert!(b.may_read(3, 16 * MIB));
        assert!(b.under_pressure());
        assert_eq!(b.leader(), Some(3));
        assert!(b.take_wake().is_empty());
        // The others wait; the small one reads.
        assert!(!b.may_read(1, MIB));
        assert!(!b.may_read(2, MIB));
        assert!(b.may_read(9, 64 * 1024));
        assert!(b.may_read(3, MIB));
        b.set_input(3, 46 * MIB);
        // The leader finishes its message and frees its buffer: the largest waiting (2) leads.
        b.set_input(3, 0);
        assert_eq!(b.leader(), Some(2));
        assert_eq!(b.take_wake(), vec![2]);
        assert!(b.may_read(2, MIB));
        assert!(!b.may_read(1, MIB));
        // 2 finishes: the total (100 MiB + 4 KiB) is under the low-water mark: everyone reads.
        b.set_input(2, 0);
        assert!(!b.under_pressure());
        assert_eq!(b.take_wake(), vec![1]);
        assert!(b.may_read(1, MIB));
        assert!(b.refusals() >= 3);
    }

    #[test]
    fn a_closed_leader_hands_the_lead_on() {
        let mut b = MemoryBudget::new(Some(100 * MIB));
        for id in 1..=4 {
            b.set_input(id, (30 + id as usize) * MIB);
        }
        assert!(b.under_pressure());
        for id in 1..=4 {
            let _ = b.may_read(id, MIB);
        }
        let first = b.leader().unwrap();
        b.remove(first, 0);
        let second = b.leader().unwrap();
        assert_ne!(first, second);
        assert!(b.take_wake().contains(&second));
        // Never two leaders: the others still wait.
        for id in 1..=4 {
            if id != second && id != first {
                assert!(!b.may_read(id, MIB));
            }
        }
    }

    #[test]
    fn a_leader_paused_by_its_owner_passes_the_lead() {
        let mut b = MemoryBudget::new(Some(100 * MIB));
        b.set_input(1, 60 * MIB);
        b.set_input(2, 50 * MIB);
        assert!(b.may_read(1, MIB), "the first to wait leads");
        assert!(!b.may_read(2, MIB));
        b.pass_lead(1);
        assert_eq!(b.leader(), Some(2));
        assert_eq!(b.take_wake(), vec![2]);
        assert!(b.may_read(2, MIB));
        assert!(!b.may_read(1, MIB), "resumed later, it waits like the others");
    }

    #[test]
    fn output_counts_and_refuses_a_second_message_under_pressure() {
        let mut b = MemoryBudget::new(Some(64 * MIB));
        b.output_changed(0, 70 * MIB);
        assert!(b.under_pressure());
        assert!(!b.may_queue(70 * MIB, 100));
        // Small queues and empty queues still take a message.
        assert!(b.may_queue(0, 64 * 1024));
        b.output_changed(0, 1000);
        assert!(b.may_queue(1000, 1000));
        b.output_changed(70 * MIB, 0);
        assert!(!b.under_pressure());
        assert!(b.may_queue(0, 10 * MIB));
        // A connection that leaves takes its output out of the total.
        b.remove(2, 1000);
        assert_eq!(b.total(), 0);
    }

    #[test]
    fn many_waiters_one_leader_and_all_resume_at_low_water() {
        let mut b = MemoryBudget::new(Some(256 * MIB));
        for id in 0..16 {
            b.set_input(id, 20 * MIB);
        }
        assert!(b.under_pressure());
        let allowed: Vec<u64> = (0..16).filter(|&id| b.may_read(id, 10 * MIB)).collect();
        assert_eq!(allowed.len(), 1, "exactly one leader reads: {allowed:?}");
        assert_eq!(b.leader(), Some(allowed[0]));
        let mut woken = b.take_wake();
        for id in 0..16 {
            b.set_input(id, 0);
        }
        woken.extend(b.take_wake());
        woken.extend(allowed);
        woken.sort();
        woken.dedup();
        assert_eq!(woken.len(), 16, "every waiter is named once it may read: {woken:?}");
        assert!(!b.under_pressure());
        assert_eq!(b.total(), 0);
    }
}
