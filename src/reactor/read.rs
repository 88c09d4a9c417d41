//! Reading: bytes from a connection's socket to its session and the handler, within the turn's
//! budget.
//!
//! A connection whose decoder is idle (or holds only a small tail) reads into the reactor's
//! shared scratch buffer, and whole messages are handed out in place; only an incomplete tail
//! is copied into the connection's own decoder. A connection streaming large messages reads into
//! its own decoder, whose read window ends at the message's end. While authenticating, the
//! decoder's read block is the handshake cap, so an unauthenticated connection holds a few
//! hundred bytes at most.

use std::io;
use std::time::Instant;

use crate::reactor::{ConnId, Context, Handler, Reactor};
use crate::wire::frame::{Frame, FrameDecoder, FrameError, SliceFrames};
use crate::wire::link::{Next, judge_frame};

impl<H: Handler> Reactor<H> {
    /// Reads a connection within its budget and delivers what arrived.
    /// `short_read_ends`: a read that returns less than asked means the socket is empty (true
    /// for an ordinary readiness edge; false when the peer has closed, or without an edge).
    pub(super) fn read_conn(&mut self, id: u64, short_read_ends: bool) {
        let mut slice = self.core.config.read_budget.max(1);
        if self.core.budget.held_pressure() {
            slice = slice.min(crate::budget::HELD_PRESSURE_READ);
        }
        let turn_budget = self.core.config.turn_read_budget;
        let mut read = 0usize;
        let turn_before = self.core.turn_read;
        let mut scratch = std::mem::take(&mut self.scratch);
        // The time of the last read, taken after its callbacks: the flush of their replies at
        // the end uses it too (one clock read for a read and its replies).
        let mut clock = None;
        while let Some(c) = self.core.conn(id) {
            if c.session.is_closing() || c.session.is_connecting() || c.reading_paused() {
                break;
            }
            let cid = c.id;
            // Messages that a pause left buffered go first.
            if c.decoder.has_frame() {
                let mut decoder = std::mem::take(&mut c.decoder);
                self.deliver(cid, &mut decoder);
                if let Some(c) = self.core.conn(id) {
                    decoder.set_read_block(c.session.read_block());
                    c.decoder = decoder;
                    c.session.on_read(Instant::now(), c.decoder.in_message());
                }
                continue;
            }
            // The budget: a slice per connection per turn, and a total per turn. The rest waits
            // on the carry-over list (once).
            if read >= slice || turn_before + read >= turn_budget {
                self.core.schedule_read(id, read == 0);
                break;
            }
            // The memory budget shared by all connections: under pressure only its leader and
            // connections holding little may grow their input; the others wait to be named.
            if !self.core.budget_allows_read(id, scratch.len()) {
                break;
            }
            let Some(c) = self.core.conn(id) else { break };
            // A small incomplete tail left by the last read moves to the front of the shared
            // buffer (re-framed) so reads stay large; a connection streaming large messages
            // keeps reading into its own (kept) buffer.
            let small_tail = scratch.len() / 16;
            let prefix = if c.decoder.capacity() >= scratch.len() {
                None
            } else if c.decoder.is_idle() {
                Some(0)
            } else {
                c.decoder.drain_pending_into(&mut scratch[..small_tail])
            };
            let own = prefix.is_none();
            let prefix = prefix.unwrap_or(0);
            // Whether a short read empties the source depends on the transport.
            let short_read_ends = short_read_ends && c.stream.short_read_drains();
            let (result, asked) = if own {
                let buf = c.decoder.read_buf();
                let asked = buf.len().min(slice);
                (c.stream.read_retry(&mut buf[..asked]), asked)
            } else {
                let end = scratch.len().min(prefix + slice);
                (c.stream.read_retry(&mut scratch[prefix..end]), end - prefix)
            };
            match result {
                Ok(0) => {
                    let mid = prefix > 0 || c.decoder.in_message();
                    c.session.handle_eof(mid);
                    self.core.pump(id);
                    break;
                }
                Ok(n) => {
                    read += n;
                    let completed = if own {
                        c.decoder.advance(n);
                        let mut decoder = std::mem::take(&mut c.decoder);
                        let completed = self.deliver(cid, &mut decoder);
                        if let Some(c) = self.core.conn(id) {
                            c.decoder = decoder;
                        }
                        completed
                    } else {
                        let mut frames = SliceFrames::new(&scratch[..prefix + n]);
                        let completed = self.deliver(cid, &mut frames);
                        if let Some(c) = self.core.conn(id)
                            && !c.session.is_closing()
                        {
                            c.decoder.set_read_block(c.session.read_block());
                            c.decoder.feed(frames.rest());
                        }
                        completed
                    };
                    let Some(c) = self.core.conn(id) else { break };
                    let wrote_now = std::mem::take(&mut c.wrote_now);
                    let left_waiting = wrote_now && !c.out.is_empty();
                    let holds_buffer = c.decoder.capacity() > 0;
                    // The time only when something looks at it (`Session::keeps_time`; a held
                    // buffer's release runs on the clock of the last traffic too): a request
                    // answered at once under the default limits reads no clock.
                    if c.session.keeps_time() || c.decoder.in_message() || left_waiting || holds_buffer {
                        // Read after the callbacks: the time they took is this side's, not the
                        // peer's, so it is not charged to the peer's deadlines.
                        let now = Instant::now();
                        clock = Some(now);
                        if completed > 0 {
                            c.session.on_message_boundary(now);
                        }
                        if wrote_now {
                            c.session.on_flush(now, true, !left_waiting);
                        }
                        c.session.on_read(now, c.decoder.in_message());
                        if holds_buffer {
                            c.session.buffer_held();
                        }
                    }
                    self.core.pump(id);
                    // A short read means the socket is empty now; data that arrives later
                    // raises a new edge, so no read that would only say WouldBlock.
                    if short_read_ends && n < asked {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing new: the tail goes back where it was.
                    c.decoder.feed(&scratch[..prefix]);
                    break;
                }
                Err(e) => {
                    c.decoder.feed(&scratch[..prefix]);
                    c.session.handle_io_error(e);
                    self.core.pump(id);
                    break;
                }
            }
        }
        // A message that completed leaves its large buffer idle: under the budget's pressure it
        // is given back now (the lead passes on), not a second later.
        let pressure = self.core.budget.under_pressure();
        if self.core.budget.enabled()
            && let Some(c) = self.core.conn(id)
        {
            if pressure && c.decoder.is_idle() && c.decoder.capacity() >= scratch.len() {
                c.decoder.shrink_if_idle();
            }
            self.core.budget_sync(id);
        }
        self.scratch = scratch;
        self.core.turn_read = turn_before + read;
        // Replies written in the callbacks leave now, in one write.
        if let Some(c) = self.core.conn(id)
            && c.dirty
        {
            self.core.flush_at(id, clock);
        }
    }

    /// Hands every complete frame of `source` to the session, and the messages among them to
    /// the handler. Stops at the end of the source, when the connection closes, or when its
    /// reading is paused (the rest stays in the source). Returns how many frames were taken.
    fn deliver(&mut self, cid: ConnId, source: &mut impl FrameSource) -> usize {
        let mut count = 0;
        // Handshake replies not yet pumped: a handshake frame with another complete one behind
        // it (an early client's answer and challenge, read at once) leaves its reply in the
        // session, so that both replies (#WELCOME# and the answer) leave in one write.
        let mut unpumped = false;
        loop {
            let Some(c) = self.core.conn(cid.0) else {
                return count;
            };
            if c.reading_paused() || c.session.is_closing() {
                break;
            }
            let limit = c.session.frame_limit().min(c.opts.max_message_size);
            let last = source.is_last_complete();
            // The glue every face shares: a frame or a refused length, judged by the session.
            match judge_frame(&mut c.session, source.next(limit)) {
                Next::Empty => break,
                Next::Message(frame) => {
                    count += 1;
                    // The last message of a read: the handler's reply to it may leave at once.
                    self.core.reply_now = last.then_some(cid.0);
                    let (h, mut ctx) = (&mut self.handler, Context { core: &mut self.core });
                    match frame {
                        Frame::Borrowed(message) => h.on_message(&mut ctx, cid, message),
                        // The connection's own buffer, moved out: a large message, not copied.
                        Frame::Owned(message) => h.on_message_owned(&mut ctx, cid, message),
                    }
                    self.core.reply_now = None;
                }
                Next::Consumed => {
                    count += 1;
                    // Still in the handshake with a frame behind this one: that frame is the
                    // session's too (or closes it), and its pump sends both replies.
                    unpumped = !last && c.session.is_handshaking();
                    if !unpumped && self.core.pump(cid.0) {
                        // Open: on_open runs before the messages that follow in this read.
                        let Some(c) = self.core.conn(cid.0) else { return count };
                        let peer = c.peer.clone();
                        let (h, mut ctx) = self.ctx();
                        h.on_open(&mut ctx, cid, &peer);
                    }
                }
                Next::Closed => {
                    unpumped = true;
                    break;
                }
            }
        }
        if unpumped {
            self.core.pump(cid.0);
        }
        count
    }
}

/// Where frames come from during delivery: the shared read buffer (always borrowed) or a
/// connection's own decoder (a large message that fills it is moved out, owned).
trait FrameSource {
    fn next(&mut self, limit: usize) -> Result<Option<Frame<'_>>, FrameError>;

    /// Whether no complete frame follows the next one (asked before [`FrameSource::next`]):
    /// then a reply to it may be written at once, since no reply to a later one could join it.
    fn is_last_complete(&self) -> bool;
}

impl FrameSource for FrameDecoder {
    fn next(&mut self, limit: usize) -> Result<Option<Frame<'_>>, FrameError> {
        self.next_frame_or_owned(limit)
    }

    /// A connection's own buffer (a large message, or messages a pause left) is not the
    /// request/reply case: its replies are queued.
    fn is_last_complete(&self) -> bool {
        false
    }
}

impl FrameSource for SliceFrames<'_> {
    fn next(&mut self, limit: usize) -> Result<Option<Frame<'_>>, FrameError> {
        Ok(self.next_frame_limited(limit)?.map(Frame::Borrowed))
    }

    fn is_last_complete(&self) -> bool {
        !self.complete_after_next()
    }
}
