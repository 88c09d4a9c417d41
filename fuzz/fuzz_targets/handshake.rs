//! Both handshake roles, every dialect and policy, fed arbitrary messages: no panic, and a side
//! that does not know the key is never authenticated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpconn::internal::handshake::{Dialect, Handshake, HandshakeConfig, MODERN_NONCE_LEN, Nonce};
use mpconn::{AuthKey, DigestPolicy};

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
    if selector & 4 != 0 {
        config.policy = DigestPolicy::RequireSha256;
    }
    let mut listener = Handshake::listener(&config, Nonce::from_bytes([selector; MODERN_NONCE_LEN]));
    let mut client = Handshake::client(&config, Nonce::from_bytes([!selector; MODERN_NONCE_LEN]));
    // Messages: each a one-byte length, then that many bytes.
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let len = (len as usize).min(tail.len());
        let (msg, next) = tail.split_at(len);
        input = next;
        let _ = listener.handle_message(msg);
        let _ = client.handle_message(msg);
        while listener.poll_transmit().is_some() {}
        while client.poll_transmit().is_some() {}
    }
    // The listener's challenge is answered only by the key; the fuzzer does not have it
    // (a forged HMAC is out of reach), so the listener must not be authenticated.
    assert!(!listener.is_authenticated());
});
