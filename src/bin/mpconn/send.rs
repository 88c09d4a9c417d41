//! `mpconn send`: connect, send messages (bytes, or Python values given as JSON), print replies.

use std::time::Duration;

use mpconn::{Client, Error, Result};

use crate::keys::KeyArgs;
use crate::show::{json_to_value, show};

pub fn run(
    address: &str,
    messages: &[String],
    pickle: bool,
    recv: usize,
    timeout: Duration,
    keys: &KeyArgs,
) -> Result<()> {
    let mut client = Client::new(address).max_message_size(keys.max_message_size()).connect_timeout(Some(timeout));
    if let Some(key) = keys.key()? {
        client = client.authkey(key);
    }
    // Parse everything before connecting: a typo must not send half the messages.
    let values = if pickle {
        messages
            .iter()
            .map(|m| {
                let j: serde_json::Value =
                    serde_json::from_str(m).map_err(|e| Error::Config(format!("{m:?} is not JSON: {e}")))?;
                json_to_value(&j)
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mut conn = client.connect()?;
    if pickle {
        for v in &values {
            conn.send_value(v)?;
        }
    } else {
        for m in messages {
            conn.send_bytes(m.as_bytes())?;
        }
    }
    conn.set_read_timeout(Some(timeout))?;
    for _ in 0..recv {
        let reply = conn.recv_bytes().map_err(|e| match e {
            Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Error::Timeout("no reply within --timeout")
            }
            e => e,
        })?;
        println!("{}", show(&reply));
    }
    Ok(())
}
