//! The sans-IO session in both roles, keyed or not, every dialect, fed arbitrary frames, frame
//! errors, end of file and clock steps: no panic, nothing delivered before a keyed session is
//! authenticated (the fuzzer does not have the key), at most one close, and the deadline table
//! never empty while a handshake runs.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mpconn::AuthKey;
use mpconn::internal::frame::FrameError;
use mpconn::internal::handshake::{Dialect, HandshakeConfig, MODERN_NONCE_LEN, Nonce};
use mpconn::internal::session::{Delivery, Event, Session, Timeouts};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut config = HandshakeConfig::new(AuthKey::from("fuzz key"));
    config.dialect = match selector % 3 {
        0 => Dialect::Cpython,
        1 => Dialect::CpythonLegacy,
        _ => Dialect::Processing,
    };
    let keyed = selector & 8 == 0;
    let timeouts = Timeouts {
        handshake: Some(Duration::from_secs(10)),
        idle: (selector & 16 != 0).then_some(Duration::from_secs(3)),
        partial_message: Some(Duration::from_secs(60)),
        close_flush: Duration::from_secs(5),
        buffer_release: Some(Duration::from_secs(1)),
        write_stall: Some(Duration::from_secs(2)),
    };
    let t0 = Instant::now();
    let nonce = Nonce::from_bytes([selector; MODERN_NONCE_LEN]);
    let auth = keyed.then_some((&config, nonce));
    let mut s = if selector & 4 != 0 {
        Session::listener(auth, timeouts, t0)
    } else {
        Session::client(auth, timeouts, t0)
    };
    let mut now = t0;
    let mut closes = 0;
    let mut input = rest;
    // Each step: an opcode byte, then (for a frame) a length byte and that many bytes.
    while let Some((&op, tail)) = input.split_first() {
        input = tail;
        match op % 8 {
            0..=3 => {
                let Some((&len, tail)) = input.split_first() else { break };
                let len = (len as usize).min(tail.len());
                let (msg, next) = tail.split_at(len);
                input = next;
                let d = s.handle_frame(msg);
                if keyed {
                    assert_ne!(d, Delivery::Message, "delivered before authentication");
                }
            }
            4 => now += Duration::from_millis(u64::from(op) * 40),
            5 if op & 0x40 != 0 => s.on_flush(now, op & 0x80 != 0, op & 0x20 != 0),
            5 => s.on_read(now, op & 0x80 != 0),
            6 => s.handle_frame_error(FrameError::NegativeLength(-2)),
            _ => s.handle_eof(op & 0x80 != 0),
        }
        let _ = s.handle_timeout(now);
        while s.poll_transmit().is_some() {}
        while let Some(e) = s.poll_event() {
            if let Event::Closed(_) = e {
                closes += 1;
            }
        }
        if s.is_handshaking() {
            assert!(s.poll_timeout().is_some());
        }
    }
    assert!(closes <= 1);
});
