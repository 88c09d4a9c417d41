//! Accepting and connecting: a new socket gets its session (listener or client role, keyed or
//! not) and joins the reactor; the session decides the rest.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::address::Address;
use crate::reactor::options::ConnectionOptions;
use crate::reactor::{Handler, Reactor};
use crate::settings::Side;
use crate::transport::Stream;

impl<H: Handler> Reactor<H> {
    /// Accepts on a listener until it would block, the connection limit is reached, or the
    /// process is out of descriptors (then accepting pauses for the backoff).
    pub(super) fn accept(&mut self, id: u64) {
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
                return;
            }
            match l.socket.accept_nonblocking() {
                Ok((stream, peer)) => {
                    l.paused = false;
                    let opts = l.opts.clone();
                    let lid = l.id;
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
                    self.core.set_deadline(id, Some(Instant::now() + backoff));
                    return;
                }
            }
        }
    }

    /// Serves a stream another thread accepted (the acceptor of [`crate::reactor::Sharded`]): the
    /// handshake runs here, as for a connection accepted by a listener of this reactor.
    pub(super) fn adopt(&mut self, stream: Stream, peer: Address, opts: Arc<ConnectionOptions>) {
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
        match self.core.add_conn(stream, peer, session, opts, None) {
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
