//! The async connection: Python's `Connection` as futures (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into`, `poll`, `close`, `send` / `recv`).
//!
//! Like the blocking connection it owns a [`FrameDecoder`] and a [`Session`] and only moves bytes
//! and time: the session decides what a frame, end of file, an I/O error or a deadline means.
//! Everything is written as `poll_*` functions over state kept in the connection, so the futures
//! are thin and a dropped receive loses nothing (see the cancellation notes on each method).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::time::Sleep;

use super::io::AsyncStream;
use crate::address::Address;
use crate::error::{BufferTooShort, Error, Result};
use crate::transport::RawDescriptor;
use crate::wire::frame::{DEFAULT_READ_BLOCK, FrameDecoder, Header, encode_frame};
use crate::wire::handshake::Dialect;
use crate::wire::session::{Delivery, Event, HANDSHAKE_READ_BLOCK, Session, UNKNOWN_PEER_PICKLE_PROTOCOL};

/// Messages up to this size are copied into the connection's write buffer with their header (one
/// `write(2)`, and a dropped send cannot tear the frame); larger ones are written straight from
/// the caller's buffer with a vectored write.
pub const SMALL_MESSAGE: usize = 64 * 1024;

/// Fed messages are flushed once this many bytes are waiting (the Sink's `poll_ready`).
const FEED_HIGH_WATER: usize = 256 * 1024;

/// How long a `#FAILURE#` may take to go out after a failed handshake.
const FAILURE_SEND_LIMIT: Duration = Duration::from_secs(1);

const TORN: &str = "an earlier send_bytes was cancelled after writing part of a large message; \
                    the stream cannot carry further messages";

/// An async connection to a peer: a Python `Connection` over a socket, on tokio.
///
/// Messages are whole byte strings; their boundaries are kept. Methods take `&mut self`: one task
/// uses a connection at a time (split reading and writing by wrapping it in a task that owns it).
///
/// # Cancellation
/// * [`Connection::recv_bytes`], [`Connection::recv_bytes_max`], [`Connection::recv_bytes_into`],
///   `recv`, [`Connection::poll`] and the [`Stream`](futures_core::Stream) implementation are
///   **cancel-safe**: bytes already read stay in the connection's buffer, so dropping the future
///   (a `select!` branch that lost, a `timeout`) loses no message and tears none.
/// * [`Connection::send_bytes`] of a message up to [`SMALL_MESSAGE`] bytes, `feed_bytes` and
///   [`Connection::flush`] are cancel-safe in the sense that a frame is never torn: a dropped
///   send leaves either nothing or the whole frame queued, and what is queued is written before
///   anything else, by the next send or flush. A send first waits for what earlier sends left,
///   so sends abandoned one after another (a `timeout` around each, to a peer that does not
///   read) leave at most one message queued.
/// * A send waits as long as the peer takes nothing: there is no write timeout on this face;
///   bound it with `tokio::time::timeout` (for a small message that leaves it queued or not sent,
///   for a large one it may tear the stream as said below).
/// * [`Connection::send_bytes`] of a larger message is **not** cancel-safe: it writes from your
///   buffer, and a send dropped after part of the frame went out leaves the peer mid-message.
///   The connection then refuses every further send with [`Error::Closed`] rather than corrupt
///   the stream; receiving still works.
#[derive(Debug)]
pub struct Connection {
    io: Option<AsyncStream>,
    decoder: FrameDecoder,
    /// The protocol state: handshake, no-key rule, what end of file and errors mean.
    session: Session,
    /// False after an error that left the read side unusable (a refused length, end of file).
    readable: bool,
    /// The peer closed its side; reported once the buffered messages are taken.
    eof: bool,
    /// The sleep for the session's earliest deadline, and that deadline.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// Framed bytes waiting to be written: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// A large send was dropped mid-frame: no more sends.
    torn: bool,
    /// The Stream implementation has yielded its end.
    stream_done: bool,
    pickle_protocol: u8,
}

impl Connection {
    pub(crate) fn new(io: AsyncStream, max_message_size: usize, session: Session) -> Connection {
        let mut decoder = FrameDecoder::new(max_message_size);
        // While authenticating, a read block just big enough for a handshake message: a
        // connection that never authenticates holds bytes, not a 64 KiB block (as the reactor).
        if !session.is_open() {
            decoder.set_read_block(HANDSHAKE_READ_BLOCK);
        }
        Connection {
            io: Some(io),
            decoder,
            session,
            readable: true,
            eof: false,
            timer: None,
            out: Vec::new(),
            out_pos: 0,
            torn: false,
            stream_done: false,
            pickle_protocol: UNKNOWN_PEER_PICKLE_PROTOCOL,
        }
    }

    fn io_ref(&self) -> Result<&AsyncStream> {
        self.io.as_ref().ok_or(Error::Closed(""))
    }

    // ----- sending -----

    /// Sends one message. Small messages (up to [`SMALL_MESSAGE`]) go out as one write of header
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
    /// socket takes.
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
        while self.out_pos < self.out.len() {
            let io = self.io.as_mut().ok_or(Error::Closed(""))?;
            match ready!(Pin::new(io).poll_write(cx, &self.out[self.out_pos..])) {
                Ok(0) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        // Keep a batching buffer, not a bulk one.
        if self.out.capacity() > 4 * FEED_HIGH_WATER {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes header and `buf` straight from the caller's buffer. Not cancel-safe: `torn` records
    /// a partial frame at every point where this future could be dropped.
    async fn write_large(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let h = header.as_bytes();
        let total = h.len() + buf.len();
        let mut written = 0;
        while written < total {
            let io = self.io.as_mut().ok_or(Error::Closed(""))?;
            let r = poll_fn(|cx| {
                if written < h.len() {
                    let slices = [IoSlice::new(&h[written..]), IoSlice::new(buf)];
                    Pin::new(&mut *io).poll_write_vectored(cx, &slices)
                } else {
                    Pin::new(&mut *io).poll_write(cx, &buf[written - h.len()..])
                }
            })
            .await;
            match r {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    written += n;
                    self.torn = written < total;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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
        let msg = match self.decoder.next_frame() {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Error::Closed("decoder lost a message")),
            Err(e) => {
                self.session.handle_frame_error(e);
                return Err(self.close_error());
            }
        };
        if self.session.handle_frame(msg) != Delivery::Message {
            return Err(self.close_error());
        }
        if msg.len() > buf.len() {
            return Err(BufferTooShort { message: msg.to_vec(), buffer_len: buf.len() }.into());
        }
        buf[..msg.len()].copy_from_slice(msg);
        Ok(msg.len())
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
            let msg = match self.decoder.next_frame() {
                Ok(Some(m)) => m,
                Ok(None) => return Err(Error::Closed("decoder lost a message")),
                Err(e) => {
                    self.session.handle_frame_error(e);
                    return Err(self.close_error());
                }
            };
            match self.session.handle_frame(msg) {
                Delivery::Message => return Ok(f(msg)),
                Delivery::Consumed if self.session.is_open() => {}
                _ => return Err(self.close_error()),
            }
        }
    }

    /// Whether a message (or end of file) can be read without waiting, waiting up to `timeout`
    /// for one (`None`: without limit; Python's default `poll()` is `Some(Duration::ZERO)`).
    /// Reads what arrives into the connection's buffer. Cancel-safe.
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable || self.io.is_none() {
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
        self.decoder.has_frame()
    }

    /// Reads until a whole message or end of file is buffered.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool>> {
        loop {
            if self.eof || self.decoder.has_frame() {
                return Poll::Ready(Ok(true));
            }
            ready!(self.poll_read_once(cx))?;
        }
    }

    /// One read into the decoder's buffer; end of file sets `eof`.
    fn poll_read_once(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let io = self.io.as_mut().ok_or(Error::Closed(""))?;
        let mut rb = ReadBuf::new(self.decoder.read_buf());
        loop {
            match ready!(Pin::new(&mut *io).poll_read(cx, &mut rb)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.session.is_handshaking() && is_disconnect(&e) => {
                    self.session.handle_io_error(e);
                    return Poll::Ready(Err(self.close_error()));
                }
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(()) => break,
            }
        }
        let n = rb.filled().len();
        if n == 0 {
            self.eof = true;
        } else {
            self.decoder.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Polls for one application message (handshake messages are given to the session).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Vec<u8>>> {
        loop {
            if let Some(m) = ready!(self.poll_recv_frame(cx, limit))? {
                return Poll::Ready(Ok(m));
            }
            if !self.session.is_open() {
                return Poll::Ready(Err(Error::Closed("the handshake is not finished")));
            }
        }
    }

    /// Polls for one frame and hands it to the session: `Some` for a message, `None` for a
    /// handshake message the session took.
    fn poll_recv_frame(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Option<Vec<u8>>>> {
        ready!(self.poll_message_ready(cx, limit))?;
        let msg = match self.decoder.take_frame_limited(limit) {
            Ok(Some(m)) => m,
            Ok(None) => return Poll::Ready(Err(Error::Closed("decoder lost a message"))),
            Err(e) => {
                self.session.handle_frame_error(e);
                return Poll::Ready(Err(self.close_error()));
            }
        };
        Poll::Ready(match self.session.handle_frame(&msg) {
            Delivery::Message => Ok(Some(msg)),
            Delivery::Consumed => Ok(None),
            Delivery::Closed => Err(self.close_error()),
        })
    }

    /// Reads until a whole message (within `limit`) is buffered. End of file, a refused length
    /// and a passed deadline close the session (the error says what it decided).
    fn poll_message_ready(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<()>> {
        if !self.readable {
            return Poll::Ready(Err(Error::Closed("the connection is not readable")));
        }
        loop {
            match self.decoder.ready_len(limit) {
                Ok(Some(_)) => return Poll::Ready(Ok(())),
                Ok(None) => {}
                Err(e) => {
                    self.session.handle_frame_error(e);
                    return Poll::Ready(Err(self.close_error()));
                }
            }
            if self.eof {
                self.session.handle_eof(self.decoder.in_message());
                return Poll::Ready(Err(self.close_error()));
            }
            if self.poll_deadline(cx).is_ready() {
                self.session.handle_timeout(Instant::now());
                if self.session.is_closed() {
                    return Poll::Ready(Err(self.close_error()));
                }
                continue;
            }
            ready!(self.poll_read_once(cx))?;
        }
    }

    /// Ready when the session's earliest deadline has passed (never without one).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.session.poll_timeout() else {
            self.timer = None;
            return Poll::Pending;
        };
        match &mut self.timer {
            Some((set, _)) if *set == at => {}
            t => *t = Some((at, Box::pin(::tokio::time::sleep_until(at.into())))),
        }
        match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The error for the session's close; the read side is unusable from now on.
    fn close_error(&mut self) -> Error {
        self.readable = false;
        while let Some(e) = self.session.poll_event() {
            if let Event::Closed(reason) = e {
                return reason.into();
            }
        }
        Error::Closed("the connection is not readable")
    }

    // ----- handshake -----

    /// Runs the session's handshake to completion, within the session's handshake deadline; on
    /// failure the pending `#FAILURE#` is sent (for at most a second), as Python does.
    pub(crate) async fn handshake(&mut self) -> Result<()> {
        let result = self.drive_handshake().await;
        if result.is_err() {
            let mut failure = Vec::new();
            while let Some(m) = self.session.poll_transmit() {
                encode_frame(&m, &mut failure);
            }
            if !failure.is_empty() {
                self.out.clear();
                self.out_pos = 0;
                self.out.extend_from_slice(&failure);
                // The peer may be gone; the handshake's error is what counts.
                let _ = ::tokio::time::timeout(FAILURE_SEND_LIMIT, self.flush()).await;
            }
        }
        result?;
        self.decoder.set_read_block(DEFAULT_READ_BLOCK);
        self.pickle_protocol = self.session.pickle_protocol();
        Ok(())
    }

    async fn drive_handshake(&mut self) -> Result<()> {
        loop {
            while let Some(m) = self.session.poll_transmit() {
                self.queue_frame(&m);
            }
            if self.queued_len() > 0 {
                let sent = match self.session.poll_timeout() {
                    Some(at) => ::tokio::time::timeout_at(at.into(), self.flush()).await,
                    None => Ok(self.flush().await),
                };
                match sent {
                    Ok(r) => r?,
                    Err(_) => {
                        self.session.handle_timeout(Instant::now());
                        self.session.close_with(crate::wire::session::CloseReason::HandshakeTimeout);
                        return Err(self.close_error());
                    }
                }
            }
            if self.session.is_open() {
                // Drop the Opened event; nothing else waits.
                while self.session.poll_event().is_some() {}
                return Ok(());
            }
            if self.session.is_closed() {
                return Err(self.close_error());
            }
            let limit = self.session.frame_limit();
            poll_fn(|cx| self.poll_recv_frame(cx, limit)).await?;
        }
    }

    // ----- the rest of Python's Connection -----

    /// Closes the connection after writing what is queued (bounded by one second). Further calls
    /// report [`Error::Closed`]. Dropping closes too, without the flush.
    pub async fn close(&mut self) -> Result<()> {
        if self.io.is_some() && self.queued_len() > 0 && !self.torn {
            let _ = ::tokio::time::timeout(FAILURE_SEND_LIMIT, self.flush()).await;
        }
        if let Some(mut io) = self.io.take() {
            // The peer may have gone already; closing is what matters.
            let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
        }
        self.session.close(Instant::now(), true);
        while self.session.poll_event().is_some() {}
        Ok(())
    }

    /// True once [`Connection::close`] was called.
    pub fn closed(&self) -> bool {
        self.io.is_none()
    }

    /// True while messages can still be read.
    pub fn readable(&self) -> bool {
        self.io.is_some() && self.readable
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
        self.session.dialect()
    }

    /// The limit on one received message.
    pub fn max_message_size(&self) -> usize {
        self.decoder.max_message_size()
    }

    /// Changes the limit on one received message.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.decoder.set_max_message_size(max);
    }

    /// The pickle protocol `send` writes: what the handshake proved the peer reads (4 for
    /// CPython 3.12+ and Red Hat's Python 3; 2 where it may be a Python 2, and without a key).
    pub fn pickle_protocol(&self) -> u8 {
        self.pickle_protocol
    }

    /// Chooses the pickle protocol `send` writes (2 to 5), for those who know their peer.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.pickle_protocol = protocol;
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

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
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
