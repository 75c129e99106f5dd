//! Types and names shared by the kernel programs (`gateway-ebpf`) and userspace (`gateway`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and padding-free, so the same bytes mean the same
//! thing on both sides of a BPF map. Ports are in host byte order in every map.
#![no_std]

/// Version of the map layouts below. Pinned maps are named with it, so a gateway whose layouts
/// changed never reuses maps pinned by an older one.
pub const LAYOUT_VERSION: u32 = 1;

/// Names of the programs in the embedded eBPF object.
pub mod program {
    /// `cgroup_skb` ingress: drops TCP packets to protected ports from non-loopback sources.
    pub const INGRESS: &str = "mcp_ingress";
    /// `cgroup/bind4`: keeps protected ports off non-loopback IPv4 addresses.
    pub const BIND4: &str = "mcp_bind4";
    /// `cgroup/bind6`: keeps protected ports off non-loopback IPv6 addresses.
    pub const BIND6: &str = "mcp_bind6";
    /// `cgroup/connect4`: exclusive upstream over IPv4.
    pub const CONNECT4: &str = "mcp_connect4";
    /// `cgroup/connect6`: exclusive upstream over IPv6.
    pub const CONNECT6: &str = "mcp_connect6";
    /// Every program, in attach order.
    pub const ALL: [&str; 5] = [INGRESS, BIND4, BIND6, CONNECT4, CONNECT6];
}

/// Names of the maps in the embedded eBPF object.
pub mod map {
    /// `PerCpuArray<u64>` of [`crate::SkbStat`] counters, indexed by the enum's value.
    pub const SKB_STATS: &str = "SKB_STATS";
    /// `HashMap<u16 port, PortPolicy>`: the protected ports.
    pub const PROTECTED_PORTS: &str = "PROTECTED_PORTS";
    /// `HashMap<u64 cgroup id, u8>`: cgroups allowed to connect to exclusive ports.
    pub const ALLOWED_CGROUPS: &str = "ALLOWED_CGROUPS";
    /// `LruPerCpuHashMap<CounterKey, u64>`: events by reason, address and port.
    pub const COUNTERS: &str = "COUNTERS";
    /// Every map the gateway pins (aya-log's `AYA_LOGS` ring buffer is per process, not pinned).
    pub const PINNED: [&str; 4] = [SKB_STATS, PROTECTED_PORTS, ALLOWED_CGROUPS, COUNTERS];
    /// Maps that hold counters (kept by `mcp-gateway detach --keep-counters`).
    pub const COUNTER_MAPS: [&str; 2] = [SKB_STATS, COUNTERS];
}

/// Capacity of `PROTECTED_PORTS`.
pub const MAX_PROTECTED_PORTS: u32 = 64;
/// Capacity of `ALLOWED_CGROUPS`.
pub const MAX_ALLOWED_CGROUPS: u32 = 64;
/// Capacity of `COUNTERS`: distinct (reason, address, port) keys kept. The map is LRU: when it is
/// full the least recently bumped key is evicted, so a flood of spoofed sources can't stop new
/// events from being counted (old ones may be forgotten).
pub const MAX_COUNTER_KEYS: u32 = 4096;

/// Slots of the `SKB_STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbStat {
    /// Every packet the ingress program ran on.
    Seen = 0,
    /// Packets the ingress program dropped (also in `COUNTERS` by source).
    Dropped = 1,
}

impl SkbStat {
    /// Number of slots the map must hold.
    pub const COUNT: u32 = 2;
}

/// What a protected port gets. Value of `PROTECTED_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    /// `PortPolicy::*` bits.
    pub flags: u32,
}

impl PortPolicy {
    /// Drop TCP packets to this local port whose source is not loopback.
    pub const LOOPBACK_ONLY: u32 = 1 << 0;
    /// Refuse (EPERM) a bind() of this port to a non-loopback address.
    pub const BIND_DENY: u32 = 1 << 1;
    /// Rewrite a bind() of this port to a non-loopback address to the family's loopback.
    pub const BIND_REWRITE: u32 = 1 << 2;
    /// connect() to this port on a local address only from `ALLOWED_CGROUPS`.
    pub const EXCLUSIVE: u32 = 1 << 3;

    pub const fn has(self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Why an event was counted. Stored as `u32` in [`CounterKey::reason`]; the list grows (the
/// userspace gateway's HTTP reasons will share the map), so readers must accept unknown values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A TCP packet to a protected port from a non-loopback source was dropped.
    NonLoopbackPacket = 1,
    /// A bind() of a protected port to a non-loopback address was refused.
    BindDenied = 2,
    /// A bind() of a protected port to a non-loopback address was moved to loopback.
    BindRewritten = 3,
    /// A connect() to an exclusive port from a cgroup that isn't allowed was refused.
    ConnectDenied = 4,
}

impl Reason {
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::NonLoopbackPacket,
            2 => Self::BindDenied,
            3 => Self::BindRewritten,
            4 => Self::ConnectDenied,
            _ => return None,
        })
    }

    /// The name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NonLoopbackPacket => "non_loopback_packet",
            Self::BindDenied => "bind_denied",
            Self::BindRewritten => "bind_rewritten",
            Self::ConnectDenied => "connect_denied",
        }
    }
}

/// Key of the `COUNTERS` map. 24 bytes, no implicit padding.
///
/// - `NonLoopbackPacket`: `addr` is the packet's source, `port` the protected local port.
/// - `BindDenied`/`BindRewritten`: `addr` and `port` are what bind() asked for.
/// - `ConnectDenied`: `addr` and `port` are the connect() destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// A [`Reason`] as `u32`.
    pub reason: u32,
    /// Port, host byte order.
    pub port: u16,
    /// Always zero (explicit so the key has no padding bytes).
    pub reserved: u16,
    /// IPv6 address in network byte order; IPv4 as v4-mapped `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
}

impl CounterKey {
    pub const fn new(reason: Reason, addr: [u8; 16], port: u16) -> Self {
        Self {
            reason: reason as u32,
            port,
            reserved: 0,
            addr,
        }
    }

    /// `::ffff:a.b.c.d` for an IPv4 address given as its four bytes.
    pub const fn v4_mapped(ip: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
        ]
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, only integer fields, no padding (checked by the asserts below).
    unsafe impl aya::Pod for super::PortPolicy {}
    // SAFETY: as above; every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CounterKey {}
}

const _: () = assert!(size_of::<CounterKey>() == 24);
const _: () = assert!(size_of::<PortPolicy>() == 4);
