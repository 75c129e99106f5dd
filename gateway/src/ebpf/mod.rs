//! The kernel half: the eBPF object built from `gateway-ebpf` and embedded in this binary, and
//! its lifecycle (load, attach, pin, take over, detach).
//!
//! - [`system`]: host facts (mounts, kernel, capabilities, cgroups).
//! - [`policy`]: one instance's [`policy::Claim`] and the union every instance shares (pure).
//! - [`registry`]: the pinned `INSTANCES` map of claims, their owners' liveness, the lock.
//! - [`maps`]: reading and writing the pinned config maps.
//! - [`enforce`]: loading, attaching and pinning; [`enforce::Enforcement`].
//! - [`release`]: `detach` of one instance, or of everything.
//! - [`status`]: every protected port with its owners.
//! - [`pins`]: the pin directory layout.
//! - [`counters`]: reading the event counters.
//! - [`logs`]: forwarding the programs' logs to `tracing`.
//! - [`egress`]: the pinned egress maps (confined cgroups, their destinations, denials).
//! - [`confine`]: putting servers' egress rules in force, and keeping names fresh.
//! - [`doctor`]: what is missing for enforcement, with fixes.
//! - [`sys`]: bpf(2) commands aya doesn't expose.
pub mod confine;
pub mod counters;
pub mod doctor;
pub mod egress;
pub mod enforce;
pub mod locks;
#[allow(
    unsafe_code,
    reason = "registers the ring buffers' descriptors with tokio"
)]
pub mod logs;
pub mod maps;
pub mod pins;
pub mod policy;
pub mod registry;
pub mod release;
pub mod startup;
pub mod status;
#[allow(unsafe_code, reason = "bpf(2) commands aya does not expose")]
pub mod sys;
#[allow(unsafe_code, reason = "uname, mount and rlimit system calls")]
pub mod system;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLink},
};
pub use enforce::{Enforcement, Options, Status, enforce};
use gateway_common::{SkbStat, map, program};

/// The eBPF object, compiled by `build.rs` from `gateway-ebpf` on every build.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway"));

/// Errors from loading, attaching and pinning the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading the embedded eBPF object failed (needs CAP_BPF and CAP_NET_ADMIN; run `mcp-gateway doctor`): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("the embedded eBPF object has no {kind} named `{name}` (a build problem; rebuild)")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error(
        "opening cgroup {path}: {source} (pass --cgroup with a directory under the cgroup-v2 mount)"
    )]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("loading or attaching program `{name}`: {source} (run `mcp-gateway doctor`)")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("program `{name}` is not attached through a bpf_link (needs Linux 5.7+): {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("pinning {path}: {source} (is the pin directory on bpffs and writable?)")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("reading or writing map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(
        "mounting bpffs at /sys/fs/bpf failed: {0} (mount it yourself: `mount -t bpf bpf /sys/fs/bpf`, or grant CAP_SYS_ADMIN)"
    )]
    MountBpffs(std::io::Error),
    #[error(
        "pin directory {dir} is not on a bpf filesystem; choose --pin-dir under /sys/fs/bpf or mount one there (`mount -t bpf bpf DIR`)"
    )]
    NotBpffs { dir: PathBuf },
    #[error(transparent)]
    Record(#[from] registry::RecordError),
    /// A conflict between instances (the message says what to do).
    #[error("{0}")]
    Instance(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the embedded object into the kernel (programs are verified but not attached; maps are
/// fresh, not pinned).
pub fn load() -> Result<Ebpf, EbpfError> {
    Ok(Ebpf::load(OBJECT)?)
}

/// Attaches the ingress program to the cgroup-v2 directory `cgroup`.
///
/// The returned link detaches the program when it is dropped (unless it is pinned).
pub fn attach_ingress(bpf: &mut Ebpf, cgroup: &Path) -> Result<CgroupSkbLink, EbpfError> {
    let name = program::INGRESS;
    let prog: &mut CgroupSkb = bpf
        .program_mut(name)
        .ok_or(EbpfError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.load()
        .map_err(|source| EbpfError::Program { name, source })?;
    let file = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
        path: cgroup.display().to_string(),
        source,
    })?;
    let link_id = prog
        .attach(file, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|source| EbpfError::Program { name, source })?;
    prog.take_link(link_id)
        .map_err(|source| EbpfError::Program { name, source })
}

/// Reads one slot of the `SKB_STATS` counters, summed over CPUs.
pub fn skb_stat(bpf: &Ebpf, stat: SkbStat) -> Result<u64, EbpfError> {
    let name = map::SKB_STATS;
    let raw = bpf
        .map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(raw).map_err(|source| EbpfError::Map { name, source })?;
    let per_cpu = stats
        .get(&(stat as u32), 0)
        .map_err(|source| EbpfError::Map { name, source })?;
    Ok(per_cpu.iter().sum())
}
