//! The async face on tokio (feature `tokio`): [`Listener`], [`Client`] and [`Connection`] as
//! futures, with the names of the blocking API.
//!
//! Why: most Rust services that talk to Python workers run on tokio; without this face they
//! must put the blocking API on a thread pool or drive the reactor by hand. This face is a thin
//! driver of the same sans-IO [`Session`](crate::wire::session::Session) and
//! [`FrameDecoder`](crate::wire::frame::FrameDecoder) the blocking face and the reactor drive, so
//! the handshake, the dialects, the no-key rule, message limits, deadlines and errors are the
//! same; only the waiting differs (tokio's readiness and `sleep_until` the session's deadline).
//! Sockets are made by the crate's transport, so TCP options and the Unix socket's 0600 mode and
//! stale-file handling are those of the blocking listener.
//!
//! ```no_run
//! use mpconn::tokio::{Client, Listener};
//! # async fn demo() -> mpconn::Result<()> {
//! let mut listener = Listener::builder().address("127.0.0.1:6000").authkey("secret").bind()?;
//! let client = tokio::spawn(async {
//!     let mut conn = Client::new("127.0.0.1:6000").authkey("secret").connect().await?;
//!     conn.send_bytes(b"hello").await?;
//!     conn.recv_bytes().await
//! });
//! let mut conn = listener.accept().await?;
//! let msg = conn.recv_bytes().await?;
//! conn.send_bytes(&msg).await?;
//! assert_eq!(client.await.expect("client task")?, b"hello");
//! # Ok(()) }
//! ```
//!
//! Receiving is cancel-safe; sending large messages is not (see [`Connection`]). A
//! [`Stream`](futures_core::Stream) and [`Sink`](futures_sink::Sink) of messages are implemented
//! on [`Connection`].
//!
//! Families: TCP, Unix sockets (abstract names included) and Windows named pipes (`\\.\pipe\name`,
//! message mode without a length prefix, as Python's `PipeConnection`). Pipes go through the
//! crate's own pipe transport, not tokio's `NamedPipeServer`: tokio's pipes read through mio,
//! which reports a read that ended with `ERROR_MORE_DATA` as a plain read, so the end of a
//! message longer than one read cannot be seen there. The crate's pipe driver thread wakes the
//! waiting task on every change of the pipe's state.

mod budget;
mod client;
mod connection;
mod listener;
mod split;
mod stream_sink;

pub use client::Client;
pub use connection::Connection;
pub use listener::{Incoming, Listener, ListenerBuilder};
pub use split::{ConnectionReader, ConnectionWriter};
