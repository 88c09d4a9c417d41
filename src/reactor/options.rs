//! Settings of the reactor, of its listeners and of its outgoing connections, and the reasons a
//! connection closes.

use std::time::Duration;

use crate::settings::SessionFactory;
use crate::wire::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wire::session::{AuthOptions, Timeouts};

/// Default [`ReactorConfig::read_budget`]: 256 KiB per connection per turn.
pub(crate) const DEFAULT_READ_BUDGET: usize = 256 * 1024;
/// Default [`ReactorConfig::turn_read_budget`]: 1 MiB per turn over all connections.
pub(crate) const DEFAULT_TURN_READ_BUDGET: usize = 1024 * 1024;
/// Default [`ConnectionOptions::high_water_mark`]: 16 MiB.
pub(crate) const DEFAULT_HIGH_WATER_MARK: usize = 16 * 1024 * 1024;
/// Default [`ConnectionOptions::partial_message_timeout`]: 60 s.
pub(crate) const DEFAULT_PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ConnectionOptions::write_stall_timeout`]: 60 s.
pub(crate) const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the reactor itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReactorConfig {
    /// Events taken from the OS per turn.
    pub events_capacity: usize,
    /// Size of the shared read buffer: one read per connection brings at most this much.
    pub read_buffer_size: usize,
    /// Bytes read from one connection in one turn before the others get their turn: also the
    /// largest single read. A connection with more waiting is read again first next turn.
    pub read_budget: usize,
    /// Bytes read from all connections together in one turn; once spent, connections with
    /// readiness are carried to the next turn. With `read_budget` it bounds how long one turn
    /// can keep a waiting connection from its reply (see ARCHITECTURE.md).
    pub turn_read_budget: usize,
    /// How long a graceful stop waits for queues to drain before closing regardless.
    pub stop_timeout: Duration,
    /// Pause before accepting again after the process ran out of file descriptors.
    pub accept_backoff: Duration,
    /// A connection's own read buffer (kept while large or split messages stream in) is freed
    /// after it has been quiet this long, so idle connections hold no buffers.
    pub buffer_release_after: Duration,
    /// Bytes all connections together may hold in buffered input (decoders of incomplete
    /// messages) and queued output, before the reactor pauses the largest consumers (default
    /// [`crate::budget::DEFAULT_MEMORY_BUDGET`], 1 GiB; `None`: unbounded). See
    /// [`crate::budget`] and SECURITY.md.
    pub memory_budget: Option<usize>,
}

impl ReactorConfig {
    /// The memory budget shared by all connections (`None`: unbounded).
    pub fn memory_budget(mut self, bytes: Option<usize>) -> Self {
        self.memory_budget = bytes;
        self
    }
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            events_capacity: 1024,
            read_buffer_size: 1024 * 1024,
            read_budget: DEFAULT_READ_BUDGET,
            turn_read_budget: DEFAULT_TURN_READ_BUDGET,
            stop_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(100),
            buffer_release_after: Duration::from_secs(1),
            memory_budget: Some(crate::budget::DEFAULT_MEMORY_BUDGET),
        }
    }
}

/// Per-connection settings, shared by listeners (for the connections they accept) and by
/// outgoing connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Key, dialect, digest policy and handshake timeout: the settings every face shares.
    /// Private so that only the merging setters change it (an assignment of the whole group
    /// would drop a key set before); read it with [`ConnectionOptions::auth_options`].
    pub(crate) auth: AuthOptions,
    /// Limit on one received message.
    pub max_message_size: usize,
    /// Close a connection with no traffic for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose current message stays incomplete this long (a peer dribbling a
    /// frame forever; `None`: never).
    pub partial_message_timeout: Option<Duration>,
    /// Close a connection whose queued output the peer takes none of for this long (a peer
    /// that never reads; `None`: never). Any progress restarts the clock, so a slow reader
    /// stays.
    pub write_stall_timeout: Option<Duration>,
    /// Queued outgoing bytes above which `send` refuses more and hands the message back.
    pub high_water_mark: usize,
    /// Stop reading the connection while its own output queue is at or above the high-water
    /// mark, and read again once it drains below half of it: a peer that writes faster than it
    /// reads is throttled by the transport instead of filling memory or being dropped. On by
    /// default.
    pub auto_pause_reading: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            auth: AuthOptions::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            idle_timeout: None,
            partial_message_timeout: Some(DEFAULT_PARTIAL_MESSAGE_TIMEOUT),
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            auto_pause_reading: true,
        }
    }
}

/// The connection setters, written once: for [`ConnectionOptions`] and, forwarding to its
/// connection settings, [`ListenOptions`].
macro_rules! connection_setters {
    ($(.$f:ident)*) => {
        crate::settings::auth_setters!($(.$f)* .auth);

        /// Limit on one received message.
        pub fn max_message_size(mut self, max: usize) -> Self {
            self$(.$f)*.max_message_size = max;
            self
        }

        /// Time allowed for connecting and the handshake (default 10 s; `None`: no limit, as in
        /// Python), as on the other faces.
        pub fn handshake_timeout(mut self, t: Option<Duration>) -> Self {
            self$(.$f)*.auth.handshake_timeout = t;
            self
        }

        /// Close after this long without traffic (`None`: never).
        pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
            self$(.$f)*.idle_timeout = t;
            self
        }

        /// Close when one message stays incomplete this long (default 60 s; `None`: never, which
        /// lets a peer that stops mid-message hold its buffer for ever).
        pub fn partial_message_timeout(mut self, t: Option<Duration>) -> Self {
            self$(.$f)*.partial_message_timeout = t;
            self
        }

        /// Close when the peer takes none of the queued output for this long (`None`: never).
        pub fn write_stall_timeout(mut self, t: Option<Duration>) -> Self {
            self$(.$f)*.write_stall_timeout = t;
            self
        }

        /// Queued outgoing bytes above which `send` refuses more.
        pub fn high_water_mark(mut self, bytes: usize) -> Self {
            self$(.$f)*.high_water_mark = bytes;
            self
        }

        /// Pause reading while the output queue is above the high-water mark (default on).
        pub fn auto_pause_reading(mut self, on: bool) -> Self {
            self$(.$f)*.auto_pause_reading = on;
            self
        }
    };
}

impl ConnectionOptions {
    /// Defaults: no key, CPython dialect, 128 MiB messages, 10 s handshake, 60 s per partial
    /// message, 60 s for a write stall, 16 MiB write high-water mark, reading paused
    /// automatically above it.
    pub fn new() -> Self {
        Self::default()
    }

    connection_setters!();

    /// The authentication settings (key, dialect, digest policy, handshake timeout).
    pub fn auth_options(&self) -> &AuthOptions {
        &self.auth
    }

    /// Merges `new` into these options: what `new` sets (differs from
    /// [`ConnectionOptions::default`]) replaces, the rest stays, the key above all.
    fn merge(&mut self, new: ConnectionOptions) {
        let d = ConnectionOptions::default();
        crate::settings::merge_auth(&mut self.auth, new.auth);
        if new.max_message_size != d.max_message_size {
            self.max_message_size = new.max_message_size;
        }
        if new.idle_timeout != d.idle_timeout {
            self.idle_timeout = new.idle_timeout;
        }
        if new.partial_message_timeout != d.partial_message_timeout {
            self.partial_message_timeout = new.partial_message_timeout;
        }
        if new.write_stall_timeout != d.write_stall_timeout {
            self.write_stall_timeout = new.write_stall_timeout;
        }
        if new.high_water_mark != d.high_water_mark {
            self.high_water_mark = new.high_water_mark;
        }
        if new.auto_pause_reading != d.auto_pause_reading {
            self.auto_pause_reading = new.auto_pause_reading;
        }
    }

    /// The factory of this connection's sessions, under the reactor's `config`.
    pub(crate) fn session_factory(&self, config: &ReactorConfig) -> crate::Result<SessionFactory> {
        let timeouts = Timeouts {
            handshake: self.auth.handshake_timeout,
            idle: self.idle_timeout,
            partial_message: self.partial_message_timeout,
            close_flush: config.stop_timeout,
            buffer_release: Some(config.buffer_release_after),
            write_stall: self.write_stall_timeout,
        };
        SessionFactory::new(&self.auth, None, timeouts, self.max_message_size)
    }
}

/// Settings of one listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Settings of every accepted connection. Private so that only the merging setters change
    /// it (an assignment of the whole group would drop a key set before); read it with
    /// [`ListenOptions::connection_options`].
    pub(crate) connection: ConnectionOptions,
    /// Listen backlog.
    pub backlog: i32,
    /// Most connections of this listener open at once; further clients wait in the backlog.
    pub max_connections: usize,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions { connection: ConnectionOptions::default(), backlog: 1024, max_connections: usize::MAX }
    }
}

impl ListenOptions {
    /// Defaults: backlog 1024, no connection limit, default connection settings.
    pub fn new() -> Self {
        Self::default()
    }

    connection_setters!(.connection);

    /// The settings of the accepted connections.
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.connection
    }

    /// Settings of the accepted connections. Merges: what `options` sets (differs from
    /// [`ConnectionOptions::default`]) replaces, the rest stays, so a key set before (with
    /// [`ListenOptions::authkey`]) is kept when `options` has none. The setters above set one
    /// connection setting each.
    pub fn connection(mut self, options: ConnectionOptions) -> Self {
        self.connection.merge(options);
        self
    }

    /// Listen backlog.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Most connections open at once (at least 1: 0 counts as 1), counting those still in
    /// their handshake. In a [`crate::reactor::Sharded`] group, per shard. At the limit the
    /// listener stops accepting: clients wait in the backlog until a connection closes.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }
}

pub(crate) use crate::wire::session::CloseReason;
