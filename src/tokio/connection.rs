//! The async connection: Python's `Connection` as futures (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into`, `poll`, `close`, `send` / `recv`).
//!
//! Like the blocking connection it owns a [`Link`] (the frame decoder and the [`Session`]) and
//! only moves bytes and time: the session decides what a frame, end of file, an I/O error or a
//! deadline means. Its deadlines (handshake, partial message, idle, write stall) are the
//! session's table, as on the reactor: a receive or a send that waits also waits on a `Sleep`
//! until the session's `poll_timeout`, and when that passes `handle_timeout` decides.
//! Everything is written as `poll_*` functions over state kept in the connection, so the futures
//! are thin and a dropped receive loses nothing (see the cancellation notes on each method).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::time::Sleep;

use crate::address::Address;
use crate::error::{BufferTooShort, Error, Result};
use crate::transport::RawDescriptor;
use crate::transport::async_io::AsyncStream;
use crate::wire::frame::{Header, encode_frame};
use crate::wire::handshake::Dialect;
use crate::wire::link::{Link, Next, Ready};
use crate::wire::session::Session;

/// Messages up to this size are copied into the connection's write buffer with their header (one
/// `write(2)`, and a dropped send cannot tear the frame); larger ones are written straight from
/// the caller's buffer with a vectored write.
pub const SMALL_MESSAGE: usize = 64 * 1024;

/// Fed messages are flushed once this many bytes are waiting (the Sink's `poll_ready`).
const FEED_HIGH_WATER: usize = 256 * 1024;

/// The bytes a connection reads and writes (together) before it returns to the runtime: once
/// a receive, send, flush, Stream or Sink has moved this many since it last returned `Pending`,
/// it yields (the task is woken again only after the runtime has run the other ready tasks and
/// polled its I/O driver), and no single read or write asks for more. The reactor's
/// per-connection `read_budget` figure. Without it, tokio's cooperative budget (128 I/O
/// operations per task poll) let one bulk streamer move up to 8 MiB (128 reads of 64 KiB) before
/// another task of a current-thread runtime ran: a good client's round trips took 70-440 ms at
/// p50 behind four 256 KiB streamers (`tests/attacks.rs`, `bulk_streamers`).
pub const FAIR_SLICE: usize = 256 * 1024;

/// How long a `#FAILURE#` may take to go out after a failed handshake.
const FAILURE_SEND_LIMIT: Duration = Duration::from_secs(1);

const TORN: &str = "an earlier send_bytes was cancelled after writing part of a large message; \
                    the stream cannot carry further messages";

const SEND_FAILED: &str = "an earlier send failed (the connection was reset, or the peer took none of \
                           our output for the write-stall timeout): nothing more can be sent";

/// What one read did.
enum Filled {
    /// Bytes were read (none: end of file) and the link was told; `drained` when fewer came
    /// than asked for (the socket holds no more now).
    Bytes { drained: bool },
    /// The read failed; the session has the error and is closed.
    Failed,
}

/// The sleep for the session's earliest deadline, and that deadline.
type Timer = Option<(Instant, Pin<Box<Sleep>>)>;

/// Gives the runtime a turn: the task is woken again only after the runtime has run its other
/// ready tasks and polled its I/O driver (`tokio::task::yield_now`'s deferred wake; outside a
/// runtime the waker is woken at once). Always `Pending`.
fn yield_to_runtime<T>(cx: &mut Context<'_>) -> Poll<T> {
    let yielded = std::pin::pin!(::tokio::task::yield_now()).poll(cx);
    debug_assert!(yielded.is_pending(), "a fresh yield_now is pending on its first poll");
    Poll::Pending
}

/// What ended [`poll_session_deadline`].
#[derive(Debug, PartialEq, Eq)]
enum Passed {
    /// The session has closed.
    Closed,
    /// The session asks for one write before it decides (the peer may be reading slowly,
    /// unreported: see `Session::handle_timeout`); only for a caller that can write.
    TryWrite,
}

/// Waits for the session's earliest deadline; each time it passes, the session's
/// `handle_timeout` decides (a slot whose condition no longer holds re-arms). Ready once the
/// session has closed, or when it asks for a write and `writer` can give it one; pending while
/// it stays open (the task is woken at the next deadline). A caller that cannot write lets the
/// session decide without one (its slot is due at once: the next turn closes).
fn poll_session_deadline(link: &mut Link, timer: &mut Timer, cx: &mut Context<'_>, writer: bool) -> Poll<Passed> {
    loop {
        if link.session().is_closing() {
            return Poll::Ready(Passed::Closed);
        }
        let Some(at) = link.session().poll_timeout() else {
            *timer = None;
            return Poll::Pending;
        };
        if !matches!(timer, Some((set, _)) if *set == at) {
            *timer = Some((at, Box::pin(::tokio::time::sleep_until(at.into()))));
        }
        let Some((_, sleep)) = timer.as_mut() else { return Poll::Pending };
        ready!(sleep.as_mut().poll(cx));
        let due = link.session_mut().handle_timeout(Instant::now());
        if due.release_buffer {
            link.decoder_mut().shrink_if_idle();
        }
        if due.try_write && writer && !link.session().is_closing() {
            return Poll::Ready(Passed::TryWrite);
        }
    }
}

/// An async connection to a peer: a Python `Connection` over a socket, on tokio.
///
/// Messages are whole byte strings; their boundaries are kept. Methods take `&mut self`: one task
/// uses a connection at a time; [`Connection::into_split`] gives a receiving and a sending half
/// for two tasks.
///
/// ```
/// use std::time::Duration;
/// use futures_util::{SinkExt, StreamExt};
/// use mpconn::tokio::{Client, Listener};
/// # fn main() -> mpconn::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// let mut listener = Listener::builder().address("127.0.0.1:0").authkey("key").bind()?;
/// let address = listener.address().clone();
/// let peer = tokio::spawn(async move {
///     let mut conn = Client::new(address).authkey("key").connect().await?;
///     while let Some(message) = conn.next().await {  // a Stream of messages
///         let message = message?;
///         conn.send_bytes(&message).await?;           // echo
///     }
///     Ok::<_, mpconn::Error>(())
/// });
/// let mut conn = listener.accept().await?;
/// conn.send(&vec![1, 2, 3]).await?;                  // pickled, as Python's conn.send
/// let echoed: Vec<i32> = conn.recv().await?;
/// assert_eq!(echoed, [1, 2, 3]);
/// conn.feed(b"one".as_slice()).await?;               // a Sink: feed many, flush once
/// conn.feed(b"two".as_slice()).await?;
/// conn.flush().await?;
/// // Receiving is cancel-safe: a timeout loses no message.
/// let first = tokio::time::timeout(Duration::from_secs(10), conn.recv_bytes()).await;
/// assert_eq!(first.expect("in time")?, b"one");
/// assert_eq!(conn.recv_bytes().await?, b"two");
/// conn.close().await?;
/// peer.await.expect("peer task")?;
/// # Ok(()) })
/// # }
/// ```
///
/// # Cancellation
/// * [`Connection::recv_bytes`], [`Connection::recv_bytes_max`], [`Connection::recv_bytes_into`],
///   [`Connection::recv_bytes_with`], [`Connection::recv_batch`], `recv`, [`Connection::poll`] and the [`Stream`](futures_core::Stream) implementation are
///   **cancel-safe**: bytes already read stay in the connection's buffer, so dropping the future
///   (a `select!` branch that lost, a `timeout`) loses no message and tears none.
/// * [`Connection::send_bytes`] of a message up to 64 KiB, `feed_bytes` and
///   [`Connection::flush`] are cancel-safe in the sense that a frame is never torn: a dropped
///   send leaves either nothing or the whole frame queued, and what is queued is written before
///   anything else, by the next send or flush. A send first waits for what earlier sends left,
///   so sends abandoned one after another (a `timeout` around each, to a peer that does not
///   read) leave at most one message queued.
/// * A send to a peer that takes nothing waits until the session's write-stall deadline (60 s
///   by default, [`Timeouts::write_stall`](crate::Timeouts)) closes the
///   connection, as on the reactor; bound it further with `tokio::time::timeout` (for a small
///   message that leaves it queued or not sent, for a large one it may tear the stream as said
///   below).
/// * [`Connection::send_bytes`] of a larger message is **not** cancel-safe: it writes from your
///   buffer, and a send dropped after part of the frame went out leaves the peer mid-message.
///   The connection then refuses every further send with [`Error::Closed`] rather than corrupt
///   the stream; receiving still works.
#[derive(Debug)]
pub struct Connection {
    io: Option<AsyncStream>,
    /// The decoder and the protocol state: handshake, no-key rule, what end of file, errors and
    /// time mean.
    link: Link,
    /// The sleep for the session's earliest deadline, and that deadline.
    timer: Timer,
    /// Framed bytes waiting to be written: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// A large send was dropped mid-frame: no more sends.
    torn: bool,
    /// A write failed or stalled past the deadline: no more sends.
    send_failed: bool,
    /// The Stream implementation has yielded its end.
    stream_done: bool,
    /// The sending half of a split: never reads.
    send_only: bool,
    /// The listener's memory budget this connection's input counts against, if any.
    budget: Option<super::budget::BudgetSlot>,
    /// Bytes read and written since a poll of this connection last returned `Pending`: at
    /// [`FAIR_SLICE`] the next read or write yields to the runtime first.
    moved: usize,
}

impl Connection {
    pub(crate) fn new(io: AsyncStream, max_message_size: usize, session: Session) -> Connection {
        // The link's read block is the session's: while authenticating, just big enough for a
        // handshake message, so a connection that never authenticates holds bytes, not 64 KiB.
        Connection {
            io: Some(io),
            link: Link::new(session, max_message_size),
            timer: None,
            out: Vec::new(),
            out_pos: 0,
            torn: false,
            send_failed: false,
            stream_done: false,
            send_only: false,
            budget: None,
            moved: 0,
        }
    }

    /// Counts this connection's input against a listener's shared memory budget.
    pub(crate) fn set_budget(&mut self, slot: super::budget::BudgetSlot) {
        self.budget = Some(slot);
    }

    /// After a read or a message taken: tells the budget what the decoder holds now.
    fn budget_report(&mut self) {
        if let Some(b) = &mut self.budget {
            b.report(self.link.decoder_mut());
        }
    }

    fn io_ref(&self) -> Result<&AsyncStream> {
        self.io.as_ref().ok_or(Error::Closed(""))
    }

    /// The socket, `None` once closed (for the descriptor traits, Unix only).
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn async_stream(&self) -> Option<&AsyncStream> {
        self.io.as_ref()
    }

    /// The sending half of [`Connection::into_split`]: a connection on a duplicate of the socket
    /// that only sends, taking over what this one had queued and its torn flag, with the
    /// session's sending half ([`Session::split_sender`]: the same deadlines, one idle clock for
    /// both halves). This one goes on receiving.
    pub(crate) fn split_writer(&mut self) -> Result<Connection> {
        let io = self.io_ref()?.try_clone()?;
        let session = self.link.session_mut().split_sender();
        let mut writer = Connection::new(io, self.max_message_size(), session);
        writer.send_only = true;
        writer.stream_done = true;
        writer.torn = self.torn;
        writer.out = std::mem::take(&mut self.out);
        writer.out_pos = std::mem::replace(&mut self.out_pos, 0);
        Ok(writer)
    }

    // ----- fairness -----

    /// Before a read or a write: `Pending` (after arranging to be woken once the runtime has
    /// run its other tasks) when this connection has moved a fair slice since it last returned
    /// `Pending`; the next poll starts a new slice.
    fn poll_fair_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.moved < FAIR_SLICE {
            return Poll::Ready(());
        }
        self.moved = 0;
        log::trace!("yielding to the runtime after a fair slice ({FAIR_SLICE} bytes)");
        yield_to_runtime(cx)
    }

    /// The transport returned `Pending`: the task waits anyway, so a new slice starts.
    fn waited(&mut self) {
        self.moved = 0;
    }

    // ----- sending -----

    /// Sends one message. Small messages (up to 64 KiB) go out as one write of header
    /// and body; larger ones as vectored writes from `buf`. See the cancellation notes on
    /// [`Connection`].
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check_send()?;
        if buf.len() <= SMALL_MESSAGE {
            // What earlier (cancelled) sends left queued goes first: a send cancelled while
            // waiting here queued nothing, so abandoned sends to a peer that does not read
            // leave at most one message queued, never a growing pile.
            if self.queued_len() > 0 {
                self.flush().await?;
            }
            self.queue_frame(buf);
            return self.flush().await;
        }
        self.flush().await?;
        self.write_large(buf).await
    }

    /// Queues one message without writing it (batching for senders of many small messages);
    /// [`Connection::flush`] or the next send writes everything queued in as few writes as the
    /// socket takes. Nothing bounds this queue but the caller: flush when
    /// [`Connection::queued_len`] grows (the sends that write wait for the peer instead).
    pub fn feed_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check_send()?;
        self.queue_frame(buf);
        Ok(())
    }

    /// Writes every queued message. Cancel-safe: what is not written stays queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    /// The number of queued bytes not yet written.
    pub fn queued_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn check_send(&self) -> Result<()> {
        if self.io.is_none() {
            return Err(Error::Closed(""));
        }
        if self.torn {
            return Err(Error::Closed(TORN));
        }
        if self.send_failed {
            return Err(Error::Closed(SEND_FAILED));
        }
        Ok(())
    }

    fn queue_frame(&mut self, buf: &[u8]) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        encode_frame(buf, &mut self.out);
    }

    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut wrote = false;
        while self.out_pos < self.out.len() {
            if self.poll_fair_turn(cx).is_pending() {
                return self.yielded_mid_write(wrote);
            }
            let io = self.io.as_mut().ok_or(Error::Closed(""))?;
            let end = self.out.len().min(self.out_pos + FAIR_SLICE);
            match Pin::new(io).poll_write(cx, &self.out[self.out_pos..end]) {
                Poll::Pending => {
                    self.waited();
                    ready!(self.poll_stalled(cx, wrote))?;
                    // Reported by the stall above; what the asked-for write moves is new.
                    let pending = [IoSlice::new(&self.out[self.out_pos..end])];
                    let n = match Self::try_write_now(self.io.as_ref(), &pending) {
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(self.write_failed(e))),
                    };
                    self.out_pos += n;
                    self.moved += n;
                    wrote = n > 0;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.write_failed(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.moved += n;
                    wrote = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.write_failed(e))),
            }
        }
        if wrote {
            self.link.wrote_all();
        }
        self.out.clear();
        self.out_pos = 0;
        // Keep a batching buffer, not a bulk one.
        if self.out.capacity() > 4 * FEED_HIGH_WATER {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// A write yielded for fairness (the transport took everything offered): the bytes that
    /// went out in this poll count as traffic; no stall clock starts, and the next poll goes on
    /// writing.
    fn yielded_mid_write<T>(&mut self, wrote: bool) -> Poll<T> {
        if wrote {
            self.link.wrote_all();
        }
        Poll::Pending
    }

    /// The transport takes no more output now: the session hears of it (`wrote`: progress since
    /// the last report restarts the write-stall clock) and its deadline is waited on beside the
    /// write. Ready with the session's reason once it closed (write stall, or another deadline),
    /// or with `Ok` when the session asks for one write before deciding: the caller then tries
    /// [`Connection::try_write_now`] and goes on writing (the next stall reports what it moved).
    fn poll_stalled(&mut self, cx: &mut Context<'_>, wrote: bool) -> Poll<Result<()>> {
        self.link.session_mut().on_flush(Instant::now(), wrote, false);
        if ready!(poll_session_deadline(&mut self.link, &mut self.timer, cx, true)) == Passed::TryWrite {
            return Poll::Ready(Ok(()));
        }
        self.send_failed = true;
        Poll::Ready(Err(self.close_error()))
    }

    /// The write a deadline asked for ([`Connection::poll_stalled`]): `bufs` offered once
    /// without waiting; the bytes taken (0 when the socket is still full), or the error that
    /// failed the write (for [`Connection::write_failed`]).
    fn try_write_now(io: Option<&AsyncStream>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let io = io.ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        match io.try_write_now(bufs) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::Unsupported
                ) =>
            {
                Ok(0)
            }
            r => r,
        }
    }

    /// A write failed: the session closes with the error (it decides what it means), and no
    /// more sends are tried.
    fn write_failed(&mut self, e: io::Error) -> Error {
        self.send_failed = true;
        self.link.io_error(e);
        self.close_error()
    }

    /// Writes header and `buf` straight from the caller's buffer. Not cancel-safe: `torn` records
    /// a partial frame at every point where this future could be dropped.
    async fn write_large(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let mut written = 0;
        poll_fn(|cx| self.poll_write_large(cx, header.as_bytes(), buf, &mut written)).await
    }

    fn poll_write_large(
        &mut self,
        cx: &mut Context<'_>,
        h: &[u8],
        buf: &[u8],
        written: &mut usize,
    ) -> Poll<Result<()>> {
        let total = h.len() + buf.len();
        let mut wrote = false;
        while *written < total {
            if self.poll_fair_turn(cx).is_pending() {
                return self.yielded_mid_write(wrote);
            }
            let io = self.io.as_mut().ok_or(Error::Closed(""))?;
            let r = if *written < h.len() {
                let slices = [IoSlice::new(&h[*written..]), IoSlice::new(&buf[..buf.len().min(FAIR_SLICE)])];
                Pin::new(&mut *io).poll_write_vectored(cx, &slices)
            } else {
                let from = *written - h.len();
                Pin::new(&mut *io).poll_write(cx, &buf[from..buf.len().min(from + FAIR_SLICE)])
            };
            match r {
                Poll::Pending => {
                    self.waited();
                    ready!(self.poll_stalled(cx, wrote))?;
                    // Reported by the stall above; what the asked-for write moves is new.
                    let tried = if *written < h.len() {
                        Self::try_write_now(self.io.as_ref(), &[IoSlice::new(&h[*written..]), IoSlice::new(buf)])
                    } else {
                        Self::try_write_now(self.io.as_ref(), &[IoSlice::new(&buf[*written - h.len()..])])
                    };
                    let n = match tried {
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(self.write_failed(e))),
                    };
                    *written += n;
                    self.moved += n;
                    self.torn = *written < total;
                    wrote = n > 0;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.write_failed(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    self.moved += n;
                    self.torn = *written < total;
                    wrote = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.write_failed(e))),
            }
        }
        self.link.wrote_all();
        Poll::Ready(Ok(()))
    }

    // ----- receiving -----

    /// Receives one message. Refuses a message longer than the connection's maximum message
    /// size. Cancel-safe.
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_bytes_max(usize::MAX).await
    }

    /// Receives one message of at most `maxlength` bytes (Python's `recv_bytes(maxlength)`). A
    /// longer message is an error ("bad message length") and leaves the connection unreadable, as
    /// in Python. Cancel-safe.
    pub async fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>> {
        poll_fn(|cx| self.poll_recv(cx, maxlength)).await
    }

    /// Receives one message into `buf` and returns its length (Python's `recv_bytes_into`; for an
    /// offset, pass `&mut buf[offset..]`). If the message does not fit, `buf` is untouched and the
    /// error is [`Error::BufferTooShort`] carrying the complete message; the connection stays
    /// usable. Cancel-safe.
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        poll_fn(|cx| self.poll_message_ready(cx, usize::MAX)).await?;
        let msg = match self.link.next(usize::MAX) {
            Next::Message(m) => m,
            Next::Empty => return Err(Error::Closed("decoder lost a message")),
            Next::Consumed | Next::Closed => return Err(self.close_error()),
        };
        if msg.len() > buf.len() {
            let e = BufferTooShort { message: msg.to_vec(), buffer_len: buf.len() }.into();
            self.budget_report();
            return Err(e);
        }
        buf[..msg.len()].copy_from_slice(msg);
        let n = msg.len();
        self.budget_report();
        Ok(n)
    }

    /// Receives one message and hands it to `f` as a slice of the connection's buffer, without
    /// copying it (the reactor's `on_message` on this face): for large messages that are
    /// parsed or forwarded, not kept. Returns what `f` returns. Cancel-safe: `f` runs only once
    /// the whole message is buffered, and then synchronously.
    ///
    /// ```no_run
    /// # async fn f(conn: &mut mpconn::tokio::Connection) -> mpconn::Result<()> {
    /// let checksum = conn.recv_bytes_with(|m| m.iter().map(|&b| u64::from(b)).sum::<u64>()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn recv_bytes_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        loop {
            poll_fn(|cx| self.poll_message_ready(cx, usize::MAX)).await?;
            match self.link.next(usize::MAX) {
                Next::Message(m) => {
                    let r = f(m);
                    self.budget_report();
                    return Ok(r);
                }
                Next::Empty => return Err(Error::Closed("decoder lost a message")),
                Next::Consumed => {}
                Next::Closed => return Err(self.close_error()),
            }
            if !self.link.session().is_open() {
                return Err(self.close_error());
            }
        }
    }

    /// Receives every message that is ready, handing each to `f` as a slice of the connection's
    /// buffer, in order, without copying; returns how many (at least one). The batch form of
    /// [`Connection::recv_bytes_with`], for streams of small messages: when no whole message is
    /// buffered it waits for one, as `recv_bytes` does; then it takes every whole message a
    /// read brought in one loop, and reads on while the socket already holds more. Fairness
    /// holds as for every receive: after 256 KiB read the task gives the runtime a turn (the
    /// batch returns, and the next receive yields before it reads). A message split across
    /// reads is handed out once it is whole; boundaries are kept.
    ///
    /// Cancel-safe: `f` runs synchronously inside one poll, and a poll that called it returns
    /// at once; dropping the future (a `select!` that lost, a `timeout`) loses no message. If
    /// the peer closes or an error ends the connection after some messages, they are returned
    /// first and the next receive reports the end ([`Error::Eof`] for a clean close).
    ///
    /// ```no_run
    /// # async fn f(conn: &mut mpconn::tokio::Connection) -> mpconn::Result<()> {
    /// let (mut messages, mut bytes) = (0u64, 0u64);
    /// loop {
    ///     match conn.recv_batch(|m| bytes += m.len() as u64).await {
    ///         Ok(n) => messages += n as u64,
    ///         Err(mpconn::Error::Eof) => break, // the peer closed between messages
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// println!("{messages} messages, {bytes} bytes");
    /// # Ok(()) }
    /// ```
    pub async fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<usize> {
        poll_fn(|cx| self.poll_batch(cx, &mut f)).await
    }

    /// Whether a message (or end of file) can be read without waiting, waiting up to `timeout`
    /// for one (`None`: without limit; Python's default `poll()` is `Some(Duration::ZERO)`).
    /// Reads what arrives into the connection's buffer. Cancel-safe.
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable() {
            return Err(Error::Closed("the connection is not readable"));
        }
        let wait = poll_fn(|cx| self.poll_readable(cx));
        match timeout {
            None => wait.await,
            Some(t) => ::tokio::time::timeout(t, wait).await.unwrap_or(Ok(false)),
        }
    }

    /// Waits until a message (or end of file) can be read: `poll(None)` as a readiness future.
    /// Cancel-safe.
    pub async fn wait_readable(&mut self) -> Result<()> {
        self.poll(None).await.map(drop)
    }

    /// True when a whole message is already buffered, so `recv_bytes` will not wait.
    pub fn has_buffered_message(&self) -> bool {
        self.link.decoder().has_frame()
    }

    /// Reads until a whole message or end of file is buffered (or a deadline closed the
    /// session: the next receive says why).
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool>> {
        loop {
            if self.link.eof_seen() || self.link.decoder().has_frame() {
                return Poll::Ready(Ok(true));
            }
            self.link.resume();
            if poll_session_deadline(&mut self.link, &mut self.timer, cx, false).is_ready() {
                return Poll::Ready(Ok(true));
            }
            ready!(self.poll_read_once(cx))?;
        }
    }

    /// One read into the link's buffer (0 bytes: end of file); an error goes to the session.
    fn poll_read_once(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match ready!(self.poll_fill(cx))? {
            Filled::Bytes { .. } => Poll::Ready(Ok(())),
            Filled::Failed => Poll::Ready(Err(self.close_error())),
        }
    }

    /// One read into the link's buffer, after the fair turn and the memory budget: the bytes
    /// read (0: end of file, told to the link), or `Failed` when the read failed (the session has
    /// the error and is closed; its reason is left for the caller to take).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<Filled>> {
        // The listener's memory budget: a read that would grow the buffer waits while others
        // hold the budget (the caller's deadline sleep stays armed).
        ready!(self.poll_fair_turn(cx));
        if let Some(b) = &mut self.budget
            && b.poll_may_read(cx, self.link.decoder_mut()).is_pending()
        {
            self.waited();
            return Poll::Pending;
        }
        let io = self.io.as_mut().ok_or(Error::Closed(""))?;
        let window = self.link.read_buf();
        let len = window.len().min(FAIR_SLICE);
        let mut rb = ReadBuf::new(&mut window[..len]);
        let result = loop {
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    self.moved = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(r) => break r,
            }
        };
        let n = rb.filled().len();
        self.moved += n;
        match result {
            Ok(()) => {
                self.link.filled(n);
                if n > 0 {
                    self.budget_report();
                }
                Poll::Ready(Ok(Filled::Bytes { drained: n < len }))
            }
            Err(e) => {
                self.link.io_error(e);
                Poll::Ready(Ok(Filled::Failed))
            }
        }
    }

    /// The batch receive's poll: every whole message buffered goes to `f`; when none is, reads
    /// (waiting on the session's deadline beside the read) until one is. After handing out
    /// messages it reads on only while the socket has bytes now and the fair slice is not
    /// spent, and it never returns `Pending` once `f` has been called: what `f` saw is what this
    /// poll returns, so a dropped batch loses nothing. A close after some messages is reported
    /// by the next receive.
    fn poll_batch(&mut self, cx: &mut Context<'_>, f: &mut impl FnMut(&[u8])) -> Poll<Result<usize>> {
        let mut count = 0;
        let mut drained = false;
        loop {
            let taken = self.link.drain_messages(usize::MAX, &mut *f);
            if taken > 0 {
                count += taken;
                self.budget_report();
            }
            match self.link.poll_ready(usize::MAX) {
                // Not after a drain, but a limit or phase change could leave one: take it.
                Ready::Frame => continue,
                Ready::Closed if count > 0 => return Poll::Ready(Ok(count)),
                Ready::Closed => return Poll::Ready(Err(self.close_error())),
                Ready::Read => {}
            }
            if count > 0 {
                // More only while it costs no wait: within the fair slice, and what the socket
                // holds now (a `Pending` read or budget wait ends the batch, not the task's turn;
                // a short read said the socket was empty). The pause the delivery began stays:
                // the time until the caller's next receive is the caller's.
                if self.moved >= FAIR_SLICE || drained {
                    return Poll::Ready(Ok(count));
                }
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(Filled::Bytes { drained: d })) => drained = d,
                    Poll::Ready(Ok(Filled::Failed)) => {}
                    Poll::Ready(Err(_)) | Poll::Pending => return Poll::Ready(Ok(count)),
                }
                continue;
            }
            // Waiting for input: the caller's pause (if any) ends here.
            self.link.resume();
            if poll_session_deadline(&mut self.link, &mut self.timer, cx, false).is_ready() {
                continue; // closed: poll_ready says so
            }
            if let Filled::Bytes { drained: d } = ready!(self.poll_fill(cx))? {
                drained = d;
            }
        }
    }

    /// Polls for one application message (handshake messages are given to the session).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Vec<u8>>> {
        loop {
            if let Some(m) = ready!(self.poll_recv_frame(cx, limit))? {
                return Poll::Ready(Ok(m));
            }
            if !self.link.session().is_open() {
                return Poll::Ready(Err(Error::Closed("the handshake is not finished")));
            }
        }
    }

    /// Polls for one frame and hands it to the session: `Some` for a message, `None` for a
    /// handshake message the session took.
    fn poll_recv_frame(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Option<Vec<u8>>>> {
        ready!(self.poll_message_ready(cx, limit))?;
        Poll::Ready(match self.link.take(limit) {
            Next::Message(m) => {
                self.budget_report();
                Ok(Some(m))
            }
            Next::Consumed => Ok(None),
            Next::Empty => Err(Error::Closed("decoder lost a message")),
            Next::Closed => Err(self.close_error()),
        })
    }

    /// Reads until a whole message (within `limit`) is buffered. End of file, a refused length,
    /// an I/O error and a passed deadline close the session (the error says what it decided).
    fn poll_message_ready(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<()>> {
        loop {
            match self.link.poll_ready(limit) {
                Ready::Frame => return Poll::Ready(Ok(())),
                Ready::Closed => return Poll::Ready(Err(self.close_error())),
                Ready::Read => {}
            }
            self.link.resume();
            if poll_session_deadline(&mut self.link, &mut self.timer, cx, false).is_ready() {
                continue; // closed: poll_ready says so
            }
            ready!(self.poll_read_once(cx))?;
        }
    }

    /// The error for the session's close (its reason converted, once; then [`Error::Closed`]);
    /// the read side is unusable from now on.
    fn close_error(&mut self) -> Error {
        match self.link.close_reason() {
            Some(reason) => reason.into(),
            None => Error::Closed("the connection is not readable"),
        }
    }

    // ----- handshake -----

    /// Runs the session's handshake to completion, within the session's handshake deadline; on
    /// failure the pending `#FAILURE#` is sent (for at most a second), as Python does.
    pub(crate) async fn handshake(&mut self) -> Result<()> {
        let result = self.drive_handshake().await;
        if result.is_err() {
            // Replies still queued (held for a buffered frame that then failed: a client whose
            // right answer came with a bad challenge still reads #WELCOME#, as from CPython and
            // the reactor), then the session's last words (#FAILURE#).
            while let Some(m) = self.link.session_mut().poll_transmit() {
                self.queue_frame(&m);
            }
            if self.queued_len() > 0 {
                // The peer may be gone; the handshake's error is what counts.
                let _ = ::tokio::time::timeout(FAILURE_SEND_LIMIT, self.flush()).await;
            }
        }
        result
    }

    /// Sends what the session has to send and receives until it is open or closed; its
    /// deadline is waited on beside every write and read, and decided by `handle_timeout`.
    async fn drive_handshake(&mut self) -> Result<()> {
        loop {
            while let Some(m) = self.link.session_mut().poll_transmit() {
                self.queue_frame(&m);
            }
            // Another handshake frame already buffered: its reply joins the queued bytes.
            if self.queued_len() > 0 && !self.link.handshake_frame_buffered() {
                self.flush().await?;
                if self.link.session().wants_prompt_ack()
                    && let Some(io) = self.io.as_ref()
                {
                    io.acknowledge_promptly();
                }
            }
            if self.link.session().is_open() {
                // Drop the Opened event; nothing else waits.
                while self.link.session_mut().poll_event().is_some() {}
                return Ok(());
            }
            poll_fn(|cx| self.poll_recv_frame(cx, usize::MAX)).await?;
        }
    }

    // ----- the rest of Python's Connection -----

    /// Closes the connection after writing what is queued ([`Connection::feed_bytes`]), for at
    /// most the close-flush time ([`Timeouts::close_flush`](crate::Timeouts), 5 s by default;
    /// the session's write-stall and other deadlines apply meanwhile). The connection is closed
    /// either way; if queued bytes could not all be written, the unsent rest is dropped and
    /// this returns an error: [`Error::Timeout`] when the close-flush time ran out, otherwise
    /// the error that stopped the flush (a write stall, a reset, an earlier failed or torn
    /// send). Further calls report [`Error::Closed`]. Dropping closes too, without the flush:
    /// whatever is still queued is dropped silently.
    pub async fn close(&mut self) -> Result<()> {
        let mut result = Ok(());
        if self.io.is_some() && self.queued_len() > 0 {
            result = if let Err(e) = self.check_send() {
                Err(e)
            } else {
                let limit = self.link.session().close_flush_limit();
                match ::tokio::time::timeout(limit, self.flush()).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout(crate::Timeout::CloseFlush)),
                }
            };
            if result.is_err() {
                log::debug!("close dropped {} queued bytes", self.queued_len());
                self.out.clear();
                self.out_pos = 0;
            }
        }
        if let Some(mut io) = self.io.take() {
            // The peer may have gone already; closing is what matters.
            let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
        }
        self.link.session_mut().close(Instant::now(), true);
        while self.link.session_mut().poll_event().is_some() {}
        result
    }

    /// True once [`Connection::close`] was called.
    pub fn closed(&self) -> bool {
        self.io.is_none()
    }

    /// True while messages can still be read.
    pub fn readable(&self) -> bool {
        self.io.is_some() && !self.send_only && !self.link.session().is_closing()
    }

    /// The socket's descriptor (Python's `fileno()`); it stays owned by the connection.
    pub fn fileno(&self) -> Result<RawDescriptor> {
        Ok(self.io_ref()?.raw_descriptor())
    }

    /// The peer's address (`ip:port` for TCP; for Unix sockets usually the empty path).
    pub fn peer_address(&self) -> Result<Address> {
        Ok(self.io_ref()?.peer_address()?)
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

    /// The pickle protocol `send` writes: what the handshake proved the peer reads (4 for
    /// CPython 3.12+ and Red Hat's Python 3; 2 where it may be a Python 2, and without a key).
    pub fn pickle_protocol(&self) -> u8 {
        self.link.session().pickle_protocol()
    }

    /// Chooses the pickle protocol `send` writes (2 to 5), for those who know their peer.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.link.session_mut().set_pickle_protocol(protocol);
    }

    /// Whether the Stream side has ended (for `FusedStream`-like checks).
    pub(crate) fn stream_state(&mut self) -> &mut bool {
        &mut self.stream_done
    }

    /// Whether the connection can take another message now (the Sink's `poll_ready`).
    pub(crate) fn poll_ready_to_feed(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.check_send()?;
        if self.queued_len() >= FEED_HIGH_WATER {
            ready!(self.poll_flush_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Closes the write side after flushing (the Sink's `poll_close`).
    pub(crate) fn poll_close_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(self.poll_flush_out(cx))?;
        let io = self.io.as_mut().ok_or(Error::Closed(""))?;
        Poll::Ready(ready!(Pin::new(io).poll_shutdown(cx)).map_err(Error::from))
    }
}

/// Python objects: pickled with [`crate::pickle`] (feature `pickle`).
#[cfg(feature = "pickle")]
impl Connection {
    /// Sends a Rust value as a pickle (Python's `send(obj)`), with this connection's protocol.
    pub async fn send<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let bytes = crate::pickle::dumps(value, self.pickle_protocol())?;
        self.send_bytes(&bytes).await
    }

    /// Sends a dynamic [`Value`](crate::pickle::Value) as a pickle.
    pub async fn send_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        let bytes = crate::pickle::dumps_value(value, self.pickle_protocol())?;
        self.send_bytes(&bytes).await
    }

    /// Receives a pickle into a Rust type (Python's `recv()`). Cancel-safe.
    pub async fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        let bytes = self.recv_bytes().await?;
        Ok(crate::pickle::loads(&bytes)?)
    }

    /// Receives a pickle as a dynamic [`Value`](crate::pickle::Value). Cancel-safe.
    pub async fn recv_value(&mut self) -> Result<crate::pickle::Value> {
        let bytes = self.recv_bytes().await?;
        Ok(crate::pickle::loads_value(&bytes)?)
    }
}
