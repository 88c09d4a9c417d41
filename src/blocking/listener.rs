//! The blocking listener: Python's `Listener` (bind, `accept` with the challenge-response,
//! `address`, `last_accepted`, `close`), plus what Python lacks: an accept timeout
//! (cpython#76425) and a handshake deadline, so a silent peer cannot block `accept` forever.

use std::time::{Duration, Instant};

use crate::address::{Address, Family, arbitrary_address};
use crate::authkey::{AuthKey, resolve_key};
use crate::blocking::{Connection, IntoAddress};
use crate::error::{Error, Result};
use crate::transport::{RawDescriptor, SocketListener};
use crate::wire::digest::DigestPolicy;
use crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wire::handshake::{Dialect, HandshakeConfig, Nonce};
use crate::wire::session::{AuthOptions, Session, Timeouts};

/// Default listen backlog. Python's is 1, which refuses bursts of clients; this is larger.
pub const DEFAULT_BACKLOG: i32 = 128;

/// Settings for [`Listener`], made with [`Listener::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerBuilder {
    address: Option<Result<Address, String>>,
    family: Option<Family>,
    backlog: i32,
    auth: AuthOptions,
    authenticate: bool,
    max_message_size: usize,
    accept_timeout: Option<Duration>,
}

impl ListenerBuilder {
    /// The address to bind (default: a fresh address of the family, see [`arbitrary_address`]).
    pub fn address(mut self, address: impl IntoAddress) -> Self {
        self.address = Some(address.into_address().map_err(|e| e.to_string()));
        self
    }

    /// The family; checked against the address, or picks the arbitrary address's family.
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// The listen backlog (default [`DEFAULT_BACKLOG`]).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Demand the challenge-response with this key from every client.
    pub fn authkey(mut self, key: impl Into<AuthKey>) -> Self {
        self.auth.authkey = Some(key.into());
        self
    }

    /// Key, dialect, digest policy and handshake timeout at once.
    pub fn auth(mut self, auth: AuthOptions) -> Self {
        self.auth = auth;
        self
    }

    /// Demand the challenge-response with the process-wide default key if no key is given
    /// (Python's `authenticate=True`).
    pub fn authenticate(mut self, on: bool) -> Self {
        self.authenticate = on;
        self
    }

    /// The handshake dialect to offer (default: CPython, which every CPython since 2.7 answers).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.auth.dialect = dialect;
        self
    }

    /// Which digests to accept (default: what CPython accepts).
    pub fn digest_policy(mut self, policy: DigestPolicy) -> Self {
        self.auth.digest_policy = policy;
        self
    }

    /// Limit on one received message (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Time a client has to complete the handshake (default [`crate::blocking::DEFAULT_HANDSHAKE_TIMEOUT`];
    /// `None`: no limit, as in Python).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.auth.handshake_timeout = timeout;
        self
    }

    /// How long `accept` waits for a client (default: forever).
    pub fn accept_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.accept_timeout = timeout;
        self
    }

    /// Binds and listens.
    pub fn bind(self) -> Result<Listener> {
        let (address, arbitrary) = match self.address {
            Some(Ok(a)) => {
                if let Some(f) = self.family {
                    a.check_family(f)?;
                }
                (a, false)
            }
            Some(Err(e)) => return Err(Error::Address(e)),
            None => (arbitrary_address(self.family.unwrap_or_else(Family::fastest))?, true),
        };
        let mut socket = match SocketListener::bind(&address, self.backlog) {
            Ok(s) => s,
            Err(e) => {
                if arbitrary {
                    remove_private_dir(&address);
                }
                return Err(e);
            }
        };
        if arbitrary && let Some(dir) = address.unix_path().and_then(|p| p.parent()) {
            socket.own_dir(dir.to_path_buf());
        }
        let key = resolve_key(self.auth.authkey.clone(), self.authenticate)?;
        let handshake = self.auth.handshake_config(key);
        log::debug!("listening on {}", socket.address());
        Ok(Listener {
            address: socket.address().clone(),
            socket: Some(socket),
            handshake,
            max_message_size: self.max_message_size,
            handshake_timeout: self.auth.handshake_timeout,
            accept_timeout: self.accept_timeout,
            last_accepted: None,
        })
    }
}

fn remove_private_dir(address: &Address) {
    if let Some(dir) = address.unix_path().and_then(|p| p.parent()) {
        let _ = std::fs::remove_dir(dir);
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
    address: Address,
    socket: Option<SocketListener>,
    handshake: Option<HandshakeConfig>,
    max_message_size: usize,
    handshake_timeout: Option<Duration>,
    accept_timeout: Option<Duration>,
    last_accepted: Option<Address>,
}

impl Listener {
    /// Binds `address` with no authentication and default settings.
    pub fn bind(address: impl IntoAddress) -> Result<Listener> {
        Listener::builder().address(address).bind()
    }

    /// Settings for a listener.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder {
            address: None,
            family: None,
            backlog: DEFAULT_BACKLOG,
            auth: AuthOptions::default(),
            authenticate: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            accept_timeout: None,
        }
    }

    fn socket(&self) -> Result<&SocketListener> {
        self.socket.as_ref().ok_or(Error::Closed("the listener is closed"))
    }

    /// Accepts a connection and, if the listener has a key, runs the challenge-response.
    ///
    /// A failed handshake is an error for that connection only ([`Error::Authentication`], or
    /// [`Error::Timeout`] when the peer is too slow); the listener keeps serving. Waits at most
    /// the accept timeout, if one was set.
    pub fn accept(&mut self) -> Result<Connection> {
        self.accept_within(self.accept_timeout)
    }

    /// Like [`Listener::accept`], waiting at most `timeout` for a client ([`Error::Timeout`]).
    pub fn accept_within(&mut self, timeout: Option<Duration>) -> Result<Connection> {
        let socket = self.socket()?;
        let (stream, peer) = match timeout {
            Some(t) => {
                socket.accept_within(t)?.ok_or(Error::Timeout("no client connected within the accept timeout"))?
            }
            None => socket.accept()?,
        };
        log::debug!("accepted a connection from {peer}");
        self.last_accepted = Some(peer);
        let nonce = match self.handshake {
            Some(_) => Some(Nonce::random()?),
            None => None,
        };
        let timeouts = Timeouts { handshake: self.handshake_timeout, ..Timeouts::NONE };
        let session = Session::listener(self.handshake.as_ref().zip(nonce), timeouts, Instant::now());
        let mut conn = Connection::new(stream, self.max_message_size, session);
        if self.handshake.is_some()
            && let Err(e) = conn.handshake()
        {
            log::info!(
                "handshake with {} failed: {e}",
                self.last_accepted.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            return Err(e);
        }
        Ok(conn)
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The peer address of the last accepted connection (Python's `last_accepted`): `ip:port` for
    /// TCP, the empty path for Unix clients; `None` before the first accept.
    pub fn last_accepted(&self) -> Option<&Address> {
        self.last_accepted.as_ref()
    }

    /// The listening socket's descriptor, to wait for clients in another event loop (on Windows
    /// the socket; a pipe listener has none, that is an error).
    pub fn fileno(&self) -> Result<RawDescriptor> {
        Ok(self.socket()?.raw_descriptor()?)
    }

    /// Closes the listener; a Unix socket file it created is removed. Dropping does the same.
    pub fn close(&mut self) {
        self.socket = None;
    }
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
        self.socket.as_ref().map(std::os::fd::AsRawFd::as_raw_fd).expect("as_raw_fd on a closed Listener")
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
        self.socket.as_ref().map(std::os::fd::AsFd::as_fd).expect("as_fd on a closed Listener")
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
