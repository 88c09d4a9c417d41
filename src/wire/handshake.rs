//! The mutual HMAC challenge-response, as sans-IO state machines for both roles.
//!
//! A listener *delivers* a challenge then *answers* the peer's; a client answers then delivers.
//! [`Handshake`] works on whole messages (bodies): feed it each received message with
//! [`Handshake::handle_message`], send every body [`Handshake::poll_transmit`] yields (framed with
//! [`crate::wire::frame`]), until [`Handshake::is_complete`]. It reads no clock and no socket; the
//! random challenge comes in as a [`Nonce`], so tests are deterministic.
//!
//! Dialects (see `PROTOCOL.md`):
//! * [`Dialect::Cpython`]: `#CHALLENGE#{sha256}` + 40 random bytes; replies `{name}mac` or, from
//!   Python up to 3.11, a raw 16-byte HMAC-MD5 of the whole message.
//! * [`Dialect::CpythonLegacy`]: `#CHALLENGE#` + 20 random bytes, raw HMAC-MD5 (what 2.7-3.11
//!   listeners send).
//! * [`Dialect::Processing`]: the original package: `#CHALLENGE:` + 20 bytes, raw HMAC-SHA1,
//!   `#WELCOME` / `#AUTHENTICATION_FAILED`.
//! * [`Dialect::CpythonLegacySha256`]: Red Hat's FIPS patch (`HMAC_DIGEST_NAME = 'sha256'`):
//!   the legacy 20-byte challenge answered with a raw 32-byte HMAC-SHA256. A raw 32-byte reply is
//!   unambiguous (no `{name}` reply and no legacy one has that length), so every side accepts it
//!   and answers such a peer's own challenge the same way; a client must be told, because a
//!   RHEL listener's challenge looks like any legacy one.
//!
//! The answering side detects the dialect from the challenge. On a failure the state machine
//! still yields the `#FAILURE#` message to send before the connection is closed, as Python does.

use crate::authkey::{AuthKey, fill_random};
use crate::error::Result;
use crate::wire::digest::{Digest, DigestPolicy};

/// Every handshake message is refused above this many bytes, as Python's `recv_bytes(256)`.
pub const HANDSHAKE_MAX_MESSAGE: usize = 256;

/// CPython's challenge prefix.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// CPython's success answer.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// CPython's failure answer.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// The `processing` package's challenge prefix.
pub const PROCESSING_CHALLENGE: &[u8] = b"#CHALLENGE:";
/// The `processing` package's success answer.
pub const PROCESSING_WELCOME: &[u8] = b"#WELCOME";
/// The `processing` package's failure answer.
pub const PROCESSING_FAILURE: &[u8] = b"#AUTHENTICATION_FAILED";

/// Random bytes of a modern challenge (CPython's `MESSAGE_LENGTH`).
pub const MODERN_NONCE_LEN: usize = 40;
/// Random bytes of a legacy or `processing` challenge.
pub const LEGACY_NONCE_LEN: usize = 20;

/// The longest digest name CPython allows inside braces (`sha3_256`).
const MAX_DIGEST_NAME: usize = 8;

/// Which handshake a listener speaks. A client detects it from the challenge it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Dialect {
    /// CPython 3.12+ (`{sha256}` challenge); interoperates with every CPython since 2.7.
    #[default]
    Cpython,
    /// CPython 2.7-3.11: 20-byte challenge, raw HMAC-MD5 reply.
    CpythonLegacy,
    /// The original `processing` package (0.40/0.52): HMAC-SHA1.
    Processing,
    /// Red Hat's CPython 3.6-3.11 (FIPS): the legacy 20-byte challenge, answered with a raw
    /// HMAC-SHA256 (python/cpython#16264, never merged upstream). Needed on the client side to
    /// answer a RHEL listener; a listener recognises RHEL clients in every dialect.
    CpythonLegacySha256,
}

impl Dialect {
    /// The pickle protocol every peer that speaks this dialect reads: 2 where the peer may be a
    /// Python 2 (`processing`, and the legacy handshake of CPython 2.7-3.11), 4 for Red Hat's
    /// Python 3 and CPython 3.12+. [`Handshake::pickle_protocol`] refines this from what the
    /// peer actually sent.
    pub fn pickle_protocol(self) -> u8 {
        match self {
            Dialect::Processing | Dialect::CpythonLegacy => 2,
            Dialect::Cpython | Dialect::CpythonLegacySha256 => 4,
        }
    }

    /// The name the command line and [`std::str::FromStr`] use, also in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Cpython => "cpython",
            Dialect::CpythonLegacy => "legacy",
            Dialect::Processing => "processing",
            Dialect::CpythonLegacySha256 => "legacy-sha256",
        }
    }

    fn welcome(self) -> &'static [u8] {
        match self {
            Dialect::Processing => PROCESSING_WELCOME,
            _ => WELCOME,
        }
    }

    fn failure(self) -> &'static [u8] {
        match self {
            Dialect::Processing => PROCESSING_FAILURE,
            _ => FAILURE,
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Dialect> {
        match s.to_ascii_lowercase().as_str() {
            "cpython" | "modern" | "python" => Ok(Dialect::Cpython),
            "legacy" | "cpython-legacy" => Ok(Dialect::CpythonLegacy),
            "processing" => Ok(Dialect::Processing),
            "legacy-sha256" | "rhel" | "fips" => Ok(Dialect::CpythonLegacySha256),
            _ => Err(crate::Error::Config(format!(
                "unknown dialect {s:?} (expected cpython, legacy, legacy-sha256 or processing)"
            ))),
        }
    }
}

/// Random bytes for one challenge. Never reuse one: take a fresh one from [`Nonce::random`].
#[derive(Clone)]
pub struct Nonce([u8; MODERN_NONCE_LEN]);

impl Nonce {
    /// A fresh nonce from the OS random source.
    pub fn random() -> Result<Nonce> {
        let mut b = [0u8; MODERN_NONCE_LEN];
        fill_random(&mut b)?;
        Ok(Nonce(b))
    }

    /// A nonce from given bytes, for deterministic tests.
    pub fn from_bytes(b: [u8; MODERN_NONCE_LEN]) -> Nonce {
        Nonce(b)
    }
}

/// The settings of one handshake.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// The shared secret.
    pub key: AuthKey,
    /// The dialect a listener offers (ignored by a client, which follows the challenge).
    pub dialect: Dialect,
    /// Which digests are acceptable.
    pub policy: DigestPolicy,
    /// The digest a modern challenge names (CPython's `digest_name`, default sha256).
    pub challenge_digest: Digest,
    /// A client sends its challenge together with its answer to the listener's, instead of
    /// after the listener's `#WELCOME#`: two round trips instead of three (ignored by a
    /// listener, which always speaks first). Every CPython and `processing` listener reads
    /// one message at a time, exactly its length, so the challenge waits unread until it is
    /// asked for; a peer that reads ahead and drops the rest needs it off. Default:
    /// [`EARLY_CHALLENGE_DEFAULT`].
    pub early_challenge: bool,
}

/// Whether a client sends its challenge early unless told: on where the transport can
/// acknowledge at once (`TCP_QUICKACK`: Linux, Android), off elsewhere. A CPython listener over
/// TCP writes `#WELCOME#` and its answer back to back with Nagle's algorithm on, and holds the
/// answer until `#WELCOME#` is acknowledged; without a prompt ACK each connect would wait for
/// the delayed-ACK timer (40 ms on Linux, up to 200 ms on Windows), more than the round trip
/// saved. Turned on by hand elsewhere it is still correct, and faster against peers that
/// write with `TCP_NODELAY` (every face of this crate) or over Unix sockets.
pub const EARLY_CHALLENGE_DEFAULT: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl HandshakeConfig {
    /// Defaults: CPython dialect, CPython-compatible policy, sha256 challenges.
    pub fn new(key: AuthKey) -> HandshakeConfig {
        HandshakeConfig {
            key,
            dialect: Dialect::Cpython,
            policy: DigestPolicy::CpythonCompatible,
            challenge_digest: Digest::Sha256,
            early_challenge: EARLY_CHALLENGE_DEFAULT,
        }
    }
}

/// The handshake failed. Python raises `multiprocessing.AuthenticationError` in the same cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticationError {
    /// The peer's answer to our challenge did not match (wrong key, or a mangled reply).
    #[error("authentication failed: digest received was wrong")]
    DigestMismatch,
    /// The peer rejected our answer to its challenge (it has another key).
    #[error(
        "authentication failed: digest sent was rejected (another key, or a dialect the listener does not take: a Red Hat/FIPS listener needs legacy-sha256)"
    )]
    Rejected,
    /// The peer's reply uses a digest that our policy refuses (for example MD5 under the strict policy).
    #[error("authentication failed: digest {0} refused by the digest policy")]
    DigestRefused(String),
    /// The peer's reply or challenge is not a handshake message at all.
    #[error("authentication failed: protocol error: {0}")]
    Protocol(String),
    /// The listener demands authentication but this client has no key: it received a challenge
    /// as its first message (cpython#123736).
    #[error("authentication failed: the listener sent a challenge but this client has no authentication key")]
    KeyRequired,
    /// The peer answers in another handshake dialect (for example a `processing` peer against a
    /// CPython listener).
    #[error("authentication failed: the peer seems to speak the {peer} handshake, this side expected {expected}")]
    DialectMismatch {
        /// What the peer seems to speak.
        peer: &'static str,
        /// What this side expected.
        expected: &'static str,
    },
    /// The connection ended during the handshake.
    #[error(
        "authentication failed: the peer closed the connection during the handshake (it has another key or none, or speaks another handshake dialect: processing, legacy-sha256)"
    )]
    Disconnected,
}

/// Which side of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepted the connection: delivers first, then answers.
    Listener,
    /// Opened the connection: answers first, then delivers.
    Client,
}

#[derive(Debug)]
enum State {
    /// Waiting for the peer's reply to our challenge (what the MAC covers is recomputed from
    /// the nonce, so a handshake in progress holds no buffer of its own).
    AwaitReply,
    /// Waiting for the peer's challenge.
    AwaitChallenge,
    /// Waiting for the verdict on our reply.
    AwaitWelcome,
    Done,
    Failed(AuthenticationError),
}

/// One handshake in progress. See the module docs.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    key: AuthKey,
    policy: DigestPolicy,
    challenge_digest: Digest,
    /// The dialect in use: the listener's choice, or what the client detected.
    dialect: Dialect,
    nonce: Nonce,
    state: State,
    /// Bodies to send, oldest first (never more than two at once).
    transmit: [Option<Vec<u8>>; 2],
    /// A client sends its challenge with its answer ([`HandshakeConfig::early_challenge`]).
    early_challenge: bool,
    /// Our challenge is out (a client that sent it early waits for `#WELCOME#`, then the reply).
    challenge_sent: bool,
    peer_digest: Option<Digest>,
    /// The digest of a raw (unprefixed) answer to a legacy challenge: MD5 as upstream CPython,
    /// SHA-256 for a Red Hat peer (configured, or seen in the peer's own raw reply).
    raw_digest: Digest,
    /// The highest pickle protocol the peer is known to read, from what it sent.
    pickle_protocol: u8,
}

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonce(..)")
    }
}

impl Handshake {
    /// The listener side: queues the challenge at once.
    pub fn listener(config: &HandshakeConfig, nonce: Nonce) -> Handshake {
        let mut h = Handshake::with(Role::Listener, config, nonce, config.dialect);
        h.deliver_challenge();
        h
    }

    /// The client side: waits for the listener's challenge.
    pub fn client(config: &HandshakeConfig, nonce: Nonce) -> Handshake {
        let mut h = Handshake::with(Role::Client, config, nonce, Dialect::Cpython);
        h.state = State::AwaitChallenge;
        h
    }

    fn with(role: Role, config: &HandshakeConfig, nonce: Nonce, dialect: Dialect) -> Handshake {
        Handshake {
            role,
            key: config.key.clone(),
            policy: config.policy,
            challenge_digest: config.challenge_digest,
            dialect,
            nonce,
            state: State::Done,
            transmit: [None, None],
            early_challenge: config.early_challenge,
            challenge_sent: false,
            peer_digest: None,
            // A listener learns SHA-256 from a Red Hat client's own raw reply, so a legacy-sha256
            // listener still answers stock clients in MD5; a client must be told.
            raw_digest: if role == Role::Client && config.dialect == Dialect::CpythonLegacySha256 {
                Digest::Sha256
            } else {
                Digest::Md5
            },
            pickle_protocol: config.dialect.pickle_protocol(),
        }
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The dialect in use (for a client: known once the challenge arrived).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The digest the peer used to answer our challenge, once verified.
    pub fn peer_digest(&self) -> Option<Digest> {
        self.peer_digest
    }

    /// The highest pickle protocol the peer is known to read, learnt from the handshake: 4 when
    /// it proved to be CPython 3.12+ (a `{name}` digest) or Red Hat's Python 3 (raw SHA-256), 2
    /// when it may be a Python 2 (`processing`, or the legacy raw MD5 that CPython 2.7-3.11 all
    /// speak). Python 3 reads protocol 2 as written here, so 2 is always safe.
    pub fn pickle_protocol(&self) -> u8 {
        self.pickle_protocol
    }

    /// The next message body to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let first = self.transmit[0].take();
        self.transmit[0] = self.transmit[1].take();
        first
    }

    fn push_transmit(&mut self, body: Vec<u8>) {
        match &mut self.transmit {
            [slot @ None, _] | [Some(_), slot @ None] => *slot = Some(body),
            // Never happens (the driver polls after each message); keep the newest.
            [_, last] => *last = Some(body),
        }
    }

    /// True once both directions succeeded and nothing is left to send.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done) && self.transmit[0].is_none()
    }

    /// True while an early client waits for `#WELCOME#` and then, with nothing sent between,
    /// for the listener's answer to its challenge. A listener that keeps Nagle's algorithm on
    /// (every CPython) writes the two back to back and holds the second until the first is
    /// acknowledged; left to the delayed-ACK timer that costs 40 ms on Linux. The driver asks
    /// its transport to acknowledge at once (`TCP_QUICKACK`).
    pub fn wants_prompt_ack(&self) -> bool {
        matches!(self.state, State::AwaitWelcome) && self.challenge_sent
    }

    /// True once both directions succeeded (the last message may still wait in
    /// [`Handshake::poll_transmit`]).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The failure, if the handshake failed.
    pub fn failure(&self) -> Option<&AuthenticationError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Feeds one received message body. After an error, the failure message (if any) is still
    /// available from [`Handshake::poll_transmit`] and should be sent before closing.
    pub fn handle_message(&mut self, body: &[u8]) -> Result<(), AuthenticationError> {
        if body.len() > HANDSHAKE_MAX_MESSAGE {
            return self.fail(AuthenticationError::Protocol(format!(
                "handshake message of {} bytes, the limit is {HANDSHAKE_MAX_MESSAGE}",
                body.len()
            )));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitReply => {
                let message = self.challenge_message();
                self.on_reply(&message, body)
            }
            State::AwaitChallenge => self.on_challenge(body),
            State::AwaitWelcome => self.on_welcome(body),
            State::Done => {
                self.state = State::Done;
                Ok(())
            }
            State::Failed(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Records that the connection ended before the handshake finished.
    pub fn handle_eof(&mut self) -> AuthenticationError {
        if let State::Failed(e) = &self.state {
            e.clone()
        } else {
            let e = AuthenticationError::Disconnected;
            self.state = State::Failed(e.clone());
            e
        }
    }

    fn fail(&mut self, e: AuthenticationError) -> Result<(), AuthenticationError> {
        self.state = State::Failed(e.clone());
        Err(e)
    }

    /// What our challenge asks the peer to MAC: the part after the prefix.
    fn challenge_message(&self) -> Vec<u8> {
        match self.dialect {
            Dialect::Cpython => {
                let mut m = Vec::with_capacity(2 + MAX_DIGEST_NAME + MODERN_NONCE_LEN);
                m.push(b'{');
                m.extend_from_slice(self.challenge_digest.name().as_bytes());
                m.push(b'}');
                m.extend_from_slice(&self.nonce.0);
                m
            }
            Dialect::CpythonLegacy | Dialect::CpythonLegacySha256 | Dialect::Processing => {
                self.nonce.0[..LEGACY_NONCE_LEN].to_vec()
            }
        }
    }

    fn deliver_challenge(&mut self) {
        let prefix = match self.dialect {
            Dialect::Processing => PROCESSING_CHALLENGE,
            Dialect::Cpython | Dialect::CpythonLegacy | Dialect::CpythonLegacySha256 => CHALLENGE,
        };
        let message = self.challenge_message();
        let mut out = Vec::with_capacity(prefix.len() + message.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(&message);
        self.push_transmit(out);
        self.challenge_sent = true;
        self.state = State::AwaitReply;
    }

    fn on_reply(&mut self, message: &[u8], reply: &[u8]) -> Result<(), AuthenticationError> {
        match self.verify_reply(message, reply) {
            Ok((digest, raw)) => {
                self.peer_digest = Some(digest);
                if self.dialect != Dialect::Processing {
                    // A raw MD5 reply: any CPython 2.7-3.11 (or 3.12+ answering a legacy
                    // challenge). A raw SHA-256 one: Red Hat's Python 3, whose own challenge is
                    // then answered the same way. A named one: CPython 3.12+.
                    let proven = if raw && digest == Digest::Md5 { 2 } else { 4 };
                    // A client already learnt from the listener's challenge: keep the lower.
                    self.pickle_protocol = match self.role {
                        Role::Listener => proven,
                        Role::Client => self.pickle_protocol.min(proven),
                    };
                    if raw && digest == Digest::Sha256 {
                        self.raw_digest = Digest::Sha256;
                    }
                }
                self.push_transmit(self.dialect.welcome().to_vec());
                self.state = match self.role {
                    Role::Listener => State::AwaitChallenge,
                    Role::Client => State::Done,
                };
                Ok(())
            }
            Err(e) => {
                self.push_transmit(self.dialect.failure().to_vec());
                self.fail(e)
            }
        }
    }

    /// Checks the peer's reply to our challenge; returns the digest it used and whether the
    /// reply was raw (no `{name}` prefix).
    fn verify_reply(&self, message: &[u8], reply: &[u8]) -> Result<(Digest, bool), AuthenticationError> {
        let (digest, mac) = match self.dialect {
            // processing's reply is a raw 20-byte HMAC-SHA1, whatever its first byte: one reply
            // in 256 starts with `{` by chance, so the length decides, as in CPython's
            // `_get_digest_name_and_payload`.
            Dialect::Processing if reply.len() == Digest::Sha1.mac_len() => (Digest::Sha1, reply),
            Dialect::Processing if reply.first() == Some(&b'{') || reply.len() == Digest::Md5.mac_len() => {
                // A `{name}` prefix or a raw HMAC-MD5: a CPython peer.
                return Err(AuthenticationError::DialectMismatch {
                    peer: Dialect::Cpython.name(),
                    expected: Dialect::Processing.name(),
                });
            }
            Dialect::Processing => (Digest::Sha1, reply),
            Dialect::Cpython | Dialect::CpythonLegacy | Dialect::CpythonLegacySha256
                if reply.len() == Digest::Sha1.mac_len() =>
            {
                // No CPython sends a raw 20-byte reply: that is processing's HMAC-SHA1.
                return Err(AuthenticationError::DialectMismatch {
                    peer: Dialect::Processing.name(),
                    expected: self.dialect.name(),
                });
            }
            Dialect::Cpython | Dialect::CpythonLegacy | Dialect::CpythonLegacySha256 => split_cpython_mac(reply)?,
        };
        if !self.policy.allows(digest) {
            return Err(AuthenticationError::DigestRefused(digest.name().into()));
        }
        if mac.len() != digest.mac_len() {
            return Err(AuthenticationError::Protocol(format!(
                "expected a {}-byte {} MAC, got {} bytes",
                digest.mac_len(),
                digest.name(),
                mac.len()
            )));
        }
        if digest.verify(self.key.as_bytes(), message, mac) {
            Ok((digest, mac.len() == reply.len()))
        } else {
            Err(AuthenticationError::DigestMismatch)
        }
    }

    fn on_challenge(&mut self, challenge: &[u8]) -> Result<(), AuthenticationError> {
        let reply = match self.answer(challenge) {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        self.push_transmit(reply);
        if self.role == Role::Client && self.early_challenge {
            // Our challenge goes out beside the answer: the listener reads it after its
            // #WELCOME#, and its reply follows the #WELCOME# at once (one round trip saved).
            self.deliver_challenge();
        }
        self.state = State::AwaitWelcome;
        Ok(())
    }

    /// Computes the reply to a challenge, detecting (client) or checking (listener) the dialect.
    fn answer(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AuthenticationError> {
        let (dialect, message) = if let Some(m) = challenge.strip_prefix(PROCESSING_CHALLENGE) {
            (Dialect::Processing, m)
        } else if let Some(m) = challenge.strip_prefix(CHALLENGE) {
            (Dialect::Cpython, m)
        } else {
            return Err(AuthenticationError::Protocol(
                "expected a challenge, got another message (the listener has no key, or speaks another protocol)"
                    .into(),
            ));
        };
        match (self.role, self.dialect, dialect) {
            (Role::Client, Dialect::CpythonLegacySha256, Dialect::Cpython) => {}
            (Role::Client, _, d) => self.dialect = d,
            (Role::Listener, Dialect::Processing, Dialect::Processing) => {}
            (Role::Listener, expected, peer) if (expected == Dialect::Processing) != (peer == Dialect::Processing) => {
                return Err(AuthenticationError::DialectMismatch { peer: peer.name(), expected: expected.name() });
            }
            _ => {}
        }
        if message.len() < LEGACY_NONCE_LEN {
            return Err(AuthenticationError::Protocol(format!("challenge too short: {} bytes", message.len())));
        }
        let key = self.key.as_bytes();
        if dialect == Dialect::Processing {
            self.pickle_protocol = 2;
            if !self.policy.allows(Digest::Sha1) {
                return Err(AuthenticationError::DigestRefused("sha1".into()));
            }
            return Ok(Digest::Sha1.mac(key, message).as_bytes().to_vec());
        }
        match named_digest(message)? {
            None => {
                // A legacy (≤ 3.11) peer: a raw HMAC, no prefix; MD5, or SHA-256 for Red Hat's.
                let digest = self.raw_digest;
                if !self.policy.allows(digest) {
                    return Err(AuthenticationError::DigestRefused(digest.name().into()));
                }
                if self.role == Role::Client {
                    // A listener that sent a legacy challenge may be a Python 2.
                    self.pickle_protocol = if digest == Digest::Md5 { 2 } else { 4 };
                }
                Ok(digest.mac(key, message).as_bytes().to_vec())
            }
            Some(digest) => {
                if !self.policy.allows(digest) {
                    return Err(AuthenticationError::DigestRefused(digest.name().into()));
                }
                if self.role == Role::Client {
                    self.pickle_protocol = 4; // only CPython 3.12+ names its digest
                }
                let mac = digest.mac(key, message);
                let name = digest.name().as_bytes();
                let mut out = Vec::with_capacity(name.len() + 2 + mac.as_bytes().len());
                out.push(b'{');
                out.extend_from_slice(name);
                out.push(b'}');
                out.extend_from_slice(mac.as_bytes());
                Ok(out)
            }
        }
    }

    fn on_welcome(&mut self, verdict: &[u8]) -> Result<(), AuthenticationError> {
        if verdict != self.dialect.welcome() {
            return self.fail(AuthenticationError::Rejected);
        }
        match self.role {
            Role::Listener => {
                self.state = State::Done;
            }
            // Sent with our answer: the listener's reply to it comes next.
            Role::Client if self.challenge_sent => self.state = State::AwaitReply,
            Role::Client => {
                // Our turn to deliver: a modern challenge works with every CPython since 2.7.
                self.deliver_challenge();
            }
        }
        Ok(())
    }
}

/// Splits a CPython reply into its digest and MAC: 16 or 20 bytes are a legacy raw HMAC-MD5,
/// 32 bytes a raw HMAC-SHA256 (Red Hat's FIPS patch; no `{name}` reply has that length),
/// otherwise `{name}mac` with a name CPython allows.
fn split_cpython_mac(reply: &[u8]) -> Result<(Digest, &[u8]), AuthenticationError> {
    if reply.len() == Digest::Sha256.mac_len() {
        return Ok((Digest::Sha256, reply));
    }
    match named_digest(reply)? {
        None => Ok((Digest::Md5, reply)),
        Some(d) => Ok((d, &reply[d.name().len() + 2..])),
    }
}

/// CPython's `_get_digest_name_and_payload`: `None` for the legacy lengths (16 or 20 bytes),
/// the named digest for a `{name}` prefix, an error otherwise.
fn named_digest(message: &[u8]) -> Result<Option<Digest>, AuthenticationError> {
    if message.len() == 16 || message.len() == 20 {
        return Ok(None);
    }
    if message.first() == Some(&b'{') {
        let end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(close) = message[1..end].iter().position(|&b| b == b'}')
            && let Some(d) = Digest::from_cpython_name(&message[1..1 + close])
        {
            return Ok(Some(d));
        }
    }
    Err(AuthenticationError::Protocol(
        "unsupported message length, missing digest prefix, or unsupported digest".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> HandshakeConfig {
        HandshakeConfig::new(AuthKey::from(key))
    }

    fn nonce(b: u8) -> Nonce {
        Nonce::from_bytes([b; MODERN_NONCE_LEN])
    }

    /// Runs two handshakes against each other in memory; returns both outcomes.
    fn run_pair(
        listener: &mut Handshake,
        client: &mut Handshake,
    ) -> (Result<(), AuthenticationError>, Result<(), AuthenticationError>) {
        let (mut lr, mut cr) = (Ok(()), Ok(()));
        for _ in 0..10 {
            let mut progressed = false;
            while let Some(m) = listener.poll_transmit() {
                progressed = true;
                if cr.is_ok() {
                    cr = client.handle_message(&m);
                }
            }
            while let Some(m) = client.poll_transmit() {
                progressed = true;
                if lr.is_ok() {
                    lr = listener.handle_message(&m);
                }
            }
            if !progressed {
                break;
            }
        }
        (lr, cr)
    }

    #[test]
    fn matching_keys_complete_both_sides_in_every_dialect() {
        for dialect in [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing] {
            let mut lc = config("k");
            lc.dialect = dialect;
            let mut l = Handshake::listener(&lc, nonce(1));
            let mut c = Handshake::client(&config("k"), nonce(2));
            let (lr, cr) = run_pair(&mut l, &mut c);
            assert_eq!((lr, cr), (Ok(()), Ok(())), "{dialect:?}");
            assert!(l.is_complete() && c.is_complete(), "{dialect:?}");
            assert_eq!(
                c.dialect(),
                if dialect == Dialect::Processing { Dialect::Processing } else { Dialect::Cpython }
            );
        }
    }

    /// Flights (one side's messages sent together before it waits) until both sides are done.
    fn flights(early: bool, dialect: Dialect) -> usize {
        let mut lc = config("k");
        lc.dialect = dialect;
        let mut cc = config("k");
        cc.early_challenge = early;
        let mut l = Handshake::listener(&lc, nonce(1));
        let mut c = Handshake::client(&cc, nonce(2));
        let mut flights = 0;
        for listener_turn in [true, false].into_iter().cycle().take(10) {
            let (from, to) = if listener_turn { (&mut l, &mut c) } else { (&mut c, &mut l) };
            let mut sent = false;
            while let Some(m) = from.poll_transmit() {
                sent = true;
                to.handle_message(&m).unwrap();
            }
            flights += usize::from(sent);
        }
        assert!(l.is_complete() && c.is_complete(), "early {early}, {dialect:?}");
        flights
    }

    #[test]
    fn an_early_client_finishes_in_two_round_trips_and_a_late_one_in_three() {
        for dialect in [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing] {
            // Challenge; answer + challenge; welcome + answer; welcome.
            assert_eq!(flights(true, dialect), 4, "{dialect:?}");
            // Challenge; answer; welcome; challenge; answer; welcome.
            assert_eq!(flights(false, dialect), 6, "{dialect:?}");
        }
    }

    #[test]
    fn a_refused_early_client_gets_failure_and_its_challenge_is_never_answered() {
        let mut l = Handshake::listener(&config("right"), nonce(1));
        let mut cc = config("wrong");
        cc.early_challenge = true; // not the default on every system
        let mut c = Handshake::client(&cc, nonce(2));
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        let (answer, challenge) = (c.poll_transmit().unwrap(), c.poll_transmit().unwrap());
        assert!(challenge.starts_with(CHALLENGE));
        assert_eq!(l.handle_message(&answer), Err(AuthenticationError::DigestMismatch));
        // A failed listener answers nothing more, even when the challenge is fed to it.
        let failure = l.poll_transmit().unwrap();
        assert!(l.handle_message(&challenge).is_err());
        assert!(l.poll_transmit().is_none());
        assert_eq!(c.handle_message(&failure), Err(AuthenticationError::Rejected));
    }

    #[test]
    fn an_early_client_refuses_a_wrong_answer_to_its_challenge_after_welcome() {
        let mut l = Handshake::listener(&config("k"), nonce(1));
        let mut cc = config("k");
        cc.early_challenge = true; // not the default on every system
        let mut c = Handshake::client(&cc, nonce(2));
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        let (answer, _challenge) = (c.poll_transmit().unwrap(), c.poll_transmit().unwrap());
        l.handle_message(&answer).unwrap();
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        // The listener's "answer" to our challenge is garbage of the right shape.
        let mut forged = b"{sha256}".to_vec();
        forged.extend_from_slice(&[0u8; 32]);
        assert_eq!(c.handle_message(&forged), Err(AuthenticationError::DigestMismatch));
        assert_eq!(c.poll_transmit().as_deref(), Some(&b"#FAILURE#"[..]));
        assert!(!c.is_authenticated());
    }

    #[test]
    fn modern_challenge_bytes_match_cpython_3_13() {
        let mut l = Handshake::listener(&config("k"), nonce(7));
        let m = l.poll_transmit().unwrap();
        assert_eq!(m.len(), 59);
        assert!(m.starts_with(b"#CHALLENGE#{sha256}"));
        assert_eq!(&m[19..], &[7u8; 40]);
    }

    #[test]
    fn legacy_and_processing_challenges_have_20_random_bytes() {
        let mut c = config("k");
        c.dialect = Dialect::CpythonLegacy;
        let m = Handshake::listener(&c, nonce(3)).poll_transmit().unwrap();
        assert_eq!(m.len(), 31);
        assert!(m.starts_with(b"#CHALLENGE#"));
        c.dialect = Dialect::Processing;
        let m = Handshake::listener(&c, nonce(3)).poll_transmit().unwrap();
        assert_eq!(m.len(), 31);
        assert!(m.starts_with(b"#CHALLENGE:"));
    }

    #[test]
    fn wrong_key_gets_failure_and_authentication_error() {
        let mut l = Handshake::listener(&config("right"), nonce(1));
        let mut c = Handshake::client(&config("wrong"), nonce(2));
        let challenge = l.poll_transmit().unwrap();
        c.handle_message(&challenge).unwrap();
        let reply = c.poll_transmit().unwrap();
        assert_eq!(l.handle_message(&reply), Err(AuthenticationError::DigestMismatch));
        assert_eq!(l.poll_transmit().unwrap(), FAILURE);
        assert_eq!(c.handle_message(FAILURE), Err(AuthenticationError::Rejected));
        assert!(!l.is_complete() && !c.is_complete());
        // Once failed, it stays failed.
        assert!(l.handle_message(b"anything").is_err());
    }

    #[test]
    fn wrong_key_in_processing_dialect_gets_authentication_failed() {
        let mut lc = config("right");
        lc.dialect = Dialect::Processing;
        let mut l = Handshake::listener(&lc, nonce(1));
        let mut c = Handshake::client(&config("wrong"), nonce(2));
        let (lr, cr) = run_pair(&mut l, &mut c);
        assert_eq!(lr, Err(AuthenticationError::DigestMismatch));
        assert_eq!(cr, Err(AuthenticationError::Rejected));
    }

    #[test]
    fn a_processing_reply_that_happens_to_start_with_a_brace_is_still_sha1() {
        // One HMAC-SHA1 in 256 starts with `{`; such a reply once failed CI as "a CPython peer".
        let mut brace_nonces = (0..=u16::MAX).map(|i| {
            let mut b = [0u8; MODERN_NONCE_LEN];
            b[..2].copy_from_slice(&i.to_le_bytes());
            b
        });
        let bytes = brace_nonces
            .find(|b| Digest::Sha1.mac(b"k", &b[..LEGACY_NONCE_LEN]).as_bytes()[0] == b'{')
            .expect("some nonce among 65,536 gives a reply starting with a brace");
        let mut lc = config("k");
        lc.dialect = Dialect::Processing;
        let mut l = Handshake::listener(&lc, Nonce::from_bytes(bytes));
        let mut c = Handshake::client(&config("k"), nonce(2));
        assert_eq!(run_pair(&mut l, &mut c), (Ok(()), Ok(())));
        assert!(l.is_complete() && c.is_complete());
    }

    #[test]
    fn legacy_md5_reply_to_a_modern_challenge_is_accepted_by_default() {
        // What Python <= 3.11 does: raw HMAC-MD5 over everything after #CHALLENGE#.
        let mut l = Handshake::listener(&config("k"), nonce(9));
        let challenge = l.poll_transmit().unwrap();
        let reply = Digest::Md5.mac(b"k", &challenge[CHALLENGE.len()..]);
        l.handle_message(reply.as_bytes()).unwrap();
        assert_eq!(l.poll_transmit().unwrap(), WELCOME);
        assert_eq!(l.peer_digest(), Some(Digest::Md5));
    }

    #[test]
    fn strict_policy_refuses_legacy_md5_both_ways() {
        let mut strict = config("k");
        strict.policy = DigestPolicy::RequireSha256;
        let mut l = Handshake::listener(&strict, nonce(9));
        let challenge = l.poll_transmit().unwrap();
        let reply = Digest::Md5.mac(b"k", &challenge[CHALLENGE.len()..]);
        assert_eq!(l.handle_message(reply.as_bytes()), Err(AuthenticationError::DigestRefused("md5".into())));
        assert_eq!(l.poll_transmit().unwrap(), FAILURE);

        let mut legacy = config("k");
        legacy.dialect = Dialect::CpythonLegacy;
        let challenge = Handshake::listener(&legacy, nonce(1)).poll_transmit().unwrap();
        let mut c = Handshake::client(&strict, nonce(2));
        assert_eq!(c.handle_message(&challenge), Err(AuthenticationError::DigestRefused("md5".into())));
    }

    #[test]
    fn every_cpython_digest_name_is_answered_with_that_digest() {
        for d in [Digest::Md5, Digest::Sha256, Digest::Sha384, Digest::Sha3_256, Digest::Sha3_384] {
            let mut lc = config("k");
            lc.challenge_digest = d;
            let mut l = Handshake::listener(&lc, nonce(1));
            let mut c = Handshake::client(&config("k"), nonce(2));
            let challenge = l.poll_transmit().unwrap();
            c.handle_message(&challenge).unwrap();
            let reply = c.poll_transmit().unwrap();
            assert!(reply.starts_with(format!("{{{}}}", d.name()).as_bytes()));
            l.handle_message(&reply).unwrap();
            assert_eq!(l.peer_digest(), Some(d));
        }
    }

    #[test]
    fn garbage_instead_of_a_challenge_is_a_protocol_error() {
        let mut c = Handshake::client(&config("k"), nonce(2));
        assert!(matches!(c.handle_message(b"hello there"), Err(AuthenticationError::Protocol(_))));
    }

    #[test]
    fn short_challenge_is_refused() {
        let mut c = Handshake::client(&config("k"), nonce(2));
        let mut m = CHALLENGE.to_vec();
        m.extend_from_slice(&[0; 19]);
        assert!(matches!(c.handle_message(&m), Err(AuthenticationError::Protocol(_))));
    }

    #[test]
    fn unknown_digest_name_is_refused() {
        let mut c = Handshake::client(&config("k"), nonce(2));
        let mut m = CHALLENGE.to_vec();
        m.extend_from_slice(b"{sha999}");
        m.extend_from_slice(&[0; 40]);
        assert!(matches!(c.handle_message(&m), Err(AuthenticationError::Protocol(_))));
    }

    #[test]
    fn truncated_or_oversized_replies_fail_with_failure_sent() {
        for reply in [vec![], vec![1; 15], vec![1; 17], b"{sha256}short".to_vec(), vec![b'x'; 257]] {
            let mut l = Handshake::listener(&config("k"), nonce(1));
            l.poll_transmit().unwrap();
            assert!(l.handle_message(&reply).is_err(), "{} bytes", reply.len());
            if reply.len() <= HANDSHAKE_MAX_MESSAGE {
                assert_eq!(l.poll_transmit().unwrap(), FAILURE);
            }
        }
    }

    #[test]
    fn wrong_dialect_fails_cleanly() {
        // A processing listener receives a CPython client's challenge (after the client answered ours).
        let mut lc = config("k");
        lc.dialect = Dialect::Processing;
        let mut l = Handshake::listener(&lc, nonce(1));
        let challenge = l.poll_transmit().unwrap();
        l.handle_message(Digest::Sha1.mac(b"k", &challenge[PROCESSING_CHALLENGE.len()..]).as_bytes()).unwrap();
        assert_eq!(l.poll_transmit().unwrap(), PROCESSING_WELCOME);
        let cpy = Handshake::listener(&config("k"), nonce(2)).poll_transmit().unwrap();
        assert!(matches!(l.handle_message(&cpy), Err(AuthenticationError::DialectMismatch { .. })));
        // A CPython client receiving the processing welcome is rejected, not confused.
        let mut c = Handshake::client(&config("k"), nonce(3));
        c.handle_message(&cpy).unwrap();
        c.poll_transmit().unwrap();
        assert_eq!(c.handle_message(PROCESSING_WELCOME), Err(AuthenticationError::Rejected));
    }

    #[test]
    fn eof_during_handshake_is_an_authentication_error() {
        let mut c = Handshake::client(&config("k"), nonce(2));
        assert_eq!(c.handle_eof(), AuthenticationError::Disconnected);
        assert!(c.failure().is_some());
    }

    #[test]
    fn client_sends_a_modern_challenge_after_a_legacy_listener_welcomes_it() {
        let mut lc = config("k");
        lc.dialect = Dialect::CpythonLegacy;
        let mut l = Handshake::listener(&lc, nonce(1));
        let mut c = Handshake::client(&config("k"), nonce(2));
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        let reply = c.poll_transmit().unwrap();
        assert_eq!(reply.len(), 16, "legacy listeners get a raw MD5 reply");
        l.handle_message(&reply).unwrap();
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        let challenge = c.poll_transmit().unwrap();
        assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
    }

    /// A Red Hat (FIPS) Python's answer_challenge: raw HMAC-SHA256 over everything after
    /// `#CHALLENGE#`, as the downstream patch computes it.
    fn rhel_answer(key: &[u8], challenge: &[u8]) -> Vec<u8> {
        Digest::Sha256.mac(key, &challenge[CHALLENGE.len()..]).as_bytes().to_vec()
    }

    #[test]
    fn a_rhel_client_is_accepted_by_a_default_listener_and_answered_in_sha256() {
        for dialect in [Dialect::Cpython, Dialect::CpythonLegacy] {
            let mut lc = config("k");
            lc.dialect = dialect;
            let mut l = Handshake::listener(&lc, nonce(4));
            let challenge = l.poll_transmit().unwrap();
            let reply = rhel_answer(b"k", &challenge);
            assert_eq!(reply.len(), 32);
            l.handle_message(&reply).unwrap();
            assert_eq!(l.poll_transmit().unwrap(), WELCOME, "{dialect:?}");
            assert_eq!(l.peer_digest(), Some(Digest::Sha256));
            // The RHEL client's own challenge: legacy, 20 bytes; answered with raw SHA-256.
            let mut theirs = CHALLENGE.to_vec();
            theirs.extend_from_slice(&[9; LEGACY_NONCE_LEN]);
            l.handle_message(&theirs).unwrap();
            assert_eq!(l.poll_transmit().unwrap(), rhel_answer(b"k", &theirs), "{dialect:?}");
            l.handle_message(WELCOME).unwrap();
            assert!(l.is_complete());
            assert_eq!(l.pickle_protocol(), 4, "Red Hat's Python is a Python 3");
        }
    }

    #[test]
    fn a_wrong_raw_sha256_reply_is_a_digest_mismatch() {
        let mut l = Handshake::listener(&config("k"), nonce(4));
        let challenge = l.poll_transmit().unwrap();
        let reply = rhel_answer(b"other", &challenge);
        assert_eq!(l.handle_message(&reply), Err(AuthenticationError::DigestMismatch));
        assert_eq!(l.poll_transmit().unwrap(), FAILURE);
    }

    #[test]
    fn a_legacy_sha256_client_answers_a_rhel_listener_and_checks_its_answer() {
        let mut lc = config("k");
        lc.dialect = Dialect::CpythonLegacySha256;
        let mut cc = config("k");
        cc.dialect = Dialect::CpythonLegacySha256;
        let mut l = Handshake::listener(&lc, nonce(1));
        let mut c = Handshake::client(&cc, nonce(2));
        let challenge = l.poll_transmit().unwrap();
        assert_eq!(challenge.len(), CHALLENGE.len() + LEGACY_NONCE_LEN, "a RHEL listener's challenge is legacy");
        c.handle_message(&challenge).unwrap();
        let reply = c.poll_transmit().unwrap();
        assert_eq!(reply, rhel_answer(b"k", &challenge));
        l.handle_message(&reply).unwrap();
        c.handle_message(&l.poll_transmit().unwrap()).unwrap();
        // Our challenge to the RHEL listener; it answers with raw SHA-256 over all of it.
        let ours = c.poll_transmit().unwrap();
        c.handle_message(&rhel_answer(b"k", &ours)).unwrap();
        assert_eq!(c.poll_transmit().unwrap(), WELCOME);
        assert!(c.is_complete());
        assert_eq!(c.pickle_protocol(), 4);
    }

    #[test]
    fn the_pickle_protocol_follows_what_the_peer_proved() {
        // Listener side: a raw MD5 reply may come from a Python 2.7 → 2; a named one → 4.
        let mut l = Handshake::listener(&config("k"), nonce(9));
        let challenge = l.poll_transmit().unwrap();
        l.handle_message(Digest::Md5.mac(b"k", &challenge[CHALLENGE.len()..]).as_bytes()).unwrap();
        assert_eq!(l.pickle_protocol(), 2);
        let mut l = Handshake::listener(&config("k"), nonce(9));
        let mut c = Handshake::client(&config("k"), nonce(2));
        assert_eq!(run_pair(&mut l, &mut c), (Ok(()), Ok(())));
        assert_eq!((l.pickle_protocol(), c.pickle_protocol()), (4, 4));
        // Client side: a legacy listener → 2; processing → 2.
        for (dialect, expected) in [(Dialect::CpythonLegacy, 2), (Dialect::Processing, 2)] {
            let mut lc = config("k");
            lc.dialect = dialect;
            let mut l = Handshake::listener(&lc, nonce(1));
            let mut c = Handshake::client(&config("k"), nonce(2));
            assert_eq!(run_pair(&mut l, &mut c), (Ok(()), Ok(())));
            assert_eq!((l.pickle_protocol(), c.pickle_protocol()), (expected, expected), "{dialect:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic_either_role(msgs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..6)) {
            let mut l = Handshake::listener(&config("k"), nonce(1));
            let mut c = Handshake::client(&config("k"), nonce(2));
            for m in &msgs {
                let _ = l.handle_message(m);
                let _ = c.handle_message(m);
                while l.poll_transmit().is_some() {}
                while c.poll_transmit().is_some() {}
            }
            proptest::prop_assert!(!l.is_authenticated());
        }
    }
}
