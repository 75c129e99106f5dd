//! Kernel-enforcement flags and subcommands (filled in by the kernel work).
use clap::Args;

/// eBPF enforcement options of `mcp-gateway run`.
#[derive(Debug, Args)]
pub struct EbpfArgs {}
