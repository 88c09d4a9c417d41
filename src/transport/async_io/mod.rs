//! The transport of the async face (feature `tokio`): the crate's sockets and pipes registered
//! with tokio. Like the rest of the transport, this is where the platform is chosen (tokio's
//! Unix streams, the crate's Windows pipes woken by their driver thread); the face above
//! (`crate::tokio`) moves framed bytes through [`AsyncStream`] and accepts through
//! [`AsyncSocket`] without knowing the family.

mod listener;
mod stream;

pub(crate) use listener::AsyncSocket;
pub(crate) use stream::{AsyncStream, require_runtime};
