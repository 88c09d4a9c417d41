//! The blocking client: Python's `Client(address, family=None, authkey=None)`.

use std::time::{Duration, Instant};

use crate::address::IntoAddress;
use crate::blocking::Connection;
use crate::error::Result;
use crate::settings::{ClientSettings, Side, face_setters};
use crate::transport::Stream;

/// Connects to a listener (Python's `Client`), as a builder:
///
/// ```
/// use mpconn::{Client, Listener};
/// # fn main() -> mpconn::Result<()> {
/// let mut listener = Listener::builder().address("127.0.0.1:0").authkey("secret password").bind()?;
/// let address = listener.address().clone();          // the port the OS chose
/// let server = std::thread::spawn(move || listener.accept()?.recv_bytes());
///
/// let mut conn = Client::new(&address).authkey("secret password").connect()?; // and authenticates
/// conn.send_bytes(b"hello")?;
/// assert_eq!(server.join().unwrap()?, b"hello");
/// # Ok(()) }
/// ```
///
/// The handshake dialect is detected from the listener's challenge (a Red Hat/FIPS listener needs
/// [`Client::dialect`]). A client with no key that
/// meets a listener demanding one gets [`crate::AuthenticationError::KeyRequired`] from its first
/// receive instead of hanging (cpython#123736).
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
    pub fn connect(self) -> Result<Connection> {
        let (address, factory) = self.settings.prepare()?;
        let stream = Stream::connect(&address, self.settings.connect_timeout)?;
        let session = factory.session(Side::Client, Instant::now())?;
        let mut conn = Connection::new(stream, factory.max_message_size(), session);
        if factory.is_keyed() {
            conn.handshake()?;
        }
        Ok(conn)
    }
}
