//! A connection's outgoing bytes: small messages are copied and coalesced into shared chunks so a
//! burst leaves in one system call; large owned messages are queued as they are and written with
//! vectored writes, never copied; shared (refcounted) bodies are queued as a reference, so a
//! broadcast holds one copy of its body whatever the number of recipients. A drained queue
//! gives its storage to the reactor's [`Spare`], from which the next queue that needs storage
//! takes it: an idle connection holds no buffers, and a ping-pong allocates nothing per message.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use crate::wire::frame::Header;

/// Messages up to this size are copied into a coalescing chunk.
const COALESCE_MAX: usize = 64 * 1024;
/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// A queue of at most this many chunks is written from a small slice array (most are: one
/// coalesced chunk), not one of [`MAX_IOVECS`] that would have to be initialized first.
const FEW_CHUNKS: usize = 2;
/// Largest coalescing buffer the spare keeps.
const SPARE_SMALL_MAX: usize = 4096;
/// Largest chunk list (in chunks) the spare keeps.
const SPARE_CHUNKS_MAX: usize = 64;

/// Storage drained queues give back for the next queue to reuse: one per reactor, so it holds
/// at most one small coalescing buffer and one short chunk list whatever the number of
/// connections.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    chunks: VecDeque<Chunk>,
    small: Vec<u8>,
}

#[derive(Debug)]
enum Chunk {
    /// Framed small messages, back to back.
    Small(Vec<u8>),
    /// One large message: its header and the caller's buffer.
    Large { header: Header, body: Vec<u8> },
    /// One message whose body other queues share: its header (inline) and a reference.
    Shared { header: Header, body: Bytes },
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Small(b) => b.len(),
            Chunk::Large { header, body } => header.as_bytes().len() + body.len(),
            Chunk::Shared { header, body } => header.as_bytes().len() + body.len(),
        }
    }
}

/// The bytes of `bodies` framed (each with its header).
fn framed_len(bodies: &[&[u8]]) -> usize {
    bodies.iter().map(|b| Header::for_len(b.len()).as_bytes().len() + b.len()).sum()
}

/// One vectored write of at most [`FEW_CHUNKS`] framed `bodies`, retried when interrupted:
/// the bytes the writer took (0 on any other error, which the next flush meets and reports).
#[inline]
fn write_framed(w: &mut impl Write, bodies: &[&[u8]]) -> usize {
    let headers: [Header; FEW_CHUNKS] = std::array::from_fn(|i| Header::for_len(bodies.get(i).map_or(0, |b| b.len())));
    let mut slices = [IoSlice::new(&[]); 2 * FEW_CHUNKS];
    for (i, body) in bodies.iter().enumerate().take(FEW_CHUNKS) {
        slices[2 * i] = IoSlice::new(headers[i].as_bytes());
        slices[2 * i + 1] = IoSlice::new(body);
    }
    let count = 2 * bodies.len().min(FEW_CHUNKS);
    loop {
        match w.write_vectored(&slices[..count]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(n) => return n,
            Err(_) => return 0,
        }
    }
}

/// Outgoing bytes of one connection, in order.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the first chunk already written.
    written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl WriteQueue {
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues a message by copying it (coalesced with the small messages before it); new
    /// storage comes from `spare` when it has some.
    pub(crate) fn push_copy(&mut self, body: &[u8], spare: &mut Spare) {
        let header = Header::for_len(body.len());
        let n = header.as_bytes().len() + body.len();
        let tail_fits = matches!(self.chunks.back(), Some(Chunk::Small(b)) if b.len() + n <= COALESCE_MAX);
        if !tail_fits {
            if self.chunks.capacity() == 0 {
                self.chunks = std::mem::take(&mut spare.chunks);
            }
            let buf = if spare.small.capacity() >= n {
                std::mem::take(&mut spare.small)
            } else {
                Vec::with_capacity(n.max(512))
            };
            self.chunks.push_back(Chunk::Small(buf));
        }
        if let Some(Chunk::Small(b)) = self.chunks.back_mut() {
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(body);
        }
        self.queued += n;
    }

    /// Queues a message the caller gives away; large ones are not copied.
    pub(crate) fn push_owned(&mut self, body: Vec<u8>, spare: &mut Spare) {
        if body.len() <= COALESCE_MAX {
            self.push_copy(&body, spare);
            return;
        }
        let header = Header::for_len(body.len());
        self.queued += header.as_bytes().len() + body.len();
        self.chunks.push_back(Chunk::Large { header, body });
    }

    /// Queues a message whose body is shared with other queues: a reference, no copy. The header
    /// is a few bytes kept inline in the queue entry.
    pub(crate) fn push_shared(&mut self, body: &Bytes) {
        let header = Header::for_len(body.len());
        self.queued += header.as_bytes().len() + body.len();
        self.chunks.push_back(Chunk::Shared { header, body: body.clone() });
    }

    /// Sends `messages` (framed, in order) with one vectored write when nothing is queued
    /// before them, and queues what the writer does not take (everything when something is
    /// queued, or on any error: the next flush meets the error and reports it). Used for the
    /// handshake's few messages, which would otherwise each take a coalescing buffer and a
    /// chunk list for a turn (and leave them fragmented between the connections' entries):
    /// sent this way, a connection's challenge costs no allocation here. Returns whether
    /// anything was queued.
    pub(crate) fn write_now_or_queue(&mut self, w: &mut impl Write, messages: &mut [Vec<u8>]) -> bool {
        if messages.is_empty() {
            return false;
        }
        if self.is_empty() && messages.len() <= FEW_CHUNKS {
            let all: [&[u8]; FEW_CHUNKS] = std::array::from_fn(|i| messages.get(i).map_or(&[][..], Vec::as_slice));
            let bodies = &all[..messages.len()];
            let written = write_framed(w, bodies);
            if written == framed_len(bodies) {
                return false;
            }
            if written > 0 {
                self.queue_rest(bodies, written);
                return true;
            }
        }
        for m in messages.iter_mut() {
            self.push_owned(std::mem::take(m), &mut Spare::default());
        }
        true
    }

    /// Sends one message at once (one vectored write of its header and body) when nothing is
    /// queued, and queues what the writer does not take: the rest of its bytes, or all of it
    /// (a copy, as [`WriteQueue::push_copy`]) when the write took nothing or failed (the next
    /// flush meets the error and reports it). Returns the bytes written and whether anything
    /// was queued.
    pub(crate) fn write_now_or_copy(&mut self, w: &mut impl Write, body: &[u8], spare: &mut Spare) -> (usize, bool) {
        if self.is_empty() {
            let bodies = [body];
            let written = write_framed(w, &bodies);
            if written == framed_len(&bodies) {
                return (written, false);
            }
            if written > 0 {
                self.queue_rest(&bodies, written);
                return (written, true);
            }
        }
        self.push_copy(body, spare);
        (0, true)
    }

    /// Queues what is left of `bodies` (framed) after the first `written` bytes went out, as
    /// those bytes are, in one chunk.
    fn queue_rest(&mut self, bodies: &[&[u8]], mut written: usize) {
        let mut rest = Vec::with_capacity(framed_len(bodies).saturating_sub(written));
        for body in bodies {
            let header = Header::for_len(body.len());
            for part in [header.as_bytes(), body] {
                let skip = written.min(part.len());
                written -= skip;
                rest.extend_from_slice(&part[skip..]);
            }
        }
        self.queued += rest.len();
        self.chunks.push_back(Chunk::Small(rest));
    }

    /// Writes as much as the writer takes. `Ok(true)` when everything was written, `Ok(false)`
    /// when the writer would block with bytes left. Storage no longer needed goes to `spare`.
    pub(crate) fn flush(&mut self, w: &mut impl Write, spare: &mut Spare) -> io::Result<bool> {
        while self.queued > 0 {
            let result = if self.chunks.len() <= FEW_CHUNKS {
                let mut slices = [IoSlice::new(&[]); 2 * FEW_CHUNKS];
                let count = self.fill(&mut slices);
                w.write_vectored(&slices[..count])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.fill(&mut slices);
                w.write_vectored(&slices[..count])
            };
            let n = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(n, spare);
        }
        // Give memory back once idle: an idle connection holds no buffers (a short list goes to
        // the spare).
        let mut chunks = std::mem::take(&mut self.chunks);
        if spare.chunks.capacity() == 0 && chunks.capacity() <= SPARE_CHUNKS_MAX {
            chunks.clear();
            spare.chunks = chunks;
        }
        Ok(true)
    }

    /// Fills `slices` with the unwritten bytes, in order; returns how many it used.
    fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        let mut skip = self.written;
        for chunk in &self.chunks {
            let parts: [&[u8]; 2] = match chunk {
                Chunk::Small(b) => [b, &[]],
                Chunk::Large { header, body } => [header.as_bytes(), body],
                Chunk::Shared { header, body } => [header.as_bytes(), body],
            };
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[count] = IoSlice::new(&part[skip..]);
                skip = 0;
                count += 1;
                if count == slices.len() {
                    return count;
                }
            }
        }
        count
    }

    fn advance(&mut self, mut n: usize, spare: &mut Spare) {
        self.queued -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let left = first.len() - self.written;
            if n >= left {
                n -= left;
                self.written = 0;
                if let Some(Chunk::Small(mut b)) = self.chunks.pop_front()
                    && spare.small.capacity() == 0
                    && b.capacity() <= SPARE_SMALL_MAX
                {
                    b.clear();
                    spare.small = b;
                }
            } else {
                self.written += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;

    /// A writer that takes at most `step` bytes per call and blocks every other call.
    /// Flushes `q` into `w` until drained (at most `max_rounds` flushes that leave bytes) and
    /// returns the messages `w` received.
    /// A queue holding a framed `before` message or nothing, and a writer taking `step` bytes a
    /// call whose first call would-blocks when `blocks_first`.
    fn queue_and_writer(queued_before: bool, step: usize, blocks_first: bool) -> (WriteQueue, Spare, Trickle) {
        let mut q = WriteQueue::default();
        let mut spare = Spare::default();
        if queued_before {
            q.push_copy(b"before", &mut spare);
        }
        (q, spare, Trickle { out: Vec::new(), step, calls: usize::from(blocks_first) })
    }

    /// What arrives: `messages`, behind `before` when it was queued first.
    fn expected(queued_before: bool, messages: &[&[u8]]) -> Vec<Vec<u8>> {
        let before: &[&[u8]] = if queued_before { &[b"before"] } else { &[] };
        before.iter().chain(messages).map(|m| m.to_vec()).collect()
    }

    fn flush_and_decode(q: &mut WriteQueue, w: &mut Trickle, spare: &mut Spare, max_rounds: usize) -> Vec<Vec<u8>> {
        let mut rounds = 0;
        while !q.flush(w, spare).unwrap() {
            rounds += 1;
            assert!(rounds < max_rounds);
        }
        let mut d = FrameDecoder::default();
        d.feed(&w.out);
        let mut got = Vec::new();
        while let Some(m) = d.take_frame().unwrap() {
            got.push(m);
        }
        got
    }

    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                self.out.extend_from_slice(&b[..k]);
                left -= k;
                n += k;
                if left == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn mixed_small_and_large_messages_arrive_in_order_through_partial_writes() {
        let msgs: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; if i % 7 == 0 { 200_000 } else { i * 13 }]).collect();
        let mut q = WriteQueue::default();
        let mut spare = Spare::default();
        for (i, m) in msgs.iter().enumerate() {
            if i % 2 == 0 { q.push_owned(m.clone(), &mut spare) } else { q.push_copy(m, &mut spare) }
        }
        let mut w = Trickle { out: Vec::new(), step: 7_777, calls: 0 };
        let got = flush_and_decode(&mut q, &mut w, &mut spare, 100_000);
        assert!(q.is_empty());
        assert_eq!(got, msgs);
    }

    /// Handshake messages go straight out when the queue is empty; what the writer does not
    /// take (any split point, a would-block, an error) is queued, and everything arrives once,
    /// in order, behind what was queued before.
    #[test]
    fn messages_written_now_or_queued_arrive_whole_and_in_order_at_any_split() {
        let a = b"#CHALLENGE#{sha256}0123456789abcdef0123456789abcdef".to_vec();
        let b = b"{sha256}0123456789abcdef0123456789abcdef".to_vec();
        let whole = 2 * 4 + a.len() + b.len();
        for step in 1..=whole + 1 {
            for (blocks_first, queued_before) in [(false, false), (true, false), (false, true)] {
                let (mut q, mut spare, mut w) = queue_and_writer(queued_before, step, blocks_first);
                let mut batch = [a.clone(), b.clone()];
                let queued = q.write_now_or_queue(&mut w, &mut batch);
                assert_eq!(queued, step < whole || blocks_first || queued_before, "step {step}");
                assert_eq!(q.queued() + w.out.len(), whole + if queued_before { 10 } else { 0 });
                let got = flush_and_decode(&mut q, &mut w, &mut spare, 1000);
                let want = expected(queued_before, &[&a, &b]);
                assert_eq!(got, want, "step {step}, blocks first {blocks_first}, queued before {queued_before}");
            }
        }
    }

    /// A reply written at once: whole when the writer takes it all; otherwise (any split, a
    /// would-block, something queued before it) the rest is queued, and every message arrives
    /// once, in order. A large body (past the small-message buffers) too.
    #[test]
    fn a_reply_written_now_or_copied_arrives_whole_and_in_order_at_any_split() {
        for body in [b"reply to the request".to_vec(), vec![7u8; 70_000]] {
            let whole = 4 + body.len();
            for step in [1, 2, 3, 4, 5, 9, 100, whole - 1, whole, whole + 1] {
                for (blocks_first, queued_before) in [(false, false), (true, false), (false, true)] {
                    let (mut q, mut spare, mut w) = queue_and_writer(queued_before, step, blocks_first);
                    let (written, queued) = q.write_now_or_copy(&mut w, &body, &mut spare);
                    assert_eq!(written, w.out.len());
                    let direct = !blocks_first && !queued_before;
                    assert_eq!(written, if direct { step.min(whole) } else { 0 }, "step {step}");
                    assert_eq!(queued, !direct || step < whole, "step {step}");
                    assert_eq!(q.queued() + written, whole + if queued_before { 10 } else { 0 });
                    let got = flush_and_decode(&mut q, &mut w, &mut spare, 200_000);
                    let want = expected(queued_before, &[&body]);
                    assert_eq!(got, want, "step {step}, blocks first {blocks_first}, queued before {queued_before}");
                }
            }
        }
    }

    /// A writer that fails: nothing is lost, the reply is queued for the flush to meet the error.
    #[test]
    fn a_reply_the_writer_refuses_is_queued_for_the_flush() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = WriteQueue::default();
        let mut spare = Spare::default();
        assert_eq!(q.write_now_or_copy(&mut Broken, b"reply", &mut spare), (0, true));
        assert_eq!(q.queued(), 9);
        assert_eq!(q.flush(&mut Broken, &mut spare).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn shared_bodies_are_referenced_not_copied_and_arrive_in_order() {
        let body = Bytes::from(vec![9u8; 1024]);
        let mut queues: Vec<WriteQueue> = (0..3).map(|_| WriteQueue::default()).collect();
        let mut spare = Spare::default();
        for q in &mut queues {
            q.push_copy(b"before", &mut spare);
            q.push_shared(&body);
            q.push_copy(b"after", &mut spare);
        }
        // Every queue points at the same body.
        for q in &queues {
            assert!(q.chunks.iter().any(|c| matches!(c, Chunk::Shared { body: b, .. } if b.as_ptr() == body.as_ptr())));
            assert_eq!(q.queued(), 3 * 4 + 6 + 1024 + 5);
        }
        for q in &mut queues {
            let mut w = Trickle { out: Vec::new(), step: 100, calls: 0 };
            let got = flush_and_decode(q, &mut w, &mut spare, 10_000);
            assert_eq!(got, [b"before".to_vec(), vec![9u8; 1024], b"after".to_vec()]);
        }
    }

    #[test]
    fn small_messages_coalesce_into_one_write() {
        let mut q = WriteQueue::default();
        let mut spare = Spare::default();
        for _ in 0..100 {
            q.push_copy(&[1; 64], &mut spare);
        }
        let mut w = Trickle { out: Vec::new(), step: usize::MAX, calls: 0 };
        assert!(q.flush(&mut w, &mut spare).unwrap());
        assert_eq!(w.calls, 1);
        assert_eq!(w.out.len(), 100 * 68);
    }

    #[test]
    fn a_drained_queue_leaves_its_storage_to_the_next_and_holds_none() {
        // Every other call of a `Trickle` blocks: flush until drained.
        fn drain(q: &mut WriteQueue, w: &mut Trickle, spare: &mut Spare) {
            while !q.flush(w, spare).unwrap() {}
        }
        let mut spare = Spare::default();
        let mut w = Trickle { out: Vec::new(), step: usize::MAX, calls: 0 };
        let mut a = WriteQueue::default();
        a.push_copy(b"ping", &mut spare);
        let first = match a.chunks.front() {
            Some(Chunk::Small(b)) => b.as_ptr(),
            _ => unreachable!("one small chunk"),
        };
        drain(&mut a, &mut w, &mut spare);
        assert_eq!(a.chunks.capacity(), 0, "an idle queue holds nothing");
        assert!(spare.small.capacity() > 0 && spare.chunks.capacity() > 0);
        let mut b = WriteQueue::default();
        b.push_copy(b"pong", &mut spare);
        assert!(matches!(b.chunks.front(), Some(Chunk::Small(v)) if v.as_ptr() == first), "the buffer is reused");
        assert_eq!(spare.small.capacity(), 0);
        drain(&mut b, &mut w, &mut spare);
        // A large coalescing buffer is not kept.
        let mut c = WriteQueue::default();
        for _ in 0..200 {
            c.push_copy(&[7; 60], &mut spare);
        }
        let mut none = Spare::default();
        drain(&mut c, &mut w, &mut none);
        assert_eq!(none.small.capacity(), 0);
        let mut d = FrameDecoder::default();
        d.feed(&w.out);
        assert_eq!(d.take_frame().unwrap().as_deref(), Some(&b"ping"[..]));
        assert_eq!(d.take_frame().unwrap().as_deref(), Some(&b"pong"[..]));
    }
}
