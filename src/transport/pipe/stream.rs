//! One end of a connected named pipe, seen as the framed byte stream every other transport is.
//!
//! Python's `PipeConnection` sends each message as one pipe message with no length prefix. The
//! layers above read and write length-prefixed frames, so this type translates at the edge:
//! each received pipe message is handed out as a frame header followed by its bytes (the length
//! is known from the first read and, for a message longer than that read, from
//! `PeekNamedPipe`'s bytes left in the message), and written frames are split back into their
//! bodies, each written as one pipe message. Nothing above this module knows it runs on a pipe.
//!
//! Reads run ahead of the caller by at most [`INBOUND_HIGH`] bytes and queued writes are bounded
//! by [`OUTBOUND_HIGH`] (plus the message being assembled), so a fast peer or a slow one cannot
//! make memory grow. In blocking mode a write returns when the pipe took the message, as in
//! Python; in non-blocking mode (the reactor) it returns `WouldBlock` above the mark.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_IO_PENDING, ERROR_MORE_DATA, ERROR_NO_DATA, ERROR_OPERATION_ABORTED,
    ERROR_PIPE_NOT_CONNECTED, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::Pipes::PeekNamedPipe;

use super::driver::{self, Completed, OpId};
use super::watcher::Watcher;
use crate::transport::Notify;
use crate::wire::frame::{FrameDecoder, Header};

/// Unread received bytes beyond which no further read is started.
pub(super) const INBOUND_HIGH: usize = 1024 * 1024;
/// Queued outgoing bytes beyond which a non-blocking write says `WouldBlock`.
pub(super) const OUTBOUND_HIGH: usize = 1024 * 1024;
/// The first read of a message; a longer message is finished with reads of what is left.
const HEAD_READ: usize = 8 * 1024;
/// The largest read of the rest of a long message.
const BODY_READ: usize = 1024 * 1024;
/// Writes in flight at once. One: a window of 64 measured no gain under Wine (8.1 k vs 8.4 k
/// small messages a second, where Wine's synchronous floor is 11.7 k), and the order of several
/// overlapped writes on one pipe cannot be checked on a real Windows here. Raise it only with a
/// measurement and an ordering test on Windows.
const WRITE_WINDOW: usize = 1;
/// How long a dropped pipe may still try to deliver what was queued.
const LINGER: Duration = Duration::from_secs(10);
/// Nothing larger fits in one `WriteFile`, so in one pipe message.
const MAX_PIPE_MESSAGE: usize = u32::MAX as usize;

/// State shared by the owner of a pipe and the completion thread.
pub(super) struct PipeShared {
    /// Set once connected (at once for accepted pipes; later for a client waiting on a busy
    /// pipe). Closed when the last reference goes, which is after the last operation finished.
    handle: OnceLock<OwnedHandle>,
    pub(super) name: String,
    state: Mutex<PipeState>,
    changed: Condvar,
}

/// An error kept to be reported (`io::Error` is not `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    code: Option<i32>,
    text: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure { kind: e.kind(), code: e.raw_os_error(), text: e.to_string() }
    }
    fn to_error(&self) -> io::Error {
        match self.code {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

#[derive(Default)]
struct PipeState {
    connected: bool,
    connect_error: Option<Failure>,
    /// Framed bytes received and not yet read, from `inbound_pos`.
    inbound: Vec<u8>,
    inbound_pos: usize,
    /// Bytes of the current message still in the pipe (its header was handed out already).
    message_left: usize,
    reading: Option<OpId>,
    /// The peer closed (`None` inside), or reading failed.
    read_end: Option<Option<Failure>>,
    /// Splits written frames back into messages.
    outgoing: Option<FrameDecoder>,
    queued: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    /// Writes in flight (at most [`WRITE_WINDOW`]).
    writing: usize,
    write_error: Option<Failure>,
    write_shut: bool,
    read_shut: bool,
    watcher: Watcher,
    owner_gone: bool,
    /// A request to start I/O is on its way to the pipe thread.
    kick_posted: bool,
}

impl PipeState {
    fn unread(&self) -> usize {
        self.inbound.len() - self.inbound_pos
    }

    fn readable(&self) -> bool {
        self.unread() > 0 || self.read_end.is_some() || self.read_shut || self.connect_error.is_some()
    }

    fn output_pending(&self) -> bool {
        self.writing > 0 || !self.queued.is_empty()
    }
}

impl PipeShared {
    pub(super) fn new(name: String, handle: Option<OwnedHandle>) -> Arc<PipeShared> {
        let cell = OnceLock::new();
        if let Some(h) = handle {
            let _ = cell.set(h);
        }
        Arc::new(PipeShared { handle: cell, name, state: Mutex::new(PipeState::default()), changed: Condvar::new() })
    }

    pub(super) fn raw(&self) -> Option<HANDLE> {
        self.handle.get().map(|h| h.as_raw_handle() as HANDLE)
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes blocked callers and, once until it looks again, the registered reactor.
    fn announce(&self, st: &mut PipeState) {
        self.changed.notify_all();
        st.watcher.announce();
    }

    /// The connection is established: start reading.
    pub(super) fn set_connected(self: &Arc<Self>, handle: Option<OwnedHandle>) {
        if let Some(h) = handle {
            let _ = self.handle.set(h);
        }
        let mut st = self.lock();
        st.connected = true;
        self.kick(&mut st);
        self.announce(&mut st);
    }

    /// Starts what reading and writing can start, on the pipe thread (see `driver`): directly
    /// when this is it, else by one request that stands for all until it ran.
    fn kick(self: &Arc<Self>, st: &mut PipeState) {
        if driver::on_driver_thread() {
            self.start_read(st);
            self.start_write(st);
        } else if !st.kick_posted {
            st.kick_posted = true;
            let me = self.clone();
            driver::run_on_driver(move || {
                let mut st = me.lock();
                st.kick_posted = false;
                me.start_read(&mut st);
                me.start_write(&mut st);
            });
        }
    }

    /// Connecting failed (a client that gave up waiting for a busy pipe).
    pub(super) fn set_connect_failed(&self, e: &io::Error) {
        let mut st = self.lock();
        st.connect_error = Some(Failure::of(e));
        self.announce(&mut st);
    }

    /// Starts the next read unless one is in flight, the input is closed, or enough is unread.
    fn start_read(self: &Arc<Self>, st: &mut PipeState) {
        if st.reading.is_some() || st.read_end.is_some() || !st.connected || st.owner_gone {
            return;
        }
        if st.unread() >= INBOUND_HIGH {
            return;
        }
        let Some(handle) = self.raw() else { return };
        let len = if st.message_left > 0 { st.message_left.min(BODY_READ) } else { HEAD_READ };
        let me = self.clone();
        // SAFETY: the handle is associated with the port; `me` (captured by the callback) keeps
        // it open until the read completed. `start` passes the pointers to one ReadFile.
        let submitted = unsafe {
            driver::submit(
                handle,
                Vec::with_capacity(len),
                |h, buf, cap, ov| {
                    let cap = cap.min(len) as u32;
                    if ReadFile(h, buf, cap, std::ptr::null_mut(), ov) == 0 {
                        let e = io::Error::last_os_error();
                        // ERROR_MORE_DATA: a part of a longer message; its packet comes too.
                        if !matches!(e.raw_os_error().map(|c| c as u32), Some(ERROR_IO_PENDING | ERROR_MORE_DATA)) {
                            return Err(e);
                        }
                    }
                    Ok(())
                },
                move |done| me.read_done(done),
            )
        };
        match submitted {
            Ok(id) => st.reading = Some(id),
            Err((e, _)) => st.read_end = Some(end_of(&e)),
        }
    }

    fn read_done(self: &Arc<Self>, done: Completed) {
        let mut st = self.lock();
        st.reading = None;
        let Completed { bytes, error, mut buf } = done;
        // SAFETY: the kernel wrote `bytes` bytes, at most the capacity it was given.
        unsafe { buf.set_len(bytes.min(buf.capacity())) };
        let more = error.as_ref().and_then(io::Error::raw_os_error) == Some(ERROR_MORE_DATA as i32);
        match error {
            Some(e) if !more => {
                if e.raw_os_error() != Some(ERROR_OPERATION_ABORTED as i32) || !st.owner_gone {
                    log::trace!("pipe {}: read ended: {e}", self.name);
                }
                st.read_end = Some(end_of(&e));
            }
            _ => {
                compact(&mut st);
                if st.message_left > 0 {
                    // The rest of a long message.
                    st.message_left = st.message_left.saturating_sub(buf.len());
                    if more && st.message_left == 0 {
                        log::warn!("pipe {}: message longer than announced", self.name);
                        st.read_end = Some(Some(Failure::of(&io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a pipe message went on beyond its announced length",
                        ))));
                    } else if !more && st.message_left != 0 {
                        log::warn!("pipe {}: message ended {} bytes early", self.name, st.message_left);
                        st.read_end = Some(Some(Failure::of(&io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a pipe message ended before its announced length",
                        ))));
                    }
                    st.inbound.extend_from_slice(&buf);
                } else {
                    // A new message: its length is what came, plus what is left when it goes on.
                    let left = if more { self.bytes_left_in_message() } else { Ok(0) };
                    match left {
                        Ok(left) => {
                            let total = buf.len() + left;
                            st.inbound.extend_from_slice(Header::for_len(total).as_bytes());
                            st.inbound.extend_from_slice(&buf);
                            st.message_left = left;
                        }
                        Err(e) => st.read_end = Some(Some(Failure::of(&e))),
                    }
                }
            }
        }
        self.start_read(&mut st);
        self.announce(&mut st);
    }

    /// `PeekNamedPipe`'s count of bytes left in the message being read.
    fn bytes_left_in_message(&self) -> io::Result<usize> {
        let handle = self.raw().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let mut left = 0u32;
        // SAFETY: only the out-count is asked for; no buffer is passed.
        let ok = unsafe {
            PeekNamedPipe(handle, std::ptr::null_mut(), 0, std::ptr::null_mut(), std::ptr::null_mut(), &mut left)
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        if left == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the pipe reported more data but none is left"));
        }
        Ok(left as usize)
    }

    /// Issues queued messages, up to [`WRITE_WINDOW`] in flight.
    fn start_write(self: &Arc<Self>, st: &mut PipeState) {
        while st.writing < WRITE_WINDOW && st.write_error.is_none() && st.connected && !st.queued.is_empty() {
            self.start_one_write(st);
        }
    }

    fn start_one_write(self: &Arc<Self>, st: &mut PipeState) {
        let Some(handle) = self.raw() else { return };
        let Some(msg) = st.queued.pop_front() else { return };
        let len = msg.len();
        let me = self.clone();
        // SAFETY: as in `start_read`; WriteFile reads `len` initialised bytes of the buffer.
        let submitted = unsafe {
            driver::submit(
                handle,
                msg,
                |h, buf, _, ov| {
                    if WriteFile(h, buf, len as u32, std::ptr::null_mut(), ov) == 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
                            return Err(e);
                        }
                    }
                    Ok(())
                },
                move |done| me.write_done(done, len),
            )
        };
        match submitted {
            Ok(_) => st.writing += 1,
            Err((e, _)) => {
                st.queued_bytes -= len;
                st.write_error = Some(Failure::of(&e));
            }
        }
    }

    fn write_done(self: &Arc<Self>, done: Completed, len: usize) {
        let mut st = self.lock();
        st.writing -= 1;
        st.queued_bytes -= len;
        match done.error {
            None if done.bytes == len => {}
            None => {
                st.write_error = Some(Failure::of(&io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the pipe took {} of a {len}-byte message", done.bytes),
                )))
            }
            Some(e) => st.write_error = Some(Failure::of(&e)),
        }
        self.start_write(&mut st);
        let finished = st.owner_gone && !st.output_pending();
        self.announce(&mut st);
        drop(st);
        if finished && let Some(h) = self.raw() {
            driver::linger_done(h);
        }
    }
}

/// Moves unread bytes to the front once most of the buffer has been read.
fn compact(st: &mut PipeState) {
    if st.inbound_pos > 0 && st.inbound_pos >= st.inbound.len() / 2 {
        st.inbound.drain(..st.inbound_pos);
        st.inbound_pos = 0;
    }
}

/// How a failed read ends the input: the peer closing is the end of file, anything else an error.
fn end_of(e: &io::Error) -> Option<Failure> {
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED | ERROR_NO_DATA) => None,
        _ => Some(Failure::of(e)),
    }
}

/// A connected (or connecting) named pipe.
pub struct PipeStream {
    shared: Arc<PipeShared>,
    nonblocking: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl std::fmt::Debug for PipeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeStream").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

impl PipeStream {
    pub(super) fn new(shared: Arc<PipeShared>) -> PipeStream {
        PipeStream { shared, nonblocking: false, read_timeout: None, write_timeout: None }
    }

    /// The pipe's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The raw handle (null while a client still waits for a busy pipe).
    pub fn raw_handle(&self) -> HANDLE {
        self.shared.raw().unwrap_or(std::ptr::null_mut())
    }

    /// Blocking (the default) or not.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Limit on a blocking read.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// Limit on a blocking write.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// Pipes have no half-close: a shut direction only refuses further use here.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        let mut st = self.shared.lock();
        if matches!(how, std::net::Shutdown::Read | std::net::Shutdown::Both) {
            st.read_shut = true;
        }
        if matches!(how, std::net::Shutdown::Write | std::net::Shutdown::Both) {
            st.write_shut = true;
        }
        self.shared.announce(&mut st);
    }

    /// How a background connect ended: `Some(error)` if it failed.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.shared.lock().connect_error.take().map(|f| f.to_error()))
    }

    /// Whether the pipe is connected.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Whether a read would not block (a message, the end, or an error is waiting). Looking
    /// re-arms the notification, as a read does: the next change is announced again.
    pub fn is_readable(&self) -> bool {
        let mut st = self.shared.lock();
        st.watcher.rearm();
        st.readable()
    }

    /// Tells `notify` (with `token`) whenever the pipe may have become readable or writable;
    /// `None` stops that. Announces at once if something is ready already.
    pub(crate) fn set_notify(&self, notify: Option<(Arc<dyn Notify>, usize)>) {
        let mut st = self.shared.lock();
        st.watcher.set(notify);
        if st.watcher.is_set() && (st.readable() || st.connected) {
            self.shared.announce(&mut st);
        }
    }

    /// Waits on the pipe's state with the given limit; `false` when the limit passed.
    fn wait<'a>(
        &'a self,
        st: MutexGuard<'a, PipeState>,
        deadline: Option<Instant>,
    ) -> io::Result<MutexGuard<'a, PipeState>> {
        match deadline {
            None => Ok(self.shared.changed.wait(st).unwrap_or_else(|p| p.into_inner())),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "pipe operation timed out"));
                }
                Ok(self.shared.changed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0)
            }
        }
    }

    fn write_bufs(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        let shared = &self.shared;
        let deadline = self.write_timeout.map(|t| crate::transport::deadline_after(Instant::now(), t));
        let mut st = shared.lock();
        st.watcher.rearm();
        loop {
            if let Some(f) = &st.write_error {
                return Err(f.to_error());
            }
            if st.write_shut || st.owner_gone {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if !st.connected {
                if let Some(f) = &st.connect_error {
                    return Err(f.to_error());
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let assembling = st.outgoing.as_ref().is_some_and(|d| !d.is_idle());
            if st.queued_bytes < OUTBOUND_HIGH || assembling {
                break;
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st = self.wait(st, deadline)?;
        }
        let mut total = 0;
        let decoder = st.outgoing.get_or_insert_with(|| FrameDecoder::new(MAX_PIPE_MESSAGE));
        let mut messages = Vec::new();
        for b in bufs {
            decoder.feed(b);
            total += b.len();
            loop {
                match decoder.take_frame() {
                    Ok(Some(m)) => messages.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("cannot send as a pipe message: {e}"),
                        ));
                    }
                }
            }
        }
        if decoder.is_idle() {
            decoder.shrink_if_idle();
        }
        for m in messages {
            st.queued_bytes += m.len();
            st.queued.push_back(m);
        }
        shared.kick(&mut st);
        if !self.nonblocking {
            // As Python's send_bytes: done when the pipe took the message.
            while st.output_pending() && st.write_error.is_none() {
                st = self.wait(st, deadline)?;
            }
            if let Some(f) = &st.write_error {
                return Err(f.to_error());
            }
        }
        Ok(total)
    }
}

impl Read for PipeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_timeout.map(|t| crate::transport::deadline_after(Instant::now(), t));
        let mut st = self.shared.lock();
        st.watcher.rearm();
        loop {
            if st.read_shut {
                return Ok(0);
            }
            let unread = st.unread();
            if unread > 0 {
                let n = unread.min(buf.len());
                let pos = st.inbound_pos;
                buf[..n].copy_from_slice(&st.inbound[pos..pos + n]);
                st.inbound_pos += n;
                if st.inbound_pos == st.inbound.len() {
                    st.inbound.clear();
                    st.inbound_pos = 0;
                    if st.inbound.capacity() > INBOUND_HIGH {
                        st.inbound = Vec::new();
                    }
                }
                if st.reading.is_none() && st.unread() < INBOUND_HIGH {
                    self.shared.kick(&mut st);
                }
                return Ok(n);
            }
            match &st.read_end {
                Some(None) => return Ok(0),
                Some(Some(f)) => return Err(f.to_error()),
                None => {}
            }
            if let Some(f) = &st.connect_error {
                return Err(f.to_error());
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st = self.wait(st, deadline)?;
        }
    }
}

impl Write for PipeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bufs(&[buf])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.write_bufs(&slices)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.owner_gone = true;
        st.watcher.set(None);
        let Some(h) = self.shared.raw() else { return };
        if st.unread() > 0 || st.message_left > 0 {
            // Dropped with input never read: like a socket closed with unread data (which
            // resets the connection), give up on queued output too and let the peer know now
            // instead of after the linger time.
            driver::cancel_all(h);
            return;
        }
        if let Some(op) = st.reading {
            driver::cancel(h, op);
        }
        if st.output_pending() {
            // Let what was queued go out, for a while. Under the lock, so the last write's
            // completion (which ends the lingering) cannot come in between.
            driver::cancel_later(h, LINGER, Box::new(self.shared.clone()));
        }
    }
}
