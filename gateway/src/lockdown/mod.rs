//! The kill-switch. `mcp-gateway lockdown` cuts every protected port (or the ports given) for
//! everyone, loopback included: the locks go into the pinned maps the kernel programs read, so
//! new connections fail at once in every instance's cgroup, and the established ones are reset.
//! It holds while gateways restart or crash, until `mcp-gateway unlock`. A gateway that sees
//! one of its ports locked answers anything that still reaches it with 503.
#[allow(unsafe_code, reason = "sock_diag netlink system calls")]
pub mod sockets;

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::ebpf::{
    enforce::{self, LOCK_TIMEOUT},
    locks::{Lock, LockMaps, is_locked},
    maps::ConfigMaps,
    policy::Claim,
    registry::{LayoutLock, Registry, instance_id},
    release, system,
};

/// The instance that owns the programs `lockdown --port` attaches when no gateway ever did.
pub const LOCKDOWN_INSTANCE: &str = "lockdown";

/// How often a gateway reads the lock state.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// What `lockdown` did.
#[derive(Debug)]
pub struct Engaged {
    /// Every lock now in force.
    pub locks: Vec<Lock>,
    /// The ports locked now (protected ports for an every-port lock).
    pub ports: BTreeSet<u16>,
    /// Connections reset in this network namespace.
    pub reset: usize,
    /// Why resetting connections failed, if it did (the locks hold regardless).
    pub reset_error: Option<String>,
    /// Whether this command had to attach the programs (no gateway had).
    pub attached: bool,
    /// From the start of the command to the locks being in the maps.
    pub took: Duration,
}

/// The capabilities `command` needs (`lockdown` resets connections too), by what for.
fn check_privileges(command: &str, resets: bool) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if !system::has_cap(system::CAP_BPF) && !system::has_cap(system::CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (to write the pinned lock maps)");
    }
    if resets && !system::has_cap(system::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (to reset established connections)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "{command} needs {}: run it as root (sudo mcp-gateway {command} ...) or grant the \
         capabilities",
        missing.join(" and ")
    )
}

/// The protected ports of the maps in `pin_dir`.
fn protected_ports(pin_dir: &Path) -> anyhow::Result<BTreeSet<u16>> {
    Ok(match ConfigMaps::open(pin_dir)? {
        Some(maps) => maps.read()?.ports.keys().copied().collect(),
        None => BTreeSet::new(),
    })
}

/// Locks `ports` (every protected port when empty) in `pin_dir`, for `reason`, then resets the
/// established connections on them. `cgroup` is where to attach the programs if no gateway
/// ever did (only with `ports` given).
pub fn engage(
    pin_dir: &Path,
    cgroup: Option<&Path>,
    ports: &[u16],
    reason: &str,
) -> anyhow::Result<Engaged> {
    let started = Instant::now();
    check_privileges("lockdown", true)?;
    let mut attached = false;
    let mut maps = match LockMaps::open(pin_dir)? {
        Some(maps) => maps,
        None if ports.is_empty() => bail!(
            "nothing to lock: no gateway has run with kernel enforcement on {} (no protected \
             ports are pinned there). Pass --port PORT to lock a port anyway, or --pin-dir for \
             another pin directory",
            pin_dir.display()
        ),
        None => {
            attach_for_lockdown(pin_dir, cgroup)?;
            attached = true;
            LockMaps::open(pin_dir)?.context("the lock maps are missing right after attaching")?
        }
    };
    {
        let _lock = LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)?;
        maps.engage(ports, reason)?;
    }
    let took = started.elapsed();
    let locks = maps.read()?;
    let protected = protected_ports(pin_dir)?;
    let locked: BTreeSet<u16> = if ports.is_empty() {
        protected.clone()
    } else {
        ports.iter().copied().collect()
    };
    let (reset, reset_error) = match reset_connections(&locks, &protected) {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e.to_string())),
    };
    Ok(Engaged {
        locks,
        ports: locked,
        reset,
        reset_error,
        attached,
        took,
    })
}

/// Attaches the programs with an instance of its own claiming nothing: the locks need programs
/// to enforce them.
fn attach_for_lockdown(pin_dir: &Path, cgroup: Option<&Path>) -> anyhow::Result<()> {
    let cgroup = system::attach_cgroup(cgroup)?;
    let claim = Claim {
        instance: LOCKDOWN_INSTANCE.to_owned(),
        ..Claim::default()
    };
    let enforcement = enforce::enforce(enforce::Options {
        cgroup,
        pin_dir: pin_dir.to_owned(),
        claim,
        own_cgroup: None,
    })
    .context("attaching the kernel programs to enforce the lockdown")?;
    // The pins hold the programs after this process exits.
    drop(enforcement);
    Ok(())
}

/// Resets the connected sockets on locked ports in this network namespace.
fn reset_connections(locks: &[Lock], protected: &BTreeSet<u16>) -> std::io::Result<usize> {
    let sockets = sockets::tcp_sockets()?;
    let doomed = sockets::to_reset(&sockets, |port| {
        is_locked(locks, port, protected.contains(&port))
    });
    let mut reset = 0;
    for socket in &doomed {
        sockets::destroy(socket)?;
        reset += 1;
    }
    Ok(reset)
}

/// What `unlock` did.
#[derive(Debug)]
pub struct Released {
    pub released: Vec<Lock>,
    pub remaining: Vec<Lock>,
    /// Whether the programs `lockdown --port` attached went with the last lock.
    pub detached: bool,
}

/// Releases the locks of `ports` (every lock when `None`).
pub fn release(pin_dir: &Path, ports: Option<&[u16]>) -> anyhow::Result<Released> {
    check_privileges("unlock", false)?;
    let mut maps = LockMaps::open(pin_dir)?.with_context(|| {
        format!(
            "nothing to unlock: no lock maps are pinned in {}",
            pin_dir.display()
        )
    })?;
    let (released, remaining) = {
        let _lock = LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)?;
        let released = maps.release(ports)?;
        (released, maps.read()?)
    };
    // The programs only the lockdown attached go once nothing is locked and nothing else is
    // registered.
    let mut detached = false;
    if remaining.is_empty()
        && let Some(registry) = Registry::open(pin_dir)?
    {
        let instances = registry.instances()?;
        let only_lockdown = instances.len() == 1
            && instances[0].id == instance_id(LOCKDOWN_INSTANCE)
            && instances[0].claim.ports.is_empty();
        drop(registry);
        if only_lockdown {
            release::withdraw(pin_dir, LOCKDOWN_INSTANCE)?;
            detached = true;
        }
    }
    Ok(Released {
        released,
        remaining,
        detached,
    })
}

/// One server as the lock watcher sees it.
#[derive(Debug)]
pub struct Watched {
    pub name: String,
    pub ports: Vec<u16>,
    /// Set while one of `ports` is locked.
    pub locked: Arc<AtomicBool>,
}

/// Reads the lock state every [`WATCH_EVERY`] and flags the servers whose ports are locked;
/// `any` is set while any of them is.
pub async fn watch(pin_dir: std::path::PathBuf, servers: Vec<Watched>, any: Arc<AtomicBool>) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        every.tick().await;
        let dir = pin_dir.clone();
        let read =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Lock>, BTreeSet<u16>)> {
                let locks = match LockMaps::open(&dir)? {
                    Some(maps) => maps.read()?,
                    None => Vec::new(),
                };
                Ok((locks, protected_ports(&dir)?))
            })
            .await;
        let Ok(Ok((locks, protected))) = read else {
            continue;
        };
        let mut any_locked = false;
        for server in &servers {
            let locked = server
                .ports
                .iter()
                .any(|p| is_locked(&locks, *p, protected.contains(p)));
            any_locked |= locked;
            let was = server.locked.swap(locked, Ordering::Relaxed);
            match (was, locked) {
                (false, true) => {
                    let why: Vec<&str> = locks.iter().map(|l| l.reason.as_str()).collect();
                    tracing::warn!(server = %server.name, reason = %why.join("; "), "LOCKDOWN ENGAGED: this server's ports are cut; answering 503 to anything that still reaches it");
                }
                (true, false) => {
                    tracing::warn!(server = %server.name, "lockdown released: serving again")
                }
                _ => {}
            }
        }
        any.store(any_locked, Ordering::Relaxed);
    }
}
