//! The blocking connection object: Python's `Connection` (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into`, `poll`, `close`, `fileno`, `send` / `recv`).
//!
//! It owns a [`Stream`] and a [`Link`] (the frame decoder and the [`Session`]): it moves bytes
//! and time, and the session decides what they mean (the handshake, a challenge met without a
//! key, what end of file, an I/O error or a bad length is, and every deadline), exactly as for
//! the reactor. Reads go through the decoder's buffer (one read may bring several small
//! messages, a large message is read straight into the buffer it is returned in), writes are one
//! vectored write of header and body.
//!
//! Deadlines: before each blocking read the socket's read timeout is set to the time left
//! until the earliest of the session's deadline and the caller's read timeout (re-set only when
//! what is set would overshoot by more than a small tolerance), and when the read comes back
//! empty-handed the session's `handle_timeout` decides. So a peer trickling a byte at a time
//! cannot stretch the handshake or a message beyond its deadline. `poll` and [`wait`] wait at
//! most until the session's next deadline too, and report a connection the session closed as
//! ready (its receive says why). Writes follow the session's write-stall clock as the reactor's
//! flushes do: the first write of a send does not wait, and each later one waits at most until
//! the session's write-stall deadline (or the caller's write timeout), and never more than a
//! slice of the limit, since a blocking write tells what the peer took only when it returns.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::{BufferTooShort, Error, Result};
use crate::transport::{RawDescriptor, Stream, deadline_after, wait_readable};
use crate::wire::frame::{Header, encode_frame};
use crate::wire::handshake::Dialect;
use crate::wire::link::{Link, Next, Ready};
use crate::wire::session::Session;

/// A connection to a peer: a Python `Connection` over a socket.
///
/// Messages are whole byte strings; their boundaries are kept. A connection is usable by one
/// thread at a time (`&mut self`); send it to another thread to hand it over, or split it
/// ([`Connection::into_split`]) so one thread sends while another receives.
///
/// ```
/// # fn main() -> mpconn::Result<()> {
/// let (mut a, mut b) = mpconn::pipe(true)?;        // a connected pair, as Python's Pipe()
/// a.send_bytes(b"raw bytes")?;
/// a.send(&("a tuple", 42))?;                        // pickled, as Python's conn.send
/// assert!(b.poll(Some(std::time::Duration::ZERO))?); // a message is waiting
/// assert_eq!(b.recv_bytes()?, b"raw bytes");
/// let (text, n): (String, i32) = b.recv()?;
/// assert_eq!((text.as_str(), n), ("a tuple", 42));
///
/// // One thread each. On Windows `pipe()` gives a named pipe, which cannot be split.
/// # #[cfg(not(windows))] {
/// let (mut reader, mut writer) = b.into_split()?;
/// let echo = std::thread::spawn(move || -> mpconn::Result<()> {
///     let m = reader.recv_bytes()?;
///     Ok(writer.send_bytes(&m)?)
/// });
/// a.send_bytes(b"ping")?;
/// assert_eq!(a.recv_bytes()?, b"ping");
/// echo.join().unwrap()?;
/// # }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connection {
    stream: Option<Stream>,
    /// The decoder and the protocol state: handshake, no-key rule, what end of file, errors and
    /// time mean.
    link: Link,
    /// True after a send timed out part way through a message: the peer's stream is out of
    /// step, so nothing more may be sent.
    send_broken: bool,
    /// The caller's limit on one whole receive (`set_read_timeout`).
    read_timeout: Option<Duration>,
    /// The caller's limit on one write without progress (`set_write_timeout`).
    write_timeout: Option<Duration>,
    /// The read timeout set on the socket now (`None`: none).
    socket_read_timeout: Option<Duration>,
    /// The write timeout set on the socket now (`None`: none).
    socket_write_timeout: Option<Duration>,
}

/// How far a read's socket timeout may reach past the deadline it stands for before it is set
/// again: 1/32 of the time left, at least 2 ms. So a connection with a deadline armed pays a
/// `setsockopt` about once per 1/32 of the time left, not one per read.
fn overshoot_tolerance(left: Duration) -> Duration {
    (left / 32).max(Duration::from_millis(2))
}

/// The longest one blocking write may wait: 1/8 of the shortest limit that progress restarts
/// (the session's write-stall and idle limits, the caller's write timeout), at least 10 ms;
/// `None` without a limit.
///
/// A blocking write reports the bytes the peer took only when it returns, and it returns only
/// when all is written or its socket timeout has run out (the kernel's timeout bounds the whole
/// call, not the wait since the last byte; and the kernel wakes a blocked writer only once much
/// of its buffer drained). So the face cannot know *when* within a wait the peer took bytes; it
/// counts them when the call returns, as the reactor counts progress when it sees the socket
/// writable. Bounding each wait to this slice bounds that uncertainty: a stall ends at most one
/// slice after its limit, and a slow peer that keeps taking bytes is never mistaken for a
/// stalled or idle one (each new write takes what room the peer made since; a split reader
/// half, which shares the idle clock, hears of the writer's progress as often).
fn write_wait_slice(limits: [Option<Duration>; 3]) -> Option<Duration> {
    limits.into_iter().flatten().min().map(|t| (t / 8).max(Duration::from_millis(10)))
}

/// The error for a connection whose stream is gone. A function, not a value: an `Error` built
/// eagerly for `ok_or` is built and dropped on every call (the drop is not optimized away:
/// about 40 instructions per send and per receive).
#[cold]
fn no_stream() -> Error {
    Error::Closed("")
}

/// The earlier of two optional instants (`None`: no limit).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Connection {
    pub(crate) fn new(stream: Stream, max_message_size: usize, session: Session) -> Connection {
        let mut conn = Connection {
            stream: Some(stream),
            link: Link::new(session, max_message_size),
            send_broken: false,
            read_timeout: None,
            write_timeout: None,
            socket_read_timeout: None,
            socket_write_timeout: None,
        };
        // Writes wait at most the write limits. Set whatever is tracked: a stream cloned for a
        // split writer carries the original's timeout. (The stream is fresh: an error here
        // shows again at the first use.)
        let usual = conn.usual_write_timeout(None);
        let _ = conn.set_socket_write_timeout(usual);
        conn
    }

    /// The socket's usual write timeout: `limit` (the handshake's time left) if given,
    /// otherwise the smaller of the caller's write timeout and the session's write-stall limit.
    fn usual_write_timeout(&self, limit: Option<Duration>) -> Option<Duration> {
        limit.or_else(|| {
            let stall = self.link.session().write_stall_limit();
            match (self.write_timeout, stall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
    }

    /// Sets the socket's usual write timeout ([`Connection::usual_write_timeout`]), touching the
    /// socket only when it differs from what is set. (A send that has to wait sets shorter ones
    /// while it waits, and puts this back.)
    fn apply_write_timeout(&mut self, limit: Option<Duration>) -> Result<()> {
        let t = self.usual_write_timeout(limit);
        if t.map(|t| t.max(Duration::from_millis(1))) == self.socket_write_timeout {
            return Ok(());
        }
        self.set_socket_write_timeout(t)
    }

    fn set_socket_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        let t = t.map(|t| t.max(Duration::from_millis(1)));
        if let Some(stream) = self.stream.as_mut() {
            stream.set_write_timeout(t)?;
            self.socket_write_timeout = t;
        }
        Ok(())
    }

    /// Makes the socket's write timeout stand for `left` (`None`: no limit), touching the socket
    /// only when what is set would end before half of `left` or after `left` plus the tolerance
    /// (as [`Connection::arm_read_timeout`]).
    fn arm_write_timeout(&mut self, left: Option<Duration>) -> Result<()> {
        let keep = match (self.socket_write_timeout, left) {
            (None, None) => true,
            (Some(set), Some(left)) => set >= left / 2 && set <= left + overshoot_tolerance(left),
            _ => false,
        };
        if keep { Ok(()) } else { self.set_socket_write_timeout(left) }
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        self.stream.as_mut().ok_or_else(no_stream)
    }

    fn stream_ref(&self) -> Result<&Stream> {
        self.stream.as_ref().ok_or_else(no_stream)
    }

    /// Sends one message: the header and `buf` in one vectored write (more when the peer takes
    /// it in parts).
    ///
    /// A peer that takes none of it for the session's write-stall timeout
    /// ([`crate::Timeouts::write_stall`]) closes the connection: this returns
    /// [`Error::Timeout`]`(`[`Timeout::WriteStall`](crate::Timeout::WriteStall)`)`, at most about 1/8 of the limit
    /// late, and receiving reports the close too; the idle timeout ([`crate::Timeouts::idle`])
    /// holds the same way ([`Timeout::Idle`](crate::Timeout::Idle)). With a shorter write timeout set
    /// ([`Connection::set_write_timeout`]), this returns [`Error::Timeout`] once that passes
    /// without progress, and receiving still works. Either way part of the message may have
    /// gone out, so the connection sends nothing more afterwards ([`Error::Closed`]).
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let mut slices = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        self.write_slices(&mut slices)
    }

    /// Writes whole frames, as the reactor flushes its queue: the session's write-stall clock
    /// starts when output is left waiting and restarts with each write that took bytes
    /// ([`crate::wire::session::Session::on_flush`]); each write waits at most until the
    /// session's write-stall deadline, the caller's write timeout (counted from the last
    /// progress) or a [`write_wait_slice`], whichever comes first. A passed write-stall deadline
    /// is the session's to decide (`handle_timeout`: it closes with
    /// [`crate::wire::session::CloseReason::WriteStallTimeout`]); the caller's timeout is
    /// [`Error::Timeout`] and leaves receiving alone; any other error closes the session with it.
    ///
    /// The first write does not wait (`MSG_DONTWAIT` where the transport offers it), so a send
    /// that fits touches no socket timeout; a send that has to wait sets the socket's write
    /// timeout for each wait and puts back the usual one (the write-stall limit or the
    /// caller's timeout, which a split writer half relies on) when it ends.
    fn write_slices(&mut self, slices: &mut [IoSlice<'_>]) -> Result<()> {
        if self.send_broken {
            return Err(Error::Closed(SEND_BROKEN));
        }
        self.stream()?;
        if slices.iter().all(|s| s.is_empty()) {
            return Ok(());
        }
        let usual = self.socket_write_timeout;
        let result = self.write_slices_waiting(slices);
        if self.socket_write_timeout != usual && self.stream.is_some() {
            // Best effort: a failure here shows at the next write.
            let _ = self.set_socket_write_timeout(usual);
        }
        result
    }

    /// One write that does not wait (`MSG_DONTWAIT` where the transport offers it), advancing
    /// `slices` past what it took: `Some(true)` when it took bytes, `Some(false)` when the
    /// socket is full, `None` when not offered, interrupted, or nothing taken. Any other error
    /// closes the session with it.
    fn write_without_waiting(&mut self, slices: &mut &mut [IoSlice<'_>]) -> Result<Option<bool>> {
        let stream = self.stream.as_mut().ok_or_else(no_stream)?;
        match stream.try_write_vectored(slices) {
            Ok(n) if n > 0 => {
                IoSlice::advance_slices(slices, n);
                Ok(Some(true))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(false)),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), io::ErrorKind::Unsupported | io::ErrorKind::Interrupted) => Ok(None),
            Err(e) => {
                self.link.io_error(e);
                Err(self.close_error())
            }
        }
    }

    fn write_slices_waiting(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<()> {
        // A first write that does not wait: a send that fits (the usual case) reads the clock at
        // most once, and not at all when the session keeps no time.
        let wrote = self.write_without_waiting(&mut slices)?;
        if slices.is_empty() {
            // All taken at once: with the time only if the session keeps time.
            self.link.wrote_all();
            return Ok(());
        }
        // The time of that progress (the call began a system call earlier, which is the same to
        // the session's milliseconds).
        let mut last_progress = Instant::now();
        if let Some(wrote) = wrote {
            self.link.session_mut().on_flush(last_progress, wrote, false);
        }
        let session = self.link.session();
        let slice = write_wait_slice([session.write_stall_limit(), session.idle_limit(), self.write_timeout]);
        loop {
            let now = Instant::now();
            // Every deadline of the session holds while a send waits (the write stall, and the
            // idle limit, which is the peer's while output waits on it).
            let due_at = self.link.session().poll_timeout();
            if due_at.is_some_and(|d| d <= now) {
                let due = self.link.session_mut().handle_timeout(now);
                if due.release_buffer {
                    self.link.decoder_mut().shrink_if_idle();
                }
                if due.try_write {
                    // The kernel wakes a blocked writer only once much of its buffer drained: a
                    // peer reading slowly may have taken bytes unnoticed. One write without
                    // waiting tells; the session decides at the next turn.
                    let wrote = self.write_without_waiting(&mut slices)? == Some(true);
                    if wrote {
                        last_progress = Instant::now();
                    }
                    let drained = slices.is_empty();
                    self.link.session_mut().on_flush(if wrote { last_progress } else { now }, wrote, drained);
                    if drained {
                        return Ok(());
                    }
                    continue;
                }
                if self.link.session().is_closed() {
                    self.send_broken = true;
                    log::debug!("send closed by a session deadline (write stall, idle, ...)");
                    return Err(self.close_error());
                }
                continue; // re-armed: the deadline moved
            }
            // A session closed already (end of file read, ...) arms no slot: the same limit,
            // counted here.
            let session = self.link.session();
            if session.is_closed()
                && let Some(stall) = session.write_stall_limit()
                && last_progress + stall <= now
            {
                self.send_broken = true;
                return Err(Error::Timeout(crate::Timeout::WriteStall));
            }
            let caller_at = self.write_timeout.map(|t| deadline_after(last_progress, t));
            if caller_at.is_some_and(|d| d <= now) {
                self.send_broken = true;
                log::debug!("send timed out (the caller's write timeout)");
                return Err(Error::Timeout(crate::Timeout::Write));
            }
            let closed_stall_at = match session.is_closed() {
                true => session.write_stall_limit().map(|l| last_progress + l),
                false => None,
            };
            let left = earliest(earliest(due_at, closed_stall_at), caller_at).map(|d| d - now);
            let wait = match (left, slice) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.arm_write_timeout(wait)?;
            let stream = self.stream.as_mut().ok_or_else(no_stream)?;
            match stream.write_vectored(slices) {
                Ok(0) => {
                    self.link.io_error(io::ErrorKind::WriteZero.into());
                    return Err(self.close_error());
                }
                Ok(n) => {
                    IoSlice::advance_slices(&mut slices, n);
                    let done = Instant::now();
                    last_progress = done;
                    let drained = slices.is_empty();
                    self.link.session_mut().on_flush(done, true, drained);
                    if drained {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // No byte taken for the whole wait: output has waited since the call began (a
                // no-op if it was waiting already).
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    self.link.session_mut().on_flush(now, false, false);
                }
                Err(e) => {
                    self.link.io_error(e);
                    return Err(self.close_error());
                }
            }
        }
    }

    /// Writes bytes that are already framed (several messages encoded with
    /// [`encode_frame`](crate::encode_frame)) in one write: batching for senders of many small
    /// messages. Bytes that are not whole frames corrupt the stream for the peer.
    pub fn send_frames(&mut self, framed: &[u8]) -> Result<()> {
        self.write_slices(&mut [IoSlice::new(framed)])
    }

    /// Receives one message. Blocks until a whole message arrived. Refuses a message longer than
    /// the connection's maximum message size.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_bytes_max(usize::MAX)
    }

    /// Receives one message of at most `maxlength` bytes (Python's `recv_bytes(maxlength)`).
    /// A longer message is an error ("bad message length") and leaves the connection unreadable,
    /// as in Python.
    pub fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>> {
        match self.recv_frame(maxlength)? {
            Some(message) => Ok(message),
            None => Err(Error::Closed("the handshake is not finished")),
        }
    }

    /// Receives one frame and hands it to the session: `Some` for a message, `None` for a
    /// handshake message the session took.
    fn recv_frame(&mut self, limit: usize) -> Result<Option<Vec<u8>>> {
        self.wait_for_message(limit)?;
        match self.link.take(limit) {
            Next::Message(m) => Ok(Some(m)),
            Next::Consumed => Ok(None),
            Next::Empty => Err(Error::Closed("decoder lost a message")),
            Next::Closed => Err(self.close_error()),
        }
    }

    /// The error for the session's close (the reason converted, once; then
    /// [`Error::Closed`]); the read side is unusable from now on.
    fn close_error(&mut self) -> Error {
        match self.link.close_reason() {
            Some(reason) => reason.into(),
            None => Error::Closed("the connection is not readable"),
        }
    }

    /// Receives one message into `buf` and returns its length (Python's `recv_bytes_into`; for an
    /// offset, pass `&mut buf[offset..]`). If the message does not fit, `buf` is untouched and the
    /// error is [`Error::BufferTooShort`] carrying the complete message; the connection stays usable.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.wait_for_message(usize::MAX)?;
        let msg = match self.link.next(usize::MAX) {
            Next::Message(m) => m,
            Next::Empty => return Err(Error::Closed("decoder lost a message")),
            Next::Consumed | Next::Closed => return Err(self.close_error()),
        };
        if msg.len() > buf.len() {
            return Err(BufferTooShort { message: msg.to_vec(), buffer_len: buf.len() }.into());
        }
        buf[..msg.len()].copy_from_slice(msg);
        Ok(msg.len())
    }

    /// Whether a message (or end of file) can be read without blocking, waiting up to `timeout`
    /// (`None`: without limit; Python's default `poll()` is `Some(Duration::ZERO)`). Sees messages
    /// already buffered.
    ///
    /// The session's deadlines (idle, partial message, handshake) apply while it waits: once one
    /// closes the connection this returns `true`, and the following receive returns the
    /// session's error (for example [`Error::Timeout`]`(`[`Timeout::Idle`](crate::Timeout::Idle)`)`), as on the async face.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if self.stream.is_none() {
            return Err(Error::Closed("the connection is not readable"));
        }
        // Closed by the peer or a deadline, delivered or not: a receive returns at once (with
        // the close's error), so there is something to read, as Python's `poll` says after its
        // `EOFError` and as `wait` reports it.
        if self.link.session().close_pending() || self.link.session().is_closing() {
            return Ok(true);
        }
        if self.link.decoder().has_frame() || self.link.eof_seen() {
            return Ok(true);
        }
        // Waiting for input ends the caller's pause after a delivery, as a receive does.
        self.link.resume();
        let caller_deadline = timeout.map(|t| deadline_after(Instant::now(), t));
        loop {
            let now = Instant::now();
            let session_deadline = self.link.session().poll_timeout();
            if session_deadline.is_some_and(|d| d <= now) {
                if self.link.session_mut().handle_timeout(now).release_buffer {
                    self.link.decoder_mut().shrink_if_idle();
                }
                if self.link.session().close_pending() {
                    return Ok(true);
                }
                continue; // re-armed for later
            }
            let wait = earliest(session_deadline, caller_deadline).map(|d| d.saturating_duration_since(now));
            if !wait_readable(&[self.stream_ref()?], wait)?.is_empty() {
                return Ok(true);
            }
            if caller_deadline.is_some_and(|d| d <= Instant::now()) {
                return Ok(false);
            }
        }
    }

    /// True when a whole message is already buffered, so `recv_bytes` will not block.
    pub fn has_buffered_message(&self) -> bool {
        self.link.decoder().has_frame()
    }

    /// Closes the connection. Further calls report [`Error::Closed`]. Dropping closes too.
    ///
    /// Nothing is queued to flush: every send returned only once the kernel took all of it
    /// (or failed), so [`Timeouts::close_flush`](crate::Timeouts) has nothing to bound here.
    /// What the kernel already took is the kernel's to deliver, as with Python's
    /// `Connection.close` (on Linux, unread input at the close makes it reset the connection
    /// instead).
    pub fn close(&mut self) -> Result<()> {
        if let Some(s) = self.stream.take() {
            // The peer may have gone already; closing is what matters.
            let _ = s.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// True once [`Connection::close`] was called.
    pub fn closed(&self) -> bool {
        self.stream.is_none()
    }

    /// True while messages can still be read.
    pub fn readable(&self) -> bool {
        self.stream.is_some() && !self.link.session().is_closing()
    }

    /// The socket's file descriptor (Python's `fileno()`; on Windows the pipe handle or socket).
    /// Use it to wait on the connection in another event loop; it stays owned by the connection.
    pub fn fileno(&self) -> Result<RawDescriptor> {
        Ok(self.stream_ref()?.raw_descriptor())
    }

    /// The peer's address (`ip:port` for TCP; for Unix sockets usually the empty path).
    pub fn peer_address(&self) -> Result<Address> {
        Ok(self.stream_ref()?.peer_address()?)
    }

    /// The handshake dialect of this connection (from the listener's choice or the challenge).
    pub fn dialect(&self) -> Dialect {
        self.link.session().dialect()
    }

    /// The limit on one received message.
    pub fn max_message_size(&self) -> usize {
        self.link.decoder().max_message_size()
    }

    /// Changes the limit on one received message.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.link.decoder_mut().set_max_message_size(max);
    }

    /// Sets a timeout for blocking receives (`None`: wait forever): each whole receive (every
    /// read it takes, however the message trickles in) returns within it, with an I/O error of
    /// kind `TimedOut` if no whole message arrived; a partial message stays buffered and the
    /// connection stays usable. The session's own deadlines (partial message, idle) apply
    /// besides.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Error::Config("a read timeout of zero (use None for no timeout)".into()));
        }
        self.stream()?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// Sets a timeout for blocking sends (`None`, the default: wait forever), as std's
    /// `TcpStream::set_write_timeout`. A send that makes no progress for this long (the peer
    /// does not read, its buffers are full) fails with [`Error::Timeout`] instead of hanging;
    /// since part of the message may be out, later sends are refused ([`Error::Closed`]).
    /// A zero duration is an error, as in std. On Windows named pipes the timeout bounds the
    /// wait for room in the pipe's outgoing queue (`OUTBOUND_HIGH` bytes, see the pipe
    /// transport); a message already queued goes out in the background.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Error::Config("a write timeout of zero (use None for no timeout)".into()));
        }
        self.stream()?;
        self.write_timeout = timeout;
        self.apply_write_timeout(None)
    }

    /// Splits the connection into a receiving and a sending half that can live on two threads:
    /// one thread sends while another receives, as with std's `TcpStream::try_clone`. The
    /// reader keeps the connection's buffer and state; the writer sends on a duplicate of the
    /// socket. Both must be dropped for the socket to close; [`ConnectionWriter::close`] shuts
    /// the sending direction (the peer reads end of file).
    ///
    /// There is no `try_clone`: two clones could both receive, and two readers of one stream
    /// would each take parts of the other's messages. The halves make that impossible.
    /// A Windows named-pipe connection cannot be split (an `Unsupported` I/O error); TCP can.
    ///
    /// Both halves keep the connection's deadlines: the writer's write stall, the reader's
    /// partial message and idle, where idle still means no traffic either way (the writer's
    /// sends keep the reader alive).
    pub fn into_split(mut self) -> Result<(ConnectionReader, ConnectionWriter)> {
        let stream = self.stream.as_ref().ok_or_else(no_stream)?.try_clone()?;
        let session = self.link.session_mut().split_sender();
        let mut writer = Connection::new(stream, self.max_message_size(), session);
        writer.send_broken = self.send_broken;
        writer.write_timeout = self.write_timeout;
        writer.apply_write_timeout(None)?;
        // The reader never writes: a send through it would race the writer's.
        self.send_broken = true;
        Ok((ConnectionReader { conn: self }, ConnectionWriter { conn: writer }))
    }

    /// The pickle protocol `send` writes: what the handshake proved the peer reads (4 for
    /// CPython 3.12+ and Red Hat's Python 3; 2 where it may be a Python 2, and without a key).
    pub fn pickle_protocol(&self) -> u8 {
        self.link.session().pickle_protocol()
    }

    /// Chooses the pickle protocol `send` writes (2 to 5), for those who know their peer.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.link.session_mut().set_pickle_protocol(protocol);
    }

    /// Reads until a whole message (within `limit`) is buffered. End of file, a refused length,
    /// an I/O error and a passed session deadline close the session (the error says what it
    /// decided); the caller's read timeout returns a `TimedOut` I/O error and the connection
    /// stays usable.
    fn wait_for_message(&mut self, limit: usize) -> Result<()> {
        let mut caller_deadline: Option<Instant> = None;
        let mut first = true;
        loop {
            match self.link.poll_ready(limit) {
                Ready::Frame => return Ok(()),
                Ready::Closed => return Err(self.close_error()),
                Ready::Read => {}
            }
            if self.stream.is_none() {
                return Err(Error::Closed(""));
            }
            let left = if self.read_timeout.is_none() && !self.link.keeps_time() {
                // No read timeout, and nothing looks at the time (no deadline armed, no idle
                // clock, no incomplete message: `Session::keeps_time`): the wait reads no clock.
                self.link.resume();
                None
            } else {
                // One clock read for the resume and the deadlines.
                let now = Instant::now();
                self.link.resume_at(now);
                let started = std::mem::take(&mut first);
                if started {
                    caller_deadline = self.read_timeout.map(|t| deadline_after(now, t));
                }
                // Only the deadlines that something keeps (see `Session::keeps_time`).
                let session_deadline = match self.link.keeps_time() {
                    true => self.link.session().poll_timeout(),
                    false => None,
                };
                if session_deadline.is_some_and(|d| d <= now) {
                    if self.link.session_mut().handle_timeout(now).release_buffer {
                        self.link.decoder_mut().shrink_if_idle();
                    }
                    continue;
                }
                if caller_deadline.is_some_and(|d| d <= now) {
                    return Err(
                        io::Error::new(io::ErrorKind::TimedOut, "no whole message within the read timeout").into()
                    );
                }
                match session_deadline {
                    // The caller's timeout alone, just started: all of it is left.
                    None if started => self.read_timeout,
                    _ => earliest(session_deadline, caller_deadline).map(|d| d - now),
                }
            };
            match self.stream_ref()?.poll_readable(left) {
                // Waited in poll(2) (`Stream::poll_readable`): the read takes what is there.
                Some(Ok(true)) => {}
                // The time ran out (or a signal came): the loop looks at the deadlines again.
                Some(Ok(false)) => continue,
                Some(Err(e)) => {
                    self.link.io_error(e);
                    return Err(self.close_error());
                }
                None => self.arm_read_timeout(left)?,
            }
            let stream = self.stream.as_mut().ok_or_else(no_stream)?;
            match io::Read::read(stream, self.link.read_buf()) {
                Ok(n) => self.link.filled(n),
                // The socket's timeout, or a signal: the loop looks at the deadlines again (a
                // read retried after a signal would wait the whole socket timeout anew, so
                // signals more frequent than it kept every deadline from being seen).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.link.io_error(e);
                    return Err(self.close_error());
                }
            }
        }
    }

    /// Makes the socket's read timeout stand for `left` (`None`: no limit), touching the socket
    /// only when what is set would end before half of `left` or after `left` plus the tolerance.
    fn arm_read_timeout(&mut self, left: Option<Duration>) -> Result<()> {
        let keep = match (self.socket_read_timeout, left) {
            (None, None) => true,
            (Some(set), Some(left)) => set >= left / 2 && set <= left + overshoot_tolerance(left),
            _ => false,
        };
        if !keep {
            let t = left.map(|l| l.max(Duration::from_millis(1)));
            self.stream()?.set_read_timeout(t)?;
            self.socket_read_timeout = t;
        }
        Ok(())
    }

    /// Runs the session's handshake to completion over this connection, within the session's
    /// handshake deadline (the whole handshake's: every read and write waits only for the time
    /// left); on failure the pending `#FAILURE#` is sent, as Python does.
    pub(crate) fn handshake(&mut self) -> Result<()> {
        let result = self.drive_handshake();
        if result.is_err() {
            // The peer may be gone.
            while let Some(m) = self.link.session_mut().poll_transmit() {
                let header = Header::for_len(m.len());
                let mut slices = [IoSlice::new(header.as_bytes()), IoSlice::new(&m)];
                let Some(stream) = self.stream.as_mut() else { break };
                if write_message(stream, &mut self.send_broken, &mut slices).is_err() {
                    break;
                }
            }
        }
        self.apply_write_timeout(None)?;
        result
    }

    fn drive_handshake(&mut self) -> Result<()> {
        let mut pending = Vec::new();
        loop {
            // Everything the session has to say goes out in one write (a client's answer and
            // its early challenge are two messages; so are a listener's #WELCOME# and its
            // answer to an early challenge that came in the same read: while another handshake
            // frame is buffered, its reply joins the pending bytes first).
            while let Some(m) = self.link.session_mut().poll_transmit() {
                encode_frame(&m, &mut pending);
            }
            if !pending.is_empty() && !self.link.handshake_frame_buffered() {
                self.send_handshake_bytes(&pending)?;
                pending.clear();
                if self.link.session().wants_prompt_ack()
                    && let Some(stream) = self.stream.as_ref()
                {
                    stream.acknowledge_promptly();
                }
            }
            if self.link.session().is_open() {
                // Drop the Opened event; nothing else waits.
                while self.link.session_mut().poll_event().is_some() {}
                return Ok(());
            }
            if let Err(e) = self.recv_frame(usize::MAX) {
                // Replies held for the buffered frame that failed leave first, as they would
                // have without the holding (and as the reactor writes them): a client whose
                // right answer came with a bad challenge still reads #WELCOME#, as from
                // CPython. Best effort: the handshake's error is what counts.
                if !pending.is_empty() {
                    let _ = self.send_handshake_bytes(&pending);
                }
                return Err(e);
            }
        }
    }

    /// Writes handshake bytes whole, within the session's handshake deadline. They almost always
    /// fit the socket at once: then no socket timeout is touched (two more system calls).
    fn send_handshake_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut all = [IoSlice::new(bytes)];
        let mut slices = &mut all[..];
        let stream = self.stream.as_mut().ok_or_else(no_stream)?;
        match stream.try_write_vectored(slices) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Unsupported | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.link.io_error(e);
                return Err(self.close_error());
            }
        }
        if slices.is_empty() {
            return Ok(());
        }
        let left = self.link.session().poll_timeout().map(|d| d.saturating_duration_since(Instant::now()));
        self.apply_write_timeout(left)?;
        let stream = self.stream.as_mut().ok_or_else(no_stream)?;
        if let Err(e) = stream.write_all_vectored(slices) {
            // Out of time: the session's deadline decides; any other error is the session's too.
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                let _ = self.link.session_mut().handle_timeout(Instant::now());
            }
            self.link.io_error(e);
            return Err(self.close_error());
        }
        Ok(())
    }
}

/// Why a connection refuses to send.
const SEND_BROKEN: &str = "a send timed out or the connection was split: this side cannot send";

/// Writes one message (or several framed ones) whole; a write timeout becomes
/// [`Error::Timeout`] and refuses later sends, since part of the message may be out.
fn write_message(stream: &mut Stream, send_broken: &mut bool, slices: &mut [IoSlice<'_>]) -> Result<()> {
    if *send_broken {
        return Err(Error::Closed(SEND_BROKEN));
    }
    match stream.write_all_vectored(slices) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            *send_broken = true;
            log::debug!("send timed out: {e}");
            Err(Error::Timeout(crate::Timeout::Write))
        }
        Err(e) => Err(e.into()),
    }
}

/// The receiving half of a [`Connection`] ([`Connection::into_split`]): every way to receive,
/// none to send. Dropping it closes its descriptor; the socket stays open while the
/// [`ConnectionWriter`] lives.
#[derive(Debug)]
pub struct ConnectionReader {
    conn: Connection,
}

impl ConnectionReader {
    /// Receives one message ([`Connection::recv_bytes`]).
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.conn.recv_bytes()
    }

    /// Receives one message of at most `maxlength` bytes ([`Connection::recv_bytes_max`]).
    pub fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>> {
        self.conn.recv_bytes_max(maxlength)
    }

    /// Receives one message into `buf` ([`Connection::recv_bytes_into`]).
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.conn.recv_bytes_into(buf)
    }

    /// Whether a message can be read without blocking, waiting up to `timeout`
    /// ([`Connection::poll`]).
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.conn.poll(timeout)
    }

    /// Sets a timeout for blocking receives ([`Connection::set_read_timeout`]). (The timeouts
    /// are the socket's, shared by both halves' descriptors; a read timeout only affects reads,
    /// which only this half does, and the writer's write timeout only writes.)
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.conn.set_read_timeout(timeout)
    }

    /// True while messages can still be read.
    pub fn readable(&self) -> bool {
        self.conn.readable()
    }

    /// The peer's address.
    pub fn peer_address(&self) -> Result<Address> {
        self.conn.peer_address()
    }

    /// The descriptor this half reads from.
    pub fn fileno(&self) -> Result<RawDescriptor> {
        self.conn.fileno()
    }

    /// Stops receiving: shuts the reading direction and closes this half's descriptor. The
    /// writer can still send.
    pub fn close(&mut self) -> Result<()> {
        if let Some(s) = self.conn.stream.take() {
            let _ = s.shutdown(Shutdown::Read);
        }
        Ok(())
    }
}

/// The sending half of a [`Connection`] ([`Connection::into_split`]): every way to send, on a
/// duplicate of the socket (a connection that never reads, with the session's sending half).
/// Dropping it closes its descriptor without shutting anything down.
#[derive(Debug)]
pub struct ConnectionWriter {
    conn: Connection,
}

impl ConnectionWriter {
    /// Sends one message ([`Connection::send_bytes`]; the same write-timeout and write-stall
    /// rules).
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.conn.send_bytes(buf)
    }

    /// Writes bytes that are already framed ([`Connection::send_frames`]).
    pub fn send_frames(&mut self, framed: &[u8]) -> Result<()> {
        self.conn.send_frames(framed)
    }

    /// Sets a timeout for blocking sends ([`Connection::set_write_timeout`]); the write-stall
    /// limit still applies when shorter.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.conn.set_write_timeout(timeout)
    }

    /// The pickle protocol `send` writes ([`Connection::pickle_protocol`]).
    pub fn pickle_protocol(&self) -> u8 {
        self.conn.pickle_protocol()
    }

    /// Chooses the pickle protocol `send` writes.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.conn.set_pickle_protocol(protocol);
    }

    /// Stops sending: shuts the sending direction (the peer reads end of file once it has read
    /// what was sent) and closes this half's descriptor. The reader can still receive.
    pub fn close(&mut self) -> Result<()> {
        if let Some(s) = self.conn.stream.take() {
            let _ = s.shutdown(Shutdown::Write);
        }
        Ok(())
    }
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl AsRawFd for Connection {
    /// # Panics
    /// If the connection was closed; use [`Connection::fileno`] for a checked version.
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_ref().map(AsRawFd::as_raw_fd).expect("as_raw_fd on a closed Connection")
    }
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl AsFd for Connection {
    /// # Panics
    /// If the connection was closed.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_ref().map(AsFd::as_fd).expect("as_fd on a closed Connection")
    }
}

/// Waits until one of `connections` has a message (or end of file) to read, or `timeout` passes
/// (`None`: no limit). Returns the indexes of the ready ones (Python's
/// `multiprocessing.connection.wait`), every one that is ready when it returns; empty on
/// timeout. A connection closed on this side is reported ready (reading it gives
/// [`Error::Closed`]), where Python raises `OSError` ("handle is closed").
///
/// The connections' session deadlines apply: a connection whose session would close by one
/// (idle, partial message, handshake; [`Session::close_deadline`]) is reported ready once it
/// has passed, and receiving from it returns the session's error ([`Error::Timeout`]). As for
/// a receive, the time between a delivered message and the next receive, `poll` or `wait` is
/// the caller's own pause; the time spent here waiting for a connection is its peer's. So a
/// peer that stops halfway through a message is reported ready at the partial-message limit
/// counted from when the caller began waiting for it (not never), and the receive that
/// follows returns [`Error::Timeout`] at once.
pub fn wait(connections: &[&Connection], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let began = Instant::now();
    let caller_deadline = timeout.map(|t| deadline_after(began, t));
    let _waiting = Waiting::begin(connections, began);
    wait_from(connections, began, caller_deadline)
}

/// The connections [`wait`] waits on, told when it begins and (dropped, on every return)
/// when it ends: the time between is their peers' ([`Link::begin_wait`]).
struct Waiting<'a, 'c>(&'a [&'c Connection]);

impl<'a, 'c> Waiting<'a, 'c> {
    fn begin(connections: &'a [&'c Connection], now: Instant) -> Self {
        for c in connections {
            c.link.begin_wait(now);
        }
        Waiting(connections)
    }
}

impl Drop for Waiting<'_, '_> {
    fn drop(&mut self) {
        let now = Instant::now();
        for c in self.0 {
            c.link.end_wait(now);
        }
    }
}

/// [`wait`]'s loop, from `began` until `caller_deadline`.
fn wait_from(connections: &[&Connection], began: Instant, caller_deadline: Option<Instant>) -> Result<Vec<usize>> {
    loop {
        let now = Instant::now();
        let mut next_close: Option<Instant> = None;
        let mut ready = Vec::new();
        for (i, c) in connections.iter().enumerate() {
            let session = c.link.session();
            let close_at = c.link.close_deadline_waiting(began);
            if c.closed()
                || c.has_buffered_message()
                || c.link.eof_seen()
                || session.close_pending()
                || close_at.is_some_and(|d| d <= now)
            {
                ready.push(i);
            }
            next_close = earliest(next_close, close_at);
        }
        if !ready.is_empty() {
            // Ready without waiting: the others that are ready too (bytes, end of file or an
            // error in their sockets) belong to the answer as well, as in Python's.
            let mut is_ready = vec![false; connections.len()];
            ready.iter().for_each(|&i| is_ready[i] = true);
            let rest: Vec<(usize, &Stream)> = connections
                .iter()
                .enumerate()
                .filter(|(i, _)| !is_ready[*i])
                .filter_map(|(i, c)| c.stream.as_ref().map(|s| (i, s)))
                .collect();
            if !rest.is_empty() {
                let streams: Vec<&Stream> = rest.iter().map(|(_, s)| *s).collect();
                ready.extend(wait_readable(&streams, Some(Duration::ZERO))?.into_iter().map(|k| rest[k].0));
                ready.sort_unstable();
            }
            return Ok(ready);
        }
        // Every connection has a stream here (a closed one was ready above).
        let streams: Vec<&Stream> = connections.iter().filter_map(|c| c.stream.as_ref()).collect();
        let wait = earliest(next_close, caller_deadline).map(|d| d.saturating_duration_since(now));
        let ready = wait_readable(&streams, wait)?;
        if !ready.is_empty() || caller_deadline.is_some_and(|d| d <= Instant::now()) {
            return Ok(ready);
        }
    }
}

/// A connected pair of connections (Python's `Pipe`). With `duplex` false the first can only
/// receive and the second only send.
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (a, b) = Stream::pair()?;
    if !duplex {
        a.shutdown(Shutdown::Write)?;
        b.shutdown(Shutdown::Read)?;
    }
    let max = crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
    let now = Instant::now();
    Ok((Connection::new(a, max, Session::established(now)), Connection::new(b, max, Session::established(now))))
}

/// Python objects: pickled with [`crate::pickle`] (feature `pickle`).
#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
impl Connection {
    /// Sends a Rust value as a pickle (Python's `send(obj)`), with this connection's protocol.
    pub fn send<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let bytes = crate::pickle::dumps(value, self.pickle_protocol())?;
        self.send_bytes(&bytes)
    }

    /// Sends a dynamic [`Value`](crate::pickle::Value) as a pickle.
    pub fn send_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        let bytes = crate::pickle::dumps_value(value, self.pickle_protocol())?;
        self.send_bytes(&bytes)
    }

    /// Receives a pickle into a Rust type (Python's `recv()`).
    pub fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        let bytes = self.recv_bytes()?;
        Ok(crate::pickle::loads(&bytes)?)
    }

    /// Receives a pickle as a dynamic [`Value`](crate::pickle::Value).
    pub fn recv_value(&mut self) -> Result<crate::pickle::Value> {
        let bytes = self.recv_bytes()?;
        Ok(crate::pickle::loads_value(&bytes)?)
    }
}

/// Python objects on the halves: pickled with [`crate::pickle`] (feature `pickle`).
#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
impl ConnectionWriter {
    /// Sends a Rust value as a pickle ([`Connection::send`]).
    pub fn send<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        self.conn.send(value)
    }

    /// Sends a dynamic [`Value`](crate::pickle::Value) as a pickle.
    pub fn send_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.conn.send_value(value)
    }
}

#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
impl ConnectionReader {
    /// Receives a pickle into a Rust type ([`Connection::recv`]).
    pub fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        self.conn.recv()
    }

    /// Receives a pickle as a dynamic [`Value`](crate::pickle::Value).
    pub fn recv_value(&mut self) -> Result<crate::pickle::Value> {
        self.conn.recv_value()
    }
}
