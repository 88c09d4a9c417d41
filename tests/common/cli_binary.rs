//! The `mpconn` command for the suites that use it as a live server or client. The command is its
//! own package (`cli/`, so a library user never compiles clap and friends), so this package's tests
//! do not get `CARGO_BIN_EXE_mpconn`: the binary is built here, once per test process, into the
//! outer build's target directory with the outer build's profile. The same package selection and
//! features as the README's `cargo test --all-features` make it a no-op after a workspace build.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of a fresh `mpconn` binary.
pub fn mpconn() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build)
}

fn build() -> PathBuf {
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf();
    let profile = profile_dir.file_name().expect("a profile directory").to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--quiet",
        "-p",
        "mpconn",
        "-p",
        "mpconn-cli",
        "--bins",
        "--all-features",
    ]);
    if profile == "release" {
        cmd.arg("--release");
    }
    cmd.env("CARGO_TARGET_DIR", profile_dir.parent().expect("the target directory"));
    let status = cmd.status().expect("run cargo build for the mpconn command");
    assert!(status.success(), "cargo build -p mpconn-cli failed");
    let bin = profile_dir.join(format!("mpconn{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}
