//! [`Stream`] and [`Sink`] of messages on [`Connection`], for those who want combinators.
//!
//! The stream yields each message (`Ok(Vec<u8>)`) and ends after the peer closes cleanly between
//! messages; any other end (end of file mid-message, a refused length, an I/O error) is yielded
//! once as `Err`, then the stream ends. It is cancel-safe as `recv_bytes` is.
//!
//! The sink queues each message (header and body) in the connection's write buffer and writes
//! on `flush` (or once 256 KiB wait, in `poll_ready`): `feed` many, `flush` once, and a stream
//! of small messages leaves in few system calls. `close` flushes and shuts down the write side.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;

use super::Connection;
use crate::error::{Error, Result};

impl Stream for Connection {
    type Item = Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if *this.stream_state() {
            return Poll::Ready(None);
        }
        match this.poll_recv(cx, usize::MAX) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(e)) => {
                *this.stream_state() = true;
                match e {
                    Error::Eof => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl<'a> Sink<&'a [u8]> for Connection {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_ready_to_feed(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: &'a [u8]) -> Result<()> {
        self.get_mut().feed_bytes(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_close_write(cx)
    }
}

impl Sink<Vec<u8>> for Connection {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_ready_to_feed(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Vec<u8>) -> Result<()> {
        self.get_mut().feed_bytes(&item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_close_write(cx)
    }
}
