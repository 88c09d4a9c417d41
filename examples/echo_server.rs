//! An echo server on the reactor: every message comes back to its sender.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDRESS] [--authkey KEY] [--reactors N]
//! ```
//! Prints `listening on <address>` once ready. With no address it binds a fresh Unix socket.
//! `--reactors N` serves with N reactor threads (`Sharded`; 0: one per core), each with its own
//! `Echo`: on Linux a TCP address gets one `SO_REUSEPORT` socket per reactor and a Unix socket
//! is polled by every reactor (`EPOLLEXCLUSIVE`); elsewhere one acceptor thread hands
//! connections to the least-loaded reactor.
//! Python clients work as they are:
//! `Client(address, authkey=b"KEY").send_bytes(b"hi")`.
//!
//! A client that sends faster than it reads is never dropped: the reactor stops reading it
//! while its echoes wait above the high-water mark (`auto_pause_reading`, on by default), so
//! TCP slows it down. Should an echo still be refused, it is kept, reading is paused, and it
//! goes out when the queue drains.

use std::collections::HashMap;

use mpconn::CloseReason;
use mpconn::reactor::options::ListenOptions;
use mpconn::reactor::options::ReactorConfig;
use mpconn::reactor::{ConnId, Context, Handler, Reactor, Sharded};
use mpconn::{Address, Family, arbitrary_address};

#[derive(Default)]
struct Echo {
    /// Echoes refused for a full queue, sent on `on_drained`.
    held: HashMap<ConnId, Vec<u8>>,
}

impl Handler for Echo {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
        log::info!("{conn} open from {peer}");
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if let Err(e) = ctx.send(conn, message) {
            log::debug!("{conn}: echo refused ({e}); held until the queue drains");
            self.held.insert(conn, message.to_vec());
            ctx.pause_reading(conn);
        }
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        if let Some(message) = self.held.remove(&conn) {
            if let Err((_, message)) = ctx.send_owned(conn, message) {
                self.held.insert(conn, message);
                return;
            }
            ctx.resume_reading(conn);
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.held.remove(&conn);
        log::info!("{conn} closed: {reason}");
    }
}

fn main() -> mpconn::Result<()> {
    let mut address = None;
    let mut options = ListenOptions::new();
    let mut reactors = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--authkey" => {
                let key = args.next().ok_or(mpconn::Error::Config("--authkey needs a value".into()))?;
                options = options.authkey(key.as_str());
            }
            "--reactors" => {
                let n = args.next().ok_or(mpconn::Error::Config("--reactors needs a number".into()))?;
                reactors = Some(n.parse::<usize>().map_err(|e| mpconn::Error::Config(format!("--reactors {n}: {e}")))?);
            }
            other => address = Some(other.parse::<Address>()?),
        }
    }
    let address = match address {
        Some(a) => a,
        None => arbitrary_address(Family::fastest())?,
    };
    if let Some(n) = reactors {
        let mut group = Sharded::new(n, ReactorConfig::default(), |_| Echo::default())?;
        let listener = group.listen(address, options)?;
        println!("listening on {}", listener.address());
        log::info!("{} reactors, connections spread by {:?}", group.shard_count(), listener.balance());
        return group.run();
    }
    let mut reactor = Reactor::new(Echo::default())?;
    let listener = reactor.listen(address, options)?;
    println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
    reactor.run()
}
