//! `cargo xtask deb`: the Debian package, `target/debian/mcp-gateway_<version>_<arch>.deb`, built
//! with cargo-deb from `[package.metadata.deb]` in `gateway/Cargo.toml`. The man pages and the
//! shell completions are generated from the release binary first (clap_mangen, clap_complete),
//! so they can't drift from its flags.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, run, setup};

const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the generated assets go: `target/release/deb-assets`, which cargo-deb finds through its
/// `target/release/` asset prefix whatever the target directory is.
fn assets_dir() -> PathBuf {
    run::target_dir().join("release").join("deb-assets")
}

/// Installs cargo-deb into the tools dir, once.
fn ensure_cargo_deb(tools: &Path) -> anyhow::Result<()> {
    let bin = tools.join("bin").join("cargo-deb");
    let version = cmd::output(Command::new(&bin).arg("--version"));
    if version.is_some_and(|v| v.contains(CARGO_DEB_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing cargo-deb {CARGO_DEB_VERSION} into {} (once)",
        tools.display()
    );
    cmd::run(
        cmd::cargo()
            .args(["install", "--locked", "--force", "cargo-deb", "--version"])
            .arg(CARGO_DEB_VERSION)
            .arg("--root")
            .arg(tools),
    )
    .context("installing cargo-deb failed")
}

/// Man pages (gzipped, as Debian ships them) and completions, from the built binary.
fn generate_assets(bin: &Path) -> anyhow::Result<()> {
    let dir = assets_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let man = dir.join("man");
    cmd::run(Command::new(bin).arg("man").arg("--out-dir").arg(&man))?;
    for page in fs::read_dir(&man)? {
        // -n: no name or time stamp in the archive, so the package builds reproducibly.
        cmd::run(Command::new("gzip").args(["-9n"]).arg(page?.path()))?;
    }
    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "mcp-gateway"),
        ("zsh", "_mcp-gateway"),
        ("fish", "mcp-gateway.fish"),
    ] {
        let out = Command::new(bin).args(["completions", shell]).output()?;
        if !out.status.success() {
            bail!("`mcp-gateway completions {shell}` failed");
        }
        fs::write(completions.join(file), out.stdout)?;
    }
    Ok(())
}

/// Builds the package; returns its path.
pub fn deb() -> anyhow::Result<PathBuf> {
    let tools = setup::setup()?;
    ensure_cargo_deb(&tools.dir)?;
    let bin = run::build_release()?;
    generate_assets(&bin)?;
    let out_dir = run::target_dir().join("debian");
    let output = cmd::cargo()
        .args(["deb", "--package", "gateway", "--no-build", "--output"])
        .arg(&out_dir)
        .env("PATH", tools.path()?)
        .output()
        .context("running cargo deb")?;
    if !output.status.success() {
        bail!(
            "cargo deb failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not say where the package is")?;
    eprintln!("xtask: built {}", path.display());
    println!("{}", path.display());
    Ok(path)
}
