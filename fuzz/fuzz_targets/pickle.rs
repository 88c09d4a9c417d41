//! Pickle decoding of received messages: arbitrary bytes never panic, and whatever decodes can
//! be shown (repr_limited, as `mpconn listen` shows it) and written again.
//!
//! The full `repr` is not called: a value that shares sub-objects (memo references) is a DAG
//! whose repr, as Python's, grows exponentially with the pickle (corpus/pickle/
//! seed-memo-chain-40-doublings: 2.4 KB, 2^40 leaves); the server shows values with
//! `repr_limited` for that reason. See pickle_structured.rs for the grammar-level target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpconn::pickle::{dumps_value, loads_value, repr_limited};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = loads_value(data) {
        let _ = repr_limited(&v, 1 << 20);
        let _ = dumps_value(&v, 3);
        let _ = dumps_value(&v, 2);
    }
});
