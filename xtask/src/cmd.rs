//! Small helpers for running commands and finding the workspace.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `cmd` with inherited stdio and fails with its command line when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its trimmed stdout, or `None` if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `cargo` as invoked by the current `cargo xtask` (honours `$CARGO`).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).as_deref() == Some("0")
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Installs the Debian packages whose commands are missing, given as (command, package) pairs.
/// Needs root; otherwise fails with the command to run.
pub fn ensure_apt(needs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|(command, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages: run `sudo apt-get install {}`",
            missing.join(" ")
        );
    }
    apt_install(&missing)
}

/// `apt-get update` and `apt-get install` of `packages` (root).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    // Wait for a dpkg lock held by another installer instead of failing at once.
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(&mut apt(&["update"]))?;
    run(apt(&["install", "-y", "--no-install-recommends"]).args(packages))
}

/// The CPU model, CPU count and kernel, for reports.
pub fn machine() -> String {
    let model = output(&mut Command::new("lscpu"))
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.strip_prefix("Model name:"))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_else(|| "?".to_owned());
    format!("{model}, {cpus} CPUs, Linux {kernel}")
}
