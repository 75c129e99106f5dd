//! Putting servers' egress rules in force: each confined server's cgroup gets the egress
//! programs and its entries; names are resolved again every refresh; denials are logged
//! (rate-limited) and exported. Never pretends: a rule that is not in force says so at start,
//! in the log, and in `mcp_gateway_egress_enforcing`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{Ebpf, programs::links::PinnedLink};
use gateway_common::{EgressEvent, program};

use super::{
    EbpfError,
    egress::{self, EgressMaps},
    enforce::LOCK_TIMEOUT,
    registry::{self, LayoutLock, Registry},
    system,
};
use crate::egress::{
    Rule,
    names::Names,
    report::{Admit, Labels, LogBudget, MAX_DESTINATIONS},
    rule,
};

/// Where `egress_dns` finds the resolvers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a server's cgroup is checked for having been made anew.
const CGROUP_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Denial log lines per server per window.
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// One server's egress configuration, as `run` hands it over.
#[derive(Clone, Debug)]
pub struct ServerEgress {
    pub name: String,
    pub rules: Vec<Rule>,
    /// Allow the resolvers of /etc/resolv.conf on port 53.
    pub dns: bool,
    /// The cgroup to confine: absolute, or relative to the cgroup-v2 mount.
    pub cgroup: PathBuf,
}

/// One confined server at run time.
#[derive(Debug)]
pub struct Confinement {
    pub name: String,
    pub cgroup: PathBuf,
    /// The id of the cgroup now confined; it changes when the cgroup is made anew (a systemd
    /// unit's restart), and the gateway follows.
    cgroup_id: AtomicU64,
    pub rules: Vec<Rule>,
    pub dns: bool,
    names: Mutex<Names>,
    resolvers: Mutex<Vec<IpAddr>>,
    /// Set once this run loaded its entries and attached the programs.
    in_force: AtomicBool,
    /// Set when someone else released the cgroup (`mcp-gateway detach`): this run leaves it
    /// alone from then on.
    withdrawn: AtomicBool,
    labels: Mutex<Labels>,
    budget: Mutex<LogBudget>,
}

impl Confinement {
    /// What its names and resolvers are now, taken one lock at a time.
    fn now(&self) -> (BTreeMap<String, BTreeSet<IpAddr>>, Vec<IpAddr>) {
        let resolved = self.resolved();
        let resolvers = self
            .resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (resolved, resolvers)
    }

    /// The entries for the kernel now.
    fn entries(&self) -> BTreeSet<rule::Entry> {
        let (resolved, resolvers) = self.now();
        rule::entries(&self.rules, &resolved, &resolvers, self.dns)
    }

    /// What `status` shows: the cgroup, the rules and their names' addresses.
    fn summary(&self) -> String {
        let (resolved, resolvers) = self.now();
        rule::summary(
            &self.cgroup.display().to_string(),
            &self.rules,
            &resolved,
            &resolvers,
            self.dns,
        )
    }

    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id.load(Ordering::Relaxed)
    }

    /// Name -> the addresses allowed for it now.
    pub fn resolved(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allowed()
    }
}

/// What `/metrics` shows of one confined server.
#[derive(Debug)]
pub struct ServerReport {
    pub name: String,
    pub enforcing: bool,
    /// `destination` label -> denials.
    pub denied: BTreeMap<String, u64>,
}

/// Every confined server of this instance.
#[derive(Debug)]
pub struct Egress {
    /// `None` when the kernel layer is off: nothing is enforced.
    kernel: Option<Kernel>,
    instance_id: u64,
    pub servers: Vec<Arc<Confinement>>,
}

/// The egress programs of this process: its own object, loaded against the pinned maps, so
/// it can attach them to a server's cgroup whenever that cgroup is made anew.
struct Kernel {
    pin_dir: PathBuf,
    /// The cgroup the gateway's port programs attach to (never confined).
    gateway_cgroup: u64,
    programs: Mutex<Programs>,
}

struct Programs {
    bpf: Ebpf,
    /// Held for the process's life; the pins keep the programs attached after it.
    links: Vec<PinnedLink>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

/// The absolute cgroup directory of `configured`, checked to be a cgroup-v2 directory where
/// confining it makes sense.
fn resolve_cgroup(server: &str, configured: &Path, mount: &Path) -> anyhow::Result<PathBuf> {
    let joined = if configured.is_absolute() {
        configured.to_owned()
    } else {
        mount.join(configured)
    };
    let real = std::fs::canonicalize(&joined).with_context(|| {
        format!(
            "server `{server}`: cgroup {}: no such directory; give a cgroup-v2 directory \
             (absolute, or relative to {}), for example the service's \
             system.slice/NAME.service",
            configured.display(),
            mount.display()
        )
    })?;
    if !real.starts_with(mount) || !real.join("cgroup.procs").exists() {
        bail!(
            "server `{server}`: cgroup {}: not a cgroup-v2 directory (cgroup v2 is mounted at \
             {}); give a directory under it",
            configured.display(),
            mount.display()
        );
    }
    if real == mount {
        bail!(
            "server `{server}`: cgroup {}: that is the cgroup-v2 root, which would confine every \
             process on the host; give the server's own cgroup",
            configured.display()
        );
    }
    if let Ok(own) = system::current_cgroup(mount)
        && own.starts_with(&real)
    {
        bail!(
            "server `{server}`: cgroup {}: the gateway itself runs in it, and would be confined \
             too; run the server in a cgroup of its own",
            configured.display()
        );
    }
    Ok(real)
}

/// Looks `name` up (getaddrinfo: /etc/hosts, then DNS).
async fn lookup(name: &str) -> Result<BTreeSet<IpAddr>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip().to_canonical()).collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {}s", LOOKUP_TIMEOUT.as_secs())),
    }
}

fn read_resolvers() -> Vec<IpAddr> {
    std::fs::read_to_string(RESOLV_CONF)
        .map(|text| rule::resolvers(&text))
        .unwrap_or_default()
}

/// Resolves every name of `c` once; a name that fails is a warning and keeps what it had.
async fn resolve(c: &Confinement) {
    let mut answers = Vec::new();
    for name in rule::names(&c.rules) {
        let answer = lookup(&name).await;
        if let Err(e) = &answer {
            tracing::warn!(server = %c.name, name, error = %e, "egress: a name in the rules does not resolve; retrying at the next refresh, the other rules are enforced meanwhile");
        }
        answers.push((name, answer));
    }
    let before = c.resolved();
    c.names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .refresh(answers);
    if c.dns {
        *c.resolvers.lock().unwrap_or_else(PoisonError::into_inner) = read_resolvers();
    }
    let after = c.resolved();
    for (name, addrs) in &after {
        if before.get(name) != Some(addrs) {
            let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            tracing::info!(server = %c.name, name, addresses = %shown.join(","), "egress: allowed addresses of a name changed");
        }
    }
}

impl Egress {
    /// Confines every server of `servers`: with `kernel` (the pin directory and the gateway's
    /// own cgroup id, when kernel enforcement is in force), in the kernel; without it, only a
    /// loud warning (an error when `required`). Also releases the cgroups an earlier run of
    /// this instance confined and this one no longer does.
    pub async fn start(
        kernel: Option<(PathBuf, u64)>,
        required: bool,
        instance: &str,
        servers: Vec<ServerEgress>,
    ) -> anyhow::Result<Arc<Self>> {
        let instance_id = registry::instance_id(instance);
        let mount = system::cgroup2_mount();
        let mut confined: Vec<Arc<Confinement>> = Vec::with_capacity(servers.len());
        for s in servers {
            let (cgroup, cgroup_id) = match &mount {
                Some(mount) => {
                    let cgroup = resolve_cgroup(&s.name, &s.cgroup, mount)?;
                    let id = system::cgroup_id(&cgroup)
                        .with_context(|| format!("reading cgroup {}", cgroup.display()))?;
                    (cgroup, id)
                }
                None => (s.cgroup.clone(), 0),
            };
            if let Some(other) = confined
                .iter()
                .find(|c| c.cgroup == cgroup && cgroup_id != 0)
            {
                bail!(
                    "servers `{}` and `{}` both confine cgroup {}: give each server its own cgroup",
                    other.name,
                    s.name,
                    cgroup.display()
                );
            }
            confined.push(Arc::new(Confinement {
                name: s.name,
                cgroup,
                cgroup_id: AtomicU64::new(cgroup_id),
                rules: s.rules,
                dns: s.dns,
                names: Mutex::default(),
                resolvers: Mutex::default(),
                in_force: AtomicBool::new(false),
                withdrawn: AtomicBool::new(false),
                labels: Mutex::default(),
                budget: Mutex::new(LogBudget::new(LOG_BURST, LOG_WINDOW)),
            }));
        }
        for c in &confined {
            resolve(c).await;
        }
        let Some((pin_dir, gateway_cgroup)) = kernel else {
            for c in &confined {
                if required {
                    bail!(
                        "server `{}`: egress rules need kernel enforcement, which is off",
                        c.name
                    );
                }
                tracing::warn!(server = %c.name, cgroup = %c.cgroup.display(), "EGRESS RULES ARE NOT ENFORCED: kernel enforcement is off, so this server may connect anywhere. See `mcp-gateway doctor`");
            }
            return Ok(Arc::new(Self {
                kernel: None,
                instance_id,
                servers: confined,
            }));
        };
        if confined.is_empty() {
            // Nothing to confine: no programs to load, only an earlier run's cgroups to let go.
            release_stale(&pin_dir, instance_id);
            return Ok(Arc::new(Self {
                kernel: None,
                instance_id,
                servers: confined,
            }));
        }
        let loaded = super::enforce::load_pinned(&pin_dir);
        let mut bpf = match loaded {
            Ok(bpf) => bpf,
            Err(e) if required => {
                return Err(anyhow::Error::from(e)
                    .context("egress rules need kernel enforcement (--ebpf required)"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "EGRESS RULES ARE NOT ENFORCED: loading the egress programs failed; see `mcp-gateway doctor`");
                return Ok(Arc::new(Self {
                    kernel: None,
                    instance_id,
                    servers: confined,
                }));
            }
        };
        if let Some(events) = bpf
            .take_map(gateway_common::map::EGRESS_EVENTS)
            .and_then(|m| aya::maps::RingBuf::try_from(m).ok())
        {
            spawn_event_log(events, confined.clone());
        }
        let this = Arc::new(Self {
            kernel: Some(Kernel {
                pin_dir,
                gateway_cgroup,
                programs: Mutex::new(Programs {
                    bpf,
                    links: Vec::new(),
                }),
            }),
            instance_id,
            servers: confined,
        });
        match this.confine_all() {
            Ok(()) => {
                for c in &this.servers {
                    let rules: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
                    tracing::info!(server = %c.name, cgroup = %c.cgroup.display(), rules = %rules.join(","), dns = c.dns, "egress rules in force: this server may reach only these destinations");
                }
            }
            Err(e) if required => {
                return Err(anyhow::Error::from(e)
                    .context("egress rules need kernel enforcement (--ebpf required)"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "EGRESS RULES ARE NOT ENFORCED: confining the servers' cgroups failed; see `mcp-gateway doctor`");
            }
        }
        Ok(this)
    }

    /// Under the layout lock: refuses a cgroup another live instance confines, loads each
    /// server's entries, attaches the programs, and releases this instance's cgroups of an
    /// earlier run that are no longer configured.
    fn confine_all(&self) -> Result<(), EbpfError> {
        let Some(kernel) = &self.kernel else {
            return Ok(());
        };
        let _lock = LayoutLock::acquire(&kernel.pin_dir, LOCK_TIMEOUT)?;
        let mut maps = open_maps(&kernel.pin_dir)?;
        let registry = Registry::open(&kernel.pin_dir)?;
        for c in &self.servers {
            if let Some((owner, server)) = maps.owner(c.cgroup_id())?
                && owner != self.instance_id
            {
                let live = match &registry {
                    Some(r) => r.get(owner)?.filter(|i| i.is_alive()),
                    None => None,
                };
                if let Some(other) = live {
                    return Err(EbpfError::Instance(format!(
                        "server `{}`: cgroup {} is already confined by server `{server}` of \
                         instance `{}` (pid {}); one cgroup has one set of egress rules",
                        c.name,
                        c.cgroup.display(),
                        other.claim.instance,
                        other.process.pid
                    )));
                }
            }
            self.confine(kernel, &mut maps, c, c.cgroup_id())?;
        }
        let wanted: BTreeSet<u64> = self.servers.iter().map(|c| c.cgroup_id()).collect();
        for old in maps.read()? {
            if old.instance == self.instance_id && !wanted.contains(&old.cgroup_id) {
                tracing::info!(server = %old.server, cgroup_id = old.cgroup_id, "egress: releasing a cgroup this instance no longer confines");
                maps.release(old.cgroup_id)?;
                egress::remove_links(&kernel.pin_dir, old.cgroup_id);
            }
        }
        Ok(())
    }

    /// Loads `c`'s entries for cgroup `id` and attaches the programs there.
    fn confine(
        &self,
        kernel: &Kernel,
        maps: &mut EgressMaps,
        c: &Confinement,
        id: u64,
    ) -> Result<(), EbpfError> {
        if id == kernel.gateway_cgroup {
            return Err(EbpfError::Instance(format!(
                "server `{}`: cgroup {} is the one the gateway's programs attach to (--cgroup); \
                 confine the server's own cgroup",
                c.name,
                c.cgroup.display()
            )));
        }
        let file = std::fs::File::open(&c.cgroup).map_err(|source| EbpfError::Cgroup {
            path: c.cgroup.display().to_string(),
            source,
        })?;
        maps.confine(id, self.instance_id, &c.name, &c.summary(), &c.entries())?;
        let mut programs = kernel
            .programs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Programs { bpf, links } = &mut *programs;
        match super::enforce::attach(bpf, &kernel.pin_dir, &file, id, &program::EGRESS, true) {
            Ok((new, _)) => links.extend(new),
            Err(e) => {
                // Not in force: withdraw the entries rather than leave rules nobody enforces.
                let _ = maps.release(id);
                c.in_force.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        c.cgroup_id.store(id, Ordering::Relaxed);
        c.in_force.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Every second: follows a server's cgroup made anew (a unit's restart gives it a new id,
    /// without the programs), and every `refresh`, looks the names up again and rewrites the
    /// changed entries.
    pub fn spawn_watch(self: &Arc<Self>, refresh: Duration) -> Option<tokio::task::JoinHandle<()>> {
        self.kernel.as_ref()?;
        if self.servers.is_empty() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CGROUP_CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_refresh = Instant::now();
            loop {
                tick.tick().await;
                let names_due = last_refresh.elapsed() >= refresh;
                if names_due {
                    last_refresh = Instant::now();
                }
                for c in &this.servers {
                    if names_due {
                        resolve(c).await;
                    }
                    let this = this.clone();
                    let c = c.clone();
                    let done = tokio::task::spawn_blocking(move || this.check(&c, names_due)).await;
                    if let Ok(Err(e)) = done {
                        tracing::warn!(error = %e, "egress: updating the rules failed; the previous rules stay in force");
                    }
                }
            }
        }))
    }

    /// Confines `c`'s cgroup again if it was made anew; rewrites its entries when `rewrite`.
    fn check(&self, c: &Confinement, rewrite: bool) -> Result<(), EbpfError> {
        let Some(kernel) = &self.kernel else {
            return Ok(());
        };
        let now = system::cgroup_id(&c.cgroup).ok();
        let id = c.cgroup_id();
        if now.is_none() {
            if c.in_force.swap(false, Ordering::Relaxed) {
                tracing::warn!(server = %c.name, cgroup = %c.cgroup.display(), "EGRESS RULES ARE NOT ENFORCED: the server's cgroup is gone (its unit stopped?); it is confined again as soon as it is back");
            }
            return Ok(());
        }
        let Some(mut maps) = EgressMaps::open(&kernel.pin_dir)? else {
            if c.in_force.swap(false, Ordering::Relaxed) {
                tracing::warn!(server = %c.name, "EGRESS RULES ARE NO LONGER ENFORCED: the egress maps are gone (mcp-gateway detach?); restart the gateway to confine it again");
            }
            return Ok(());
        };
        let owned = maps
            .owner(id)?
            .is_some_and(|(owner, _)| owner == self.instance_id);
        if now != Some(id) && !c.withdrawn.load(Ordering::Relaxed) {
            // A cgroup made anew at the same path (or back after it was gone).
            let new = now.unwrap_or_default();
            let _lock = LayoutLock::acquire(&kernel.pin_dir, LOCK_TIMEOUT)?;
            self.confine(kernel, &mut maps, c, new)?;
            if id != new {
                maps.release(id)?;
                egress::remove_links(&kernel.pin_dir, id);
            }
            tracing::info!(server = %c.name, cgroup = %c.cgroup.display(), "egress: the server's cgroup was made anew (a restart?); its rules are in force again");
            return Ok(());
        }
        if !owned {
            c.withdrawn.store(true, Ordering::Relaxed);
            if c.in_force.swap(false, Ordering::Relaxed) {
                tracing::warn!(server = %c.name, "EGRESS RULES ARE NO LONGER ENFORCED: this server's cgroup was released (mcp-gateway detach?); restart the gateway to confine it again");
            }
            return Ok(());
        }
        if rewrite {
            maps.confine(id, self.instance_id, &c.name, &c.summary(), &c.entries())?;
        }
        Ok(())
    }

    /// Per server: whether its rules are in force (checked now, from the pins and the cgroup),
    /// and its denials by bounded destination label.
    pub fn report(&self) -> Vec<ServerReport> {
        let pin_dir = self.kernel.as_ref().map(|k| k.pin_dir.as_path());
        let maps = pin_dir.and_then(|dir| EgressMaps::open(dir).ok().flatten());
        let denials = maps
            .as_ref()
            .and_then(|m| m.denials().ok())
            .unwrap_or_default();
        self.servers
            .iter()
            .map(|c| {
                let id = c.cgroup_id();
                let enforcing = match (&maps, pin_dir) {
                    (Some(maps), Some(dir)) => {
                        c.in_force.load(Ordering::Relaxed)
                            && system::cgroup_id(&c.cgroup).ok() == Some(id)
                            && maps
                                .owner(id)
                                .ok()
                                .flatten()
                                .is_some_and(|(owner, _)| owner == self.instance_id)
                            && egress::attached(dir, id).unwrap_or(false)
                    }
                    _ => false,
                };
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for d in denials.iter().filter(|d| d.cgroup_id == id) {
                    *counts
                        .entry(std::net::SocketAddr::new(d.addr, d.port).to_string())
                        .or_insert(0) += d.count;
                }
                let denied = c
                    .labels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .fold(&counts, MAX_DESTINATIONS);
                ServerReport {
                    name: c.name.clone(),
                    enforcing,
                    denied,
                }
            })
            .collect()
    }
}

/// Releases the cgroups an earlier run of `instance_id` confined (this run confines none).
fn release_stale(pin_dir: &Path, instance_id: u64) {
    let released = LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)
        .and_then(|_lock| egress::release_instance(pin_dir, instance_id));
    match released {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(cgroups = ?ids, "egress: released the cgroups an earlier run of this instance confined");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "egress: could not release the cgroups an earlier run of this instance confined; `mcp-gateway status` lists them");
        }
    }
}

fn open_maps(pin_dir: &Path) -> Result<EgressMaps, EbpfError> {
    EgressMaps::open(pin_dir)?.ok_or(EbpfError::Missing {
        kind: "pinned map",
        name: gateway_common::map::EGRESS_CGROUPS,
    })
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "other",
    }
}

/// The process's name, from /proc (`?` once it has exited), with control characters masked:
/// a hostile server picks its own name.
fn comm(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_else(|_| b"?".to_vec());
    sanitize_comm(&raw)
}

fn sanitize_comm(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end_matches('\n')
        .chars()
        .take(16)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Logs each denial record (rate-limited per server) as it arrives.
fn spawn_event_log(events: aya::maps::RingBuf<aya::maps::MapData>, servers: Vec<Arc<Confinement>>) {
    super::logs::spawn_ring(events, move |record| {
        if record.len() >= size_of::<EgressEvent>() {
            log_denial(&servers, &decode(record));
        }
    });
}

/// An `EgressEvent` from its bytes (native order, `#[repr(C)]` layout).
fn decode(b: &[u8]) -> EgressEvent {
    let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&b[16..32]);
    EgressEvent {
        cgroup: u64_at(0),
        pid: u32::from_ne_bytes(b[8..12].try_into().unwrap_or_default()),
        port: u16::from_ne_bytes(b[12..14].try_into().unwrap_or_default()),
        proto: b[14],
        pad: b[15],
        addr,
    }
}

fn log_denial(servers: &[Arc<Confinement>], event: &EgressEvent) {
    let Some(c) = servers.iter().find(|c| c.cgroup_id() == event.cgroup) else {
        // Another instance's server: that instance logs it if it reads the record first.
        tracing::debug!(
            cgroup_id = event.cgroup,
            pid = event.pid,
            "egress denial in a cgroup another instance confines"
        );
        return;
    };
    let admit = c
        .budget
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    let destination = std::net::SocketAddr::new(egress::ip(event.addr), event.port);
    let comm = comm(event.pid);
    match admit {
        Admit::Suppress => {}
        Admit::Log => {
            tracing::warn!(server = %c.name, pid = event.pid, comm = %comm, %destination, proto = proto_name(event.proto), "egress denied: the server tried to reach a destination its rules do not allow");
        }
        Admit::LogAfterSuppressed(n) => {
            tracing::warn!(server = %c.name, pid = event.pid, comm = %comm, %destination, proto = proto_name(event.proto), suppressed = n, "egress denied: the server tried to reach a destination its rules do not allow ({n} more denials were not logged; all are counted in mcp_gateway_egress_denied_total)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_records_decode_field_by_field() {
        let event = EgressEvent {
            cgroup: 0x1122_3344_5566_7788,
            pid: 4242,
            port: 6379,
            proto: 17,
            pad: 0,
            addr: gateway_common::CounterKey::v4_mapped([10, 0, 0, 9]),
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&event.cgroup.to_ne_bytes());
        bytes.extend_from_slice(&event.pid.to_ne_bytes());
        bytes.extend_from_slice(&event.port.to_ne_bytes());
        bytes.extend_from_slice(&[event.proto, event.pad]);
        bytes.extend_from_slice(&event.addr);
        assert_eq!(bytes.len(), size_of::<EgressEvent>());
        assert_eq!(decode(&bytes), event);
    }

    #[test]
    fn process_names_are_shown_safely() {
        assert_eq!(sanitize_comm(b"python3\n"), "python3");
        assert_eq!(sanitize_comm(b"a\x1b[31mb\n"), "a?[31mb");
        assert_eq!(sanitize_comm(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
        assert!(!comm(std::process::id()).is_empty());
    }
}
