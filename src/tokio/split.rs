//! A connection split in two for two tasks, as the blocking face's
//! [`crate::blocking::Connection::into_split`]: a [`ConnectionReader`] (the original connection:
//! its buffer, session and socket; every way to receive) and a [`ConnectionWriter`] (a duplicate
//! of the socket, registered with tokio on its own; every way to send). One task receives while
//! another sends, with no lock and no channel between them. Only one side ever reads, so a
//! message is never split between two buffers. Both keep the connection's deadlines: the writer
//! runs the session's sending half (`Session::split_sender` in `src/wire/session.rs`: its
//! write-stall deadline, and one idle clock shared with the reader, so traffic either way
//! keeps both alive).
//!
//! Each half closes its own descriptor when dropped; the socket ends when both are gone.
//! [`ConnectionWriter::close`] shuts the sending direction (the peer reads end of file) and the
//! reader goes on receiving. A Windows named pipe cannot be split (one overlapped handle, one
//! state): `into_split` returns an `Unsupported` I/O error there; TCP can.

#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;

use super::Connection;
use crate::address::Address;
use crate::error::{Error, Result};
use crate::transport::RawDescriptor;
use crate::wire::handshake::Dialect;

impl Connection {
    /// Splits the connection into a receiving and a sending half, for two tasks (as
    /// [`crate::blocking::Connection::into_split`]; see [`ConnectionReader`]). Messages already
    /// queued with `feed_bytes` move to the writer; buffered received messages stay with the
    /// reader. A Windows named pipe cannot be split (an `Unsupported` I/O error); TCP and Unix
    /// sockets can.
    ///
    /// ```no_run
    /// # async fn f(conn: mpconn::tokio::Connection) -> mpconn::Result<()> {
    /// let (mut reader, mut writer) = conn.into_split()?;
    /// let sender = tokio::spawn(async move {
    ///     for i in 0..3u32 {
    ///         writer.send_bytes(&i.to_be_bytes()).await?;
    ///     }
    ///     writer.close().await // the peer reads end of file; the reader goes on
    /// });
    /// while let Ok(message) = reader.recv_bytes().await {
    ///     println!("{} bytes", message.len());
    /// }
    /// sender.await.expect("sender task")?;
    /// # Ok(()) }
    /// ```
    pub fn into_split(mut self) -> Result<(ConnectionReader, ConnectionWriter)> {
        let writer = self.split_writer()?;
        Ok((ConnectionReader { conn: self }, ConnectionWriter { conn: writer }))
    }
}

/// The receiving half of a [`Connection`] ([`Connection::into_split`]): every way to receive,
/// none to send; also a [`Stream`] of messages. Receiving is cancel-safe as on [`Connection`].
/// Dropping it closes its descriptor; the socket stays open while the [`ConnectionWriter`]
/// lives.
#[derive(Debug)]
pub struct ConnectionReader {
    conn: Connection,
}

impl ConnectionReader {
    /// Receives one message ([`Connection::recv_bytes`]). Cancel-safe.
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.conn.recv_bytes().await
    }

    /// Receives one message of at most `maxlength` bytes ([`Connection::recv_bytes_max`]).
    pub async fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>> {
        self.conn.recv_bytes_max(maxlength).await
    }

    /// Receives one message into `buf` ([`Connection::recv_bytes_into`]).
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.conn.recv_bytes_into(buf).await
    }

    /// Receives one message and hands it to `f` without a copy ([`Connection::recv_bytes_with`]).
    pub async fn recv_bytes_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.conn.recv_bytes_with(f).await
    }

    /// Whether a message can be read without waiting, waiting up to `timeout`
    /// ([`Connection::poll`]).
    pub async fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.conn.poll(timeout).await
    }

    /// True when a whole message is already buffered.
    pub fn has_buffered_message(&self) -> bool {
        self.conn.has_buffered_message()
    }

    /// True while messages can still be read.
    pub fn readable(&self) -> bool {
        self.conn.readable()
    }

    /// This half's descriptor (Python's `fileno()`).
    pub fn fileno(&self) -> Result<RawDescriptor> {
        self.conn.fileno()
    }

    /// The peer's address.
    pub fn peer_address(&self) -> Result<Address> {
        self.conn.peer_address()
    }

    /// The handshake dialect of this connection.
    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// The limit on one received message.
    pub fn max_message_size(&self) -> usize {
        self.conn.max_message_size()
    }

    /// Changes the limit on one received message.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.conn.set_max_message_size(max);
    }
}

#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
impl ConnectionReader {
    /// Receives a pickle into a Rust type ([`Connection::recv`]). Cancel-safe.
    pub async fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        self.conn.recv().await
    }

    /// Receives a pickle as a dynamic [`Value`](crate::pickle::Value). Cancel-safe.
    pub async fn recv_value(&mut self) -> Result<crate::pickle::Value> {
        self.conn.recv_value().await
    }
}

impl Stream for ConnectionReader {
    type Item = Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().conn).poll_next(cx)
    }
}

/// The sending half of a [`Connection`] ([`Connection::into_split`]): every way to send, on a
/// duplicate of the socket; also a [`Sink`] of messages. The cancellation rules of
/// [`Connection`]'s sends hold. Dropping it closes its descriptor without shutting anything
/// down; [`ConnectionWriter::close`] shuts the sending direction.
#[derive(Debug)]
pub struct ConnectionWriter {
    conn: Connection,
}

impl ConnectionWriter {
    /// Sends one message ([`Connection::send_bytes`]).
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.conn.send_bytes(buf).await
    }

    /// Queues one message without writing it ([`Connection::feed_bytes`]).
    pub fn feed_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.conn.feed_bytes(buf)
    }

    /// Writes every queued message ([`Connection::flush`]). Cancel-safe.
    pub async fn flush(&mut self) -> Result<()> {
        self.conn.flush().await
    }

    /// The number of queued bytes not yet written.
    pub fn queued_len(&self) -> usize {
        self.conn.queued_len()
    }

    /// Writes what is queued (bounded by one second), then shuts the sending direction of the
    /// socket: the peer reads end of file, and the [`ConnectionReader`] goes on receiving what
    /// the peer still sends. Further sends report [`Error::Closed`].
    pub async fn close(&mut self) -> Result<()> {
        self.conn.close().await
    }

    /// True once [`ConnectionWriter::close`] was called.
    pub fn closed(&self) -> bool {
        self.conn.closed()
    }

    /// This half's descriptor (a duplicate of the reader's).
    pub fn fileno(&self) -> Result<RawDescriptor> {
        self.conn.fileno()
    }

    /// The peer's address.
    pub fn peer_address(&self) -> Result<Address> {
        self.conn.peer_address()
    }

    /// The pickle protocol `send` writes ([`Connection::pickle_protocol`]).
    pub fn pickle_protocol(&self) -> u8 {
        self.conn.pickle_protocol()
    }

    /// Chooses the pickle protocol `send` writes (2 to 5).
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.conn.set_pickle_protocol(protocol);
    }
}

#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
impl ConnectionWriter {
    /// Sends a Rust value as a pickle ([`Connection::send`]).
    pub async fn send<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        self.conn.send(value).await
    }

    /// Sends a dynamic [`Value`](crate::pickle::Value) as a pickle.
    pub async fn send_value(&mut self, value: &crate::pickle::Value) -> Result<()> {
        self.conn.send_value(value).await
    }
}

impl<T> Sink<T> for ConnectionWriter
where
    Connection: Sink<T, Error = Error>,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        Pin::new(&mut self.get_mut().conn).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_close(cx)
    }
}

// The descriptor traits, as on the blocking face's `Connection`: for `poll(2)`, socket options
// through `socket2::SockRef`, or registration elsewhere (do not read or write through it).
#[cfg(unix)]
macro_rules! descriptor_traits {
    ($($ty:ty, $this:ident => $conn:expr);*) => {$(
        #[cfg_attr(docsrs, doc(cfg(unix)))]
        impl AsFd for $ty {
            /// # Panics
            /// If the connection was closed; `fileno` is the checked version.
            fn as_fd(&self) -> BorrowedFd<'_> {
                let $this = self;
                let conn: &Connection = $conn;
                conn.async_stream().map(AsFd::as_fd).expect("as_fd on a closed connection")
            }
        }

        #[cfg_attr(docsrs, doc(cfg(unix)))]
        impl AsRawFd for $ty {
            /// # Panics
            /// If the connection was closed; `fileno` is the checked version.
            fn as_raw_fd(&self) -> RawFd {
                self.as_fd().as_raw_fd()
            }
        }
    )*};
}

#[cfg(unix)]
descriptor_traits!(
    Connection, c => c;
    ConnectionReader, r => &r.conn;
    ConnectionWriter, w => &w.conn
);
