//! The sans-IO protocol core: framing and the handshake. No sockets, no clock reads; both the
//! blocking API and the reactor drive these same state machines.

pub mod digest;
pub mod frame;
pub mod handshake;
pub mod link;
pub mod session;
