//! Ctrl-C (SIGINT, SIGTERM, SIGHUP on Unix: the `ctrlc` crate's `termination` feature; the
//! console's Ctrl-C and Ctrl-Break on Windows) as a request to
//! end: long-running subcommands poll [`requested`] and finish in order (`stress` and `bench`
//! print their report, `listen` removes its socket file). A second Ctrl-C ends the process at
//! once, for when the orderly end itself hangs; before it does, it kills the child processes and
//! removes the directories registered here ([`register_child`], [`register_dir`]): `stress`'s
//! embedded server runs in its own process group (the terminal's Ctrl-C does not reach it), so
//! without this it would outlive the exit, holding this process's stdout and stderr (a reader
//! of them would never see EOF) and its socket directory.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Child processes a second Ctrl-C kills before exiting.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Directories (and what is in them) a second Ctrl-C removes before exiting.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// What the first Ctrl-C calls (on the handler's thread) to wake a loop that waits for events
/// with no timeout, so it sees [`requested`] at once; see [`Wake`].
type WakeFn = Box<dyn Fn() + Send>;
static WAKE: Mutex<Vec<(u64, WakeFn)>> = Mutex::new(Vec::new());
static NEXT_WAKE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process for a second Ctrl-C to kill; [`unregister_child`] once it is reaped.
pub fn register_child(pid: u32) {
    locked(&CHILDREN).push(pid);
}

/// Forgets a child: call it after killing the child and before reaping it (`wait`), so the
/// pid cannot be reused by another process while it is still registered.
pub fn unregister_child(pid: u32) {
    locked(&CHILDREN).retain(|&p| p != pid);
}

/// A directory for a second Ctrl-C to remove.
pub fn register_dir(dir: PathBuf) {
    locked(&DIRS).push(dir);
}

/// Forgets a directory (removed in the orderly way).
pub fn unregister_dir(dir: &std::path::Path) {
    locked(&DIRS).retain(|d| d != dir);
}

/// A function the first Ctrl-C calls, while this guard lives: a loop that blocks waiting for
/// events (a reactor's `run_once(None)`, no timer to re-check [`requested`]) registers one that
/// wakes it (`Handle::call` with nothing to do). Register it before the loop's first check of
/// [`requested`]: a Ctrl-C before the registration is seen by that check, one after it wakes
/// the wait.
pub struct Wake(u64);

impl Wake {
    pub fn register(f: impl Fn() + Send + 'static) -> Wake {
        let id = NEXT_WAKE.fetch_add(1, Ordering::Relaxed);
        locked(&WAKE).push((id, Box::new(f)));
        Wake(id)
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        locked(&WAKE).retain(|(id, _)| *id != self.0);
    }
}

/// What a second Ctrl-C does before exiting: kill the registered children, remove the
/// registered directories.
fn clean_up() {
    for pid in locked(&CHILDREN).drain(..) {
        kill(pid);
    }
    for dir in locked(&DIRS).drain(..) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(unix)]
fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: a signal to a child this process started and has not reaped (see
    // `unregister_child`), so the pid is still that child's.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

#[cfg(not(unix))]
fn kill(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/T", "/PID", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The exit code of a process ended by a second Ctrl-C (128 + SIGINT, as shells report it).
const SECOND_INTERRUPT_EXIT: i32 = 130;

/// Installs the handler; without it (an error from the platform) Ctrl-C keeps its default effect.
/// A SIGHUP that was ignored (`nohup mpconn listen …`) stays ignored.
pub fn install() {
    let hangup_ignored = hangup_ignored();
    let result = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            clean_up();
            std::process::exit(SECOND_INTERRUPT_EXIT);
        }
        for (_, wake) in locked(&WAKE).iter() {
            wake();
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
