//! Listening on a pipe name, and connecting to one.
//!
//! A pipe server is a set of instances of one name, each able to take one client. As Python's
//! `PipeListener`, the first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE` (so a name
//! in use is an error, not a silent second server), instances are message-mode, and a client
//! finding every instance busy waits and retries for up to 20 seconds. Unlike Python, a few
//! instances (the backlog) wait for clients at once, each with an overlapped `ConnectNamedPipe`
//! completed on the pipe thread, so a burst of clients is not turned away as busy.

use std::collections::VecDeque;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{FromRawHandle, OwnedHandle};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_IO_PENDING, ERROR_NO_DATA, ERROR_OPERATION_ABORTED,
    ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, ERROR_SEM_TIMEOUT, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_MESSAGE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_MESSAGE,
    PIPE_UNLIMITED_INSTANCES, PIPE_WAIT, SetNamedPipeHandleState, WaitNamedPipeW,
};

use super::driver::{self, OpId};
use super::stream::{PipeShared, PipeStream};
use super::watcher::Watcher;
use crate::transport::Notify;

/// Python's `BUFSIZE` for pipe buffers.
const PIPE_BUFFER: u32 = 8192;
/// How long closing a listener waits for its cancelled instances to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a client keeps retrying a busy pipe (Python's `CONNECTION_TIMEOUT`).
pub const CONNECT_RETRY: Duration = Duration::from_secs(20);

fn wide(name: &str) -> Vec<u16> {
    std::ffi::OsStr::new(name).encode_wide().chain(Some(0)).collect()
}

/// Whether a pipe of this name exists: `WaitNamedPipeW` fails at once with
/// `ERROR_FILE_NOT_FOUND` when none does. `FILE_FLAG_FIRST_PIPE_INSTANCE` is the real guard on
/// Windows; Wine 8 ignores that flag, so this check is made first.
fn pipe_exists(name: &str) -> bool {
    let w = wide(name);
    // SAFETY: NUL-terminated name.
    if unsafe { WaitNamedPipeW(w.as_ptr(), 1) } != 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(ERROR_FILE_NOT_FOUND as i32)
}

/// Creates one message-mode instance of the pipe `name`, for overlapped I/O.
fn create_instance(name: &str, first: bool) -> io::Result<OwnedHandle> {
    if first && pipe_exists(name) {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("the pipe {name} is in use")));
    }
    let mut open = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
    if first {
        open |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    let mode = PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS;
    let w = wide(name);
    // SAFETY: `w` is a NUL-terminated UTF-16 string; no security attributes are passed.
    let h = unsafe {
        CreateNamedPipeW(
            w.as_ptr(),
            open,
            mode,
            PIPE_UNLIMITED_INSTANCES,
            PIPE_BUFFER,
            PIPE_BUFFER,
            0,
            std::ptr::null(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        let e = io::Error::last_os_error();
        if first && e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("the pipe {name} is in use")));
        }
        return Err(e);
    }
    // SAFETY: a fresh handle that nothing else owns.
    let owned = unsafe { OwnedHandle::from_raw_handle(h as _) };
    driver::associate(h)?;
    Ok(owned)
}

/// Opens the client end of `name` in message mode; `Ok(None)` when all instances are busy.
fn open_client(name: &str) -> io::Result<Option<OwnedHandle>> {
    let w = wide(name);
    // SAFETY: as above; OPEN_EXISTING with overlapped I/O.
    let h = unsafe {
        CreateFileW(
            w.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        let e = io::Error::last_os_error();
        return match e.raw_os_error().map(|c| c as u32) {
            Some(ERROR_PIPE_BUSY) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a fresh handle that nothing else owns.
    let owned = unsafe { OwnedHandle::from_raw_handle(h as _) };
    let mode = PIPE_READMODE_MESSAGE;
    // SAFETY: the handle is valid; only the read mode is set.
    if unsafe { SetNamedPipeHandleState(h, &mode, std::ptr::null(), std::ptr::null()) } == 0 {
        return Err(io::Error::last_os_error());
    }
    driver::associate(h)?;
    Ok(Some(owned))
}

/// Waits (up to a second) for an instance of `name` to be free.
fn wait_free(name: &str, limit: Duration) -> io::Result<()> {
    let w = wide(name);
    let ms = limit.as_millis().clamp(1, 1000) as u32;
    // SAFETY: NUL-terminated name.
    if unsafe { WaitNamedPipeW(w.as_ptr(), ms) } == 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error().map(|c| c as u32), Some(ERROR_SEM_TIMEOUT | ERROR_PIPE_BUSY)) {
            return Err(e);
        }
    }
    Ok(())
}

/// Opens the client end of `name`, waiting for a busy pipe for up to `timeout`.
fn open_waiting(name: &str, timeout: Duration) -> io::Result<OwnedHandle> {
    let deadline = crate::transport::deadline_after(Instant::now(), timeout);
    loop {
        if let Some(h) = open_client(name)? {
            return Ok(h);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("the pipe {name} stayed busy")));
        }
        wait_free(name, left)?;
    }
}

/// Connects to `name`, waiting for a busy pipe for up to `timeout` (default 20 s, as Python).
pub fn connect(name: &str, timeout: Option<Duration>) -> io::Result<PipeStream> {
    let h = open_waiting(name, timeout.unwrap_or(CONNECT_RETRY))?;
    let shared = PipeShared::new(name.to_string(), None);
    shared.set_connected(Some(h));
    Ok(PipeStream::new(shared))
}

/// Starts connecting without blocking: returns a stream that is connected at once if an
/// instance is free, and otherwise becomes connected (or fails, see
/// [`PipeStream::take_error`]) from a helper thread that waits for a busy pipe.
pub fn connect_nonblocking(name: &str) -> io::Result<(PipeStream, bool)> {
    if let Some(h) = open_client(name)? {
        let shared = PipeShared::new(name.to_string(), None);
        shared.set_connected(Some(h));
        return Ok((PipeStream::new(shared), true));
    }
    let shared = PipeShared::new(name.to_string(), None);
    let bg = shared.clone();
    let name = name.to_string();
    std::thread::Builder::new().name("mpconn-pipe-connect".into()).spawn(move || {
        match open_waiting(&name, CONNECT_RETRY) {
            Ok(h) => bg.set_connected(Some(h)),
            Err(e) => bg.set_connect_failed(&e),
        }
    })?;
    Ok((PipeStream::new(shared), false))
}

struct ListenerState {
    ready: VecDeque<PipeStream>,
    /// Instances waiting for a client, with their connect operations.
    waiting: Vec<(Arc<PipeShared>, OpId)>,
    closed: bool,
    watcher: Watcher,
    /// The last failure to make a new instance, reported by the next accept.
    failure: Option<io::Error>,
    /// The first instance (made by `bind`, to claim the name), until it waits for a client.
    first: Option<Arc<PipeShared>>,
    /// A refill is on its way to the pipe thread.
    refill_posted: bool,
}

struct ListenerShared {
    name: String,
    instances: usize,
    state: Mutex<ListenerState>,
    changed: Condvar,
}

impl ListenerShared {
    fn lock(&self) -> MutexGuard<'_, ListenerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn announce(&self, st: &mut ListenerState) {
        self.changed.notify_all();
        st.watcher.announce();
    }

    /// Keeps instances waiting for clients while fewer than `instances` clients are waiting or
    /// connected and not accepted: beyond that, clients find the pipe busy and wait (as with a
    /// full listen backlog), so a server that does not accept holds no more than that.
    fn refill(self: &Arc<Self>, st: &mut ListenerState) {
        if st.closed {
            // A refill that was on its way when the listener closed: nothing may wait anymore.
            st.first = None;
            return;
        }
        if let Some(first) = st.first.take() {
            self.wait_for_client(st, first);
        }
        while !st.closed && st.waiting.len() + st.ready.len() < self.instances {
            let handle = match create_instance(&self.name, false) {
                Ok(h) => h,
                Err(e) => {
                    log::warn!("pipe {}: cannot make a new instance: {e}", self.name);
                    st.failure = Some(e);
                    self.announce(st);
                    return;
                }
            };
            self.wait_for_client(st, PipeShared::new(self.name.clone(), Some(handle)));
        }
    }

    /// [`Self::refill`] on the pipe thread (see `driver`), which issues every operation.
    fn refill_soon(self: &Arc<Self>, st: &mut ListenerState) {
        if driver::on_driver_thread() {
            self.refill(st);
        } else if !st.refill_posted {
            st.refill_posted = true;
            let me = self.clone();
            driver::run_on_driver(move || {
                let mut st = me.lock();
                st.refill_posted = false;
                me.refill(&mut st);
            });
        }
    }

    /// Issues the overlapped `ConnectNamedPipe` of `pipe`.
    fn wait_for_client(self: &Arc<Self>, st: &mut ListenerState, pipe: Arc<PipeShared>) {
        let Some(handle) = pipe.raw() else { return };
        let me = self.clone();
        let instance = pipe.clone();
        // SAFETY: the handle is associated with the port and kept open by `instance`, which the
        // callback holds; `start` passes the OVERLAPPED to one ConnectNamedPipe.
        let submitted = unsafe {
            driver::submit(
                handle,
                Vec::new(),
                |h, _, _, ov| {
                    if ConnectNamedPipe(h, ov) == 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
                            return Err(e);
                        }
                    }
                    Ok(())
                },
                move |done| me.client_came(instance, done.error),
            )
        };
        match submitted {
            Ok(id) => st.waiting.push((pipe, id)),
            Err((e, _)) => match e.raw_os_error().map(|c| c as u32) {
                // A client came between creating the instance and this call (or came, wrote
                // and left: Python's issue 14725). Either way it is a connection.
                Some(ERROR_PIPE_CONNECTED | ERROR_NO_DATA) => {
                    pipe.set_connected(None);
                    st.ready.push_back(PipeStream::new(pipe));
                    self.announce(st);
                }
                _ => {
                    log::warn!("pipe {}: waiting for a client failed: {e}", self.name);
                    st.failure = Some(e);
                    self.announce(st);
                }
            },
        }
    }

    fn client_came(self: &Arc<Self>, pipe: Arc<PipeShared>, error: Option<io::Error>) {
        let mut st = self.lock();
        st.waiting.retain(|(p, _)| !Arc::ptr_eq(p, &pipe));
        if st.closed {
            // The last reference: the instance's handle closes here, before the closing
            // listener (waiting for this) is told.
            drop(pipe);
            self.changed.notify_all();
            return;
        }
        match error {
            None => {
                pipe.set_connected(None);
                st.ready.push_back(PipeStream::new(pipe));
            }
            Some(e) if e.raw_os_error() == Some(ERROR_NO_DATA as i32) => {
                pipe.set_connected(None);
                st.ready.push_back(PipeStream::new(pipe));
            }
            Some(e) if e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) => {}
            Some(e) => log::debug!("pipe {}: a client connect failed: {e}", self.name),
        }
        self.refill(&mut st);
        self.announce(&mut st);
    }
}

/// A pipe name being listened on.
pub struct PipeListener {
    shared: Arc<ListenerShared>,
    nonblocking: bool,
}

impl std::fmt::Debug for PipeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeListener").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

impl PipeListener {
    /// Creates the pipe `name` and starts waiting for clients on `backlog` instances (1 to 64).
    pub fn bind(name: &str, backlog: i32) -> io::Result<PipeListener> {
        let first = create_instance(name, true)?;
        let shared = Arc::new(ListenerShared {
            name: name.to_string(),
            instances: backlog.clamp(1, 64) as usize,
            state: Mutex::new(ListenerState {
                ready: VecDeque::new(),
                waiting: Vec::new(),
                closed: false,
                watcher: Watcher::default(),
                failure: None,
                first: Some(PipeShared::new(name.to_string(), Some(first))),
                refill_posted: false,
            }),
            changed: Condvar::new(),
        });
        {
            let mut st = shared.lock();
            shared.refill_soon(&mut st);
        }
        Ok(PipeListener { shared, nonblocking: false })
    }

    /// Blocking (the default) or not.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Takes a connected client, waiting up to `timeout` (`None`: without limit) when blocking.
    pub fn accept_within(&self, timeout: Option<Duration>) -> io::Result<PipeStream> {
        let deadline = timeout.map(|t| crate::transport::deadline_after(Instant::now(), t));
        let mut st = self.shared.lock();
        st.watcher.rearm();
        loop {
            if let Some(s) = st.ready.pop_front() {
                self.shared.refill_soon(&mut st);
                return Ok(s);
            }
            if let Some(e) = st.failure.take() {
                self.shared.refill_soon(&mut st);
                return Err(e);
            }
            if self.nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st = match deadline {
                None => self.shared.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no client connected in time"));
                    }
                    self.shared.changed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// Tells `notify` (with `token`) when a client may be waiting; `None` stops that.
    pub(crate) fn set_notify(&self, notify: Option<(Arc<dyn Notify>, usize)>) {
        let mut st = self.shared.lock();
        st.watcher.set(notify);
        if st.watcher.is_set() && !st.ready.is_empty() {
            self.shared.announce(&mut st);
        }
    }
}

impl Drop for PipeListener {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        st.first = None;
        st.watcher.set(None);
        for (pipe, op) in &st.waiting {
            if let Some(h) = pipe.raw() {
                driver::cancel(h as HANDLE, *op);
            }
        }
        st.ready.clear();
        // As Python's close: the name is free when this returns (no instance is left for a
        // client to reach, and binding it again works). The cancelled connects finish on the
        // pipe thread, promptly; never wait on that thread itself.
        if driver::on_driver_thread() {
            return;
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        while !st.waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("pipe {}: {} instances still closing", self.shared.name, st.waiting.len());
                break;
            }
            st = self.shared.changed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}
