//! `mcp-gateway doctor`: what kernel enforcement needs, what is missing, and the fix for each.
use std::path::Path;

use super::{locks, pins, release, system};

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Whether enforcement can't work without it (else it's advice).
    pub required: bool,
    pub detail: String,
    /// What to do when not ok.
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, required: bool, detail: String, fix: &str) -> Check {
    Check {
        name,
        ok,
        required,
        detail,
        fix: (!ok).then(|| fix.to_owned()),
    }
}

/// Runs every check. `pin_dir` is where to look for programs already in force.
pub fn run(pin_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let (min_major, min_minor) = system::MIN_KERNEL;
    let version = system::kernel_version();
    checks.push(check(
        "kernel",
        version.is_some_and(|v| v >= system::MIN_KERNEL),
        true,
        format!(
            "Linux {} (needs {min_major}.{min_minor}+)",
            system::kernel_release()
        ),
        "upgrade to Linux 5.8 or newer (bpf_link for cgroups, BPF ring buffer, CAP_BPF)",
    ));
    checks.push(check(
        "btf",
        system::has_btf(),
        false,
        "/sys/kernel/btf/vmlinux".to_owned(),
        "optional: build the kernel with CONFIG_DEBUG_INFO_BTF=y (helps bpftool and debugging; \
         the gateway's programs don't need it)",
    ));
    let cgroup2 = system::cgroup2_mount();
    checks.push(check(
        "cgroup v2",
        cgroup2.is_some(),
        true,
        cgroup2.as_ref().map_or_else(
            || "no cgroup2 mount in /proc/self/mounts".to_owned(),
            |p| format!("mounted at {}", p.display()),
        ),
        "mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or boot with \
         systemd.unified_cgroup_hierarchy=1",
    ));
    let bpffs = system::on_bpffs(Path::new(system::BPFFS));
    checks.push(check(
        "bpffs",
        bpffs || system::has_cap(system::CAP_SYS_ADMIN),
        true,
        if bpffs {
            format!("mounted at {}", system::BPFFS)
        } else {
            format!(
                "not mounted at {} (the gateway mounts it when it has CAP_SYS_ADMIN)",
                system::BPFFS
            )
        },
        "`mount -t bpf bpf /sys/fs/bpf` (or add it to /etc/fstab), or grant CAP_SYS_ADMIN",
    ));
    for cap in [
        system::CAP_BPF,
        system::CAP_NET_ADMIN,
        system::CAP_SYS_ADMIN,
    ] {
        let has = system::has_cap(cap)
            || (cap == system::CAP_BPF && system::has_cap(system::CAP_SYS_ADMIN));
        let required = cap != system::CAP_SYS_ADMIN || !bpffs;
        checks.push(check(
            cap.name,
            has,
            required,
            format!("to {}", cap.why),
            "run as root, or grant it (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN; \
             CAP_SYS_ADMIN only when bpffs is not mounted)",
        ));
    }
    checks.push(attached(pin_dir, cgroup2.as_deref()));
    checks.push(lockdown(pin_dir));
    checks
}

/// Whether a lockdown is in force, with its reason and time.
fn lockdown(pin_dir: &Path) -> Check {
    let locks = match locks::LockMaps::open(pin_dir).and_then(|m| m.map(|m| m.read()).transpose()) {
        Ok(locks) => locks.unwrap_or_default(),
        Err(e) => {
            return check(
                "lockdown",
                false,
                false,
                format!("reading the lock maps: {e}"),
                "run doctor as root to see them",
            );
        }
    };
    if locks.is_empty() {
        return check("lockdown", true, false, "none".to_owned(), "");
    }
    let described: Vec<String> = locks.iter().map(locks::Lock::describe).collect();
    check(
        "lockdown",
        false,
        false,
        format!("IN FORCE: {}", described.join("; ")),
        "`mcp-gateway unlock` when the incident is over",
    )
}

/// Whether programs are pinned in `pin_dir`, on which cgroups, and for which instances.
fn attached(pin_dir: &Path, mount: Option<&Path>) -> Check {
    let found = match pins::inventory(pin_dir) {
        Ok(found) => found,
        Err(e) => {
            return check(
                "attached",
                false,
                false,
                format!("reading {}: {e}", pin_dir.display()),
                "run doctor as root to see the pins",
            );
        }
    };
    let mut extra = String::new();
    if !found.other_layouts.is_empty() {
        extra = format!(
            "; {} entries of another build's map layout (`mcp-gateway status` lists them)",
            found.other_layouts.len()
        );
    }
    if found.links.is_empty() {
        return check(
            "attached",
            false,
            false,
            format!("no programs pinned in {}{extra}", pin_dir.display()),
            "start `mcp-gateway run` (with --ebpf auto or required) to attach them",
        );
    }
    let mut cgroups: Vec<u64> = found.links.iter().map(|l| l.cgroup_id).collect();
    cgroups.dedup();
    let places: Vec<String> = cgroups
        .iter()
        .map(|id| {
            mount
                .and_then(|m| system::find_cgroup_by_id(m, *id))
                .map_or_else(
                    || format!("cgroup id {id} (not found; removed?)"),
                    |p| p.display().to_string(),
                )
        })
        .collect();
    let instances = match release::instances(pin_dir) {
        Ok(list) => list
            .iter()
            .map(|i| {
                let state = if i.is_alive() {
                    "running"
                } else {
                    "NOT RUNNING"
                };
                format!("{} ({state})", i.claim.instance)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("unreadable registry: {e}"),
    };
    check(
        "attached",
        true,
        false,
        format!(
            "{} link(s) on {}; instances: {}{extra}. Ports and owners: `mcp-gateway status`",
            found.links.len(),
            places.join(", "),
            if instances.is_empty() {
                "none".to_owned()
            } else {
                instances
            },
        ),
        "",
    )
}

/// Whether every required check passed.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok || !c.required)
}
