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
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gateway_common::EgressEvent;

use super::{
    EbpfError, Enforcement,
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
    pub cgroup_id: u64,
    pub rules: Vec<Rule>,
    pub dns: bool,
    names: Mutex<Names>,
    resolvers: Mutex<Vec<IpAddr>>,
    /// Set once this run loaded its entries and attached the programs.
    in_force: AtomicBool,
    labels: Mutex<Labels>,
    budget: Mutex<LogBudget>,
}

impl Confinement {
    /// The entries for the kernel now.
    fn entries(&self) -> BTreeSet<rule::Entry> {
        let resolved = self.resolved();
        let resolvers = self
            .resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        rule::entries(&self.rules, &resolved, &resolvers, self.dns)
    }

    /// What `status` shows: the cgroup, the rules and their names' addresses.
    fn summary(&self) -> String {
        // One lock at a time (`entries` takes them in the other order).
        let resolved = self.resolved();
        let resolvers = self
            .resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        rule::summary(
            &self.cgroup.display().to_string(),
            &self.rules,
            &resolved,
            &resolvers,
            self.dns,
        )
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
    pin_dir: Option<PathBuf>,
    instance_id: u64,
    pub servers: Vec<Arc<Confinement>>,
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
    /// Confines every server of `servers`: with `enforcement`, in the kernel; without it, only
    /// a loud warning (an error when `required`). Also releases cgroups this instance confined
    /// in an earlier run and no longer does.
    pub async fn start(
        enforcement: Option<&mut Enforcement>,
        required: bool,
        instance: &str,
        servers: Vec<ServerEgress>,
    ) -> anyhow::Result<Arc<Self>> {
        let instance_id = registry::instance_id(instance);
        let mount = system::cgroup2_mount();
        let mut confined = Vec::with_capacity(servers.len());
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
                .find(|c: &&Arc<Confinement>| c.cgroup_id == cgroup_id && cgroup_id != 0)
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
                cgroup_id,
                rules: s.rules,
                dns: s.dns,
                names: Mutex::default(),
                resolvers: Mutex::default(),
                in_force: AtomicBool::new(false),
                labels: Mutex::default(),
                budget: Mutex::new(LogBudget::new(LOG_BURST, LOG_WINDOW)),
            }));
        }
        for c in &confined {
            resolve(c).await;
        }
        let Some(enforcement) = enforcement else {
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
                pin_dir: None,
                instance_id,
                servers: confined,
            }));
        };
        let pin_dir = enforcement.status().pin_dir.clone();
        let gateway_cgroup = enforcement.status().cgroup_id;
        let result = confine_all(
            enforcement,
            &pin_dir,
            instance_id,
            gateway_cgroup,
            &confined,
        );
        match result {
            Ok(()) => {
                for c in &confined {
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
        if let Some(events) = enforcement.take_egress_events() {
            spawn_event_log(events, confined.clone());
        }
        Ok(Arc::new(Self {
            pin_dir: Some(pin_dir),
            instance_id,
            servers: confined,
        }))
    }

    /// Resolves the names again every `every`, and rewrites the changed entries.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let needs = self
            .servers
            .iter()
            .any(|c| c.dns || !rule::names(&c.rules).is_empty());
        if !needs {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for c in &this.servers {
                    resolve(c).await;
                    if let Err(e) = this.rewrite(c) {
                        tracing::warn!(server = %c.name, error = %e, "egress: updating the rules after a refresh failed; the previous rules stay in force");
                    }
                }
            }
        }))
    }

    /// Writes `c`'s entries again, if this instance still owns its cgroup.
    fn rewrite(&self, c: &Confinement) -> Result<(), EbpfError> {
        let Some(pin_dir) = &self.pin_dir else {
            return Ok(());
        };
        if !c.in_force.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(mut maps) = EgressMaps::open(pin_dir)? else {
            c.in_force.store(false, Ordering::Relaxed);
            tracing::warn!(server = %c.name, "EGRESS RULES ARE NO LONGER ENFORCED: the egress maps are gone (mcp-gateway detach?)");
            return Ok(());
        };
        match maps.owner(c.cgroup_id)? {
            Some((owner, _)) if owner == self.instance_id => maps.confine(
                c.cgroup_id,
                self.instance_id,
                &c.name,
                &c.summary(),
                &c.entries(),
            ),
            _ => {
                c.in_force.store(false, Ordering::Relaxed);
                tracing::warn!(server = %c.name, "EGRESS RULES ARE NO LONGER ENFORCED: this server's cgroup was released (mcp-gateway detach?); restart the gateway to confine it again");
                Ok(())
            }
        }
    }

    /// Per server: whether its rules are in force (checked now, from the pins), and its
    /// denials by bounded destination label.
    pub fn report(&self) -> Vec<ServerReport> {
        let maps = self
            .pin_dir
            .as_deref()
            .and_then(|dir| EgressMaps::open(dir).ok().flatten());
        let denials = maps
            .as_ref()
            .and_then(|m| m.denials().ok())
            .unwrap_or_default();
        self.servers
            .iter()
            .map(|c| {
                let enforcing = match (&maps, &self.pin_dir) {
                    (Some(maps), Some(dir)) => {
                        c.in_force.load(Ordering::Relaxed)
                            && maps
                                .owner(c.cgroup_id)
                                .ok()
                                .flatten()
                                .is_some_and(|(owner, _)| owner == self.instance_id)
                            && egress::attached(dir, c.cgroup_id).unwrap_or(false)
                    }
                    _ => false,
                };
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for d in denials.iter().filter(|d| d.cgroup_id == c.cgroup_id) {
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

/// Under the layout lock: refuses a cgroup another live instance confines, loads each server's
/// entries, attaches the programs, and releases this instance's cgroups of an earlier run that
/// are no longer configured.
fn confine_all(
    enforcement: &mut Enforcement,
    pin_dir: &Path,
    instance_id: u64,
    gateway_cgroup: u64,
    confined: &[Arc<Confinement>],
) -> Result<(), EbpfError> {
    let _lock = LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)?;
    let mut maps = EgressMaps::open(pin_dir)?.ok_or(EbpfError::Missing {
        kind: "pinned map",
        name: gateway_common::map::EGRESS_CGROUPS,
    })?;
    let registry = Registry::open(pin_dir)?;
    for c in confined {
        if c.cgroup_id == gateway_cgroup {
            return Err(EbpfError::Instance(format!(
                "server `{}`: cgroup {} is the one the gateway's programs attach to (--cgroup); \
                 confine the server's own cgroup",
                c.name,
                c.cgroup.display()
            )));
        }
        if let Some((owner, server)) = maps.owner(c.cgroup_id)?
            && owner != instance_id
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
        maps.confine(
            c.cgroup_id,
            instance_id,
            &c.name,
            &c.summary(),
            &c.entries(),
        )?;
        if let Err(e) = enforcement.attach_egress(&c.cgroup, c.cgroup_id) {
            // Not in force: withdraw the entries rather than leave rules nobody enforces.
            let _ = maps.release(c.cgroup_id);
            return Err(e);
        }
        c.in_force.store(true, Ordering::Relaxed);
    }
    let wanted: BTreeSet<u64> = confined.iter().map(|c| c.cgroup_id).collect();
    for old in maps.read()? {
        if old.instance == instance_id && !wanted.contains(&old.cgroup_id) {
            tracing::info!(server = %old.server, cgroup_id = old.cgroup_id, "egress: releasing a cgroup this instance no longer confines");
            maps.release(old.cgroup_id)?;
            egress::remove_links(pin_dir, old.cgroup_id);
        }
    }
    Ok(())
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
    let Some(c) = servers.iter().find(|c| c.cgroup_id == event.cgroup) else {
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
