//! Unit tests of the codec (no sockets).
use super::*;

#[test]
fn value_is_small() {
    eprintln!("size_of::<Value>() = {}", std::mem::size_of::<Value>());
    assert!(std::mem::size_of::<Value>() <= 32);
}
