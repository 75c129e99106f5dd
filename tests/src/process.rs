//! Child processes that are killed and reaped when the guard drops.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A running child, killed on drop.
pub struct ChildGuard {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Lines of stderr, when captured (`spawn_logged`).
    stderr: Option<mpsc::Receiver<String>>,
    /// The stderr lines `wait_for_log` has read so far.
    seen: Vec<String>,
}

impl ChildGuard {
    /// Spawns `cmd` with piped stdout (and stdin, so the child can tell when the test is gone).
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdout,
            stderr: None,
            seen: Vec::new(),
        }
    }

    /// Like `spawn`, also capturing stderr line by line (for `wait_for_log`).
    pub fn spawn_logged(cmd: &mut Command) -> Self {
        let mut guard = Self::spawn(cmd.stderr(Stdio::piped()));
        let stderr = guard.child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  child: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        guard.stderr = Some(rx);
        guard
    }

    /// Waits (up to `timeout`) for a stderr line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let rx = self.stderr.as_ref().expect("spawned with spawn_logged");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// A stderr line containing `needle` among those `wait_for_log` has already read.
    pub fn logged(&self, needle: &str) -> Option<&str> {
        self.seen
            .iter()
            .find(|line| line.contains(needle))
            .map(String::as_str)
    }

    /// The next line the child printed (without the newline).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading child stdout");
        assert!(!line.is_empty(), "child exited before printing a line");
        line.trim_end().to_owned()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits up to `timeout` for the child to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A crash: SIGKILL, no chance to clean up, then reaped (as a supervisor would), so its
    /// pid is free for the next run's liveness checks.
    pub fn crash(mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) },
            0
        );
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `netprobe` helper built with these tests.
pub fn netprobe() -> Command {
    Command::new(target_bin("netprobe"))
}

/// `mcp-gateway` with a clean environment: no `RUST_LOG` and no `MCP_GATEWAY_*` setting, so only
/// the test's flags configure it.
pub fn gateway_command() -> Command {
    let mut cmd = Command::new(gateway_bin());
    clean_gateway_env(&mut cmd);
    cmd
}

/// Runs `mcp-gateway ARGS` (clean environment, no stdin) to completion.
pub fn gateway_output(args: &[&str]) -> Output {
    gateway_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running mcp-gateway")
}

/// Removes `RUST_LOG` and every `MCP_GATEWAY_*` variable from `cmd`'s environment.
pub fn clean_gateway_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("MCP_GATEWAY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `program` started inside `cgroup` when given: a shell joins the cgroup, then execs it, so
/// the program and everything it forks belong to the cgroup from the start.
pub fn in_cgroup(cgroup: Option<&Path>, program: &Path) -> Command {
    match cgroup {
        Some(cgroup) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"")
                .arg("sh")
                .arg(cgroup)
                .arg(program);
            sh
        }
        None => Command::new(program),
    }
}

/// The `mcp-gateway` binary under test: `$MCP_GATEWAY_BIN` (set by `cargo xtask test`), else the
/// one in this test's target directory.
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("MCP_GATEWAY_BIN").map_or_else(|| target_bin("mcp-gateway"), PathBuf::from)
}

/// A binary in the target directory this test was built into
/// (`target/<profile>/deps/<test>` -> `target/<profile>/<name>`).
fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`) or run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Sends `signal` to process `pid` (not necessarily our child); whether it was delivered.
pub fn signal_pid(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(pid, signal) == 0 }
}
