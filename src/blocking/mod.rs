//! The blocking API, mirroring Python's `multiprocessing.connection`: [`Listener`], [`Client`],
//! [`Connection`], [`pipe`] and [`wait`]. Each call blocks the calling thread; the protocol work
//! is done by the sans-IO core in [`crate::wire`].

mod client;
mod connection;
mod listener;

pub use client::Client;
pub use connection::{Connection, pipe, wait};
pub use listener::{DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ListenerBuilder};

use crate::address::Address;
use crate::error::Result;

/// Anything that names an address: an [`Address`], a string in the forms
/// [`Address`'s parser](Address#impl-FromStr-for-Address) reads, a `SocketAddr`, a
/// `(host, port)` pair, or a path.
pub trait IntoAddress {
    /// Converts, reporting a malformed address.
    fn into_address(self) -> Result<Address>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for std::net::SocketAddr {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for (&str, u16) {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for &std::path::Path {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl IntoAddress for std::path::PathBuf {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Unix(self))
    }
}
