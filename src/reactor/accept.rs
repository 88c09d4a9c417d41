//! Accepting and connecting: a new socket gets its session (listener or client role, keyed or
//! not) and joins the reactor; the session decides the rest.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::address::Address;
use crate::reactor::handle::Adopted;
use crate::reactor::options::ConnectionOptions;
use crate::reactor::shard::should_hand_over;
use crate::reactor::{Handler, Reactor};
use crate::settings::Side;
use crate::transport::Stream;

/// Connections one shard takes per wake-up from a socket the shards share: the others, woken
/// one at a time by the kernel, take the rest of a burst.
const SHARED_ACCEPT_BATCH: usize = 4;

impl<H: Handler> Reactor<H> {
    /// Accepts on a listener until it would block, the connection limit is reached, or the
    /// process is out of descriptors (then accepting pauses for the backoff); a listener whose
    /// socket the shards share takes at most [`SHARED_ACCEPT_BATCH`] per call.
    pub(super) fn accept(&mut self, id: u64) {
        // A shared listener taken out of the poller while paused is back in to accept.
        self.core.shared_listener_interest(id, true);
        let mut taken = 0;
        loop {
            if self.core.stopping.is_some() {
                return;
            }
            let backoff = self.core.config.accept_backoff;
            let Some(l) = self.core.listener(id) else {
                return;
            };
            if l.open >= l.max_connections {
                l.paused = true;
                self.core.shared_listener_interest(id, false);
                return;
            }
            if l.shared && taken == SHARED_ACCEPT_BATCH {
                return; // level-triggered: the rest is reported again, to whichever shard waits
            }
            taken += 1;
            match l.socket.accept_nonblocking() {
                Ok((stream, peer)) => {
                    l.paused = false;
                    let opts = l.opts.clone();
                    let lid = l.id;
                    let (stream, peer) = if l.shared {
                        let max = l.max_connections;
                        let peers = l.peers.clone();
                        match self.hand_over_if_ahead(stream, peer, &opts, max, peers.as_deref()) {
                            Some(kept) => kept,
                            None => continue,
                        }
                    } else {
                        (stream, peer)
                    };
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
                    match self.core.add_conn(stream, peer, session, opts, Some(lid)) {
                        Ok(cid) => {
                            if let Some(l) = self.core.listener(id) {
                                l.open += 1;
                            }
                            // add_conn pumped the session: the challenge is queued, or the
                            // connection opened (no key).
                            if self.core.conn(cid.0).is_some_and(|c| c.session.is_open()) {
                                self.core.opened.push(cid);
                            }
                        }
                        Err(e) => log::warn!("accepted connection dropped: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
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

    /// A shard that accepted from a socket the shards share keeps the stream unless it is well
    /// ahead of the least-loaded shard ([`should_hand_over`]); then that shard gets it. Returns
    /// the stream if kept.
    fn hand_over_if_ahead(
        &mut self,
        stream: Stream,
        peer: Address,
        opts: &Arc<ConnectionOptions>,
        max: usize,
        peers: Option<&[crate::reactor::ListenerId]>,
    ) -> Option<(Stream, Address)> {
        let Some(siblings) = &self.core.siblings else { return Some((stream, peer)) };
        let own = self.core.connections;
        let me = self.core.shard_index();
        match siblings.least_loaded(me.map_or(0, |i| i + 1), max) {
            Some((least, load)) if Some(least) != me && should_hand_over(own, load) => {
                let listener = peers.and_then(|p| p.get(least).copied());
                let adopted = Adopted { stream, peer, opts: opts.clone(), listener };
                if let Err(e) = siblings.hand(least, adopted) {
                    log::debug!("shard {least} is gone; a connection was dropped: {e}");
                }
                None
            }
            _ => Some((stream, peer)),
        }
    }

    /// Serves a stream another thread accepted (the acceptor of [`crate::reactor::Sharded`]): the
    /// handshake runs here, as for a connection accepted by a listener of this reactor.
    pub(super) fn adopt(
        &mut self,
        stream: Stream,
        peer: Address,
        opts: Arc<ConnectionOptions>,
        listener: Option<crate::reactor::ListenerId>,
    ) {
        self.core.adopted += 1;
        if self.core.stopping.is_some() {
            return; // dropped: the peer sees the close
        }
        let session =
            match opts.session_factory(&self.core.config).and_then(|f| f.session(Side::Listener, Instant::now())) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("no session for a handed-over connection, dropped: {e}");
                    return;
                }
            };
        // Counted against this shard's listener of a shared socket (it may be gone: then none).
        let listener = listener.filter(|l| self.core.listener(l.0).is_some());
        match self.core.add_conn(stream, peer, session, opts, listener) {
            Ok(cid) => {
                if let Some(l) = listener.and_then(|l| self.core.listener(l.0)) {
                    l.open += 1;
                }
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
