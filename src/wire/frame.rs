//! Message framing: the length prefix Python's `Connection.send_bytes` writes, and an incremental
//! decoder for it.
//!
//! A message is a header then the body. The header is the body length as a big-endian *signed*
//! 32-bit integer; a body longer than `0x7fffffff` bytes gets the header `-1` followed by the length
//! as a big-endian unsigned 64-bit integer (Python 3.8+). Other negative lengths are a protocol
//! error here (Python silently reads them as an empty message).
//!
//! [`FrameDecoder`] is sans-IO: the caller reads from whatever transport it has into
//! [`FrameDecoder::read_buf`], reports how much arrived with [`FrameDecoder::advance`], and pulls
//! whole messages out with [`FrameDecoder::next_frame`] (a borrowed, zero-copy view) or
//! [`FrameDecoder::take_frame`] (an owned `Vec`, without copying a large body). Two bounds hold
//! whatever the peer declares:
//!
//! * a declared length above the limit is refused as soon as the header is complete, before any of
//!   the body is read;
//! * the buffer for a partial message grows with the bytes that actually arrived (at most doubling
//!   what is held, plus one read block), never with the declared length, so a peer that announces
//!   2^63 bytes and sends ten holds about one read block of our memory.

/// Largest body that fits the short (4-byte) header.
pub const SHORT_HEADER_MAX: usize = 0x7fff_ffff;

/// The longest header: `-1` plus an unsigned 64-bit length.
pub const MAX_HEADER_LEN: usize = 12;

/// Default limit on the size of one message: 128 MiB. Python has no limit; a bounded default
/// protects a server from a peer that declares huge lengths. Raise it per connection where
/// needed.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// The size of one read block: the decoder keeps at least this much free space for a read.
pub const DEFAULT_READ_BLOCK: usize = 64 * 1024;

/// The peer broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A negative length other than the `-1` escape.
    #[error("bad message length: negative length {0}")]
    NegativeLength(i32),
    /// A declared length above the limit in force.
    #[error("bad message length: {len} bytes declared, the limit is {limit}")]
    TooLarge {
        /// The length the peer declared.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
}

/// An encoded header: 4 or 12 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Header {
    /// The header for a body of `body_len` bytes.
    #[inline]
    pub fn for_len(body_len: usize) -> Header {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        if body_len <= SHORT_HEADER_MAX {
            bytes[..4].copy_from_slice(&(body_len as u32).to_be_bytes());
            Header { bytes, len: 4 }
        } else {
            bytes[..4].copy_from_slice(&(-1i32).to_be_bytes());
            bytes[4..].copy_from_slice(&(body_len as u64).to_be_bytes());
            Header { bytes, len: 12 }
        }
    }

    /// The header's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Appends one framed message (the 4-byte big-endian length, or `-1` and 8 bytes for a body
/// over 2 GiB, then the body) to `out`: to batch many small messages into one
/// [`Connection::send_frames`](crate::Connection::send_frames).
///
/// ```
/// let mut framed = Vec::new();
/// mpconn::encode_frame(b"one", &mut framed);
/// mpconn::encode_frame(b"two", &mut framed);
/// assert_eq!(framed, b"\0\0\0\x03one\0\0\0\x03two");
/// ```
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(Header::for_len(body.len()).as_bytes());
    out.extend_from_slice(body);
}

/// Parses a header at the start of `bytes`.
///
/// Returns `Ok(None)` when more bytes are needed, otherwise the header length and the declared
/// body length. The limit is not applied here.
pub fn parse_header(bytes: &[u8]) -> Result<Option<(usize, u64)>, FrameError> {
    let Some(short) = bytes.first_chunk::<4>() else {
        return Ok(None);
    };
    let n = i32::from_be_bytes(*short);
    if n >= 0 {
        return Ok(Some((4, n as u64)));
    }
    if n != -1 {
        return Err(FrameError::NegativeLength(n));
    }
    match bytes.get(4..MAX_HEADER_LEN) {
        Some(long) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(long);
            Ok(Some((MAX_HEADER_LEN, u64::from_be_bytes(b))))
        }
        None => Ok(None),
    }
}

/// Incremental, bounded decoder of length-prefixed messages. See the module docs.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Storage; `buf[start..end]` holds received bytes not yet handed out. Bytes past `end` are
    /// initialised (zeroed once) free space.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Body length of the message whose header has been consumed but whose body is incomplete.
    body: Option<usize>,
    max_message_size: usize,
    read_block: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that refuses messages longer than `max_message_size`.
    pub fn new(max_message_size: usize) -> FrameDecoder {
        FrameDecoder::with_read_block(max_message_size, DEFAULT_READ_BLOCK)
    }

    /// Like [`FrameDecoder::new`] with the size of one read block (at least 16 bytes).
    pub fn with_read_block(max_message_size: usize, read_block: usize) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), start: 0, end: 0, body: None, max_message_size, read_block: read_block.max(16) }
    }

    /// Changes the size of one read block (at least 16 bytes): small while a connection
    /// authenticates, so a handshake in progress holds a few hundred bytes, not a read block.
    pub fn set_read_block(&mut self, read_block: usize) {
        self.read_block = read_block.max(16);
    }

    /// The limit on one message.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Changes the limit on one message; applies from the next header.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message_size = max;
    }

    /// Bytes received and not yet handed out as messages (including a consumed header's body part).
    pub fn buffered_len(&self) -> usize {
        self.end - self.start
    }

    /// True when a whole message is already buffered, so a read would not block.
    pub fn has_frame(&self) -> bool {
        let avail = &self.buf[self.start..self.end];
        match self.body {
            Some(len) => avail.len() >= len,
            None => match parse_header(avail) {
                Ok(Some((h, len))) => (avail.len() - h) as u64 >= len,
                // A framing error is "ready" too: the next read reports it without blocking.
                Err(_) => true,
                Ok(None) => false,
            },
        }
    }

    /// True when nothing is buffered and no message has begun.
    pub fn is_idle(&self) -> bool {
        self.start == self.end && self.body.is_none()
    }

    /// True when a message has begun (header bytes or a partial body) but is not complete.
    pub fn in_message(&self) -> bool {
        self.body.is_some() || self.start != self.end
    }

    /// Memory the decoder holds (its buffer's capacity), for accounting.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Releases the buffer if nothing is held in it (for idle connections).
    pub fn shrink_if_idle(&mut self) {
        if self.start == self.end && self.body.is_none() {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// How many bytes the next [`FrameDecoder::read_buf`] would add to the buffer (0 when the
    /// space it needs is already held): what a memory budget asks about before a read.
    pub fn read_growth(&self) -> usize {
        let filled = self.end - self.start;
        let end = if filled == 0 { 0 } else { self.end };
        let missing = self.body.map(|len| len.saturating_sub(filled));
        let want = match missing {
            Some(missing) if missing > self.read_block => missing.min(filled.max(self.read_block)),
            _ => self.read_block,
        };
        if self.buf.len() - end >= want {
            return 0;
        }
        // After compaction the data starts at 0 and ends at `filled`.
        (filled + want).saturating_sub(self.buf.len())
    }

    /// Free space to read into. Reports what was written with [`FrameDecoder::advance`].
    ///
    /// While a large message is incomplete the slice ends where that message ends, so the body
    /// can later be handed out without a copy.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let filled = self.end - self.start;
        if filled == 0 {
            self.start = 0;
            self.end = 0;
        }
        // How much of the current message is still missing, when known.
        let missing = self.body.map(|len| len.saturating_sub(filled));
        let want = match missing {
            // Large message: grow with what arrived (at most doubling), never with what was declared.
            Some(missing) if missing > self.read_block => missing.min(filled.max(self.read_block)),
            _ => self.read_block,
        };
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = filled;
            }
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        let large = self.body.is_some_and(|len| len > self.read_block);
        let limit = match missing {
            // Allocation follows the growth rule above; memory already held is offered whole,
            // up to the end of the message. The tail of a large message too is read up to its
            // end only: the buffer then holds exactly the message and is handed over whole
            // (`Frame::Owned`) instead of copied, whatever the peer sent behind it.
            Some(missing) if missing > 0 && (missing > self.read_block || large) => {
                (self.end + missing).min(self.buf.len())
            }
            _ => self.buf.len(),
        };
        &mut self.buf[self.end..limit]
    }

    /// Records that `n` bytes were written at the front of the last [`FrameDecoder::read_buf`].
    ///
    /// # Panics
    /// If `n` is larger than that slice (a caller bug, never peer input).
    pub fn advance(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "advance past the read buffer");
        self.end += n;
    }

    /// Copies `data` into the decoder (for callers that already hold the bytes, and tests).
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let space = self.read_buf();
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            self.advance(n);
            data = &data[n..];
        }
    }

    /// Moves the bytes of an incomplete message to the front of `out`, re-framed (its header
    /// first, if the decoder had consumed it), and empties the decoder, keeping its allocation.
    /// Returns how many bytes were written, or `None` (and changes nothing) if they do not fit.
    /// The reactor uses this to keep reading into its large shared buffer.
    pub fn drain_pending_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let header = self.body.map(Header::for_len);
        let header_len = header.map_or(0, |h| h.as_bytes().len());
        let buffered = self.end - self.start;
        let total = header_len + buffered;
        if total > out.len() {
            return None;
        }
        if let Some(h) = header {
            out[..header_len].copy_from_slice(h.as_bytes());
        }
        out[header_len..total].copy_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
        self.body = None;
        Some(total)
    }

    /// The next complete message as a view into the buffer, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        self.next_frame_limited(usize::MAX)
    }

    /// Like [`FrameDecoder::next_frame`], refusing a message longer than `limit` (or the decoder's
    /// own limit, whichever is lower). The refused message's header is consumed.
    pub fn next_frame_limited(&mut self, limit: usize) -> Result<Option<&[u8]>, FrameError> {
        match self.complete_body(limit)? {
            Some(len) => {
                let at = self.start;
                self.start += len;
                self.body = None;
                Ok(Some(&self.buf[at..at + len]))
            }
            None => Ok(None),
        }
    }

    /// The next complete message as an owned buffer. A large message that fills the buffer is
    /// handed over without copying.
    pub fn take_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.take_frame_limited(usize::MAX)
    }

    /// Like [`FrameDecoder::take_frame`] with a limit, as [`FrameDecoder::next_frame_limited`].
    pub fn take_frame_limited(&mut self, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.complete_body(limit)? else {
            return Ok(None);
        };
        self.body = None;
        if self.whole_buffer(len) {
            let mut whole = std::mem::take(&mut self.buf);
            whole.truncate(len);
            self.end = 0;
            return Ok(Some(whole));
        }
        let at = self.start;
        self.start += len;
        Ok(Some(self.buf[at..at + len].to_vec()))
    }

    /// The next complete message, owned when it can be handed over without a copy (a large
    /// message alone in the buffer, which [`FrameDecoder::take_frame`] would move out), borrowed
    /// otherwise. The reactor delivers a large message this way: its own buffer goes to the
    /// handler, and small messages stay zero-copy views.
    pub(crate) fn next_frame_or_owned(&mut self, limit: usize) -> Result<Option<Frame<'_>>, FrameError> {
        let Some(len) = self.complete_body(limit)? else {
            return Ok(None);
        };
        if self.whole_buffer(len) {
            return Ok(self.take_frame_limited(limit)?.map(Frame::Owned));
        }
        Ok(self.next_frame_limited(limit)?.map(Frame::Borrowed))
    }

    /// True when the complete message of `len` bytes fills the buffer from its start, so taking
    /// it moves the buffer out.
    fn whole_buffer(&self, len: usize) -> bool {
        self.start == 0 && self.end == len && len > self.read_block
    }

    /// Consumes the next header if needed and returns the body length when the whole body is
    /// buffered; refuses a declared length above `limit` (or the decoder's limit) as soon as the
    /// header is complete. The message itself is then taken with `next_frame` or `take_frame`.
    pub fn ready_len(&mut self, limit: usize) -> Result<Option<usize>, FrameError> {
        self.complete_body(limit)
    }

    fn complete_body(&mut self, limit: usize) -> Result<Option<usize>, FrameError> {
        let len = if let Some(len) = self.body {
            len
        } else {
            let Some((header_len, len)) = parse_header(&self.buf[self.start..self.end])? else {
                return Ok(None);
            };
            let limit = limit.min(self.max_message_size);
            if len > limit as u64 {
                self.start += header_len;
                return Err(FrameError::TooLarge { len, limit });
            }
            self.start += header_len;
            let len = len as usize;
            self.body = Some(len);
            len
        };
        Ok((self.end - self.start >= len).then_some(len))
    }
}

/// A complete message: a view into the decoder's buffer, or the buffer itself, moved out.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Frame<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Frame::Borrowed(b) => b,
            Frame::Owned(v) => v,
        }
    }
}

/// Whole messages found in one borrowed slice, without copying: the reactor parses a fresh read
/// this way and keeps only an incomplete tail (see [`SliceFrames::rest`]).
#[derive(Debug)]
pub struct SliceFrames<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SliceFrames<'a> {
    /// Frames in `buf`.
    pub fn new(buf: &'a [u8]) -> SliceFrames<'a> {
        SliceFrames { buf, pos: 0 }
    }

    /// The next complete message, refusing a declared length above `limit`. `Ok(None)` when the
    /// rest is an incomplete message (or nothing).
    pub fn next_frame_limited(&mut self, limit: usize) -> Result<Option<&'a [u8]>, FrameError> {
        let avail = &self.buf[self.pos..];
        let Some((header_len, len)) = parse_header(avail)? else {
            return Ok(None);
        };
        if len > limit as u64 {
            return Err(FrameError::TooLarge { len, limit });
        }
        let end = header_len as u64 + len;
        if (avail.len() as u64) < end {
            return Ok(None);
        }
        let body = &avail[header_len..end as usize];
        self.pos += end as usize;
        Ok(Some(body))
    }

    /// Whether a second complete message follows the next one (lengths are not checked
    /// against any limit here).
    pub fn complete_after_next(&self) -> bool {
        let whole = |at: usize| -> Option<usize> {
            let avail = self.buf.get(at..)?;
            let (header_len, len) = parse_header(avail).ok()??;
            let end = (header_len as u64).checked_add(len)?;
            (avail.len() as u64 >= end).then(|| at + end as usize)
        };
        whole(self.pos).and_then(whole).is_some()
    }

    /// The bytes after the last complete message.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            encode_frame(b, &mut out);
        }
        out
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some(m) = d.next_frame().unwrap() {
            got.push(m.to_vec());
        }
        got
    }

    /// Whether a second complete message follows the next: exact at every cut of a read,
    /// including the 12-byte header of a long message.
    #[test]
    fn complete_after_next_is_exact_at_every_cut() {
        let mut long = Vec::new();
        long.extend_from_slice(&(-1i32).to_be_bytes());
        long.extend_from_slice(&3u64.to_be_bytes());
        long.extend_from_slice(b"xyz");
        let mut bytes = frames(&[b"one".to_vec(), Vec::new()]);
        bytes.extend_from_slice(&long);
        bytes.extend_from_slice(&frames(&[b"four".to_vec()]));
        let ends = [7, 11, 26, 34];
        for cut in 0..=bytes.len() {
            let mut f = SliceFrames::new(&bytes[..cut]);
            loop {
                let start = f.pos;
                let follows = f.complete_after_next();
                let complete: Vec<usize> = ends.iter().copied().filter(|&e| e > start && e <= cut).collect();
                assert_eq!(follows, complete.len() >= 2, "cut {cut}, at {start}");
                if f.next_frame_limited(usize::MAX).unwrap().is_none() {
                    break;
                }
            }
        }
    }

    /// `read_growth` predicts exactly how much `read_buf` grows the buffer, through a large
    /// message arriving in uneven reads, its completion, and small messages after it.
    #[test]
    fn read_growth_predicts_read_buf() {
        let mut d = FrameDecoder::new(1 << 30);
        let mut wire = frames(&[vec![7u8; 3 << 20], vec![1u8; 10], vec![2u8; 200_000]]);
        let mut step = 1usize;
        while !wire.is_empty() {
            let predicted = d.read_growth();
            let before = d.buf.len();
            let space = d.read_buf();
            let n = space.len().min(wire.len()).min(step);
            space[..n].copy_from_slice(&wire[..n]);
            let after = d.buf.len();
            assert_eq!(after - before, predicted, "at {} bytes left", wire.len());
            d.advance(n);
            wire.drain(..n);
            step = step * 3 + 1;
            while d.next_frame().unwrap().is_some() {}
        }
    }

    #[test]
    fn short_header_is_big_endian_signed() {
        assert_eq!(Header::for_len(0).as_bytes(), [0, 0, 0, 0]);
        assert_eq!(Header::for_len(0x1f).as_bytes(), [0, 0, 0, 0x1f]);
        assert_eq!(Header::for_len(SHORT_HEADER_MAX).as_bytes(), [0x7f, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn long_header_is_minus_one_then_u64() {
        let h = Header::for_len(SHORT_HEADER_MAX + 1);
        assert_eq!(h.as_bytes(), [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(parse_header(h.as_bytes()).unwrap(), Some((12, 0x8000_0000)));
    }

    #[test]
    fn truncated_header_waits_for_more_bytes() {
        let mut d = FrameDecoder::default();
        d.feed(&[0, 0]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&[0, 3, b'a']);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(b"bc");
        assert_eq!(d.next_frame().unwrap(), Some(&b"abc"[..]));
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(!d.in_message());
    }

    #[test]
    fn truncated_long_header_waits_for_more_bytes() {
        assert_eq!(parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0]).unwrap(), None);
    }

    #[test]
    fn negative_lengths_other_than_minus_one_are_refused() {
        let mut d = FrameDecoder::default();
        d.feed(&(-2i32).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::NegativeLength(-2)));
        assert_eq!(parse_header(&i32::MIN.to_be_bytes()), Err(FrameError::NegativeLength(i32::MIN)));
    }

    #[test]
    fn declared_length_above_limit_is_refused_before_the_body() {
        let mut d = FrameDecoder::new(10);
        d.feed(&[0, 0, 0, 11]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 11, limit: 10 }));
        let mut d = FrameDecoder::new(1 << 20);
        d.feed(&[0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 1 << 63, limit: 1 << 20 }));
    }

    #[test]
    fn per_call_limit_applies_below_the_decoder_limit() {
        let mut d = FrameDecoder::default();
        d.feed(&frames(&[vec![7; 300]]));
        assert_eq!(d.next_frame_limited(256), Err(FrameError::TooLarge { len: 300, limit: 256 }));
    }

    #[test]
    fn memory_grows_with_bytes_received_not_declared_length() {
        let mut d = FrameDecoder::new(usize::MAX);
        // Declare 2^62 bytes, send 100.
        d.feed(&[0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        d.feed(&[1; 100]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(d.capacity() <= 2 * DEFAULT_READ_BLOCK, "capacity {}", d.capacity());
        // Send 1 MiB more: the buffer stays within about twice what arrived.
        for _ in 0..16 {
            d.feed(&[2; 65536]);
        }
        let received = 100 + 16 * 65536;
        assert!(d.capacity() <= 2 * received + DEFAULT_READ_BLOCK, "capacity {}", d.capacity());
    }

    #[test]
    fn large_message_is_taken_without_a_copy_into_a_second_buffer() {
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut d = FrameDecoder::default();
        let wire = frames(std::slice::from_ref(&body));
        // Arrive in uneven reads, as from a socket.
        for chunk in wire.chunks(70_001) {
            d.feed(chunk);
        }
        let got = d.take_frame().unwrap().unwrap();
        assert_eq!(got, body);
        assert_eq!(d.buffered_len(), 0);
    }

    #[test]
    fn read_buf_stops_at_the_end_of_a_large_message() {
        let mut d = FrameDecoder::with_read_block(usize::MAX, 16);
        d.feed(&[0, 0, 1, 0]); // 256-byte body
        let space = d.read_buf().len();
        assert!(space <= 256, "offered {space}");
    }

    #[test]
    fn has_frame_sees_buffered_messages_and_errors() {
        let mut d = FrameDecoder::default();
        assert!(!d.has_frame());
        d.feed(&frames(&[b"x".to_vec(), b"y".to_vec()]));
        assert!(d.has_frame());
        d.next_frame().unwrap();
        assert!(d.has_frame());
        d.next_frame().unwrap();
        assert!(!d.has_frame());
        d.feed(&(-5i32).to_be_bytes());
        assert!(d.has_frame());
    }

    #[test]
    fn empty_messages_decode() {
        let mut d = FrameDecoder::default();
        d.feed(&frames(&[vec![], b"a".to_vec(), vec![]]));
        assert_eq!(drain(&mut d), vec![vec![], b"a".to_vec(), vec![]]);
    }

    proptest! {
        #[test]
        fn any_split_of_any_frame_sequence_decodes_to_the_same_messages(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in proptest::collection::vec(1usize..400, 0..50),
            block in 16usize..200,
            take in any::<bool>(),
        ) {
            let wire = frames(&bodies);
            let mut d = FrameDecoder::with_read_block(1 << 20, block);
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                // Read as a socket would: at most what read_buf offers.
                let mut chunk = &rest[..n];
                while !chunk.is_empty() {
                    let space = d.read_buf();
                    let k = space.len().min(chunk.len());
                    space[..k].copy_from_slice(&chunk[..k]);
                    d.advance(k);
                    chunk = &chunk[k..];
                    loop {
                        let m = if take { d.take_frame().unwrap() } else { d.next_frame().unwrap().map(<[u8]>::to_vec) };
                        match m { Some(m) => got.push(m), None => break }
                    }
                }
                rest = &rest[n..];
            }
            prop_assert_eq!(got, bodies);
            prop_assert!(!d.in_message());
        }

        #[test]
        fn slice_frames_then_decoder_for_the_tail_decode_the_same_messages(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cut in 0usize..5000,
        ) {
            let wire = frames(&bodies);
            let cut = cut.min(wire.len());
            // First read: parsed in place; its tail and the rest go through a decoder.
            let mut s = SliceFrames::new(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(m) = s.next_frame_limited(usize::MAX).unwrap() {
                got.push(m.to_vec());
            }
            let mut d = FrameDecoder::default();
            d.feed(s.rest());
            d.feed(&wire[cut..]);
            got.extend(drain(&mut d));
            prop_assert_eq!(got, bodies);
        }

        #[test]
        fn draining_a_tail_and_reparsing_it_loses_nothing(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            cuts in proptest::collection::vec(1usize..700, 1..30),
        ) {
            // As the reactor does: each read lands after the drained tail in a shared buffer.
            let wire = frames(&bodies);
            let mut d = FrameDecoder::default();
            let mut scratch = vec![0u8; 4096];
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let n = cuts.next().unwrap().min(rest.len());
                let k = d.drain_pending_into(&mut scratch[..2048]).unwrap();
                scratch[k..k + n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                let mut s = SliceFrames::new(&scratch[..k + n]);
                // Consume a header first in the decoder sometimes, as a partial read would.
                while let Some(m) = s.next_frame_limited(usize::MAX).unwrap() {
                    got.push(m.to_vec());
                }
                d.feed(s.rest());
                let _ = d.ready_len(usize::MAX).unwrap();
            }
            prop_assert_eq!(got, bodies);
        }

        #[test]
        fn header_round_trips(len in 0usize..=(u64::MAX as usize)) {
            let h = Header::for_len(len);
            prop_assert_eq!(parse_header(h.as_bytes()).unwrap(), Some((h.as_bytes().len(), len as u64)));
        }
    }
}
