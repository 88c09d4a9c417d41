//! The reactor inside someone else's `poll(2)` loop: the host program polls its own descriptor
//! (standard input: one command per line) and the reactor's, and the reactor serves Python
//! clients as an echo server in between.
//!
//! ```text
//! cargo run --example embed_poll -- [ADDRESS] [--authkey KEY] [--handshake-timeout SECONDS]
//! ```
//! Prints `listening on <address>` once ready (with no address, a fresh Unix socket). On
//! standard input, `stats` prints a status line; end of input (Ctrl-D) or `quit` stops the
//! reactor (its connections are closed in order) and ends the program.
//!
//! How: the reactor's descriptor (`AsRawFd`, an epoll descriptor) is readable when it has work;
//! the loop waits on it and on standard input with `libc::poll`, at most
//! `Reactor::poll_timeout` (the reactor's deadlines, such as handshake timeouts, are timers no
//! descriptor announces), then runs one non-blocking turn, `run_once(Some(Duration::ZERO))`.
//! `poll(2)` is level-triggered, so nothing is missed between turns.

#[cfg(unix)]
#[path = "support/embed_echo.rs"]
mod echo;

#[cfg(unix)]
mod unix {
    use std::io::{self, Read};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use mpconn::reactor::{Reactor, Turn};

    use super::echo::{Echo, parse_args};

    /// `poll(2)`'s timeout argument: milliseconds, rounded up (a deadline must not be polled
    /// for just before it is due), -1 for none.
    fn poll_millis(wait: Option<Duration>) -> libc::c_int {
        match wait {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        }
    }

    pub fn main() -> mpconn::Result<()> {
        let (address, options) = parse_args()?;
        let mut reactor = Reactor::new(Echo::default())?;
        let listener = reactor.listen(address, options)?;
        println!("listening on {}", reactor.listener_address(listener).expect("just bound"));

        // The host's own descriptor: standard input, commands a line at a time. One read per
        // readiness (poll said it will not block); a partial line waits for the rest.
        let mut input = io::stdin().lock();
        let mut input_open = true;
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let mut fds = [
                libc::pollfd { fd: reactor.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: if input_open { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
            ];
            let n = poll_fds(&mut fds, poll_millis(reactor.poll_timeout()))?;
            if n > 0 && fds[1].revents != 0 {
                let got = input.read(&mut chunk)?;
                pending.extend_from_slice(&chunk[..got]);
                let mut commands: Vec<String> = Vec::new();
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    commands.push(String::from_utf8_lossy(&line).trim().to_owned());
                }
                if got == 0 {
                    commands.push("quit".to_owned());
                }
                for command in commands {
                    match command.as_str() {
                        "stats" => {
                            let echo = reactor.handler();
                            println!(
                                "{} open, {} echoed, {} handshake timeouts",
                                echo.open.len(),
                                echo.echoed,
                                echo.handshake_timeouts
                            );
                        }
                        "quit" if input_open => {
                            input_open = false;
                            reactor.handle().stop()?;
                        }
                        "quit" | "" => {}
                        other => eprintln!("unknown command {other:?} (stats, quit)"),
                    }
                }
            }
            // Whether the descriptor fired or the deadline came: one turn that does not wait.
            if reactor.run_once(Some(Duration::ZERO))? == Turn::Stopped {
                println!("stopped: {} messages echoed", reactor.handler().echoed);
                return Ok(());
            }
        }
    }

    /// `poll(2)` on `fds`, retried when a signal interrupts it.
    fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structures for the
            // duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
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
