//! The listening socket of the async face: tokio's TCP and Unix listeners, and on Windows the
//! crate's pipe listener woken by its driver thread, behind one type.
//!
//! The socket is bound by the crate's transport ([`crate::transport::bind_listener`]), exactly as
//! the blocking listener binds it, and only then handed to tokio.

use super::stream::AsyncStream;
use crate::address::Address;
use crate::error::Result;
use crate::transport::{RawDescriptor, SocketListener};

/// The listening socket as tokio sees it: tokio registers a duplicate of the descriptor, and the
/// crate's listener is kept for what it owns (the socket file, removed on drop).
#[derive(Debug)]
pub(crate) struct AsyncSocket {
    accepting: Accepting,
    /// Kept for what it owns (the Unix socket file, removed on drop); on Windows it also
    /// accepts pipe clients.
    #[cfg_attr(unix, allow(dead_code))]
    listener: SocketListener,
}

#[derive(Debug)]
enum Accepting {
    Tcp(::tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(::tokio::net::UnixListener),
    /// A Windows pipe listener: accepts through the crate's listener in non-blocking mode,
    /// woken by its driver thread.
    #[cfg(windows)]
    Pipe(std::sync::Arc<super::stream::Wakers>),
}

impl AsyncSocket {
    pub(crate) fn new(listener: SocketListener) -> Result<AsyncSocket> {
        #[cfg(unix)]
        let accepting = match listener.try_clone_std()? {
            crate::transport::StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Accepting::Tcp(::tokio::net::TcpListener::from_std(l)?)
            }
            crate::transport::StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                Accepting::Unix(::tokio::net::UnixListener::from_std(l)?)
            }
        };
        #[cfg(windows)]
        let mut listener = listener;
        #[cfg(windows)]
        let accepting = match listener.try_clone_tcp() {
            Some(l) => {
                let l = l?;
                l.set_nonblocking(true)?;
                Accepting::Tcp(::tokio::net::TcpListener::from_std(l)?)
            }
            None => {
                let wakers = std::sync::Arc::new(super::stream::Wakers::default());
                if !listener.set_pipe_notify(wakers.clone()) {
                    return Err(crate::transport::unsupported(crate::address::Family::Pipe));
                }
                Accepting::Pipe(wakers)
            }
        };
        Ok(AsyncSocket { accepting, listener })
    }

    /// Accepts one client. Cancel-safe (tokio's accept is).
    pub(crate) async fn accept(&self) -> std::io::Result<(AsyncStream, Address)> {
        match &self.accepting {
            Accepting::Tcp(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((AsyncStream::Tcp(s), a.into()))
            }
            #[cfg(unix)]
            Accepting::Unix(l) => {
                let (s, a) = l.accept().await?;
                let peer = Address::Unix(a.as_pathname().map(std::path::Path::to_path_buf).unwrap_or_default());
                Ok((AsyncStream::Unix(s), peer))
            }
            #[cfg(windows)]
            Accepting::Pipe(wakers) => {
                let (stream, peer) = std::future::poll_fn(|cx| {
                    // The waker first, so a client arriving during the attempt is not missed.
                    wakers.set_read(cx.waker());
                    match self.listener.accept_nonblocking() {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::task::Poll::Pending,
                        r => std::task::Poll::Ready(r),
                    }
                })
                .await?;
                let io = AsyncStream::from_stream(stream).map_err(std::io::Error::other)?;
                Ok((io, peer))
            }
        }
    }

    pub(crate) fn raw_descriptor(&self) -> std::io::Result<RawDescriptor> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            match &self.accepting {
                Accepting::Tcp(l) => Ok(l.as_raw_fd()),
                Accepting::Unix(l) => Ok(l.as_raw_fd()),
            }
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawSocket;
            match &self.accepting {
                Accepting::Tcp(l) => Ok(l.as_raw_socket() as usize),
                // A pipe listener has none (its instances come and go): the blocking face's error.
                Accepting::Pipe(_) => self.listener.raw_descriptor(),
            }
        }
    }
}
