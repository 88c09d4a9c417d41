//! The byte stream of the async face: tokio's TCP and Unix streams and the crate's Windows
//! pipes behind one type.
//!
//! Sockets are made by the crate's transport (the same options as the blocking face: `TCP_NODELAY`,
//! the Unix socket's 0600 mode and stale-file handling, abstract names) and only then handed to
//! tokio, so both faces behave identically on the wire and on the file system.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::address::Address;
use crate::error::{Error, Result};
use crate::transport::Stream;

/// A connected stream registered with the tokio runtime.
#[derive(Debug)]
pub(crate) enum AsyncStream {
    Tcp(::tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(::tokio::net::UnixStream),
    /// A Windows named pipe: the crate's own pipe (it keeps message boundaries, which tokio's
    /// named pipes, through mio, lose), in non-blocking mode, waking tasks through [`Wakers`].
    #[cfg(windows)]
    Pipe(PipeIo),
}

#[cfg(unix)]
macro_rules! each_socket {
    ($self:expr, $s:ident => $e:expr, $pipe:ident => $p:expr) => {
        match $self {
            AsyncStream::Tcp($s) => $e,
            AsyncStream::Unix($s) => $e,
        }
    };
}

#[cfg(windows)]
macro_rules! each_socket {
    ($self:expr, $s:ident => $e:expr, $pipe:ident => $p:expr) => {
        match $self {
            AsyncStream::Tcp($s) => $e,
            AsyncStream::Pipe($pipe) => $p,
        }
    };
}

/// The tasks waiting on a pipe: the pipe's driver thread calls [`Notify::notify`] on every
/// change of its state, which wakes them (they then retry, and wait again if still blocked).
#[cfg(windows)]
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    read: std::sync::Mutex<Option<std::task::Waker>>,
    write: std::sync::Mutex<Option<std::task::Waker>>,
}

#[cfg(windows)]
impl Wakers {
    pub(crate) fn set_read(&self, w: &std::task::Waker) {
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = Some(w.clone());
    }

    fn set_write(&self, w: &std::task::Waker) {
        *self.write.lock().unwrap_or_else(|p| p.into_inner()) = Some(w.clone());
    }
}

#[cfg(windows)]
impl crate::transport::Notify for Wakers {
    fn notify(&self, _token: usize) {
        for slot in [&self.read, &self.write] {
            if let Some(w) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                w.wake();
            }
        }
    }
}

/// A named pipe end and its wakers.
#[cfg(windows)]
#[derive(Debug)]
pub(crate) struct PipeIo {
    stream: Stream,
    wakers: std::sync::Arc<Wakers>,
}

#[cfg(windows)]
impl PipeIo {
    fn new(mut stream: Stream) -> Result<PipeIo> {
        let wakers = std::sync::Arc::new(Wakers::default());
        if !stream.set_pipe_notify(wakers.clone()) {
            return Err(Error::Config("not a pipe".into()));
        }
        Ok(PipeIo { stream, wakers })
    }

    /// Runs a non-blocking operation; `WouldBlock` parks the task until the pipe changes. The
    /// waker is stored before the attempt, so a change during it is not lost.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: bool,
        mut op: impl FnMut(&mut Stream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        if write {
            self.wakers.set_write(cx.waker());
        } else {
            self.wakers.set_read(cx.waker());
        }
        loop {
            match op(&mut self.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

/// First and longest pause between connect attempts to a Unix listener whose backlog is full.
#[cfg(unix)]
const UNIX_BACKLOG_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
#[cfg(unix)]
const UNIX_BACKLOG_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// The error for a call made outside a tokio runtime (tokio would panic there).
pub(crate) fn require_runtime() -> Result<()> {
    ::tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| Error::Config("mpconn::tokio must be used inside a tokio runtime with I/O enabled".into()))
}

impl AsyncStream {
    /// Acknowledges what arrives next at once (`TCP_QUICKACK` on Linux; see
    /// [`Stream::acknowledge_promptly`]).
    pub(crate) fn acknowledge_promptly(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let AsyncStream::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
        }
    }

    /// Hands a connected (or connecting) crate stream to tokio.
    pub(crate) fn from_stream(stream: Stream) -> Result<AsyncStream> {
        require_runtime()?;
        #[cfg(unix)]
        {
            Ok(match stream {
                Stream::Tcp(s) => {
                    s.set_nonblocking(true)?;
                    AsyncStream::Tcp(::tokio::net::TcpStream::from_std(s)?)
                }
                Stream::Unix(s) => {
                    s.set_nonblocking(true)?;
                    AsyncStream::Unix(::tokio::net::UnixStream::from_std(s)?)
                }
            })
        }
        #[cfg(windows)]
        {
            match stream {
                Stream::Tcp(s) => {
                    s.set_nonblocking(true)?;
                    Ok(AsyncStream::Tcp(::tokio::net::TcpStream::from_std(s)?))
                }
                Stream::Pipe(_) => Ok(AsyncStream::Pipe(PipeIo::new(stream)?)),
                Stream::TcpPolled(_) => Err(Error::Config("a reactor's TCP stream cannot be moved to tokio".into())),
            }
        }
    }

    /// Connects to `address` without blocking the runtime.
    #[cfg(unix)]
    pub(crate) async fn connect(address: &Address) -> Result<AsyncStream> {
        require_runtime()?;
        let mut backoff = UNIX_BACKLOG_RETRY_FIRST;
        let (stream, connected) = loop {
            match Stream::connect_nonblocking(address) {
                // A Unix listener whose backlog is full: Linux refuses a non-blocking connect at
                // once (EAGAIN) where a blocking one, Python's included, waits for room. Wait
                // and retry (the client's connect timeout bounds it, as the blocking wait).
                Err(Error::Io(e))
                    if e.kind() == io::ErrorKind::WouldBlock && address.family() == crate::Family::Unix =>
                {
                    ::tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(UNIX_BACKLOG_RETRY_MAX);
                }
                r => break r?,
            }
        };
        let s = AsyncStream::from_stream(stream)?;
        if !connected {
            each_socket!(&s, s => s.writable().await, _p => Ok(()))?;
            if let Some(e) = each_socket!(&s, s => s.take_error(), _p => Ok(None))? {
                return Err(e.into());
            }
        }
        Ok(s)
    }

    /// Connects to `address` without blocking the runtime: TCP through tokio (TCP_NODELAY set),
    /// a pipe through the crate's pipe client on tokio's blocking pool (it waits for a busy
    /// pipe up to 20 s, as Python does).
    #[cfg(windows)]
    pub(crate) async fn connect(address: &Address) -> Result<AsyncStream> {
        require_runtime()?;
        match address {
            Address::Pipe(_) => {
                let a = address.clone();
                let stream = ::tokio::task::spawn_blocking(move || Stream::connect(&a, None))
                    .await
                    .map_err(|e| Error::Io(io::Error::other(e)))??;
                AsyncStream::from_stream(stream)
            }
            _ => {
                let mut last = None;
                for sa in address.resolve()? {
                    match ::tokio::net::TcpStream::connect(sa).await {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(AsyncStream::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map(Error::Io).unwrap_or_else(|| Error::Address(format!("{address}: nothing to connect to"))))
            }
        }
    }

    /// The peer's address (`ip:port` for TCP, usually the empty path for Unix sockets).
    pub(crate) fn peer_address(&self) -> io::Result<Address> {
        match self {
            AsyncStream::Tcp(s) => Ok(s.peer_addr()?.into()),
            #[cfg(unix)]
            AsyncStream::Unix(s) => {
                let a = s.peer_addr()?;
                Ok(Address::Unix(a.as_pathname().map(std::path::Path::to_path_buf).unwrap_or_default()))
            }
            #[cfg(windows)]
            AsyncStream::Pipe(p) => p.stream.peer_address(),
        }
    }

    /// A second handle on the same socket (`dup(2)`; `WSADuplicateSocket` on Windows),
    /// registered with tokio on its own: one half reads through one, the other writes through
    /// the other (the split of `crate::tokio::Connection::into_split`). A named pipe has one
    /// overlapped handle and cannot be split.
    pub(crate) fn try_clone(&self) -> Result<AsyncStream> {
        require_runtime()?;
        match self {
            #[cfg(unix)]
            AsyncStream::Tcp(s) => {
                let fd = std::os::fd::AsFd::as_fd(s).try_clone_to_owned()?;
                Ok(AsyncStream::Tcp(::tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd))?))
            }
            #[cfg(unix)]
            AsyncStream::Unix(s) => {
                let fd = std::os::fd::AsFd::as_fd(s).try_clone_to_owned()?;
                Ok(AsyncStream::Unix(::tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?))
            }
            #[cfg(windows)]
            AsyncStream::Tcp(s) => {
                let socket = std::os::windows::io::AsSocket::as_socket(s).try_clone_to_owned()?;
                let std = std::net::TcpStream::from(socket);
                std.set_nonblocking(true)?;
                Ok(AsyncStream::Tcp(::tokio::net::TcpStream::from_std(std)?))
            }
            #[cfg(windows)]
            AsyncStream::Pipe(_) => Err(Error::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "a named pipe connection cannot be split (one overlapped handle, one state)",
            ))),
        }
    }

    /// The descriptor (file descriptor on Unix, socket on Windows).
    pub(crate) fn raw_descriptor(&self) -> crate::transport::RawDescriptor {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            each_socket!(self, s => s.as_raw_fd(), _p => unreachable!())
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawSocket;
            each_socket!(self, s => s.as_raw_socket() as usize, p => p.stream.raw_descriptor())
        }
    }
}

impl AsyncStream {
    /// One write now, without waiting and past tokio's record of readiness (which, once a
    /// write found the socket full, answers `Pending` without asking the socket until the
    /// poller reports room again): `Ok(n)`, or `WouldBlock` when the socket is still full.
    /// For a deadline that asks whether a slow peer took bytes since (see
    /// `Session::handle_timeout`). Pipes: `Unsupported`.
    pub(crate) fn try_write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(unix)]
        return each_socket!(self, s => crate::transport::send_slices(socket2::SockRef::from(s), bufs, crate::transport::SEND_FLAGS), _p => unreachable!());
        #[cfg(windows)]
        each_socket!(self, s => socket2::SockRef::from(s).send_vectored(bufs), _p => Err(io::ErrorKind::Unsupported.into()))
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for AsyncStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        each_socket!(self, s => s.as_fd(), _p => unreachable!())
    }
}

impl AsyncRead for AsyncStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each_socket!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf), p => {
            use std::io::Read;
            let n = std::task::ready!(p.poll_op(cx, false, |s| s.read(buf.initialize_unfilled())))?;
            buf.advance(n);
            Poll::Ready(Ok(()))
        })
    }
}

/// A socket write on Unix: `sendmsg` with the transport's flags (no SIGPIPE, as the blocking
/// face and the reactor write: tokio's own `writev` cannot take flags), through tokio's
/// readiness (`try_io` clears it when the socket is full, so the task waits for the next edge).
#[cfg(unix)]
macro_rules! poll_send {
    ($s:expr, $cx:expr, $bufs:expr) => {{
        let s = $s;
        loop {
            std::task::ready!(s.poll_write_ready($cx))?;
            let sock = socket2::SockRef::from(&*s);
            match s.try_io(::tokio::io::Interest::WRITABLE, || {
                crate::transport::send_slices(sock, $bufs, crate::transport::SEND_FLAGS)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break Poll::Ready(r),
            }
        }
    }};
}

impl AsyncWrite for AsyncStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        #[cfg(unix)]
        return each_socket!(self.get_mut(), s => poll_send!(s, cx, bufs), _p => unreachable!());
        #[cfg(windows)]
        each_socket!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs), p => {
            use std::io::Write;
            p.poll_op(cx, true, |s| s.write_vectored(bufs))
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self.get_mut(), s => Pin::new(s).poll_flush(cx), _p => Poll::Ready(Ok(())))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx), p => {
            Poll::Ready(p.stream.shutdown(std::net::Shutdown::Write))
        })
    }
}
