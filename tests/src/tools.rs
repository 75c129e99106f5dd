//! Tools the tests need from Debian packages, installed on first use.
//!
//! `ensure_apt` installs missing packages with apt-get (as root), once per process (a mutex) and
//! once per machine at a time (a file lock), so parallel test binaries don't run apt twice. If
//! it can't, the test fails with the command to run: a missing tool never makes a test pass.
use std::{
    env,
    fs::File,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
};

/// `name` on PATH, or in /usr/bin and /usr/sbin (where Debian puts it).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Makes sure `binaries` exist, installing `package` when one is missing; returns their paths
/// in order. Panics with the fix when that fails.
pub fn ensure_apt(package: &str, binaries: &[&str]) -> Vec<PathBuf> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let found = || {
        binaries
            .iter()
            .map(|b| find_binary(b))
            .collect::<Option<Vec<_>>>()
    };
    if let Some(paths) = found() {
        return paths;
    }
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lock = File::create("/tmp/mcp-gateway-tests-apt.lock").expect("creating the apt lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "locking /tmp/mcp-gateway-tests-apt.lock");
    // Another process may have installed it while we waited.
    if let Some(paths) = found() {
        return paths;
    }
    let fix =
        format!("sudo apt-get update && sudo apt-get install -y --no-install-recommends {package}");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "{binaries:?} missing and this test is not root to install them; run: {fix}"
    );
    for args in [
        vec!["update"],
        vec!["install", "-y", "--no-install-recommends", package],
    ] {
        eprintln!("tests: apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running apt-get: {e}; run: {fix}"));
        assert!(
            status.success(),
            "apt-get {args:?} failed ({status}); run: {fix}"
        );
    }
    found()
        .unwrap_or_else(|| panic!("{package} installed but {binaries:?} still missing; run: {fix}"))
}

/// `promtool` (Debian's `prometheus` package).
pub fn promtool() -> PathBuf {
    ensure_apt("prometheus", &["promtool"]).remove(0)
}

/// The `prometheus` server (Debian's `prometheus` package).
pub fn prometheus() -> PathBuf {
    ensure_apt("prometheus", &["prometheus"]).remove(0)
}
