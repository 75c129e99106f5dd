//! Builds `gateway-ebpf` for the BPF target with aya-build; `src/ebpf/object.rs` embeds the result.
//!
//! The eBPF build needs three things that `cargo xtask setup` provides: a rustc that accepts
//! `-Z build-std` (nightly, or a matched compiler run with `RUSTC_BOOTSTRAP=1`), that compiler's
//! `rust-src`, and `bpf-linker`. Missing pieces are reported with the fix instead of a raw
//! compiler or linker error.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

const FIX: &str = "run `cargo xtask setup` (it installs the eBPF toolchain and bpf-linker)";

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=MCP_GATEWAY_COMMIT={}", commit());
    println!("cargo:rerun-if-env-changed=MCP_GATEWAY_TOOLS");
    println!("cargo:rerun-if-env-changed=MCP_GATEWAY_EBPF_TOOLCHAIN");
    let tools = tools_dir()?;
    let toolchain_file = tools.join("ebpf-toolchain");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());

    let toolchain = match env::var("MCP_GATEWAY_EBPF_TOOLCHAIN") {
        Ok(name) => name,
        Err(_) => std::fs::read_to_string(&toolchain_file)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "nightly".to_owned()),
    };

    // bpf-linker is found on PATH; setup installs it under the tools dir.
    let path = env::join_paths(
        std::iter::once(tools.join("bin"))
            .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )?;
    // SAFETY: build scripts are single-threaded at this point; the child cargo inherits these.
    unsafe {
        env::set_var("PATH", &path);
        // `-Z build-std=core` on the matched Debian compiler as well as on nightly.
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    preflight(&toolchain, &path)?;

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("gateway/ has no parent directory")?
        .join("gateway-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to gateway-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "gateway-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| format!("building the eBPF programs with toolchain `{toolchain}` failed"))
}

/// Where `cargo xtask setup` keeps bpf-linker and its records (`tools_dir` in `xtask/src/setup.rs` agrees).
fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = env::var_os("MCP_GATEWAY_TOOLS") {
        return Ok(dir.into());
    }
    let cache = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(cache.join("mcp-gateway").join("tools"))
}

/// Fails early, with the fix, on what would otherwise be an obscure error deep in the eBPF build.
fn preflight(toolchain: &str, path: &std::ffi::OsStr) -> anyhow::Result<()> {
    if !env::split_paths(path).any(|dir| dir.join("bpf-linker").is_file()) {
        bail!("bpf-linker was not found on PATH or in the tools directory; {FIX}");
    }
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8(out.stdout)?.trim()),
        _ => bail!("the eBPF toolchain `{toolchain}` is not installed; {FIX}"),
    };
    let core = Path::new("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !sysroot.join(core).is_file() {
        bail!(
            "the eBPF toolchain `{toolchain}` has no rust-src ({} is missing); {FIX}",
            sysroot.join(core).display()
        );
    }
    Ok(())
}

/// The git commit this build is from (`mcp-gateway --version`): `MCP_GATEWAY_COMMIT` when a
/// packager sets it, else `git rev-parse` in the source tree, else `unknown` (a source tarball).
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=MCP_GATEWAY_COMMIT");
    if let Ok(commit) = env::var("MCP_GATEWAY_COMMIT") {
        return commit;
    }
    let Ok(manifest_dir) = env::var("CARGO_MANIFEST_DIR") else {
        return "unknown".to_owned();
    };
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]).map(|b| git_dir.join(b));
        // Only files that exist: cargo reruns a script on every build for a missing one.
        let files = [
            Some(git_dir.join("HEAD")),
            branch,
            Some(git_dir.join("packed-refs")),
        ];
        for file in files.into_iter().flatten().filter(|f| f.is_file()) {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}
