//! `cargo xtask setup`: everything the eBPF build needs, installed once per machine.
//!
//! 1. A compiler that accepts `-Z build-std=core` with its matching `rust-src`: rustup's nightly
//!    (adding the `rust-src` component), else Debian's matched `rustc-web`/`cargo-web`/
//!    `rust-web-src` run with `RUSTC_BOOTSTRAP=1`, linked into rustup as a custom toolchain.
//! 2. `bpf-linker`, built against that compiler's LLVM (major 22) and kept in the tools dir.
//!
//! The chosen toolchain's name is written to `<tools>/ebpf-toolchain`, which `gateway/build.rs`
//! reads. Every step checks first, so a second run takes seconds.
use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
/// rustup's name for Debian's compiler once linked.
const DEBIAN_TOOLCHAIN: &str = "mcp-gateway-debian";
const DEBIAN_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];

/// What setup found or installed.
pub struct Tools {
    /// Holds `bin/bpf-linker`, `llvm/lib` and the `ebpf-toolchain` record.
    pub dir: PathBuf,
    /// rustup toolchain name used for the eBPF crate.
    pub toolchain: String,
}

impl Tools {
    /// PATH with the tools dir first, so bpf-linker is found.
    pub fn path(&self) -> anyhow::Result<std::ffi::OsString> {
        let rest = env::var_os("PATH").unwrap_or_default();
        Ok(env::join_paths(
            std::iter::once(self.dir.join("bin")).chain(env::split_paths(&rest)),
        )?)
    }
}

struct Toolchain {
    name: String,
    /// The LLVM shared library the compiler itself uses; bpf-linker links the same one.
    libllvm: PathBuf,
}

pub fn setup() -> anyhow::Result<Tools> {
    let dir = tools_dir()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let toolchain = ebpf_toolchain()?;
    fs::write(dir.join("ebpf-toolchain"), &toolchain.name)?;
    ensure_bpf_linker(&dir, &toolchain)?;
    eprintln!(
        "xtask: setup done: eBPF toolchain `{}`, bpf-linker {BPF_LINKER_VERSION} in {}",
        toolchain.name,
        dir.join("bin").display()
    );
    Ok(Tools {
        dir,
        toolchain: toolchain.name,
    })
}

/// Where setup keeps its tools (`gateway/build.rs` computes the same).
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

fn ebpf_toolchain() -> anyhow::Result<Toolchain> {
    // Overridable so the Debian fallback can be exercised on a machine that has nightly.
    let name = env::var("MCP_GATEWAY_NIGHTLY").unwrap_or_else(|_| "nightly".to_owned());
    let nightly = match rustup_toolchain(&name, true) {
        Ok(tc) => return Ok(tc),
        Err(err) => err,
    };
    eprintln!(
        "xtask: nightly is not usable for the eBPF build ({nightly:#}); trying Debian's rustc-web"
    );
    match debian_toolchain() {
        Ok(tc) => Ok(tc),
        Err(debian) => bail!(
            "no compiler can build the eBPF programs.\n  \
             nightly: {nightly:#}\n  Debian: {debian:#}\n\
             Fix one of them:\n  \
             rustup toolchain install nightly --component rust-src\n  \
             sudo apt-get install {}",
            DEBIAN_PACKAGES.join(" ")
        ),
    }
}

/// A rustup toolchain with rust-src (added if `add_src`) and an LLVM 22 library.
fn rustup_toolchain(name: &str, add_src: bool) -> anyhow::Result<Toolchain> {
    let rustc = |args: &[&str]| {
        output(
            Command::new("rustup")
                .args(["run", name, "rustc"])
                .args(args),
        )
    };
    let Some(sysroot) = rustc(&["--print", "sysroot"]) else {
        bail!("rustup toolchain `{name}` is not installed");
    };
    let sysroot = PathBuf::from(sysroot);
    if !has_rust_src(&sysroot) {
        if !add_src {
            bail!("toolchain `{name}` has no rust-src");
        }
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            name,
        ]))
        .context("adding rust-src")?;
    }
    let verbose = rustc(&["-vV"]).unwrap_or_default();
    let llvm = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "toolchain `{name}` uses LLVM {llvm}; bpf-linker {BPF_LINKER_VERSION} here needs LLVM {LLVM_MAJOR}"
        );
    }
    // rustup ships libLLVM in the sysroot; Debian's compiler links the system one (libllvm22).
    let system_lib = PathBuf::from(format!("/usr/lib/{}-linux-gnu", env::consts::ARCH));
    let libllvm = find_libllvm(&[sysroot.join("lib"), system_lib, PathBuf::from("/usr/lib")])
        .with_context(|| {
            format!("no libLLVM {LLVM_MAJOR} shared library for toolchain `{name}`")
        })?;
    Ok(Toolchain {
        name: name.to_owned(),
        libllvm,
    })
}

fn has_rust_src(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// Debian's `rustc-web` family: installed with apt when we are root, linked into rustup.
fn debian_toolchain() -> anyhow::Result<Toolchain> {
    if rustup_toolchain(DEBIAN_TOOLCHAIN, false).is_err() {
        let installed = DEBIAN_PACKAGES.iter().all(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.ends_with(" installed"))
        });
        if !installed {
            if !cmd::is_root() {
                bail!(
                    "packages {} are not installed and we are not root",
                    DEBIAN_PACKAGES.join(" ")
                );
            }
            cmd::apt_install(&DEBIAN_PACKAGES)?;
        }
        cmd::run(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    }
    rustup_toolchain(DEBIAN_TOOLCHAIN, false)
}

/// An LLVM 22 shared library in `dirs`: a real ELF file (rustup also ships a linker script named
/// `libLLVM-22-*.so`), with its links resolved.
fn find_libllvm(dirs: &[PathBuf]) -> Option<PathBuf> {
    let is_elf = |p: &Path| {
        let mut magic = [0u8; 4];
        fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| magic == *b"\x7fELF")
    };
    dirs.iter().find_map(|dir| {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}"))
                    || name.starts_with(&format!("libLLVM-{LLVM_MAJOR}"))
            })
            .filter_map(|e| fs::canonicalize(e.path()).ok())
            .filter(|p| is_elf(p))
            .collect();
        found.sort();
        found.dedup();
        found.into_iter().next()
    })
}

fn ensure_bpf_linker(dir: &Path, tc: &Toolchain) -> anyhow::Result<()> {
    let bin = dir.join("bin").join("bpf-linker");
    let stamp = dir.join("bpf-linker.stamp");
    let want = format!("{BPF_LINKER_VERSION} {}", tc.libllvm.display());
    let works = output(Command::new(&bin).arg("--version"))
        .is_some_and(|v| v == format!("bpf-linker {BPF_LINKER_VERSION}"));
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }

    // llvm-sys wants `$LLVM_PREFIX/lib/libLLVM.so`; the binary's rpath points at that directory
    // and it loads the library by its soname, so both names are linked there.
    let llvm_lib = dir.join("llvm").join("lib");
    if llvm_lib.exists() {
        fs::remove_dir_all(&llvm_lib)?;
    }
    fs::create_dir_all(&llvm_lib)?;
    let real = &tc.libllvm;
    symlink(real, llvm_lib.join("libLLVM.so"))?;
    if let Some(soname) = real.file_name().filter(|n| *n != "libLLVM.so") {
        symlink(real, llvm_lib.join(soname))?;
    }

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute, once)",
        real.display()
    );
    cmd::run(
        cmd::cargo()
            .args([
                "install",
                "--locked",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .arg("--root")
            .arg(dir)
            .env("LLVM_PREFIX", dir.join("llvm")),
    )
    .with_context(|| {
        format!(
            "building bpf-linker failed. It needs a C toolchain (apt-get install build-essential) \
             and the LLVM {LLVM_MAJOR} library at {}",
            real.display()
        )
    })?;
    fs::write(&stamp, want)?;
    Ok(())
}
