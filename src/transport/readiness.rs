//! Waiting for readability of several descriptors with a timeout: what Python's
//! `multiprocessing.connection.wait` does with `selectors`. Built on a short-lived `mio::Poll`,
//! so no `unsafe` is needed; an fd that is already readable is reported at once (epoll reports
//! readiness present at registration).

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::Stream;

/// Waits until at least one of `streams` is readable (or at end of file, or in error) or
/// `timeout` passes (`None`: no limit). Returns the indexes of the ready ones, empty on timeout.
pub fn wait_readable(streams: &[&Stream], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let fds: Vec<RawFd> = streams.iter().map(|s| std::os::fd::AsRawFd::as_raw_fd(*s)).collect();
    wait_fds(&fds, timeout)
}

/// [`wait_readable`] for raw descriptors (a listening socket is readable when a client waits).
pub(crate) fn wait_fds(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let mut poll = Poll::new()?;
    for (i, fd) in fds.iter().enumerate() {
        poll.registry().register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(fds.len().max(1));
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, left) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        ready.sort_unstable();
        ready.dedup();
        if !ready.is_empty() || left.is_some_and(|l| l.is_zero()) {
            return Ok(ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ready);
        }
    }
}
