//! The completion-port thread behind every named pipe of the process.
//!
//! Why a thread of our own and not mio's `NamedPipe`: Python's `PipeConnection` frames nothing;
//! one pipe message is one message, and the only way to see where a message ends is the
//! `ERROR_MORE_DATA` result of an overlapped read. mio's named pipe buffers reads internally and
//! hides that result, so its byte stream has lost the boundaries. Here every overlapped
//! operation (read, write, connect) carries a callback; one thread waits on one I/O completion
//! port and runs the callback of each finished operation, which updates the pipe's state and
//! tells whoever waits (a blocked caller through a condition variable, a reactor through its
//! `Notify`).
//!
//! Every operation is issued by this thread too ([`run_on_driver`]): a thread that issued I/O
//! may exit before it completes (a caller's thread, a connect helper), and Wine then never
//! finishes that I/O properly (seen as reads completing with garbage or `ERROR_IO_INCOMPLETE`
//! in a 1,000-client stress run). Windows itself keeps such I/O going for handles tied to a
//! completion port; issuing from one long-lived thread is right on both.
//!
//! The thread also cancels the writes of pipes dropped with output still pending once their
//! linger time is over, so a peer that never reads cannot keep a handle alive forever.

use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatus, OVERLAPPED, PostQueuedCompletionStatus,
};

/// What an operation reports when it finished: the bytes moved, the error if it failed (for a
/// read, `ERROR_MORE_DATA` says the message goes on), and its buffer back.
pub(super) struct Completed {
    pub(super) bytes: usize,
    pub(super) error: Option<io::Error>,
    pub(super) buf: Vec<u8>,
}

type Callback = Box<dyn FnOnce(Completed) + Send>;

/// One overlapped operation. `overlapped` comes first so a pointer to it is a pointer to the
/// whole operation; the kernel owns the allocation (and `buf`) until the completion packet.
#[repr(C)]
struct Op {
    overlapped: OVERLAPPED,
    buf: Vec<u8>,
    done: Option<Callback>,
}

/// The address of an operation in flight, to cancel it with [`cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpId(usize);

struct Port {
    handle: usize,
}

/// Pipes dropped with writes in flight: when to cancel them, their handle, and what keeps the
/// handle open until then.
type Lingering = Vec<(Instant, usize, Box<dyn Send>)>;
static LINGERING: Mutex<Lingering> = Mutex::new(Vec::new());

static PORT: OnceLock<Result<Port, i32>> = OnceLock::new();

/// The completion key of packets that carry a closure to run on the thread (operations use 0).
const CALL_KEY: usize = 1;

type Call = Box<dyn FnOnce() + Send>;

thread_local! {
    static ON_DRIVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this is the completion thread (where operations may be issued directly).
pub(super) fn on_driver_thread() -> bool {
    ON_DRIVER.with(|c| c.get())
}

/// Runs `f` on the completion thread: now if this is it, else soon.
pub(super) fn run_on_driver(f: impl FnOnce() + Send + 'static) {
    if on_driver_thread() {
        f();
        return;
    }
    let port = match port() {
        Ok(p) => p,
        Err(e) => {
            log::error!("no pipe thread ({e}); running pipe work on the caller's thread");
            f();
            return;
        }
    };
    let call: Box<Call> = Box::new(Box::new(f));
    let raw = Box::into_raw(call);
    // SAFETY: the pointer goes into a packet to our own port; `run` takes it back once.
    let posted = unsafe { PostQueuedCompletionStatus(port.handle as HANDLE, 0, CALL_KEY, raw as *const OVERLAPPED) };
    if posted == 0 {
        log::error!("cannot post to the pipe thread: {}", io::Error::last_os_error());
        // SAFETY: the packet was not queued, so the closure is still ours.
        let call = unsafe { Box::from_raw(raw) };
        call();
    }
}

fn port() -> io::Result<&'static Port> {
    let port = PORT.get_or_init(|| {
        // SAFETY: creating a new completion port; no handle is passed in.
        let h = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1) };
        if h.is_null() {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let port = h as usize;
        let spawned = std::thread::Builder::new().name("mpconn-pipes".into()).spawn(move || run(port));
        match spawned {
            Ok(_) => Ok(Port { handle: port }),
            Err(e) => Err(e.raw_os_error().unwrap_or(0)),
        }
    });
    port.as_ref().map_err(|&code| io::Error::from_raw_os_error(code))
}

/// Associates `handle` (opened for overlapped I/O) with the port, once per handle.
pub(super) fn associate(handle: HANDLE) -> io::Result<()> {
    let port = port()?;
    // SAFETY: `handle` is a valid handle owned by the caller; the port is valid for the process.
    let r = unsafe { CreateIoCompletionPort(handle, port.handle as HANDLE, 0, 0) };
    if r.is_null() { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Starts an operation on `handle`. `start` issues the call with the buffer and the
/// `OVERLAPPED`; it returns `Ok(())` when a completion packet will follow (also when the call
/// finished at once) and `Err` when none will (then `done` is not called and the buffer comes
/// back with the error).
///
/// # Safety
/// `handle` must be associated with the port and stay open until `done` runs (callers keep it in
/// an `Arc` that `done` holds). `start` must pass the pointers it gets to exactly one overlapped
/// call and must not keep them.
pub(super) unsafe fn submit(
    handle: HANDLE,
    buf: Vec<u8>,
    start: impl FnOnce(HANDLE, *mut u8, usize, *mut OVERLAPPED) -> io::Result<()>,
    done: impl FnOnce(Completed) + Send + 'static,
) -> Result<OpId, (io::Error, Vec<u8>)> {
    let op = Box::new(Op {
        // SAFETY: OVERLAPPED is plain data; all zero is its initial state.
        overlapped: unsafe { std::mem::zeroed() },
        buf,
        done: Some(Box::new(done)),
    });
    let raw = Box::into_raw(op);
    // SAFETY: `raw` is a live, uniquely owned allocation; the buffer pointer and capacity are
    // those of its Vec, which does not move while the Box is alive.
    let result = unsafe {
        let buf = &mut (*raw).buf;
        let (ptr, cap) = (buf.as_mut_ptr(), buf.capacity());
        start(handle, ptr, cap, std::ptr::addr_of_mut!((*raw).overlapped))
    };
    match result {
        Ok(()) => Ok(OpId(raw as usize)),
        Err(e) => {
            // SAFETY: no packet will come, so the operation is ours again.
            let op = unsafe { Box::from_raw(raw) };
            Err((e, op.buf))
        }
    }
}

/// Asks Windows to cancel an operation in flight; it still completes (with
/// `ERROR_OPERATION_ABORTED` or its real result), and its callback runs.
///
/// Callers pass only ids of operations they know to be in flight (checked under the lock the
/// callback takes), so the `OVERLAPPED` is still allocated.
pub(super) fn cancel(handle: HANDLE, op: OpId) {
    // SAFETY: see above; cancelling a finished operation only returns ERROR_NOT_FOUND.
    unsafe { CancelIoEx(handle, op.0 as *const OVERLAPPED) };
}

/// Cancels every operation in flight on `handle` (each still completes, as aborted).
pub(super) fn cancel_all(handle: HANDLE) {
    // SAFETY: the caller holds the pipe, so the handle is open.
    unsafe { CancelIoEx(handle, std::ptr::null()) };
}

/// Cancels all I/O on `handle` after `linger`, unless it finished before. `keep` is kept alive
/// until then (the pipe whose handle this is).
pub(super) fn cancel_later(handle: HANDLE, linger: Duration, keep: Box<dyn Send>) {
    let Ok(port) = port() else { return };
    if let Ok(mut l) = LINGERING.lock() {
        l.push((Instant::now() + linger, handle as usize, keep));
    }
    // Wake the thread so it waits with the new deadline.
    // SAFETY: posting an empty packet to our own port.
    unsafe { PostQueuedCompletionStatus(port.handle as HANDLE, 0, 0, std::ptr::null()) };
}

/// The completion thread: runs callbacks until the process ends.
fn run(port: usize) {
    ON_DRIVER.with(|c| c.set(true));
    loop {
        let wait = next_linger_wait();
        let mut bytes = 0u32;
        let mut key = 0usize;
        let mut overlapped: *mut OVERLAPPED = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; the port lives for the process.
        let ok = unsafe { GetQueuedCompletionStatus(port as HANDLE, &mut bytes, &mut key, &mut overlapped, wait) };
        // The packet carries the outcome: FALSE with an operation means that operation failed
        // (ERROR_MORE_DATA included), and the error is the thread's last error now. (Asking
        // GetOverlappedResult instead can say ERROR_IO_INCOMPLETE under Wine, which updates the
        // OVERLAPPED after queueing the packet.)
        let error = if ok == 0 { Some(io::Error::last_os_error()) } else { None };
        if overlapped.is_null() {
            // A wake-up, or the timeout of a linger deadline.
            continue;
        }
        if key == CALL_KEY {
            // SAFETY: packets with this key carry a `Box<Call>` from `run_on_driver`.
            let call = unsafe { Box::from_raw(overlapped.cast::<Call>()) };
            call();
            continue;
        }
        // SAFETY: every OVERLAPPED we queue is the first field of a boxed `Op` made by `submit`;
        // the packet hands it back to us exactly once.
        let mut op = unsafe { Box::from_raw(overlapped.cast::<Op>()) };
        let buf = std::mem::take(&mut op.buf);
        if let Some(done) = op.done.take() {
            done(Completed { bytes: bytes as usize, error, buf });
        }
    }
}

/// Cancels what lingered too long; returns how long to wait for the next packet (ms).
fn next_linger_wait() -> u32 {
    let Ok(mut l) = LINGERING.lock() else { return u32::MAX };
    if l.is_empty() {
        return u32::MAX; // INFINITE
    }
    let now = Instant::now();
    let (expired, left): (Lingering, Lingering) = l.drain(..).partition(|(deadline, ..)| *deadline <= now);
    *l = left;
    for (_, handle, keep) in expired {
        // SAFETY: `keep` holds the pipe, so the handle is still open here; cancelling all I/O
        // of a handle is always allowed. The handle may close when `keep` drops, after this.
        unsafe { CancelIoEx(handle as HANDLE, std::ptr::null()) };
        drop(keep);
    }
    match l.iter().map(|(d, ..)| *d).min() {
        Some(d) => d.saturating_duration_since(now).as_millis().clamp(1, u32::MAX as u128 - 1) as u32,
        None => u32::MAX,
    }
}

/// The pipe of `handle` finished its last write: it no longer needs to linger.
pub(super) fn linger_done(handle: HANDLE) {
    let removed: Lingering = match LINGERING.lock() {
        Ok(mut l) => {
            let (gone, left): (Lingering, Lingering) = l.drain(..).partition(|(_, h, _)| *h == handle as usize);
            *l = left;
            gone
        }
        Err(_) => return,
    };
    // The pipes (and maybe their handles) are released here, outside the lock.
    drop(removed);
}
