//! Facts about this host the kernel layer depends on: mounts, kernel version, capabilities,
//! cgroups. Everything is read from /proc and /sys; nothing here changes the system except
//! [`mount_bpffs`] and [`move_into_own_cgroup`].
use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Where bpffs is mounted when the gateway mounts it.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Kernel 5.8: bpf_link for cgroups (5.7), BPF ring buffers for aya-log (5.8), CAP_BPF (5.8).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// A capability the kernel layer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub bit: u32,
    pub name: &'static str,
    pub why: &'static str,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    bit: 12,
    name: "CAP_NET_ADMIN",
    why: "load and attach cgroup network programs",
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    bit: 21,
    name: "CAP_SYS_ADMIN",
    why: "mount bpffs at /sys/fs/bpf when it is not mounted",
};
pub const CAP_BPF: Capability = Capability {
    bit: 39,
    name: "CAP_BPF",
    why: "create BPF maps and load programs",
};

/// (mount point, fstype) of every mount, from /proc/self/mounts (`/proc/mounts` is a link to
/// it that systemd's `ProcSubset=pid` hides).
fn mounts() -> io::Result<Vec<(PathBuf, String)>> {
    let text = fs::read_to_string("/proc/self/mounts")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            // /proc/mounts escapes spaces as \040.
            Some((PathBuf::from(dir.replace("\\040", " ")), fstype.to_owned()))
        })
        .collect())
}

/// The cgroup-v2 mount point (on hybrid hosts it is below /sys/fs/cgroup, e.g. `unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    mounts()
        .ok()?
        .into_iter()
        .find_map(|(dir, fstype)| (fstype == "cgroup2").then_some(dir))
}

/// Why the kernel layer can't work on this host, and the fix.
pub const NO_CGROUP2: &str = "no cgroup v2 mount (see /proc/self/mounts); mount it (mount -t \
                              cgroup2 none /sys/fs/cgroup) or boot with \
                              systemd.unified_cgroup_hierarchy=1";

/// The cgroup to attach the programs to: `chosen` (`--cgroup`), which must be a directory of the
/// cgroup-v2 mount, or the mount itself (the whole host).
pub fn attach_cgroup(chosen: Option<&Path>) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let mount = cgroup2_mount().context(NO_CGROUP2)?;
    let Some(chosen) = chosen else {
        return Ok(mount);
    };
    let real = fs::canonicalize(chosen)
        .with_context(|| format!("--cgroup {}: no such directory", chosen.display()))?;
    if !(real.is_dir() && real.starts_with(&mount)) {
        anyhow::bail!(
            "--cgroup {}: not a cgroup-v2 directory. cgroup v2 is mounted at {}: give a \
             directory under it",
            chosen.display(),
            mount.display()
        );
    }
    Ok(real)
}

/// Whether `path` lies on a mounted bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    mounts().is_ok_and(|all| {
        all.iter()
            .any(|(dir, fstype)| fstype == "bpf" && path.starts_with(dir))
    })
}

/// Mounts bpffs at [`BPFFS`] (needs CAP_SYS_ADMIN).
pub fn mount_bpffs() -> io::Result<()> {
    let target = CString::new(BPFFS).map_err(io::Error::other)?;
    let fstype = CString::new("bpf").map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call; no
    // mount data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The running kernel's (major, minor), from uname(2).
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = kernel_release();
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel release string (uname -r). From uname(2), not /proc/sys, which a sandboxed
/// service may not see.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated on success.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return "unknown".to_owned();
    }
    let release = &name.release;
    let bytes: Vec<u8> = release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether the kernel exposes its BTF (CO-RE; also what `bpftool` and aya use to probe).
pub fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").is_file()
}

/// This process's effective capability set.
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has_cap(cap: Capability) -> bool {
    effective_caps() & (1 << cap.bit) != 0
}

/// Capabilities enforcement needs that this process lacks. CAP_SYS_ADMIN covers CAP_BPF, and is
/// needed itself only to mount bpffs.
pub fn missing_caps(need_mount: bool) -> Vec<Capability> {
    let mut missing = Vec::new();
    if !has_cap(CAP_BPF) && !has_cap(CAP_SYS_ADMIN) {
        missing.push(CAP_BPF);
    }
    if !has_cap(CAP_NET_ADMIN) {
        missing.push(CAP_NET_ADMIN);
    }
    if need_mount && !has_cap(CAP_SYS_ADMIN) {
        missing.push(CAP_SYS_ADMIN);
    }
    missing
}

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// This process's cgroup-v2 directory, from /proc/self/cgroup (`0::/path`).
pub fn current_cgroup(mount: &Path) -> io::Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 entry (0::) in /proc/self/cgroup"))?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Name of the dedicated child cgroup the gateway moves into when it shares its cgroup.
pub const OWN_CGROUP: &str = "mcp-gateway";

/// Makes sure the gateway runs in a cgroup of its own and returns it.
///
/// A systemd service cgroup (`*.service`) or a cgroup named [`OWN_CGROUP`] is already ours.
/// Anything else (the root, a login session, a container's cgroup shared with other
/// processes) is shared: the gateway creates `<current>/mcp-gateway` and moves itself there.
pub fn move_into_own_cgroup(mount: &Path) -> io::Result<PathBuf> {
    let current = current_cgroup(mount)?;
    let name = current.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    if name.ends_with(b".service") || name == OWN_CGROUP.as_bytes() {
        return Ok(current);
    }
    let own = current.join(OWN_CGROUP);
    match fs::create_dir(&own) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Writing 0 moves the writing process (all its threads).
    fs::write(own.join("cgroup.procs"), "0")?;
    Ok(own)
}

/// Finds the cgroup directory with inode `id` below `mount` (for reports). Bounded depth.
pub fn find_cgroup_by_id(mount: &Path, id: u64) -> Option<PathBuf> {
    fn walk(dir: &Path, id: u64, depth: u32) -> Option<PathBuf> {
        if cgroup_id(dir).ok()? == id {
            return Some(dir.to_owned());
        }
        if depth == 0 {
            return None;
        }
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| walk(&e.path(), id, depth - 1))
    }
    walk(mount, id, 8)
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF memory to it.
pub fn raise_memlock() {
    if kernel_version().is_some_and(|v| v >= (5, 11)) {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct; failure only means map creation may fail later, with its
    // own error.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}
