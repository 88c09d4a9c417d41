//! The blocking listener: Python's `Listener` (bind, `accept` with the challenge-response,
//! `address`, `last_accepted`, `close`), plus what Python lacks: an accept timeout
//! (cpython#76425) and a handshake deadline, so a silent peer cannot block `accept` forever.

use std::time::Duration;

use crate::address::IntoAddress;
use crate::blocking::Connection;
use crate::error::{Error, Result};
use crate::settings::{Bound, ListenSettings, face_setters, listener_accessors};
use crate::transport::SocketListener;

/// Settings for [`Listener`], made with [`Listener::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerBuilder {
    settings: ListenSettings,
}

impl ListenerBuilder {
    /// The address to bind (default: a fresh address of the family, see
    /// [`arbitrary_address`](crate::arbitrary_address)).
    pub fn address(mut self, address: impl IntoAddress) -> Self {
        self.settings.face.set_address(address);
        self
    }

    /// The listen backlog (default 128; Python's is 1, which refuses bursts of clients).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.settings.backlog = backlog;
        self
    }

    face_setters!(.settings.face);

    /// How long `accept` waits for a client (default: forever).
    pub fn accept_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.accept_timeout = timeout;
        self
    }

    /// Binds and listens.
    pub fn bind(self) -> Result<Listener> {
        let (socket, factory) = self.settings.bind()?;
        Ok(Listener {
            bound: Bound::new(socket.address().clone(), socket, factory),
            accept_timeout: self.settings.accept_timeout,
        })
    }
}

/// A bound socket that accepts connections (Python's `Listener`).
///
/// ```
/// use mpconn::{Client, Listener};
/// # fn main() -> mpconn::Result<()> {
/// let mut listener = Listener::builder().authkey("secret password").bind()?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || -> mpconn::Result<Vec<u8>> {
///     let mut conn = Client::new(address).authkey("secret password").connect()?;
///     conn.recv_bytes()
/// });
/// let mut conn = listener.accept()?;
/// conn.send_bytes(b"hello")?;
/// assert_eq!(client.join().unwrap()?, b"hello");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    bound: Bound<SocketListener>,
    accept_timeout: Option<Duration>,
}

impl Listener {
    /// Binds `address` with no authentication and default settings.
    pub fn bind(address: impl IntoAddress) -> Result<Listener> {
        Listener::builder().address(address).bind()
    }

    /// Settings for a listener.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder { settings: ListenSettings::new() }
    }

    /// Accepts a connection and, if the listener has a key, runs the challenge-response.
    ///
    /// A failed handshake is an error for that connection only ([`Error::Authentication`], or
    /// [`Error::Timeout`] when the peer is too slow); the listener keeps serving. Waits at most
    /// the accept timeout, if one was set.
    ///
    /// As in Python, the handshake runs inside `accept`: one client that connects and says
    /// nothing holds the next `accept` for up to the handshake deadline (10 s by default). A
    /// server facing untrusted clients sets a short
    /// [`handshake_timeout`](ListenerBuilder::handshake_timeout), or serves from the reactor or
    /// the tokio face, where handshakes run side by side.
    pub fn accept(&mut self) -> Result<Connection> {
        self.accept_within(self.accept_timeout)
    }

    /// Like [`Listener::accept`], waiting at most `timeout` for a client ([`Error::Timeout`]).
    pub fn accept_within(&mut self, timeout: Option<Duration>) -> Result<Connection> {
        let socket = self.bound.socket()?;
        let (stream, peer) = match timeout {
            Some(t) => socket.accept_within(t)?.ok_or(Error::Timeout(crate::Timeout::Accept))?,
            None => socket.accept()?,
        };
        let session = self.bound.accepted(peer)?;
        let mut conn = Connection::new(stream, self.bound.factory.max_message_size(), session);
        if self.bound.factory.is_keyed()
            && let Err(e) = conn.handshake()
        {
            log::info!(
                "handshake with {} failed: {e}",
                self.bound.last_accepted.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            return Err(e);
        }
        Ok(conn)
    }

    listener_accessors!();
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl std::os::fd::AsRawFd for Listener {
    /// The listening socket's descriptor: readable when a client waits to be accepted, so
    /// another event loop can wait on it and call [`Listener::accept`] (which then runs the
    /// handshake, blocking up to the handshake timeout).
    ///
    /// # Panics
    /// If the listener was closed; [`Listener::fileno`] is the checked version.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.bound.socket.as_ref().map(std::os::fd::AsRawFd::as_raw_fd).expect("as_raw_fd on a closed Listener")
    }
}

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
impl std::os::fd::AsFd for Listener {
    /// The listening socket, borrowed (see the `AsRawFd` implementation).
    ///
    /// # Panics
    /// If the listener was closed.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.bound.socket.as_ref().map(std::os::fd::AsFd::as_fd).expect("as_fd on a closed Listener")
    }
}

#[cfg(windows)]
#[cfg_attr(docsrs, doc(cfg(windows)))]
impl std::os::windows::io::AsRawSocket for Listener {
    /// The listening TCP socket: readable (in `WSAPoll` or `select`) when a client waits.
    ///
    /// There is no `AsRawHandle`: a named-pipe listener (the default family on Windows) has no
    /// single handle, its pipe instances come and go with the clients.
    ///
    /// # Panics
    /// If the listener is a named-pipe listener or was closed; [`Listener::fileno`] is the
    /// checked version (an error for those).
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        match self.fileno() {
            Ok(socket) => socket as std::os::windows::io::RawSocket,
            Err(e) => panic!("as_raw_socket on a Listener without a socket: {e}"),
        }
    }
}
