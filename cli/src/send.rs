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
}

/// A `--pickle` message: a Python literal, else JSON (or JSON only with `--json`).
pub(crate) fn parse_value(m: &str, json_only: bool) -> Result<mpconn::pickle::Value> {
    let literal = if json_only { None } else { Some(crate::literal::parse(m)) };
    match literal {
        Some(Ok(v)) => Ok(v),
        literal => {
            let j: serde_json::Value = serde_json::from_str(m).map_err(|e| match literal {
                Some(Err(le)) => Error::Config(format!("{m:?} is neither a Python literal ({le}) nor JSON ({e})")),
                _ => Error::Config(format!("{m:?} is not JSON: {e}")),
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
    let mut auth = AuthOptions::new().dialect(keys.dialect());
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
            Error::Timeout("no reply within --timeout")
        }
        e => e,
    };
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
        println!("{}", show(&reply));
    }
    Ok(())
}
