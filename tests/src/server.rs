//! `hetvis-serve` as a real process on an ephemeral port: started with `--addr 127.0.0.1:0`, its bound
//! address read from the `listening on http://...` line it prints on stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bare_command;

/// How long start-up (model loading, first forward pass) may take on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `args` (plus `--addr 127.0.0.1:0`); panics with its stderr if it does not come up.
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().expect("temp dir");
        let stderr = logs.path().join("stderr.log");
        let mut child = bare_command("hetvis-serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("spawning hetvis-serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(50)) {
                let addr = a.parse().expect("listening address");
                return Self {
                    child,
                    addr,
                    stderr,
                    _logs: logs,
                };
            }
            let exited = child.try_wait().expect("polling hetvis-serve");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hetvis-serve {args:?} did not come up ({exited:?}):\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for hetvis-serve") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hetvis-serve did not exit within 30 s of SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
