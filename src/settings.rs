//! The settings core: what every face's builders hold, how one setting merges into others, and
//! the one place a [`Session`] is made from settings.
//!
//! * [`FaceSettings`] is the value the blocking and tokio builders embed (address, family, the
//!   shared [`AuthOptions`], `authenticate`, the message limit); [`ClientSettings`] and
//!   [`ListenSettings`] add what one role needs. The reactor's public
//!   [`ConnectionOptions`](crate::reactor::options::ConnectionOptions) embed the same
//!   [`AuthOptions`].
//! * The setters are written once, as macros ([`auth_setters`], [`face_setters`],
//!   `connection_setters` in the reactor's options), each expanded in every builder that has
//!   those settings.
//! * No setter undoes another: a setter that takes a group of settings at once
//!   ([`merge_auth`], `ListenOptions::connection`) changes only what the group sets (what
//!   differs from the group's default), so a key set before is never lost.
//! * [`SessionFactory`]: key, nonce and timeouts to a [`Session`] of one [`Side`], the only
//!   place a face draws a challenge nonce.

use std::time::{Duration, Instant};

use crate::address::{Address, Family, IntoAddress};
use crate::authkey::{AuthKey, resolve_key};
use crate::error::{Error, Result};
use crate::transport::{self, SocketListener};
use crate::wire::digest::DigestPolicy;
use crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wire::handshake::{Dialect, HANDSHAKE_MAX_MESSAGE, HandshakeConfig, Nonce};
use crate::wire::session::{AuthOptions, DEFAULT_HANDSHAKE_TIMEOUT, Session, Timeouts};

/// Merges `new` into `base`: what `new` sets (differs from [`AuthOptions::default`]) replaces,
/// the rest stays, above all a key set before (an `AuthOptions` without a key never removes one).
pub(crate) fn merge_auth(base: &mut AuthOptions, new: AuthOptions) {
    let default = AuthOptions::default();
    if new.authkey.is_some() {
        base.authkey = new.authkey;
    }
    if new.dialect != default.dialect {
        base.dialect = new.dialect;
    }
    if new.digest_policy != default.digest_policy {
        base.digest_policy = new.digest_policy;
    }
    if new.handshake_timeout != Some(DEFAULT_HANDSHAKE_TIMEOUT) {
        base.handshake_timeout = new.handshake_timeout;
    }
    if new.early_challenge != default.early_challenge {
        base.early_challenge = new.early_challenge;
    }
}

/// The authentication setters, written once: `authkey`, `auth` (merging), `dialect`,
/// `digest_policy` and `early_challenge`, forwarding to the [`AuthOptions`] at `self.<path>`.
macro_rules! auth_setters {
    ($(.$f:ident)*) => {
        /// Run the challenge-response with this key (a listener demands it of every client; a
        /// client answers and delivers it).
        pub fn authkey(mut self, key: impl Into<$crate::AuthKey>) -> Self {
            self$(.$f)*.authkey = Some(key.into());
            self
        }

        /// Key, dialect, digest policy, handshake timeout and early challenge at once. Merges: what `auth` sets
        /// (differs from [`AuthOptions::default`](crate::AuthOptions::default)) replaces, the
        /// rest stays; an `auth` without a key keeps the key set before.
        pub fn auth(mut self, auth: $crate::AuthOptions) -> Self {
            $crate::settings::merge_auth(&mut self$(.$f)*, auth);
            self
        }

        /// The dialect a listener offers (default: CPython, which every CPython since 2.7
        /// answers). A connecting side detects it from the challenge, except that a Red
        /// Hat/FIPS listener's looks like the stock legacy one:
        /// [`Dialect::CpythonLegacySha256`](crate::Dialect::CpythonLegacySha256) answers it
        /// (with a raw HMAC-SHA256); other values change nothing there.
        pub fn dialect(mut self, dialect: $crate::Dialect) -> Self {
            self$(.$f)*.dialect = dialect;
            self
        }

        /// Which digests to accept and answer with (default: what CPython accepts).
        pub fn digest_policy(mut self, policy: $crate::DigestPolicy) -> Self {
            self$(.$f)*.digest_policy = policy;
            self
        }

        /// Whether a connecting side sends its challenge together with its answer to the
        /// listener's (default true: two round trips instead of three); see
        /// [`AuthOptions::early_challenge`](crate::AuthOptions::early_challenge). A listener
        /// ignores it.
        pub fn early_challenge(mut self, on: bool) -> Self {
            self$(.$f)*.early_challenge = on;
            self
        }
    };
}
pub(crate) use auth_setters;

/// The setters every blocking and tokio builder shares, written once: the auth setters, and
/// `authenticate`, `family`, `handshake_timeout` and `max_message_size`, forwarding to the
/// [`FaceSettings`] at `self.<path>`.
macro_rules! face_setters {
    ($(.$f:ident)*) => {
        $crate::settings::auth_setters!($(.$f)* .auth);

        /// Use the process-wide default key if no key is given (Python's `authenticate=True`).
        pub fn authenticate(mut self, on: bool) -> Self {
            self$(.$f)*.authenticate = on;
            self
        }

        /// The family: checked against the address (a listener without an address binds a fresh
        /// address of this family).
        pub fn family(mut self, family: $crate::Family) -> Self {
            self$(.$f)*.family = Some(family);
            self
        }

        /// Limit on one received message (default
        /// [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE)).
        pub fn max_message_size(mut self, max: usize) -> Self {
            self$(.$f)*.max_message_size = max;
            self
        }

        /// Time allowed to connect and complete the handshake (default 10 s; `None`: no
        /// limit, as in Python).
        pub fn handshake_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self$(.$f)*.auth.handshake_timeout = timeout;
            self
        }

        /// The per-connection deadlines (partial message, idle, write stall, close flush;
        /// default [`Timeouts::DEFAULT`](crate::Timeouts::DEFAULT)), enforced by the session as
        /// on every face. Its `handshake` field sets the handshake's too when it differs from
        /// the default (as [`handshake_timeout`](Self::handshake_timeout) does), so a
        /// handshake timeout set before is kept by a `Timeouts` that leaves it at the default.
        pub fn timeouts(mut self, timeouts: $crate::Timeouts) -> Self {
            if timeouts.handshake != $crate::Timeouts::DEFAULT.handshake {
                self$(.$f)*.auth.handshake_timeout = timeouts.handshake;
            }
            self$(.$f)*.timeouts = timeouts;
            self
        }
    };
}
pub(crate) use face_setters;

/// What the blocking and tokio builders of both roles hold.
#[derive(Debug, Clone)]
pub(crate) struct FaceSettings {
    /// The address, or why it is no address (reported when connecting or binding).
    pub(crate) address: Option<std::result::Result<Address, String>>,
    pub(crate) family: Option<Family>,
    pub(crate) auth: AuthOptions,
    pub(crate) authenticate: bool,
    pub(crate) max_message_size: usize,
    /// The deadlines besides the handshake's (that one is `auth`'s).
    pub(crate) timeouts: Timeouts,
}

impl FaceSettings {
    fn new(address: Option<std::result::Result<Address, String>>) -> FaceSettings {
        FaceSettings {
            address,
            family: None,
            auth: AuthOptions::default(),
            authenticate: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            timeouts: Timeouts::DEFAULT,
        }
    }

    /// Sets the address (an unusable one is reported when connecting or binding).
    pub(crate) fn set_address(&mut self, address: impl IntoAddress) {
        // Kept as text until bind or connect reports it (as `Error::Address` again, one prefix).
        self.address = Some(address.into_address().map_err(|e| match e {
            Error::Address(m) => m,
            e => e.to_string(),
        }));
    }

    /// The address checked against the family, `None` if none was given.
    fn address(&self) -> Result<Option<Address>> {
        match &self.address {
            None => Ok(None),
            Some(Err(e)) => Err(Error::Address(e.clone())),
            Some(Ok(a)) => {
                if let Some(f) = self.family {
                    a.check_family(f)?;
                }
                Ok(Some(a.clone()))
            }
        }
    }

    /// The session factory of these settings (the default key resolved if `authenticate`).
    fn factory(&self) -> Result<SessionFactory> {
        let key = resolve_key(self.auth.authkey.clone(), self.authenticate)?;
        let timeouts = Timeouts { handshake: self.auth.handshake_timeout, ..self.timeouts };
        SessionFactory::new(&self.auth, key, timeouts, self.max_message_size)
    }
}

/// A client's settings (blocking and tokio `Client`).
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub(crate) face: FaceSettings,
    pub(crate) connect_timeout: Option<Duration>,
}

impl ClientSettings {
    pub(crate) fn new(address: impl IntoAddress) -> ClientSettings {
        let mut face = FaceSettings::new(None);
        face.set_address(address);
        ClientSettings { face, connect_timeout: None }
    }

    /// The address to connect to and the factory of the client's session.
    pub(crate) fn prepare(&self) -> Result<(Address, SessionFactory)> {
        let address = self.face.address()?.ok_or_else(|| Error::Address("no address".into()))?;
        Ok((address, self.face.factory()?))
    }
}

/// A listener's settings (blocking and tokio `ListenerBuilder`).
#[derive(Debug, Clone)]
pub(crate) struct ListenSettings {
    pub(crate) face: FaceSettings,
    pub(crate) backlog: i32,
    /// How long `accept` waits (the blocking face's; tokio callers use `tokio::time::timeout`).
    pub(crate) accept_timeout: Option<Duration>,
}

impl ListenSettings {
    pub(crate) fn new() -> ListenSettings {
        ListenSettings { face: FaceSettings::new(None), backlog: transport::DEFAULT_BACKLOG, accept_timeout: None }
    }

    /// Resolves the key, then binds (see [`transport::bind_listener`]).
    pub(crate) fn bind(&self) -> Result<(SocketListener, SessionFactory)> {
        let address = self.face.address()?;
        let factory = self.face.factory()?;
        let socket = transport::bind_listener(address, self.face.family, self.backlog)?;
        Ok((socket, factory))
    }
}

/// A bound listener of the blocking or tokio face, but for how it waits: its address, socket
/// (`S`: the transport's, or tokio's view of it), session factory and last peer.
#[derive(Debug)]
pub(crate) struct Bound<S> {
    pub(crate) address: Address,
    pub(crate) socket: Option<S>,
    pub(crate) factory: SessionFactory,
    pub(crate) last_accepted: Option<Address>,
}

impl<S> Bound<S> {
    pub(crate) fn new(address: Address, socket: S, factory: SessionFactory) -> Bound<S> {
        Bound { address, socket: Some(socket), factory, last_accepted: None }
    }

    /// The socket, or an error once closed.
    pub(crate) fn socket(&self) -> Result<&S> {
        self.socket.as_ref().ok_or(Error::Closed("the listener is closed"))
    }

    /// A client from `peer` was accepted: remembered as the last one; its listener session.
    pub(crate) fn accepted(&mut self, peer: Address) -> Result<Session> {
        log::debug!("accepted a connection from {peer}");
        self.last_accepted = Some(peer);
        self.factory.session(Side::Listener, Instant::now())
    }
}

/// The accessors the blocking and tokio `Listener`s share, written once (over `self.bound`, a
/// [`Bound`] whose socket has `raw_descriptor() -> io::Result<RawDescriptor>`).
macro_rules! listener_accessors {
    () => {
        /// The bound address (with the real port if 0 was asked for).
        pub fn address(&self) -> &$crate::Address {
            &self.bound.address
        }

        /// The peer address of the last accepted connection (Python's `last_accepted`):
        /// `ip:port` for TCP, the empty path for Unix clients; `None` before the first accept.
        pub fn last_accepted(&self) -> Option<&$crate::Address> {
            self.bound.last_accepted.as_ref()
        }

        /// The listening socket's descriptor, to wait for clients in another event loop (on
        /// Windows the socket; a pipe listener has none, that is an error).
        pub fn fileno(&self) -> $crate::Result<$crate::RawDescriptor> {
            Ok(self.bound.socket()?.raw_descriptor()?)
        }

        /// Closes the listener; a Unix socket file it created is removed. Dropping does the
        /// same.
        pub fn close(&mut self) {
            self.bound.socket = None;
        }
    };
}
pub(crate) use listener_accessors;

/// Which session a factory makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// An accepted connection: sends the challenge (with a key).
    Listener,
    /// A connected client: answers the challenge (with a key).
    Client,
    /// A client whose non-blocking connect is still in progress (the reactor's).
    Connecting,
}

/// Makes the sessions of one set of settings: key → nonce → timeouts → [`Session`]. Every face
/// makes its sessions here, and only here is a challenge nonce drawn.
#[derive(Debug, Clone)]
pub(crate) struct SessionFactory {
    handshake: Option<HandshakeConfig>,
    timeouts: Timeouts,
    max_message_size: usize,
}

impl SessionFactory {
    /// `key` (else `auth`'s key) with `auth`'s dialect and policy; no key: no handshake.
    /// Settings under which no peer could ever authenticate are a configuration error here,
    /// when the listener is bound or the client connects, not a refusal of every peer later.
    pub(crate) fn new(
        auth: &AuthOptions,
        key: Option<AuthKey>,
        timeouts: Timeouts,
        max_message_size: usize,
    ) -> Result<SessionFactory> {
        let handshake = auth.handshake_config(key);
        if handshake.is_some() {
            if max_message_size < HANDSHAKE_MAX_MESSAGE {
                return Err(Error::Config(format!(
                    "a message limit of {max_message_size} bytes is below the handshake's own messages \
                     (up to {HANDSHAKE_MAX_MESSAGE} bytes): no peer could authenticate"
                )));
            }
            if auth.dialect == Dialect::Processing && auth.digest_policy == DigestPolicy::RequireSha256 {
                return Err(Error::Config(
                    "the processing dialect speaks HMAC-SHA1 only: DigestPolicy::RequireSha256 would refuse every peer"
                        .into(),
                ));
            }
        }
        Ok(SessionFactory { handshake, timeouts, max_message_size })
    }

    /// Whether the sessions run the challenge-response.
    pub(crate) fn is_keyed(&self) -> bool {
        self.handshake.is_some()
    }

    /// The limit on one received message.
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// A new session of `side`, starting `now`, with a fresh nonce if keyed (an error only if
    /// the OS random source fails).
    pub(crate) fn session(&self, side: Side, now: Instant) -> Result<Session> {
        let nonce = match self.handshake {
            Some(_) => Some(Nonce::random()?),
            None => None,
        };
        let auth = self.handshake.as_ref().zip(nonce);
        Ok(match side {
            Side::Listener => Session::listener(auth, self.timeouts, now),
            Side::Client => Session::client(auth, self.timeouts, now),
            Side::Connecting => Session::connecting(auth, self.timeouts, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::digest::DigestPolicy;
    use crate::wire::handshake::Dialect;

    #[test]
    fn merging_auth_keeps_what_the_new_value_leaves_unset() {
        let mut base = AuthOptions::new().authkey("k").dialect(Dialect::Processing).handshake_timeout(None);
        merge_auth(&mut base, AuthOptions::new().digest_policy(DigestPolicy::RequireSha256));
        assert!(base.authkey.is_some());
        assert_eq!(base.dialect, Dialect::Processing);
        assert_eq!(base.handshake_timeout, None);
        assert_eq!(base.digest_policy, DigestPolicy::RequireSha256);
        merge_auth(&mut base, AuthOptions::new().authkey("other").handshake_timeout(Some(Duration::from_secs(1))));
        assert_eq!(base.authkey, Some(AuthKey::from("other")));
        assert_eq!(base.handshake_timeout, Some(Duration::from_secs(1)));
        // Turned off, it stays off through a merge that leaves it at its default, and reaches
        // the handshake.
        merge_auth(&mut base, AuthOptions::new().early_challenge(false));
        merge_auth(&mut base, AuthOptions::new().authkey("third"));
        assert!(!base.early_challenge);
        assert_eq!(base.handshake_config(None).map(|c| c.early_challenge), Some(false));
    }

    #[test]
    fn a_factory_draws_a_fresh_nonce_only_with_a_key() {
        let keyed = SessionFactory::new(&AuthOptions::new().authkey("k"), None, Timeouts::NONE, 1000).unwrap();
        assert!(keyed.is_keyed());
        let mut a = keyed.session(Side::Listener, Instant::now()).unwrap();
        let mut b = keyed.session(Side::Listener, Instant::now()).unwrap();
        assert_ne!(a.poll_transmit(), b.poll_transmit(), "each challenge has its own nonce");
        let open = SessionFactory::new(&AuthOptions::new(), None, Timeouts::NONE, 10).unwrap();
        assert!(!open.is_keyed());
        assert!(open.session(Side::Listener, Instant::now()).unwrap().is_open());
    }
}
