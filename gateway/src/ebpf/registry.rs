//! The instance registry: which gateway instance claims what, pinned beside the kernel maps.
//!
//! One `INSTANCES` record per instance, keyed by a hash of its name and written in one map
//! update, so a restart replaces its own claim atomically and never another's. Each record names
//! its process (pid and start time), so reports can say whether the owner is alive. Every change
//! to the registry and the config maps happens under [`LayoutLock`].
use std::{
    fs::File,
    io,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap, Map, MapData, MapError};
use gateway_common::{
    CgroupPort, INSTANCE_NAME_LEN, InstanceRecord, MAX_INSTANCE_ALLOWED, MAX_INSTANCE_PORTS,
    MAX_INSTANCE_SERVERS, MAX_INSTANCE_SOURCES, MAX_INSTANCES, PortClaim, SERVER_NAME_LEN,
    SourceRule, UPSTREAM_TEXT_LEN, map, port_role,
};

use super::{
    EbpfError, pins,
    policy::{Claim, PortUse, Role, ServerLabel},
};
use crate::source::Cidr;

/// The registry key of an instance name.
pub fn instance_id(name: &str) -> u64 {
    pins::fnv1a(name.as_bytes())
}

/// A process, identified so that a recycled pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl Process {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// Whether this process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        self.pid != 0 && start_ticks(self.pid) == Some(self.start_ticks)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    parse_start_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its closing parenthesis.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with " S ..." : field 3 is the first after the name.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// A registry record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: u64,
    pub claim: Claim,
    pub process: Process,
    /// Seconds since the Unix epoch.
    pub started_unix: u64,
}

impl Instance {
    pub fn is_alive(&self) -> bool {
        self.process.is_alive()
    }
}

/// Claims too large for one record (the error says which limit).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "instance name `{0}` is empty or longer than {INSTANCE_NAME_LEN} bytes; choose a shorter --instance"
    )]
    Name(String),
    #[error(
        "the instance protects {0} ports; one instance may protect at most {MAX_INSTANCE_PORTS}"
    )]
    Ports(usize),
    #[error("the instance allows {0} (cgroup, port) pairs; at most {MAX_INSTANCE_ALLOWED}")]
    Allowed(usize),
    #[error("the instance has {0} servers; one instance may serve at most {MAX_INSTANCE_SERVERS}")]
    Servers(usize),
    #[error("the instance allows {0} source networks; at most {MAX_INSTANCE_SOURCES}")]
    Sources(usize),
}

/// Copies `text` into `out` (cut at a char boundary, NUL-padded).
fn put_text(out: &mut [u8], text: &str) {
    let mut len = text.len().min(out.len());
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    out[..len].copy_from_slice(&text.as_bytes()[..len]);
}

fn get_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The record of `claim` held by `process`.
pub fn encode(
    claim: &Claim,
    process: Process,
    started_unix: u64,
) -> Result<InstanceRecord, RecordError> {
    if claim.instance.is_empty() || claim.instance.len() > INSTANCE_NAME_LEN {
        return Err(RecordError::Name(claim.instance.clone()));
    }
    if claim.ports.len() > MAX_INSTANCE_PORTS {
        return Err(RecordError::Ports(claim.ports.len()));
    }
    if claim.allowed.len() > MAX_INSTANCE_ALLOWED {
        return Err(RecordError::Allowed(claim.allowed.len()));
    }
    if claim.servers.len() > MAX_INSTANCE_SERVERS {
        return Err(RecordError::Servers(claim.servers.len()));
    }
    if claim.sources.len() > MAX_INSTANCE_SOURCES {
        return Err(RecordError::Sources(claim.sources.len()));
    }
    let mut rec = InstanceRecord::zeroed();
    rec.pid = process.pid;
    rec.start_ticks = process.start_ticks;
    rec.started_unix = started_unix;
    rec.cgroup_id = claim.cgroup_id;
    put_text(&mut rec.name, &claim.instance);
    // The lengths fit in u8: each is at most its MAX_INSTANCE_* (asserted in gateway-common).
    rec.n_ports = claim.ports.len() as u8;
    rec.n_allowed = claim.allowed.len() as u8;
    rec.n_servers = claim.servers.len() as u8;
    rec.n_sources = claim.sources.len() as u8;
    for (slot, (port, cidr)) in rec.sources.iter_mut().zip(&claim.sources) {
        *slot = SourceRule {
            addr: cidr.addr,
            port: *port,
            prefix_len: cidr.prefix_len,
            reserved: 0,
        };
    }
    for (slot, (port, used)) in rec.ports.iter_mut().zip(&claim.ports) {
        *slot = PortClaim {
            port: *port,
            role: match used.role {
                Role::Extra => port_role::EXTRA,
                Role::Upstream => port_role::UPSTREAM,
                Role::Listen => port_role::LISTEN,
            },
            server: used.server.map_or(0, |s| s as u8),
            flags: used.flags,
        };
    }
    for (slot, pair) in rec.allowed.iter_mut().zip(&claim.allowed) {
        *slot = *pair;
    }
    for (slot, server) in rec.servers.iter_mut().zip(&claim.servers) {
        put_text(&mut slot.name, &server.name);
        put_text(&mut slot.upstream, &server.upstream);
    }
    Ok(rec)
}

/// The claim a record holds. Counts beyond the arrays (a corrupt record) are clamped.
pub fn decode(id: u64, rec: &InstanceRecord) -> Instance {
    let n_ports = usize::from(rec.n_ports).min(MAX_INSTANCE_PORTS);
    let n_allowed = usize::from(rec.n_allowed).min(MAX_INSTANCE_ALLOWED);
    let n_servers = usize::from(rec.n_servers).min(MAX_INSTANCE_SERVERS);
    let n_sources = usize::from(rec.n_sources).min(MAX_INSTANCE_SOURCES);
    let servers: Vec<ServerLabel> = rec.servers[..n_servers]
        .iter()
        .map(|s| ServerLabel {
            name: get_text(&s.name[..SERVER_NAME_LEN]),
            upstream: get_text(&s.upstream[..UPSTREAM_TEXT_LEN]),
        })
        .collect();
    let mut claim = Claim {
        instance: get_text(&rec.name),
        cgroup_id: rec.cgroup_id,
        servers,
        ..Claim::default()
    };
    for p in &rec.ports[..n_ports] {
        let role = match p.role {
            port_role::UPSTREAM => Role::Upstream,
            port_role::LISTEN => Role::Listen,
            _ => Role::Extra,
        };
        let server = (role != Role::Extra && usize::from(p.server) < n_servers)
            .then_some(usize::from(p.server));
        claim.ports.insert(
            p.port,
            PortUse {
                flags: p.flags,
                role,
                server,
            },
        );
    }
    claim.allowed.extend(
        rec.allowed[..n_allowed]
            .iter()
            .map(|a| CgroupPort::new(a.cgroup, a.port)),
    );
    claim
        .sources
        .extend(rec.sources[..n_sources].iter().map(|s| {
            let cidr = Cidr {
                addr: s.addr,
                prefix_len: s.prefix_len.min(128),
            };
            (s.port, cidr)
        }));
    Instance {
        id,
        claim,
        process: Process {
            pid: rec.pid,
            start_ticks: rec.start_ticks,
        },
        started_unix: rec.started_unix,
    }
}

fn map_err(source: MapError) -> EbpfError {
    EbpfError::Map {
        name: map::INSTANCES,
        source,
    }
}

/// The pinned `INSTANCES` map.
pub struct Registry {
    map: HashMap<MapData, u64, InstanceRecord>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry pinned in `pin_dir`; `None` when there is none.
    pub fn open(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let path = pins::map_path(pin_dir, map::INSTANCES);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).map_err(map_err)?;
        let map = HashMap::try_from(Map::from_map_data(data).map_err(map_err)?).map_err(map_err)?;
        Ok(Some(Self { map }))
    }

    /// The registry pinned in `pin_dir`, created and pinned when missing. Call under the lock.
    pub fn open_or_create(pin_dir: &Path) -> Result<Self, EbpfError> {
        if let Some(registry) = Self::open(pin_dir)? {
            return Ok(registry);
        }
        let map =
            HashMap::<MapData, u64, InstanceRecord>::create(MAX_INSTANCES, 0).map_err(map_err)?;
        let path = pins::map_path(pin_dir, map::INSTANCES);
        // Pinning consumes the handle; the pinned map is opened again like any other reader.
        map.pin(&path).map_err(|source| EbpfError::Pin {
            path: path.clone(),
            source,
        })?;
        Self::open(pin_dir)?.ok_or(EbpfError::Missing {
            kind: "pinned map",
            name: map::INSTANCES,
        })
    }

    /// Every registered instance, sorted by name.
    pub fn instances(&self) -> Result<Vec<Instance>, EbpfError> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            match entry {
                Ok((id, rec)) => out.push(decode(id, &rec)),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        out.sort_by(|a, b| a.claim.instance.cmp(&b.claim.instance));
        Ok(out)
    }

    pub fn get(&self, id: u64) -> Result<Option<Instance>, EbpfError> {
        match self.map.get(&id, 0) {
            Ok(rec) => Ok(Some(decode(id, &rec))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Registers (or replaces) `claim`, held by `process`.
    pub fn put(&mut self, claim: &Claim, process: Process) -> Result<u64, EbpfError> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rec = encode(claim, process, started).map_err(EbpfError::Record)?;
        let id = instance_id(&claim.instance);
        self.map.insert(id, rec, 0).map_err(map_err)?;
        Ok(id)
    }

    /// Removes an instance's record; `false` when it had none.
    pub fn remove(&mut self, id: u64) -> Result<bool, EbpfError> {
        match self.map.remove(&id) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// An exclusive `flock` on the layout directory: the one lock every writer of the registry and
/// the config maps takes, so concurrent starts and detaches apply one after the other.
#[derive(Debug)]
pub struct LayoutLock {
    _dir: File,
}

impl LayoutLock {
    /// Waits up to `timeout` for the lock on `pin_dir`'s layout directory (created if missing).
    pub fn acquire(pin_dir: &Path, timeout: Duration) -> Result<Self, EbpfError> {
        let dir = pins::layout_dir(pin_dir);
        let io_err = |what, source| EbpfError::Io {
            what,
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating the layout directory", e))?;
        let file = File::open(&dir).map_err(|e| io_err("opening the layout directory", e))?;
        let deadline = Instant::now() + timeout;
        loop {
            // flock(2), exclusive, without waiting: released when the descriptor closes.
            let err = match file.try_lock() {
                Ok(()) => return Ok(Self { _dir: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    io::Error::from(io::ErrorKind::WouldBlock)
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(io_err("locking the layout directory", err));
                }
            };
            if Instant::now() >= deadline {
                return Err(io_err(
                    "locking the layout directory (another mcp-gateway holds it; is one stuck \
                     starting or detaching?)",
                    err,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use gateway_common::PortPolicy;

    use super::*;

    #[test]
    fn start_ticks_are_field_22_even_with_parentheses_in_the_name() {
        let stat = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 \
                    987654 1000 50 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Process::current();
        assert!(me.is_alive());
        let recycled = Process {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!recycled.is_alive(), "same pid, other start time");
        assert!(
            !Process {
                pid: 0,
                start_ticks: 0
            }
            .is_alive()
        );
    }

    fn sample() -> Claim {
        let mut claim = Claim {
            instance: "weather+db".to_owned(),
            cgroup_id: 99,
            servers: vec![
                ServerLabel {
                    name: "weather".into(),
                    upstream: "http://127.0.0.1:8000/mcp".into(),
                },
                ServerLabel {
                    name: "db".into(),
                    upstream: "unix:/run/mcp/db.sock".into(),
                },
            ],
            ..Claim::default()
        };
        let base = PortPolicy::LOOPBACK_ONLY | PortPolicy::BIND_DENY;
        claim.protect(8000, base | PortPolicy::EXCLUSIVE, Role::Upstream, Some(0));
        claim.protect(8787, base, Role::Listen, Some(0));
        claim.protect(8788, base, Role::Listen, Some(1));
        claim.protect(9999, base, Role::Extra, None);
        claim.allow(1234, 8000);
        claim.allow_source(8443, Cidr::parse("2001:db8::/32").unwrap(), Some(1));
        claim
    }

    #[test]
    fn records_round_trip() {
        let claim = sample();
        let process = Process {
            pid: 77,
            start_ticks: 5,
        };
        let rec = encode(&claim, process, 1_700_000_000).expect("fits");
        let back = decode(instance_id("weather+db"), &rec);
        assert_eq!(back.claim, claim);
        assert_eq!(back.process, process);
        assert_eq!(back.started_unix, 1_700_000_000);
    }

    #[test]
    fn long_texts_are_cut_at_char_boundaries_and_limits_are_errors() {
        let mut claim = sample();
        claim.servers[0].upstream = format!("unix:/{}", "é".repeat(100));
        let rec = encode(&claim, Process::current(), 0).expect("fits");
        let up = decode(0, &rec).claim.servers[0].upstream.clone();
        assert!(
            up.len() <= UPSTREAM_TEXT_LEN && up.starts_with("unix:/é"),
            "{up}"
        );
        assert!(!up.contains('\u{fffd}'), "cut inside a char: {up}");

        let mut many = sample();
        for port in 1..=40 {
            many.protect(port, 1, Role::Extra, None);
        }
        assert!(matches!(
            encode(&many, Process::current(), 0),
            Err(RecordError::Ports(45))
        ));
        let mut unnamed = sample();
        unnamed.instance.clear();
        assert!(matches!(
            encode(&unnamed, Process::current(), 0),
            Err(RecordError::Name(_))
        ));
    }

    #[test]
    fn corrupt_counts_are_clamped() {
        let mut rec = encode(&sample(), Process::current(), 0).expect("fits");
        rec.n_ports = u8::MAX;
        rec.n_servers = u8::MAX;
        rec.n_allowed = u8::MAX;
        rec.n_sources = u8::MAX;
        let back = decode(1, &rec);
        assert!(back.claim.ports.len() <= MAX_INSTANCE_PORTS);
        assert!(back.claim.sources.len() <= MAX_INSTANCE_SOURCES);
        assert!(back.claim.servers.len() <= MAX_INSTANCE_SERVERS);
    }
}
