//! Kernel enforcement from the command line: the `run` flags ([`EbpfArgs`], [`start`]), and the
//! `detach`, `doctor` and `status` subcommands.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gateway_common::PortPolicy;
use serde::Deserialize;

use crate::{
    config::KernelSettings,
    ebpf::{
        self, Enforcement, doctor as checks,
        pins::DEFAULT_PIN_DIR,
        policy::{BindPolicy, Claim, Plan, Role, ServerLabel},
        release, status, system,
    },
    source::Cidr,
};

/// Whether `run` enforces in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    /// Enforce when privileges and kernel allow; otherwise warn loudly and run userspace-only.
    #[default]
    Auto,
    /// Enforce, or exit with an error saying what is missing.
    Required,
    /// Userspace only.
    Off,
}

/// What bind() of a protected port to a non-loopback address gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindPolicyArg {
    /// Refuse it with EPERM.
    #[default]
    Deny,
    /// Bind the loopback address of the same family instead.
    Rewrite,
}

impl From<BindPolicyArg> for BindPolicy {
    fn from(arg: BindPolicyArg) -> Self {
        match arg {
            BindPolicyArg::Deny => Self::Deny,
            BindPolicyArg::Rewrite => Self::Rewrite,
        }
    }
}

/// eBPF enforcement options of `mcp-gateway run` (each also a key of the config file).
#[derive(Clone, Debug, Default, Args)]
pub struct EbpfArgs {
    /// Kernel enforcement: auto (when privileged), required (or exit), off [default: auto].
    #[arg(long = "ebpf", env = "MCP_GATEWAY_EBPF", value_enum)]
    pub mode: Option<EbpfMode>,
    /// cgroup-v2 directory to enforce on (its whole subtree) [default: the cgroup-v2 root].
    #[arg(long, env = "MCP_GATEWAY_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// bpffs directory for the pinned programs and maps, shared by every instance using it
    /// [default: /sys/fs/bpf/mcp-gateway].
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// bind() of a protected port to a non-loopback address: deny (EPERM) or rewrite (to
    /// loopback) [default: deny].
    #[arg(long, env = "MCP_GATEWAY_BIND_POLICY", value_enum)]
    pub bind_policy: Option<BindPolicyArg>,
    /// Another local port to keep loopback-only (repeatable).
    #[arg(
        long = "protect-port",
        env = "MCP_GATEWAY_PROTECT_PORTS",
        value_delimiter = ','
    )]
    pub protect_ports: Option<Vec<u16>>,
}

/// Flags of `mcp-gateway detach`.
#[derive(Clone, Debug, Args)]
pub struct DetachArgs {
    /// bpffs directory the gateway pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Withdraw only this instance's protection; every other instance keeps its own.
    #[arg(long, conflicts_with = "all")]
    pub instance: Option<String>,
    /// Remove every instance's protection, of every layout.
    #[arg(long)]
    pub all: bool,
    /// Keep the pinned counter maps (a later gateway continues counting from them).
    #[arg(long)]
    pub keep_counters: bool,
}

/// Flags of `mcp-gateway doctor`.
#[derive(Clone, Debug, Args)]
pub struct DoctorArgs {
    /// bpffs directory to look for programs in force.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Flags of `mcp-gateway status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// bpffs directory the gateways pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

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
    let enforcement = ebpf::enforce(ebpf::Options {
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

/// `mcp-gateway detach`: withdraws one instance (`--instance`), or removes everything (`--all`,
/// or when at most one instance is registered).
pub fn detach(args: &DetachArgs) -> anyhow::Result<()> {
    let need_root = || {
        format!(
            "reading the pins in {} (run as root)",
            args.pin_dir.display()
        )
    };
    if let Some(name) = &args.instance {
        let done = release::withdraw(&args.pin_dir, name).with_context(need_root)?;
        println!(
            "withdrew instance `{}` (pid {}): its ports {}",
            done.instance.claim.instance,
            done.instance.process.pid,
            ports_text(&done.instance.claim)
        );
        for link in &done.links {
            println!("detached {} (cgroup id {})", link.program, link.cgroup_id);
        }
        for other in &done.remaining {
            println!(
                "kept instance `{}`: its ports {}",
                other.claim.instance,
                ports_text(&other.claim)
            );
        }
        if let Some(layout) = &done.layout {
            println!(
                "no instance is left: removed {} link(s) and {} map(s); kept the counters",
                layout.links.len(),
                layout.maps.len()
            );
        }
        return Ok(());
    }
    if !args.all {
        let instances = release::instances(&args.pin_dir).with_context(need_root)?;
        if instances.len() > 1 {
            let list: Vec<String> = instances
                .iter()
                .map(|i| {
                    let state = if i.is_alive() {
                        "running"
                    } else {
                        "not running"
                    };
                    format!("`{}` (pid {}, {state})", i.claim.instance, i.process.pid)
                })
                .collect();
            bail!(
                "{} instances share {}: {}. Pass --instance NAME to withdraw one (the others \
                 keep their protection), or --all to remove every instance's protection",
                instances.len(),
                args.pin_dir.display(),
                list.join(", ")
            );
        }
    }
    let removed = release::remove_all(&args.pin_dir, args.keep_counters).with_context(need_root)?;
    if removed.is_empty() {
        println!("nothing pinned in {}", args.pin_dir.display());
    }
    for link in &removed.links {
        println!("detached {} (cgroup id {})", link.program, link.cgroup_id);
    }
    for map in &removed.maps {
        println!("unpinned {}", map.display());
    }
    for other in &removed.other_layouts {
        println!("removed {} (another map layout)", other.display());
    }
    for kept in &removed.kept {
        println!("kept {}", kept.display());
    }
    if removed.dir_removed {
        println!("removed {}", args.pin_dir.display());
    }
    Ok(())
}

fn ports_text(claim: &Claim) -> String {
    let ports: Vec<String> = claim.ports.keys().map(u16::to_string).collect();
    if ports.is_empty() {
        "(none)".to_owned()
    } else {
        ports.join(", ")
    }
}

/// `mcp-gateway doctor`: prints each check; exit status 1 when a required one fails.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = checks::run(&args.pin_dir);
    for check in &report {
        let mark = match (check.ok, check.required) {
            (true, _) => "ok     ",
            (false, true) => "MISSING",
            (false, false) => "note   ",
        };
        println!("{mark} {}: {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("        fix: {fix}");
        }
    }
    if checks::healthy(&report) {
        println!("kernel enforcement can run here");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("kernel enforcement can NOT run here; fix the MISSING items above");
        Ok(ExitCode::from(1))
    }
}

/// `mcp-gateway status`: every instance, and every protected port with its flags and owners.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let report = status::collect(&args.pin_dir).with_context(|| {
        format!(
            "reading the pins in {} (run as root, or with CAP_BPF)",
            args.pin_dir.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", status_text(&args.pin_dir, &report));
    Ok(ExitCode::SUCCESS)
}

fn status_text(pin_dir: &Path, report: &status::Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "pin directory {}", pin_dir.display());
    for lock in &report.locks {
        let _ = writeln!(
            out,
            "LOCKDOWN: {} (`mcp-gateway unlock` releases it)",
            super::lockdown::describe(lock)
        );
    }
    if report.instances.is_empty() {
        let _ = writeln!(out, "no gateway instance is registered");
    }
    for i in &report.instances {
        let state = if i.alive { "running" } else { "NOT RUNNING" };
        let _ = writeln!(
            out,
            "instance {} (pid {}, {state}, cgroup {})",
            i.name, i.pid, i.cgroup_id
        );
        for (name, upstream) in &i.servers {
            let _ = writeln!(out, "  server {name} -> {upstream}");
        }
    }
    if !report.ports.is_empty() {
        let _ = writeln!(out, "{:<6} {:<36} OWNERS", "PORT", "FLAGS");
    }
    for row in &report.ports {
        let owners: Vec<String> = row
            .owners
            .iter()
            .map(|o| {
                let state = if o.alive { "running" } else { "not running" };
                let server = match (&o.server, &o.upstream) {
                    (Some(s), Some(u)) => format!(" of {s} ({u})"),
                    _ => String::new(),
                };
                format!("{} [{}{server}, pid {} {state}]", o.instance, o.role, o.pid)
            })
            .collect();
        let owners = if owners.is_empty() {
            "(no registered owner)".to_owned()
        } else {
            owners.join("; ")
        };
        let _ = writeln!(out, "{:<6} {:<36} {owners}", row.port, row.flags.join(","));
    }
    for other in &report.other_layouts {
        let _ = writeln!(
            out,
            "note: {other} is another build's map layout; its programs enforce its own ports \
             (`mcp-gateway detach --all` removes it)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
