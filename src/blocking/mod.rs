//! The blocking API, mirroring Python's `multiprocessing.connection`: [`Listener`], [`Client`],
//! [`Connection`], [`pipe`] and [`wait`]. Each call blocks the calling thread; the protocol work
//! is done by the sans-IO core in [`crate::wire`].

mod client;
mod connection;
mod listener;

pub use client::Client;
pub use connection::{Connection, ConnectionReader, ConnectionWriter, pipe, wait};
pub use listener::{Listener, ListenerBuilder};
