//! An echo server on the reactor: every message comes back to its sender.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDRESS] [--authkey KEY]
//! ```
//! Prints `listening on <address>` once ready. With no address it binds a fresh Unix socket.
//! Python clients work as they are:
//! `Client(address, authkey=b"KEY").send_bytes(b"hi")`.

use mpconn::reactor::options::{CloseReason, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor};
use mpconn::{Address, Family, arbitrary_address};

struct Echo;

impl Handler for Echo {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
        log::info!("{conn} open from {peer}");
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if let Err(e) = ctx.send(conn, message) {
            log::warn!("{conn}: echo refused ({e}); closing");
            ctx.close(conn);
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        log::info!("{conn} closed: {reason}");
    }
}

fn main() -> mpconn::Result<()> {
    let mut address = None;
    let mut options = ListenOptions::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--authkey" => {
                let key = args.next().ok_or(mpconn::Error::Config("--authkey needs a value".into()))?;
                options = options.authkey(key.as_str());
            }
            other => address = Some(other.parse::<Address>()?),
        }
    }
    let address = match address {
        Some(a) => a,
        None => arbitrary_address(Family::fastest())?,
    };
    let mut reactor = Reactor::new(Echo)?;
    let listener = reactor.listen(address, options)?;
    println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
    reactor.run()
}
