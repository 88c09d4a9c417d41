//! The plain-socket W2 servers (echo of 4-byte-length frames) that `w2_floor` and `w2_blocks`
//! both measure mpconn against: the raw anchor's blocking loop and a bare mio loop. Included with
//! `#[path]` by each (a file in a subfolder is no bench target of its own). Each serves one
//! connection until the client closes it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use mio::{Events, Interest, Poll, Token};

/// A connected std stream of either family.
pub enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Plain {
    pub fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Plain::Tcp(s) => s,
            Plain::Unix(s) => s,
        }
    }
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The end of the whole frame at the front of `buf`, if it is all there.
pub fn frame_end(buf: &[u8]) -> Option<usize> {
    let head: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let end = 4 + u32::from_be_bytes(head) as usize;
    (buf.len() >= end).then_some(end)
}

/// Reads one whole frame into `buf` (the peers alternate, so nothing follows it), usually in one
/// read; `None` at the end of the stream.
pub fn read_frame(s: &mut dyn ReadWrite, buf: &mut [u8]) -> Option<usize> {
    let mut have = 0;
    loop {
        if let Some(end) = frame_end(&buf[..have]) {
            return Some(end);
        }
        match s.read(&mut buf[have..]) {
            Ok(0) => return None,
            Ok(r) => have += r,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The raw anchor's server: one read (usually) and one write a round trip.
pub fn serve_raw(s: &mut dyn ReadWrite) {
    let mut buf = [0u8; 4096];
    while let Some(end) = read_frame(s, &mut buf) {
        s.write_all(&buf[..end]).expect("write");
    }
}

trait MioStream: Read + Write {
    fn register(&mut self, poll: &Poll);
}

impl MioStream for mio::net::TcpStream {
    fn register(&mut self, poll: &Poll) {
        poll.registry().register(self, Token(0), Interest::READABLE).expect("register");
    }
}

impl MioStream for mio::net::UnixStream {
    fn register(&mut self, poll: &Poll) {
        poll.registry().register(self, Token(0), Interest::READABLE).expect("register");
    }
}

/// The least a reactor can do: one `epoll_wait`, one `read` (a short read is taken to have
/// drained the socket, as mpconn's reactor does) and the echo written at once, a round trip.
pub fn serve_mio(s: Plain) {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let mut s: Box<dyn MioStream> = match s {
        Plain::Tcp(s) => {
            s.set_nonblocking(true).expect("nonblocking");
            Box::new(mio::net::TcpStream::from_std(s))
        }
        Plain::Unix(s) => {
            s.set_nonblocking(true).expect("nonblocking");
            Box::new(mio::net::UnixStream::from_std(s))
        }
    };
    s.register(&poll);
    let mut buf = vec![0u8; 65536];
    let mut have = 0;
    loop {
        poll.poll(&mut events, None).expect("epoll_wait");
        loop {
            let space = buf.len() - have;
            let r = match s.read(&mut buf[have..]) {
                Ok(0) => return,
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            };
            have += r;
            let mut at = 0;
            while let Some(end) = frame_end(&buf[at..have]) {
                // 68 bytes to a socket the peer drains: written whole or the run is void.
                let w = s.write(&buf[at..at + end]).expect("write");
                assert_eq!(w, end, "short write");
                at += end;
            }
            buf.copy_within(at..have, 0);
            have -= at;
            if r < space {
                break;
            }
        }
    }
}
