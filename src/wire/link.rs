//! The glue between a byte stream and a [`Session`], written once for every face: a
//! [`FrameDecoder`] and the session that judges what it yields.
//!
//! A face reads into [`Link::read_buf`] and reports with [`Link::filled`] (0 bytes: end of file)
//! or [`Link::io_error`]; [`Link::poll_ready`] says whether a whole message is buffered, a read
//! is needed, or the connection closed; [`Link::take`] / [`Link::next`] hand the next frame to
//! the session and say what it is ([`Next`]). End of file reaches the session only once the
//! buffered messages are taken, so a receive dropped in between loses nothing. The reactor, which
//! reads into a shared buffer, uses [`judge_frame`] on its own frame source: one mapping of
//! "a frame, a refused length" to a delivery.
//!
//! Faces that read only when their caller asks (the blocking and async connections) count the
//! time between a delivered message and the next receive as their own pause, as the reactor's
//! `pause_reading`: the idle and partial-message clocks restart when reading resumes, but a
//! receive dropped without a message (a `timeout` around it) does not restart them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::wire::frame::{FrameDecoder, FrameError};
use crate::wire::session::{CloseReason, Delivery, Event, Session};

/// What the next buffered frame was.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// An application message.
    Message(T),
    /// A handshake message the session took (look at its transmit queue and phase).
    Consumed,
    /// No whole frame is buffered.
    Empty,
    /// The connection closed (a refused length, a message refused by the session, or earlier);
    /// [`Link::close_reason`] says why, once.
    Closed,
}

/// Whether a face can take a message, must read, or is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A whole message (within the limit asked for) is buffered.
    Frame,
    /// Nothing whole is buffered: read (after looking at the session's deadline).
    Read,
    /// The session is closed; [`Link::close_reason`] says why, once.
    Closed,
}

/// Hands one frame (or the decoder's refusal) to the session: the one place a face turns its
/// frame source's output into a delivery.
#[inline]
pub fn judge_frame<T: AsRef<[u8]>>(session: &mut Session, frame: Result<Option<T>, FrameError>) -> Next<T> {
    match frame {
        Ok(Some(body)) => match session.handle_frame(body.as_ref()) {
            Delivery::Message => Next::Message(body),
            Delivery::Consumed => Next::Consumed,
            Delivery::Closed => Next::Closed,
        },
        Ok(None) => Next::Empty,
        Err(e) => {
            session.handle_frame_error(e);
            Next::Closed
        }
    }
}

/// A connection's decoder and session: bytes, end of file and errors in, judged frames out.
#[derive(Debug)]
pub struct Link {
    decoder: FrameDecoder,
    session: Session,
    /// The peer closed its side; told to the session once no whole message is buffered.
    eof: bool,
    /// A message was delivered and the caller has not asked for the next one yet.
    paused: bool,
    /// The caller's waits for input through shared references during this pause (the blocking
    /// `wait`, from any number of threads): the time they covered is the peer's, which the
    /// clocks count when reading resumes. Locked only by such waits; a resume, which has the
    /// link to itself, reads it without locking.
    waits: Mutex<Waits>,
}

/// The waits of one pause ([`Link::begin_wait`]): the time covered by at least one, counted
/// once however many overlap (several threads waiting on one connection, or one connection
/// listed twice).
#[derive(Debug, Default)]
struct Waits {
    /// The time covered by the waits that ended.
    covered: Duration,
    /// Waits in progress.
    waiting: u32,
    /// When the first wait in progress began.
    since: Option<Instant>,
}

impl Waits {
    /// Where the pause ends for a deadline looked at during a wait that began at `began`:
    /// the waits' time taken back from the start of those in progress.
    fn pause_end(&self, began: Instant) -> Instant {
        let start = self.since.map_or(began, |s| s.min(began));
        start.checked_sub(self.covered).unwrap_or(start)
    }
}

impl Link {
    /// A link for `session`, refusing messages above `max_message_size`; its read block is the
    /// session's ([`Session::read_block`]).
    pub fn new(session: Session, max_message_size: usize) -> Link {
        let decoder = FrameDecoder::with_read_block(max_message_size, session.read_block());
        Link { decoder, session, eof: false, paused: false, waits: Mutex::new(Waits::default()) }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, to tell it what the face did (a flush, a close, the time).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The decoder (for its limits and what it buffers).
    pub fn decoder(&self) -> &FrameDecoder {
        &self.decoder
    }

    /// The decoder, to change its limits.
    pub fn decoder_mut(&mut self) -> &mut FrameDecoder {
        &mut self.decoder
    }

    /// Where the next read goes; its size follows the session's read block (64 bytes until
    /// the connection is open).
    #[inline]
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.decoder.set_read_block(self.session.read_block());
        self.decoder.read_buf()
    }

    /// `n` bytes were read into [`Link::read_buf`] just now; 0 is end of file (remembered, and
    /// told to the session once the buffered messages are taken). Reads the clock only when the
    /// session keeps time or a message is left incomplete ([`Session::keeps_time`]).
    #[inline]
    pub fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
            return;
        }
        self.decoder.advance(n);
        let complete = self.decoder.has_frame();
        // A message is incomplete only when nothing whole is buffered ahead of it; a tail behind
        // whole messages is looked at when they are taken and reading resumes.
        let incomplete = self.decoder.in_message() && !complete;
        if !incomplete && !self.session.keeps_time() {
            return; // on_read(now, false) would record nothing anyone reads
        }
        let now = Instant::now();
        if complete {
            self.session.on_message_boundary(now);
        }
        self.session.on_read(now, incomplete);
    }

    /// All queued output left: [`Session::on_flush`]`(now, true, true)`, reading the clock only
    /// when the session keeps time ([`Session::keeps_time`]; otherwise that report changes
    /// nothing anyone reads).
    #[inline]
    pub fn wrote_all(&mut self) {
        if self.session.keeps_time() {
            self.session.on_flush(Instant::now(), true, true);
        }
    }

    /// Whether waiting for input needs the time: the session keeps time, or a message is
    /// incomplete ([`Session::keeps_time`]).
    #[inline]
    pub fn keeps_time(&self) -> bool {
        self.session.keeps_time() || self.decoder.in_message()
    }

    /// A read or write failed: the session decides what it means.
    pub fn io_error(&mut self, e: std::io::Error) {
        self.session.handle_io_error(e);
    }

    /// True once the peer's end of file was read (not yet necessarily told to the session).
    pub fn eof_seen(&self) -> bool {
        self.eof
    }

    /// Whether the handshake's replies should wait for the next frame: the session is still
    /// handshaking and another frame is already buffered (an early client's challenge behind
    /// its answer), so the replies to both (#WELCOME# and the answer) leave in one write. A
    /// face that holds them writes them even if that frame then fails the handshake.
    pub fn handshake_frame_buffered(&self) -> bool {
        self.session.is_handshaking() && self.decoder.has_frame()
    }

    /// Whether a whole message within `limit` is buffered, a read is needed, or the session
    /// closed (a refused length, end of file with nothing whole buffered, a deadline, an error).
    #[inline]
    pub fn poll_ready(&mut self, limit: usize) -> Ready {
        if self.session.is_closing() {
            return Ready::Closed;
        }
        match self.decoder.ready_len(limit.min(self.session.frame_limit())) {
            Ok(Some(_)) => Ready::Frame,
            Ok(None) if self.eof => {
                self.session.handle_eof(self.decoder.in_message());
                Ready::Closed
            }
            Ok(None) => Ready::Read,
            Err(e) => {
                self.session.handle_frame_error(e);
                Ready::Closed
            }
        }
    }

    /// The caller is about to wait for input: if it had paused after a delivery, the idle and
    /// partial-message clocks restart now (the time in between was the caller's, not the
    /// peer's). Cheap when not paused, or when nothing keeps time (no clock read).
    #[inline]
    pub fn resume(&mut self) {
        if self.paused {
            if self.keeps_time() {
                self.resume_at(Instant::now());
            } else {
                self.resume_untimed();
            }
        }
    }

    /// [`Link::resume`] with the time, for a caller that read the clock anyway (converted for
    /// the session only when it keeps time).
    #[inline(always)]
    pub fn resume_at(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        if !self.keeps_time() {
            self.resume_untimed();
            return;
        }
        self.paused = false;
        let at = match self.waits_mut().covered.is_zero() {
            true => now,
            false => self.take_waits(now),
        };
        self.session.resume_reading(at, self.decoder.in_message());
    }

    /// A resume whose time nothing reads ([`Session::keeps_time`]): no clock restarts, and the
    /// waits of the pause are dropped with it.
    #[inline]
    fn resume_untimed(&mut self) {
        self.paused = false;
        let waits = self.waits_mut();
        if !waits.covered.is_zero() {
            waits.covered = Duration::ZERO;
        }
        self.session.resume_untimed();
    }

    /// The waits of the pause, without locking: the link is ours alone (no wait is in
    /// progress: waits hold shared references).
    #[inline]
    fn waits_mut(&mut self) -> &mut Waits {
        self.waits.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// A resume at `now` after waits of this pause ([`Link::begin_wait`]): the pause ended
    /// that much earlier. They are spent.
    #[cold]
    fn take_waits(&mut self, now: Instant) -> Instant {
        std::mem::take(self.waits_mut()).pause_end(now)
    }

    fn lock_waits(&self) -> MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller begins waiting for input at `now` through a shared reference (the blocking
    /// `wait`): during a pause after a delivery, the time until [`Link::end_wait`] is the
    /// peer's, as if a receive were waiting. Each call must be paired with one `end_wait`.
    pub fn begin_wait(&self, now: Instant) {
        if self.paused {
            let mut waits = self.lock_waits();
            if waits.waiting == 0 {
                waits.since = Some(now);
            }
            waits.waiting += 1;
        }
    }

    /// A wait begun with [`Link::begin_wait`] ends at `now` without taking a message.
    pub fn end_wait(&self, now: Instant) {
        if self.paused {
            let mut waits = self.lock_waits();
            waits.waiting = waits.waiting.saturating_sub(1);
            if waits.waiting == 0
                && let Some(since) = waits.since.take()
            {
                waits.covered = waits.covered.saturating_add(now.saturating_duration_since(since));
            }
        }
    }

    /// [`Session::close_deadline`] for a caller waiting for input through a shared reference
    /// since `began` ([`Link::begin_wait`]): a pause after a delivery ends, for the deadlines,
    /// where the waits of the pause began, their time taken once.
    pub fn close_deadline_waiting(&self, began: Instant) -> Option<Instant> {
        if !self.paused {
            return self.session.close_deadline();
        }
        let at = self.lock_waits().pause_end(began);
        self.session.close_deadline_resumed_at(at, self.decoder.in_message())
    }

    fn delivered(&mut self) {
        if !self.paused {
            self.paused = true;
            self.session.pause_reading();
        }
    }

    /// The next frame within `limit`, owned (a large message is handed over without a copy).
    pub fn take(&mut self, limit: usize) -> Next<Vec<u8>> {
        let limit = limit.min(self.session.frame_limit());
        let next = judge_frame(&mut self.session, self.decoder.take_frame_limited(limit));
        self.after_take(next)
    }

    /// The next frame within `limit`, borrowed from the decoder's buffer.
    pub fn next(&mut self, limit: usize) -> Next<&[u8]> {
        let limit = limit.min(self.session.frame_limit());
        let next = judge_frame(&mut self.session, self.decoder.next_frame_limited(limit));
        if matches!(next, Next::Message(_)) && !self.paused {
            self.paused = true;
            self.session.pause_reading();
        }
        next
    }

    /// Hands every whole message buffered (within `limit`) to `f`, in order, each a slice of the
    /// decoder's buffer, and returns how many: the batch receive, one tight loop over what a
    /// read brought as the reactor parses its reads. Stops at the first frame that is not
    /// whole (left buffered) or when the session closes (a refused length or message;
    /// [`Link::poll_ready`] then says `Closed`). Handshake messages go to the session, not to
    /// `f`.
    #[inline]
    pub fn drain_messages(&mut self, limit: usize, mut f: impl FnMut(&[u8])) -> usize {
        let limit = limit.min(self.session.frame_limit());
        let mut count = 0;
        loop {
            match judge_frame(&mut self.session, self.decoder.next_frame_limited(limit)) {
                Next::Message(m) => {
                    f(m);
                    count += 1;
                }
                Next::Consumed => {}
                Next::Empty | Next::Closed => break,
            }
        }
        if count > 0 {
            self.delivered();
        }
        count
    }

    fn after_take<T>(&mut self, next: Next<T>) -> Next<T> {
        if let Next::Message(_) = next {
            self.delivered();
        }
        next
    }

    /// Why the session closed, once (then `None`).
    pub fn close_reason(&mut self) -> Option<CloseReason> {
        while let Some(e) = self.session.poll_event() {
            if let Event::Closed(reason) = e {
                return Some(reason);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::encode_frame;
    use crate::wire::session::Timeouts;
    use std::time::Duration;

    fn open_link() -> Link {
        let mut s = Session::listener(None, Timeouts::DEFAULT, Instant::now());
        assert!(matches!(s.poll_event(), Some(Event::Opened)));
        Link::new(s, 1 << 20)
    }

    fn feed(link: &mut Link, bytes: &[u8]) {
        let buf = link.read_buf();
        buf[..bytes.len()].copy_from_slice(bytes);
        link.filled(bytes.len());
    }

    #[test]
    fn end_of_file_waits_for_the_buffered_messages() {
        let mut link = open_link();
        let mut wire = Vec::new();
        encode_frame(b"one", &mut wire);
        encode_frame(b"two", &mut wire);
        feed(&mut link, &wire);
        link.filled(0);
        assert_eq!(link.poll_ready(usize::MAX), Ready::Frame);
        assert_eq!(link.take(usize::MAX), Next::Message(b"one".to_vec()));
        assert_eq!(link.next(usize::MAX), Next::Message(&b"two"[..]));
        assert_eq!(link.poll_ready(usize::MAX), Ready::Closed);
        assert!(matches!(link.close_reason(), Some(CloseReason::PeerClosed)));
        assert!(link.close_reason().is_none(), "said once");
    }

    #[test]
    fn a_refused_length_and_eof_inside_a_message_close_with_their_reasons() {
        let mut link = open_link();
        feed(&mut link, &(2_000_000u32).to_be_bytes());
        assert_eq!(link.poll_ready(usize::MAX), Ready::Closed);
        assert!(matches!(link.close_reason(), Some(CloseReason::Protocol(_))));
        let mut link = open_link();
        feed(&mut link, &[0, 0, 0, 9, 1, 2]);
        link.filled(0);
        assert_eq!(link.poll_ready(usize::MAX), Ready::Closed);
        assert!(matches!(link.close_reason(), Some(CloseReason::PeerClosedMidMessage)));
    }

    #[test]
    fn a_partial_message_arms_the_deadline_and_a_whole_one_does_not() {
        let mut link = open_link();
        let mut wire = Vec::new();
        encode_frame(b"whole", &mut wire);
        feed(&mut link, &wire);
        assert_eq!(link.session().poll_timeout(), None, "a whole message is no partial one");
        assert!(matches!(link.take(usize::MAX), Next::Message(_)));
        link.resume();
        feed(&mut link, &[0, 0, 0, 9, 1]);
        let due = link.session().poll_timeout().expect("the partial-message slot");
        assert!(due > Instant::now() + Duration::from_secs(59));
        assert_eq!(link.poll_ready(usize::MAX), Ready::Read);
    }

    #[test]
    fn drain_messages_hands_every_whole_message_in_order_and_keeps_the_tail() {
        let mut link = open_link();
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"", b"three"] {
            encode_frame(body, &mut wire);
        }
        encode_frame(b"partial", &mut wire);
        feed(&mut link, &wire[..wire.len() - 3]);
        let mut seen = Vec::new();
        assert_eq!(link.drain_messages(usize::MAX, |m| seen.push(m.to_vec())), 3);
        assert_eq!(seen, [b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert_eq!(link.poll_ready(usize::MAX), Ready::Read, "the tail stays buffered");
        assert_eq!(link.drain_messages(usize::MAX, |_| panic!("nothing whole")), 0);
        link.resume();
        feed(&mut link, &wire[wire.len() - 3..]);
        assert_eq!(link.drain_messages(usize::MAX, |m| assert_eq!(m, b"partial")), 1);
        // A refused length closes the session; the messages before it were handed out.
        let mut wire = Vec::new();
        encode_frame(b"before", &mut wire);
        wire.extend_from_slice(&(2_000_000u32).to_be_bytes());
        link.resume();
        feed(&mut link, &wire);
        assert_eq!(link.drain_messages(usize::MAX, |m| assert_eq!(m, b"before")), 1);
        assert_eq!(link.poll_ready(usize::MAX), Ready::Closed);
        assert!(matches!(link.close_reason(), Some(CloseReason::Protocol(_))));
    }

    #[test]
    fn a_reset_closes_the_session_with_the_io_error() {
        let mut link = open_link();
        link.io_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(link.poll_ready(usize::MAX), Ready::Closed);
        let Some(CloseReason::Error(crate::Error::Io(e))) = link.close_reason() else { panic!("not the I/O error") };
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
}
