//! Finding the Python interpreters the tests and benches talk to, in one place. Included with
//! `#[path]` by each suite that needs it (tests are separate crates; a file in a subfolder is
//! no test target of its own).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The versions pyenv has installed (`2.7.18`, `3.13.0`, ...), none if pyenv is missing.
pub fn pyenv_versions() -> Vec<String> {
    let Ok(out) = Command::new("pyenv").args(["versions", "--bare"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout).lines().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

/// The interpreter of the newest pyenv version whose name starts with `prefix` (`"3.13"`,
/// `"2.7."`, `"3.13.0"`), if installed.
pub fn pyenv_python(prefix: &str) -> Option<PathBuf> {
    let version = pyenv_versions().into_iter().rfind(|v| v.starts_with(prefix))?;
    let out = Command::new("pyenv").args(["prefix", &version]).output().ok()?;
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/python");
    exe.exists().then_some(exe)
}

/// `python3` (CPython 3.11 on this machine) for `"3.11"`, else [`pyenv_python`].
pub fn python_at(prefix: &str) -> Option<PathBuf> {
    if prefix == "3.11" {
        return Some("python3".into());
    }
    pyenv_python(prefix)
}
