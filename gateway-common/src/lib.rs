//! Types and names shared by the kernel programs (`gateway-ebpf`) and userspace (`gateway`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and padding-free, so the same bytes mean the same
//! thing on both sides of a BPF map.
#![no_std]

/// Names of the programs in the embedded eBPF object.
pub mod program {
    /// `cgroup_skb` ingress program on the protected cgroup.
    pub const INGRESS: &str = "mcp_ingress";
}

/// Names of the maps in the embedded eBPF object.
pub mod map {
    /// `PerCpuArray<u64>` of [`crate::SkbStat`] counters, indexed by the enum's value.
    pub const SKB_STATS: &str = "SKB_STATS";
}

/// Slots of the `SKB_STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbStat {
    /// Every packet the ingress program ran on.
    Seen = 0,
}

impl SkbStat {
    /// Number of slots the map must hold.
    pub const COUNT: u32 = 1;
}
