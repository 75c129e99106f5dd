//! `mcp-gateway lockdown` and `mcp-gateway unlock`: the kill-switch from an operator's shell.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{
    ebpf::{locks::Lock, pins::DEFAULT_PIN_DIR},
    lockdown,
};

/// Flags of `mcp-gateway lockdown`.
#[derive(Clone, Debug, Args)]
pub struct LockdownArgs {
    /// Why (shown by `status` and `doctor`, and in the gateways' logs).
    #[arg(long, default_value = "lockdown engaged by an operator")]
    pub reason: String,
    /// Lock only this port (repeatable) [default: every protected port of every instance].
    #[arg(long = "port", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// bpffs directory the gateways pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// cgroup-v2 directory to attach the programs to when no gateway ever did (with --port)
    /// [default: the cgroup-v2 root].
    #[arg(long, env = "MCP_GATEWAY_CGROUP")]
    pub cgroup: Option<PathBuf>,
}

/// Flags of `mcp-gateway unlock`.
#[derive(Clone, Debug, Args)]
pub struct UnlockArgs {
    /// Release only this port's lock (repeatable) [default: every lock].
    #[arg(long = "port", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// bpffs directory the gateways pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub fn lockdown(args: &LockdownArgs) -> anyhow::Result<ExitCode> {
    let done = lockdown::engage(
        &args.pin_dir,
        args.cgroup.as_deref(),
        &args.ports,
        &args.reason,
    )?;
    if done.attached {
        println!(
            "no gateway had attached the kernel programs: attached them (instance `{}`; \
             `mcp-gateway unlock` removes them again)",
            lockdown::LOCKDOWN_INSTANCE
        );
    }
    let ports: Vec<String> = done.ports.iter().map(u16::to_string).collect();
    println!(
        "LOCKDOWN in force after {:.1} ms: ports {} are cut for everyone, loopback included",
        done.took.as_secs_f64() * 1000.0,
        if ports.is_empty() {
            "(none protected yet)".to_owned()
        } else {
            ports.join(", ")
        }
    );
    for lock in &done.locks {
        println!("  locked {}", Lock::describe(lock));
    }
    match &done.reset_error {
        None => println!("reset {} established connection(s)", done.reset),
        Some(e) => println!(
            "could not reset established connections ({e}): new connections are refused, \
             established ones stall until they time out"
        ),
    }
    println!("`mcp-gateway unlock` restores service");
    Ok(ExitCode::SUCCESS)
}

pub fn unlock(args: &UnlockArgs) -> anyhow::Result<ExitCode> {
    let ports = (!args.ports.is_empty()).then_some(args.ports.as_slice());
    let done = lockdown::release(&args.pin_dir, ports)?;
    if done.released.is_empty() {
        println!("nothing to unlock: no such lock is in force");
    }
    for lock in &done.released {
        println!("released {}", Lock::describe(lock));
    }
    for lock in &done.remaining {
        println!("still locked: {}", Lock::describe(lock));
    }
    if done.detached {
        println!("removed the programs the lockdown had attached");
    }
    Ok(ExitCode::SUCCESS)
}
