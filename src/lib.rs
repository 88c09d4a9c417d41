//! # mpconn
//!
//! Python's `multiprocessing.connection` for Rust: [`Listener`], [`Client`], [`Connection`] and
//! the HMAC challenge-response ("digest authentication"), wire-compatible with CPython 2.7 to
//! 3.13 and with the original `processing` package.
//!
//! A Rust [`Listener`] accepts Python `multiprocessing.connection.Client`s, and a Rust
//! [`Client`] talks to Python `Listener`s: same framing (a 4-byte big-endian signed length, or
//! `-1` and an 8-byte length for huge messages), same mutual challenge-response (`#CHALLENGE#`,
//! `#WELCOME#`, `#FAILURE#`; the `{sha256}` digests of Python 3.12+, the raw HMAC-MD5 of Python
//! up to 3.11, and the HMAC-SHA1 of `processing`), and Python objects through pickle.
//!
//! ```
//! use mpconn::{Client, Listener};
//! # fn main() -> mpconn::Result<()> {
//! // A listener on a fresh Unix socket (the fastest family here), demanding a key.
//! let mut listener = Listener::builder().authkey("secret password").bind()?;
//! let address = listener.address().clone();
//!
//! let client = std::thread::spawn(move || -> mpconn::Result<()> {
//!     let mut conn = Client::new(address).authkey("secret password").connect()?;
//!     conn.send(&vec![2.25, 1.5])?;                // pickled, as Python's conn.send
//!     assert_eq!(conn.recv_bytes()?, b"hello");
//!     Ok(())
//! });
//!
//! let mut conn = listener.accept()?;               // runs the challenge-response
//! let numbers: Vec<f64> = conn.recv()?;
//! assert_eq!(numbers, [2.25, 1.5]);
//! conn.send_bytes(b"hello")?;
//! client.join().unwrap()?;
//! # Ok(()) }
//! ```
//!
//! ## Layers
//! * [`wire`]: the sans-IO core: the frame codec ([`wire::frame`]), the handshake state
//!   machines ([`wire::handshake`]) and the connection itself ([`wire::session`]: phase,
//!   no-key rule, what end of file and errors mean, every deadline). Bytes and time in,
//!   messages, bytes and events out; no sockets, no clock reads.
//! * the transport (internal): TCP, Unix sockets and Windows named pipes behind one stream and
//!   one listener type.
//! * [`blocking`]: the API that mirrors Python's; [`reactor`]: one thread, many connections.
//!
//! What it does not do: encrypt. The key authenticates both ends at connect time; everything after
//! the handshake travels in the clear, as in Python. Use Unix sockets (mode 0600) or loopback, or
//! tunnel through TLS/SSH across machines.
//!
//! ## Cargo features
//! * `pickle` (default): `send` / `recv` of serde values and [`pickle::Value`] through the crate's
//!   own pickle codec (protocols 0-5 read, 2-5 written).
//! * `tokio`: the async face, [`tokio`]: `Listener`, `Client` and `Connection` as futures, and a
//!   `Stream`/`Sink` of messages, driving the same sans-IO session.
//!
//! ## Platforms
//! Linux and other Unixes (TCP, Unix-domain sockets, abstract sockets on Linux; the descriptor
//! traits `AsFd` / `AsRawFd` on [`Listener`], [`Connection`] and [`reactor::Reactor`] for
//! embedding), and Windows (TCP and named pipes; `AsRawSocket` on a TCP [`Listener`]). Items
//! that exist on one platform or with one feature only say so on docs.rs.
//!
//! ## Embedding
//! The reactor runs inside another event loop: wait on its descriptor (readable when it has
//! work) at most [`reactor::Reactor::poll_timeout`], then call `run_once` with a zero timeout.
//! `examples/embed_tokio.rs` does it in tokio, `examples/embed_poll.rs` in a `poll(2)` loop.
#![deny(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly rustdoc): badges on items that need a feature or a platform.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Unsafe code only where Windows named pipes call the Windows API (`transport::pipe`).
#![cfg_attr(not(windows), forbid(unsafe_code))]
#![cfg_attr(windows, deny(unsafe_code))]

pub mod address;
pub mod authkey;
pub mod blocking;
pub mod error;
#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
pub mod pickle;
pub mod reactor;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
pub(crate) mod transport;
pub mod wire;

// The README's Rust examples compile as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use address::{Address, Family, arbitrary_address};
pub use authkey::{AuthKey, default_authkey, set_default_authkey};
pub use blocking::{
    Client, Connection, ConnectionReader, ConnectionWriter, IntoAddress, Listener, ListenerBuilder, pipe, wait,
};
pub use error::{AuthenticationError, BufferTooShort, Error, Result};
pub use transport::RawDescriptor;
pub use wire::digest::{Digest, DigestPolicy};
pub use wire::handshake::Dialect;
pub use wire::session::AuthOptions;
