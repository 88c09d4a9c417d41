//! The blocking connection object: Python's `Connection` (`send_bytes`, `recv_bytes`,
//! `recv_bytes_into`, `poll`, `close`, `fileno`, `send` / `recv`).
//!
//! It owns a [`Stream`] and a [`FrameDecoder`]; reads go through the decoder's buffer (one read
//! may bring several small messages, a large message is read straight into the buffer it is
//! returned in), writes are one vectored write of header and body.

use std::io::{self, IoSlice};
use std::net::Shutdown;
#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::error::{AuthenticationError, BufferTooShort, Error, Result};
use crate::transport::{RawDescriptor, Stream, wait_readable};
use crate::wire::frame::{FrameDecoder, FrameError, Header};
use crate::wire::handshake::{CHALLENGE, Dialect, HANDSHAKE_MAX_MESSAGE, Handshake, PROCESSING_CHALLENGE};

/// A connection to a peer: a Python `Connection` over a socket.
///
/// Messages are whole byte strings; their boundaries are kept. A connection is usable by one
/// thread at a time (`&mut self`); send it to another thread to hand it over.
#[derive(Debug)]
pub struct Connection {
    stream: Option<Stream>,
    decoder: FrameDecoder,
    /// False after an error that left the read side unusable (a refused length, end of file).
    readable: bool,
    /// The connection was opened without a key: a challenge as the first message means the peer
    /// wants authentication (cpython#123736).
    expect_no_challenge: bool,
    dialect: Dialect,
    pickle_protocol: u8,
}

impl Connection {
    pub(crate) fn new(stream: Stream, max_message_size: usize) -> Connection {
        Connection {
            stream: Some(stream),
            decoder: FrameDecoder::new(max_message_size),
            readable: true,
            expect_no_challenge: false,
            dialect: Dialect::Cpython,
            pickle_protocol: Dialect::Cpython.pickle_protocol(),
        }
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        self.stream.as_mut().ok_or(Error::Closed(""))
    }

    fn stream_ref(&self) -> Result<&Stream> {
        self.stream.as_ref().ok_or(Error::Closed(""))
    }

    /// Sends one message: the header and `buf` in one vectored write.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let header = Header::for_len(buf.len());
        let mut slices = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        self.stream()?.write_all_vectored(&mut slices)?;
        Ok(())
    }

    /// Writes bytes that are already framed (several messages encoded with
    /// [`crate::wire::frame::encode_frame`]) in one write: batching for senders of many small
    /// messages. Bytes that are not whole frames corrupt the stream for the peer.
    pub fn send_frames(&mut self, framed: &[u8]) -> Result<()> {
        self.stream()?.write_all_vectored(&mut [IoSlice::new(framed)])?;
        Ok(())
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
        self.wait_for_message(maxlength)?;
        let msg = self.decoder.take_frame_limited(maxlength)?.ok_or(Error::Closed("decoder lost a message"))?;
        screen_first_message(&mut self.expect_no_challenge, &mut self.readable, &msg)?;
        Ok(msg)
    }

    /// Receives one message into `buf` and returns its length (Python's `recv_bytes_into`; for an
    /// offset, pass `&mut buf[offset..]`). If the message does not fit, `buf` is untouched and the
    /// error is [`Error::BufferTooShort`] carrying the complete message; the connection stays usable.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.wait_for_message(usize::MAX)?;
        let msg = self.decoder.next_frame()?.ok_or(Error::Closed("decoder lost a message"))?;
        screen_first_message(&mut self.expect_no_challenge, &mut self.readable, msg)?;
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
        self.dialect
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

    /// The pickle protocol `send` writes: 3, or 2 for a `processing` peer.
    pub fn pickle_protocol(&self) -> u8 {
        self.pickle_protocol
    }

    /// Chooses the pickle protocol `send` writes (2 or 3).
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.pickle_protocol = protocol;
    }

    /// Reads until a whole message (within `limit`) is buffered.
    fn wait_for_message(&mut self, limit: usize) -> Result<()> {
        if !self.readable {
            return Err(Error::Closed("the connection is not readable"));
        }
        loop {
            match self.decoder.ready_len(limit) {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(e) => {
                    self.readable = false;
                    return Err(e.into());
                }
            }
            let stream = self.stream.as_mut().ok_or(Error::Closed(""))?;
            let n = stream.read_retry(self.decoder.read_buf())?;
            if n == 0 {
                self.readable = false;
                return Err(if self.decoder.in_message() { Error::EofInMessage } else { Error::Eof });
            }
            self.decoder.advance(n);
        }
    }

    pub(crate) fn expect_no_challenge(&mut self) {
        self.expect_no_challenge = true;
    }

    /// Runs a handshake to completion over this connection, within `deadline`.
    pub(crate) fn authenticate(&mut self, mut hs: Handshake, deadline: Option<Instant>) -> Result<()> {
        let result = self.drive_handshake(&mut hs, deadline);
        if result.is_err() {
            // Send #FAILURE# (or what else is pending) as Python does; the peer may be gone.
            while let Some(m) = hs.poll_transmit() {
                if self.send_bytes(&m).is_err() {
                    break;
                }
            }
        }
        if deadline.is_some() {
            let stream = self.stream()?;
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
        }
        result?;
        self.dialect = hs.dialect();
        self.pickle_protocol = self.dialect.pickle_protocol();
        Ok(())
    }

    fn drive_handshake(&mut self, hs: &mut Handshake, deadline: Option<Instant>) -> Result<()> {
        // Socket timeouts enforce the deadline. They are set again only when the time left has
        // fallen below half of what is set, so a handshake usually costs two setsockopt calls,
        // and a peer answering each step at the last moment stays under twice the deadline.
        let mut timeout_set: Option<Duration> = None;
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout("handshake deadline passed"));
                }
                if timeout_set.is_none_or(|set| left < set / 2) {
                    let stream = self.stream()?;
                    stream.set_read_timeout(Some(left))?;
                    stream.set_write_timeout(Some(left))?;
                    timeout_set = Some(left);
                }
            }
            while let Some(m) = hs.poll_transmit() {
                self.send_bytes(&m).map_err(|e| timeout_or(e, "handshake deadline passed while sending"))?;
            }
            if hs.is_complete() {
                return Ok(());
            }
            let msg = match self.recv_bytes_max(HANDSHAKE_MAX_MESSAGE) {
                Ok(m) => m,
                Err(e) if e.is_disconnect() => return Err(hs.handle_eof().into()),
                Err(Error::Protocol(FrameError::TooLarge { len, .. })) => {
                    return Err(AuthenticationError::Protocol(format!(
                        "handshake message of {len} bytes declared, the limit is {HANDSHAKE_MAX_MESSAGE}"
                    ))
                    .into());
                }
                Err(Error::Protocol(e)) => {
                    return Err(AuthenticationError::Protocol(e.to_string()).into());
                }
                Err(e) => return Err(timeout_or(e, "handshake deadline passed")),
            };
            hs.handle_message(&msg)?;
        }
    }
}

/// On a connection opened without a key, the first message may not be a challenge: that means
/// the listener demands a key (cpython#123736). Takes the two fields apart so callers can hold a
/// borrow of the decoder's message meanwhile.
fn screen_first_message(expect_no_challenge: &mut bool, readable: &mut bool, msg: &[u8]) -> Result<()> {
    if *expect_no_challenge {
        if msg.starts_with(CHALLENGE) || msg.starts_with(PROCESSING_CHALLENGE) {
            *readable = false;
            return Err(AuthenticationError::KeyRequired.into());
        }
        *expect_no_challenge = false;
    }
    Ok(())
}

/// Maps the I/O errors a socket timeout produces to [`Error::Timeout`].
fn timeout_or(e: Error, what: &'static str) -> Error {
    match &e {
        Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            Error::Timeout(what)
        }
        _ => e,
    }
}

#[cfg(unix)]
impl AsRawFd for Connection {
    /// # Panics
    /// If the connection was closed; use [`Connection::fileno`] for a checked version.
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_ref().map(AsRawFd::as_raw_fd).expect("as_raw_fd on a closed Connection")
    }
}

#[cfg(unix)]
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
    Ok((Connection::new(a, max), Connection::new(b, max)))
}
