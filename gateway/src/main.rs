//! The `mcp-gateway` command line.
#![forbid(unsafe_code)]
use std::process::ExitCode;

use clap::Parser as _;
use mcp_gateway::cli::{Cli, Command, check, docs, kernel, lockdown, stats};

/// The proxy allocates per request (header maps, bodies); mimalloc gave ~8% more throughput than
/// glibc's malloc, measured side by side with wrk (three alternating 4 s runs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => mcp_gateway::run::run(args),
        Command::Check(args) => check::run(args),
        Command::Detach(args) => kernel::detach(args).map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => kernel::doctor(args),
        Command::Status(args) => kernel::status(args),
        Command::Lockdown(args) => lockdown::lockdown(args),
        Command::Unlock(args) => lockdown::unlock(args),
        Command::Stats(args) => stats::run(args),
        Command::Scan(args) => mcp_gateway::scan::run(args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    };
    result.unwrap_or_else(|err| {
        eprintln!("mcp-gateway: error: {err:#}");
        ExitCode::FAILURE
    })
}
