//! The sans-IO connection: the one place where protocol decisions are made.
//!
//! A [`Session`] is what a connection *is*, without its socket: its phase (connecting,
//! handshaking, open, closing, closed), its [`Handshake`], the dialect in use, the rule for a client
//! without a key that meets a listener running the challenge-response, the mapping of end of file,
//! frame errors and I/O errors to a [`CloseReason`], and every per-connection deadline, kept as a
//! fixed table (one slot per kind) behind [`Session::poll_timeout`] / [`Session::handle_timeout`],
//! as quinn-proto's `Connection` does. It reads no clock and no socket: a driver (the blocking
//! [`crate::Connection`] or the reactor) moves bytes and time in and out:
//!
//! * in: [`Session::handle_frame`] for each received message body (framed by
//!   [`crate::wire::frame`]), [`Session::handle_frame_error`], [`Session::handle_eof`],
//!   [`Session::handle_io_error`], [`Session::on_read`] (activity), [`Session::handle_timeout`];
//! * out: [`Session::poll_transmit`] (bodies to frame and send), [`Session::poll_event`]
//!   ([`Event::Opened`], [`Event::Closed`]), [`Session::poll_timeout`].
//!
//! Deadlines are armed lazily: a read does not move a slot; when a slot fires the session checks
//! whether its condition still holds and re-arms it for the remaining time otherwise. So the next
//! deadline of a busy connection changes only when a slot is armed or fires, never per read, and a
//! driver's timer structure needs at most one live entry per connection.
//!
//! A connection split into a receiving and a sending half (two threads or tasks) has two
//! sessions: [`Session::split_sender`] gives the sender's, with the same limits and epoch. Each
//! half keeps its own deadlines (the receiver's partial message, the sender's write stall), but
//! idle means no traffic either way, as on the whole connection, so the two share one clock of
//! the last activity (an atomic, only once split): the sender's progress keeps the receiver
//! alive and the other way round.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{AuthenticationError, Error, Timeout};
use crate::wire::frame::FrameError;
use crate::wire::handshake::{
    CHALLENGE, HANDSHAKE_MAX_MESSAGE, Handshake, HandshakeConfig, Nonce, PROCESSING_CHALLENGE, Role,
};

pub use crate::wire::handshake::Dialect;

/// Why a connection closed; given to [`crate::reactor::Handler::on_close`], and turned into an
/// [`Error`] by the blocking face.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the connection between messages.
    PeerClosed,
    /// The peer closed the connection in the middle of a message.
    PeerClosedMidMessage,
    /// The connection was closed locally (`close`).
    Local,
    /// Closed at once by the local side for the reason given (the reactor stopped, ...): the
    /// face decides, the session only records it ([`Session::abort`]).
    Aborted(&'static str),
    /// The handshake failed (wrong key, no key on one side, another dialect, a peer that is no
    /// handshake peer at all).
    AuthenticationFailed(AuthenticationError),
    /// The peer broke the framing rules (for example a length above the limit).
    Protocol(FrameError),
    /// Connecting or the handshake took longer than the handshake timeout.
    HandshakeTimeout,
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// One message stayed incomplete for the partial-message timeout.
    PartialMessageTimeout,
    /// Output waited for the write-stall timeout without the peer taking a byte of it (a peer
    /// that never reads).
    WriteStallTimeout,
    /// An I/O error (connect refused, reset, ...).
    Error(Error),
}

impl CloseReason {
    /// True for the reasons that are not failures (peer or local close, stop).
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::PeerClosed | CloseReason::Local | CloseReason::Aborted(_))
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the peer closed the connection"),
            CloseReason::PeerClosedMidMessage => f.write_str("the peer closed the connection during a message"),
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Aborted(why) => f.write_str(why),
            CloseReason::AuthenticationFailed(e) => write!(f, "{e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::HandshakeTimeout => f.write_str("the handshake timed out"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::PartialMessageTimeout => f.write_str("a message stayed incomplete too long"),
            CloseReason::WriteStallTimeout => {
                f.write_str("the peer took none of our output for the write-stall timeout")
            }
            CloseReason::Error(e) => write!(f, "{e}"),
        }
    }
}

/// Compares reasons as a handler does (`reason == CloseReason::PeerClosed`): the same variant
/// with equal payloads. `CloseReason::Error` has no derived equality (an I/O error has none):
/// two are equal when both are I/O errors of the same kind and OS error code, or otherwise the
/// same kind of [`Error`] printing the same text.
impl PartialEq for CloseReason {
    fn eq(&self, other: &CloseReason) -> bool {
        match (self, other) {
            (CloseReason::AuthenticationFailed(a), CloseReason::AuthenticationFailed(b)) => a == b,
            (CloseReason::Protocol(a), CloseReason::Protocol(b)) => a == b,
            (CloseReason::Error(Error::Io(a)), CloseReason::Error(Error::Io(b))) => {
                a.kind() == b.kind() && a.raw_os_error() == b.raw_os_error()
            }
            (CloseReason::Error(a), CloseReason::Error(b)) => {
                std::mem::discriminant(a) == std::mem::discriminant(b) && a.to_string() == b.to_string()
            }
            // Every variant with a payload is matched above: these are the unit variants.
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl From<CloseReason> for Error {
    /// The blocking face's view of a close: end of file, an authentication error, a protocol
    /// error, a timeout, or the I/O error itself.
    fn from(reason: CloseReason) -> Error {
        match reason {
            CloseReason::PeerClosed => Error::Eof,
            CloseReason::PeerClosedMidMessage => Error::EofInMessage,
            CloseReason::Local => Error::Closed(""),
            CloseReason::Aborted(why) => Error::Closed(why),
            CloseReason::AuthenticationFailed(e) => Error::Authentication(e),
            CloseReason::Protocol(e) => Error::Protocol(e),
            CloseReason::HandshakeTimeout => Error::Timeout(Timeout::Handshake),
            CloseReason::IdleTimeout => Error::Timeout(Timeout::Idle),
            CloseReason::PartialMessageTimeout => Error::Timeout(Timeout::PartialMessage),
            CloseReason::WriteStallTimeout => Error::Timeout(Timeout::WriteStall),
            CloseReason::Error(e) => e,
        }
    }
}

/// The deadline kinds of a session: one slot each in its fixed table. Private: faces see the
/// table only through `poll_timeout` / `handle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum TimerKind {
    /// Connect plus handshake must finish.
    Handshake = 0,
    /// No traffic for the idle timeout.
    Idle = 1,
    /// One message incomplete too long.
    PartialMessage = 2,
    /// Flushing before a local close must finish.
    CloseFlush = 3,
    /// A quiet connection's read buffer may be freed.
    ReleaseBuffer = 4,
    /// Queued output made no progress too long.
    WriteStall = 5,
}

/// The read block of a connection's frame decoder while it authenticates: enough for an early
/// client's answer and challenge with their headers (107 bytes with the modern digests), so a
/// listener reads both at once and answers with one write (#WELCOME# and its answer). A
/// handshake message up to its 256-byte cap grows the buffer to at most the cap plus a
/// header, so an unauthenticated connection holds a hundred-odd bytes of buffer (a few hundred
/// at worst), never a 64 KiB read block.
pub const HANDSHAKE_READ_BLOCK: usize = 128;

/// Default time a peer has to connect and complete the handshake, on every face.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time one message may stay incomplete, on every face.
pub const DEFAULT_PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time output may wait without the peer taking a byte of it, on every face.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// True for the I/O errors that mean the peer went away (reset, aborted, broken pipe, an
/// unexpected end): the one classification every face relies on, through
/// [`Session::handle_io_error`].
pub fn is_disconnect(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// The authentication settings every face shares: [`crate::Client`], [`crate::ListenerBuilder`]
/// and the reactor's [`crate::reactor::options::ConnectionOptions`] each hold one, and the
/// builder methods of those forward to it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthOptions {
    /// Run the challenge-response with this key (`None`: no handshake; a peer that runs one is
    /// refused with [`AuthenticationError::KeyRequired`]).
    pub authkey: Option<crate::AuthKey>,
    /// The dialect a listener offers (a connecting side detects it from the challenge).
    pub dialect: Dialect,
    /// Which digests are acceptable.
    pub digest_policy: crate::DigestPolicy,
    /// Time allowed to connect and complete the handshake (`None`: no limit, as in Python).
    pub handshake_timeout: Option<Duration>,
    /// A connecting side sends its own challenge together with its answer to the listener's,
    /// so the handshake takes two round trips instead of three (default on Linux; see
    /// [`AuthOptions::early_challenge`]). A listener ignores it.
    pub early_challenge: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            authkey: None,
            dialect: Dialect::Cpython,
            digest_policy: crate::DigestPolicy::CpythonCompatible,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            early_challenge: crate::wire::handshake::EARLY_CHALLENGE_DEFAULT,
        }
    }
}

impl AuthOptions {
    /// Defaults: no key, CPython dialect, CPython's digest policy, [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new() -> AuthOptions {
        AuthOptions::default()
    }

    /// Authenticate with `key`.
    pub fn authkey(mut self, key: impl Into<crate::AuthKey>) -> Self {
        self.authkey = Some(key.into());
        self
    }

    /// The dialect to offer when listening.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Which digests to accept.
    pub fn digest_policy(mut self, policy: crate::DigestPolicy) -> Self {
        self.digest_policy = policy;
        self
    }

    /// Time allowed for connecting and the handshake (`None`: no limit).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether a connecting side sends its challenge with its answer to the listener's
    /// (default true on Linux and Android, false elsewhere): the handshake then takes two
    /// round trips instead of three, one less wait for every connect. Every CPython (2.7, 3.x)
    /// and `processing` listener reads one message at a time, exactly its length, so the
    /// early challenge waits unread until the listener asks for it, after its `#WELCOME#`.
    /// Over TCP such a listener writes `#WELCOME#` and its answer back to back with Nagle's
    /// algorithm on; the client acknowledges `#WELCOME#` at once (`TCP_QUICKACK`) so the
    /// answer is not held for the delayed ACK. Other systems have no such option, hence the
    /// default there: turn it on for Unix sockets or peers that set `TCP_NODELAY` (this
    /// crate's listeners). Turn it off for a peer of another make that reads ahead and drops
    /// what it did not expect.
    pub fn early_challenge(mut self, on: bool) -> Self {
        self.early_challenge = on;
        self
    }

    /// The handshake settings for `key` (this struct's key unless one is given), if any.
    pub(crate) fn handshake_config(&self, key: Option<crate::AuthKey>) -> Option<HandshakeConfig> {
        key.or_else(|| self.authkey.clone()).map(|key| {
            let mut c = HandshakeConfig::new(key);
            c.dialect = self.dialect;
            c.policy = self.digest_policy;
            c.early_challenge = self.early_challenge;
            c
        })
    }
}

/// Number of deadline kinds (the size of a session's table).
const TIMER_KINDS: usize = 6;

/// The per-connection time limits a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect plus handshake (`None`: no limit).
    pub handshake: Option<Duration>,
    /// No traffic at all for this long closes (`None`: never). While output waits on the peer,
    /// a write is tried before closing: a peer that took bytes since is not idle. (Taken as the
    /// kernel counts it: a read frees room to write only in whole buffers, so a peer reading a
    /// few KiB at a time is seen to progress only as often as it frees one: on a Unix socket,
    /// about every 32 KiB it reads.)
    pub idle: Option<Duration>,
    /// One message incomplete for this long closes (`None`: never).
    pub partial_message: Option<Duration>,
    /// A local close waits this long for queued output to leave. The async face's `close`
    /// flushes what [`feed_bytes`](crate::tokio::Connection::feed_bytes) queued for at most
    /// this long and returns an error if some of it had to be dropped. The blocking face has
    /// no queue (a send returns once the kernel took all of it), so it has nothing to flush and
    /// ignores this. The reactor takes its value from `ReactorConfig::stop_timeout`, not from
    /// here.
    pub close_flush: Duration,
    /// A read buffer held by a quiet connection is released after this long (`None`: never).
    /// Only the reactor releases buffers this way, and it takes the value from
    /// `ReactorConfig::buffer_release_after`, not from here: the blocking and async faces,
    /// which take these `Timeouts`, ignore it (their decoders size their own buffers).
    pub buffer_release: Option<Duration>,
    /// Output the peer takes none of for this long closes (`None`: never). Progress is checked
    /// by a write when the limit passes, so a slow reader whose progress the kernel has not yet
    /// reported keeps its connection (with the granularity said under `idle`).
    pub write_stall: Option<Duration>,
}

impl Timeouts {
    /// The defaults of every face: [`DEFAULT_HANDSHAKE_TIMEOUT`], no idle limit,
    /// [`DEFAULT_PARTIAL_MESSAGE_TIMEOUT`], [`DEFAULT_WRITE_STALL_TIMEOUT`], 5 s to flush on a
    /// local close, no buffer release (the reactor, which shares its read buffer, sets one).
    pub const DEFAULT: Timeouts = Timeouts {
        handshake: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        idle: None,
        partial_message: Some(DEFAULT_PARTIAL_MESSAGE_TIMEOUT),
        close_flush: Duration::from_secs(5),
        buffer_release: None,
        write_stall: Some(DEFAULT_WRITE_STALL_TIMEOUT),
    };

    /// No deadlines at all.
    pub const NONE: Timeouts = Timeouts {
        handshake: None,
        idle: None,
        partial_message: None,
        close_flush: Duration::from_secs(5),
        buffer_release: None,
        write_stall: None,
    };
}

/// What a session yields to its driver besides bytes.
#[derive(Debug)]
pub enum Event {
    /// The connection is open: authenticated, or it has no key. Messages flow from now on.
    Opened,
    /// The connection is closed; the driver closes the socket after sending what
    /// [`Session::poll_transmit`] still yields.
    Closed(CloseReason),
}

/// What the driver does with a received message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// An application message: hand it to the user.
    Message,
    /// The session took it (a handshake message); look at `poll_transmit` and `poll_event`.
    Consumed,
    /// The session closed (or was closed already); look at `poll_event`.
    Closed,
}

#[derive(Debug)]
enum Phase {
    /// A connect in progress; the handshake to run once connected (none without a key).
    Connecting(Option<Box<Handshake>>),
    Handshaking(Box<Handshake>),
    Open,
    /// Closing locally: no more deliveries; closed when the output is flushed.
    Closing,
    Closed,
}

/// What the first message of a session without a key is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screen {
    /// Nothing (a keyed session, or the first message passed).
    Off,
    /// A client without a key: a challenge means the listener demands a key.
    NoKeyClient,
}

/// One connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    role: Role,
    phase: Phase,
    screen: Screen,
    dialect: Dialect,
    limits: Limits,
    /// Times are kept as milliseconds since `epoch` (`NEVER`: none), so the whole table costs
    /// a few words per connection.
    epoch: Instant,
    /// The fixed deadline table, indexed by [`TimerKind`].
    timers: [u64; TIMER_KINDS],
    /// The last time bytes moved, either way (the idle clock).
    last_activity: Activity,
    partial_since: u64,
    opened: bool,
    /// The driver stopped reading (flow control): silence and an incomplete message are ours,
    /// so the idle and partial-message deadlines wait.
    reading_paused: bool,
    /// The driver's last flush left output the transport would not take: it waits on the
    /// peer (the write-stall slot holds the deadline, restarted by each bit of progress).
    output_waiting: bool,
    /// The idle or write-stall deadline passed while output waited, and the driver was asked
    /// to try one write before the session decides (see [`Deadlines::try_write`]); cleared by
    /// a flush that moved bytes.
    write_probe: bool,
    closed: Option<Box<CloseReason>>,
    /// Bodies left to send once the handshake is gone (#FAILURE#, a last #WELCOME#), in order.
    transmit: Vec<Vec<u8>>,
    /// The pickle protocol the peer is known to read (see [`Session::pickle_protocol`]).
    pickle_protocol: u8,
}

/// What [`Session::handle_timeout`] asks of its driver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Deadlines {
    /// The buffer-release deadline passed: release the connection's read buffer if nothing is
    /// buffered in it.
    pub release_buffer: bool,
    /// The idle or write-stall deadline passed while output waits: try one write now (without
    /// waiting) and report it with [`Session::on_flush`], then call
    /// [`Session::handle_timeout`] again, which closes the connection unless bytes moved.
    pub try_write: bool,
}

/// The pickle protocol written to a peer the handshake told nothing about (no key): 2, which
/// every Python reads, 2.7 included, as Python 3 writes it.
pub const UNKNOWN_PEER_PICKLE_PROTOCOL: u8 = 2;

/// "No time": an empty slot, no incomplete message, no limit.
const NEVER: u64 = u64::MAX;

/// The time of the last traffic (milliseconds since the session's epoch): the session's own, or,
/// once the connection is split, one clock shared by the two halves' sessions (same epoch).
#[derive(Debug)]
enum Activity {
    Own(u64),
    Shared(Arc<AtomicU64>),
}

impl Activity {
    #[inline]
    fn get(&self) -> u64 {
        match self {
            Activity::Own(t) => *t,
            Activity::Shared(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Traffic at `t`; the two halves may report out of order, the later time wins.
    #[inline]
    fn set(&mut self, t: u64) {
        match self {
            Activity::Own(own) => *own = t,
            Activity::Shared(shared) => {
                shared.fetch_max(t, Ordering::Relaxed);
            }
        }
    }

    /// Makes this clock shared (if not already) and returns another handle on it.
    fn share(&mut self) -> Activity {
        if let Activity::Own(t) = *self {
            *self = Activity::Shared(Arc::new(AtomicU64::new(t)));
        }
        match self {
            Activity::Shared(shared) => Activity::Shared(Arc::clone(shared)),
            Activity::Own(_) => unreachable!("shared just above"),
        }
    }
}

/// [`Timeouts`] in milliseconds (`u32::MAX`: none).
#[derive(Debug, Clone, Copy)]
struct Limits {
    handshake: u32,
    idle: u32,
    partial_message: u32,
    close_flush: u32,
    buffer_release: u32,
    write_stall: u32,
}

/// `d` in whole milliseconds, rounded up.
fn ceil_ms(d: Duration) -> u128 {
    d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000))
}

/// A limit in whole milliseconds, rounded up (a limit is never shortened); `None`: no limit.
fn limit_ms(d: Option<Duration>) -> u32 {
    d.map_or(u32::MAX, |d| ceil_ms(d).min(u128::from(u32::MAX - 1)) as u32)
}

/// `at + limit`, or `NEVER` without a limit.
fn after(at: u64, limit: u32) -> u64 {
    if limit == u32::MAX || at == NEVER { NEVER } else { at + u64::from(limit) }
}

impl Limits {
    fn new(t: &Timeouts) -> Limits {
        Limits {
            handshake: limit_ms(t.handshake),
            idle: limit_ms(t.idle),
            partial_message: limit_ms(t.partial_message),
            close_flush: limit_ms(Some(t.close_flush)),
            buffer_release: limit_ms(t.buffer_release),
            write_stall: limit_ms(t.write_stall),
        }
    }
}

impl Session {
    /// A session on a connection accepted by a listener. With a handshake config it runs the
    /// challenge-response (the challenge is ready in [`Session::poll_transmit`] at once);
    /// without, it is open at once (an [`Event::Opened`] waits).
    pub fn listener(auth: Option<(&HandshakeConfig, Nonce)>, timeouts: Timeouts, now: Instant) -> Session {
        let mut s = Session::new(Role::Listener, timeouts, now);
        match auth {
            Some((config, nonce)) => {
                s.dialect = config.dialect;
                s.phase = Phase::Handshaking(Box::new(Handshake::listener(config, nonce)));
                s.arm_handshake(now);
            }
            // A keyed client never speaks first (it waits for our challenge), so whatever comes
            // first here is the application's, as in CPython's keyless Listener: no check.
            None => s.open(Screen::Off),
        }
        s
    }

    /// A session that is open from the start with no handshake and no first-message check: the
    /// two ends of a `pipe()`.
    pub fn established(now: Instant) -> Session {
        let mut s = Session::new(Role::Client, Timeouts::NONE, now);
        s.open(Screen::Off);
        s.opened = false;
        s
    }

    /// A session on a connection this side opened, already connected.
    pub fn client(auth: Option<(&HandshakeConfig, Nonce)>, timeouts: Timeouts, now: Instant) -> Session {
        let mut s = Session::connecting(auth, timeouts, now);
        s.handle_connected(now);
        s
    }

    /// A session on a connection this side is still connecting; [`Session::handle_connected`]
    /// follows. The handshake deadline covers the connect.
    pub fn connecting(auth: Option<(&HandshakeConfig, Nonce)>, timeouts: Timeouts, now: Instant) -> Session {
        let mut s = Session::new(Role::Client, timeouts, now);
        s.phase = Phase::Connecting(auth.map(|(config, nonce)| Box::new(Handshake::client(config, nonce))));
        s.arm_handshake(now);
        s
    }

    /// The session of the sending half when the driver splits this connection in two (a
    /// receiving half keeps this session, a sending half gets the returned one): open, with this
    /// session's limits, dialect and pickle protocol, sharing its idle clock (see the module
    /// docs). The sender's write-stall and idle deadlines are its own slots; it never reads.
    pub fn split_sender(&mut self) -> Session {
        let mut s = Session::with_limits(self.role, self.limits, self.epoch);
        s.phase = Phase::Open;
        s.dialect = self.dialect;
        s.pickle_protocol = self.pickle_protocol;
        s.last_activity = self.last_activity.share();
        s.timers[TimerKind::Idle as usize] = after(s.last_activity.get(), s.limits.idle);
        s
    }

    fn new(role: Role, timeouts: Timeouts, now: Instant) -> Session {
        Session::with_limits(role, Limits::new(&timeouts), now)
    }

    fn with_limits(role: Role, limits: Limits, epoch: Instant) -> Session {
        let mut timers = [NEVER; TIMER_KINDS];
        timers[TimerKind::Idle as usize] = after(0, limits.idle);
        Session {
            role,
            phase: Phase::Closed,
            screen: Screen::Off,
            dialect: Dialect::Cpython,
            limits,
            epoch,
            timers,
            last_activity: Activity::Own(0),
            partial_since: NEVER,
            output_waiting: false,
            write_probe: false,
            opened: false,
            reading_paused: false,
            closed: None,
            transmit: Vec::new(),
            pickle_protocol: UNKNOWN_PEER_PICKLE_PROTOCOL,
        }
    }

    fn arm_handshake(&mut self, now: Instant) {
        self.timers[TimerKind::Handshake as usize] = after(self.ms(now), self.limits.handshake);
    }

    fn open(&mut self, screen: Screen) {
        self.phase = Phase::Open;
        self.screen = screen;
        self.opened = true;
        self.timers[TimerKind::Handshake as usize] = NEVER;
    }

    /// The connect finished: the handshake starts (the listener speaks first), or, without a key,
    /// the connection is open.
    pub fn handle_connected(&mut self, _now: Instant) {
        if let Phase::Connecting(hs) = std::mem::replace(&mut self.phase, Phase::Closed) {
            match hs {
                Some(hs) => self.phase = Phase::Handshaking(hs),
                None => self.open(Screen::NoKeyClient),
            }
        }
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The dialect in use: the listener's choice, or what a client detected from the challenge.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pickle protocol to write to this peer: what the handshake proved it reads (4 for
    /// CPython 3.12+ and Red Hat's Python 3, 2 for a peer that may be a Python 2: `processing`
    /// or the legacy handshake of CPython 2.7-3.11), or [`UNKNOWN_PEER_PICKLE_PROTOCOL`] without
    /// a handshake.
    pub fn pickle_protocol(&self) -> u8 {
        self.pickle_protocol
    }

    /// Chooses the pickle protocol to write to this peer (2 to 5), for those who know it.
    pub fn set_pickle_protocol(&mut self, protocol: u8) {
        self.pickle_protocol = protocol;
    }

    /// The read block a face's frame decoder should use now: [`HANDSHAKE_READ_BLOCK`] until the
    /// connection is open (an unauthenticated peer holds bytes, not a 64 KiB block), the
    /// decoder's default afterwards.
    #[inline]
    pub fn read_block(&self) -> usize {
        match self.phase {
            Phase::Open => crate::wire::frame::DEFAULT_READ_BLOCK,
            _ => HANDSHAKE_READ_BLOCK,
        }
    }

    /// How long the connection may go without traffic before the idle deadline closes it
    /// (`None`: no limit). For faces that wait inside the transport.
    pub fn idle_limit(&self) -> Option<Duration> {
        (self.limits.idle != u32::MAX).then(|| Duration::from_millis(u64::from(self.limits.idle)))
    }

    /// How long one blocking write may wait without progress before the write-stall deadline
    /// closes the connection (`None`: no limit). For faces that wait inside the transport.
    pub fn write_stall_limit(&self) -> Option<Duration> {
        (self.limits.write_stall != u32::MAX).then(|| Duration::from_millis(u64::from(self.limits.write_stall)))
    }

    /// When the write-stall deadline falls: armed while output waits on the peer (after a
    /// flush that left bytes, see [`Session::on_flush`]), `None` otherwise. A face that waits
    /// inside the transport (a blocking write) waits at most until then, and then lets
    /// [`Session::handle_timeout`] decide.
    pub fn write_stall_deadline(&self) -> Option<Instant> {
        let slot = self.timers[TimerKind::WriteStall as usize];
        (self.output_waiting && slot != NEVER).then(|| self.instant(slot))
    }

    /// How long a local close waits for queued output to leave ([`Timeouts::close_flush`]).
    pub fn close_flush_limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.limits.close_flush))
    }

    /// The time at which [`Session::handle_timeout`] would close the session if nothing else
    /// happened before (no byte in or out, no pause or resume): exact, unlike
    /// [`Session::poll_timeout`], whose slots are armed lazily and may only re-arm when due. For
    /// a face that cannot call `handle_timeout` while it waits (the blocking `wait` sees its
    /// connections through shared references): it waits until then at most and reports the
    /// connection ready, and the following receive lets the session decide.
    pub fn close_deadline(&self) -> Option<Instant> {
        let partial_slot = self.timers[TimerKind::PartialMessage as usize];
        self.close_deadline_with(self.reading_paused, self.partial_since, partial_slot, self.last_activity.get())
    }

    /// [`Session::close_deadline`] as it would be had the driver's reading pause ended at `at`
    /// ([`Session::resume_reading`]`(at, in_message)`), without ending it: for a face that
    /// waits for input through a shared reference (the blocking `wait`), whose wait counts as
    /// the end of the caller's pause after a delivery but which cannot tell the session so.
    /// Not paused, it is [`Session::close_deadline`].
    pub fn close_deadline_resumed_at(&self, at: Instant, in_message: bool) -> Option<Instant> {
        if !self.reading_paused {
            return self.close_deadline();
        }
        // What `resume_reading` would record: both clocks restart at `at`, and an incomplete
        // message arms its slot if nothing had.
        let at = self.ms(at);
        let (partial_since, mut partial_slot) = match in_message {
            true => (at, self.timers[TimerKind::PartialMessage as usize]),
            false => (NEVER, NEVER),
        };
        if in_message && partial_slot == NEVER {
            partial_slot = after(at, self.limits.partial_message);
        }
        self.close_deadline_with(false, partial_since, partial_slot, at)
    }

    /// [`Session::close_deadline`] for the given pause, partial-message start and slot, and
    /// last traffic.
    fn close_deadline_with(
        &self,
        paused: bool,
        partial_since: u64,
        partial_slot: u64,
        last_activity: u64,
    ) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let slot = |k: TimerKind| match k {
            TimerKind::PartialMessage => partial_slot,
            k => self.timers[k as usize],
        };
        // A lazy slot closes when it fires and its condition's own time has passed too.
        let lazy = |k: TimerKind, since: u64, limit: u32| {
            let (slot, due) = (slot(k), after(since, limit));
            if slot == NEVER || due == NEVER { NEVER } else { slot.max(due) }
        };
        let mut first = NEVER;
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            first = first.min(slot(TimerKind::Handshake));
        }
        first = first.min(slot(TimerKind::CloseFlush));
        if !paused {
            first = first.min(lazy(TimerKind::PartialMessage, partial_since, self.limits.partial_message));
        }
        if !paused || self.output_waiting {
            first = first.min(lazy(TimerKind::Idle, last_activity, self.limits.idle));
        }
        if self.output_waiting {
            first = first.min(slot(TimerKind::WriteStall));
        }
        (first != NEVER).then(|| self.instant(first))
    }

    /// True when the session closed and the reason was not yet taken from
    /// [`Session::poll_event`]: the next receive reports it.
    pub fn close_pending(&self) -> bool {
        self.closed.is_some()
    }

    /// True while connecting.
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting(_))
    }

    /// True while the challenge-response runs.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshaking(_))
    }

    /// True once open and until closing: messages are delivered and may be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// True when the peer's next two messages come back to back with nothing from us between
    /// them, and a peer with Nagle's algorithm on would hold the second until the first is
    /// acknowledged (an early client awaiting `#WELCOME#` and the answer to its challenge).
    /// A driver asks after writing the handshake's output and, when true, has its transport
    /// acknowledge at once (`TCP_QUICKACK` on Linux): without it each connect to a CPython
    /// listener over TCP waits for the 40 ms delayed-ACK timer.
    pub fn wants_prompt_ack(&self) -> bool {
        matches!(&self.phase, Phase::Handshaking(h) if h.wants_prompt_ack())
    }

    /// True after a local close was asked for (output still flushing) or once closed.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing | Phase::Closed)
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The largest message body the next frame may have: the handshake cap while
    /// authenticating, otherwise no limit beyond the decoder's own.
    #[inline]
    pub fn frame_limit(&self) -> usize {
        match self.phase {
            Phase::Open => usize::MAX,
            _ => HANDSHAKE_MAX_MESSAGE,
        }
    }

    /// The next body to frame and send (handshake messages, a last `#FAILURE#`).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Phase::Handshaking(hs) | Phase::Connecting(Some(hs)) = &mut self.phase
            && let Some(m) = hs.poll_transmit()
        {
            return Some(m);
        }
        if self.transmit.is_empty() { None } else { Some(self.transmit.remove(0)) }
    }

    /// The next event: [`Event::Opened`] once, then [`Event::Closed`] once.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.opened {
            self.opened = false;
            return Some(Event::Opened);
        }
        self.closed.take().map(|r| Event::Closed(*r))
    }

    /// Feeds one received message body.
    #[inline]
    pub fn handle_frame(&mut self, body: &[u8]) -> Delivery {
        match &mut self.phase {
            Phase::Open if self.screen == Screen::Off => Delivery::Message,
            Phase::Open => self.screen_first(body),
            Phase::Handshaking(_) => self.handshake_message(body),
            Phase::Connecting(_) | Phase::Closing | Phase::Closed => Delivery::Closed,
        }
    }

    fn screen_first(&mut self, body: &[u8]) -> Delivery {
        let challenge = body.starts_with(CHALLENGE) || body.starts_with(PROCESSING_CHALLENGE);
        let refuse = self.screen == Screen::NoKeyClient && challenge;
        self.screen = Screen::Off;
        if refuse {
            log::info!("the peer runs the challenge-response but this side has no authentication key");
            self.close_with(CloseReason::AuthenticationFailed(AuthenticationError::KeyRequired));
            Delivery::Closed
        } else {
            Delivery::Message
        }
    }

    fn handshake_message(&mut self, body: &[u8]) -> Delivery {
        let Phase::Handshaking(hs) = &mut self.phase else { return Delivery::Closed };
        let result = hs.handle_message(body);
        self.dialect = hs.dialect();
        match result {
            Err(e) => {
                self.fail_handshake(e);
                Delivery::Closed
            }
            Ok(()) if hs.is_authenticated() => {
                self.pickle_protocol = hs.pickle_protocol();
                // A last message (the client's #WELCOME#) may remain.
                while let Some(m) = hs.poll_transmit() {
                    self.transmit.push(m);
                }
                self.open(Screen::Off);
                Delivery::Consumed
            }
            Ok(()) => Delivery::Consumed,
        }
    }

    /// Closes after a failed handshake, keeping the failure message (if any) to send.
    fn fail_handshake(&mut self, e: AuthenticationError) {
        if let Phase::Handshaking(hs) = &mut self.phase {
            while let Some(m) = hs.poll_transmit() {
                self.transmit.push(m);
            }
        }
        self.close_with(CloseReason::AuthenticationFailed(e));
    }

    /// The frame decoder refused the input (a negative or oversized length).
    pub fn handle_frame_error(&mut self, e: FrameError) {
        match self.phase {
            Phase::Handshaking(_) | Phase::Connecting(_) => {
                let e = match e {
                    FrameError::TooLarge { len, .. } => AuthenticationError::Protocol(format!(
                        "handshake message of {len} bytes declared, the limit is {HANDSHAKE_MAX_MESSAGE}"
                    )),
                    e => AuthenticationError::Protocol(e.to_string()),
                };
                self.fail_handshake(e);
            }
            _ => self.close_with(CloseReason::Protocol(e)),
        }
    }

    /// The peer closed its side. `mid_message`: an incomplete message was buffered.
    pub fn handle_eof(&mut self, mid_message: bool) {
        let reason = match self.phase {
            Phase::Handshaking(_) | Phase::Connecting(_) => {
                CloseReason::AuthenticationFailed(AuthenticationError::Disconnected)
            }
            _ if mid_message => CloseReason::PeerClosedMidMessage,
            _ => CloseReason::PeerClosed,
        };
        self.close_with(reason);
    }

    /// A read or write failed: every I/O error of a connection comes here (a face filters
    /// nothing, except a wait its own caller bounded). The peer going away while
    /// authenticating is [`AuthenticationError::Disconnected`]; anything else closes with the
    /// error itself.
    pub fn handle_io_error(&mut self, e: std::io::Error) {
        let reason = match self.phase {
            Phase::Handshaking(_) | Phase::Connecting(Some(_)) if is_disconnect(e.kind()) => {
                CloseReason::AuthenticationFailed(AuthenticationError::Disconnected)
            }
            _ => CloseReason::Error(e.into()),
        };
        self.close_with(reason);
    }

    /// Closes at once for a reason the face supplies (the reactor stopping, ...): no flush, no
    /// more deliveries; [`Event::Closed`] carries [`CloseReason::Aborted`].
    pub fn abort(&mut self, why: &'static str) {
        self.close_with(CloseReason::Aborted(why));
    }

    /// The millisecond a clock that starts at `t` is stamped with: rounded up, so that a
    /// deadline counted from the stamp never falls before its limit has passed since `t`
    /// (rounded down, a limit of 500 ms closed a connection 499.98 ms after the half message
    /// arrived: a test's lower bound caught it).
    #[inline]
    fn ms(&self, t: Instant) -> u64 {
        ceil_ms(t.saturating_duration_since(self.epoch)) as u64
    }

    /// The last whole millisecond passed at `t`: rounded down, for deciding what is due (a
    /// deadline is due once this reaches it, never before its instant).
    #[inline]
    fn ms_passed(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Bytes arrived at `now`; `in_message`: an incomplete message is buffered after them.
    /// Cheap: arms a slot only when one was empty, never moves one.
    #[inline]
    pub fn on_read(&mut self, now: Instant, in_message: bool) {
        let now = self.ms(now);
        self.on_read_ms(now, in_message);
    }

    #[inline]
    fn on_read_ms(&mut self, now: u64, in_message: bool) {
        self.last_activity.set(now);
        if !in_message {
            self.partial_since = NEVER;
            return;
        }
        // A message that began earlier and is still incomplete keeps its start.
        if self.partial_since == NEVER {
            self.partial_since = now;
        }
        let slot = &mut self.timers[TimerKind::PartialMessage as usize];
        if *slot == NEVER {
            *slot = after(now, self.limits.partial_message);
        }
    }

    /// A read completed at least one message and left another incomplete: the incomplete one
    /// starts now.
    #[inline]
    pub fn on_message_boundary(&mut self, now: Instant) {
        if self.partial_since != NEVER {
            self.partial_since = self.ms(now);
        }
    }

    /// The driver tried to write its queued output at `now`: `wrote` some bytes, and the queue
    /// is `drained` or the transport would take no more (`!drained`). Bytes leaving count as
    /// traffic for the idle deadline; output left waiting starts (or, after progress, restarts)
    /// the write-stall clock. Called once per flush, not per message.
    #[inline]
    pub fn on_flush(&mut self, now: Instant, wrote: bool, drained: bool) {
        let now = self.ms(now);
        if wrote {
            self.last_activity.set(now);
        }
        if wrote || drained {
            // The peer took bytes: the write a deadline asked for (if one did) found it reading.
            self.write_probe = false;
        }
        let slot = &mut self.timers[TimerKind::WriteStall as usize];
        if drained {
            // A slot left armed finds no stall when due and stays empty (lazy, as the others).
            self.output_waiting = false;
            return;
        }
        if (wrote || !self.output_waiting) && !matches!(self.phase, Phase::Closed) {
            *slot = after(now, self.limits.write_stall);
        }
        self.output_waiting = true;
    }

    /// The driver stops (`true`) or resumes reading. While paused, the partial-message deadline
    /// does not close the connection, nor does the idle deadline unless output is waiting on the
    /// peer (then the silence is the peer's: it neither writes nor reads); resuming restarts
    /// their clocks at `now`.
    pub fn set_reading_paused(&mut self, paused: bool, now: Instant) {
        if self.reading_paused && !paused {
            let now = self.ms(now);
            self.last_activity.set(now);
            if self.partial_since != NEVER {
                self.partial_since = now;
            }
        }
        self.reading_paused = paused;
    }

    /// Whether the time of this connection's traffic is looked at: an idle limit (it runs on
    /// the clock of the last traffic), an incomplete message (its deadline's start), output
    /// waiting on the peer, or a phase other than open (the handshake's and the close's
    /// deadlines). A slot left armed lazily whose condition is gone (a write stall after the
    /// output drained, say) does not count: firing, it would find nothing to do. Nor does the
    /// buffer-release limit, which only a driver holding a read buffer for the connection
    /// arms ([`Session::buffer_held`]): that driver reports with the time while it holds one.
    ///
    /// When not, what [`Session::on_read`] (with no incomplete message), [`Session::on_flush`]
    /// (drained) and a resume would record is never consulted, so a driver may report that
    /// traffic without reading the clock: skip the first two, and resume with
    /// [`Session::resume_untimed`]. (A ping-pong under the default [`Timeouts`] keeps no time:
    /// a clock read and its conversions were a quarter of the blocking client's instructions
    /// per round trip.)
    #[inline]
    pub fn keeps_time(&self) -> bool {
        self.limits.idle != u32::MAX
            || self.partial_since != NEVER
            || self.output_waiting
            || !matches!(self.phase, Phase::Open)
    }

    /// The driver resumes reading after a pause, when the session keeps no time
    /// ([`Session::keeps_time`]): the resume restarts no clock that anything reads.
    #[inline]
    pub fn resume_untimed(&mut self) {
        debug_assert!(!self.keeps_time(), "resume_untimed while the session keeps time");
        self.reading_paused = false;
    }

    /// The driver stops reading: [`Session::set_reading_paused`]`(true, ..)`, which needs no
    /// time (the clocks restart when reading resumes).
    #[inline]
    pub fn pause_reading(&mut self) {
        self.reading_paused = true;
    }

    /// The driver resumes reading at `now` after a pause (a face that reads when its caller
    /// asks): [`Session::set_reading_paused`]`(false, now)` then [`Session::on_read`]`(now,
    /// in_message)`, with one conversion of the time.
    #[inline]
    pub fn resume_reading(&mut self, now: Instant, in_message: bool) {
        let now = self.ms(now);
        if self.reading_paused {
            self.last_activity.set(now);
            if self.partial_since != NEVER {
                self.partial_since = now;
            }
            self.reading_paused = false;
        }
        self.on_read_ms(now, in_message);
    }

    /// The driver holds a read buffer for this connection: arm its release.
    #[inline]
    pub fn buffer_held(&mut self) {
        let slot = &mut self.timers[TimerKind::ReleaseBuffer as usize];
        if *slot == NEVER {
            *slot = after(self.last_activity.get(), self.limits.buffer_release);
        }
    }

    /// Asks for a local close: no more deliveries. `flushed`: nothing is queued to send, so the
    /// session closes now ([`CloseReason::Local`]); otherwise it waits for [`Session::flushed`]
    /// until the close-flush deadline.
    pub fn close(&mut self, now: Instant, flushed: bool) {
        if self.is_closing() {
            return;
        }
        if flushed || !self.is_open() {
            self.close_with(CloseReason::Local);
        } else {
            self.phase = Phase::Closing;
            self.timers = [NEVER; TIMER_KINDS];
            self.timers[TimerKind::CloseFlush as usize] = after(self.ms(now), self.limits.close_flush);
        }
    }

    /// The driver's output queue is empty.
    pub fn flushed(&mut self) {
        if matches!(self.phase, Phase::Closing) {
            self.close_with(CloseReason::Local);
        }
    }

    /// Closes with `reason` unless already closed. Private: a face reports what happened (an
    /// error, end of file, time) and the session picks the reason.
    fn close_with(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        log::debug!("session closing: {reason}");
        self.phase = Phase::Closed;
        self.opened = false;
        self.timers = [NEVER; TIMER_KINDS];
        self.closed = Some(Box::new(reason));
    }

    /// The earliest deadline of the table.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first = self.timers.iter().copied().min().unwrap_or(NEVER);
        (first != NEVER).then(|| self.instant(first))
    }

    /// Handles every deadline due at `now` and says what the driver should do about it
    /// ([`Deadlines`]).
    ///
    /// The idle and write-stall deadlines close a connection for the peer's silence while
    /// output waits on it. A driver learns that the peer read only when it writes again, and
    /// the kernel reports room to write only once its buffer has drained a good part (a Unix
    /// socket three-quarters, a TCP one half): a peer reading slowly but steadily can stay
    /// unreported for longer than a short limit. So when one of them falls due while output
    /// waits, the session first asks for one write ([`Deadlines::try_write`]) and decides at
    /// its next call: a flush that moved bytes ([`Session::on_flush`]) restarts the clocks; one
    /// that moved nothing (or none tried) closes the connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Deadlines {
        let now = self.ms_passed(now);
        let mut release = false;
        let mut try_write = false;
        // A write asked for at an earlier call and not answered by progress: now it is decided.
        let probed = self.write_probe;
        for kind in [
            TimerKind::Handshake,
            TimerKind::CloseFlush,
            TimerKind::PartialMessage,
            TimerKind::Idle,
            TimerKind::WriteStall,
            TimerKind::ReleaseBuffer,
        ] {
            let slot = kind as usize;
            if self.timers[slot] > now {
                continue; // not due (or NEVER)
            }
            self.timers[slot] = NEVER;
            match kind {
                TimerKind::Handshake => {
                    if !matches!(self.phase, Phase::Open | Phase::Closing | Phase::Closed) {
                        self.close_with(CloseReason::HandshakeTimeout);
                    }
                }
                // Armed only while output is waiting: what is still queued is dropped.
                TimerKind::CloseFlush => self.close_with(CloseReason::Error(Error::Timeout(Timeout::CloseFlush))),
                TimerKind::PartialMessage | TimerKind::Idle
                    if self.reading_paused && (kind == TimerKind::PartialMessage || !self.output_waiting) =>
                {
                    let limit = match kind {
                        TimerKind::Idle => self.limits.idle,
                        _ => self.limits.partial_message,
                    };
                    self.timers[slot] = after(now, limit);
                }
                TimerKind::PartialMessage => {
                    let due = after(self.partial_since, self.limits.partial_message);
                    if due <= now {
                        self.close_with(CloseReason::PartialMessageTimeout);
                    } else {
                        self.timers[slot] = due;
                    }
                }
                TimerKind::Idle => {
                    let due = after(self.last_activity.get(), self.limits.idle);
                    if due > now {
                        self.timers[slot] = due;
                    } else if self.output_waiting && !probed {
                        try_write = self.ask_for_a_write(slot, now);
                    } else {
                        self.close_with(CloseReason::IdleTimeout);
                    }
                }
                TimerKind::WriteStall if self.output_waiting => {
                    if probed {
                        self.close_with(CloseReason::WriteStallTimeout);
                    } else {
                        try_write = self.ask_for_a_write(slot, now);
                    }
                }
                TimerKind::WriteStall => {}
                TimerKind::ReleaseBuffer => {
                    let due = after(self.last_activity.get(), self.limits.buffer_release);
                    if due <= now {
                        release = true;
                    } else {
                        self.timers[slot] = due;
                    }
                }
            }
            if self.is_closed() {
                return Deadlines::default();
            }
        }
        Deadlines { release_buffer: release, try_write }
    }

    /// A deadline in `slot` found the peer silent while output waits: asks the driver for one
    /// write, and leaves the slot due so that the next call decides even if none comes.
    fn ask_for_a_write(&mut self, slot: usize, now: u64) -> bool {
        self.write_probe = true;
        self.timers[slot] = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkey::AuthKey;
    use crate::wire::handshake::{FAILURE, MODERN_NONCE_LEN, WELCOME};

    fn config(key: &str, dialect: Dialect) -> HandshakeConfig {
        let mut c = HandshakeConfig::new(AuthKey::from(key));
        c.dialect = dialect;
        c
    }

    fn nonce(b: u8) -> Nonce {
        Nonce::from_bytes([b; MODERN_NONCE_LEN])
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            handshake: Some(Duration::from_secs(10)),
            idle: None,
            partial_message: Some(Duration::from_secs(60)),
            close_flush: Duration::from_secs(5),
            buffer_release: Some(Duration::from_secs(1)),
            write_stall: None,
        }
    }

    /// The outcome of one side of a pair.
    #[derive(Debug, Default)]
    struct Side {
        opened: bool,
        closed: Option<String>,
        reason: Option<CloseReason>,
        messages: Vec<Vec<u8>>,
    }

    /// Moves bodies both ways until nothing moves; returns both sides' outcomes.
    fn pump(listener: &mut Session, client: &mut Session, app_first: Option<&[u8]>) -> (Side, Side) {
        let (mut ls, mut cs) = (Side::default(), Side::default());
        let mut app_first = app_first;
        for _ in 0..20 {
            let mut moved = false;
            let mut to_client = Vec::new();
            while let Some(m) = listener.poll_transmit() {
                to_client.push(m);
            }
            if listener.is_open()
                && let Some(m) = app_first.take()
            {
                to_client.push(m.to_vec());
            }
            for m in to_client {
                moved = true;
                if client.handle_frame(&m) == Delivery::Message {
                    cs.messages.push(m);
                }
            }
            while let Some(m) = client.poll_transmit() {
                moved = true;
                if listener.handle_frame(&m) == Delivery::Message {
                    ls.messages.push(m);
                }
            }
            for (s, side) in [(&mut *listener, &mut ls), (&mut *client, &mut cs)] {
                while let Some(e) = s.poll_event() {
                    moved = true;
                    match e {
                        Event::Opened => side.opened = true,
                        Event::Closed(r) => {
                            side.closed = Some(r.to_string());
                            side.reason = Some(r);
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
        (ls, cs)
    }

    fn pair(lkey: Option<&str>, ldialect: Dialect, ckey: Option<&str>) -> (Side, Side, Session, Session) {
        let now = Instant::now();
        let lc = lkey.map(|k| config(k, ldialect));
        let cc = ckey.map(|k| config(k, Dialect::Cpython));
        let mut l = Session::listener(lc.as_ref().map(|c| (c, nonce(1))), timeouts(), now);
        let mut c = Session::client(cc.as_ref().map(|c| (c, nonce(2))), timeouts(), now);
        let (ls, cs) = pump(&mut l, &mut c, Some(b"hello"));
        (ls, cs, l, c)
    }

    const DIALECTS: [Dialect; 3] = [Dialect::Cpython, Dialect::CpythonLegacy, Dialect::Processing];

    #[test]
    fn right_key_opens_both_sides_in_every_dialect() {
        for d in DIALECTS {
            let (ls, cs, l, c) = pair(Some("k"), d, Some("k"));
            assert!(ls.opened && cs.opened, "{d:?}: {ls:?} {cs:?}");
            assert!(ls.closed.is_none() && cs.closed.is_none(), "{d:?}");
            assert_eq!(cs.messages, vec![b"hello".to_vec()], "{d:?}");
            assert!(l.is_open() && c.is_open());
            assert_eq!(l.poll_timeout(), None, "no deadline left once open");
            let expect = if d == Dialect::Processing { Dialect::Processing } else { Dialect::Cpython };
            assert_eq!(c.dialect(), expect);
        }
    }

    #[test]
    fn wrong_key_fails_both_sides_with_reasons_that_say_so() {
        for d in DIALECTS {
            let (ls, cs, ..) = pair(Some("right"), d, Some("wrong"));
            assert!(!ls.opened && !cs.opened);
            assert!(matches!(ls.reason, Some(CloseReason::AuthenticationFailed(AuthenticationError::DigestMismatch))));
            assert!(matches!(cs.reason, Some(CloseReason::AuthenticationFailed(AuthenticationError::Rejected))));
            assert!(cs.messages.is_empty());
        }
    }

    #[test]
    fn client_without_key_meets_a_keyed_listener_as_key_required() {
        for d in DIALECTS {
            let (ls, cs, ..) = pair(Some("k"), d, None);
            assert!(
                matches!(cs.reason, Some(CloseReason::AuthenticationFailed(AuthenticationError::KeyRequired))),
                "{d:?}: {cs:?}"
            );
            assert!(cs.messages.is_empty(), "the challenge is never a message");
            assert!(!ls.opened);
        }
    }

    #[test]
    fn listener_without_key_delivers_any_first_message_as_cpython_does() {
        // A keyed client never speaks first (it waits for a challenge), so a first message that
        // looks like a handshake message is the application's.
        let now = Instant::now();
        for first in [&b"#CHALLENGE#{sha256}0123456789012345678901234567890123456789"[..], WELCOME, FAILURE] {
            let mut l = Session::listener(None, timeouts(), now);
            assert!(matches!(l.poll_event(), Some(Event::Opened)));
            assert_eq!(l.handle_frame(first), Delivery::Message);
            assert!(l.poll_event().is_none());
        }
    }

    #[test]
    fn keyed_client_meeting_a_listener_without_key_fails_on_its_first_message() {
        let (ls, cs, ..) = pair(None, Dialect::Cpython, Some("k"));
        assert!(ls.opened);
        assert!(matches!(cs.reason, Some(CloseReason::AuthenticationFailed(AuthenticationError::Protocol(_)))));
        assert!(cs.messages.is_empty());
    }

    #[test]
    fn no_key_on_either_side_opens_at_once() {
        let (ls, cs, ..) = pair(None, Dialect::Cpython, None);
        assert!(ls.opened && cs.opened);
        assert_eq!(cs.messages, vec![b"hello".to_vec()]);
    }

    #[test]
    fn every_dialect_pair_either_opens_or_names_the_mismatch() {
        // A processing listener meets a client that answers in the CPython way, and the reverse.
        let now = Instant::now();
        let lc = config("k", Dialect::Processing);
        let mut l = Session::listener(Some((&lc, nonce(1))), timeouts(), now);
        l.poll_transmit().unwrap();
        let mut reply = b"{sha256}".to_vec();
        reply.extend_from_slice(&[0; 32]);
        assert_eq!(l.handle_frame(&reply), Delivery::Closed);
        assert!(matches!(
            l.poll_event(),
            Some(Event::Closed(CloseReason::AuthenticationFailed(AuthenticationError::DialectMismatch { .. })))
        ));
        // A CPython listener meets a processing-style (HMAC-SHA1, 20 bytes) reply.
        let lc = config("k", Dialect::Cpython);
        let mut l = Session::listener(Some((&lc, nonce(1))), timeouts(), now);
        l.poll_transmit().unwrap();
        assert_eq!(l.handle_frame(&[7; 20]), Delivery::Closed);
        let Some(Event::Closed(CloseReason::AuthenticationFailed(e @ AuthenticationError::DialectMismatch { .. }))) =
            l.poll_event()
        else {
            panic!("expected a dialect mismatch")
        };
        assert!(e.to_string().contains("processing"), "{e}");
        assert_eq!(l.poll_transmit().as_deref(), Some(FAILURE), "#FAILURE# is still sent");
        // Every listener dialect against our (adaptive) client opens.
        for d in DIALECTS {
            let (ls, cs, ..) = pair(Some("k"), d, Some("k"));
            assert!(ls.opened && cs.opened);
        }
    }

    #[test]
    fn handshake_deadline_closes_with_handshake_timeout() {
        let t0 = Instant::now();
        let lc = config("k", Dialect::Cpython);
        let mut l = Session::listener(Some((&lc, nonce(1))), timeouts(), t0);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert!(!l.handle_timeout(t0 + Duration::from_secs(9)).release_buffer);
        assert!(!l.is_closed());
        let _ = l.handle_timeout(t0 + Duration::from_secs(10));
        assert!(matches!(l.poll_event(), Some(Event::Closed(CloseReason::HandshakeTimeout))));
        assert_eq!(l.poll_timeout(), None);
        // A connecting client: the deadline covers the connect too.
        let mut c = Session::connecting(Some((&lc, nonce(2))), timeouts(), t0);
        let _ = c.handle_timeout(t0 + Duration::from_secs(11));
        assert!(matches!(c.poll_event(), Some(Event::Closed(CloseReason::HandshakeTimeout))));
    }

    #[test]
    fn idle_deadline_is_lazy_and_fires_only_after_real_silence() {
        let t0 = Instant::now();
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(5));
        let mut s = Session::listener(None, t, t0);
        assert!(matches!(s.poll_event(), Some(Event::Opened)));
        for i in 1..=100 {
            s.on_read(t0 + Duration::from_millis(40 * i), false);
            // The table does not move on a read.
            assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        }
        let _ = s.handle_timeout(t0 + Duration::from_secs(5));
        assert!(!s.is_closed());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(9)));
        let _ = s.handle_timeout(t0 + Duration::from_secs(9));
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::IdleTimeout))));
    }

    #[test]
    fn partial_message_deadline_follows_the_oldest_incomplete_message() {
        let t0 = Instant::now();
        let mut s = Session::listener(None, timeouts(), t0);
        s.poll_event();
        s.on_read(t0, true);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        // Streaming on: messages complete and new ones begin; the slot stays put.
        for i in 1..1000 {
            let now = t0 + Duration::from_millis(50 * i);
            s.on_message_boundary(now);
            s.on_read(now, true);
        }
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        let _ = s.handle_timeout(t0 + Duration::from_secs(60));
        assert!(!s.is_closed(), "the incomplete message began later");
        let rearmed = s.poll_timeout().unwrap();
        assert!(rearmed > t0 + Duration::from_secs(60));
        let _ = s.handle_timeout(rearmed);
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::PartialMessageTimeout))));
    }

    /// A deadline counts from the instant its clock started, not from the millisecond before:
    /// a half message 0.6 ms into a millisecond is not closed on 500 ms before 500 ms passed.
    #[test]
    fn deadlines_never_fall_before_their_limit_within_a_millisecond() {
        let t0 = Instant::now();
        let us = |n: u64| t0 + Duration::from_micros(n);
        let mut t = timeouts();
        t.partial_message = Some(Duration::from_millis(500));
        t.idle = Some(Duration::from_millis(800));
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        s.on_read(us(10_600), true);
        let due = s.poll_timeout().unwrap();
        assert!(due >= us(510_600), "the partial-message deadline is {:?} after its start", due - us(10_600));
        let _ = s.handle_timeout(us(510_590));
        assert!(!s.is_closed(), "closed 499.99 ms after the half message");
        let _ = s.handle_timeout(due);
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::PartialMessageTimeout))));
        // The idle clock too.
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        s.on_read(us(20_300), false);
        let _ = s.handle_timeout(us(820_200));
        assert!(!s.is_closed(), "idle-closed 799.9 ms after the last traffic");
        let _ = s.handle_timeout(us(821_000));
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::IdleTimeout))));
    }

    #[test]
    fn write_stall_closes_only_without_progress() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = timeouts();
        t.write_stall = Some(Duration::from_secs(1));
        t.partial_message = None;
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        // A flush that drains arms nothing.
        s.on_flush(ms(10), true, true);
        assert_eq!(s.poll_timeout(), None);
        // Blocked: the clock starts at the first block and does not move on blocked retries.
        s.on_flush(ms(100), true, false);
        assert_eq!(s.poll_timeout(), Some(ms(1100)));
        s.on_flush(ms(500), false, false);
        assert_eq!(s.poll_timeout(), Some(ms(1100)));
        // Progress at 900 restarts it: the due slot re-arms instead of closing.
        s.on_flush(ms(900), true, false);
        let _ = s.handle_timeout(ms(1100));
        assert!(!s.is_closed(), "progress 200 ms ago");
        assert_eq!(s.poll_timeout(), Some(ms(1900)));
        // Drained in between: the due slot finds no stall and stays empty.
        s.on_flush(ms(1200), true, true);
        let _ = s.handle_timeout(ms(1900));
        assert!(!s.is_closed());
        assert_eq!(s.poll_timeout(), None);
        // Blocked again with no progress for the whole limit: closed, and says why.
        // (After the one write the deadline asks for, which moved nothing.)
        s.on_flush(ms(2000), false, false);
        assert!(s.handle_timeout(ms(3000)).try_write);
        s.on_flush(ms(3000), false, false);
        let _ = s.handle_timeout(ms(3000));
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::WriteStallTimeout))));
    }

    #[test]
    fn close_deadline_is_exact_where_the_lazy_slots_are_not() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(1));
        t.partial_message = None;
        t.write_stall = Some(Duration::from_secs(2));
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        assert_eq!(s.close_deadline(), Some(ms(1000)));
        // A read at 600 ms: the idle slot stays at 1 s (lazy), the close moves to 1.6 s.
        s.on_read(ms(600), false);
        assert_eq!(s.poll_timeout(), Some(ms(1000)));
        assert_eq!(s.close_deadline(), Some(ms(1600)));
        let _ = s.handle_timeout(ms(1000));
        assert!(!s.is_closed());
        assert_eq!(s.close_deadline(), Some(ms(1600)));
        // Paused by the driver with nothing waiting on the peer: no close by idle.
        s.set_reading_paused(true, ms(700));
        assert_eq!(s.close_deadline(), None);
        // Output waiting on the peer: the write-stall slot, and idle again (the peer's silence).
        s.on_flush(ms(800), true, false);
        assert_eq!(s.write_stall_deadline(), Some(ms(2800)));
        assert_eq!(s.close_deadline(), Some(ms(1800)));
        // Due while output waits: one write first; it moved nothing, so the next call closes.
        assert!(s.handle_timeout(ms(1800)).try_write);
        s.on_flush(ms(1800), false, false);
        assert_eq!(s.handle_timeout(ms(1800)), Deadlines::default());
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::IdleTimeout))));
        assert_eq!(s.close_deadline(), None);
        assert_eq!(s.write_stall_deadline(), None, "no output waits on a closed session's clock");
        // A drained flush disarms the write-stall deadline.
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        s.on_flush(ms(10), false, false);
        assert_eq!(s.write_stall_deadline(), Some(ms(2010)));
        s.on_flush(ms(20), true, true);
        assert_eq!(s.write_stall_deadline(), None);
        assert!(!s.close_pending());
        s.abort("test");
        assert!(s.close_pending());
        s.poll_event();
        assert!(!s.close_pending());
    }

    #[test]
    fn the_close_deadline_as_resumed_is_the_one_a_resume_would_give() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for (idle, partial) in [(Some(1000), Some(300)), (None, Some(300)), (Some(1000), None), (None, None)] {
            let mut t = timeouts();
            t.idle = idle.map(Duration::from_millis);
            t.partial_message = partial.map(Duration::from_millis);
            // Incomplete when paused (read at 50 ms), or whole; incomplete when resumed, or not.
            for (partial_before, in_message) in [(true, true), (false, true), (false, false), (true, false)] {
                let session = || {
                    let mut s = Session::listener(None, t, t0);
                    s.poll_event();
                    s.on_read(ms(50), partial_before);
                    s.pause_reading();
                    s
                };
                let paused = session();
                let mut resumed = session();
                let at = ms(700);
                resumed.resume_reading(at, in_message);
                let want = resumed.close_deadline();
                assert_eq!(
                    paused.close_deadline_resumed_at(at, in_message),
                    want,
                    "idle {idle:?}, partial {partial:?}, incomplete before {partial_before}, after {in_message}"
                );
                // And it is what the resumed session closes at.
                if let Some(d) = want {
                    let _ = resumed.handle_timeout(d);
                    let _ = resumed.handle_timeout(d);
                    assert!(resumed.close_pending(), "closes at {d:?}");
                }
            }
        }
    }

    #[test]
    fn idle_while_paused_waits_for_our_pause_but_not_for_a_peer_that_does_not_read() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(1));
        t.partial_message = None;
        // Paused by the driver, nothing waiting on the peer: the silence is ours.
        let mut ours = Session::listener(None, t, t0);
        ours.poll_event();
        ours.set_reading_paused(true, ms(0));
        let _ = ours.handle_timeout(ms(1000));
        assert!(!ours.is_closed());
        // Paused because output waits on the peer, and the peer took none of it: closed.
        let mut theirs = Session::listener(None, t, t0);
        theirs.poll_event();
        theirs.on_read(ms(100), false);
        theirs.on_flush(ms(200), true, false);
        theirs.set_reading_paused(true, ms(200));
        let _ = theirs.handle_timeout(ms(1000));
        assert!(!theirs.is_closed(), "bytes left at 200 ms: idle until 1200");
        let due = theirs.poll_timeout().unwrap();
        assert_eq!(due, ms(1200));
        // One write asked for first; a driver that tries none gets the close at the next call.
        assert!(theirs.handle_timeout(due).try_write);
        assert!(!theirs.is_closed());
        assert_eq!(theirs.poll_timeout(), Some(due), "decided at once");
        let _ = theirs.handle_timeout(due);
        assert!(matches!(theirs.poll_event(), Some(Event::Closed(CloseReason::IdleTimeout))));
    }

    /// The kernel reports room to write only once much of its buffer drained, so a slow but
    /// steady reader can go unreported for longer than a short idle or write-stall limit:
    /// before closing for the peer's silence while output waits, the session asks for one
    /// write, and bytes moved restart the clocks.
    #[test]
    fn a_deadline_asks_for_one_write_before_closing_a_peer_that_may_be_reading() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for idle in [true, false] {
            let mut t = timeouts();
            t.partial_message = None;
            (t.idle, t.write_stall) = match idle {
                true => (Some(Duration::from_millis(300)), None),
                false => (None, Some(Duration::from_millis(300))),
            };
            let reason = |e: Option<Event>| match e {
                Some(Event::Closed(CloseReason::IdleTimeout)) if idle => true,
                Some(Event::Closed(CloseReason::WriteStallTimeout)) => !idle,
                _ => false,
            };
            let mut s = Session::listener(None, t, t0);
            s.poll_event();
            // Output left waiting at 0; the kernel reports nothing for 10 s while the peer reads:
            // each deadline's write finds room.
            s.on_flush(ms(0), true, false);
            let mut now = 0;
            for _ in 0..30 {
                let due = s.poll_timeout().expect("a deadline while output waits");
                assert!(due <= ms(now + 300), "{idle}: armed for {due:?}");
                now = (due - t0).as_millis() as u64;
                assert_eq!(
                    s.handle_timeout(due),
                    Deadlines { release_buffer: false, try_write: true },
                    "{idle} at {now}"
                );
                assert!(!s.is_closed());
                s.on_flush(due, true, false);
                // The next call finds the slot's condition gone and re-arms it (lazily).
                assert_eq!(s.handle_timeout(due), Deadlines::default(), "{idle} at {now}");
                assert!(!s.is_closed() && s.poll_timeout() > Some(due), "{idle}: progress re-arms");
            }
            assert!(now >= 8_000, "{idle}: still open at {now} ms");
            // The peer stops reading: the next deadline's write moves nothing, and it closes.
            let due = s.poll_timeout().unwrap();
            assert!(s.handle_timeout(due).try_write);
            s.on_flush(due, false, false);
            assert_eq!(s.handle_timeout(due), Deadlines::default());
            assert!(reason(s.poll_event()), "{idle}: closed for the right reason");
            // Traffic from the peer between the ask and the answer is traffic (idle only).
            if idle {
                let mut s = Session::listener(None, t, t0);
                s.poll_event();
                s.on_flush(ms(0), false, false);
                assert!(s.handle_timeout(ms(300)).try_write);
                s.on_read(ms(310), false);
                s.on_flush(ms(320), false, false);
                let _ = s.handle_timeout(ms(320));
                assert!(!s.is_closed(), "the peer wrote at 310: idle until 610");
                assert_eq!(s.poll_timeout(), Some(ms(610)));
            }
        }
    }

    #[test]
    fn resume_reading_is_resuming_then_reading() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(1));
        for in_message in [false, true] {
            let (mut one, mut two) = (Session::listener(None, t, t0), Session::listener(None, t, t0));
            for s in [&mut one, &mut two] {
                s.poll_event();
                s.on_read(ms(100), true);
                s.set_reading_paused(true, ms(100));
            }
            one.set_reading_paused(false, ms(700));
            one.on_read(ms(700), in_message);
            two.resume_reading(ms(700), in_message);
            assert_eq!(one.close_deadline(), two.close_deadline());
            assert_eq!(one.close_deadline(), Some(ms(1700)), "the idle clock restarts at the resume");
            assert_eq!(one.poll_timeout(), two.poll_timeout());
        }
    }

    #[test]
    fn writing_counts_as_traffic_for_the_idle_deadline() {
        let t0 = Instant::now();
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(1));
        let mut s = Session::listener(None, t, t0);
        s.poll_event();
        // A peer that only reads what we stream to it is not idle.
        for i in 1..=30 {
            let now = t0 + Duration::from_millis(100 * i);
            s.on_flush(now, true, true);
            let _ = s.handle_timeout(now);
        }
        assert!(!s.is_closed());
    }

    #[test]
    fn split_halves_keep_their_deadlines_and_share_the_idle_clock() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = timeouts();
        t.idle = Some(Duration::from_secs(1));
        t.write_stall = Some(Duration::from_secs(2));
        let mut reader = Session::listener(None, t, t0);
        reader.poll_event();
        let mut writer = reader.split_sender();
        assert!(writer.is_open() && writer.poll_event().is_none(), "open, no second Opened");
        assert_eq!(writer.write_stall_limit(), Some(Duration::from_secs(2)));
        // The writer sends every 200 ms and the peer sends nothing: the reader stays open.
        for i in 1..=15 {
            writer.on_flush(ms(200 * i), true, true);
            let _ = reader.handle_timeout(ms(200 * i));
        }
        assert!(!reader.is_closed(), "the writer's traffic counts for the reader's idle");
        // Reads count for the writer, which is stalled from 3000 on.
        writer.on_flush(ms(3000), false, false);
        reader.on_read(ms(3500), false);
        let _ = writer.handle_timeout(ms(4000));
        assert!(!writer.is_closed(), "read at 3500: idle until 4500");
        // No progress for the stall limit closes the writer alone.
        reader.on_read(ms(4400), false);
        assert!(writer.handle_timeout(ms(5000)).try_write);
        writer.on_flush(ms(5000), false, false);
        let _ = writer.handle_timeout(ms(5000));
        assert!(matches!(writer.poll_event(), Some(Event::Closed(CloseReason::WriteStallTimeout))));
        assert!(!reader.is_closed());
        // Silence both ways for the idle limit closes the reader.
        let _ = reader.handle_timeout(ms(5400));
        assert!(matches!(reader.poll_event(), Some(Event::Closed(CloseReason::IdleTimeout))));
    }

    #[test]
    fn buffer_release_fires_once_quiet() {
        let t0 = Instant::now();
        let mut s = Session::listener(None, timeouts(), t0);
        s.on_read(t0, true);
        s.buffer_held();
        s.on_read(t0 + Duration::from_millis(500), false);
        assert!(!s.handle_timeout(t0 + Duration::from_secs(1)).release_buffer, "not quiet yet");
        assert!(s.handle_timeout(t0 + Duration::from_millis(1500)).release_buffer);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)), "only the partial-message slot is left");
    }

    #[test]
    fn eof_at_each_point_gives_the_reason_for_that_point() {
        let now = Instant::now();
        let lc = config("k", Dialect::Cpython);
        // During the handshake.
        let mut l = Session::listener(Some((&lc, nonce(1))), timeouts(), now);
        l.handle_eof(false);
        assert!(matches!(
            l.poll_event(),
            Some(Event::Closed(CloseReason::AuthenticationFailed(AuthenticationError::Disconnected)))
        ));
        // While connecting.
        let mut c = Session::connecting(Some((&lc, nonce(1))), timeouts(), now);
        c.handle_eof(false);
        assert!(matches!(c.poll_event(), Some(Event::Closed(CloseReason::AuthenticationFailed(_)))));
        // Open, between and inside messages.
        let (.., mut l, mut c) = pair(Some("k"), Dialect::Cpython, Some("k"));
        l.handle_eof(false);
        assert!(matches!(l.poll_event(), Some(Event::Closed(CloseReason::PeerClosed))));
        c.handle_eof(true);
        assert!(matches!(c.poll_event(), Some(Event::Closed(CloseReason::PeerClosedMidMessage))));
        // Once closed, nothing else is reported.
        c.handle_eof(false);
        assert!(c.poll_event().is_none());
        assert_eq!(c.handle_frame(b"late"), Delivery::Closed);
    }

    #[test]
    fn frame_errors_map_to_protocol_or_authentication_failure() {
        let now = Instant::now();
        let lc = config("k", Dialect::Cpython);
        let mut l = Session::listener(Some((&lc, nonce(1))), timeouts(), now);
        l.poll_transmit();
        l.handle_frame_error(FrameError::TooLarge { len: 1 << 40, limit: 256 });
        assert!(matches!(
            l.poll_event(),
            Some(Event::Closed(CloseReason::AuthenticationFailed(AuthenticationError::Protocol(_))))
        ));
        let mut o = Session::listener(None, timeouts(), now);
        o.poll_event();
        o.handle_frame_error(FrameError::NegativeLength(-5));
        assert!(matches!(o.poll_event(), Some(Event::Closed(CloseReason::Protocol(_)))));
    }

    #[test]
    fn local_close_waits_for_the_flush_then_for_the_deadline() {
        let t0 = Instant::now();
        let mut s = Session::listener(None, timeouts(), t0);
        s.poll_event();
        s.close(t0, false);
        assert!(s.is_closing() && !s.is_closed());
        assert_eq!(s.handle_frame(b"x"), Delivery::Closed, "nothing delivered while closing");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        s.flushed();
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::Local))));
        // Output that never leaves: the close says it was dropped.
        let mut s = Session::listener(None, timeouts(), t0);
        s.close(t0, false);
        let _ = s.handle_timeout(t0 + Duration::from_millis(4999));
        assert!(!s.is_closed(), "still flushing");
        let _ = s.handle_timeout(t0 + Duration::from_secs(5));
        assert!(matches!(s.poll_event(), Some(Event::Closed(CloseReason::Error(Error::Timeout(Timeout::CloseFlush))))));
    }

    #[test]
    fn the_session_says_the_read_block_and_decides_io_errors_and_aborts() {
        let now = Instant::now();
        let lc = config("k", Dialect::Cpython);
        // Until open, the handshake's block; open, the decoder's default.
        let (.., l, _) = pair(Some("k"), Dialect::Cpython, Some("k"));
        assert_eq!(l.read_block(), crate::wire::frame::DEFAULT_READ_BLOCK);
        let mut c = Session::connecting(Some((&lc, nonce(1))), timeouts(), now);
        assert_eq!(c.read_block(), HANDSHAKE_READ_BLOCK);
        // A reset while connecting or authenticating: the peer went away.
        c.handle_io_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            c.poll_event(),
            Some(Event::Closed(CloseReason::AuthenticationFailed(AuthenticationError::Disconnected)))
        ));
        // Open: the error itself.
        let mut o = Session::listener(None, timeouts(), now);
        o.poll_event();
        o.handle_io_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(o.poll_event(), Some(Event::Closed(CloseReason::Error(Error::Io(_))))));
        // A face's own reason for closing at once.
        let mut a = Session::listener(None, timeouts(), now);
        a.poll_event();
        a.abort("the reactor stopped");
        let Some(Event::Closed(reason)) = a.poll_event() else { panic!("not closed") };
        assert!(reason.is_clean());
        assert_eq!(reason.to_string(), "the reactor stopped");
        assert_eq!(a.poll_timeout(), None);
    }

    proptest::proptest! {
        /// Arbitrary message sequences in both roles with arbitrary clock steps: no panic, no
        /// delivery before authentication, at most one close, the deadline table never empty
        /// while a keyed handshake is in progress.
        #[test]
        fn arbitrary_input_and_time_never_deliver_before_authentication(
            msgs in proptest::collection::vec((proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0u64..20_000), 0..8),
            listener_role in proptest::prelude::any::<bool>(),
        ) {
            let t0 = Instant::now();
            let c = config("k", Dialect::Cpython);
            let mut s = if listener_role {
                Session::listener(Some((&c, nonce(1))), timeouts(), t0)
            } else {
                Session::client(Some((&c, nonce(1))), timeouts(), t0)
            };
            let mut now = t0;
            let mut closes = 0;
            for (m, step) in &msgs {
                now += Duration::from_millis(*step);
                let _ = s.handle_timeout(now);
                let d = s.handle_frame(m);
                proptest::prop_assert_ne!(d, Delivery::Message);
                while s.poll_transmit().is_some() {}
                while let Some(e) = s.poll_event() {
                    if let Event::Closed(_) = e { closes += 1; }
                }
                if s.is_handshaking() {
                    proptest::prop_assert!(s.poll_timeout().is_some());
                }
            }
            proptest::prop_assert!(closes <= 1);
        }

        /// A driver that skips the clock whenever the session keeps no time (`keeps_time`:
        /// no `on_read` without an incomplete message, no drained `on_flush`, an untimed
        /// resume, no deadline handling) sees exactly what a driver that always reports the
        /// time sees: the same closes, at the same steps, for the same reasons, and the same
        /// close deadline throughout. Arbitrary reads, flushes, pauses and clock steps, under
        /// limits with and without an idle timeout.
        #[test]
        fn skipping_the_clock_when_no_time_is_kept_changes_no_decision(
            ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>(), 0u64..3_000), 0..60),
            idle in proptest::prelude::any::<bool>(),
            stall in proptest::prelude::any::<bool>(),
        ) {
            let t0 = Instant::now();
            let mut t = timeouts();
            t.idle = idle.then_some(Duration::from_millis(1_500));
            t.write_stall = stall.then_some(Duration::from_millis(2_000));
            t.partial_message = Some(Duration::from_millis(2_500));
            t.buffer_release = None;
            let mut timed = Session::listener(None, t, t0);
            let mut lazy = Session::listener(None, t, t0);
            timed.poll_event();
            lazy.poll_event();
            let mut now = t0;
            for (op, a, b, step) in ops {
                now += Duration::from_millis(step);
                let _ = timed.handle_timeout(now);
                if lazy.keeps_time() {
                    let _ = lazy.handle_timeout(now);
                }
                match op {
                    0 => {
                        timed.on_read(now, a);
                        if a || lazy.keeps_time() {
                            lazy.on_read(now, a);
                        }
                    }
                    1 => {
                        timed.on_flush(now, a, b);
                        if !b || lazy.keeps_time() {
                            lazy.on_flush(now, a, b);
                        }
                    }
                    2 => {
                        timed.set_reading_paused(true, now);
                        lazy.pause_reading();
                    }
                    3 => {
                        timed.resume_reading(now, false);
                        if lazy.keeps_time() {
                            lazy.resume_reading(now, false);
                        } else {
                            lazy.resume_untimed();
                        }
                    }
                    4 => {
                        timed.on_message_boundary(now);
                        lazy.on_message_boundary(now);
                    }
                    _ => {}
                }
                let (tc, lc) = (timed.poll_event(), lazy.poll_event());
                proptest::prop_assert_eq!(format!("{tc:?}"), format!("{lc:?}"), "a close differs at {:?}", now - t0);
                proptest::prop_assert_eq!(timed.is_closed(), lazy.is_closed());
                proptest::prop_assert_eq!(timed.close_deadline(), lazy.close_deadline(), "close deadline at {:?}", now - t0);
            }
        }
    }
}
#[cfg(test)]
mod size {
    /// Every connection holds one session: keep it small (times are milliseconds since the
    /// session began, the close reason is boxed; the idle clock is a word plus a tag, made a
    /// shared atomic only when a connection is split).
    #[test]
    fn a_session_stays_small() {
        let n = std::mem::size_of::<super::Session>();
        assert!(n <= 168, "Session is {n} bytes");
    }
}
