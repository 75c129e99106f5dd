//! The kernel half: the eBPF object built from `gateway-ebpf` and embedded in this binary.
use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLink},
};
use gateway_common::{SkbStat, map, program};

/// The eBPF object, compiled by `build.rs` from `gateway-ebpf` on every build.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway"));

/// Errors from loading and attaching the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the embedded eBPF object failed (needs CAP_BPF; try `mcp-gateway doctor`)")]
    Load(#[from] aya::EbpfError),
    #[error("the embedded eBPF object has no {kind} named `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("loading or attaching program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("reading map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Loads the embedded object into the kernel (programs are verified but not attached).
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
