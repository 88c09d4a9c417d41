//! mpconn: Python's `multiprocessing.connection` for Rust.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod authkey;
pub mod error;
pub mod wire;

pub use authkey::{AuthKey, default_authkey, set_default_authkey};
pub use error::{AuthenticationError, BufferTooShort, Error, Result};
pub use wire::digest::{Digest, DigestPolicy};
pub use wire::handshake::Dialect;
