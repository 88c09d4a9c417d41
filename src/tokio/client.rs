//! The async client: Python's `Client(address, family=None, authkey=None)` as a future.

use std::time::{Duration, Instant};

use super::Connection;
use super::io::AsyncStream;
use crate::address::{Address, Family, IntoAddress};
use crate::authkey::{AuthKey, resolve_key};
use crate::error::{Error, Result};
use crate::wire::digest::DigestPolicy;
use crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wire::handshake::{Dialect, Nonce};
use crate::wire::session::{AuthOptions, Session, Timeouts};

/// Connects to a listener (Python's `Client`), as a builder; the same options as
/// [`crate::Client`]:
///
/// ```no_run
/// # async fn demo() -> mpconn::Result<()> {
/// let mut conn = mpconn::tokio::Client::new("localhost:6000").authkey("secret password").connect().await?;
/// conn.send_bytes(b"hello").await?;
/// # Ok(()) }
/// ```
///
/// A client with no key that meets a listener demanding one gets
/// [`crate::AuthenticationError::KeyRequired`] from its first receive instead of hanging.
#[derive(Debug, Clone)]
#[must_use]
pub struct Client {
    address: Result<Address, String>,
    family: Option<Family>,
    auth: AuthOptions,
    authenticate: bool,
    max_message_size: usize,
    connect_timeout: Option<Duration>,
}

impl Client {
    /// A client for `address` (no authentication unless a key is set).
    pub fn new(address: impl IntoAddress) -> Client {
        Client {
            address: address.into_address().map_err(|e| e.to_string()),
            family: None,
            auth: AuthOptions::default(),
            authenticate: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: None,
        }
    }

    /// Checks the address against this family.
    pub fn family(mut self, family: Family) -> Self {
        self.family = Some(family);
        self
    }

    /// Answer and deliver the challenge-response with this key.
    pub fn authkey(mut self, key: impl Into<AuthKey>) -> Self {
        self.auth.authkey = Some(key.into());
        self
    }

    /// Key, dialect, digest policy and handshake timeout at once.
    pub fn auth(mut self, auth: AuthOptions) -> Self {
        self.auth = auth;
        self
    }

    /// The dialect is detected from the listener's challenge, except that a Red Hat/FIPS
    /// listener's looks like the stock legacy one: [`Dialect::CpythonLegacySha256`] answers it.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.auth.dialect = dialect;
        self
    }

    /// Use the process-wide default key if no key is given (Python's `authenticate=True`).
    pub fn authenticate(mut self, on: bool) -> Self {
        self.authenticate = on;
        self
    }

    /// Which digests to accept and answer with (default: what CPython accepts).
    pub fn digest_policy(mut self, policy: DigestPolicy) -> Self {
        self.auth.digest_policy = policy;
        self
    }

    /// Limit on one received message (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Limit on establishing the connection (default: the OS's).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit on the handshake (default 10 s; `None`: no limit).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.auth.handshake_timeout = timeout;
        self
    }

    /// Connects and, with a key, authenticates.
    pub async fn connect(self) -> Result<Connection> {
        let address = self.address.map_err(Error::Address)?;
        if let Some(f) = self.family {
            address.check_family(f)?;
        }
        let key = resolve_key(self.auth.authkey.clone(), self.authenticate)?;
        let io = match self.connect_timeout {
            Some(t) => ::tokio::time::timeout(t, AsyncStream::connect(&address))
                .await
                .map_err(|_| Error::Timeout("connect timeout"))??,
            None => AsyncStream::connect(&address).await?,
        };
        let config = self.auth.handshake_config(key);
        let nonce = match config {
            Some(_) => Some(Nonce::random()?),
            None => None,
        };
        let timeouts = Timeouts { handshake: self.auth.handshake_timeout, ..Timeouts::NONE };
        let session = Session::client(config.as_ref().zip(nonce), timeouts, Instant::now());
        let mut conn = Connection::new(io, self.max_message_size, session);
        if config.is_some() {
            conn.handshake().await?;
        }
        Ok(conn)
    }
}
