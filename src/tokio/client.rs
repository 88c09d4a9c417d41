//! The async client: Python's `Client(address, family=None, authkey=None)` as a future.

use std::time::{Duration, Instant};

use super::Connection;
use crate::address::IntoAddress;
use crate::error::{Error, Result};
use crate::settings::{ClientSettings, Side, face_setters};
use crate::transport::async_io::AsyncStream;

/// Connects to a listener (Python's `Client`), as a builder; the same options as
/// [`crate::Client`]:
///
/// ```
/// use mpconn::tokio::{Client, Listener};
/// # fn main() -> mpconn::Result<()> {
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let mut listener = Listener::builder().address("127.0.0.1:0").authkey("secret password").bind()?;
///     let address = listener.address().clone();
///     let server = tokio::spawn(async move { listener.accept().await?.recv_bytes().await });
///
///     let mut conn = Client::new(address).authkey("secret password").connect().await?;
///     conn.send_bytes(b"hello").await?;
///     assert_eq!(server.await.expect("server task")?, b"hello");
///     Ok(())
/// })
/// # }
/// ```
///
/// A client with no key that meets a listener demanding one gets
/// [`crate::AuthenticationError::KeyRequired`] from its first receive instead of hanging.
#[derive(Debug, Clone)]
#[must_use]
pub struct Client {
    settings: ClientSettings,
}

impl Client {
    /// A client for `address` (no authentication unless a key is set).
    pub fn new(address: impl IntoAddress) -> Client {
        Client { settings: ClientSettings::new(address) }
    }

    face_setters!(.settings.face);

    /// Limit on establishing the connection (default: the OS's).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Connects and, with a key, authenticates.
    pub async fn connect(self) -> Result<Connection> {
        let (address, factory) = self.settings.prepare()?;
        let io = match self.settings.connect_timeout {
            Some(t) => ::tokio::time::timeout(t, AsyncStream::connect(&address))
                .await
                .map_err(|_| Error::Timeout(crate::Timeout::Connect))??,
            None => AsyncStream::connect(&address).await?,
        };
        let session = factory.session(Side::Client, Instant::now())?;
        let mut conn = Connection::new(io, factory.max_message_size(), session);
        if factory.is_keyed() {
            conn.handshake().await?;
        }
        Ok(conn)
    }
}
