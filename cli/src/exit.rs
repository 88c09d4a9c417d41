//! The command's exit codes: a contract for scripts (documented in `--help` and the README).
//! `0` is the normal end (everything asked was done, a stress run found no error); `2` is a usage
//! error (an unknown option, a malformed value): clap's own code, and ours for the values checked
//! after clap's parsing ([`USAGE`]).
//! A first Ctrl-C ends `listen`, `bench` and `stress` in order with their usual code (`listen`: 0);
//! a second one exits at once with 130 (see `interrupt`).

/// A runtime error: an address that cannot be bound or reached, a refused handshake, I/O.
pub const RUNTIME: i32 = 1;
/// A usage error found after clap's parsing (a value out of range, a malformed literal):
/// clap's code for its own usage errors.
pub const USAGE: i32 = 2;
/// `stress` ran to its end (or to Ctrl-C) and found errors: failed checks, lost, duplicated,
/// reordered or corrupted replies, connection errors.
pub const STRESS_FOUND_ERRORS: i32 = 3;

/// The exit-code table every subcommand's `--help` ends with (`stress` adds its own code).
pub fn help(subcommand: Option<&str>) -> String {
    let mut text = String::from(
        "Exit codes:\n  0  ok\n  1  runtime error (an address not reached or bound, a refused handshake, I/O)\n  2  usage error (an unknown option, a malformed value)",
    );
    if matches!(subcommand, None | Some("stress")) {
        text.push_str("\n  3  stress found errors (failed checks, lost or corrupted replies, connection errors)");
    }
    if matches!(subcommand, None | Some("stress" | "bench" | "listen")) {
        text.push_str("\n  130  a second Ctrl-C (the first ends the run in order, with its usual exit code)");
    }
    text
}
