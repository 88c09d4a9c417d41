//! `mpconn listen`: a reactor server that prints every connection event and message.

use std::io::Write;

use mpconn::reactor::options::{CloseReason, ConnectionOptions, ListenOptions};
use mpconn::reactor::{ConnId, Context, Handler, Reactor};
use mpconn::{Address, Family, Result, arbitrary_address};

use crate::keys::KeyArgs;
use crate::show::show;

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
    println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
    let _ = std::io::stdout().flush();
    reactor.run()
}
