//! `mpconn send`: connect, send messages (bytes, or Python values given as Python literals or
//! JSON), print replies.

use std::time::Duration;

use mpconn::{AuthOptions, AuthenticationError, Client, Error, Result};

use crate::keys::KeyArgs;
use crate::show::{json_to_value, show};

/// How long a keyless `send` without `--recv` listens for a keyed listener's challenge (sent as
/// soon as the connection is accepted, so it is there long before this), capped by `--timeout`.
const VERDICT_WAIT: Duration = Duration::from_secs(1);

pub struct SendArgs<'a> {
    pub address: &'a str,
    pub messages: &'a [String],
    pub pickle: bool,
    pub json: bool,
    pub protocol: Option<u8>,
    pub recv: usize,
    pub timeout: Duration,
    /// Send our challenge with our answer (`--no-early-challenge`: after `#WELCOME#`).
    pub early_challenge: bool,
}

/// A `--pickle` message: a Python literal, else JSON (or JSON only with `--json`).
/// A literal too large to build is refused as such (JSON would not make it any smaller); the
/// text is quoted in the message cut at 200 characters.
pub(crate) fn parse_value(m: &str, json_only: bool) -> Result<mpconn::pickle::Value> {
    use crate::literal::{LiteralError, parse_bounded};
    let literal = if json_only { None } else { Some(parse_bounded(m)) };
    let quoted = || crate::clean::quoted_prefix(m, 200);
    let text = |e: Error| match e {
        Error::Config(m) => m,
        e => e.to_string(),
    };
    match literal {
        Some(Ok(v)) => Ok(v),
        Some(Err(LiteralError::TooLarge(e))) => Err(Error::Config(format!("{}: {}", quoted(), text(e)))),
        literal => {
            let j: serde_json::Value = serde_json::from_str(m).map_err(|e| match literal {
                Some(Err(LiteralError::Syntax(le))) => {
                    Error::Config(format!("{} is neither a Python literal ({}) nor JSON ({e})", quoted(), text(le)))
                }
                _ => Error::Config(format!("{} is not JSON: {e}", quoted())),
            })?;
            json_to_value(&j)
        }
    }
}

/// Checks the options before anything connects: a malformed value or literal is a usage error
/// (exit 2), not a runtime error.
pub fn usage(args: &SendArgs<'_>) -> std::result::Result<(), String> {
    let msg = |e: Error| match e {
        Error::Config(m) => m,
        e => e.to_string(),
    };
    if let Some(p) = args.protocol
        && !(2..=5).contains(&p)
    {
        return Err(format!("--protocol {p}: mpconn writes pickle protocols 2 to 5"));
    }
    if args.pickle || args.json {
        for m in args.messages {
            parse_value(m, args.json).map_err(msg)?;
        }
    }
    Ok(())
}

pub fn run(args: &SendArgs<'_>, keys: &KeyArgs) -> Result<()> {
    if let Some(p) = args.protocol
        && !(2..=5).contains(&p)
    {
        return Err(Error::Config(format!("--protocol {p}: mpconn writes pickle protocols 2 to 5")));
    }
    let key = keys.key()?;
    // --timeout bounds the whole handshake too (a silent keyed listener, a trickling one).
    let mut auth = AuthOptions::new()
        .dialect(keys.dialect())
        .handshake_timeout(Some(args.timeout))
        .early_challenge(args.early_challenge);
    if let Some(key) = &key {
        auth = auth.authkey(key.clone());
    }
    let client = Client::new(args.address)
        .max_message_size(keys.max_message_size())
        .connect_timeout(Some(args.timeout))
        .auth(auth);
    // Parse everything before connecting: a typo must not send half the messages.
    let values = if args.pickle || args.json {
        args.messages.iter().map(|m| parse_value(m, args.json)).collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mut conn = client.connect()?;
    if let Some(p) = args.protocol {
        conn.set_pickle_protocol(p);
    }
    if args.pickle || args.json {
        for v in &values {
            conn.send_value(v)?;
        }
    } else {
        for m in args.messages {
            conn.send_bytes(m.as_bytes())?;
        }
    }
    let timed_out = |e: Error| match e {
        Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Error::Timeout(mpconn::Timeout::Other("no reply within --timeout"))
        }
        e => e,
    };
    // Each whole reply within --timeout, however it trickles in (the connection's read timeout
    // bounds a whole receive, not each read).
    conn.set_read_timeout(Some(args.timeout))?;
    if args.recv == 0 && key.is_none() {
        // Was it delivered? A keyed listener's challenge (or its closing) says no; with a key
        // the handshake already said yes.
        if conn.poll(Some(VERDICT_WAIT.min(args.timeout)))? {
            match conn.recv_bytes() {
                Err(Error::Authentication(AuthenticationError::KeyRequired)) => {
                    return Err(Error::Authentication(AuthenticationError::KeyRequired));
                }
                Err(Error::Eof) | Ok(_) => {}
                Err(e) => return Err(timed_out(e)),
            }
        }
    }
    for _ in 0..args.recv {
        let reply = conn.recv_bytes().map_err(timed_out)?;
        println!("{}", crate::clean::text(&show(&reply)));
    }
    Ok(())
}
