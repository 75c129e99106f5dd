//! Loading, attaching and pinning: puts one instance's [`Claim`] in force, beside every other
//! instance sharing the pin directory.
//!
//! Under the layout lock, the instance registers its claim (replacing its own earlier one, never
//! another's), the config maps are rewritten to the union of all claims, and the programs are
//! attached to the instance's cgroup, or its pinned links there are taken over. Everything is
//! pinned, so enforcement stays when the gateway dies (fails closed) and counters survive
//! restarts. A different build of the same layout replaces the links on this cgroup only after
//! attaching its own, so there is no moment without enforcement; links on other cgroups belong
//! to other instances and are left alone.
use std::{
    collections::BTreeSet,
    fs::{self, File},
    path::{Path, PathBuf},
    time::Duration,
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
    maps::ConfigMaps,
    pins::{self, LinkPin},
    policy::{self, Claim, Plan},
    registry::{self, Instance, LayoutLock, Process, Registry},
    system,
};

/// How long a start or detach waits for another one to finish with the registry.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and what to enforce.
#[derive(Clone, Debug)]
pub struct Options {
    /// cgroup-v2 directory the programs attach to (they cover its whole subtree).
    pub cgroup: PathBuf,
    /// bpffs directory for pins.
    pub pin_dir: PathBuf,
    /// What this instance protects (its `cgroup_id` is filled in from `cgroup`).
    pub claim: Claim,
    /// The gateway's own cgroup, when exclusive upstream put it in one (for reports).
    pub own_cgroup: Option<PathBuf>,
}

/// What is in force.
#[derive(Clone, Debug)]
pub struct Status {
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub pin_dir: PathBuf,
    /// This instance's claim.
    pub claim: Claim,
    /// What the config maps hold: the union of every instance's claims.
    pub effective: Plan,
    /// Other instances registered in the pin directory.
    pub others: Vec<String>,
    pub own_cgroup: Option<PathBuf>,
    /// Programs whose pinned link from an earlier run was taken over as is.
    pub reused_links: Vec<String>,
    /// Programs attached by this run.
    pub new_links: Vec<String>,
}

/// Kernel enforcement in force. Dropping it leaves the pinned programs attached and the claim
/// registered (fail closed); `mcp-gateway detach` removes them.
pub struct Enforcement {
    bpf: Ebpf,
    _links: Vec<PinnedLink>,
    status: Status,
    check: KernelCheck,
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

    /// Checks, from the pins, that this instance's claim is still in force.
    pub fn check(&self) -> &KernelCheck {
        &self.check
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

/// Everything needed to tell, later and from the pins alone, whether an instance's claim is
/// still in force: behind `mcp_gateway_ebpf_enforcing` and the "enforcement lost" warning.
#[derive(Clone, Debug)]
pub struct KernelCheck {
    pub pin_dir: PathBuf,
    pub claim: Claim,
    pub process: Process,
}

impl KernelCheck {
    /// What of the claim is not in force, in words; empty when all of it is.
    pub fn lost(&self) -> Vec<String> {
        match self.read() {
            Ok(lost) => lost,
            Err(e) => vec![format!("reading the pins failed: {e}")],
        }
    }

    fn read(&self) -> Result<Vec<String>, EbpfError> {
        let Some(registry) = Registry::open(&self.pin_dir)? else {
            return Ok(vec![
                "the instance registry is gone (mcp-gateway detach --all?)".to_owned(),
            ]);
        };
        let id = registry::instance_id(&self.claim.instance);
        match registry.get(id)? {
            None => {
                return Ok(vec![format!(
                    "instance `{}` was removed from the registry (mcp-gateway detach --instance?)",
                    self.claim.instance
                )]);
            }
            Some(rec) if rec.process != self.process => {
                return Ok(vec![format!(
                    "instance `{}` was taken over by pid {}",
                    self.claim.instance, rec.process.pid
                )]);
            }
            Some(_) => {}
        }
        let Some(maps) = ConfigMaps::open(&self.pin_dir)? else {
            return Ok(vec!["the config maps are gone".to_owned()]);
        };
        let mut lost = policy::gaps(&self.claim, &maps.read()?);
        let found = pins::inventory(&self.pin_dir).map_err(|source| EbpfError::Io {
            what: "listing the pin directory",
            path: self.pin_dir.clone(),
            source,
        })?;
        for name in program::ALL {
            if !found
                .links_on(self.claim.cgroup_id)
                .any(|l| l.program == name)
            {
                lost.push(format!(
                    "program {name} is not attached to cgroup {}",
                    self.claim.cgroup_id
                ));
            }
        }
        Ok(lost)
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
pub(crate) fn load_pinned(pin_dir: &Path) -> Result<Ebpf, EbpfError> {
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
        // Egress programs attach to every confined cgroup: loaded (verified) once.
        if prog.fd().is_err() {
            prog.load().map_err(err)?;
        }
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

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EbpfError {
    let path = path.to_owned();
    move |source| EbpfError::Io { what, path, source }
}

/// Rewrites the config maps to the union of every registered claim.
pub fn apply_union(pin_dir: &Path, instances: &[Instance]) -> Result<Plan, EbpfError> {
    let effective = policy::union(instances.iter().map(|i| &i.claim));
    let mut maps = ConfigMaps::open(pin_dir)?.ok_or(EbpfError::Missing {
        kind: "pinned map",
        name: map::PROTECTED_PORTS,
    })?;
    maps.write(&effective)?;
    Ok(effective)
}

/// Puts `options` in force.
pub fn enforce(options: Options) -> Result<Enforcement, EbpfError> {
    let Options {
        cgroup,
        pin_dir,
        mut claim,
        own_cgroup,
    } = options;
    system::raise_memlock();
    ensure_bpffs(&pin_dir)?;
    fs::create_dir_all(&pin_dir).map_err(io("creating the pin directory", &pin_dir))?;
    let cgroup_err = |source| EbpfError::Cgroup {
        path: cgroup.display().to_string(),
        source,
    };
    let cgroup_file = File::open(&cgroup).map_err(cgroup_err)?;
    let cgroup_id = system::cgroup_id(&cgroup).map_err(cgroup_err)?;
    claim.cgroup_id = cgroup_id;

    let _lock = LayoutLock::acquire(&pin_dir, LOCK_TIMEOUT)?;
    // Links may only be reused if they read the very maps we are about to write.
    let maps_were_pinned = map::PINNED
        .iter()
        .all(|name| pins::map_path(&pin_dir, name).exists());
    let mut bpf = load_pinned(&pin_dir)?;
    let mut registry = Registry::open_or_create(&pin_dir)?;
    let me = Process::current();
    let id = registry::instance_id(&claim.instance);
    let previous = registry.get(id)?;
    if let Some(prev) = &previous {
        if prev.claim.instance != claim.instance {
            return Err(EbpfError::Instance(format!(
                "instance name `{}` has the registry key of `{}`; choose another --instance",
                claim.instance, prev.claim.instance
            )));
        }
        if prev.process != me && prev.is_alive() {
            return Err(EbpfError::Instance(format!(
                "instance `{}` is already running as pid {} (pin directory {}); stop it, or \
                 give this gateway another --instance",
                claim.instance,
                prev.process.pid,
                pin_dir.display()
            )));
        }
    }
    registry.put(&claim, me)?;
    // The maps first, so the programs enforce this claim from their first packet.
    let result = registry.instances().and_then(|instances| {
        let effective = apply_union(&pin_dir, &instances)?;
        let links = attach(
            &mut bpf,
            &pin_dir,
            &cgroup_file,
            cgroup_id,
            &program::ALL,
            maps_were_pinned,
        )?;
        Ok((links, instances, effective))
    });
    let (links, instances, effective) = match result {
        Ok(done) => done,
        Err(e) => {
            // Fail closed without leaving a claim nobody holds: an earlier run's claim is put
            // back as it was, a first claim is withdrawn.
            let restored = match &previous {
                Some(prev) => registry.put(&prev.claim, prev.process).map(drop),
                None => registry.remove(id).map(drop),
            };
            if let Err(undo) = restored.and_then(|()| apply_union(&pin_dir, &registry.instances()?))
            {
                tracing::warn!(error = %undo, "could not undo this instance's claim after a failed start");
            }
            return Err(e);
        }
    };
    let (reused, new) = links.1;
    // The links of this instance's previous cgroup go once no instance uses that cgroup.
    if let Some(prev) = &previous
        && prev.claim.cgroup_id != cgroup_id
        && !instances
            .iter()
            .any(|i| i.claim.cgroup_id == prev.claim.cgroup_id)
    {
        remove_links_on(&pin_dir, prev.claim.cgroup_id);
    }
    let others = instances
        .iter()
        .filter(|i| i.id != id)
        .map(|i| i.claim.instance.clone())
        .collect();

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
    let check = KernelCheck {
        pin_dir: pin_dir.clone(),
        claim: claim.clone(),
        process: me,
    };
    Ok(Enforcement {
        bpf,
        _links: links.0,
        status: Status {
            cgroup,
            cgroup_id,
            pin_dir,
            claim,
            effective,
            others,
            own_cgroup,
            reused_links: reused,
            new_links: new,
        },
        check,
        log_task,
    })
}

pub(crate) type Links = (Vec<PinnedLink>, (Vec<String>, Vec<String>));

/// Takes over or attaches the programs `names` on `cgroup_id`, then removes other builds' links
/// of those programs on that cgroup. Links on other cgroups, and of other programs, are other
/// instances' (or this one's egress links on a server's cgroup) and stay.
pub(crate) fn attach(
    bpf: &mut Ebpf,
    pin_dir: &Path,
    cgroup: &File,
    cgroup_id: u64,
    names: &[&'static str],
    maps_were_pinned: bool,
) -> Result<Links, EbpfError> {
    let found = pins::inventory(pin_dir).map_err(io("listing the pin directory", pin_dir))?;
    let mut links = Vec::new();
    let (mut reused, mut new) = (Vec::new(), Vec::new());
    let mut wanted = BTreeSet::new();
    for &name in names {
        let pin = LinkPin::path(pin_dir, name, cgroup_id);
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
        match attach_and_pin(bpf, name, cgroup, &pin) {
            Ok(link) => {
                links.push(link);
                new.push(name.to_owned());
            }
            Err(e) => {
                // Don't leave half a policy attached by this run.
                for done in &new {
                    let _ = pins::remove_link(&LinkPin::path(pin_dir, done, cgroup_id));
                }
                return Err(e);
            }
        }
    }
    // Now that ours are in force, remove other builds' links on the same cgroup.
    for stale in found
        .links_on(cgroup_id)
        .filter(|l| names.contains(&l.program.as_str()) && !wanted.contains(&l.path))
    {
        tracing::info!(pin = %stale.path.display(), "replacing another build's program on this cgroup");
        if let Err(e) = pins::remove_link(&stale.path) {
            tracing::warn!(pin = %stale.path.display(), error = %e, "could not remove an old link; run `mcp-gateway detach` and restart");
        }
    }
    Ok((links, (reused, new)))
}

/// Detaches this layout's links on `cgroup_id`.
pub fn remove_links_on(pin_dir: &Path, cgroup_id: u64) -> Vec<LinkPin> {
    let Ok(found) = pins::inventory(pin_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for link in found.links_on(cgroup_id) {
        match pins::remove_link(&link.path) {
            Ok(()) => removed.push(link.clone()),
            Err(e) => {
                tracing::warn!(pin = %link.path.display(), error = %e, "could not remove a link");
            }
        }
    }
    removed
}
