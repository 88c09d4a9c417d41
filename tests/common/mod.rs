//! What the test suites share, in one place. Tests are separate crates: a suite says `mod common;`
//! and uses the parts it needs (the rest is compiled and unused there, hence the allow).
//!
//! * [`frames`]: raw frames over any stream, for hand-made peers;
//! * [`python`]: finding the CPython interpreters (also used by `benches/pickle.rs`);
//! * [`cli_binary`]: the `mpconn` command, built once per test process;
//! * [`reactor`]: a recording handler and a reactor on its own thread;
//! * [`scripts`]: the differential suites' Python scripts, JSON lines out, bounded (Unix);
//! * [`servers`]: server child processes killed on drop, authenticated connections as plain
//!   streams, bounded waits (Unix);
//! * [`shards`]: the echo handler and the "which shard" client of the sharded reactors' suites;
//! * [`adversary`]: the standing adversary harness, an echo server on every face with a good
//!   client measuring its latency and RSS sampled (Unix, tokio);
//! * [`tokio_face`]: a current-thread runtime, Python children, message bodies and RSS for the
//!   tokio face's suites (Unix, tokio).
#![allow(dead_code, unused_imports)]

#[cfg(all(unix, feature = "tokio"))]
pub mod adversary;
pub mod cli_binary;
pub mod frames;
pub mod python;
pub mod reactor;
#[cfg(unix)]
pub mod scripts;
#[cfg(unix)]
pub mod servers;
pub mod shards;
#[cfg(all(unix, feature = "tokio"))]
pub mod tokio_face;
