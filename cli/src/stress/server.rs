//! The process side of a stress run: the embedded server (this program's `listen --echo` in a
//! child process, so its memory is measured apart from the clients'), and the memory and
//! descriptor counts of a process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use mpconn::{Address, AuthKey, Error, Family, Result, arbitrary_address};

/// Resident memory of a process in bytes (VmRSS; Linux only, unknown elsewhere).
pub fn rss_of(pid: u32) -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises the soft descriptor limit to the hard one; returns (old, new) when it changed.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    None
}

/// Raises the soft descriptor limit to the hard one; returns (old, new) when it changed.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return None;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        (libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0).then_some((old, lim.rlim_max))
    }
}

/// The embedded server: `mpconn listen --echo --quiet` in a child process.
pub struct EmbeddedServer {
    pub child: Child,
    pub address: Address,
    dir: Option<std::path::PathBuf>,
}

impl EmbeddedServer {
    pub fn start(key: &AuthKey) -> Result<EmbeddedServer> {
        if key.as_bytes().contains(&0) {
            return Err(Error::Config("a key with a NUL byte cannot be handed to the embedded server".into()));
        }
        #[cfg(unix)]
        let key_value = {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(key.as_bytes()).to_os_string()
        };
        #[cfg(not(unix))]
        let key_value = std::ffi::OsString::from(
            std::str::from_utf8(key.as_bytes())
                .map_err(|_| Error::Config("the embedded server takes a UTF-8 key here".into()))?,
        );
        let address = arbitrary_address(Family::fastest())?;
        let dir = address.unix_path().and_then(|p| p.parent()).map(|p| p.to_path_buf());
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["listen", "--echo", "--quiet", "--authkey-env", "MPCONN_STRESS_KEY", &address.to_string()])
            .env("MPCONN_STRESS_KEY", key_value)
            .stdout(Stdio::piped());
        // A terminal's Ctrl-C goes to its whole foreground process group: the server gets its own
        // group, so it keeps serving while `stress` drains and reports, and ends when dropped.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
            command.creation_flags(CREATE_NEW_PROCESS_GROUP);
        }
        // Registered before anything can fail, so a second Ctrl-C (which exits at once) kills
        // the child and removes the directory: the child, in its own group, would outlive us.
        if let Some(d) = &dir {
            crate::interrupt::register_dir(d.clone());
        }
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(d) = &dir {
                    crate::interrupt::unregister_dir(d);
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e.into());
            }
        };
        crate::interrupt::register_child(child.id());
        // From here on, dropping `server` (an early return) kills the child and cleans up.
        let mut server = EmbeddedServer { child, address, dir };
        let mut line = String::new();
        BufReader::new(server.child.stdout.take().ok_or(Error::Closed("server stdout"))?).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            return Err(Error::Config(format!("the embedded server did not start: {line:?}")));
        }
        Ok(server)
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        crate::interrupt::unregister_child(self.child.id());
        let _ = self.child.wait();
        if let Some(p) = self.address.unix_path() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir(d);
            crate::interrupt::unregister_dir(d);
        }
    }
}

/// Open descriptors of a process (Linux: `/proc`; unknown elsewhere).
pub fn count_fds(pid: u32) -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}
