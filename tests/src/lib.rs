//! Helpers for end-to-end tests: locate the workspace's binaries and run them as processes.

pub mod fixtures;
pub mod http;
pub mod prometheus_text;
pub mod server;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary in the same target profile as the running test.
///
/// `cargo test --workspace` builds every member's binaries before running tests; running this crate's tests
/// alone needs `cargo build --workspace` first, and the panic message says so.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (or `make test`) first",
        path.display()
    );
    path
}

/// A command for a workspace binary with the variables that locate native libraries removed, so a test proves
/// the binaries find libtorch and ONNX Runtime the way a user's shell would: with nothing exported.
pub fn bare_command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for var in [
        "ORT_DYLIB_PATH",
        "LD_LIBRARY_PATH",
        "LIBTORCH",
        "HETVIS_VENV",
    ] {
        cmd.env_remove(var);
    }
    // Tests run side by side; libtorch's OpenMP threads spinning while idle would starve each other's.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    cmd
}

/// Runs a workspace binary to completion and returns its output, failing with its stderr on a non-zero exit.
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let out = bare_command(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
