//! Kernel enforcement from the command line: the `detach`, `doctor` and `status` subcommands.
//! (`run`'s flags are `config::kernel`; its start-up is `ebpf::startup`.)
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::ebpf::{doctor as checks, pins::DEFAULT_PIN_DIR, policy::Claim, release, status};

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
        for cgroup in &done.egress_cgroups {
            println!("released the egress rules and programs of cgroup id {cgroup}");
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
    let supervised =
        crate::supervise::state::read_all(&crate::supervise::state::dir(&args.pin_dir));
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a status::Report,
            supervised: &'a [crate::supervise::state::ServerState],
        }
        let out = Out {
            report: &report,
            supervised: &supervised,
        };
        println!("{}", serde_json::to_string(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", status_text(&args.pin_dir, &report));
    print!("{}", supervised_text(&supervised));
    Ok(ExitCode::SUCCESS)
}

/// The servers the gateways on this pin directory start, one block each.
fn supervised_text(servers: &[crate::supervise::state::ServerState]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in servers {
        let gateway_alive = Path::new(&format!("/proc/{}", s.gateway_pid)).exists();
        let state = match (gateway_alive, s.pid) {
            (false, _) => format!("its gateway (pid {}) is not running", s.gateway_pid),
            (true, 0) => "DOWN".to_owned(),
            (true, pid) => format!("running, pid {pid}, up since {}", since(s.up_since_unix)),
        };
        let _ = writeln!(
            out,
            "supervised server {} (instance {}): {state}; restarts {}{}",
            s.server,
            s.instance,
            s.restarts,
            s.last_exit
                .as_deref()
                .map(|e| format!(", last exit: {e}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  cgroup {}; file system sandbox {}",
            s.cgroup.as_deref().unwrap_or("(none)"),
            if s.sandbox {
                "in force"
            } else {
                "NOT IN FORCE"
            }
        );
        for (key, value, enforced) in &s.limits {
            let _ = writeln!(
                out,
                "  {key} = {value}: {}",
                if *enforced {
                    "in force"
                } else {
                    "NOT ENFORCED"
                }
            );
        }
    }
    out
}

fn since(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

fn status_text(pin_dir: &Path, report: &status::Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "pin directory {}", pin_dir.display());
    for lock in &report.locks {
        let _ = writeln!(
            out,
            "LOCKDOWN: {} (`mcp-gateway unlock` releases it)",
            lock.describe()
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
    for e in &report.egress {
        let owner = match &e.instance {
            Some(name) if e.alive => format!("instance {name}, running"),
            Some(name) => format!("instance {name}, NOT RUNNING: its rules stay in force"),
            None => "no registered instance".to_owned(),
        };
        let state = if e.attached {
            "enforcing"
        } else {
            "NOT ENFORCED: its programs are not attached"
        };
        let _ = writeln!(
            out,
            "egress of server {} ({owner}; cgroup id {}): {state}, {} denied",
            e.server, e.cgroup_id, e.denied
        );
        for line in &e.rules {
            let _ = writeln!(out, "  {line}");
        }
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
