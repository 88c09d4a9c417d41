//! The byte transport of the async face: tokio's TCP and Unix streams behind one type.
//!
//! Sockets are made by the crate's transport (the same options as the blocking face: TCP_NODELAY,
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
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AsyncStream::Tcp($s) => $e,
            #[cfg(unix)]
            AsyncStream::Unix($s) => $e,
        }
    };
}

/// The error for a call made outside a tokio runtime (tokio would panic there).
pub(crate) fn require_runtime() -> Result<()> {
    ::tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| Error::Config("mpconn::tokio must be used inside a tokio runtime with I/O enabled".into()))
}

impl AsyncStream {
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
                _ => Err(crate::transport::unsupported(crate::address::Family::Pipe)),
            }
        }
    }

    /// Connects to `address` without blocking the runtime.
    pub(crate) async fn connect(address: &Address) -> Result<AsyncStream> {
        require_runtime()?;
        let (stream, connected) = Stream::connect_nonblocking(address)?;
        let s = AsyncStream::from_stream(stream)?;
        if !connected {
            each!(&s, s => s.writable().await)?;
            if let Some(e) = each!(&s, s => s.take_error())? {
                return Err(e.into());
            }
        }
        Ok(s)
    }

    /// The peer's address (`ip:port` for TCP, usually the empty path for Unix sockets).
    pub(crate) fn peer_address(&self) -> io::Result<Address> {
        match self {
            AsyncStream::Tcp(s) => Ok(s.peer_addr()?.into()),
            #[cfg(unix)]
            AsyncStream::Unix(s) => {
                let a = s.peer_addr()?;
                Ok(Address::Unix(a.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default()))
            }
        }
    }

    /// The descriptor (file descriptor on Unix, socket on Windows).
    pub(crate) fn raw_descriptor(&self) -> crate::transport::RawDescriptor {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            each!(self, s => s.as_raw_fd())
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawSocket;
            each!(self, s => s.as_raw_socket() as usize)
        }
    }
}

impl AsyncRead for AsyncStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for AsyncStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
