//! The command's exit codes: a contract for scripts (documented in `--help` and the README).
//! `0` is the normal end (everything asked was done, a stress run found no error); `2` is a usage
//! error (an unknown option, a malformed value), clap's own code, so it has no constant here.

/// A runtime error: an address that cannot be bound or reached, a refused handshake, I/O.
pub const RUNTIME: i32 = 1;
/// `stress` ran to its end (or to Ctrl-C) and found errors: failed checks, lost, duplicated,
/// reordered or corrupted replies, connection errors.
pub const STRESS_FOUND_ERRORS: i32 = 3;
