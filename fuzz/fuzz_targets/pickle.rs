//! Pickle decoding of received messages: arbitrary bytes never panic, and whatever decodes can
//! be shown (repr) and written again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpconn::pickle::{dumps_value, loads_value, repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = loads_value(data) {
        let _ = repr(&v);
        let _ = dumps_value(&v, 3);
        let _ = dumps_value(&v, 2);
    }
});
