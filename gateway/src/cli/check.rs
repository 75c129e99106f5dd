//! `mcp-gateway check`: explain a policy decision (filled in by the policy work).
use clap::Args;

#[derive(Debug, Args)]
pub struct CheckArgs {}
