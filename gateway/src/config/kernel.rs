//! The kernel layer's settings as flags and file keys: whether to enforce, where, and how a
//! bind() of a protected port is answered. Value types only; the start-up is `ebpf::startup`.
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mcp-gateway";

/// Whether `run` enforces in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindPolicy {
    /// Refuse it with EPERM.
    #[default]
    Deny,
    /// Bind the loopback address of the same family instead.
    Rewrite,
}

/// eBPF enforcement options of `mcp-gateway run` (each also a key of the config file).
#[derive(Clone, Debug, Default, Args)]
pub struct EbpfArgs {
    /// Kernel enforcement: auto (when privileged), required (or exit), off [default: auto].
    #[arg(long = "ebpf", env = "MCP_GATEWAY_EBPF", value_enum)]
    pub mode: Option<EbpfMode>,
    /// cgroup-v2 directory to enforce on (its whole subtree) [default: the cgroup-v2 root].
    #[arg(long, env = "MCP_GATEWAY_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// bpffs directory for the pinned programs and maps, shared by every instance using it
    /// [default: /sys/fs/bpf/mcp-gateway].
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// bind() of a protected port to a non-loopback address: deny (EPERM) or rewrite (to
    /// loopback) [default: deny].
    #[arg(long, env = "MCP_GATEWAY_BIND_POLICY", value_enum)]
    pub bind_policy: Option<BindPolicy>,
    /// Another local port to keep loopback-only (repeatable).
    #[arg(
        long = "protect-port",
        env = "MCP_GATEWAY_PROTECT_PORTS",
        value_delimiter = ','
    )]
    pub protect_ports: Option<Vec<u16>>,
}
