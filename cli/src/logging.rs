//! The command's logger: the library reports through the `log` facade (why a handshake failed,
//! a dropped accept, a socket file it could not remove) and prints nothing itself, so without a
//! logger those lines are lost. This one writes them to stderr, one compact line each, never to
//! stdout (scripts parse `listen`'s and `bench`'s stdout).
//!
//! The level: `RUST_LOG`, when set, wins (env_logger's syntax, e.g. `RUST_LOG=mpconn=debug`);
//! otherwise warnings and errors, `-v` adds info, `-vv` debug, `-vvv` trace, and `-q` keeps only
//! errors (unless `-v` is given too: `listen -q -vv` prints only the address line on stdout and
//! debug lines on stderr).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::LevelFilter;

/// The level `-v` (counted) and `-q` ask for (`-v` wins over `-q`).
pub fn level(verbose: u8, quiet: bool) -> LevelFilter {
    match verbose {
        0 if quiet => LevelFilter::Error,
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger (stderr; `RUST_LOG` if set and not empty, else `level`).
pub fn init(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.target(env_logger::Target::Stderr).filter_level(level);
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            builder.parse_filters(&spec);
        }
        _ => {}
    }
    builder.format(|buf, record| {
        // A log line can carry a peer's text (a close reason, a name): cleaned, so it stays one
        // line and sends the terminal no control character.
        let message = record.args().to_string();
        writeln!(buf, "{} {:<5} {}: {}", clock(), record.level(), record.target(), crate::clean::text(&message))
    });
    // Only fails if a logger is already installed, which main does not do twice.
    let _ = builder.try_init();
}

/// The UTC time of day, `HH:MM:SS.mmm`: enough to order lines and measure gaps.
fn clock() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level(0, false), LevelFilter::Warn);
        assert_eq!(level(1, false), LevelFilter::Info);
        assert_eq!(level(2, false), LevelFilter::Debug);
        assert_eq!(level(3, false), LevelFilter::Trace);
        assert_eq!(level(7, false), LevelFilter::Trace);
        assert_eq!(level(0, true), LevelFilter::Error);
        assert_eq!(level(2, true), LevelFilter::Debug);
    }

    #[test]
    fn the_clock_is_a_time_of_day() {
        let c = clock();
        assert_eq!(c.len(), 12, "{c}");
        assert_eq!(&c[2..3], ":");
        assert_eq!(&c[8..9], ".");
    }
}
