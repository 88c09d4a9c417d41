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
//! * the wire core (internal): the sans-IO frame codec, the handshake state
//!   machines and the connection itself (the session: phase,
//!   no-key rule, what end of file and errors mean, every deadline). Bytes and time in,
//!   messages, bytes and events out; no sockets, no clock reads.
//! * the transport (internal): TCP, Unix sockets and Windows named pipes behind one stream and
//!   one listener type.
//! * the blocking API at the root ([`Listener`], [`Client`], [`Connection`], [`pipe`], [`wait`]),
//!   which mirrors Python's; [`reactor`]: one thread, many connections.
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

// One path per public item: the modules below are private unless they are a face of their own
// (`reactor`, `tokio`) or a codec users call directly (`pickle`); what users name is re-exported
// here, once. See ARCHITECTURE.md, "The public API".
mod address;
mod authkey;
mod blocking;
pub mod budget;
mod error;
#[cfg(feature = "pickle")]
#[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
pub mod pickle;
pub mod reactor;
mod settings;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
mod transport;
mod wire;

/// One path per public item: the old ones do not compile (tests/public_api.rs has the new).
///
/// ```compile_fail
/// use mpconn::wire::session::Session;
/// ```
/// The groups holding a key change only through their merging setters (an assignment would
/// drop a key set before):
/// ```compile_fail
/// let mut o = mpconn::reactor::options::ListenOptions::new().authkey("key");
/// o.connection = mpconn::reactor::options::ConnectionOptions::new();
/// ```
/// ```compile_fail
/// let mut o = mpconn::reactor::options::ConnectionOptions::new().authkey("key");
/// o.auth = mpconn::AuthOptions::default();
/// ```
/// ```compile_fail
/// use mpconn::reactor::options::CloseReason;
/// ```
/// ```compile_fail
/// use mpconn::blocking::Client;
/// ```
/// ```compile_fail
/// use mpconn::address::IntoAddress;
/// ```
/// ```compile_fail
/// use mpconn::reactor::handle::Handle;
/// ```
/// ```compile_fail
/// use mpconn::reactor::options::DEFAULT_READ_BUDGET;
/// ```
/// ```compile_fail
/// fn deadlines<H: mpconn::reactor::Handler>(r: &mpconn::reactor::Reactor<H>) -> usize {
///     r.pending_deadlines()
/// }
/// ```
#[cfg(doctest)]
pub struct ApiSurfaceDoctests;

// The README's Rust examples compile as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use address::{Address, Family, IntoAddress, arbitrary_address};
pub use authkey::{AUTHKEY_ENV, AuthKey, default_authkey, set_default_authkey};
pub use blocking::{Client, Connection, ConnectionReader, ConnectionWriter, Listener, ListenerBuilder, pipe, wait};
pub use error::{BufferTooShort, Error, Result, Timeout};
pub use transport::RawDescriptor;
pub use wire::digest::{Digest, DigestPolicy};
pub use wire::frame::{DEFAULT_MAX_MESSAGE_SIZE, FrameError, encode_frame};
pub use wire::handshake::{AuthenticationError, Dialect};
pub use wire::session::{AuthOptions, CloseReason, Timeouts};

/// Not part of the public API: no documentation, no semver promise. The sans-IO protocol core and
/// test hooks, for the crate's own fuzz targets, benches and tests (as rustls' `internal`).
#[doc(hidden)]
pub mod internal {
    pub use crate::wire::{digest, frame, handshake, session};

    /// Deadlines the reactor keeps in its timer structure (what the deadline tests bound).
    pub fn pending_deadlines<H: crate::reactor::Handler>(reactor: &crate::reactor::Reactor<H>) -> usize {
        reactor.pending_deadlines()
    }
}
