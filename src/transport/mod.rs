//! The transport: one stream type and one listener type over TCP and Unix sockets. This is the
//! only layer that knows which family it runs on; everything above moves bytes through
//! [`Stream`] and [`SocketListener`].
//!
//! Windows named pipes (`AF_PIPE`) are recognised by the address layer; on this platform binding
//! or connecting to one is a clear [`Error::UnsupportedFamily`].

mod readiness;
mod socket;

pub use readiness::wait_readable;
pub use socket::{SocketListener, Stream};

use crate::error::Error;

/// The error for a family this build cannot serve.
pub(crate) fn unsupported(family: crate::address::Family) -> Error {
    Error::UnsupportedFamily(family.name())
}
