//! Kernel enforcement at the start of `mcp-gateway run`: what each server claims, what keeps the
//! layer from running here, and putting it in force (or saying loudly why not).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use gateway_common::PortPolicy;

use super::{
    Enforcement,
    policy::{Claim, Plan, Role, ServerLabel},
    system,
};
use crate::{
    config::{KernelSettings, kernel::EbpfMode},
    source::Cidr,
};

/// What the kernel layer needs to know of one server.
#[derive(Clone, Debug)]
pub struct ServerPorts {
    pub name: String,
    /// The upstream as configured, for reports.
    pub upstream: String,
    /// `None` for a Unix-socket upstream (nothing to protect: no port).
    pub upstream_port: Option<u16>,
    /// The bound listen address.
    pub listen: SocketAddr,
    pub exclusive_upstream: bool,
    pub allow_cgroups: Vec<PathBuf>,
    /// `--allow-source` of a non-loopback listener (ignored on loopback: only loopback reaches
    /// it anyway).
    pub sources: Vec<Cidr>,
}

/// What keeps kernel enforcement from running here, each with the reason; empty when nothing.
fn unavailable(settings: &KernelSettings) -> Vec<String> {
    let mut missing = Vec::new();
    let (major, minor) = system::MIN_KERNEL;
    if system::kernel_version().is_none_or(|v| v < system::MIN_KERNEL) {
        missing.push(format!(
            "Linux {major}.{minor}+ (running {})",
            system::kernel_release()
        ));
    }
    if system::cgroup2_mount().is_none() {
        missing.push("a cgroup v2 mount".to_owned());
    }
    let need_mount = !system::on_bpffs(&settings.pin_dir);
    for cap in system::missing_caps(need_mount) {
        missing.push(format!("{} (to {})", cap.name, cap.why));
    }
    missing
}

/// The claim of an instance named `instance`. `own_cgroup` is the gateway's cgroup id (when a
/// server has an exclusive upstream) and `allowed[i]` the `--allow-cgroup` ids of server `i`.
/// Pure: the caller resolves cgroups.
pub fn claim(
    instance: &str,
    settings: &KernelSettings,
    servers: &[ServerPorts],
    own_cgroup: Option<u64>,
    allowed: &[Vec<u64>],
) -> Claim {
    let mut claim = Claim {
        instance: instance.to_owned(),
        servers: servers
            .iter()
            .map(|s| ServerLabel {
                name: s.name.clone(),
                upstream: s.upstream.clone(),
            })
            .collect(),
        ..Claim::default()
    };
    let base = Plan::base_flags(settings.bind_policy);
    for (i, server) in servers.iter().enumerate() {
        if let Some(port) = server.upstream_port {
            claim.protect(port, base, Role::Upstream, Some(i));
            if server.exclusive_upstream {
                claim.protect(port, PortPolicy::EXCLUSIVE, Role::Upstream, Some(i));
                for id in own_cgroup
                    .iter()
                    .chain(allowed.get(i).into_iter().flatten())
                {
                    claim.allow(*id, port);
                }
            }
        }
        if server.listen.ip().is_loopback() {
            claim.protect(server.listen.port(), base, Role::Listen, Some(i));
        } else {
            for cidr in &server.sources {
                claim.allow_source(server.listen.port(), *cidr, Some(i));
            }
        }
    }
    for port in &settings.protect_ports {
        claim.protect(*port, base, Role::Extra, None);
    }
    claim
}

/// The instance's claim, resolving cgroups. May move the process into a cgroup of its own
/// (exclusive upstream).
fn resolve_claim(
    instance: &str,
    settings: &KernelSettings,
    servers: &[ServerPorts],
    mount: &Path,
) -> anyhow::Result<(Claim, Option<PathBuf>)> {
    let mut allowed = Vec::with_capacity(servers.len());
    for server in servers {
        let mut ids = Vec::new();
        for dir in &server.allow_cgroups {
            ids.push(system::cgroup_id(dir).with_context(|| {
                format!(
                    "--allow-cgroup {} (server `{}`): not a cgroup directory; give a path under \
                     the cgroup-v2 mount",
                    dir.display(),
                    server.name
                )
            })?);
        }
        allowed.push(ids);
    }
    let own = if servers.iter().any(|s| s.exclusive_upstream) {
        let own = system::move_into_own_cgroup(mount).context(
            "--exclusive-upstream: moving the gateway into a cgroup of its own failed; run it as \
             a systemd service (its own cgroup) or as root",
        )?;
        let id =
            system::cgroup_id(&own).with_context(|| format!("reading cgroup {}", own.display()))?;
        Some((own, id))
    } else {
        None
    };
    let claim = claim(
        instance,
        settings,
        servers,
        own.as_ref().map(|o| o.1),
        &allowed,
    );
    Ok((claim, own.map(|o| o.0)))
}

/// Starts kernel enforcement for `mcp-gateway run`.
///
/// `None` when `--ebpf off`, or `auto` without the privileges or kernel features (after a loud
/// warning). With `required`, anything missing is an error that says what.
pub fn start(
    settings: &KernelSettings,
    instance: &str,
    servers: &[ServerPorts],
) -> anyhow::Result<Option<Enforcement>> {
    if settings.mode == EbpfMode::Off {
        tracing::info!("kernel enforcement is off (--ebpf off): userspace protection only");
        return Ok(None);
    }
    let missing = unavailable(settings);
    if !missing.is_empty() {
        let what = missing.join(", ");
        if settings.mode == EbpfMode::Required {
            bail!(
                "kernel enforcement is required (--ebpf required) but unavailable: missing {what}. \
                 Run as root or grant the capabilities (systemd: AmbientCapabilities=CAP_BPF \
                 CAP_NET_ADMIN, as the packaged unit does), see `mcp-gateway doctor`, or use \
                 --ebpf auto to run userspace-only"
            );
        }
        tracing::warn!(
            "KERNEL ENFORCEMENT IS OFF: missing {what}. The MCP port is NOT protected from other \
             hosts or local processes by the kernel; only the gateway's userspace checks apply. \
             Run as root or grant the capabilities, see `mcp-gateway doctor`"
        );
        return Ok(None);
    }
    match (start_enforcing(settings, instance, servers), settings.mode) {
        (Ok(enforcement), _) => Ok(Some(enforcement)),
        (Err(e), EbpfMode::Required) => {
            Err(e.context("kernel enforcement is required (--ebpf required) but failed"))
        }
        (Err(e), _) => {
            tracing::warn!(
                "KERNEL ENFORCEMENT IS OFF: {e:#}. Only the gateway's userspace checks apply; \
                 see `mcp-gateway doctor`"
            );
            Ok(None)
        }
    }
}

fn start_enforcing(
    settings: &KernelSettings,
    instance: &str,
    servers: &[ServerPorts],
) -> anyhow::Result<Enforcement> {
    let mount = system::cgroup2_mount().context(system::NO_CGROUP2)?;
    let cgroup = system::attach_cgroup(settings.cgroup.as_deref())?;
    let (claim, own_cgroup) = resolve_claim(instance, settings, servers, &mount)?;
    let enforcement = super::enforce(super::Options {
        cgroup,
        pin_dir: settings.pin_dir.clone(),
        claim,
        own_cgroup,
    })?;
    let status = enforcement.status();
    let ports: Vec<String> = status.claim.ports.keys().map(u16::to_string).collect();
    tracing::info!(
        instance,
        cgroup = %status.cgroup.display(),
        pin_dir = %status.pin_dir.display(),
        ports = %ports.join(","),
        exclusive_upstream = servers.iter().any(|s| s.exclusive_upstream),
        gateway_cgroup = ?status.own_cgroup,
        other_instances = status.others.len(),
        taken_over = status.reused_links.len(),
        attached = status.new_links.len(),
        "kernel enforcement in force: protected ports are loopback-only"
    );
    Ok(enforcement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::{pins::DEFAULT_PIN_DIR, policy::BindPolicy};

    fn settings(bind: BindPolicy, extra: &[u16]) -> KernelSettings {
        KernelSettings {
            mode: EbpfMode::Auto,
            cgroup: None,
            pin_dir: DEFAULT_PIN_DIR.into(),
            bind_policy: bind,
            protect_ports: extra.to_vec(),
        }
    }

    fn server(
        name: &str,
        upstream_port: Option<u16>,
        listen: &str,
        exclusive: bool,
    ) -> ServerPorts {
        ServerPorts {
            name: name.into(),
            upstream: "x".into(),
            upstream_port,
            listen: listen.parse().unwrap(),
            exclusive_upstream: exclusive,
            allow_cgroups: Vec::new(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn the_claim_is_the_union_of_the_servers_ports() {
        let base = PortPolicy::LOOPBACK_ONLY | PortPolicy::BIND_DENY;
        let servers = [
            server("weather", Some(8000), "127.0.0.1:8787", true),
            server("db", None, "127.0.0.1:8788", false),
            server("lan", Some(9000), "0.0.0.0:8789", false),
        ];
        let c = claim(
            "i",
            &settings(BindPolicy::Deny, &[7000]),
            &servers,
            Some(42),
            &[vec![43], vec![], vec![]],
        );
        let ports: Vec<(u16, u32, Role, Option<usize>)> = c
            .ports
            .iter()
            .map(|(p, u)| (*p, u.flags, u.role, u.server))
            .collect();
        assert_eq!(
            ports,
            [
                (7000, base, Role::Extra, None),
                (8000, base | PortPolicy::EXCLUSIVE, Role::Upstream, Some(0)),
                (8787, base, Role::Listen, Some(0)),
                (8788, base, Role::Listen, Some(1)),
                (9000, base, Role::Upstream, Some(2)),
            ],
            "a socket upstream has no port; a non-loopback listener is not made loopback-only"
        );
        let allowed: Vec<(u64, u16)> = c.allowed.iter().map(|a| (a.cgroup, a.port)).collect();
        assert_eq!(
            allowed,
            [(42, 8000), (43, 8000)],
            "allowed onto its own upstream only"
        );
        assert_eq!(c.servers.len(), 3);
    }

    #[test]
    fn a_non_loopback_listener_gets_its_source_allowlist() {
        let lan = Cidr::parse("198.18.0.0/24").unwrap();
        let mut exposed = server("lan", Some(9000), "0.0.0.0:8443", false);
        exposed.sources = vec![lan];
        let mut local = server("local", Some(9001), "127.0.0.1:8787", false);
        local.sources = vec![lan];
        let c = claim(
            "i",
            &settings(BindPolicy::Deny, &[]),
            &[exposed, local],
            None,
            &[vec![], vec![]],
        );
        assert_eq!(c.ports[&8443].flags, PortPolicy::SOURCE_ALLOWLIST);
        assert_eq!(
            c.sources.iter().collect::<Vec<_>>(),
            [&(8443, lan)],
            "not on loopback"
        );
    }

    #[test]
    fn rewrite_bind_policy_reaches_every_port() {
        let c = claim(
            "i",
            &settings(BindPolicy::Rewrite, &[]),
            &[server("a", Some(1), "127.0.0.1:2", false)],
            None,
            &[vec![]],
        );
        assert!(
            c.ports
                .values()
                .all(|u| u.flags & PortPolicy::BIND_REWRITE != 0)
        );
        assert!(c.allowed.is_empty());
    }
}
