//! mcp-gateway's kernel programs. Entry points are thin wrappers around `try_*` functions.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{cgroup_skb, map},
    maps::PerCpuArray,
    programs::SkBuffContext,
};
use gateway_common::SkbStat;

/// Verdicts of a `cgroup_skb` program.
const PASS: i32 = 1;

#[map(name = "SKB_STATS")]
static SKB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SkbStat::COUNT, 0);

#[cgroup_skb]
pub fn mcp_ingress(ctx: SkBuffContext) -> i32 {
    try_mcp_ingress(&ctx).unwrap_or(PASS)
}

fn try_mcp_ingress(_ctx: &SkBuffContext) -> Result<i32, ()> {
    bump(SkbStat::Seen);
    Ok(PASS)
}

/// Adds one to a stat slot. The map is per-CPU, so no two programs write the same slot at once
/// (cgroup programs run with preemption disabled); userspace sums the CPUs.
fn bump(stat: SkbStat) {
    if let Some(slot) = SKB_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the pointer comes from the map lookup and stays valid for this program run;
        // this CPU's slot has no other writer meanwhile.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
