//! What the kernel enforces, and writing it into the config maps in place (a restarted gateway
//! updates the pinned maps the attached programs already read; no window without policy).
use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, MapData};
use gateway_common::{PortPolicy, map};

use super::EbpfError;

/// What bind() of a protected port to a non-loopback address gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindPolicy {
    /// Refused with EPERM.
    #[default]
    Deny,
    /// Moved to the loopback address of the socket's family.
    Rewrite,
}

/// The protected ports and who may connect to the exclusive ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ports: BTreeMap<u16, PortPolicy>,
    /// Cgroup ids allowed to connect to `EXCLUSIVE` ports.
    pub allowed_cgroups: BTreeSet<u64>,
}

impl Plan {
    /// Adds `port` with `flags` (merged with what the port already has).
    pub fn protect(&mut self, port: u16, flags: u32) {
        self.ports.entry(port).or_default().flags |= flags;
    }

    /// The flags every protected port gets under `bind`.
    pub fn base_flags(bind: BindPolicy) -> u32 {
        PortPolicy::LOOPBACK_ONLY
            | match bind {
                BindPolicy::Deny => PortPolicy::BIND_DENY,
                BindPolicy::Rewrite => PortPolicy::BIND_REWRITE,
            }
    }

    pub fn exclusive_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .filter(|(_, p)| p.has(PortPolicy::EXCLUSIVE))
            .map(|(port, _)| *port)
    }
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// Makes the maps hold exactly `plan`: adds and updates first, then removes what's stale.
pub fn write(bpf: &mut aya::Ebpf, plan: &Plan) -> Result<(), EbpfError> {
    let name = map::PROTECTED_PORTS;
    let raw = bpf
        .map_mut(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    let mut ports: HashMap<&mut MapData, u16, PortPolicy> =
        HashMap::try_from(raw).map_err(map_err(name))?;
    for (port, policy) in &plan.ports {
        ports.insert(port, policy, 0).map_err(map_err(name))?;
    }
    let stale: Vec<u16> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|port| !plan.ports.contains_key(port))
        .collect();
    for port in stale {
        ports.remove(&port).map_err(map_err(name))?;
    }

    let name = map::ALLOWED_CGROUPS;
    let raw = bpf
        .map_mut(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    let mut allowed: HashMap<&mut MapData, u64, u8> =
        HashMap::try_from(raw).map_err(map_err(name))?;
    for id in &plan.allowed_cgroups {
        allowed.insert(id, 1, 0).map_err(map_err(name))?;
    }
    let stale: Vec<u64> = allowed
        .keys()
        .filter_map(Result::ok)
        .filter(|id| !plan.allowed_cgroups.contains(id))
        .collect();
    for id in stale {
        allowed.remove(&id).map_err(map_err(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_of_a_port_merge() {
        let mut plan = Plan::default();
        plan.protect(8000, Plan::base_flags(BindPolicy::Deny));
        plan.protect(8000, PortPolicy::EXCLUSIVE);
        plan.protect(8787, Plan::base_flags(BindPolicy::Rewrite));
        let p = plan.ports[&8000];
        assert!(p.has(PortPolicy::LOOPBACK_ONLY) && p.has(PortPolicy::BIND_DENY));
        assert!(p.has(PortPolicy::EXCLUSIVE) && !p.has(PortPolicy::BIND_REWRITE));
        assert_eq!(plan.exclusive_ports().collect::<Vec<_>>(), [8000]);
        assert!(plan.ports[&8787].has(PortPolicy::BIND_REWRITE));
    }
}
