//! Test-owned cgroups, removed by an RAII guard even when the test panics.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

pub use mcp_gateway::ebpf::system::cgroup2_mount;

/// A cgroup made by this test under the cgroup-v2 root. Never the root itself.
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2>/mcp-gateway-test-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = cgroup2_mount().expect("a cgroup v2 mount");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!(
            "mcp-gateway-test-{}-{n}-{label}",
            std::process::id()
        ));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (or finds) the child cgroup `name`; [`Drop`] removes it with its parent.
    pub fn child(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("creating cgroup {}: {e}", dir.display()),
        }
        dir
    }

    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("cgroup metadata").ino()
    }
}

/// Moves the processes of `dir` and of its descendants to `to`, then removes them, deepest
/// first.
fn remove_tree(dir: &Path, to: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), to);
            }
        }
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines() {
            let _ = fs::write(to.join("cgroup.procs"), pid);
        }
    }
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("warning: could not remove test cgroup {}", dir.display());
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes still inside go back to the parent so the directories can be removed.
        if let Some(parent) = self.path.parent() {
            remove_tree(&self.path, parent);
        }
    }
}
