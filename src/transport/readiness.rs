//! Waiting for readability of several descriptors with a timeout: what Python's
//! `multiprocessing.connection.wait` does with `selectors`. On Linux one `poll(2)` (through
//! rustix: no `unsafe` here), a single system call however many descriptors; elsewhere a
//! short-lived `mio::Poll` (a kqueue created, filled and closed per wait). Either way an fd that
//! is already readable is reported at once.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::Stream;

/// Waits until at least one of `streams` is readable (or at end of file, or in error) or
/// `timeout` passes (`None`: no limit). Returns the indexes of the ready ones, empty on timeout.
pub fn wait_readable(streams: &[&Stream], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    wait_fds(streams, timeout)
}

/// [`wait_readable`] for anything with a descriptor (a listening socket is readable when a
/// client waits).
pub(crate) fn wait_fds<F: AsFd>(fds: &[F], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| super::deadline_after(Instant::now(), t));
    let mut waiter = Waiter::new(fds)?;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ready = match waiter.wait(left) {
            Ok(ready) => ready,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Vec::new(),
            Err(e) => return Err(e),
        };
        if !ready.is_empty() || left.is_some_and(|l| l.is_zero()) {
            return Ok(ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ready);
        }
    }
}

/// Waits up to `timeout` (`None`: without limit) in one `poll(2)` until one of `fds` has
/// something to read; how many have. Interrupted by a signal: `Errno::INTR`.
#[cfg(target_os = "linux")]
pub(crate) fn poll(fds: &mut [rustix::event::PollFd<'_>], timeout: Option<Duration>) -> rustix::io::Result<usize> {
    let timeout = timeout.map(|t| rustix::event::Timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    rustix::event::poll(fds, timeout.as_ref())
}

#[cfg(target_os = "linux")]
struct Waiter<'a> {
    fds: Vec<rustix::event::PollFd<'a>>,
}

#[cfg(target_os = "linux")]
impl<'a> Waiter<'a> {
    fn new<F: AsFd>(fds: &'a [F]) -> io::Result<Waiter<'a>> {
        use rustix::event::{PollFd, PollFlags};
        Ok(Waiter { fds: fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect() })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<usize>> {
        for f in &mut self.fds {
            f.clear_revents();
        }
        if poll(&mut self.fds, timeout)? == 0 {
            return Ok(Vec::new());
        }
        Ok(self.fds.iter().enumerate().filter(|(_, f)| !f.revents().is_empty()).map(|(i, _)| i).collect())
    }
}

#[cfg(not(target_os = "linux"))]
struct Waiter {
    poll: mio::Poll,
    events: mio::Events,
}

#[cfg(not(target_os = "linux"))]
impl Waiter {
    fn new<F: AsFd>(fds: &[F]) -> io::Result<Waiter> {
        use std::os::fd::AsRawFd;
        let poll = mio::Poll::new()?;
        for (i, f) in fds.iter().enumerate() {
            let fd = f.as_fd().as_raw_fd();
            poll.registry().register(&mut mio::unix::SourceFd(&fd), mio::Token(i), mio::Interest::READABLE)?;
        }
        Ok(Waiter { poll, events: mio::Events::with_capacity(fds.len().max(1)) })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<usize>> {
        self.poll.poll(&mut self.events, timeout)?;
        let mut ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        ready.sort_unstable();
        ready.dedup();
        Ok(ready)
    }
}
