//! The attacker's session target (issue 11): two sans-IO sessions, a listener and a client,
//! wired through two byte pipes the way a driver wires them (frames encoded, bytes decoded by a
//! `FrameDecoder` limited by `Session::frame_limit`). The fuzzer chooses each side's key (the
//! same, another, or none), the dialect, how the bytes are cut into reads, when the clock moves,
//! when a side sees end of file, and it may inject raw bytes of its own into either pipe.
//!
//! Checked after every step:
//! - no panic;
//! - bounded buffering: while a side is not open, its decoder holds at most one handshake
//!   frame (header + `HANDSHAKE_MAX_MESSAGE`), and a step's output is at most a few handshake
//!   messages;
//! - a keyed side never opens unless the peer ran the handshake with the same key (a side with
//!   another key, no key, or the fuzzer's injected bytes never get it opened), and nothing is
//!   delivered to a keyed side before it opened;
//! - each side reports Opened at most once and Closed at most once, never Opened after Closed;
//! - liveness: with the same key (or both without), no injected bytes, no end of file and no
//!   clock step past a deadline, once every byte has been delivered both sides are open,
//!   however the bytes were cut.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mpconn::AuthKey;
use mpconn::internal::frame::{FrameDecoder, encode_frame};
use mpconn::internal::handshake::{Dialect, HANDSHAKE_MAX_MESSAGE, HandshakeConfig, MODERN_NONCE_LEN, Nonce};
use mpconn::internal::session::{Delivery, Event, Session, Timeouts};

/// Largest application message in this target (keeps the open decoders small).
const MAX_MESSAGE: usize = 4096;

struct Side {
    session: Session,
    decoder: FrameDecoder,
    /// Bytes on their way to this side.
    inbox: Vec<u8>,
    keyed: bool,
    opened: u32,
    closed: u32,
    eof: bool,
    messages: u32,
}

impl Side {
    fn new(session: Session, keyed: bool) -> Side {
        Side {
            session,
            decoder: FrameDecoder::new(MAX_MESSAGE),
            inbox: Vec::new(),
            keyed,
            opened: 0,
            closed: 0,
            eof: false,
            messages: 0,
        }
    }

    /// Feeds up to `n` bytes of the inbox as one read at `now`.
    fn read(&mut self, n: usize, now: Instant) {
        if self.eof || self.session.is_closed() || self.inbox.is_empty() {
            return;
        }
        let n = n.min(self.inbox.len());
        let chunk: Vec<u8> = self.inbox.drain(..n).collect();
        self.decoder.feed(&chunk);
        loop {
            if self.session.is_closed() || self.session.is_closing() {
                break;
            }
            let limit = self.session.frame_limit().min(MAX_MESSAGE);
            match self.decoder.next_frame_limited(limit) {
                Ok(Some(body)) => {
                    let body = body.to_vec();
                    let d = self.session.handle_frame(&body);
                    if d == Delivery::Message {
                        assert!(self.session.is_open(), "a message delivered to a session that is not open");
                        assert!(!self.keyed || self.opened == 1 || self.pending_open(), "delivered before open");
                        self.messages += 1;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.session.handle_frame_error(e);
                    break;
                }
            }
        }
        self.session.on_read(now, self.decoder.in_message());
        // A closed session's leftovers are the driver's to drop with the socket.
        if !self.session.is_open() && !self.session.is_closed() && !self.session.is_closing() {
            let cap = 12 + HANDSHAKE_MAX_MESSAGE;
            assert!(
                self.decoder.buffered_len() <= cap,
                "{} bytes buffered before the session is open (cap {cap})",
                self.decoder.buffered_len()
            );
        }
    }

    /// An Opened event is queued but not yet polled.
    fn pending_open(&self) -> bool {
        self.session.is_open()
    }

    fn end_of_file(&mut self) {
        if !self.eof && !self.session.is_closed() {
            self.eof = true;
            let mid = self.decoder.in_message();
            self.session.handle_eof(mid);
        }
    }

    /// Moves this side's output to `out` (the peer's inbox); polls events.
    fn pump(&mut self, out: &mut Vec<u8>) {
        let mut bytes = 0;
        while let Some(body) = self.session.poll_transmit() {
            bytes += body.len();
            encode_frame(&body, out);
        }
        assert!(bytes <= 4 * HANDSHAKE_MAX_MESSAGE, "{bytes} bytes of protocol output in one step");
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::Opened => {
                    assert_eq!(self.closed, 0, "Opened after Closed");
                    self.opened += 1;
                    assert_eq!(self.opened, 1, "Opened twice");
                }
                Event::Closed(_) => {
                    self.closed += 1;
                    assert_eq!(self.closed, 1, "Closed twice");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&keys, mut input)) = rest.split_first() else {
        return;
    };
    let dialect = match selector % 3 {
        0 => Dialect::Cpython,
        1 => Dialect::CpythonLegacy,
        _ => Dialect::Processing,
    };
    // keys: listener keyed?, client keyed?, same key?
    let listener_keyed = keys & 1 == 0;
    let client_keyed = keys & 2 == 0;
    let same_key = keys & 4 == 0;
    let mut lconfig = HandshakeConfig::new(AuthKey::from("pair key"));
    lconfig.dialect = dialect;
    let cconfig = HandshakeConfig::new(AuthKey::from(if same_key { "pair key" } else { "other key" }));
    let timeouts = Timeouts {
        handshake: Some(Duration::from_secs(10)),
        idle: (selector & 8 != 0).then_some(Duration::from_secs(3)),
        partial_message: Some(Duration::from_secs(60)),
        close_flush: Duration::from_secs(5),
        buffer_release: Some(Duration::from_secs(1)),
        write_stall: Some(Duration::from_secs(2)),
    };
    let t0 = Instant::now();
    let lnonce = Nonce::from_bytes([selector; MODERN_NONCE_LEN]);
    let cnonce = Nonce::from_bytes([!selector; MODERN_NONCE_LEN]);
    let mut l =
        Side::new(Session::listener(listener_keyed.then_some((&lconfig, lnonce)), timeouts, t0), listener_keyed);
    let mut c = Side::new(Session::client(client_keyed.then_some((&cconfig, cnonce)), timeouts, t0), client_keyed);
    let mut now = t0;
    let mut tampered = false;
    let mut ended = false;

    let step = |l: &mut Side, c: &mut Side, now: Instant| {
        let _ = l.session.handle_timeout(now);
        let _ = c.session.handle_timeout(now);
        let mut to_c = Vec::new();
        l.pump(&mut to_c);
        c.inbox.extend_from_slice(&to_c);
        let mut to_l = Vec::new();
        c.pump(&mut to_l);
        l.inbox.extend_from_slice(&to_l);
    };
    step(&mut l, &mut c, now);

    // Steps: an opcode, then its argument bytes.
    let mut steps = 0;
    while let Some((&op, tail)) = input.split_first() {
        input = tail;
        steps += 1;
        if steps > 4096 {
            break;
        }
        let arg = input.first().copied().unwrap_or(1);
        match op % 8 {
            0 | 1 => {
                input = input.get(1..).unwrap_or(&[]);
                c.read(usize::from(arg).max(1), now);
            }
            2 | 3 => {
                input = input.get(1..).unwrap_or(&[]);
                l.read(usize::from(arg).max(1), now);
            }
            4 => {
                input = input.get(1..).unwrap_or(&[]);
                now += Duration::from_millis(u64::from(arg) * 50);
            }
            5 => {
                // Raw bytes of the fuzzer's own into one pipe.
                input = input.get(1..).unwrap_or(&[]);
                let n = usize::from(arg).min(input.len());
                let (bytes, next) = input.split_at(n);
                input = next;
                if n > 0 {
                    tampered = true;
                    if op & 0x80 != 0 { &mut l.inbox } else { &mut c.inbox }.extend_from_slice(bytes);
                }
            }
            6 => {
                // An application message from an open side.
                input = input.get(1..).unwrap_or(&[]);
                let (from, to) = if op & 0x80 != 0 { (&mut l, &mut c) } else { (&mut c, &mut l) };
                if from.session.is_open() {
                    let body = vec![arg; usize::from(arg)];
                    encode_frame(&body, &mut to.inbox);
                }
            }
            _ => {
                ended = true;
                if op & 0x80 != 0 { l.end_of_file() } else { c.end_of_file() }
            }
        }
        step(&mut l, &mut c, now);
        for side in [&l, &c] {
            // Without the same key on both sides, a keyed side never opens.
            if side.keyed && side.opened > 0 {
                assert!(listener_keyed && client_keyed && same_key, "a keyed side opened without a verified handshake");
            }
        }
    }

    // Liveness: deliver everything that is left, with no further clock steps.
    let deadline_passed = now.duration_since(t0) >= Duration::from_secs(3);
    for _ in 0..16 {
        c.read(usize::MAX, now);
        l.read(usize::MAX, now);
        step(&mut l, &mut c, now);
    }
    let compatible = listener_keyed == client_keyed && (!listener_keyed || same_key);
    if compatible && !tampered && !ended && !deadline_passed {
        assert_eq!(
            (l.opened, c.opened),
            (1, 1),
            "an honest pair did not open: the result depends on how reads are cut"
        );
        assert_eq!((l.closed, c.closed), (0, 0), "an honest pair closed");
    }
    if listener_keyed && !client_keyed && !tampered && !ended && !deadline_passed {
        // The client without a key has seen the challenge: it must say KeyRequired (closed).
        assert_eq!(c.closed, 1, "a client without a key did not close on the listener's challenge");
        assert_eq!(l.opened, 0);
    }
});
