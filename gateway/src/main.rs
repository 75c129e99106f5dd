//! The `mcp-gateway` command line.
use clap::Parser;

/// DNS-rebinding protection for local MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcp-gateway", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
