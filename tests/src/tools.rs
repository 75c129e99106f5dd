//! Tools the tests need from Debian packages, installed on first use.
//!
//! `ensure_apt` installs missing packages with apt-get (as root), once per process (a mutex) and
//! once per machine at a time (a file lock), so parallel test binaries don't run apt twice. If
//! it can't, the test fails with the command to run: a missing tool never makes a test pass.
use std::{
    env,
    fs::{File, OpenOptions},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
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
    let _lock = FileLock::acquire(Path::new("/tmp/mcp-gateway-tests-apt.lock"));
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
    let run = |program: &str, args: &[&str]| {
        eprintln!("tests: {program} {}", args.join(" "));
        Command::new(program)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}; run: {fix}"))
    };
    // Wait for a dpkg lock held by another installer (xtask, a person) instead of failing.
    let apt = |args: &[&str]| {
        run(
            "apt-get",
            &[&["-o", "DPkg::Lock::Timeout=600"], args].concat(),
        )
    };
    let update = apt(&["update"]);
    let install_args = ["install", "-y", "--no-install-recommends", package];
    let mut install = apt(&install_args);
    if !install.status.success() {
        // A package whose configuration failed (seen once with chromium: dpkg exit 2) is
        // finished by `dpkg --configure -a`; then try once more.
        let _ = run("dpkg", &["--configure", "-a"]);
        install = apt(&install_args);
    }
    let text = String::from_utf8_lossy(&install.stdout) + String::from_utf8_lossy(&install.stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        install.status.success(),
        "installing {package} failed; run: {fix}\napt-get update: {}\napt-get install:\n{}",
        update.status,
        lines[lines.len().saturating_sub(30)..].join("\n")
    );
    found()
        .unwrap_or_else(|| panic!("{package} installed but {binaries:?} still missing; run: {fix}"))
}

/// An exclusive `flock` on a file, held until drop: serialises installs across test processes.
pub struct FileLock(#[expect(dead_code, reason = "held for its lock")] File);

impl FileLock {
    pub fn acquire(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening lock file {}: {e}", path.display()));
        // SAFETY: a valid, open descriptor; the lock is released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self(file)
    }
}

/// `promtool` (Debian's `prometheus` package).
pub fn promtool() -> PathBuf {
    ensure_apt("prometheus", &["promtool"]).remove(0)
}

/// The `prometheus` server (Debian's `prometheus` package).
pub fn prometheus() -> PathBuf {
    ensure_apt("prometheus", &["prometheus"]).remove(0)
}
