//! Servers the gateway starts itself (`command` in a `[[server]]` table): each in a cgroup of
//! its own under the gateway's (so its egress rules cover it and every process it forks), with
//! only the environment its table lists, in a session of its own, never gaining privileges;
//! its output in the gateway's log, tagged with its name; started again by its `restart`
//! policy with an exponential backoff; stopped with the gateway (SIGTERM, the grace period,
//! then SIGKILL).
//!
//! - [`policy`]: when to start again, and after how long (pure).
//! - [`env`]: the child's environment, and finding its program (pure).
//! - [`sandbox`]: its file system sandbox (Landlock).
//! - [`limits`]: its memory, CPU and process limits (cgroup v2).
//! - [`state`]: what `mcp-gateway status` shows of it.
pub mod env;
pub mod limits;
pub mod policy;
pub mod sandbox;
pub mod state;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Supervised, upstream::UpstreamAddr},
    ebpf::system,
};

/// The longest line of a server's output the log takes; the rest of the line is cut.
const MAX_LINE: usize = 4096;
/// How often readiness is checked while a server starts.
const READY_POLL: Duration = Duration::from_millis(100);

/// One supervised server at run time.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    spec: Supervised,
    upstream: UpstreamAddr,
    /// Its cgroup; `None` on a host without cgroup v2 (then nothing confines it).
    pub cgroup: Option<PathBuf>,
    /// Its `HOME`, and its working directory unless `cwd` says otherwise.
    pub home: PathBuf,
    /// Set while its upstream accepts connections (requests are answered 503 until then).
    pub ready: Arc<AtomicBool>,
    /// Set while its process runs.
    pub up: AtomicBool,
    pub restarts: AtomicU64,
    pub pid: AtomicU32,
    /// Its Landlock ruleset (`None`: no file system sandbox: off, or no Landlock here).
    landlock: Option<std::os::fd::OwnedFd>,
    /// Whether its file system sandbox is in force (`mcp_gateway_sandbox_enforcing`).
    pub sandboxed: bool,
    /// Its limits, each with whether the kernel enforces it.
    pub limits: Vec<(limits::Limit, bool)>,
    cap_last: u32,
    /// When its current run started (0 while down), and how the last one ended.
    up_since: AtomicU64,
    last_exit: std::sync::Mutex<Option<String>>,
    instance: String,
    /// Its state file for `mcp-gateway status` (`None`: not written).
    state_file: Option<PathBuf>,
    stop: CancellationToken,
}

/// Where a server's state directory is made: systemd's `$STATE_DIRECTORY` (the packaged
/// unit's `StateDirectory=`), else /var/lib/mcp-gateway as root, else the temporary directory.
fn state_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several, separated by `:`; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return PathBuf::from(first).join("servers");
        }
    }
    if crate::sys::ids().0 == 0 {
        return PathBuf::from("/var/lib/mcp-gateway/servers");
    }
    std::env::temp_dir().join(format!("mcp-gateway-{}/servers", crate::sys::ids().0))
}

/// The name of a server's cgroup below the gateway's: the server's name and the instance's
/// (two instances in one cgroup may both run a server called `fetch`).
pub fn cgroup_name(server: &str, instance: &str) -> String {
    format!(
        "mcp-server-{server}-{:08x}",
        gateway_common::fnv1a(instance.as_bytes()) as u32
    )
}

/// Makes (or takes over) the cgroup of server `name` below the gateway's own, emptied of any
/// process an earlier run left behind.
fn prepare_cgroup(name: &str, instance: &str) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context as _;
    let Some(mount) = system::cgroup2_mount() else {
        tracing::warn!(server = %name, "NO CGROUP FOR THIS SERVER: there is no cgroup-v2 mount, so its egress rules cannot apply to it");
        return Ok(None);
    };
    let own = system::current_cgroup(&mount).context("reading the gateway's own cgroup")?;
    let dir = own.join(cgroup_name(name, instance));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => kill_all(&dir),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "server `{name}`: making its cgroup {} (the gateway needs write access to \
                     its own cgroup: run it as root, or as a systemd service with Delegate=yes)",
                    dir.display()
                )
            });
        }
    }
    Ok(Some(dir))
}

/// Writes each limit to the server's cgroup; says loudly which the kernel cannot enforce here.
fn apply_limits(
    server: &str,
    cgroup: Option<&Path>,
    wanted: &[limits::Limit],
) -> Vec<(limits::Limit, bool)> {
    wanted
        .iter()
        .map(|limit| {
            let applied = match cgroup {
                Some(dir) => apply_limit(dir, limit),
                None => Err("the server has no cgroup (no cgroup-v2 mount)".to_owned()),
            };
            if let Err(why) = &applied {
                tracing::warn!(server, limit = limit.key, value = %limit.shown, "LIMIT NOT ENFORCED: {why}");
            }
            (limit.clone(), applied.is_ok())
        })
        .collect()
}

fn apply_limit(dir: &Path, limit: &limits::Limit) -> Result<(), String> {
    let parent = dir.parent().ok_or("the server's cgroup has no parent")?;
    let read = |name: &str| std::fs::read_to_string(parent.join(name)).unwrap_or_default();
    if !limits::available(&read("cgroup.controllers"), limit.controller) {
        return Err(format!(
            "the {} controller is not in cgroup v2 on this host (a hybrid host keeps it on \
             cgroup v1); use a systemd unit with `cgroup =` adoption for this limit",
            limit.controller
        ));
    }
    if !limits::available(&read("cgroup.subtree_control"), limit.controller) {
        std::fs::write(
            parent.join("cgroup.subtree_control"),
            format!("+{}", limit.controller),
        )
        .map_err(|e| {
            format!(
                "the {} controller cannot be enabled for the gateway's cgroup's children ({e}); \
                 give the gateway's unit Delegate=yes",
                limit.controller
            )
        })?;
    }
    std::fs::write(dir.join(limit.file), &limit.value)
        .map_err(|e| format!("writing {} = {}: {e}", limit.file, limit.value))
}

/// SIGKILLs every process in cgroup `dir` (`cgroup.kill` where the kernel has it, 5.14+).
fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            crate::sys::signal_pid(pid, libc::SIGKILL);
        }
    }
}

impl Server {
    /// Prepares server `name`: its cgroup, state directory and sandbox. Nothing runs yet.
    /// `required` (`--ebpf required`): a sandbox the kernel cannot give is an error, as with
    /// `sandbox = "required"`. `status_dir`: where its state for `mcp-gateway status` goes.
    pub fn prepare(
        name: &str,
        instance: &str,
        spec: Supervised,
        upstream: UpstreamAddr,
        required: bool,
        status_dir: &Path,
    ) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let cgroup = prepare_cgroup(name, instance)?;
        let home = state_root().join(name);
        std::fs::create_dir_all(&home).with_context(|| {
            format!(
                "server `{name}`: making its state directory {}",
                home.display()
            )
        })?;
        if let Some((uid, gid)) = spec.ids {
            // Its own state directory is its to write.
            std::os::unix::fs::chown(&home, Some(uid), Some(gid)).with_context(|| {
                format!(
                    "server `{name}`: giving its state directory {} to uid {uid}",
                    home.display()
                )
            })?;
        }
        let landlock = match spec.sandbox {
            sandbox::Mode::Off => {
                tracing::warn!(server = %name, "NO FILE SYSTEM SANDBOX for this server (sandbox = \"off\"): it may read and write whatever its user may");
                None
            }
            mode => {
                let resolved = std::fs::canonicalize(&spec.program).ok();
                let mut programs = vec![spec.program.as_path()];
                programs.extend(resolved.as_deref());
                let (read, write) = sandbox::paths(
                    &programs,
                    spec.cwd.as_deref(),
                    &home,
                    &spec.read_paths,
                    &spec.write_paths,
                );
                let ruleset = sandbox::ruleset(&read, &write).map_err(|e| {
                    anyhow::anyhow!("server `{name}`: building its Landlock sandbox: {e}")
                })?;
                if ruleset.is_none() {
                    if mode == sandbox::Mode::Required || required {
                        anyhow::bail!(
                            "server `{name}`: its file system sandbox needs Landlock (Linux 5.13+, \
                             enabled at boot: lsm=...,landlock), which this kernel does not have; \
                             set sandbox = \"off\" to run it unconfined"
                        );
                    }
                    tracing::warn!(server = %name, "NO FILE SYSTEM SANDBOX for this server: the kernel has no Landlock (Linux 5.13+, enabled at boot); it may read and write whatever its user may");
                }
                ruleset
            }
        };
        let limits = apply_limits(name, cgroup.as_deref(), &spec.limits);
        Ok(Arc::new(Self {
            name: name.to_owned(),
            spec,
            upstream,
            cgroup,
            home,
            ready: Arc::default(),
            up: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            sandboxed: landlock.is_some(),
            limits,
            landlock,
            cap_last: crate::sys::cap_last(),
            up_since: AtomicU64::new(0),
            last_exit: std::sync::Mutex::default(),
            instance: instance.to_owned(),
            state_file: Some(state::file(status_dir, instance, name)),
            stop: CancellationToken::new(),
        }))
    }

    /// Runs the server until [`Server::stop`]: starts it, waits for it, starts it again by its
    /// policy. Spawn it on the runtime (the child's parent-death signal follows the spawning
    /// thread: a runtime worker, alive as long as the gateway).
    pub async fn run(self: Arc<Self>, grace: Duration) {
        let mut backoff = policy::Backoff::default();
        loop {
            let started = Instant::now();
            let status = match self.spawn() {
                Ok(child) => {
                    self.save_state().await;
                    self.watch(child, grace).await
                }
                Err(e) => {
                    tracing::error!(server = %self.name, program = %self.spec.program.display(), error = %e, "could not start the server");
                    None
                }
            };
            self.up.store(false, Ordering::Relaxed);
            self.ready.store(false, Ordering::Relaxed);
            self.pid.store(0, Ordering::Relaxed);
            self.up_since.store(0, Ordering::Relaxed);
            let clean = status.is_some_and(|s| s.success());
            let ran = started.elapsed();
            let shown = status.map_or_else(|| "not started".to_owned(), |s| s.to_string());
            *self
                .last_exit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(shown.clone());
            if self.stop.is_cancelled() {
                break;
            }
            self.save_state().await;
            if !self.spec.restart.restarts(clean) {
                tracing::warn!(server = %self.name, status = %shown, restart = self.spec.restart.name(), "the server exited and is not started again (its restart policy)");
                break;
            }
            let delay = backoff.after(ran);
            tracing::warn!(server = %self.name, status = %shown, ran_ms = ran.as_millis() as u64, retry_in_ms = delay.as_millis() as u64, "the server exited; starting it again");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => break,
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        // Stopped with the gateway: nothing to show any more. Down by its policy: its last
        // state stays for `status`.
        if self.stop.is_cancelled()
            && let Some(file) = &self.state_file
        {
            let _ = std::fs::remove_file(file);
            // The directory goes with the last server of the last gateway using it.
            if let Some(dir) = file.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        if let Some(dir) = &self.cgroup {
            kill_all(dir);
            // Empty now (or soon): the directory goes with it.
            for _ in 0..20 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// What `status` shows of it now.
    pub fn state(&self) -> state::ServerState {
        state::ServerState {
            server: self.name.clone(),
            instance: self.instance.clone(),
            gateway_pid: std::process::id(),
            pid: self.pid.load(Ordering::Relaxed),
            up_since_unix: self.up_since.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_exit: self
                .last_exit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            cgroup: self.cgroup.as_ref().map(|c| c.display().to_string()),
            sandbox: self.sandboxed,
            limits: self
                .limits
                .iter()
                .map(|(l, enforced)| (l.key.to_owned(), l.shown.clone(), *enforced))
                .collect(),
        }
    }

    /// Writes its state file (off the runtime's threads); a failure is logged, once per
    /// write, and changes nothing else.
    async fn save_state(&self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let state = self.state();
        let written = tokio::task::spawn_blocking(move || state::write(&path, &state)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(server = %self.name, error = %e, "could not write the server's state for `mcp-gateway status`");
        }
    }

    /// Stops the server: SIGTERM to its process group, SIGKILL after the grace period.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.spec.program);
        cmd.args(&self.spec.argv[1..])
            .env_clear()
            .envs(env::child_env(
                &self.spec.env,
                &self.home.display().to_string(),
            ))
            .current_dir(self.spec.cwd.as_deref().unwrap_or(&self.home))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.spec.ids {
            // setgid, setgroups(0) and setuid happen before `supervise_child`'s steps, which
            // then run as that user (the parent-death signal is set after the switch, which
            // would clear it).
            cmd.uid(uid).gid(gid);
        }
        let procs = match &self.cgroup {
            Some(dir) => Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?,
            ),
            None => None,
        };
        use std::os::fd::AsRawFd;
        crate::sys::supervise_child(
            cmd.as_std_mut(),
            crate::sys::ChildConfinement {
                procs: procs.as_ref().map(AsRawFd::as_raw_fd),
                landlock: self.landlock.as_ref().map(AsRawFd::as_raw_fd),
                cap_last: self.cap_last,
            },
        );
        let mut child = cmd.spawn()?;
        drop(procs);
        let pid = child.id().unwrap_or(0);
        self.pid.store(pid, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
        self.up_since.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Ordering::Relaxed,
        );
        tracing::info!(server = %self.name, pid, cgroup = ?self.cgroup, "started the server");
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(self.name.clone(), "stdout", out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(self.name.clone(), "stderr", err));
        }
        Ok(child)
    }

    /// Waits for the child, marking the server ready once its upstream accepts connections;
    /// on stop, terminates it. Its exit status (`None` if it could not be read).
    async fn watch(
        &self,
        mut child: tokio::process::Child,
        grace: Duration,
    ) -> Option<std::process::ExitStatus> {
        let pid = child.id().unwrap_or(0);
        let readiness = async {
            loop {
                if self.accepts().await {
                    self.ready.store(true, Ordering::Relaxed);
                    tracing::info!(server = %self.name, pid, "the server accepts connections");
                    return;
                }
                tokio::time::sleep(READY_POLL).await;
            }
        };
        tokio::select! {
            status = child.wait() => return status.ok(),
            () = self.stop.cancelled() => {}
            () = async { readiness.await; std::future::pending::<()>().await } => {}
        }
        let status = tokio::select! {
            status = child.wait() => return status.ok(),
            () = self.stop.cancelled() => {
                // Stopping: the whole session, politely, then not.
                crate::sys::signal_group(pid, libc::SIGTERM);
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        tracing::warn!(server = %self.name, pid, "the server did not stop within the grace period: killed");
                        crate::sys::signal_group(pid, libc::SIGKILL);
                        child.wait().await.ok()
                    }
                }
            }
        };
        tracing::info!(server = %self.name, pid, "stopped the server");
        status
    }

    /// Whether the upstream accepts a connection now.
    async fn accepts(&self) -> bool {
        let connect = async {
            match &self.upstream {
                UpstreamAddr::Tcp { authority, .. } => {
                    tokio::net::TcpStream::connect(authority.as_str())
                        .await
                        .is_ok()
                }
                UpstreamAddr::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            }
        };
        tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .unwrap_or(false)
    }
}

/// Each line the server writes, as a log line tagged with its name.
async fn forward_lines(server: String, stream: &'static str, out: impl AsyncRead + Unpin) {
    read_lines(out, |line, cut| emit(&server, stream, line, cut)).await;
}

/// Calls `each` with every line of `out` (without its newline), keeping at most [`MAX_LINE`]
/// bytes of a line (`cut` says when more was dropped): a server writing without newlines
/// cannot grow the gateway's memory.
async fn read_lines(out: impl AsyncRead + Unpin, mut each: impl FnMut(&[u8], bool)) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut cut = false;
        loop {
            let Ok(buf) = reader.fill_buf().await else {
                return;
            };
            if buf.is_empty() {
                if !line.is_empty() || cut {
                    each(&line, cut);
                }
                return;
            }
            let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            cut |= chunk.len() > room;
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = done.unwrap_or(buf.len());
            reader.consume(used);
            if done.is_some() {
                break;
            }
        }
        each(&line, cut);
    }
}

fn emit(server: &str, stream: &'static str, line: &[u8], cut: bool) {
    let text = shown(line);
    if cut {
        tracing::info!(server = %server, stream, cut = true, "{text}");
    } else {
        tracing::info!(server = %server, stream, "{text}");
    }
}

/// A line of a server's output as the log shows it: UTF-8 (lossy), control characters escaped.
pub fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    text.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_shown_safely() {
        assert_eq!(shown(b"listening on 8000\r"), "listening on 8000");
        assert_eq!(shown(b"\x1b[31mred\x1b[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(shown(b"bad \xff utf8"), "bad \u{fffd} utf8");
        assert_eq!(shown(b"a\tb"), "a\tb");
    }

    #[test]
    fn cgroup_names_differ_by_instance() {
        assert_ne!(cgroup_name("fetch", "a"), cgroup_name("fetch", "b"));
        assert!(cgroup_name("fetch", "a").starts_with("mcp-server-fetch-"));
    }

    #[test]
    fn long_and_unterminated_lines_are_cut_not_lost() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lines = |input: Vec<u8>| {
            let mut got = Vec::new();
            rt.block_on(read_lines(std::io::Cursor::new(input), |line, cut| {
                got.push((line.len(), cut));
            }));
            got
        };
        let mut huge = vec![b'x'; MAX_LINE * 3];
        huge.extend_from_slice(b"\nok\nlast without newline");
        assert_eq!(
            lines(huge),
            [(MAX_LINE, true), (2, false), (20, false)],
            "the long line cut, the next ones whole, the unterminated last one kept"
        );
        assert_eq!(
            lines(b"a\n\nb\n".to_vec()),
            [(1, false), (0, false), (1, false)]
        );
        assert!(lines(Vec::new()).is_empty());
    }
}
