//! What `mcp-gateway status` shows of the servers a gateway starts: each running gateway keeps
//! one small JSON file per server in a directory of the run-time file system, named after the
//! pin directory (the instances `status --pin-dir` reports on), rewritten on every start and
//! exit of the server and removed when the gateway stops.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state of one supervised server, as `status` reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    pub server: String,
    pub instance: String,
    /// The gateway supervising it (its liveness says whether this file is current).
    pub gateway_pid: u32,
    /// The server's process now, 0 while it is down.
    pub pid: u32,
    /// When its current run started, seconds since the Unix epoch (0 while down).
    pub up_since_unix: u64,
    pub restarts: u64,
    /// How its last run ended (`exit status: 3`, `signal: 9 (SIGKILL)`), if one did.
    pub last_exit: Option<String>,
    pub cgroup: Option<String>,
    /// Whether its Landlock sandbox is in force.
    pub sandbox: bool,
    /// Each limit: key, value as configured, whether the kernel enforces it.
    pub limits: Vec<(String, String, bool)>,
}

/// The directory of the state files for instances using `pin_dir`.
pub fn dir(pin_dir: &Path) -> PathBuf {
    let runtime = std::env::var_os("RUNTIME_DIRECTORY")
        .map(|d| PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or("")))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/run/mcp-gateway"));
    runtime.join(format!(
        "servers-{:016x}",
        gateway_common::fnv1a(pin_dir.as_os_str().as_encoded_bytes())
    ))
}

/// The state file of `server` of `instance`.
pub fn file(dir: &Path, instance: &str, server: &str) -> PathBuf {
    dir.join(format!(
        "{:016x}-{server}.json",
        gateway_common::fnv1a(instance.as_bytes())
    ))
}

/// Every state file in `dir` that parses, sorted by instance and server.
pub fn read_all(dir: &Path) -> Vec<ServerState> {
    let mut out: Vec<ServerState> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    out.sort_by(|a, b| (&a.instance, &a.server).cmp(&(&b.instance, &b.server)));
    out
}

/// Writes `state` to `path` whole (a reader never sees half of it).
pub fn write(path: &Path, state: &ServerState) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(state).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_files_are_per_pin_dir_instance_and_server() {
        let root = std::env::temp_dir().join(format!("mcp-gateway-state-{}", std::process::id()));
        let a = dir(Path::new("/sys/fs/bpf/a"));
        assert_ne!(a, dir(Path::new("/sys/fs/bpf/b")));
        let d = root.join(a.file_name().unwrap());
        assert_ne!(file(&d, "i1", "fetch"), file(&d, "i2", "fetch"));
        let state = ServerState {
            server: "fetch".into(),
            instance: "i1".into(),
            pid: 42,
            restarts: 2,
            last_exit: Some("exit status: 3".into()),
            limits: vec![("pids_max".into(), "16".into(), false)],
            ..ServerState::default()
        };
        write(&file(&d, "i1", "fetch"), &state).unwrap();
        std::fs::write(d.join("garbage.json"), "{not json").unwrap();
        assert_eq!(read_all(&d), [state], "garbage is skipped");
        std::fs::remove_dir_all(&root).unwrap();
        assert!(read_all(&d).is_empty());
    }
}
