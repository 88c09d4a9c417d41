//! `mpconn listen`: a reactor server that prints every connection event and message. It runs
//! until Ctrl-C (or SIGTERM): then it stops the reactor gracefully (queued echoes flushed, each
//! open connection closed and reported by its `close` line), drops the listener, which removes
//! its Unix socket file, and exits 0.
//!
//! The reactor thread only moves bytes: messages are decoded and printed by the worker pool of
//! `work.rs` (a large pickle took the reactor thread for seconds before), and every line passes
//! through `clean::text`, so nothing a peer sends reaches the terminal or a line parser raw.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mpconn::CloseReason;
use mpconn::reactor::options::{ConnectionOptions, ListenOptions, ReactorConfig};
use mpconn::reactor::{ConnId, Context, Handler, Reactor, Sharded, Turn};
use mpconn::{Address, Family, Result, arbitrary_address};

use crate::clean;
use crate::interrupt;
use crate::keys::KeyArgs;
use crate::work::{EchoProbe, Pool};

/// How often an idle reactor looks at the interrupt flag: the delay between Ctrl-C and the stop.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);
/// After Ctrl-C, how long the reactor keeps running for echoes the workers still have to post.
const ECHO_GRACE: Duration = Duration::from_secs(2);

struct Printer {
    echo: bool,
    pool: Pool,
}

impl Handler for Printer {
    fn on_open(&mut self, _: &mut Context<'_>, conn: ConnId, peer: &Address) {
        let peer = peer.to_string();
        let peer = if peer.is_empty() { "(unnamed)".into() } else { peer };
        self.pool.line(conn, format!("open {conn} from {}", clean::text(&peer)));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        self.pool.message(ctx, conn, message, self.echo);
    }

    fn on_message_owned(&mut self, ctx: &mut Context<'_>, conn: ConnId, message: Vec<u8>) {
        self.pool.message_owned(ctx, conn, message, self.echo);
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        self.pool.close(conn, format!("close {conn}: {}", clean::text(&reason.to_string())));
    }
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    address: Option<String>,
    family: Option<Family>,
    echo: bool,
    memory_budget: Option<usize>,
    reactors: Option<usize>,
    quiet: bool,
    keys: &KeyArgs,
) -> Result<()> {
    let address = match address {
        Some(a) => a.parse::<Address>()?,
        None => arbitrary_address(family.unwrap_or_else(Family::fastest))?,
    };
    let mut connection = ConnectionOptions::new().dialect(keys.dialect()).max_message_size(keys.max_message_size());
    if let Some(key) = keys.key()? {
        connection = connection.authkey(key);
    }
    let mut config = ReactorConfig::default();
    if let Some(bytes) = memory_budget {
        config = config.memory_budget(Some(bytes));
    }
    if let Some(n) = reactors {
        return run_sharded(n, address, connection, config, echo, quiet);
    }
    let mut reactor = Reactor::with_config(Printer { echo, pool: Pool::new(quiet) }, config)?;
    let handle = reactor.handle();
    reactor.handler_mut().pool.start(handle)?;
    let listener = reactor.listen(address, ListenOptions::new().connection(connection))?;
    let bound = reactor.listener_address(listener).ok_or(mpconn::Error::Closed("the listener"))?;
    println!("listening on {}", clean::text(&bound.to_string()));
    let _ = std::io::stdout().flush();
    let mut interrupted: Option<std::time::Instant> = None;
    let mut stopping = false;
    let result = loop {
        if interrupted.is_none() && interrupt::requested() {
            log::info!("interrupted: stopping (open connections are closed, the socket file removed)");
            interrupted = Some(std::time::Instant::now());
        }
        // Echoes the workers still hold are posted before the stop (at most ECHO_GRACE).
        if !stopping
            && let Some(at) = interrupted
            && (!reactor.handler().pool.echoes_pending() || at.elapsed() > ECHO_GRACE)
        {
            reactor.with_context(|ctx| ctx.stop());
            stopping = true;
        }
        let wait = if interrupted.is_some() && !stopping { Duration::from_millis(10) } else { INTERRUPT_CHECK };
        match reactor.run_once(Some(wait)) {
            Ok(Turn::Stopped) => break Ok(()),
            Ok(Turn::Running) => {}
            Err(e) => break Err(e),
        }
    };
    log::debug!("listen: at most {} bytes were queued for the workers", reactor.handler().pool.peak_bytes());
    reactor.handler_mut().pool.finish();
    result
}

/// `--reactors N`: N sharded reactors, each with its own printer and worker pool; connections are
/// spread over them (see `mpconn::reactor::Sharded`), the lines are as with one reactor, and the
/// connection names (`conn#SHARD.SLOT.GENERATION`) are unique across the shards. Ctrl-C stops
/// them all (after the echoes the workers still hold, at most `ECHO_GRACE`).
fn run_sharded(
    n: usize,
    address: Address,
    connection: ConnectionOptions,
    config: ReactorConfig,
    echo: bool,
    quiet: bool,
) -> Result<()> {
    let mut group = Sharded::new(n, config, |_| Printer { echo, pool: Pool::new(quiet) })?;
    let handle = group.handle();
    let mut probes = Vec::new();
    for i in 0..group.shard_count() {
        let (Some(printer), Some(shard)) = (group.handler_mut(i), handle.shard(i)) else { continue };
        printer.pool.start(shard.clone())?;
        probes.push(printer.pool.echo_probe());
    }
    let listener = group.listen(address, ListenOptions::new().connection(connection))?;
    println!("listening on {}", clean::text(&listener.address().to_string()));
    let _ = std::io::stdout().flush();
    log::info!("{} reactors, connections spread by {:?}", group.shard_count(), listener.balance());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, handle) = (done.clone(), handle.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if interrupt::requested() {
                    log::info!("interrupted: stopping (open connections are closed, the socket file removed)");
                    let at = Instant::now();
                    while probes.iter().any(EchoProbe::echoes_pending) && at.elapsed() <= ECHO_GRACE {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = handle.stop();
                    return;
                }
                std::thread::sleep(INTERRUPT_CHECK);
            }
        })
    };
    let result = group.run();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    for (i, s) in handle.stats().shards.iter().enumerate() {
        log::info!("reactor {i}: {} connections opened, {} messages, {} bytes", s.opened, s.messages, s.bytes);
    }
    for i in 0..group.shard_count() {
        if let Some(p) = group.handler_mut(i) {
            p.pool.finish();
        }
    }
    result
}
