//! The transport: one stream type and one listener type over TCP, Unix sockets and Windows named
//! pipes. This is the only layer that knows which family it runs on; everything above moves
//! framed bytes through [`Stream`] and [`SocketListener`], registers them with a reactor through
//! the methods here, and waits on them with [`wait_readable`].
//!
//! Sockets report readiness to mio's poller directly. Named pipes cannot (their I/O completes on
//! a thread of their own, see `pipe`), so they report it to a `Notify` the reactor passes at
//! registration; the reactor treats those reports exactly as poller events.

#[cfg(feature = "tokio")]
pub(crate) mod async_io;
#[cfg(windows)]
#[allow(unsafe_code)]
mod pipe;
#[cfg(unix)]
mod readiness;
#[cfg(unix)]
mod socket;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
pub use readiness::wait_readable;
#[cfg(all(unix, feature = "tokio"))]
pub(crate) use socket::StdListener;
#[cfg(unix)]
pub(crate) use socket::{SEND_FLAGS, send_slices};
#[cfg(unix)]
pub use socket::{SocketListener, Stream};
#[cfg(windows)]
pub use windows::{SocketListener, Stream, wait_readable};

use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use crate::address::{Address, Family, arbitrary_address};
use crate::error::{Error, Result};

/// Default listen backlog of the blocking and tokio listeners. Python's is 1, which refuses
/// bursts of clients; this is larger.
pub const DEFAULT_BACKLOG: i32 = 128;

/// Binds a listener: `address`, checked against `family` if both are given, or else a fresh
/// address of `family` (default [`Family::fastest`]), whose private directory is removed again
/// if binding fails and with the listener otherwise. Every face binds through here.
pub(crate) fn bind_listener(address: Option<Address>, family: Option<Family>, backlog: i32) -> Result<SocketListener> {
    let (address, arbitrary) = match address {
        Some(a) => {
            if let Some(f) = family {
                a.check_family(f)?;
            }
            (a, false)
        }
        None => (arbitrary_address(family.unwrap_or_else(Family::fastest))?, true),
    };
    let private_dir = if arbitrary { address.unix_path().and_then(|p| p.parent()) } else { None };
    let mut socket = match SocketListener::bind(&address, backlog) {
        Ok(s) => s,
        Err(e) => {
            if let Some(dir) = private_dir {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    if let Some(dir) = private_dir {
        socket.own_dir(dir.to_path_buf());
    }
    log::debug!("listening on {}", socket.address());
    Ok(socket)
}

/// What a descriptor is on this platform: a file descriptor on Unix; on Windows the pipe handle
/// or socket, as a number (what Python's `fileno()` gives there).
#[cfg(unix)]
pub type RawDescriptor = std::os::fd::RawFd;
/// What a descriptor is on this platform: a file descriptor on Unix; on Windows the pipe handle
/// or socket, as a number (what Python's `fileno()` gives there).
#[cfg(windows)]
pub type RawDescriptor = usize;

/// Receives readiness that no OS poller reports (Windows named pipes): `token` may have become
/// readable or writable. Called from another thread; must not block.
pub(crate) trait Notify: Send + Sync {
    // Only pipes call it; Unix builds have none.
    #[cfg_attr(unix, allow(dead_code))]
    fn notify(&self, token: usize);
}

/// `now + t`, or a hundred years from `now` when `t` is longer: a caller's "forever" given as
/// `Duration::MAX` (or `u64::MAX` seconds) is not representable as an `Instant`, and `now + t`
/// would panic.
pub(crate) fn deadline_after(now: Instant, t: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(t.min(FAR)).unwrap_or(now)
}

/// Reads into `buf`, retrying on interruption.
fn read_retry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Writes all of `bufs` with as few vectored writes as `w` allows.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error for a family this build cannot serve.
pub(crate) fn unsupported(family: crate::address::Family) -> Error {
    Error::UnsupportedFamily(family.name())
}

/// Whether a failed accept concerns only that one connection (the next accept may succeed).
pub(crate) fn is_transient_accept_error(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO | libc::EINTR))
    }
    #[cfg(windows)]
    {
        matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted)
    }
}
