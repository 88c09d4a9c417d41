//! A broadcast (chat) server: every message a client sends goes to every other client, as
//! `<sender>: <message>`. Slow readers are not allowed to stall the room: a client whose queue is
//! full misses messages and is told so once it has drained.
//!
//! ```text
//! cargo run --example chat_server -- [ADDRESS]
//! ```

use std::collections::{BTreeSet, HashSet};

use mpconn::reactor::options::{CloseReason, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, SendError};
use mpconn::{Address, Family, arbitrary_address};

#[derive(Default)]
struct Room {
    members: BTreeSet<ConnId>,
    /// Members that missed messages while their queue was full.
    lagging: HashSet<ConnId>,
}

impl Room {
    fn broadcast(&mut self, ctx: &mut Context<'_>, from: Option<ConnId>, text: &[u8]) {
        for &member in &self.members {
            if Some(member) == from {
                continue;
            }
            match ctx.send(member, text) {
                Ok(()) => {}
                Err(SendError::Full { .. }) => {
                    self.lagging.insert(member);
                }
                Err(e) => log::debug!("{member}: {e}"),
            }
        }
    }
}

impl Handler for Room {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &Address) {
        self.broadcast(ctx, None, format!("* {conn} joined").as_bytes());
        self.members.insert(conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        let mut line = format!("{conn}: ").into_bytes();
        line.extend_from_slice(message);
        self.broadcast(ctx, Some(conn), &line);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        if self.lagging.remove(&conn) {
            let _ = ctx.send(conn, b"* you missed messages while your connection was slow");
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.members.remove(&conn);
        self.lagging.remove(&conn);
        self.broadcast(ctx, None, format!("* {conn} left ({reason})").as_bytes());
    }
}

fn main() -> mpconn::Result<()> {
    let address = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => arbitrary_address(Family::fastest())?,
    };
    let mut reactor = Reactor::new(Room::default())?;
    let listener = reactor.listen(address, ListenOptions::new())?;
    println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
    reactor.run()
}
