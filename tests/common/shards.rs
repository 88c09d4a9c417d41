//! What the suites of sharded reactors share: an echo handler that answers "which shard" and
//! can be told to sleep or stop the group, and a client that asks which shard serves it.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mpconn::reactor::{ConnId, Context, Handler};
use mpconn::{Address, Client, Connection};

/// Echoes every message, and tells the test which shard opened which connection (when given a
/// sender). Messages it understands: "which shard" (answered with the shard's index), "sleep
/// MS" (blocks its shard that long, then echoes), "stop the group".
pub struct Echo {
    pub shard: usize,
    pub opens: Option<mpsc::Sender<(usize, ConnId)>>,
}

impl Handler for Echo {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, _: &Address) {
        if let Some(opens) = &self.opens {
            let _ = opens.send((self.shard, conn));
        }
    }
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        if message == b"stop the group" {
            ctx.stop();
            return;
        }
        if message == b"which shard" {
            let _ = ctx.send(conn, self.shard.to_string().as_bytes());
            return;
        }
        // "sleep MS": a handler that blocks its shard (the reply comes after).
        if let Some(ms) = message.strip_prefix(b"sleep ").and_then(|m| std::str::from_utf8(m).ok()?.parse().ok()) {
            thread::sleep(Duration::from_millis(ms));
        }
        if ctx.send(conn, message).is_err() {
            ctx.close(conn);
        }
    }
}

/// Connects `client` (its address, key and timeouts set by the caller) and asks which shard
/// serves it, waiting at most `within` for the answer.
pub fn connect_to_shard(client: Client, within: Duration) -> mpconn::Result<(usize, Connection)> {
    let mut c = client.connect()?;
    c.set_read_timeout(Some(within))?;
    c.send_bytes(b"which shard")?;
    let reply = c.recv_bytes()?;
    let shard = std::str::from_utf8(&reply).ok().and_then(|s| s.parse().ok());
    let shard = shard.ok_or_else(|| std::io::Error::other(format!("not a shard index: {reply:?}")))?;
    Ok((shard, c))
}
