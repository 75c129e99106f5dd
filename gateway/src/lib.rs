//! mcp-gateway: protects local MCP (Model Context Protocol) servers from DNS rebinding.
//!
//! Two layers: a userspace gateway that validates `Host`/`Origin` before anything reaches the
//! upstream MCP server, and cgroup eBPF programs that keep the protected ports loopback-only.
//! `unsafe` lives only in the modules that talk to the kernel: [`sys`], `ebpf::sys`,
//! `ebpf::system`, `ebpf::logs` and `lockdown::sockets`; everywhere else it is refused.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod credentials;
pub mod ebpf;
pub mod egress;
pub mod file_version;
pub mod lockdown;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod run;
pub mod scan;
pub mod security_log;
pub mod source;
pub mod supervise;
#[allow(unsafe_code, reason = "system calls")]
pub mod sys;
pub mod tls;

/// `0.1.0 (commit 0dbec3a1b2c3)`: what `--version` prints and `mcp_gateway_build_info` says.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MCP_GATEWAY_COMMIT"),
    ")"
);
