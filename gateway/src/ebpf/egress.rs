//! The pinned egress maps: which cgroups are confined (and by which instance's server), the
//! destinations each may reach, and the denials the programs counted.
//!
//! Entries are keyed by the confined cgroup, and a cgroup has one owner, so each instance writes
//! only its own cgroups' entries: no union to compute, no lock needed to refresh a name.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use aya::maps::{
    HashMap, MapData, PerCpuHashMap,
    lpm_trie::{Key, LpmTrie},
};
use gateway_common::{
    EGRESS_FIXED_BITS, EGRESS_SERVER_LEN, EGRESS_SUMMARY_LEN, EgressDenial, EgressKey, EgressOwner,
    map, program,
};

use super::{
    EbpfError,
    maps::{err, open_map},
    pins,
};
use crate::source::Cidr;

/// One allowed destination of a confined cgroup: a network and a port (0: any).
pub type Entry = (Cidr, u16);

/// The egress maps pinned in a pin directory.
pub struct EgressMaps {
    cgroups: HashMap<MapData, u64, EgressOwner>,
    rules: LpmTrie<MapData, EgressKey, u8>,
    denied: PerCpuHashMap<MapData, EgressDenial, u64>,
}

impl std::fmt::Debug for EgressMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressMaps").finish_non_exhaustive()
    }
}

/// A confined cgroup as the pins describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confined {
    pub cgroup_id: u64,
    /// The owning instance's registry id.
    pub instance: u64,
    pub server: String,
    /// The owner's description: the cgroup's path, the rules and their names' addresses.
    pub summary: String,
    pub entries: BTreeSet<Entry>,
}

/// One counted denial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub cgroup_id: u64,
    pub addr: IpAddr,
    pub port: u16,
    /// 6: TCP, 17: UDP.
    pub proto: u8,
    pub count: u64,
}

/// `text` in `N` NUL-padded bytes, cut at a character boundary.
fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut len = text.len().min(N);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    out[..len].copy_from_slice(&text.as_bytes()[..len]);
    out
}

fn unpadded(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn owner(instance: u64, server: &str, summary: &str) -> EgressOwner {
    EgressOwner {
        instance,
        server: padded::<EGRESS_SERVER_LEN>(server),
        summary: padded::<EGRESS_SUMMARY_LEN>(summary),
    }
}

fn server_name(owner: &EgressOwner) -> String {
    unpadded(&owner.server)
}

fn key(cgroup: u64, (cidr, port): &Entry) -> Key<EgressKey> {
    Key::new(
        EGRESS_FIXED_BITS + u32::from(cidr.prefix_len),
        EgressKey::new(cgroup, *port, cidr.addr),
    )
}

/// A v4-mapped address back to IPv4.
pub fn ip(addr: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl EgressMaps {
    /// The maps pinned in `pin_dir`; `None` when they are not (no build with egress ran there,
    /// or everything was detached).
    pub fn open(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let cgroups = open_map(pin_dir, map::EGRESS_CGROUPS)?;
        let rules = open_map(pin_dir, map::EGRESS_RULES)?;
        let denied = open_map(pin_dir, map::EGRESS_DENIED)?;
        let (Some(cgroups), Some(rules), Some(denied)) = (cgroups, rules, denied) else {
            return Ok(None);
        };
        Ok(Some(Self {
            cgroups: HashMap::try_from(cgroups).map_err(err(map::EGRESS_CGROUPS))?,
            rules: LpmTrie::try_from(rules).map_err(err(map::EGRESS_RULES))?,
            denied: PerCpuHashMap::try_from(denied).map_err(err(map::EGRESS_DENIED))?,
        }))
    }

    /// Every confined cgroup, with its entries.
    pub fn read(&self) -> Result<Vec<Confined>, EbpfError> {
        let mut entries = self.entries()?;
        let mut out = Vec::new();
        for item in self.cgroups.iter() {
            let (cgroup_id, owner) = item.map_err(err(map::EGRESS_CGROUPS))?;
            out.push(Confined {
                cgroup_id,
                instance: owner.instance,
                server: server_name(&owner),
                summary: unpadded(&owner.summary),
                entries: entries.remove(&cgroup_id).unwrap_or_default(),
            });
        }
        out.sort_by_key(|c| c.cgroup_id);
        Ok(out)
    }

    /// Every entry of `EGRESS_RULES`, by cgroup.
    fn entries(&self) -> Result<BTreeMap<u64, BTreeSet<Entry>>, EbpfError> {
        let mut out: BTreeMap<u64, BTreeSet<Entry>> = BTreeMap::new();
        for k in self.rules.keys() {
            let k = k.map_err(err(map::EGRESS_RULES))?;
            let data = k.data();
            // Every key this code writes has the fixed 80 bits; skip anything else.
            let Some(prefix) = k
                .prefix_len()
                .checked_sub(EGRESS_FIXED_BITS)
                .and_then(|p| u8::try_from(p).ok())
            else {
                continue;
            };
            let cidr = Cidr {
                addr: data.addr,
                prefix_len: prefix,
            };
            out.entry(data.cgroup_id())
                .or_default()
                .insert((cidr, data.port()));
        }
        Ok(out)
    }

    /// The owner of `cgroup_id`, if it is confined.
    pub fn owner(&self, cgroup_id: u64) -> Result<Option<(u64, String)>, EbpfError> {
        match self.cgroups.get(&cgroup_id, 0) {
            Ok(o) => Ok(Some((o.instance, server_name(&o)))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(err(map::EGRESS_CGROUPS)(e)),
        }
    }

    /// Makes `entries` exactly what `cgroup_id` may reach, owned by `instance`'s `server`. New
    /// entries go in before the cgroup is marked confined and before stale ones go, so a
    /// running server never sees less than the old or the new rules.
    pub fn confine(
        &mut self,
        cgroup_id: u64,
        instance: u64,
        server: &str,
        summary: &str,
        entries: &BTreeSet<Entry>,
    ) -> Result<(), EbpfError> {
        let present = self.entries_of(cgroup_id)?;
        for entry in entries.difference(&present) {
            self.rules
                .insert(&key(cgroup_id, entry), 1, 0)
                .map_err(err(map::EGRESS_RULES))?;
        }
        self.cgroups
            .insert(cgroup_id, owner(instance, server, summary), 0)
            .map_err(err(map::EGRESS_CGROUPS))?;
        for entry in present.difference(entries) {
            self.remove_rule(cgroup_id, entry)?;
        }
        Ok(())
    }

    /// Stops confining `cgroup_id`: the mark first (so nothing is refused for want of rules
    /// in between), then its entries.
    pub fn release(&mut self, cgroup_id: u64) -> Result<(), EbpfError> {
        match self.cgroups.remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(err(map::EGRESS_CGROUPS)(e)),
        }
        for entry in self.entries_of(cgroup_id)? {
            self.remove_rule(cgroup_id, &entry)?;
        }
        Ok(())
    }

    fn remove_rule(&mut self, cgroup_id: u64, entry: &Entry) -> Result<(), EbpfError> {
        match self.rules.remove(&key(cgroup_id, entry)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(map::EGRESS_RULES)(e)),
        }
    }

    fn entries_of(&self, cgroup_id: u64) -> Result<BTreeSet<Entry>, EbpfError> {
        Ok(self.entries()?.remove(&cgroup_id).unwrap_or_default())
    }

    /// Every counted denial, summed over CPUs.
    pub fn denials(&self) -> Result<Vec<Denial>, EbpfError> {
        let mut out = Vec::new();
        for item in self.denied.iter() {
            let (key, per_cpu) = item.map_err(err(map::EGRESS_DENIED))?;
            out.push(Denial {
                cgroup_id: key.cgroup,
                addr: ip(key.addr),
                port: key.port,
                proto: key.proto,
                count: per_cpu.iter().sum(),
            });
        }
        Ok(out)
    }
}

/// Whether every egress program is attached to `cgroup_id` (by any build of this layout).
pub fn attached(pin_dir: &Path, cgroup_id: u64) -> Result<bool, EbpfError> {
    let found = pins::inventory(pin_dir).map_err(|source| EbpfError::Io {
        what: "listing the pin directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    Ok(program::EGRESS
        .iter()
        .all(|name| found.links_on(cgroup_id).any(|l| l.program == *name)))
}

/// Removes the egress links on `cgroup_id` (and no other program's).
pub fn remove_links(pin_dir: &Path, cgroup_id: u64) -> Vec<pins::LinkPin> {
    let Ok(found) = pins::inventory(pin_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for link in found.links_on(cgroup_id) {
        if !program::EGRESS.contains(&link.program.as_str()) {
            continue;
        }
        match pins::remove_link(&link.path) {
            Ok(()) => removed.push(link.clone()),
            Err(e) => {
                tracing::warn!(pin = %link.path.display(), error = %e, "could not remove an egress link");
            }
        }
    }
    removed
}

/// Releases every cgroup `instance` confines, and their egress links: what withdrawing an
/// instance does to its egress rules. Returns the released cgroup ids.
pub fn release_instance(pin_dir: &Path, instance: u64) -> Result<Vec<u64>, EbpfError> {
    let Some(mut maps) = EgressMaps::open(pin_dir)? else {
        return Ok(Vec::new());
    };
    let mut released = Vec::new();
    for confined in maps.read()? {
        if confined.instance != instance {
            continue;
        }
        maps.release(confined.cgroup_id)?;
        remove_links(pin_dir, confined.cgroup_id);
        released.push(confined.cgroup_id);
    }
    Ok(released)
}
