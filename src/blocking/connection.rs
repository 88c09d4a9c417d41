//! The blocking connection object: Python's `Connection` (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into`, `poll`, `close`, `fileno`, `send` / `recv`).
//!
//! It owns a [`Stream`], a [`FrameDecoder`] and a [`Session`]: it moves bytes and time, and the
//! session decides what they mean (the handshake, a challenge met without a key, what end of
//! file or a bad length is), exactly as for the reactor. Reads go through the decoder's buffer
//! (one read may bring several small messages, a large message is read straight into the buffer
//! it is returned in), writes are one vectored write of header and body.

use std::io::{self, IoSlice};
use std::net::Shutdown;
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::{BufferTooShort, Error, Result};
use crate::transport::{RawDescriptor, Stream, wait_readable};
use crate::wire::frame::{FrameDecoder, Header};
use crate::wire::handshake::Dialect;
use crate::wire::session::{Delivery, Event, Session, UNKNOWN_PEER_PICKLE_PROTOCOL};

/// A connection to a peer: a Python `Connection` over a socket.
///
/// Messages are whole byte strings; their boundaries are kept. A connection is usable by one
/// thread at a time (`&mut self`); send it to another thread to hand it over.
#[derive(Debug)]
pub struct Connection {
    stream: Option<Stream>,
    decoder: FrameDecoder,
    /// The protocol state: handshake, no-key rule, what end of file and errors mean.
    session: Session,
    /// False after an error that left the read side unusable (a refused length, end of file).
    readable: bool,
    /// True after a send timed out part way through a message: the peer's stream is out of
    /// step, so nothing more may be sent.
    send_broken: bool,
    pickle_protocol: u8,
}

impl Connection {
    pub(crate) fn new(stream: Stream, max_message_size: usize, session: Session) -> Connection {
        Connection {
            stream: Some(stream),
            decoder: FrameDecoder::new(max_message_size),
            session,
            readable: true,
            send_broken: false,
            pickle_protocol: UNKNOWN_PEER_PICKLE_PROTOCOL,
        }
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        self.stream.as_mut().ok_or(Error::Closed(""))
    }

    fn stream_ref(&self) -> Result<&Stream> {
        self.stream.as_ref().ok_or(Error::Closed(""))
    }

    /// Sends one message: the header and `buf` in one vectored write.
    ///
    /// With a write timeout set ([`Connection::set_write_timeout`]), a peer that stops reading
    /// makes this return [`Error::Timeout`] once the timeout passes without progress; part of
    /// the message may have gone out, so the connection sends nothing more afterwards
    /// ([`Error::Closed`]); receiving still works.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let mut slices = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
        write_message(stream, &mut self.send_broken, &mut slices)
    }

    /// Writes bytes that are already framed (several messages encoded with
    /// [`crate::wire::frame::encode_frame`]) in one write: batching for senders of many small
    /// messages. Bytes that are not whole frames corrupt the stream for the peer.
    pub fn send_frames(&mut self, framed: &[u8]) -> Result<()> {
        let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
        write_message(stream, &mut self.send_broken, &mut [IoSlice::new(framed)])
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
        self.recv_frame(maxlength)?.ok_or(Error::Closed("the handshake is not finished"))
    }

    /// Receives one frame and hands it to the session: `Some` for a message, `None` for a
    /// handshake message the session took.
    fn recv_frame(&mut self, limit: usize) -> Result<Option<Vec<u8>>> {
        self.wait_for_message(limit)?;
        let msg = match self.decoder.take_frame_limited(limit) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Error::Closed("decoder lost a message")),
            Err(e) => {
                self.session.handle_frame_error(e);
                return Err(self.close_error());
            }
        };
        match self.session.handle_frame(&msg) {
            Delivery::Message => Ok(Some(msg)),
            Delivery::Consumed => Ok(None),
            Delivery::Closed => Err(self.close_error()),
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

    /// Receives one message into `buf` and returns its length (Python's `recv_bytes_into`; for an
    /// offset, pass `&mut buf[offset..]`). If the message does not fit, `buf` is untouched and the
    /// error is [`Error::BufferTooShort`] carrying the complete message; the connection stays usable.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.wait_for_message(usize::MAX)?;
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

    /// Whether a message (or end of file) can be read without blocking, waiting up to `timeout`
    /// (`None`: without limit; Python's default `poll()` is `Some(Duration::ZERO)`). Sees messages
    /// already buffered.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable {
            return Err(Error::Closed("the connection is not readable"));
        }
        if self.decoder.has_frame() {
            return Ok(true);
        }
        Ok(!wait_readable(&[self.stream_ref()?], timeout)?.is_empty())
    }

    /// True when a whole message is already buffered, so `recv_bytes` will not block.
    pub fn has_buffered_message(&self) -> bool {
        self.decoder.has_frame()
    }

    /// Closes the connection. Further calls report [`Error::Closed`]. Dropping closes too.
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
        self.stream.is_some() && self.readable
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

    /// Sets a timeout for blocking receives (`None`: wait forever). A receive that times out
    /// returns an I/O error of kind `WouldBlock` or `TimedOut`; a partial message stays buffered.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream()?.set_read_timeout(timeout)?;
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
        self.stream()?.set_write_timeout(timeout)?;
        Ok(())
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
    pub fn into_split(mut self) -> Result<(ConnectionReader, ConnectionWriter)> {
        let stream = self.stream.as_ref().ok_or(Error::Closed(""))?;
        let writer = stream.try_clone()?;
        let writer = ConnectionWriter {
            stream: Some(writer),
            send_broken: self.send_broken,
            pickle_protocol: self.pickle_protocol,
        };
        // The reader never writes: a send through it would race the writer's.
        self.send_broken = true;
        Ok((ConnectionReader { conn: self }, writer))
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

    /// Reads until a whole message (within `limit`) is buffered. End of file and a refused
    /// length close the session (the error says what it decided); a read timeout is returned as
    /// it is, the connection stays usable.
    fn wait_for_message(&mut self, limit: usize) -> Result<()> {
        if !self.readable {
            return Err(Error::Closed("the connection is not readable"));
        }
        loop {
            match self.decoder.ready_len(limit) {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(e) => {
                    self.session.handle_frame_error(e);
                    return Err(self.close_error());
                }
            }
            let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
            let n = match stream.read_retry(self.decoder.read_buf()) {
                Ok(n) => n,
                Err(e) if self.session.is_handshaking() && is_disconnect(&e) => {
                    self.session.handle_io_error(e);
                    return Err(self.close_error());
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                self.session.handle_eof(self.decoder.in_message());
                return Err(self.close_error());
            }
            self.decoder.advance(n);
        }
    }

    /// Runs the session's handshake to completion over this connection, within the session's
    /// handshake deadline; on failure the pending `#FAILURE#` is sent, as Python does.
    pub(crate) fn handshake(&mut self) -> Result<()> {
        let result = self.drive_handshake();
        if result.is_err() {
            // The peer may be gone.
            while let Some(m) = self.session.poll_transmit() {
                if self.send_bytes(&m).is_err() {
                    break;
                }
            }
        }
        if let Some(stream) = self.stream.as_mut() {
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
        }
        result?;
        self.pickle_protocol = self.session.pickle_protocol();
        Ok(())
    }

    fn drive_handshake(&mut self) -> Result<()> {
        // Socket timeouts enforce the deadline. They are set again only when the time left has
        // fallen below half of what is set, so a handshake usually costs two setsockopt calls,
        // and a peer answering each step at the last moment stays under twice the deadline.
        let mut timeout_set: Option<Duration> = None;
        loop {
            while let Some(m) = self.session.poll_transmit() {
                if let Err(e) = self.send_bytes(&m) {
                    return Err(self.handshake_io_error(e, "handshake deadline passed while sending"));
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
            if let Some(d) = self.session.poll_timeout() {
                let now = Instant::now();
                let left = d.saturating_duration_since(now);
                if left.is_zero() {
                    self.session.handle_timeout(now);
                    return Err(self.close_error());
                }
                if timeout_set.is_none_or(|set| left < set / 2) {
                    let stream = self.stream()?;
                    stream.set_read_timeout(Some(left))?;
                    stream.set_write_timeout(Some(left))?;
                    timeout_set = Some(left);
                }
            }
            match self.recv_frame(self.session.frame_limit()) {
                Ok(_) => {}
                Err(e) if self.readable => return Err(self.handshake_io_error(e, "handshake deadline passed")),
                Err(e) => return Err(e),
            }
        }
    }

    /// A timeout while authenticating is the session's handshake deadline; other errors stay.
    fn handshake_io_error(&mut self, e: Error, what: &'static str) -> Error {
        match &e {
            Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                self.session.close_with(crate::wire::session::CloseReason::HandshakeTimeout);
                let _ = self.close_error();
                Error::Timeout(what)
            }
            // A send that hit the socket's timeout (set to the handshake deadline).
            Error::Timeout(_) => {
                // The socket timeout is the deadline (or within a clock tick of it).
                self.session.close_with(crate::wire::session::CloseReason::HandshakeTimeout);
                let _ = self.close_error();
                Error::Timeout(what)
            }
            _ => e,
        }
    }
}

/// Writes one message (or several framed ones) whole; a write timeout becomes
/// [`Error::Timeout`] and refuses later sends, since part of the message may be out.
fn write_message(stream: &mut Stream, send_broken: &mut bool, slices: &mut [IoSlice<'_>]) -> Result<()> {
    if *send_broken {
        return Err(Error::Closed("a send timed out or the connection was split: this side cannot send"));
    }
    match stream.write_all_vectored(slices) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            *send_broken = true;
            log::debug!("send timed out: {e}");
            Err(Error::Timeout("the write timeout passed before the peer took the whole message"))
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
/// duplicate of the socket. Dropping it closes its descriptor without shutting anything down.
#[derive(Debug)]
pub struct ConnectionWriter {
    stream: Option<Stream>,
    send_broken: bool,
    pickle_protocol: u8,
}

impl ConnectionWriter {
    /// Sends one message ([`Connection::send_bytes`]; the same write-timeout rule).
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let mut slices = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
        write_message(stream, &mut self.send_broken, &mut slices)
    }

    /// Writes bytes that are already framed ([`Connection::send_frames`]).
    pub fn send_frames(&mut self, framed: &[u8]) -> Result<()> {
        let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
        write_message(stream, &mut self.send_broken, &mut [IoSlice::new(framed)])
    }

    /// Sets a timeout for blocking sends ([`Connection::set_write_timeout`]).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Error::Config("a write timeout of zero (use None for no timeout)".into()));
        }
        self.stream.as_mut().ok_or(Error::Closed(""))?.set_write_timeout(timeout)?;
        Ok(())
    }

    /// The pickle protocol `send` writes ([`Connection::pickle_protocol`]).
    pub fn pickle_protocol(&self) -> u8 {
        self.pickle_protocol
    }

    /// Chooses the pickle protocol `send` writes.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.pickle_protocol = protocol;
    }

    /// Stops sending: shuts the sending direction (the peer reads end of file once it has read
    /// what was sent) and closes this half's descriptor. The reader can still receive.
    pub fn close(&mut self) -> Result<()> {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Write);
        }
        Ok(())
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
/// `multiprocessing.connection.wait`); empty on timeout. Closed connections are reported ready
/// (reading them gives [`Error::Closed`]), as Python reports them.
pub fn wait(connections: &[&Connection], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let mut ready: Vec<usize> = connections
        .iter()
        .enumerate()
        .filter(|(_, c)| c.closed() || c.has_buffered_message())
        .map(|(i, _)| i)
        .collect();
    if !ready.is_empty() {
        return Ok(ready);
    }
    let streams: Vec<&Stream> = connections.iter().filter_map(|c| c.stream.as_ref()).collect();
    ready = wait_readable(&streams, timeout)?;
    Ok(ready)
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
        let bytes = crate::pickle::dumps(value, self.pickle_protocol)?;
        self.send_bytes(&bytes)
    }

    /// Sends a dynamic [`Value`](crate::pickle::Value) as a pickle.
    pub fn send_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        let bytes = crate::pickle::dumps_value(value, self.pickle_protocol)?;
        self.send_bytes(&bytes)
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
