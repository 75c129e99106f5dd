//! Egress allowlists: what a confined MCP server may reach (`egress = ["api.github.com:443"]`).
//! The decisions here are pure; the kernel enforces them (`ebpf::confine` loads the entries,
//! the `egress_*` programs refuse everything else with EPERM).
//!
//! - [`rule`]: parsing a rule, and the kernel entries a server's rules come to.
//! - [`names`]: names as last resolved, with the previous answer kept one more round.
//! - [`report`]: bounded labels for denials, and the rate limit of denial log lines.
pub mod names;
pub mod report;
pub mod rule;

pub use rule::{Dest, Entry, Rule};
