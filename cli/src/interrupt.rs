//! Ctrl-C (SIGINT, SIGTERM, SIGHUP on Unix: the `ctrlc` crate's `termination` feature; the
//! console's Ctrl-C and Ctrl-Break on Windows) as a request to
//! end: long-running subcommands poll [`requested`] and finish in order (`stress` and `bench`
//! print their report, `listen` removes its socket file). A second Ctrl-C ends the process at
//! once, for when the orderly end itself hangs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit code of a process ended by a second Ctrl-C (128 + SIGINT, as shells report it).
const SECOND_INTERRUPT_EXIT: i32 = 130;

/// Installs the handler; without it (an error from the platform) Ctrl-C keeps its default effect.
/// A SIGHUP that was ignored (`nohup mpconn listen …`) stays ignored.
pub fn install() {
    let hangup_ignored = hangup_ignored();
    let result = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(SECOND_INTERRUPT_EXIT);
        }
    });
    if let Err(e) = result {
        log::warn!("Ctrl-C handler not installed ({e}): Ctrl-C ends the process without a report");
    }
    if hangup_ignored {
        ignore_hangup();
    }
}

/// Whether SIGHUP is ignored now (inherited from `nohup`).
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`, a valid,
    // zeroed (a valid bit pattern for the C struct) `sigaction`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(unix)]
fn ignore_hangup() {
    // SAFETY: setting a signal's disposition to SIG_IGN involves no handler code.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn hangup_ignored() -> bool {
    false
}

#[cfg(not(unix))]
fn ignore_hangup() {}

/// Whether the user asked the command to end.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Whether the user asked the command to end, waiting up to `wait` for the request to arrive:
/// a terminal's Ctrl-C reaches a command's child processes too, so the error a dying child
/// causes can come before this process's handler (on its own thread) has run.
pub fn requested_within(wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if requested() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
