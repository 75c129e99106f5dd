//! The `mcp-gateway` command line: one subcommand per job.
pub mod check;
pub mod kernel;
pub mod lockdown;
pub mod stats;

use clap::{Parser, Subcommand};

/// DNS-rebinding protection for local MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcp-gateway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in front of an MCP server.
    Run(Box<crate::config::RunArgs>),
    /// Explain how the Host/Origin policy decides a request.
    Check(Box<check::CheckArgs>),
    /// Withdraw one instance's kernel protection (--instance), or remove everything (--all).
    Detach(kernel::DetachArgs),
    /// Check what kernel enforcement needs on this host, and what is in force.
    Doctor(kernel::DoctorArgs),
    /// List every protected port with its flags and owners (instance, upstream, alive).
    Status(kernel::StatusArgs),
    /// Cut every protected port (or --port) for everyone at once, until `unlock`.
    Lockdown(lockdown::LockdownArgs),
    /// Release the lockdown (or one --port of it).
    Unlock(lockdown::UnlockArgs),
    /// Show the rejection counters pinned by the gateway and its kernel programs.
    Stats(stats::StatsArgs),
}
