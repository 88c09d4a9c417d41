//! mpconn: Python's `multiprocessing.connection` for Rust.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod address;
pub mod authkey;
pub mod blocking;
pub mod error;
#[cfg(feature = "pickle")]
pub mod pickle;
pub mod transport;
pub mod wire;

pub use address::{Address, Family, arbitrary_address};
pub use authkey::{AuthKey, default_authkey, set_default_authkey};
pub use blocking::{Client, Connection, IntoAddress, Listener, ListenerBuilder, pipe, wait};
pub use error::{AuthenticationError, BufferTooShort, Error, Result};
pub use wire::digest::{Digest, DigestPolicy};
pub use wire::handshake::Dialect;
