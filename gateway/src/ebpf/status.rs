//! `mcp-gateway status`: every protected port of a pin directory with its flags and owners.
use std::path::Path;

use gateway_common::PortPolicy;
use serde::Serialize;

use super::{
    EbpfError,
    egress::EgressMaps,
    locks::{Lock, LockMaps},
    maps::ConfigMaps,
    pins,
    policy::{Plan, Role},
    registry::{self, Instance, Registry},
};

/// One owner of a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub instance: String,
    pub pid: u32,
    pub alive: bool,
    /// `upstream`, `listen` or `extra`.
    pub role: &'static str,
    /// The server the port belongs to, when it belongs to one.
    pub server: Option<String>,
    pub upstream: Option<String>,
}

/// One protected port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRow {
    pub port: u16,
    /// What the programs enforce (the union of the owners' flags), as words.
    pub flags: Vec<&'static str>,
    /// Empty when no registered instance claims the port (it was written by something else).
    pub owners: Vec<Owner>,
}

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    pub name: String,
    pub pid: u32,
    pub alive: bool,
    pub started_unix: u64,
    pub cgroup_id: u64,
    pub servers: Vec<(String, String)>,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Lockdowns in force (`mcp-gateway lockdown`).
    pub locks: Vec<Lock>,
    pub instances: Vec<InstanceRow>,
    pub ports: Vec<PortRow>,
    /// Links on cgroups, as `program on cgroup <id>`.
    pub links: Vec<String>,
    /// Pins of other map layouts (older or newer builds).
    pub other_layouts: Vec<String>,
    /// Confined servers' egress rules.
    pub egress: Vec<EgressRow>,
}

/// One confined cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRow {
    pub cgroup_id: u64,
    pub server: String,
    /// The owning instance's name (`None`: not registered any more).
    pub instance: Option<String>,
    pub alive: bool,
    /// Whether every egress program is attached to the cgroup.
    pub attached: bool,
    /// The cgroup, each rule with its names' addresses now, the resolvers: one per line.
    pub rules: Vec<String>,
    /// The kernel entries: `network port` (`*`: any port).
    pub entries: Vec<String>,
    /// Denials counted so far.
    pub denied: u64,
}

/// The words for a port's flags.
pub fn flag_names(policy: PortPolicy) -> Vec<&'static str> {
    [
        (PortPolicy::LOOPBACK_ONLY, "loopback-only"),
        (PortPolicy::BIND_DENY, "bind-deny"),
        (PortPolicy::BIND_REWRITE, "bind-rewrite"),
        (PortPolicy::EXCLUSIVE, "exclusive"),
    ]
    .into_iter()
    .filter(|(bit, _)| policy.has(*bit))
    .map(|(_, name)| name)
    .collect()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Upstream => "upstream",
        Role::Listen => "listen",
        Role::Extra => "extra",
    }
}

/// The port rows for `effective` maps and the registered `instances`, with `alive` telling
/// which instance's process runs. Pure: tests pass their own liveness.
pub fn port_rows(
    effective: &Plan,
    instances: &[Instance],
    alive: impl Fn(&Instance) -> bool,
) -> Vec<PortRow> {
    effective
        .ports
        .iter()
        .map(|(port, policy)| {
            let owners = instances
                .iter()
                .filter_map(|inst| {
                    let used = inst.claim.ports.get(port)?;
                    let server = used.server.and_then(|s| inst.claim.servers.get(s));
                    Some(Owner {
                        instance: inst.claim.instance.clone(),
                        pid: inst.process.pid,
                        alive: alive(inst),
                        role: role_name(used.role),
                        server: server.map(|s| s.name.clone()),
                        upstream: server.map(|s| s.upstream.clone()),
                    })
                })
                .collect();
            PortRow {
                port: *port,
                flags: flag_names(*policy),
                owners,
            }
        })
        .collect()
}

/// Reads the report of `pin_dir`.
pub fn collect(pin_dir: &Path) -> Result<Report, EbpfError> {
    let instances = match Registry::open(pin_dir)? {
        Some(registry) => registry.instances()?,
        None => Vec::new(),
    };
    let effective = match ConfigMaps::open(pin_dir)? {
        Some(maps) => maps.read()?,
        None => Plan::default(),
    };
    let found = pins::inventory(pin_dir).map_err(|source| EbpfError::Io {
        what: "listing the pin directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    let locks = match LockMaps::open(pin_dir)? {
        Some(maps) => maps.read()?,
        None => Vec::new(),
    };
    let mut egress = Vec::new();
    if let Some(maps) = EgressMaps::open(pin_dir)? {
        let denials = maps.denials()?;
        for c in maps.read()? {
            let owner = instances
                .iter()
                .find(|i| registry::instance_id(&i.claim.instance) == c.instance);
            egress.push(EgressRow {
                cgroup_id: c.cgroup_id,
                server: c.server,
                instance: owner.map(|i| i.claim.instance.clone()),
                alive: owner.is_some_and(Instance::is_alive),
                attached: super::egress::attached(pin_dir, c.cgroup_id)?,
                rules: c.summary.lines().map(str::to_owned).collect(),
                entries: c
                    .entries
                    .iter()
                    .map(|(net, port)| match port {
                        0 => format!("{net} *"),
                        p => format!("{net} {p}"),
                    })
                    .collect(),
                denied: denials
                    .iter()
                    .filter(|d| d.cgroup_id == c.cgroup_id)
                    .map(|d| d.count)
                    .sum(),
            });
        }
    }
    Ok(Report {
        egress,
        locks,
        ports: port_rows(&effective, &instances, Instance::is_alive),
        instances: instances
            .iter()
            .map(|i| InstanceRow {
                name: i.claim.instance.clone(),
                pid: i.process.pid,
                alive: i.is_alive(),
                started_unix: i.started_unix,
                cgroup_id: i.claim.cgroup_id,
                servers: i
                    .claim
                    .servers
                    .iter()
                    .map(|s| (s.name.clone(), s.upstream.clone()))
                    .collect(),
            })
            .collect(),
        links: found
            .links
            .iter()
            .map(|l| format!("{} on cgroup {}", l.program, l.cgroup_id))
            .collect(),
        other_layouts: found
            .other_layouts
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::{
        policy::{Claim, ServerLabel, union},
        registry::Process,
    };

    fn instance(name: &str, pid: u32, ports: &[(u16, u32, Role)]) -> Instance {
        let mut claim = Claim {
            instance: name.into(),
            servers: vec![ServerLabel {
                name: format!("{name}-srv"),
                upstream: format!("http://127.0.0.1:{}/mcp", ports[0].0),
            }],
            ..Claim::default()
        };
        for (port, flags, role) in ports {
            let server = (*role != Role::Extra).then_some(0);
            claim.protect(*port, *flags, *role, server);
        }
        Instance {
            id: 0,
            claim,
            process: Process {
                pid,
                start_ticks: 1,
            },
            started_unix: 0,
        }
    }

    #[test]
    fn ports_list_every_owner_with_role_server_and_liveness() {
        let base = PortPolicy::LOOPBACK_ONLY | PortPolicy::BIND_DENY;
        let a = instance(
            "a",
            10,
            &[
                (8000, base | PortPolicy::EXCLUSIVE, Role::Upstream),
                (8787, base, Role::Listen),
            ],
        );
        let b = instance(
            "b",
            20,
            &[(9000, base, Role::Upstream), (8000, base, Role::Extra)],
        );
        let effective = union([&a.claim, &b.claim]);
        let rows = port_rows(&effective, &[a, b], |i| i.process.pid == 20);
        let ports: Vec<u16> = rows.iter().map(|r| r.port).collect();
        assert_eq!(ports, [8000, 8787, 9000]);
        assert_eq!(rows[0].flags, ["loopback-only", "bind-deny", "exclusive"]);
        let owners: Vec<(&str, bool, &str, Option<&str>)> = rows[0]
            .owners
            .iter()
            .map(|o| (o.instance.as_str(), o.alive, o.role, o.server.as_deref()))
            .collect();
        assert_eq!(
            owners,
            [
                ("a", false, "upstream", Some("a-srv")),
                ("b", true, "extra", None)
            ]
        );
        assert_eq!(
            rows[0].owners[0].upstream.as_deref(),
            Some("http://127.0.0.1:8000/mcp")
        );
        assert_eq!(rows[1].owners[0].role, "listen");
    }

    #[test]
    fn a_port_nobody_claims_has_no_owner() {
        let mut effective = Plan::default();
        effective.ports.insert(
            1234,
            PortPolicy {
                flags: PortPolicy::LOOPBACK_ONLY,
            },
        );
        let rows = port_rows(&effective, &[], |_| true);
        assert!(rows[0].owners.is_empty());
        assert_eq!(rows[0].flags, ["loopback-only"]);
    }
}
