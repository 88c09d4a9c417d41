//! TCP and Unix-domain sockets behind one [`Stream`] and one [`SocketListener`].

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Notify, RawDescriptor};

use crate::address::{Address, Family};
use crate::error::{Error, Result};

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP (`TCP_NODELAY` is set: messages are written whole, Nagle would only add latency).
    Tcp(TcpStream),
    /// A Unix-domain stream socket.
    Unix(UnixStream),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

fn sockaddr(address: &Address) -> Result<Vec<SockAddr>> {
    match address {
        Address::Inet { .. } => Ok(address.resolve()?.into_iter().map(SockAddr::from).collect()),
        Address::Unix(path) => Ok(vec![SockAddr::unix(path)?]),
        Address::Abstract(name) => {
            let mut bytes = Vec::with_capacity(name.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(name);
            Ok(vec![SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))?])
        }
        Address::Pipe(_) => Err(super::unsupported(Family::Pipe)),
    }
}

fn domain_of(a: &SockAddr) -> Domain {
    if a.is_ipv4() {
        Domain::IPV4
    } else if a.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::UNIX
    }
}

impl Stream {
    /// Connects to `address`; TCP tries each resolved address, IPv4 first. Connection refused is
    /// reported at once, as Python 3 does.
    pub fn connect(address: &Address, timeout: Option<Duration>) -> Result<Stream> {
        let mut last = None;
        for sa in sockaddr(address)? {
            let socket = Socket::new(domain_of(&sa), Type::STREAM, None)?;
            let connected = match timeout {
                Some(t) => socket.connect_timeout(&sa, t),
                None => socket.connect(&sa),
            };
            match connected {
                Ok(()) => return Ok(Stream::from_socket(socket, address.family())?),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| Error::Address(format!("{address}: nothing to connect to")), Error::Io))
    }

    /// Starts a non-blocking connect (for the reactor). Returns the stream, in non-blocking mode,
    /// and whether it is already connected; if not, it becomes writable when the connect
    /// finished, and [`Stream::take_error`] then says whether it failed.
    pub fn connect_nonblocking(address: &Address) -> Result<(Stream, bool)> {
        let mut last = None;
        for sa in sockaddr(address)? {
            let socket = Socket::new(domain_of(&sa), Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            match socket.connect(&sa) {
                Ok(()) => return Ok((Stream::from_socket(socket, address.family())?, true)),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    return Ok((Stream::from_socket(socket, address.family())?, false));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| Error::Address(format!("{address}: nothing to connect to")), Error::Io))
    }

    /// The pending socket error (`SO_ERROR`), used to learn how a non-blocking connect ended.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        each!(self, s => s.take_error())
    }

    fn from_socket(socket: Socket, family: Family) -> io::Result<Stream> {
        Ok(match family {
            Family::Inet => {
                socket.set_tcp_nodelay(true)?;
                Stream::Tcp(socket.into())
            }
            _ => Stream::Unix(UnixStream::from(OwnedFd::from(socket))),
        })
    }

    /// A connected pair of Unix sockets (Python's `Pipe(duplex=True)`).
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Stream::Unix(a), Stream::Unix(b)))
    }

    /// Sets a timeout on blocking reads (`None`: block).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        each!(self, s => s.set_read_timeout(t))
    }

    /// Sets a timeout on blocking writes (`None`: block).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        each!(self, s => s.set_write_timeout(t))
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        each!(self, s => s.shutdown(how))
    }

    /// A second handle on the same socket (a duplicated descriptor): one thread may write
    /// through one while another reads through the other.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// The peer's address: `ip:port` for TCP, the peer's path (usually empty) for Unix.
    pub fn peer_address(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => Ok(s.peer_addr()?.into()),
            Stream::Unix(s) => Ok(unix_address(&s.peer_addr()?)),
        }
    }

    /// Registers with a reactor's poller (sockets report to the poller; `_notify` is for pipes).
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
        _notify: &Arc<dyn Notify>,
    ) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.as_raw_fd()), token, interest)
    }

    /// Changes what the poller reports.
    pub(crate) fn reregister(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        registry.reregister(&mut SourceFd(&self.as_raw_fd()), token, interest)
    }

    /// The file descriptor.
    pub fn raw_descriptor(&self) -> RawDescriptor {
        self.as_raw_fd()
    }

    /// Whether a read that returns less than asked leaves nothing to read, so that the next
    /// data raises a new readiness edge (true for epoll/kqueue; a reactor then skips the read
    /// that would only say `WouldBlock`).
    pub(crate) fn short_read_drains(&self) -> bool {
        true
    }

    /// Reads into `buf`, retrying on interruption.
    pub fn read_retry(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        super::read_retry(self, buf)
    }

    /// For a blocking reader: waits up to `timeout` (`None`: without limit) in `poll(2)` until
    /// there is something to read (bytes, the end of the stream or an error), so that the read
    /// after it does not wait. `Some(Ok(false))`: the time ran out or a signal came first.
    /// `None`: this stream waits in its read instead (the socket's read timeout then bounds it).
    ///
    /// Unix-domain sockets on Linux wait in `poll`: there a reader asleep in `recv` costs the
    /// writer's process extra context switches, about 0.7 a round trip for a ping-pong of two
    /// processes on one CPU (mpconn's W2: 2.7 switches a round trip, 2.0 when the client
    /// waits in `poll`; BENCHMARKS.md, "Issue 20, 2026-12-07, morning"). TCP shows no such
    /// cost, and there the read timeout spares the extra system call.
    pub(crate) fn poll_readable(&self, timeout: Option<Duration>) -> Option<io::Result<bool>> {
        #[cfg(target_os = "linux")]
        if let Stream::Unix(s) = self {
            use rustix::event::{PollFd, PollFlags};
            let mut fds = [PollFd::new(s, PollFlags::IN)];
            return Some(match super::readiness::poll(&mut fds, timeout) {
                Ok(ready) => Ok(ready > 0),
                Err(rustix::io::Errno::INTR) => Ok(false),
                Err(e) => Err(e.into()),
            });
        }
        let _ = timeout;
        None
    }

    /// Writes all of `bufs` with as few vectored writes as the stream allows.
    pub fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        super::write_all_vectored(self, bufs)
    }

    /// Acknowledges what arrives next at once rather than after the delayed-ACK timer
    /// (`TCP_QUICKACK` on Linux; nothing elsewhere, and nothing on Unix sockets). Asked for by
    /// the session when the peer will send two messages in a row with nothing from us between
    /// them (see `Session::wants_prompt_ack`): a peer that keeps Nagle's algorithm on holds the
    /// second until the first is acknowledged.
    pub fn acknowledge_promptly(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Stream::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
        }
    }

    /// One vectored write that does not wait (`MSG_DONTWAIT`, the socket stays blocking):
    /// what the socket took at once, or `WouldBlock`. Lets the blocking face see progress the
    /// moment it happens and touch no socket timeout when nothing has to wait.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => send_slices(socket2::SockRef::from(&*s), bufs, libc::MSG_DONTWAIT | SEND_FLAGS))
    }
}

fn unix_address(a: &std::os::unix::net::SocketAddr) -> Address {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = a.as_abstract_name() {
            return Address::Abstract(name.to_vec());
        }
    }
    Address::Unix(a.as_pathname().map(Path::to_path_buf).unwrap_or_default())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }
}

/// The flags of every write: no SIGPIPE where the flag exists. A host process that keeps
/// SIGPIPE's default action (Rust and Python programs ignore it; a C program embedding the
/// library may not) would otherwise be killed by a write to a peer that went away; with it the
/// write fails with `EPIPE` and the session closes the connection.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub(crate) const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
pub(crate) const SEND_FLAGS: libc::c_int = 0;

/// Slices totalling at most this many bytes are copied into one stack buffer and sent with
/// `send`, not `sendmsg`.
const GATHER_MAX: usize = 512;
/// The smaller of the two stack buffers [`send_slices`] copies into (a 64-byte message framed).
const GATHER_SMALL: usize = 128;

/// One socket write of `bufs` with `flags`: `send` when there is one slice or the slices are
/// small enough to copy into one ([`GATHER_MAX`]: a frame's header and a small body), `sendmsg`
/// otherwise. `sendmsg` costs 0.1–0.2 µs more per call than `send` of the same bytes (the
/// message header and the iovec import): 2–6 % of a 64-byte ping-pong's round trip over
/// loopback TCP or a Unix socket (`benches/send_iovecs.c`, BENCHMARKS.md 2026-12-07); the copy
/// costs far less.
pub(crate) fn send_slices(sock: impl SendCalls, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    match bufs {
        [] => Ok(0),
        [one] => sock.send(one, flags),
        _ => {
            let total = bufs.iter().try_fold(0usize, |sum, b| sum.checked_add(b.len()));
            match total {
                // The stack buffer is zeroed first: a small one for the common small message.
                Some(total) if total <= GATHER_SMALL => send_gathered::<GATHER_SMALL>(sock, bufs, total, flags),
                Some(total) if total <= GATHER_MAX => send_gathered::<GATHER_MAX>(sock, bufs, total, flags),
                _ => sock.send_vectored(bufs, flags),
            }
        }
    }
}

/// The two socket calls [`send_slices`] chooses between: a trait so that a test can have the
/// writes taken in parts at every offset, which a kernel socket hardly ever does to small writes.
pub(crate) trait SendCalls {
    /// `send(2)` of `buf` with `flags`: the bytes taken.
    fn send(&self, buf: &[u8], flags: libc::c_int) -> io::Result<usize>;
    /// `sendmsg(2)` of `bufs` with `flags`: the bytes taken.
    fn send_vectored(&self, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize>;
}

impl SendCalls for socket2::SockRef<'_> {
    #[inline]
    fn send(&self, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        self.send_with_flags(buf, flags)
    }
    #[inline]
    fn send_vectored(&self, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
        self.send_vectored_with_flags(bufs, flags)
    }
}

/// [`send_slices`]' copy: `bufs` (`total` bytes, at most `N`) into one stack buffer, one `send`.
#[inline]
fn send_gathered<const N: usize>(
    sock: impl SendCalls,
    bufs: &[IoSlice<'_>],
    total: usize,
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut gathered = [0u8; N];
    let mut at = 0;
    for b in bufs {
        gathered[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    }
    sock.send(&gathered[..total], flags)
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    // `send`/`sendmsg` with SEND_FLAGS (see `send_slices`), not `writev` (std's
    // `write_vectored`), which cannot take them.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => send_slices(socket2::SockRef::from(&*s), bufs, SEND_FLAGS))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        each!(self, s => s.as_raw_fd())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        each!(self, s => s.as_fd())
    }
}

/// A bound, listening socket. A Unix socket file it created is removed when it is dropped (if the
/// file is still the one it created), and so is the private directory of an arbitrary address.
#[derive(Debug)]
pub struct SocketListener {
    inner: ListenerInner,
    address: Address,
    /// The socket file we created, with its device and inode, to remove on drop.
    socket_file: Option<(PathBuf, u64, u64)>,
    /// A directory we created for the socket (arbitrary addresses), removed on drop.
    owned_dir: Option<PathBuf>,
}

/// A std listening socket (see [`SocketListener::try_clone_std`]).
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) enum StdListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

#[derive(Debug)]
enum ListenerInner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl SocketListener {
    /// Binds and listens. TCP sets `SO_REUSEADDR` as Python does on POSIX. A Unix socket file is
    /// made mode 0600 before `listen`, so no other user can connect even briefly; an existing
    /// file is replaced only if it is a stale socket (nobody accepting on it).
    pub fn bind(address: &Address, backlog: i32) -> Result<SocketListener> {
        Self::bind_with(address, backlog, false)
    }

    /// Binds a TCP listener with `SO_REUSEPORT` as well (Linux): several such sockets of one user
    /// share the port, and the kernel spreads incoming connections over them (by a hash of the
    /// peer's address and port). Each shard of a sharded reactor listens on one.
    #[cfg(target_os = "linux")]
    pub(crate) fn bind_reuse_port(address: &Address, backlog: i32) -> Result<SocketListener> {
        if !matches!(address, Address::Inet { .. }) {
            return Err(Error::Address(format!("{address}: SO_REUSEPORT is for TCP addresses")));
        }
        Self::bind_with(address, backlog, true)
    }

    fn bind_with(address: &Address, backlog: i32, reuse_port: bool) -> Result<SocketListener> {
        let sa =
            sockaddr(address)?.into_iter().next().ok_or_else(|| Error::Address(format!("{address}: no address")))?;
        let socket = Socket::new(domain_of(&sa), Type::STREAM, None)?;
        match address {
            Address::Inet { .. } => {
                socket.set_reuse_address(true)?;
                #[cfg(target_os = "linux")]
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                #[cfg(not(target_os = "linux"))]
                let _ = reuse_port;
                // Accepted sockets inherit TCP_NODELAY from the listener (Linux): one
                // setsockopt here instead of one per connection.
                socket.set_tcp_nodelay(true)?;
                socket.bind(&sa)?;
                socket.listen(backlog)?;
                let l: TcpListener = socket.into();
                let address = l.local_addr()?.into();
                Ok(SocketListener { inner: ListenerInner::Tcp(l), address, socket_file: None, owned_dir: None })
            }
            Address::Unix(path) => {
                remove_stale_socket(path)?;
                socket.bind(&sa)?;
                let meta = fs::metadata(path)?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
                socket.listen(backlog)?;
                Ok(SocketListener {
                    inner: ListenerInner::Unix(UnixListener::from(OwnedFd::from(socket))),
                    address: address.clone(),
                    socket_file: Some((path.clone(), meta.dev(), meta.ino())),
                    owned_dir: None,
                })
            }
            Address::Abstract(_) => {
                socket.bind(&sa)?;
                socket.listen(backlog)?;
                Ok(SocketListener {
                    inner: ListenerInner::Unix(UnixListener::from(OwnedFd::from(socket))),
                    address: address.clone(),
                    socket_file: None,
                    owned_dir: None,
                })
            }
            Address::Pipe(_) => Err(super::unsupported(Family::Pipe)),
        }
    }

    /// Marks `dir` as created for this listener: removed (if empty) when the listener is dropped.
    pub(crate) fn own_dir(&mut self, dir: PathBuf) {
        self.owned_dir = Some(dir);
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Accepts one connection; returns it with the peer's address.
    pub fn accept(&self) -> io::Result<(Stream, Address)> {
        loop {
            let r = match &self.inner {
                ListenerInner::Tcp(l) => l.accept().and_then(|(s, a)| {
                    s.set_nodelay(true)?;
                    Ok((Stream::Tcp(s), Address::from(a)))
                }),
                ListenerInner::Unix(l) => l.accept().map(|(s, a)| (Stream::Unix(s), unix_address(&a))),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Accepts one connection already in non-blocking mode (one `accept4` on Linux instead of
    /// `accept` plus `ioctl`), for the reactor.
    pub fn accept_nonblocking(&self) -> io::Result<(Stream, Address)> {
        #[cfg(target_os = "linux")]
        {
            let sock = socket2::SockRef::from(self);
            loop {
                match sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                    Ok((s, addr)) => {
                        return match &self.inner {
                            ListenerInner::Tcp(_) => {
                                let peer = addr.as_socket().map_or_else(|| Address::inet("", 0), Address::from);
                                Ok((Stream::Tcp(s.into()), peer))
                            }
                            ListenerInner::Unix(_) => {
                                let peer = match addr.as_abstract_namespace() {
                                    Some(name) => Address::Abstract(name.to_vec()),
                                    None => {
                                        Address::Unix(addr.as_pathname().map(Path::to_path_buf).unwrap_or_default())
                                    }
                                };
                                Ok((Stream::Unix(UnixStream::from(OwnedFd::from(s))), peer))
                            }
                        };
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let (s, a) = self.accept()?;
            s.set_nonblocking(true)?;
            Ok((s, a))
        }
    }

    /// Registers with a reactor's poller (readable when a client waits).
    pub(crate) fn register(&mut self, registry: &Registry, token: Token, _notify: &Arc<dyn Notify>) -> io::Result<()> {
        self.set_nonblocking(true)?;
        registry.register(&mut SourceFd(&self.as_raw_fd()), token, Interest::READABLE)
    }

    /// Another handle on the same listening socket (a `dup`), sharing its queue of waiting
    /// clients; this one keeps the socket file and removes it.
    #[cfg(target_os = "linux")]
    pub(crate) fn try_clone_sharing(&self) -> io::Result<SocketListener> {
        let inner = match &self.inner {
            ListenerInner::Tcp(l) => ListenerInner::Tcp(l.try_clone()?),
            ListenerInner::Unix(l) => ListenerInner::Unix(l.try_clone()?),
        };
        Ok(SocketListener { inner, address: self.address.clone(), socket_file: None, owned_dir: None })
    }

    /// Registers level-triggered with `EPOLLEXCLUSIVE`: of the pollers that share this socket
    /// (each through a handle of its own), one that waits is woken per waiting client, not all.
    #[cfg(target_os = "linux")]
    pub(crate) fn register_exclusive(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        use rustix::event::epoll;
        self.set_nonblocking(true)?;
        // mio reports it under `token` like its own registrations; its `deregister`
        // (EPOLL_CTL_DEL) removes it.
        let data = epoll::EventData::new_u64(token.0 as u64);
        epoll::add(registry, &*self, data, epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE)?;
        Ok(())
    }

    /// Removes the listener from a reactor's poller.
    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut SourceFd(&self.as_raw_fd()))
    }

    /// Accepts one connection, waiting at most `timeout`; `None` when no client came.
    pub fn accept_within(&self, timeout: Duration) -> io::Result<Option<(Stream, Address)>> {
        if super::readiness::wait_fds(&[self], Some(timeout))?.is_empty() {
            return Ok(None);
        }
        self.accept().map(Some)
    }

    /// The file descriptor.
    pub fn raw_descriptor(&self) -> io::Result<RawDescriptor> {
        Ok(self.as_raw_fd())
    }

    /// A duplicate of the listening socket, for a runtime that registers its own copy (the async
    /// face). This listener keeps what it owns: the socket file and directory are removed when
    /// it is dropped.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_clone_std(&self) -> io::Result<StdListener> {
        match &self.inner {
            ListenerInner::Tcp(l) => Ok(StdListener::Tcp(l.try_clone()?)),
            ListenerInner::Unix(l) => Ok(StdListener::Unix(l.try_clone()?)),
        }
    }

    /// Switches non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &self.inner {
            ListenerInner::Tcp(l) => l.set_nonblocking(on),
            ListenerInner::Unix(l) => l.set_nonblocking(on),
        }
    }
}

impl AsRawFd for SocketListener {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            ListenerInner::Tcp(l) => l.as_raw_fd(),
            ListenerInner::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl AsFd for SocketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            ListenerInner::Tcp(l) => l.as_fd(),
            ListenerInner::Unix(l) => l.as_fd(),
        }
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = self.socket_file.take() {
            // Remove the file only if it is still the socket we bound (not a newer listener's).
            if let Ok(meta) = fs::symlink_metadata(&path)
                && meta.dev() == dev
                && meta.ino() == ino
                && let Err(e) = fs::remove_file(&path)
            {
                log::warn!("could not remove socket file {}: {e}", path.display());
            }
        }
        if let Some(dir) = self.owned_dir.take() {
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// Removes `path` if it is a socket nobody listens on; refuses to touch anything else.
fn remove_stale_socket(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} exists and is not a socket; refusing to replace it", path.display()),
        )));
    }
    match probe_unix_listener(path, STALE_PROBE_TIMEOUT) {
        Probe::Live => Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a listening socket", path.display()),
        ))),
        Probe::Undecided => Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is a socket whose listener did not answer within {} ms (busy, or its backlog is \
                 full); treated as in use",
                path.display(),
                STALE_PROBE_TIMEOUT.as_millis()
            ),
        ))),
        Probe::Stale => {
            log::debug!("removing stale socket file {}", path.display());
            fs::remove_file(path)?;
            Ok(())
        }
        Probe::Failed(e) => Err(e.into()),
    }
}

/// How long binding waits to learn whether an existing socket file has a live listener.
pub(crate) const STALE_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

enum Probe {
    /// A listener accepted the connection (or its backlog is full: it exists).
    Live,
    /// Connection refused: nobody listens.
    Stale,
    /// No answer within the timeout.
    Undecided,
    Failed(io::Error),
}

/// Connects to `path` without blocking and waits at most `timeout` for the outcome, so a live
/// listener with a full backlog cannot hang the caller in `connect`.
fn probe_unix_listener(path: &Path, timeout: Duration) -> Probe {
    let result = (|| -> io::Result<Probe> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        let addr = SockAddr::unix(path)?;
        match socket.connect(&addr) {
            Ok(()) => return Ok(Probe::Live),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Probe::Stale),
            // Linux: a full backlog refuses a non-blocking connect with EAGAIN: someone listens.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Probe::Live),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        // Elsewhere the connect may be in progress: wait for writability, bounded.
        let mut poll = mio::Poll::new()?;
        let fd = socket.as_raw_fd();
        poll.registry().register(&mut SourceFd(&fd), Token(0), Interest::WRITABLE)?;
        let mut events = mio::Events::with_capacity(1);
        let deadline = super::deadline_after(std::time::Instant::now(), timeout);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(Probe::Undecided);
            }
            match poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(()) if events.is_empty() => continue,
                Ok(()) => break,
            }
        }
        Ok(match socket.take_error()? {
            None => Probe::Live,
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Stale,
            Some(e) => return Err(e),
        })
    })();
    result.unwrap_or_else(Probe::Failed)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::io::{IoSlice, Read};
    use std::os::unix::net::UnixStream;

    use super::{GATHER_MAX, GATHER_SMALL, SEND_FLAGS, SendCalls, send_slices};

    /// A socket that takes a pseudo-random part (1 byte to all) of every write, and keeps what
    /// it took.
    struct InParts {
        taken: RefCell<Vec<u8>>,
        state: Cell<u64>,
    }

    impl InParts {
        fn take(&self, bytes: &[u8]) -> usize {
            let s = self.state.get().wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            self.state.set(s);
            let n = if bytes.is_empty() { 0 } else { 1 + (s >> 33) as usize % bytes.len() };
            self.taken.borrow_mut().extend_from_slice(&bytes[..n]);
            n
        }
    }

    impl SendCalls for &InParts {
        fn send(&self, buf: &[u8], _: libc::c_int) -> std::io::Result<usize> {
            Ok(self.take(buf))
        }
        fn send_vectored(&self, bufs: &[IoSlice<'_>], _: libc::c_int) -> std::io::Result<usize> {
            Ok(self.take(&bufs.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>()))
        }
    }

    /// Whatever part of a write the socket takes, `send_slices` reports exactly that many bytes:
    /// the caller, advancing its slices by the count and writing the rest, delivers every byte
    /// once and in order, through the gathered copies (both sizes) and `sendmsg` alike.
    #[test]
    fn send_slices_reports_exactly_the_part_a_socket_took() {
        let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let shapes: Vec<Vec<&[u8]>> = vec![
            vec![b"\x00\x00\x00\x05", b"hello"],
            vec![&big[..4], &big[4..GATHER_SMALL]],
            vec![&big[..4], &big[4..GATHER_SMALL + 1]],
            vec![&big[..9], &big[9..GATHER_MAX], b""],
            vec![&big[..4], &big[4..GATHER_MAX + 1]],
            vec![&big[..4], &big[4..], &big[..100], &big[..1]],
        ];
        for seed in 0..200u64 {
            for shape in &shapes {
                let socket = InParts { taken: RefCell::new(Vec::new()), state: Cell::new(seed) };
                let mut slices: Vec<IoSlice<'_>> = shape.iter().map(|s| IoSlice::new(s)).collect();
                let mut left = &mut slices[..];
                for _ in 0..10_000 {
                    if left.iter().all(|s| s.is_empty()) {
                        break;
                    }
                    let n = send_slices(&socket, left, SEND_FLAGS).expect("a write");
                    IoSlice::advance_slices(&mut left, n);
                }
                assert_eq!(*socket.taken.borrow(), shape.concat(), "seed {seed}");
            }
        }
    }

    /// Every shape of write (one slice, small slices gathered into one `send`, slices past the
    /// gather limit through `sendmsg`, empty slices among them) delivers the slices' bytes in
    /// order, and reports what it took.
    #[test]
    fn send_slices_delivers_every_shape_in_order() {
        let (a, mut b) = UnixStream::pair().expect("a socket pair");
        let big: Vec<u8> = (0..GATHER_MAX as u32 + 7).map(|i| (i % 251) as u8).collect();
        let shapes: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b"one slice"],
            vec![b"\x00\x00\x00\x05", b"hello"],
            vec![b"", b"x", b"", b"yz"],
            vec![&big[..GATHER_MAX - 1], b"1"],
            vec![&big[..GATHER_SMALL - 1], b"1"],
            vec![&big[..GATHER_SMALL], b"1"],
            vec![&big[..GATHER_MAX], b"1"],
            vec![b"head", &big],
        ];
        for shape in shapes {
            let slices: Vec<IoSlice<'_>> = shape.iter().map(|s| IoSlice::new(s)).collect();
            let want: Vec<u8> = shape.concat();
            let n = send_slices(socket2::SockRef::from(&a), &slices, SEND_FLAGS).expect("a send");
            assert_eq!(n, want.len(), "a socket pair takes {} bytes at once", want.len());
            let mut got = vec![0u8; want.len()];
            b.read_exact(&mut got).expect("the bytes sent");
            assert_eq!(got, want);
        }
    }
}
