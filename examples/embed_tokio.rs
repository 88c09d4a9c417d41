//! The reactor inside a tokio runtime: an echo server for Python clients whose event loop is
//! tokio's, next to the application's own async work (here an interval that prints a status
//! line).
//!
//! ```text
//! cargo run --example embed_tokio -- [ADDRESS] [--authkey KEY] [--handshake-timeout SECONDS]
//! ```
//! Prints `listening on <address>` once ready (with no address, a fresh Unix socket). Python
//! clients work as they are: `Client(address, authkey=b"KEY").send_bytes(b"hi")`.
//!
//! How: the reactor implements `AsRawFd`; its descriptor (an epoll descriptor) is readable
//! when the reactor has work. It goes into a `tokio::io::unix::AsyncFd`, which owns the reactor
//! and still lends it out (`get_mut`). Each round the task waits for whichever comes first:
//! the descriptor turning readable, the reactor's next deadline (`Reactor::poll_timeout`: a
//! handshake timeout is a timer, no descriptor announces it), or the application's interval;
//! then it runs one non-blocking turn, `run_once(Some(Duration::ZERO))`. The readiness is
//! cleared *before* the turn, so events that arrive during the turn raise it again (tokio's
//! registration is edge-triggered; a turn that leaves work behind wakes its own descriptor).

#[cfg(unix)]
#[path = "support/embed_echo.rs"]
mod echo;

#[cfg(unix)]
mod unix {
    use std::time::Duration;

    use mpconn::reactor::{Reactor, Turn};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::echo::{Echo, parse_args};

    /// Sleeps for `wait`, or forever when there is no deadline.
    async fn sleep_for(wait: Option<Duration>) {
        match wait {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    }

    pub fn main() -> mpconn::Result<()> {
        let (address, options) = parse_args()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let mut reactor = Reactor::new(Echo::default())?;
            let listener = reactor.listen(address, options)?;
            println!("listening on {}", reactor.listener_address(listener).expect("just bound"));
            // The AsyncFd owns the reactor; `get_mut` lends it to us between waits.
            // SAFETY: the descriptor is the reactor's own poll descriptor: open for as long as
            // the reactor lives (the AsyncFd owns it, so longer than the registration), and
            // `as_raw_fd` always returns that same descriptor.
            let reactor = unsafe { AsyncFd::register_with_interest(reactor, Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            run(reactor).await
        })
    }

    async fn run(mut reactor: AsyncFd<Reactor<Echo>>) -> mpconn::Result<()> {
        // The application's own work: a status line every second.
        let mut status = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            let wait = reactor.get_ref().poll_timeout();
            tokio::select! {
                ready = reactor.readable_mut() => {
                    // Cleared before the turn: whatever arrives during it raises readiness anew.
                    ready?.clear_ready();
                }
                () = sleep_for(wait) => {}
                _ = status.tick() => {
                    ticks += 1;
                    let echo = reactor.get_ref().handler();
                    eprintln!("tick {ticks}: {} open, {} echoed", echo.open.len(), echo.echoed);
                    continue;
                }
            }
            if reactor.get_mut().run_once(Some(Duration::ZERO))? == Turn::Stopped {
                return Ok(());
            }
        }
    }
}

#[cfg(unix)]
fn main() -> mpconn::Result<()> {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!(
        "unix only: the reactor's descriptor is an epoll/kqueue descriptor (on Windows, call run_once from your loop)"
    );
}
