//! `cargo xtask run -- <args>`: build the gateway and start it with the privileges it needs.
use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{cmd, setup};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let bin = build_release()?;
    // Attaching cgroup programs needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN).
    let mut gateway = if cmd::is_root() {
        Command::new(&bin)
    } else {
        eprintln!("xtask: not root; starting mcp-gateway through `sudo -E`");
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&bin);
        sudo
    };
    gateway.args(args);
    // exec only returns on failure.
    Err(gateway.exec()).with_context(|| format!("could not start {}", bin.display()))
}

/// Sets up the toolchain and builds `mcp-gateway` (release); returns the binary's path.
pub fn build_release() -> anyhow::Result<PathBuf> {
    let tools = setup::setup()?;
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "--package",
                "gateway",
                "--bin",
                "mcp-gateway",
            ])
            .env("PATH", tools.path()?),
    )?;
    Ok(target_dir().join("release").join("mcp-gateway"))
}

/// Builds a helper binary of the tests package (release); returns its path.
pub fn build_test_bin(name: &str) -> anyhow::Result<PathBuf> {
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "mcp-gateway-tests",
        "--bin",
        name,
    ]))?;
    Ok(target_dir().join("release").join(name))
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
}
