//! The async listener: Python's `Listener` (bind, `accept` with the challenge-response,
//! `address`, `last_accepted`, `close`) on tokio.
//!
//! The socket is bound by the crate's transport, exactly as the blocking listener binds it
//! (`SO_REUSEADDR`, TCP_NODELAY inherited by accepted sockets, the Unix socket file made 0600
//! before `listen`, a stale file replaced only when nobody accepts on it, removal on drop), and
//! then waited on through tokio. [`Listener::accept_incoming`] separates accepting from the
//! handshake, so a server can accept the next client while another one authenticates.

use std::time::{Duration, Instant};

use super::Connection;
use super::io::{AsyncStream, require_runtime};
use crate::address::{Address, Family, IntoAddress, arbitrary_address};
use crate::authkey::{AuthKey, resolve_key};
use crate::blocking::DEFAULT_BACKLOG;
use crate::error::{Error, Result};
use crate::transport::{RawDescriptor, SocketListener};
use crate::wire::digest::DigestPolicy;
use crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wire::handshake::{Dialect, HandshakeConfig, Nonce};
use crate::wire::session::{AuthOptions, Session, Timeouts};

/// Settings for [`Listener`], made with [`Listener::builder`]; the same as
/// [`crate::ListenerBuilder`]'s.
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerBuilder {
    address: Option<Result<Address, String>>,
    family: Option<Family>,
    backlog: i32,
    auth: AuthOptions,
    authenticate: bool,
    max_message_size: usize,
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

    /// Demand the challenge-response with the process-wide default key if no key is given.
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

    /// Time a client has to complete the handshake (default
    /// [`crate::blocking::DEFAULT_HANDSHAKE_TIMEOUT`]; `None`: no limit, as in Python).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.auth.handshake_timeout = timeout;
        self
    }

    /// Binds and listens. Must be called inside a tokio runtime (an error otherwise).
    pub fn bind(self) -> Result<Listener> {
        require_runtime()?;
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
                if arbitrary && let Some(dir) = address.unix_path().and_then(|p| p.parent()) {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        if arbitrary && let Some(dir) = address.unix_path().and_then(|p| p.parent()) {
            socket.own_dir(dir.to_path_buf());
        }
        let key = resolve_key(self.auth.authkey.clone(), self.authenticate)?;
        let handshake = self.auth.handshake_config(key);
        let address = socket.address().clone();
        log::debug!("listening (async) on {address}");
        Ok(Listener {
            address,
            socket: Some(Socket::new(socket)?),
            handshake,
            max_message_size: self.max_message_size,
            handshake_timeout: self.auth.handshake_timeout,
            last_accepted: None,
        })
    }
}

/// The listening socket as tokio sees it: tokio registers a duplicate of the descriptor, and the
/// crate's listener is kept for what it owns (the socket file, removed on drop).
#[derive(Debug)]
struct Socket {
    accepting: Accepting,
    /// Kept for what it owns (the Unix socket file, removed on drop); on Windows it also
    /// accepts pipe clients.
    #[cfg_attr(unix, allow(dead_code))]
    listener: SocketListener,
}

#[derive(Debug)]
enum Accepting {
    Tcp(::tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(::tokio::net::UnixListener),
    /// A Windows pipe listener: accepts through the crate's listener in non-blocking mode,
    /// woken by its driver thread.
    #[cfg(windows)]
    Pipe(std::sync::Arc<super::io::Wakers>),
}

impl Socket {
    fn new(listener: SocketListener) -> Result<Socket> {
        #[cfg(unix)]
        let accepting = match listener.try_clone_std()? {
            crate::transport::StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Accepting::Tcp(::tokio::net::TcpListener::from_std(l)?)
            }
            crate::transport::StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                Accepting::Unix(::tokio::net::UnixListener::from_std(l)?)
            }
        };
        #[cfg(windows)]
        let mut listener = listener;
        #[cfg(windows)]
        let accepting = match listener.try_clone_tcp() {
            Some(l) => {
                let l = l?;
                l.set_nonblocking(true)?;
                Accepting::Tcp(::tokio::net::TcpListener::from_std(l)?)
            }
            None => {
                let wakers = std::sync::Arc::new(super::io::Wakers::default());
                if !listener.set_pipe_notify(wakers.clone()) {
                    return Err(crate::transport::unsupported(Family::Pipe));
                }
                Accepting::Pipe(wakers)
            }
        };
        Ok(Socket { accepting, listener })
    }

    /// Accepts one client. Cancel-safe (tokio's accept is).
    async fn accept(&self) -> std::io::Result<(AsyncStream, Address)> {
        match &self.accepting {
            Accepting::Tcp(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((AsyncStream::Tcp(s), a.into()))
            }
            #[cfg(unix)]
            Accepting::Unix(l) => {
                let (s, a) = l.accept().await?;
                let peer = Address::Unix(a.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default());
                Ok((AsyncStream::Unix(s), peer))
            }
            #[cfg(windows)]
            Accepting::Pipe(wakers) => {
                let (stream, peer) = std::future::poll_fn(|cx| {
                    // The waker first, so a client arriving during the attempt is not missed.
                    wakers.set_read(cx.waker());
                    match self.listener.accept_nonblocking() {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::task::Poll::Pending,
                        r => std::task::Poll::Ready(r),
                    }
                })
                .await?;
                let io = AsyncStream::from_stream(stream).map_err(std::io::Error::other)?;
                Ok((io, peer))
            }
        }
    }

    fn raw_descriptor(&self) -> std::io::Result<RawDescriptor> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            match &self.accepting {
                Accepting::Tcp(l) => Ok(l.as_raw_fd()),
                Accepting::Unix(l) => Ok(l.as_raw_fd()),
            }
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawSocket;
            match &self.accepting {
                Accepting::Tcp(l) => Ok(l.as_raw_socket() as usize),
                // A pipe listener has none (its instances come and go): the blocking face's error.
                Accepting::Pipe(_) => self.listener.raw_descriptor(),
            }
        }
    }
}

/// A bound socket that accepts connections (Python's `Listener`), on tokio.
///
/// ```no_run
/// # async fn demo() -> mpconn::Result<()> {
/// let mut listener = mpconn::tokio::Listener::builder().authkey("secret password").bind()?;
/// println!("listening on {}", listener.address());
/// loop {
///     // Accept, then authenticate in a task of its own so a slow client delays nobody. An
///     // accept error (out of descriptors: EMFILE) ends no server: wait a little, go on.
///     let incoming = match listener.accept_incoming().await {
///         Ok(incoming) => incoming,
///         Err(_) => {
///             tokio::time::sleep(std::time::Duration::from_millis(100)).await;
///             continue;
///         }
///     };
///     tokio::spawn(async move {
///         let mut conn = incoming.handshake().await?;
///         while let Ok(msg) = conn.recv_bytes().await {
///             conn.send_bytes(&msg).await?;
///         }
///         Ok::<(), mpconn::Error>(())
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Listener {
    address: Address,
    socket: Option<Socket>,
    handshake: Option<HandshakeConfig>,
    max_message_size: usize,
    handshake_timeout: Option<Duration>,
    last_accepted: Option<Address>,
}

impl Listener {
    /// Binds `address` with no authentication and default settings (inside a tokio runtime).
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
        }
    }

    fn socket(&self) -> Result<&Socket> {
        self.socket.as_ref().ok_or(Error::Closed("the listener is closed"))
    }

    /// Accepts a connection and, if the listener has a key, runs the challenge-response (within
    /// the handshake timeout). A failed handshake is an error for that connection only; the
    /// listener keeps serving. Not cancel-safe once a client is accepted (a dropped future drops
    /// that client); use [`Listener::accept_incoming`] in a `select!`.
    pub async fn accept(&mut self) -> Result<Connection> {
        self.accept_incoming().await?.handshake().await
    }

    /// Accepts a connection without authenticating it yet: run [`Incoming::handshake`], perhaps
    /// in a task of its own. The handshake deadline runs from the accept. Cancel-safe.
    pub async fn accept_incoming(&mut self) -> Result<Incoming> {
        let (io, peer) = self.socket()?.accept().await?;
        log::debug!("accepted a connection from {peer}");
        self.last_accepted = Some(peer.clone());
        let nonce = match self.handshake {
            Some(_) => Some(Nonce::random()?),
            None => None,
        };
        let timeouts = Timeouts { handshake: self.handshake_timeout, ..Timeouts::NONE };
        let session = Session::listener(self.handshake.as_ref().zip(nonce), timeouts, Instant::now());
        Ok(Incoming {
            conn: Connection::new(io, self.max_message_size, session),
            keyed: self.handshake.is_some(),
            peer,
        })
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The peer address of the last accepted connection (Python's `last_accepted`).
    pub fn last_accepted(&self) -> Option<&Address> {
        self.last_accepted.as_ref()
    }

    /// The listening socket's descriptor.
    pub fn fileno(&self) -> Result<RawDescriptor> {
        Ok(self.socket()?.raw_descriptor()?)
    }

    /// Closes the listener; a Unix socket file it created is removed. Dropping does the same.
    pub fn close(&mut self) {
        self.socket = None;
    }
}

/// An accepted connection whose handshake has not run yet (from [`Listener::accept_incoming`]).
#[derive(Debug)]
#[must_use = "an incoming connection does nothing until its handshake runs"]
pub struct Incoming {
    conn: Connection,
    keyed: bool,
    peer: Address,
}

impl Incoming {
    /// The peer's address (`ip:port` for TCP, usually the empty path for Unix sockets).
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Runs the challenge-response if the listener has a key (within its handshake timeout;
    /// [`Error::Authentication`] or [`Error::Timeout`] on failure) and returns the connection.
    pub async fn handshake(mut self) -> Result<Connection> {
        if self.keyed
            && let Err(e) = self.conn.handshake().await
        {
            log::info!("handshake with {} failed: {e}", self.peer);
            return Err(e);
        }
        Ok(self.conn)
    }
}
