//! The Windows transport: TCP through the standard library, and named pipes (`AF_PIPE`, the
//! default family here) through [`super::pipe`]. Unix-domain sockets are refused with
//! [`Error::UnsupportedFamily`], as Python refuses `AF_UNIX` on Windows.
//!
//! mio on Windows polls only sockets wrapped in its own types, so a TCP stream or listener that
//! goes to the reactor becomes `mio::net`'s (`TcpPolled`); the blocking API keeps the standard
//! library's.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::AsRawSocket;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use super::pipe::{self, PipeListener, PipeStream};
use super::{Notify, RawDescriptor};
use crate::address::{Address, Family};
use crate::error::{Error, Result};

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP (TCP_NODELAY is set), for the blocking API.
    Tcp(TcpStream),
    /// TCP registered with (or made for) a reactor.
    TcpPolled(mio::net::TcpStream),
    /// A named pipe, seen as a framed byte stream.
    Pipe(PipeStream),
}

fn not_pollable() -> io::Error {
    io::Error::other("a blocking TCP stream cannot be registered with the reactor (accept or connect through it)")
}

impl Stream {
    /// Nothing on Windows (no `TCP_QUICKACK`; see the Unix transport's).
    pub fn acknowledge_promptly(&self) {}

    /// Connects to `address`: TCP tries each resolved address; a pipe client waits for a busy
    /// pipe up to `timeout` (default 20 s, as Python).
    pub fn connect(address: &Address, timeout: Option<Duration>) -> Result<Stream> {
        match address {
            Address::Inet { .. } => {
                let mut last = None;
                for sa in address.resolve()? {
                    let connected = match timeout {
                        Some(t) => TcpStream::connect_timeout(&sa, t),
                        None => TcpStream::connect(sa),
                    };
                    match connected {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map(Error::Io).unwrap_or_else(|| Error::Address(format!("{address}: nothing to connect to"))))
            }
            Address::Pipe(name) => Ok(Stream::Pipe(pipe::connect(name, timeout)?)),
            Address::Unix(_) | Address::Abstract(_) => Err(super::unsupported(Family::Unix)),
        }
    }

    /// Starts a non-blocking connect (for the reactor): pipes only on Windows.
    pub fn connect_nonblocking(address: &Address) -> Result<(Stream, bool)> {
        match address {
            Address::Pipe(name) => {
                let (mut s, connected) = pipe::connect_nonblocking(name)?;
                s.set_nonblocking(true);
                Ok((Stream::Pipe(s), connected))
            }
            Address::Inet { .. } => {
                let mut last = None;
                for sa in address.resolve()? {
                    match mio::net::TcpStream::connect(sa) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok((Stream::TcpPolled(s), false));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map(Error::Io).unwrap_or_else(|| Error::Address(format!("{address}: nothing to connect to"))))
            }
            Address::Unix(_) | Address::Abstract(_) => Err(super::unsupported(Family::Unix)),
        }
    }

    /// How a non-blocking connect ended.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::TcpPolled(s) => s.take_error(),
            Stream::Pipe(p) => p.take_error(),
        }
    }

    /// A connected pair (Python's `Pipe(duplex=True)`): two ends of a fresh named pipe.
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let Ok(Address::Pipe(name)) = crate::address::arbitrary_address(Family::Pipe) else {
            return Err(io::Error::other("no pipe name"));
        };
        let listener = PipeListener::bind(&name, 1)?;
        let client = pipe::connect(&name, Some(Duration::from_secs(5)))?;
        let server = listener.accept_within(Some(Duration::from_secs(5)))?;
        Ok((Stream::Pipe(server), Stream::Pipe(client)))
    }

    /// Sets a timeout on blocking reads (`None`: block).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::TcpPolled(_) => Err(io::ErrorKind::Unsupported.into()),
            Stream::Pipe(p) => {
                p.set_read_timeout(t);
                Ok(())
            }
        }
    }

    /// Sets a timeout on blocking writes (`None`: block).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::TcpPolled(_) => Err(io::ErrorKind::Unsupported.into()),
            Stream::Pipe(p) => {
                p.set_write_timeout(t);
                Ok(())
            }
        }
    }

    /// A second handle on the same connection, so one thread may write while another reads:
    /// a duplicated socket for TCP. A named pipe cannot be split (its reads and writes share
    /// one overlapped handle and one state): that is an `Unsupported` error.
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => Ok(Stream::Tcp(s.try_clone()?)),
            Stream::TcpPolled(_) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "a reactor's TCP stream cannot be split"))
            }
            Stream::Pipe(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a named-pipe connection cannot be split into reader and writer halves",
            )),
        }
    }

    /// Switches non-blocking mode.
    pub fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::TcpPolled(_) if on => Ok(()),
            Stream::TcpPolled(_) => Err(io::ErrorKind::Unsupported.into()),
            Stream::Pipe(p) => {
                p.set_nonblocking(on);
                Ok(())
            }
        }
    }

    /// Shuts down one or both directions (a pipe only stops being used that way).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::TcpPolled(s) => s.shutdown(how),
            Stream::Pipe(p) => {
                p.shutdown(how);
                Ok(())
            }
        }
    }

    /// The peer's address: `ip:port` for TCP, the pipe's name for a pipe.
    pub fn peer_address(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => Ok(s.peer_addr()?.into()),
            Stream::TcpPolled(s) => Ok(s.peer_addr()?.into()),
            Stream::Pipe(p) if p.is_connected() => Ok(Address::Pipe(p.name().to_string())),
            Stream::Pipe(_) => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// A pipe: switches to non-blocking mode and reports every change to `notify` (the async
    /// face's wakers). False for anything else.
    #[cfg(feature = "tokio")]
    pub(crate) fn set_pipe_notify(&mut self, notify: Arc<dyn Notify>) -> bool {
        match self {
            Stream::Pipe(p) => {
                p.set_nonblocking(true);
                p.set_notify(Some((notify, 0)));
                true
            }
            _ => false,
        }
    }

    /// Registers with a reactor: TCP with mio's poller, a pipe reports to `notify`.
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
        notify: &Arc<dyn Notify>,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(_) => Err(not_pollable()),
            Stream::TcpPolled(s) => registry.register(s, token, interest),
            Stream::Pipe(p) => {
                p.set_nonblocking(true);
                p.set_notify(Some((notify.clone(), token.0)));
                Ok(())
            }
        }
    }

    /// Changes what is reported (a pipe reports every change; nothing to do for it).
    pub(crate) fn reregister(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Stream::TcpPolled(s) => registry.reregister(s, token, interest),
            Stream::Tcp(_) | Stream::Pipe(_) => Ok(()),
        }
    }

    /// The socket or pipe handle, as a number.
    pub fn raw_descriptor(&self) -> RawDescriptor {
        match self {
            Stream::Tcp(s) => s.as_raw_socket() as usize,
            Stream::TcpPolled(s) => s.as_raw_socket() as usize,
            Stream::Pipe(p) => p.raw_handle() as usize,
        }
    }

    /// Whether a read that returns less than asked leaves nothing to read and re-arms
    /// readiness. mio's Windows sockets announce readiness again only after a read said
    /// `WouldBlock`, so not for TCP; a pipe re-arms on every read.
    pub(crate) fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Pipe(_))
    }

    /// For a blocking reader, a wait before the read (see the Unix version): `None`, streams
    /// here wait in their read.
    pub(crate) fn poll_readable(&self, _timeout: Option<Duration>) -> Option<io::Result<bool>> {
        None
    }

    /// Reads into `buf`, retrying on interruption.
    pub fn read_retry(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        super::read_retry(self, buf)
    }

    /// Writes all of `bufs` with as few vectored writes as the stream allows.
    pub fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        super::write_all_vectored(self, bufs)
    }

    /// A write that does not wait: not offered here (`Unsupported`), so the blocking face
    /// writes with its socket timeouts from the first write on.
    pub fn try_write_vectored(&mut self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Whether a read would not block now.
    fn ready_to_read(&self) -> bool {
        match self {
            Stream::Pipe(p) => p.is_readable(),
            Stream::TcpPolled(s) => {
                let mut b = [0u8; 1];
                !matches!(s.peek(&mut b), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tcp(s) => {
                if s.set_nonblocking(true).is_err() {
                    return true;
                }
                let mut b = [0u8; 1];
                let r = s.peek(&mut b);
                let _ = s.set_nonblocking(false);
                !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::TcpPolled(s) => s.read(buf),
            Stream::Pipe(p) => p.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::TcpPolled(s) => s.write(buf),
            Stream::Pipe(p) => p.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::TcpPolled(s) => s.write_vectored(bufs),
            Stream::Pipe(p) => p.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Wakes a waiting thread when any pipe it watches changes.
#[derive(Default)]
struct WaitSet {
    changed: Mutex<bool>,
    cv: Condvar,
}

impl Notify for WaitSet {
    fn notify(&self, _token: usize) {
        if let Ok(mut c) = self.changed.lock() {
            *c = true;
        }
        self.cv.notify_all();
    }
}

/// Waits until at least one of `streams` is readable (or at end of file, or in error) or
/// `timeout` passes (`None`: no limit). Returns the indexes of the ready ones, empty on timeout.
/// Pipes wake the waiter; TCP sockets are looked at every few milliseconds.
pub fn wait_readable(streams: &[&Stream], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| super::deadline_after(Instant::now(), t));
    let set = Arc::new(WaitSet::default());
    let notify: Arc<dyn Notify> = set.clone();
    let all_pipes = streams.iter().all(|s| matches!(s, Stream::Pipe(_)));
    for (i, s) in streams.iter().enumerate() {
        if let Stream::Pipe(p) = s {
            p.set_notify(Some((notify.clone(), i)));
        }
    }
    let ready = loop {
        let ready: Vec<usize> = streams.iter().enumerate().filter(|(_, s)| s.ready_to_read()).map(|(i, _)| i).collect();
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if !ready.is_empty() || left.is_some_and(|l| l.is_zero()) {
            break ready;
        }
        let slice = if all_pipes { left.unwrap_or(Duration::from_secs(3600)) } else { Duration::from_millis(5) };
        let slice = left.map_or(slice, |l| l.min(slice));
        let mut changed = set.changed.lock().unwrap_or_else(|p| p.into_inner());
        if !*changed {
            changed = set.cv.wait_timeout(changed, slice).unwrap_or_else(|p| p.into_inner()).0;
        }
        *changed = false;
    };
    for s in streams {
        if let Stream::Pipe(p) = s {
            p.set_notify(None);
        }
    }
    Ok(ready)
}

/// A listening TCP socket or named pipe.
#[derive(Debug)]
pub struct SocketListener {
    inner: ListenerInner,
    address: Address,
}

#[derive(Debug)]
enum ListenerInner {
    Tcp(TcpListener),
    TcpPolled(mio::net::TcpListener),
    Pipe(PipeListener),
    /// Only while a TCP listener moves to mio's type.
    Moving,
}

impl SocketListener {
    /// Binds and listens. A pipe name already in use is an error (`AddrInUse`).
    pub fn bind(address: &Address, backlog: i32) -> Result<SocketListener> {
        match address {
            Address::Inet { .. } => {
                let sa = address
                    .resolve()?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Address(format!("{address}: no address")))?;
                let l = TcpListener::bind(sa)?;
                let address = l.local_addr()?.into();
                Ok(SocketListener { inner: ListenerInner::Tcp(l), address })
            }
            Address::Pipe(name) => Ok(SocketListener {
                inner: ListenerInner::Pipe(PipeListener::bind(name, backlog)?),
                address: address.clone(),
            }),
            Address::Unix(_) | Address::Abstract(_) => Err(super::unsupported(Family::Unix)),
        }
    }

    /// Unix only: there are no directories to own here.
    pub(crate) fn own_dir(&mut self, _dir: std::path::PathBuf) {}

    /// The bound address (with the real port when 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Accepts one connection; returns it with the peer's address.
    pub fn accept(&self) -> io::Result<(Stream, Address)> {
        match &self.inner {
            ListenerInner::Tcp(l) => {
                let (s, a) = l.accept()?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), a.into()))
            }
            ListenerInner::TcpPolled(l) => {
                let (s, a) = l.accept()?;
                s.set_nodelay(true)?;
                Ok((Stream::TcpPolled(s), a.into()))
            }
            ListenerInner::Pipe(l) => {
                let p = l.accept_within(None)?;
                let peer = Address::Pipe(p.name().to_string());
                Ok((Stream::Pipe(p), peer))
            }
            ListenerInner::Moving => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Accepts one connection in non-blocking mode, for the reactor.
    pub fn accept_nonblocking(&self) -> io::Result<(Stream, Address)> {
        let (mut s, a) = self.accept()?;
        s.set_nonblocking(true)?;
        Ok((s, a))
    }

    /// Registers with a reactor: TCP with mio's poller (as mio's listener type), a pipe listener
    /// reports to `notify`.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token, notify: &Arc<dyn Notify>) -> io::Result<()> {
        if let ListenerInner::Tcp(_) = &self.inner {
            let ListenerInner::Tcp(l) = std::mem::replace(&mut self.inner, ListenerInner::Moving) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            l.set_nonblocking(true)?;
            self.inner = ListenerInner::TcpPolled(mio::net::TcpListener::from_std(l));
        }
        match &mut self.inner {
            ListenerInner::TcpPolled(l) => registry.register(l, token, Interest::READABLE),
            ListenerInner::Tcp(_) | ListenerInner::Moving => Err(io::ErrorKind::NotConnected.into()),
            ListenerInner::Pipe(l) => {
                l.set_nonblocking(true);
                l.set_notify(Some((notify.clone(), token.0)));
                Ok(())
            }
        }
    }

    /// Stops reporting to a reactor.
    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.inner {
            ListenerInner::Pipe(l) => l.set_notify(None),
            ListenerInner::TcpPolled(l) => registry.deregister(l)?,
            ListenerInner::Tcp(_) | ListenerInner::Moving => {}
        }
        Ok(())
    }

    /// Accepts one connection, waiting at most `timeout`; `None` when no client came.
    pub fn accept_within(&self, timeout: Duration) -> io::Result<Option<(Stream, Address)>> {
        match &self.inner {
            ListenerInner::Pipe(l) => match l.accept_within(Some(timeout)) {
                Ok(p) => {
                    let peer = Address::Pipe(p.name().to_string());
                    Ok(Some((Stream::Pipe(p), peer)))
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
                Err(e) => Err(e),
            },
            ListenerInner::TcpPolled(_) | ListenerInner::Moving => Err(io::ErrorKind::Unsupported.into()),
            ListenerInner::Tcp(l) => {
                // std has no accept with a limit: try without blocking, in slices of 5 ms.
                l.set_nonblocking(true)?;
                let deadline = super::deadline_after(Instant::now(), timeout);
                let r = loop {
                    match l.accept() {
                        Ok((s, a)) => break Ok(Some((s, a))),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => break Err(e),
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Ok(None);
                    }
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                };
                l.set_nonblocking(false)?;
                match r? {
                    Some((s, a)) => {
                        s.set_nonblocking(false)?;
                        s.set_nodelay(true)?;
                        Ok(Some((Stream::Tcp(s), a.into())))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// A pipe listener: switches to non-blocking accepts and reports every change to `notify`
    /// (the async face's wakers). False for a TCP listener.
    #[cfg(feature = "tokio")]
    pub(crate) fn set_pipe_notify(&mut self, notify: Arc<dyn Notify>) -> bool {
        match &mut self.inner {
            ListenerInner::Pipe(l) => {
                l.set_nonblocking(true);
                l.set_notify(Some((notify, 0)));
                true
            }
            _ => false,
        }
    }

    /// A duplicate of the TCP listening socket, for a runtime that registers its own copy (the
    /// async face); `None` for a pipe listener.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_clone_tcp(&self) -> Option<io::Result<TcpListener>> {
        match &self.inner {
            ListenerInner::Tcp(l) => Some(l.try_clone()),
            _ => None,
        }
    }

    /// The listening socket, as a number. A pipe listener has none: its instances come and go.
    pub fn raw_descriptor(&self) -> io::Result<RawDescriptor> {
        match &self.inner {
            ListenerInner::Tcp(l) => Ok(l.as_raw_socket() as usize),
            ListenerInner::TcpPolled(l) => Ok(l.as_raw_socket() as usize),
            ListenerInner::Pipe(_) | ListenerInner::Moving => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a pipe listener has no single handle to wait on (its instances come and go)",
            )),
        }
    }
}
