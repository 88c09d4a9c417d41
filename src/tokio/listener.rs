//! The async listener: Python's `Listener` (bind, `accept` with the challenge-response,
//! `address`, `last_accepted`, `close`) on tokio.
//!
//! The socket is bound by the crate's transport, exactly as the blocking listener binds it
//! (`SO_REUSEADDR`, `TCP_NODELAY` inherited by accepted sockets, the Unix socket file made 0600
//! before `listen`, a stale file replaced only when nobody accepts on it, removal on drop), and
//! then waited on through tokio. [`Listener::accept_incoming`] separates accepting from the
//! handshake, so a server can accept the next client while another one authenticates.

use super::Connection;
use crate::address::{Address, IntoAddress};
use crate::error::Result;
use crate::settings::{Bound, ListenSettings, face_setters, listener_accessors};
use crate::transport::async_io::{AsyncSocket, require_runtime};

/// Settings for [`Listener`], made with [`Listener::builder`]; the same as
/// [`crate::ListenerBuilder`]'s.
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerBuilder {
    settings: ListenSettings,
    memory_budget: Option<usize>,
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

    /// Bytes the connections accepted from this listener may hold together in buffered input
    /// (decoders of incomplete messages), before the largest stop reading while the largest of
    /// them finishes its message (default [`crate::budget::DEFAULT_MEMORY_BUDGET`], 1 GiB;
    /// `None`: unbounded). See [`crate::budget`] and SECURITY.md.
    pub fn memory_budget(mut self, bytes: Option<usize>) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Binds and listens. Must be called inside a tokio runtime (an error otherwise).
    pub fn bind(self) -> Result<Listener> {
        require_runtime()?;
        let (socket, factory) = self.settings.bind()?;
        Ok(Listener {
            bound: Bound::new(socket.address().clone(), AsyncSocket::new(socket)?, factory),
            budget: super::budget::SharedBudget::new(self.memory_budget),
        })
    }
}

/// A bound socket that accepts connections (Python's `Listener`), on tokio.
///
/// ```
/// # fn main() -> mpconn::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// // A fresh Unix socket (the fastest family here), demanding a key.
/// let mut listener = mpconn::tokio::Listener::builder().authkey("secret password").bind()?;
/// let address = listener.address().clone();
/// let client = tokio::spawn(async move {
///     let mut conn = mpconn::tokio::Client::new(address).authkey("secret password").connect().await?;
///     conn.recv_bytes().await
/// });
/// let mut conn = listener.accept().await?; // accepts and authenticates
/// conn.send_bytes(b"welcome").await?;
/// assert_eq!(client.await.expect("client task")?, b"welcome");
/// # Ok(()) })
/// # }
/// ```
///
/// A server accepts in a loop and authenticates each connection in a task of its own:
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
    bound: Bound<AsyncSocket>,
    /// The memory budget every accepted connection shares (`None`: unbounded).
    budget: Option<std::sync::Arc<super::budget::SharedBudget>>,
}

impl Listener {
    /// Binds `address` with no authentication and default settings (inside a tokio runtime).
    pub fn bind(address: impl IntoAddress) -> Result<Listener> {
        Listener::builder().address(address).bind()
    }

    /// Settings for a listener.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder { settings: ListenSettings::new(), memory_budget: Some(crate::budget::DEFAULT_MEMORY_BUDGET) }
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
        let (io, peer) = self.bound.socket()?.accept().await?;
        let session = self.bound.accepted(peer.clone())?;
        let mut conn = Connection::new(io, self.bound.factory.max_message_size(), session);
        if let Some(b) = &self.budget {
            conn.set_budget(super::budget::BudgetSlot::new(b.clone()));
        }
        Ok(Incoming { conn, keyed: self.bound.factory.is_keyed(), peer })
    }

    /// Bytes the accepted connections hold together by the memory budget's count (0 without a
    /// budget), and the reads it has refused so far.
    pub fn budget_usage(&self) -> (usize, u64) {
        self.budget.as_ref().map_or((0, 0), |b| b.usage())
    }

    listener_accessors!();
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
    /// [`Error::Authentication`](crate::Error::Authentication) or [`Error::Timeout`](crate::Error::Timeout) on failure) and returns the connection.
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
