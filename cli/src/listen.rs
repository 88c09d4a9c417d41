//! `mpconn listen`: a reactor server that prints every connection event and message. It runs
//! until Ctrl-C (or SIGTERM): then it stops the reactor gracefully (queued echoes flushed, each
//! open connection closed and reported by its `close` line), drops the listener, which removes
//! its Unix socket file, and exits 0.

use std::io::Write;
use std::time::Duration;

use mpconn::reactor::options::{CloseReason, ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, Turn};
use mpconn::{Address, Family, Result, arbitrary_address};

use crate::interrupt;
use crate::keys::KeyArgs;
use crate::show::show;

/// How often an idle reactor looks at the interrupt flag: the delay between Ctrl-C and the stop.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

struct Printer {
    echo: bool,
    quiet: bool,
}

impl Printer {
    fn line(&self, text: std::fmt::Arguments<'_>) {
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = out.write_fmt(text);
            let _ = out.write_all(b"\n");
        }
    }
}

impl Handler for Printer {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
        self.line(format_args!(
            "open {conn} from {}",
            if peer.to_string().is_empty() { "(unnamed)".into() } else { peer.to_string() }
        ));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        self.line(format_args!("message {conn} ({} bytes): {}", message.len(), show(message)));
        if self.echo
            && let Err(e) = ctx.send(conn, message)
        {
            self.line(format_args!("echo to {conn} refused: {e}"));
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.line(format_args!("close {conn}: {reason}"));
    }
}

pub fn run(address: Option<String>, family: Option<Family>, echo: bool, quiet: bool, keys: &KeyArgs) -> Result<()> {
    let address = match address {
        Some(a) => a.parse::<Address>()?,
        None => arbitrary_address(family.unwrap_or_else(Family::fastest))?,
    };
    let mut connection = ConnectionOptions::new().dialect(keys.dialect()).max_message_size(keys.max_message_size());
    if let Some(key) = keys.key()? {
        connection = connection.authkey(key);
    }
    let mut reactor = Reactor::new(Printer { echo, quiet })?;
    let listener = reactor.listen(address, ListenOptions::new().connection(connection))?;
    let bound = reactor.listener_address(listener).ok_or(mpconn::Error::Closed("the listener"))?;
    println!("listening on {bound}");
    let _ = std::io::stdout().flush();
    let mut stopping = false;
    loop {
        if !stopping && interrupt::requested() {
            log::info!("interrupted: stopping (open connections are closed, the socket file removed)");
            reactor.with_context(|ctx| ctx.stop());
            stopping = true;
        }
        if reactor.run_once(Some(INTERRUPT_CHECK))? == Turn::Stopped {
            return Ok(());
        }
    }
}
