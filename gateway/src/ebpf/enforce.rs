//! Loading, attaching and pinning: turns a [`Plan`] into programs in force on a cgroup.
//!
//! Everything is pinned under the pin directory, so enforcement stays when the gateway dies
//! (fails closed) and counters survive restarts. A restarted gateway of the same build takes
//! over its pinned links as they are and rewrites the pinned config maps in place; a different
//! build (or another cgroup) attaches its programs first and then removes the old links, so
//! there is no moment without enforcement.
use std::{
    collections::BTreeSet,
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use gateway_common::{SkbStat, map, program};

use super::{
    EbpfError, OBJECT,
    counters::{self, Counter},
    logs,
    pins::{self, LinkPin},
    policy::{self, Plan},
    system,
};

/// Where and what to enforce.
#[derive(Clone, Debug)]
pub struct Options {
    /// cgroup-v2 directory the programs attach to (they cover its whole subtree).
    pub cgroup: PathBuf,
    /// bpffs directory for pins.
    pub pin_dir: PathBuf,
    pub plan: Plan,
    /// The gateway's own cgroup, when exclusive upstream put it in one (for reports).
    pub own_cgroup: Option<PathBuf>,
}

/// What is in force.
#[derive(Clone, Debug)]
pub struct Status {
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub pin_dir: PathBuf,
    pub plan: Plan,
    pub own_cgroup: Option<PathBuf>,
    /// Programs whose pinned link from an earlier run was taken over as is.
    pub reused_links: Vec<String>,
    /// Programs attached by this run.
    pub new_links: Vec<String>,
}

/// Kernel enforcement in force. Dropping it leaves the pinned programs attached (fail closed);
/// `mcp-gateway detach` removes them.
pub struct Enforcement {
    bpf: Ebpf,
    _links: Vec<PinnedLink>,
    status: Status,
    log_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcement")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Enforcement {
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The event counters (kept across restarts in the pinned map).
    pub fn counters(&self) -> Result<Vec<Counter>, EbpfError> {
        counters::from_ebpf(&self.bpf)
    }

    /// One `SKB_STATS` slot, summed over CPUs.
    pub fn skb_stat(&self, stat: SkbStat) -> Result<u64, EbpfError> {
        super::skb_stat(&self.bpf, stat)
    }

    /// Whether kernel program logs are being forwarded to `tracing`.
    pub fn forwarding_logs(&self) -> bool {
        self.log_task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Enforcement {
    fn drop(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
    }
}

/// Makes sure `pin_dir` is on a bpffs, mounting /sys/fs/bpf when that is where it belongs.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), EbpfError> {
    if system::on_bpffs(pin_dir) {
        return Ok(());
    }
    if pin_dir.starts_with(system::BPFFS) && !system::on_bpffs(Path::new(system::BPFFS)) {
        system::mount_bpffs().map_err(EbpfError::MountBpffs)?;
        tracing::info!("mounted bpffs at {}", system::BPFFS);
        return Ok(());
    }
    Err(EbpfError::NotBpffs {
        dir: pin_dir.to_owned(),
    })
}

/// Loads the object against the pinned maps (creating and pinning missing ones).
fn load_pinned(pin_dir: &Path) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    for name in map::PINNED.iter().chain(["AYA_LOGS"].iter()) {
        loader.map_pin_path(name, pins::map_path(pin_dir, name));
    }
    Ok(loader.load(OBJECT)?)
}

/// Attaches `name` to `cgroup` and pins the link at `pin`.
///
/// Through a bpf_link (Linux 5.7+) the kernel always attaches in multi mode (the link API takes
/// no flags, hence `Single` here): our programs run alongside others on the same cgroup
/// (systemd's, an older build's during a takeover), and any of them may refuse.
fn attach_and_pin(
    bpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
    pin: &Path,
) -> Result<PinnedLink, EbpfError> {
    let err = |source| EbpfError::Program { name, source };
    let prog = bpf.program_mut(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    let link: FdLink = if name == program::INGRESS {
        let prog: &mut CgroupSkb = prog.try_into().map_err(err)?;
        prog.load().map_err(err)?;
        let id = prog
            .attach(
                cgroup,
                CgroupSkbAttachType::Ingress,
                CgroupAttachMode::Single,
            )
            .map_err(err)?;
        prog.take_link(id)
            .map_err(err)?
            .try_into()
            .map_err(|source| EbpfError::Link { name, source })?
    } else {
        let prog: &mut CgroupSockAddr = prog.try_into().map_err(err)?;
        prog.load().map_err(err)?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
        prog.take_link(id)
            .map_err(err)?
            .try_into()
            .map_err(|source| EbpfError::Link { name, source })?
    };
    link.pin(pin).map_err(|source| EbpfError::Pin {
        path: pin.to_owned(),
        source,
    })
}

/// Puts `options` in force.
pub fn enforce(options: Options) -> Result<Enforcement, EbpfError> {
    let Options {
        cgroup,
        pin_dir,
        plan,
        own_cgroup,
    } = options;
    system::raise_memlock();
    ensure_bpffs(&pin_dir)?;
    fs::create_dir_all(&pin_dir).map_err(|source| EbpfError::Io {
        what: "creating the pin directory",
        path: pin_dir.clone(),
        source,
    })?;
    let cgroup_file = File::open(&cgroup).map_err(|source| EbpfError::Cgroup {
        path: cgroup.display().to_string(),
        source,
    })?;
    let cgroup_id = system::cgroup_id(&cgroup).map_err(|source| EbpfError::Cgroup {
        path: cgroup.display().to_string(),
        source,
    })?;

    // Links may only be reused if they read the very maps we are about to write.
    let maps_were_pinned = map::PINNED
        .iter()
        .all(|name| pins::map_path(&pin_dir, name).exists());
    let mut bpf = load_pinned(&pin_dir)?;
    policy::write(&mut bpf, &plan)?;

    let found = pins::inventory(&pin_dir).map_err(|source| EbpfError::Io {
        what: "listing the pin directory",
        path: pin_dir.clone(),
        source,
    })?;
    let hash = pins::object_hash();
    let mut links = Vec::new();
    let (mut reused, mut new) = (Vec::new(), Vec::new());
    let mut wanted = BTreeSet::new();
    for name in program::ALL {
        let pin = pin_dir.join(LinkPin::name(name, cgroup_id, hash));
        wanted.insert(pin.clone());
        let existing = maps_were_pinned && found.links.iter().any(|l| l.path == pin);
        if existing && let Ok(link) = PinnedLink::from_pin(&pin) {
            links.push(link);
            reused.push(name.to_owned());
            continue;
        }
        if existing {
            // A pin we can't open is no use: replace it.
            let _ = pins::remove_link(&pin);
        }
        match attach_and_pin(&mut bpf, name, &cgroup_file, &pin) {
            Ok(link) => {
                links.push(link);
                new.push(name.to_owned());
            }
            Err(e) => {
                // Don't leave half a policy attached by this run.
                for done in &new {
                    let _ = pins::remove_link(&pin_dir.join(LinkPin::name(done, cgroup_id, hash)));
                }
                return Err(e);
            }
        }
    }
    // Now that ours are in force, remove links of other builds or other cgroups.
    for stale in found.links.iter().filter(|l| !wanted.contains(&l.path)) {
        tracing::info!(pin = %stale.path.display(), "replacing an earlier gateway's program");
        if let Err(e) = pins::remove_link(&stale.path) {
            tracing::warn!(pin = %stale.path.display(), error = %e, "could not remove an old link; run `mcp-gateway detach` and restart");
        }
    }

    let log_task = match (
        tokio::runtime::Handle::try_current(),
        logs::logger(&mut bpf),
    ) {
        (Ok(_), Ok(logger)) => Some(logs::spawn(logger)),
        (Err(_), _) => None,
        (_, Err(e)) => {
            tracing::debug!(error = %e, "kernel program logs are not forwarded");
            None
        }
    };
    Ok(Enforcement {
        bpf,
        _links: links,
        status: Status {
            cgroup,
            cgroup_id,
            pin_dir,
            plan,
            own_cgroup,
            reused_links: reused,
            new_links: new,
        },
        log_task,
    })
}
