//! Every face's writes arrive whole, in order and unchanged when the socket takes them in parts.
//!
//! A socket write sends a message's header and body as one `send` when they are small (copied
//! together into a 128- or 512-byte stack buffer), as one `sendmsg` of the slices when they are
//! not (`transport::send_slices`), and a write the socket takes only in part is resumed where it
//! stopped (inside the header, inside the gathered copy, between slices). Here each face writes a
//! shuffled stream of messages of every size around those limits (0–8, 119–133, 500–520 bytes,
//! 4 KiB, 64 KiB, 1 MiB + 1) through a small send buffer to a raw peer that reads a few bytes at a
//! time through a small receive buffer, so writes end at every offset, and the peer checks every
//! byte of every message against what was sent:
//!
//! * the blocking face, `send_bytes` mixed with `send_frames` batches;
//! * the reactor, `send` (copied and coalesced), `send_owned` (queued as is) and `send_shared`
//!   (one body shared by three peers reading at different paces);
//! * the tokio face's split writer, `send_bytes`, `feed_bytes` and `flush`.
//!
//! Unix sockets take the smallest buffers; TCP runs with 2–4 KiB buffers (a loopback TCP peer
//! advertising a window of a few bytes waits on the kernel's persist timer, which backs off to
//! seconds: a test of the kernel, not of us).
#![cfg(unix)]

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// The longest a peer may take to read a whole stream (a few seconds on a busy machine).
const STREAM_LIMIT: Duration = Duration::from_secs(120);

/// A small deterministic generator (the stream's sizes, order, and how each message is sent).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Message `idx`'s body: `len` bytes that differ from every other message's.
fn body(idx: usize, len: usize) -> Vec<u8> {
    let mut r = Lcg(idx as u64 * 7919 + 13);
    (0..len).map(|_| r.next() as u8).collect()
}

/// The stream: (index, length) of each message, every size around the write path's limits,
/// each twice, shuffled by `seed`.
fn stream(seed: u64) -> Vec<(usize, usize)> {
    let mut sizes: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 7, 8];
    sizes.extend(119..=133);
    sizes.extend(500..=520);
    sizes.extend([4095, 4096, 4097, 65_535, 65_536, 65_537, 100_000, 1 << 20, (1 << 20) + 1]);
    let once = sizes.clone();
    sizes.extend(once);
    let mut r = Lcg(seed);
    for i in (1..sizes.len()).rev() {
        let j = r.next() as usize % (i + 1);
        sizes.swap(i, j);
    }
    sizes.into_iter().enumerate().collect()
}

fn set_buffers(fd: RawFd, send: Option<usize>, recv: Option<usize>) {
    // SAFETY: `fd` is an open socket owned by the caller for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let s = socket2::SockRef::from(&fd);
    if let Some(n) = send {
        s.set_send_buffer_size(n).expect("SO_SNDBUF");
    }
    if let Some(n) = recv {
        s.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
}

/// A raw peer of `address` with a receive buffer of `recv` bytes (set before it connects).
fn raw_peer(address: &mpconn::Address, recv: usize) -> Box<dyn Read + Send> {
    match address {
        mpconn::Address::Inet { .. } => {
            let sa: std::net::SocketAddr = address.to_string().parse().expect("a TCP address");
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            sock.set_recv_buffer_size(recv).expect("SO_RCVBUF");
            sock.connect(&sa.into()).expect("connect");
            Box::new(std::net::TcpStream::from(sock))
        }
        _ => {
            let s = std::os::unix::net::UnixStream::connect(address.to_string()).expect("connect");
            set_buffers(s.as_raw_fd(), None, Some(recv));
            Box::new(s)
        }
    }
}

/// Reads `expected` from `s` in reads of 1 to `max_read` bytes (now and then a large one, now
/// and then a 1 ms pause) and checks every message byte for byte; then, with `then_eof`, the end
/// of the stream and nothing after the last message.
fn read_slowly(mut s: impl Read, expected: &[(usize, usize)], seed: u64, max_read: usize, then_eof: bool, what: &str) {
    let mut r = Lcg(seed);
    let (mut buf, mut pos, mut k) = (Vec::new(), 0usize, 0usize);
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = Instant::now() + STREAM_LIMIT;
    for reads in 1u64.. {
        loop {
            let avail = &buf[pos..];
            let Some(head) = avail.get(..4) else { break };
            let declared = i32::from_be_bytes(head.try_into().expect("4 bytes"));
            let (header, len) = if declared == -1 {
                let Some(long) = avail.get(4..12) else { break };
                (12, u64::from_be_bytes(long.try_into().expect("8 bytes")) as usize)
            } else {
                assert!(declared >= 0, "{what}: a negative length {declared} at message {k}");
                (4, declared as usize)
            };
            if avail.len() < header + len {
                break;
            }
            assert!(k < expected.len(), "{what}: a message of {len} bytes after the last one");
            let (idx, want_len) = expected[k];
            assert_eq!(len, want_len, "{what}: message {k}'s length");
            if avail[header..header + len] != body(idx, len)[..] {
                let at = avail[header..].iter().zip(body(idx, len)).position(|(a, b)| *a != b);
                panic!("{what}: message {k} ({len} bytes) differs at byte {at:?}");
            }
            pos += header + len;
            k += 1;
        }
        if !then_eof && k == expected.len() {
            assert_eq!(pos, buf.len(), "{what}: bytes after the last message");
            return;
        }
        if pos > 1 << 20 {
            buf.drain(..pos);
            pos = 0;
        }
        assert!(Instant::now() < deadline, "{what}: {k} of {} messages after {STREAM_LIMIT:?}", expected.len());
        let want = if r.next().is_multiple_of(50) { chunk.len() } else { 1 + r.next() as usize % max_read };
        let n = s.read(&mut chunk[..want]).expect("read");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if reads.is_multiple_of(997) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(pos, buf.len(), "{what}: {} bytes of a message cut short", buf.len() - pos);
    assert_eq!(k, expected.len(), "{what}: {k} of {} messages", expected.len());
}

mod blocking {
    use super::*;

    /// One stream from the blocking face, `send_bytes` and `send_frames` batches of 1 to 6.
    fn case(address: &str, seed: u64, send_buf: usize, recv_buf: usize, max_read: usize, write_timeout: bool) {
        let mut listener = mpconn::Listener::builder().address(address).bind().expect("bind");
        let bound = listener.address().clone();
        let messages = stream(seed);
        let to_send = messages.clone();
        let sender = std::thread::spawn(move || {
            let mut conn = listener.accept().expect("accept");
            set_buffers(conn.fileno().expect("fd"), Some(send_buf), None);
            if write_timeout {
                conn.set_write_timeout(Some(STREAM_LIMIT)).expect("write timeout");
            }
            let mut r = Lcg(seed ^ 0xabc);
            let mut i = 0;
            while i < to_send.len() {
                let batch = if r.next().is_multiple_of(3) { 1 + r.next() as usize % 6 } else { 1 };
                let end = (i + batch).min(to_send.len());
                if end - i == 1 && r.next().is_multiple_of(2) {
                    let (idx, len) = to_send[i];
                    conn.send_bytes(&body(idx, len)).expect("send_bytes");
                } else {
                    let mut framed = Vec::new();
                    for &(idx, len) in &to_send[i..end] {
                        mpconn::encode_frame(&body(idx, len), &mut framed);
                    }
                    conn.send_frames(&framed).expect("send_frames");
                }
                i = end;
            }
            conn.close().expect("close");
        });
        let what = format!("blocking face, {bound}, seed {seed}, buffers {send_buf}/{recv_buf}");
        read_slowly(raw_peer(&bound, recv_buf), &messages, seed, max_read, true, &what);
        sender.join().expect("the sender");
    }

    #[test]
    fn unix_socket_writes_taken_in_parts_arrive_whole() {
        let dir = tempfile::tempdir().expect("a directory");
        for (i, (seed, send_buf, recv_buf, max_read, write_timeout)) in
            [(11, 4096, 2048, 7, false), (12, 1, 1, 3, true), (13, 2000, 1, 1, true)].into_iter().enumerate()
        {
            let path = dir.path().join(format!("s{i}.sock"));
            case(&path.display().to_string(), seed, send_buf, recv_buf, max_read, write_timeout);
        }
    }

    #[test]
    fn tcp_writes_taken_in_parts_arrive_whole() {
        case("127.0.0.1:0", 1, 4096, 2048, 7, false);
        case("127.0.0.1:0", 4, 4608, 2304, 3, true);
    }
}

mod reactor {
    use mpconn::reactor::options::{ConnectionOptions, ListenOptions};
    use mpconn::reactor::{ConnId, Context, Handler, Reactor};

    use super::*;

    /// Queues the whole stream to each peer when it opens, each message by one of the three sends.
    struct Sender {
        messages: Vec<(usize, usize)>,
        shared: Vec<bytes::Bytes>,
        opened: u64,
    }

    impl Handler for Sender {
        fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mpconn::Address) {
            self.opened += 1;
            let mut r = Lcg(self.opened * 77);
            for (i, &(idx, len)) in self.messages.iter().enumerate() {
                match r.next() % 3 {
                    0 => ctx.send(conn, &body(idx, len)).expect("send"),
                    1 => ctx.send_owned(conn, body(idx, len)).map_err(|e| e.0).expect("send_owned"),
                    _ => ctx.send_shared(conn, &self.shared[i]).expect("send_shared"),
                }
            }
        }
        fn on_message(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    }

    /// One reactor, three raw peers reading at different paces.
    fn case(address: &str, seed: u64, recv_buf: usize, max_read: usize) {
        let messages = stream(seed);
        let shared = messages.iter().map(|&(idx, len)| bytes::Bytes::from(body(idx, len))).collect();
        let mut reactor = Reactor::new(Sender { messages: messages.clone(), shared, opened: 0 }).expect("reactor");
        // The whole stream is queued at once, and the peers read slowly.
        let options = ConnectionOptions::new().write_stall_timeout(None).idle_timeout(None).high_water_mark(64 << 20);
        let l = reactor.listen(address, ListenOptions::new().connection(options)).expect("listen");
        let bound = reactor.listener_address(l).expect("bound").clone();
        let handle = reactor.handle();
        let server = std::thread::spawn(move || reactor.run().expect("run"));
        let peers: Vec<_> = (0..3u64)
            .map(|p| {
                let (bound, messages) = (bound.clone(), messages.clone());
                std::thread::spawn(move || {
                    let what = format!("reactor, {bound}, seed {seed}, peer {p}, receive buffer {recv_buf}");
                    let pace = max_read + p as usize * 5;
                    read_slowly(raw_peer(&bound, recv_buf), &messages, seed + p, pace, false, &what);
                })
            })
            .collect();
        let results: Vec<_> = peers.into_iter().map(|p| p.join()).collect();
        handle.stop().expect("stop");
        server.join().expect("the reactor");
        for r in results {
            if let Err(panic) = r {
                std::panic::resume_unwind(panic);
            }
        }
    }

    #[test]
    fn unix_socket_writes_taken_in_parts_arrive_whole() {
        let dir = tempfile::tempdir().expect("a directory");
        case(&dir.path().join("a.sock").display().to_string(), 23, 1, 3);
        case(&dir.path().join("b.sock").display().to_string(), 24, 4096, 100);
    }

    #[test]
    fn tcp_writes_taken_in_parts_arrive_whole() {
        case("127.0.0.1:0", 21, 2048, 7);
    }
}

#[cfg(feature = "tokio")]
mod tokio_face {
    use super::*;

    /// One stream from the tokio face's split writer: `send_bytes`, `feed_bytes`, `feed_bytes`
    /// then `flush`.
    fn case(address: String, seed: u64, send_buf: usize, recv_buf: usize, max_read: usize) {
        let messages = stream(seed);
        let to_send = messages.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut l = mpconn::tokio::Listener::builder().address(address.as_str()).bind().expect("bind");
                tx.send(l.address().clone()).expect("the address");
                let conn = l.accept().await.expect("accept");
                set_buffers(conn.fileno().expect("fd"), Some(send_buf), None);
                let (_reader, mut w) = conn.into_split().expect("split");
                let mut r = Lcg(seed ^ 0x5555);
                for &(idx, len) in &to_send {
                    match r.next() % 3 {
                        0 => w.send_bytes(&body(idx, len)).await.expect("send_bytes"),
                        1 => w.feed_bytes(&body(idx, len)).expect("feed_bytes"),
                        _ => {
                            w.feed_bytes(&body(idx, len)).expect("feed_bytes");
                            w.flush().await.expect("flush");
                        }
                    }
                }
                w.flush().await.expect("flush");
                w.close().await.expect("close");
            });
        });
        let bound = rx.recv().expect("the address");
        let what = format!("tokio face, {bound}, seed {seed}, buffers {send_buf}/{recv_buf}");
        read_slowly(raw_peer(&bound, recv_buf), &messages, seed, max_read, true, &what);
        sender.join().expect("the sender");
    }

    #[test]
    fn unix_socket_writes_taken_in_parts_arrive_whole() {
        let dir = tempfile::tempdir().expect("a directory");
        case(dir.path().join("a.sock").display().to_string(), 33, 1, 1, 3);
        case(dir.path().join("b.sock").display().to_string(), 34, 8192, 4096, 100);
    }

    #[test]
    fn tcp_writes_taken_in_parts_arrive_whole() {
        case("127.0.0.1:0".into(), 31, 4096, 2048, 7);
    }
}
