//! A broadcast (chat) server with backpressure: every message a client sends goes to every other
//! client, as `<sender>: <message>`, and none is dropped. When a recipient's queue reaches its
//! high-water mark ([`ROOM_MARK`]), the server stops reading from every member (the transport
//! then slows the senders down: TCP's window, a full Unix socket buffer) and keeps the messages
//! that recipient could not take yet; when its queue drains (`on_drained`), they go out and the
//! room reads again. So memory stays bounded (about `ROOM_MARK` per member, plus the notices of
//! members joining or leaving meanwhile) and a slow reader slows the room down rather than losing
//! messages. A member that stops reading altogether stalls the room until the reactor's
//! write-stall timeout (60 s by default) closes it.
//!
//! Each message is queued once for the whole room (`send_shared`: every recipient's queue holds
//! a reference to one buffer, not a copy).
//!
//! ```text
//! cargo run --example chat_server -- [ADDRESS]
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};

use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{Bytes, ConnId, Context, Handler, Reactor, SendError};
use mpconn::{Address, Family, arbitrary_address};

/// The output a member may have queued before the room stops reading (its high-water mark).
pub const ROOM_MARK: usize = 256 * 1024;
/// The longest message a member may send.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The listener's options: each connection's high-water mark is the room's mark.
pub fn listen_options() -> ListenOptions {
    ListenOptions::new().connection(ConnectionOptions::new().high_water_mark(ROOM_MARK).max_message_size(MAX_MESSAGE))
}

/// The chat room.
#[derive(Default)]
pub struct Room {
    members: BTreeSet<ConnId>,
    /// Messages a member's full queue refused, in order; sent when it drains.
    backlog: HashMap<ConnId, VecDeque<Bytes>>,
    /// Reading is paused for every member (some member has a backlog).
    paused: bool,
}

impl Room {
    fn broadcast(&mut self, ctx: &mut Context<'_>, from: Option<ConnId>, text: Vec<u8>) {
        let message = Bytes::from(text);
        let mut full = false;
        for &member in &self.members {
            if Some(member) == from {
                continue;
            }
            // Behind a backlog, a message waits its turn.
            if let Some(backlog) = self.backlog.get_mut(&member) {
                backlog.push_back(message.clone());
                continue;
            }
            match ctx.send_shared(member, &message) {
                Ok(()) => {}
                Err(SendError::Full { .. } | SendError::OverBudget { .. }) => {
                    self.backlog.entry(member).or_default().push_back(message.clone());
                    full = true;
                }
                Err(e) => log::debug!("{member}: {e}"),
            }
        }
        if full {
            self.pause_all(ctx);
        }
    }

    fn pause_all(&mut self, ctx: &mut Context<'_>) {
        if !self.paused {
            self.paused = true;
            for &member in &self.members {
                ctx.pause_reading(member);
            }
        }
    }

    fn resume_all_if_drained(&mut self, ctx: &mut Context<'_>) {
        if self.paused && self.backlog.is_empty() {
            self.paused = false;
            for &member in &self.members {
                ctx.resume_reading(member);
            }
        }
    }
}

impl Handler for Room {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.broadcast(ctx, None, format!("* {conn} joined").into_bytes());
        self.members.insert(conn);
        if self.paused {
            ctx.pause_reading(conn);
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let mut line = format!("{conn}: ").into_bytes();
        line.extend_from_slice(message);
        self.broadcast(ctx, Some(conn), line);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        if let Some(mut backlog) = self.backlog.remove(&conn) {
            while let Some(message) = backlog.pop_front() {
                match ctx.send_shared(conn, &message) {
                    Ok(()) => {}
                    Err(SendError::Full { .. }) => {
                        // Full again: the rest waits for the next drain.
                        backlog.push_front(message);
                        self.backlog.insert(conn, backlog);
                        return;
                    }
                    // Closing: `on_close` follows, and the backlog goes with the member.
                    Err(_) => break,
                }
            }
        }
        self.resume_all_if_drained(ctx);
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.members.remove(&conn);
        self.backlog.remove(&conn);
        self.broadcast(ctx, None, format!("* {conn} left ({reason})").into_bytes());
        self.resume_all_if_drained(ctx);
    }
}

fn main() -> mpconn::Result<()> {
    let address = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => arbitrary_address(Family::fastest())?,
    };
    let mut reactor = Reactor::new(Room::default())?;
    let listener = reactor.listen(address, listen_options())?;
    println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
    reactor.run()
}
