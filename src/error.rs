//! The crate's one error type.
//!
//! Python's `multiprocessing.connection` raises two exceptions of its own, `AuthenticationError`
//! and `BufferTooShort`, and otherwise `EOFError` / `OSError`. [`Error`] keeps that shape: the two
//! named exceptions are their own types ([`AuthenticationError`], [`BufferTooShort`]) so callers can
//! match on them, end of file is distinct from end of file inside a message, and every I/O failure
//! keeps its [`std::io::Error`] as the source.

use std::fmt;
use std::io;

use crate::wire::frame::FrameError;
pub use crate::wire::handshake::AuthenticationError;

/// Which deadline passed ([`Error::Timeout`]). Its text is the error's message.
///
/// ```
/// use mpconn::{Error, Timeout};
/// let e = Error::Timeout(Timeout::Idle);
/// assert!(matches!(e, Error::Timeout(Timeout::Idle)));
/// assert_eq!(e.to_string(), "timed out: idle timeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Timeout {
    /// The handshake (connect and challenge-response) took longer than its deadline.
    #[error("handshake deadline passed")]
    Handshake,
    /// No traffic either way for the idle timeout.
    #[error("idle timeout")]
    Idle,
    /// One message stayed incomplete longer than the partial-message timeout.
    #[error("a message stayed incomplete too long")]
    PartialMessage,
    /// The peer took none of our output for the write-stall timeout.
    #[error("the peer did not read our output")]
    WriteStall,
    /// The caller's write timeout passed before the peer took the whole message.
    #[error("the write timeout passed before the peer took the whole message")]
    Write,
    /// The queued output could not be flushed within the close-flush time (async `close`).
    #[error("queued output was not flushed within the close-flush time and was dropped")]
    CloseFlush,
    /// No connection within the connect timeout.
    #[error("connect timeout")]
    Connect,
    /// No client connected within the accept timeout.
    #[error("no client connected within the accept timeout")]
    Accept,
    /// An application's own deadline (the command-line tool's, say).
    #[error("{0}")]
    Other(&'static str),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on a connection, a listener or a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, kept as the source.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// The mutual challenge-response failed (Python's `AuthenticationError`).
    #[error(transparent)]
    Authentication(#[from] AuthenticationError),

    /// The buffer given to `recv_bytes_into` was too small; carries the complete message
    /// (Python's `BufferTooShort`). The connection stays usable.
    #[error(transparent)]
    BufferTooShort(#[from] BufferTooShort),

    /// The peer closed the connection cleanly between messages (Python's `EOFError`).
    #[error("end of file: the peer closed the connection")]
    Eof,

    /// The peer closed the connection in the middle of a message.
    #[error("got end of file during message")]
    EofInMessage,

    /// The peer broke the framing rules (a negative length, a length above the limit).
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),

    /// A deadline passed; [`Timeout`] says which (the session's deadlines are the reactor's
    /// [`CloseReason`](crate::CloseReason) timeouts, so every face reports them alike).
    #[error("timed out: {0}")]
    Timeout(Timeout),

    /// The address could not be parsed or does not fit the requested family.
    #[error("bad address: {0}")]
    Address(String),

    /// A setting is invalid (a malformed key in the environment, an option out of range).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The address family is not available on this platform (for example `AF_PIPE` off Windows).
    #[error("address family {0} is not supported on this platform")]
    UnsupportedFamily(&'static str),

    /// The connection was closed locally, or an earlier error left it unusable.
    #[error("the connection is closed{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    Closed(&'static str),

    /// The reactor did not queue a message (see [`crate::reactor::SendError`], kept as the
    /// source): the connection is gone, closing or not open yet, or its queue is full
    /// (`SendError::Full`: the caller still has the message; retry after `on_drained`).
    #[error("the message was not queued: {0}")]
    Send(#[from] crate::reactor::SendError),

    /// A pickle could not be encoded or decoded. The connection stays usable.
    #[cfg(feature = "pickle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
    #[error(transparent)]
    Pickle(#[from] crate::pickle::PickleError),
}

impl Error {
    /// True for errors that mean the peer went away: [`Error::Eof`], [`Error::EofInMessage`], and
    /// the I/O errors for a reset or broken pipe.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Eof | Error::EofInMessage => true,
            Error::Io(e) => crate::wire::session::is_disconnect(e.kind()),
            _ => false,
        }
    }
}

/// A refused [`crate::reactor::Context::send_owned`] as an [`Error`], for `?` in functions that
/// return [`Result`]: the error is kept ([`Error::Send`]), the message handed back is dropped
/// (match on the pair instead to keep it).
impl From<(crate::reactor::SendError, Vec<u8>)> for Error {
    fn from((error, _message): (crate::reactor::SendError, Vec<u8>)) -> Error {
        Error::Send(error)
    }
}

/// `recv_bytes_into` was given a buffer too small for the message. Holds the complete message, as
/// Python's `BufferTooShort.args[0]` does; the connection stays usable.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("buffer too short: the message has {} bytes, the buffer {buffer_len}", message.len())]
pub struct BufferTooShort {
    /// The complete message that did not fit.
    pub message: Vec<u8>,
    /// The size of the buffer that was offered.
    pub buffer_len: usize,
}

impl fmt::Debug for BufferTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferTooShort")
            .field("message_len", &self.message.len())
            .field("buffer_len", &self.buffer_len)
            .finish()
    }
}
