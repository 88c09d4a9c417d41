//! What the two embedding examples (`embed_tokio`, `embed_poll`) share: the echo handler and the
//! command line (`ADDRESS --authkey KEY --handshake-timeout SECONDS`), so the examples show only
//! their event loops.

use std::collections::HashSet;
use std::time::Duration;

use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler};
use mpconn::{Address, Family, arbitrary_address};

/// Echoes every message; counts what it saw, for the host loop's status line.
#[derive(Default)]
pub struct Echo {
    /// Messages echoed.
    pub echoed: u64,
    /// Connections open now (opened and not closed yet).
    pub open: HashSet<ConnId>,
    /// Connections closed by a handshake deadline.
    pub handshake_timeouts: u64,
}

impl Handler for Echo {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
        self.open.insert(conn);
        log::info!("{conn} open from {peer}");
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        match ctx.send(conn, message) {
            Ok(()) => self.echoed += 1,
            // The clients here read their echoes; a flooder is paused by the reactor's
            // auto-pause long before this (examples/echo_server.rs shows holding the echo).
            Err(e) => log::warn!("{conn}: echo refused: {e}"),
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.open.remove(&conn);
        if matches!(reason, CloseReason::HandshakeTimeout) {
            self.handshake_timeouts += 1;
            // Printed so a user (and tests/embedding.rs) sees the deadline fire inside the host
            // loop.
            println!("{conn} closed: {reason}");
        }
        log::info!("{conn} closed: {reason}");
    }
}

/// The command line: `[ADDRESS] [--authkey KEY] [--handshake-timeout SECONDS]`.
pub fn parse_args() -> mpconn::Result<(Address, ListenOptions)> {
    let mut address = None;
    let mut key = None;
    let mut connection = ConnectionOptions::default();
    let mut args = std::env::args().skip(1);
    let config = |what: &str| mpconn::Error::Config(what.into());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--authkey" => key = Some(args.next().ok_or_else(|| config("--authkey needs a value"))?),
            "--handshake-timeout" => {
                let secs: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| config("--handshake-timeout needs a positive number of seconds"))?;
                connection = connection.handshake_timeout(Some(Duration::from_secs_f64(secs)));
            }
            other => address = Some(other.parse::<Address>()?),
        }
    }
    let mut options = ListenOptions::new().connection(connection);
    if let Some(key) = key {
        options = options.authkey(key.as_str());
    }
    let address = match address {
        Some(a) => a,
        None => arbitrary_address(Family::fastest())?,
    };
    Ok((address, options))
}
