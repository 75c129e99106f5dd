//! Kernel enforcement from the command line: the `run` flags ([`EbpfArgs`], [`start`]), and the
//! `detach` and `doctor` subcommands.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gateway_common::PortPolicy;

use crate::ebpf::{
    self, Enforcement, doctor as checks,
    pins::{self, DEFAULT_PIN_DIR},
    policy::{BindPolicy, Plan},
    system,
};

/// Whether `run` enforces in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
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

/// eBPF enforcement options of `mcp-gateway run`.
#[derive(Clone, Debug, Args)]
pub struct EbpfArgs {
    /// Kernel enforcement: auto (when privileged), required (or exit), off.
    #[arg(long = "ebpf", env = "MCP_GATEWAY_EBPF", value_enum, default_value_t = EbpfMode::Auto)]
    pub mode: EbpfMode,
    /// cgroup-v2 directory to enforce on (its whole subtree) [default: the cgroup-v2 root].
    #[arg(long, env = "MCP_GATEWAY_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// bpffs directory for the pinned programs and maps.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// bind() of a protected port to a non-loopback address: deny (EPERM) or rewrite (to
    /// loopback).
    #[arg(long, env = "MCP_GATEWAY_BIND_POLICY", value_enum, default_value_t = BindPolicyArg::Deny)]
    pub bind_policy: BindPolicyArg,
    /// Only the gateway (and --allow-cgroup cgroups) may connect to the upstream's port.
    #[arg(
        long,
        env = "MCP_GATEWAY_EXCLUSIVE_UPSTREAM",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub exclusive_upstream: bool,
    /// Another cgroup allowed to connect to the upstream with --exclusive-upstream (repeatable).
    #[arg(
        long = "allow-cgroup",
        env = "MCP_GATEWAY_ALLOW_CGROUPS",
        value_delimiter = ','
    )]
    pub allow_cgroups: Vec<PathBuf>,
    /// Another local port to keep loopback-only (repeatable).
    #[arg(
        long = "protect-port",
        env = "MCP_GATEWAY_PROTECT_PORTS",
        value_delimiter = ','
    )]
    pub protect_ports: Vec<u16>,
}

/// Flags of `mcp-gateway detach`.
#[derive(Clone, Debug, Args)]
pub struct DetachArgs {
    /// bpffs directory the gateway pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
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

/// What keeps kernel enforcement from running here, each with the reason; empty when nothing.
fn unavailable(args: &EbpfArgs) -> Vec<String> {
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
    let need_mount = !system::on_bpffs(&args.pin_dir);
    for cap in system::missing_caps(need_mount) {
        missing.push(format!("{} (to {})", cap.name, cap.why));
    }
    missing
}

/// The ports and cgroups to enforce for this gateway. May move the process into a cgroup of its
/// own (exclusive upstream).
fn plan(
    args: &EbpfArgs,
    upstream_port: u16,
    listen: SocketAddr,
    mount: &std::path::Path,
) -> anyhow::Result<(Plan, Option<PathBuf>)> {
    let mut plan = Plan::default();
    let base = Plan::base_flags(args.bind_policy.into());
    plan.protect(upstream_port, base);
    if listen.ip().is_loopback() {
        plan.protect(listen.port(), base);
    }
    for port in &args.protect_ports {
        plan.protect(*port, base);
    }
    if !args.exclusive_upstream {
        return Ok((plan, None));
    }
    plan.protect(upstream_port, PortPolicy::EXCLUSIVE);
    let own = system::move_into_own_cgroup(mount).context(
        "--exclusive-upstream: moving the gateway into a cgroup of its own failed; run it as a \
         systemd service (its own cgroup) or as root",
    )?;
    plan.allowed_cgroups.insert(
        system::cgroup_id(&own).with_context(|| format!("reading cgroup {}", own.display()))?,
    );
    for dir in &args.allow_cgroups {
        let id = system::cgroup_id(dir).with_context(|| {
            format!(
                "--allow-cgroup {}: not a cgroup directory; give a path under the cgroup-v2 mount",
                dir.display()
            )
        })?;
        plan.allowed_cgroups.insert(id);
    }
    Ok((plan, Some(own)))
}

/// Starts kernel enforcement for `mcp-gateway run`.
///
/// `None` when `--ebpf off`, or `auto` without the privileges or kernel features (after a loud
/// warning). With `required`, anything missing is an error that says what.
pub fn start(
    args: &EbpfArgs,
    upstream_port: u16,
    listen: SocketAddr,
) -> anyhow::Result<Option<Enforcement>> {
    if args.mode == EbpfMode::Off {
        tracing::info!("kernel enforcement is off (--ebpf off): userspace protection only");
        return Ok(None);
    }
    let missing = unavailable(args);
    if !missing.is_empty() {
        let what = missing.join(", ");
        if args.mode == EbpfMode::Required {
            bail!(
                "kernel enforcement is required (--ebpf required) but unavailable: missing {what}. \
                 Run as root or grant the capabilities (systemd: AmbientCapabilities=CAP_BPF \
                 CAP_NET_ADMIN CAP_SYS_ADMIN), see `mcp-gateway doctor`, or use --ebpf auto to \
                 run userspace-only"
            );
        }
        tracing::warn!(
            "KERNEL ENFORCEMENT IS OFF: missing {what}. The MCP port is NOT protected from other \
             hosts or local processes by the kernel; only the gateway's userspace checks apply. \
             Run as root or grant the capabilities, see `mcp-gateway doctor`"
        );
        return Ok(None);
    }
    let result = start_enforcing(args, upstream_port, listen);
    match (result, args.mode) {
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
    args: &EbpfArgs,
    upstream_port: u16,
    listen: SocketAddr,
) -> anyhow::Result<Enforcement> {
    let mount = system::cgroup2_mount().context("no cgroup v2 mount in /proc/mounts")?;
    let cgroup = args.cgroup.clone().unwrap_or_else(|| mount.clone());
    let (plan, own_cgroup) = plan(args, upstream_port, listen, &mount)?;
    let enforcement = ebpf::enforce(ebpf::Options {
        cgroup,
        pin_dir: args.pin_dir.clone(),
        plan,
        own_cgroup,
    })?;
    let status = enforcement.status();
    let ports: Vec<String> = status.plan.ports.keys().map(u16::to_string).collect();
    tracing::info!(
        cgroup = %status.cgroup.display(),
        pin_dir = %status.pin_dir.display(),
        ports = %ports.join(","),
        exclusive_upstream = args.exclusive_upstream,
        gateway_cgroup = ?status.own_cgroup,
        taken_over = status.reused_links.len(),
        attached = status.new_links.len(),
        "kernel enforcement in force: protected ports are loopback-only"
    );
    Ok(enforcement)
}

/// `mcp-gateway detach`: removes every link and map the gateway pinned.
pub fn detach(args: &DetachArgs) -> anyhow::Result<()> {
    let removed = pins::remove_all(&args.pin_dir, args.keep_counters).with_context(|| {
        format!(
            "removing the pins in {} (run as root)",
            args.pin_dir.display()
        )
    })?;
    if removed.links.is_empty() && removed.maps.is_empty() {
        println!("nothing pinned in {}", args.pin_dir.display());
    }
    for link in &removed.links {
        println!("detached {} (cgroup id {})", link.program, link.cgroup_id);
    }
    for map in &removed.maps {
        println!("unpinned {}", map.display());
    }
    for kept in &removed.kept {
        println!("kept {}", kept.display());
    }
    if removed.dir_removed {
        println!("removed {}", args.pin_dir.display());
    }
    Ok(())
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
