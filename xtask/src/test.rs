//! `cargo xtask test` and `cargo xtask lint`.
use std::{fs, process::Command};

use anyhow::bail;

use crate::{cmd, run::target_dir, setup};

/// (command, Debian package) the integration tests need.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("chromium", "chromium"),
    ("ip", "iproute2"),
    ("setpriv", "util-linux"),
    // The package test: install, read the man page, score the units.
    ("man", "man-db"),
    ("systemd-analyze", "systemd"),
    ("adduser", "adduser"),
];

/// Set (to 1) where the privileged tests must run, as in CI: their absence is then an error.
const REQUIRE_PRIVILEGED: &str = "MCP_GATEWAY_REQUIRE_PRIVILEGED";

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    let tools = setup::setup()?;
    let path = tools.path()?;
    // The integration tests drive the real binary.
    cmd::run(
        cmd::cargo()
            .args(["build", "--package", "gateway", "--bin", "mcp-gateway"])
            .env("PATH", &path),
    )?;
    let bin = target_dir().join("debug").join("mcp-gateway");

    // System tools the tests drive: Prometheus and promtool (metrics tests), Chromium (the
    // browser attack). Installed here, once, rather than by tests racing for the dpkg lock.
    if cmd::is_root() {
        cmd::ensure_apt(TEST_PACKAGES)?;
    } else {
        eprintln!("xtask: not root: not installing test packages; tests that need them say so");
    }

    let privileged = privileges();
    if let Err(reason) = &privileged {
        if std::env::var(REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1") {
            bail!("{REQUIRE_PRIVILEGED}=1 but the privileged tests cannot run: {reason}");
        }
        eprintln!("xtask: SKIPPED: the privileged kernel tests will not run: {reason}");
        eprintln!(
            "xtask: (run `sudo -E cargo xtask test` on a host with cgroup v2 to include them)"
        );
    }

    // The package test installs and purges the .deb: built here, where it can run.
    let deb = match (
        &privileged,
        cmd::output(Command::new("dpkg").arg("--version")),
    ) {
        (Ok(()), Some(_)) => Some(crate::deb::deb()?),
        _ => {
            eprintln!("xtask: SKIPPED: the package test needs root and dpkg");
            None
        }
    };

    let nextest = cmd::output(cmd::cargo().args(["nextest", "--version"])).is_some();
    let mut runner = cmd::cargo();
    runner.env("PATH", &path).env("MCP_GATEWAY_BIN", &bin);
    if let Some(deb) = &deb {
        runner.env("MCP_GATEWAY_DEB", deb);
    }
    if nextest {
        // .config/nextest.toml runs the kernel tests one at a time; skipped ones are counted in
        // nextest's summary.
        runner.args(["nextest", "run", "--no-fail-fast"]);
        if privileged.is_ok() {
            runner.args(["--run-ignored", "all"]);
        }
        runner.args(extra);
    } else {
        eprintln!(
            "xtask: cargo-nextest not found; using `cargo test` (kernel tests one at a time)"
        );
        runner.args(["test", "--no-fail-fast", "--"]);
        if privileged.is_ok() {
            runner.args(["--include-ignored", "--test-threads=1"]);
        }
        runner.args(extra);
    }
    cmd::run(&mut runner)
}

/// Ok when the privileged tests can run here, else why not.
fn privileges() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!("missing capabilities: {}", missing.join(", ")));
    }
    let mounts =
        fs::read_to_string("/proc/mounts").map_err(|e| format!("reading /proc/mounts: {e}"))?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
    {
        return Err("no cgroup v2 mount in /proc/mounts".into());
    }
    Ok(())
}

pub fn lint() -> anyhow::Result<()> {
    let tools = setup::setup()?;
    let path = tools.path()?;
    // The nightly-only rustfmt options (import grouping) need nightly rustfmt.
    cmd::run(
        Command::new("rustup").args(["run", "nightly", "cargo", "fmt", "--all", "--", "--check"]),
    )?;
    cmd::run(
        cmd::cargo()
            .args(["clippy", "--all-targets", "--", "-D", "warnings"])
            .env("PATH", &path),
    )?;
    // The eBPF crate on its own real target, as aya-template lints it.
    cmd::run(
        Command::new("rustup")
            .args([
                "run",
                &tools.toolchain,
                "cargo",
                "clippy",
                "--package",
                "gateway-ebpf",
            ])
            .args([
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(cmd::workspace_root())
            .env("PATH", &path)
            .env("RUSTC_BOOTSTRAP", "1"),
    )
}
