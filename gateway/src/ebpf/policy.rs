//! What the kernel enforces.
//!
//! Each gateway instance makes a [`Claim`]: its ports with their flags, and which cgroup may
//! connect to which of its exclusive ports. Several instances may share one pin directory; the
//! config maps the programs read always hold the [`union`] of every registered claim, so one
//! instance starting, stopping or crashing never removes or weakens another's protection.
//! Everything here is pure; writing the maps is in [`super::maps`].
use std::collections::{BTreeMap, BTreeSet};

use gateway_common::{CgroupPort, PortPolicy};

pub use crate::config::kernel::BindPolicy;
use crate::source::Cidr;

/// What the programs read: the protected ports, who may connect to the exclusive ones, and
/// which sources may reach the ports with a source allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ports: BTreeMap<u16, PortPolicy>,
    /// (cgroup, port): the cgroup may connect to that `EXCLUSIVE` port.
    pub allowed: BTreeSet<CgroupPort>,
    /// (port, network): the network may reach that `SOURCE_ALLOWLIST` port.
    pub sources: BTreeSet<(u16, Cidr)>,
}

impl Plan {
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

/// Why an instance protects a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The upstream port of a server.
    Upstream,
    /// The gateway's own listen port for a server.
    Listen,
    /// `--protect-port`.
    Extra,
}

/// One port of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortUse {
    pub flags: u32,
    pub role: Role,
    /// Index into [`Claim::servers`] (`None` for [`Role::Extra`]).
    pub server: Option<usize>,
}

/// A server of an instance, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerLabel {
    pub name: String,
    pub upstream: String,
}

/// Everything one gateway instance asks the kernel to enforce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The instance name (`--instance`); a restart with the same name takes the claim over.
    pub instance: String,
    /// The cgroup the instance's programs are attached to.
    pub cgroup_id: u64,
    pub ports: BTreeMap<u16, PortUse>,
    pub allowed: BTreeSet<CgroupPort>,
    pub sources: BTreeSet<(u16, Cidr)>,
    pub servers: Vec<ServerLabel>,
}

impl Claim {
    /// Protects `port` with `flags` for `role`. Flags of a port claimed twice merge; the first
    /// role (in [`Role`] order) names it.
    pub fn protect(&mut self, port: u16, flags: u32, role: Role, server: Option<usize>) {
        let entry = self.ports.entry(port).or_insert(PortUse {
            flags: 0,
            role,
            server,
        });
        entry.flags |= flags;
        if role < entry.role {
            entry.role = role;
            entry.server = server;
        }
    }

    /// Lets `cgroup` connect to the exclusive `port`.
    pub fn allow(&mut self, cgroup: u64, port: u16) {
        self.allowed.insert(CgroupPort::new(cgroup, port));
    }

    /// Lets the network `cidr` reach `port` (which gets a source allowlist).
    pub fn allow_source(&mut self, port: u16, cidr: Cidr, server: Option<usize>) {
        self.protect(port, PortPolicy::SOURCE_ALLOWLIST, Role::Listen, server);
        self.sources.insert((port, cidr));
    }

    /// This claim alone, as the programs would read it.
    pub fn plan(&self) -> Plan {
        union([self])
    }
}

/// The strongest bind flag wins: a port one instance denies and another rewrites is denied
/// (both keep it off non-loopback addresses; denying is what the stricter operator asked for).
fn normalize(mut flags: u32) -> u32 {
    if flags & PortPolicy::BIND_DENY != 0 {
        flags &= !PortPolicy::BIND_REWRITE;
    }
    flags
}

/// What the config maps must hold for these claims: every port any claim protects, with the
/// union of its flags, and every allowed (cgroup, port).
pub fn union<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> Plan {
    let mut plan = Plan::default();
    for claim in claims {
        for (port, used) in &claim.ports {
            plan.ports.entry(*port).or_default().flags |= used.flags;
        }
        plan.allowed.extend(claim.allowed.iter().copied());
        plan.sources.extend(claim.sources.iter().copied());
    }
    for policy in plan.ports.values_mut() {
        policy.flags = normalize(policy.flags);
    }
    plan
}

/// What of `claim` the `effective` maps do not enforce, in words; empty when all of it is.
///
/// A port is covered when its effective flags include the claim's (a bind rewrite claimed is
/// covered by a deny: both keep the port off non-loopback addresses).
pub fn gaps(claim: &Claim, effective: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for (port, used) in &claim.ports {
        let Some(have) = effective.ports.get(port) else {
            out.push(format!("port {port} is not protected"));
            continue;
        };
        let want = used.flags;
        let bind = PortPolicy::BIND_DENY | PortPolicy::BIND_REWRITE;
        let mut missing = Vec::new();
        if want & PortPolicy::LOOPBACK_ONLY != 0 && !have.has(PortPolicy::LOOPBACK_ONLY) {
            missing.push("loopback-only");
        }
        if want & bind != 0 && have.flags & bind == 0 {
            missing.push("bind protection");
        }
        if want & PortPolicy::EXCLUSIVE != 0 && !have.has(PortPolicy::EXCLUSIVE) {
            missing.push("exclusive");
        }
        if want & PortPolicy::SOURCE_ALLOWLIST != 0 && !have.has(PortPolicy::SOURCE_ALLOWLIST) {
            missing.push("source allowlist");
        }
        if !missing.is_empty() {
            out.push(format!("port {port} lacks {}", missing.join(", ")));
        }
    }
    for pair in &claim.allowed {
        if !effective.allowed.contains(pair) {
            out.push(format!(
                "cgroup {} is not allowed onto port {}",
                pair.cgroup, pair.port
            ));
        }
    }
    for (port, cidr) in &claim.sources {
        if !effective.sources.contains(&(*port, *cidr)) {
            out.push(format!("source {cidr} is not allowed onto port {port}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = PortPolicy::LOOPBACK_ONLY | PortPolicy::BIND_DENY;
    const REWRITE: u32 = PortPolicy::LOOPBACK_ONLY | PortPolicy::BIND_REWRITE;

    fn claim(name: &str, ports: &[(u16, u32)], allowed: &[(u64, u16)]) -> Claim {
        let mut c = Claim {
            instance: name.to_owned(),
            ..Claim::default()
        };
        for (port, flags) in ports {
            c.protect(*port, *flags, Role::Upstream, Some(0));
        }
        for (cgroup, port) in allowed {
            c.allow(*cgroup, *port);
        }
        c
    }

    fn flags(plan: &Plan) -> Vec<(u16, u32)> {
        plan.ports.iter().map(|(p, f)| (*p, f.flags)).collect()
    }

    #[test]
    fn flags_of_a_port_merge_within_a_claim() {
        let mut c = Claim::default();
        c.protect(8000, BASE, Role::Extra, None);
        c.protect(8000, PortPolicy::EXCLUSIVE, Role::Upstream, Some(1));
        c.protect(8787, REWRITE, Role::Listen, Some(0));
        assert_eq!(c.ports[&8000].flags, BASE | PortPolicy::EXCLUSIVE);
        assert_eq!(
            (c.ports[&8000].role, c.ports[&8000].server),
            (Role::Upstream, Some(1)),
            "the upstream role names the port"
        );
        assert_eq!(c.plan().exclusive_ports().collect::<Vec<_>>(), [8000]);
    }

    #[test]
    fn union_table() {
        let ex = BASE | PortPolicy::EXCLUSIVE;
        type Row = (&'static str, Vec<Claim>, Vec<(u16, u32)>, Vec<(u64, u16)>);
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("nothing", vec![], vec![], vec![]),
            (
                "one claim as is",
                vec![claim("a", &[(8000, BASE), (8787, BASE)], &[])],
                vec![(8000, BASE), (8787, BASE)],
                vec![],
            ),
            (
                "disjoint claims add up",
                vec![
                    claim("a", &[(8000, BASE)], &[(7, 8000)]),
                    claim("b", &[(9000, ex)], &[(9, 9000)]),
                ],
                vec![(8000, BASE), (9000, ex)],
                vec![(7, 8000), (9, 9000)],
            ),
            (
                "a shared port gets both claims' flags",
                vec![
                    claim("a", &[(8000, BASE)], &[]),
                    claim("b", &[(8000, ex)], &[(9, 8000)]),
                ],
                vec![(8000, ex)],
                vec![(9, 8000)],
            ),
            (
                "deny wins over rewrite",
                vec![
                    claim("a", &[(8000, REWRITE)], &[]),
                    claim("b", &[(8000, BASE)], &[]),
                ],
                vec![(8000, BASE)],
                vec![],
            ),
            (
                "rewrite alone stays rewrite",
                vec![claim("a", &[(8000, REWRITE)], &[])],
                vec![(8000, REWRITE)],
                vec![],
            ),
            (
                "allowed cgroups stay per port",
                vec![
                    claim("a", &[(8000, ex)], &[(7, 8000)]),
                    claim("b", &[(9000, ex)], &[(9, 9000)]),
                ],
                vec![(8000, ex), (9000, ex)],
                vec![(7, 8000), (9, 9000)],
            ),
        ];
        for (name, claims, want_ports, want_allowed) in rows {
            let plan = union(&claims);
            assert_eq!(flags(&plan), want_ports, "{name}");
            let allowed: Vec<(u64, u16)> =
                plan.allowed.iter().map(|a| (a.cgroup, a.port)).collect();
            assert_eq!(allowed, want_allowed, "{name}");
        }
    }

    #[test]
    fn removing_one_claim_never_touches_another() {
        let a = claim("a", &[(8000, BASE), (8787, BASE)], &[(7, 8000)]);
        let b = claim("b", &[(9000, BASE), (8787, BASE)], &[(9, 9000)]);
        let both = union([&a, &b]);
        let only_b = union([&b]);
        assert!(gaps(&b, &both).is_empty());
        assert!(gaps(&b, &only_b).is_empty(), "b is whole without a");
        assert_eq!(
            gaps(&a, &only_b),
            [
                "port 8000 is not protected",
                "cgroup 7 is not allowed onto port 8000"
            ],
            "8787 stays: b claims it too"
        );
    }

    #[test]
    fn source_allowlists_join_and_are_checked() {
        let lan = Cidr::parse("198.18.0.0/24").unwrap();
        let vpn = Cidr::parse("10.8.0.0/16").unwrap();
        let mut a = claim("a", &[], &[]);
        a.allow_source(8443, lan, Some(0));
        let mut b = claim("b", &[], &[]);
        b.allow_source(9443, vpn, Some(0));
        let both = union([&a, &b]);
        assert_eq!(
            both.ports[&8443].flags,
            PortPolicy::SOURCE_ALLOWLIST,
            "only the allowlist"
        );
        assert_eq!(both.sources.len(), 2);
        assert!(gaps(&a, &both).is_empty());
        let only_b = union([&b]);
        assert_eq!(
            gaps(&a, &only_b),
            [
                "port 8443 is not protected",
                "source 198.18.0.0/24 is not allowed onto port 8443"
            ]
        );
    }

    #[test]
    fn gaps_table() {
        let ex = BASE | PortPolicy::EXCLUSIVE;
        let mine = claim("a", &[(8000, ex), (8787, REWRITE)], &[(7, 8000)]);
        let effective = |ports: &[(u16, u32)], allowed: &[(u64, u16)]| Plan {
            ports: ports
                .iter()
                .map(|(p, f)| (*p, PortPolicy { flags: *f }))
                .collect(),
            allowed: allowed
                .iter()
                .map(|(c, p)| CgroupPort::new(*c, *p))
                .collect(),
            sources: BTreeSet::new(),
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, Plan, Vec<&str>)> = vec![
            ("exactly mine", effective(&[(8000, ex), (8787, REWRITE)], &[(7, 8000)]), vec![]),
            ("more than mine", effective(&[(8000, ex), (8787, BASE), (1, BASE)], &[(7, 8000), (9, 8000)]), vec![]),
            ("empty maps", effective(&[], &[]), vec![
                "port 8000 is not protected", "port 8787 is not protected",
                "cgroup 7 is not allowed onto port 8000",
            ]),
            ("flags weakened", effective(&[(8000, PortPolicy::LOOPBACK_ONLY), (8787, PortPolicy::BIND_REWRITE)], &[(7, 8000)]), vec![
                "port 8000 lacks bind protection, exclusive",
                "port 8787 lacks loopback-only",
            ]),
            ("my cgroup swapped for another", effective(&[(8000, ex), (8787, REWRITE)], &[(8, 8000)]), vec![
                "cgroup 7 is not allowed onto port 8000",
            ]),
            ("allowed on the wrong port", effective(&[(8000, ex), (8787, REWRITE)], &[(7, 8787)]), vec![
                "cgroup 7 is not allowed onto port 8000",
            ]),
        ];
        for (name, plan, want) in rows {
            assert_eq!(gaps(&mine, &plan), want, "{name}");
        }
    }
}
