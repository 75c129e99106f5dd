//! Types and names shared by the kernel programs (`gateway-ebpf`) and userspace (`gateway`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and padding-free, so the same bytes mean the same
//! thing on both sides of a BPF map. Ports are in host byte order in every map.
#![no_std]
// The one exception is `pod`: aya's marker that a type may cross a map as plain bytes.
#![deny(unsafe_code)]

/// Version of the map layouts below. Everything a gateway pins lives in the pin directory's
/// `v<LAYOUT_VERSION>` subdirectory, so builds with different layouts never reuse, replace or
/// remove each other's maps and links.
///
/// 3: `ALLOWED_CGROUPS` keyed by (cgroup, port); the `INSTANCES` registry; lockdown
/// (`LOCK_ACTIVE`, `LOCKS`) and source allowlists (`SOURCES`).
pub const LAYOUT_VERSION: u32 = 3;

/// 64-bit FNV-1a: registry keys, object fingerprints, default instance names.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

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
    /// `cgroup/connect4` on a confined server's cgroup: TCP connect() and UDP connect() over
    /// IPv4 only to its egress rules.
    pub const EGRESS_CONNECT4: &str = "egress_connect4";
    /// `cgroup/connect6`: the same over IPv6 (and v4-mapped addresses).
    pub const EGRESS_CONNECT6: &str = "egress_connect6";
    /// `cgroup/sendmsg4`: a UDP datagram to an explicit IPv4 address only to its egress rules.
    pub const EGRESS_SENDMSG4: &str = "egress_sendmsg4";
    /// `cgroup/sendmsg6`: the same over IPv6.
    pub const EGRESS_SENDMSG6: &str = "egress_sendmsg6";
    /// The programs attached to each confined server's cgroup.
    pub const EGRESS: [&str; 4] = [
        EGRESS_CONNECT4,
        EGRESS_CONNECT6,
        EGRESS_SENDMSG4,
        EGRESS_SENDMSG6,
    ];
}

/// Names of the maps in the embedded eBPF object.
pub mod map {
    /// `PerCpuArray<u64>` of [`crate::SkbStat`] counters, indexed by the enum's value.
    pub const SKB_STATS: &str = "SKB_STATS";
    /// `HashMap<u16 port, PortPolicy>`: the protected ports.
    pub const PROTECTED_PORTS: &str = "PROTECTED_PORTS";
    /// `HashMap<CgroupPort, u8>`: which cgroup may connect to which exclusive port.
    pub const ALLOWED_CGROUPS: &str = "ALLOWED_CGROUPS";
    /// `LruPerCpuHashMap<CounterKey, u64>`: events by reason, address and port.
    pub const COUNTERS: &str = "COUNTERS";
    /// `LpmTrie<SourceKey, u8>`: the sources allowed on ports with `PortPolicy::SOURCE_ALLOWLIST`.
    pub const SOURCES: &str = "SOURCES";
    /// `Array<u32>` of one slot: non-zero while any lockdown is engaged (the programs' fast path
    /// reads only this while none is).
    pub const LOCK_ACTIVE: &str = "LOCK_ACTIVE";
    /// `HashMap<u16 port, LockRecord>`: the ports under lockdown; port 0 means every protected
    /// port. Written by `mcp-gateway lockdown`, read by the programs and the gateways.
    pub const LOCKS: &str = "LOCKS";
    /// `HashMap<u64 instance id, InstanceRecord>`: what each gateway instance claims. Written and
    /// read by userspace only (created by the gateway, not part of the eBPF object); the config
    /// maps always hold the union of these claims.
    pub const INSTANCES: &str = "INSTANCES";
    /// `HashMap<u64 cgroup id, EgressOwner>`: the confined cgroups, each owned by one instance's
    /// server. A process in one of them (or in a cgroup below it) may only reach its rules.
    pub const EGRESS_CGROUPS: &str = "EGRESS_CGROUPS";
    /// `LpmTrie<EgressKey, u8>`: each confined cgroup's allowed destinations.
    pub const EGRESS_RULES: &str = "EGRESS_RULES";
    /// `LruPerCpuHashMap<EgressDenial, u64>`: denied connects and datagrams, by cgroup and
    /// destination.
    pub const EGRESS_DENIED: &str = "EGRESS_DENIED";
    /// `RingBuf` of [`crate::EgressEvent`]: one record per denial, with the process, for logs.
    pub const EGRESS_EVENTS: &str = "EGRESS_EVENTS";
    /// Every map of the eBPF object the gateway pins (so programs taken over from an earlier run
    /// and this run's read and write the same maps).
    pub const PINNED: [&str; 11] = [
        SKB_STATS,
        PROTECTED_PORTS,
        ALLOWED_CGROUPS,
        COUNTERS,
        SOURCES,
        LOCK_ACTIVE,
        LOCKS,
        EGRESS_CGROUPS,
        EGRESS_RULES,
        EGRESS_DENIED,
        EGRESS_EVENTS,
    ];
    /// The config maps the programs read: always the union of the instances' claims.
    pub const CONFIG_MAPS: [&str; 3] = [PROTECTED_PORTS, ALLOWED_CGROUPS, SOURCES];
    /// Maps that hold counters (kept by `mcp-gateway detach --keep-counters`).
    pub const COUNTER_MAPS: [&str; 3] = [SKB_STATS, COUNTERS, EGRESS_DENIED];
}

/// Capacity of `PROTECTED_PORTS` (the union over every instance sharing the pin directory).
pub const MAX_PROTECTED_PORTS: u32 = 256;
/// Capacity of `ALLOWED_CGROUPS` (the union over every instance).
pub const MAX_ALLOWED_CGROUPS: u32 = 256;
/// Capacity of `SOURCES` (the union over every instance).
pub const MAX_SOURCES: u32 = 1024;
/// Capacity of `EGRESS_CGROUPS`: confined cgroups over every instance.
pub const MAX_EGRESS_CGROUPS: u32 = 256;
/// Capacity of `EGRESS_RULES`: (cgroup, port, network) entries over every instance.
pub const MAX_EGRESS_RULES: u32 = 8192;
/// Capacity of `EGRESS_DENIED` (LRU: a flood of destinations evicts the oldest).
pub const MAX_EGRESS_DENIALS: u32 = 4096;
/// Bytes of the `EGRESS_EVENTS` ring buffer (a power of two, a multiple of the page size).
pub const EGRESS_EVENTS_BYTES: u32 = 64 * 1024;
/// How deep below a confined cgroup the programs look for it (a process in a cgroup nested
/// deeper than this below the cgroup-v2 root is refused, never let through).
pub const MAX_CGROUP_DEPTH: i32 = 16;
/// Bits of an [`EgressKey`] prefix taken by the cgroup id and the port.
pub const EGRESS_FIXED_BITS: u32 = 80;
/// Bytes of a server name in an [`EgressOwner`].
pub const EGRESS_SERVER_LEN: usize = 32;
/// Bytes of the text summary in an [`EgressOwner`].
pub const EGRESS_SUMMARY_LEN: usize = 1024;

/// Capacity of `LOCKS`.
pub const MAX_LOCKS: u32 = 256;
/// Bytes of a lockdown's reason.
pub const LOCK_REASON_LEN: usize = 112;
/// Capacity of `COUNTERS`: distinct (reason, origin) keys kept, kernel and HTTP together. The map
/// is LRU: when it is full the least recently bumped key is evicted, so a flood of spoofed
/// sources or hostile origins can't stop new events from being counted (old ones may be
/// forgotten). About 4096 × (200-byte key + 8 bytes per possible CPU + kernel overhead).
pub const MAX_COUNTER_KEYS: u32 = 4096;

/// Bytes of origin text a [`CounterKey`] holds. The gateway's sanitiser already cuts values to
/// 128 printable ASCII chars, so nothing it produces is cut again.
pub const COUNTER_TEXT_LEN: usize = 128;

/// Bytes of credential name a [`CounterKey`] holds (the gateway's credential labels are cut to
/// this).
pub const CREDENTIAL_LABEL_LEN: usize = 64;

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
    /// Only sources in `SOURCES` (for this port) may reach it; loopback always may.
    pub const SOURCE_ALLOWLIST: u32 = 1 << 4;

    pub const fn has(self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Key of `ALLOWED_CGROUPS`: the cgroup `cgroup` may connect to the exclusive port `port`.
///
/// Per port, so one instance's gateway cgroup is never allowed onto another instance's
/// exclusive upstream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPort {
    /// The cgroup id (`bpf_get_current_cgroup_id`: the cgroup directory's inode).
    pub cgroup: u64,
    /// Host byte order.
    pub port: u16,
    /// Zero: explicit, so the key has no implicit padding and equal pairs make equal keys.
    /// Integers, not a byte array: a zeroed array becomes a memset call in the eBPF programs,
    /// whose variable-offset stores the verifier refuses without CAP_PERFMON.
    pub pad16: u16,
    pub pad32: u32,
}

impl CgroupPort {
    pub const fn new(cgroup: u64, port: u16) -> Self {
        Self {
            cgroup,
            port,
            pad16: 0,
            pad32: 0,
        }
    }
}

/// Data of a `SOURCES` key: the port (big-endian, so the trie matches it first) and the
/// address (IPv6, IPv4 as v4-mapped). The prefix length counts 16 port bits plus the address
/// bits (an IPv4 /24 is 16 + 96 + 24).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub port: [u8; 2],
    pub addr: [u8; 16],
    /// Zero: keeps the key free of implicit padding.
    pub pad: [u8; 2],
}

/// Bits of a [`SourceKey`] prefix taken by the port.
pub const SOURCE_PORT_BITS: u32 = 16;

impl SourceKey {
    pub const fn new(port: u16, addr: [u8; 16]) -> Self {
        Self {
            port: port.to_be_bytes(),
            addr,
            pad: [0; 2],
        }
    }
}

/// Value of `LOCKS`: when and why a lockdown was engaged.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRecord {
    /// Seconds since the Unix epoch.
    pub since_unix: u64,
    /// NUL-padded UTF-8.
    pub reason: [u8; LOCK_REASON_LEN],
}

/// Most instances one pin directory registers.
pub const MAX_INSTANCES: u32 = 64;
/// Most ports one instance claims.
pub const MAX_INSTANCE_PORTS: usize = 32;
/// Most (cgroup, port) pairs one instance allows.
pub const MAX_INSTANCE_ALLOWED: usize = 32;
/// Most servers one instance describes.
pub const MAX_INSTANCE_SERVERS: usize = 16;
/// Most source rules one instance claims.
pub const MAX_INSTANCE_SOURCES: usize = 32;
/// Bytes of an instance name.
pub const INSTANCE_NAME_LEN: usize = 64;
/// Bytes of a server name in an [`InstanceRecord`].
pub const SERVER_NAME_LEN: usize = 32;
/// Bytes of a server's upstream text in an [`InstanceRecord`].
pub const UPSTREAM_TEXT_LEN: usize = 96;

/// Why an instance protects a port. Stored as `u8` in [`PortClaim::role`].
pub mod port_role {
    /// `--protect-port`: protected for its own sake.
    pub const EXTRA: u8 = 0;
    /// The upstream port of [`super::PortClaim::server`].
    pub const UPSTREAM: u8 = 1;
    /// The gateway's own listen port of [`super::PortClaim::server`].
    pub const LISTEN: u8 = 2;
}

/// One port an instance protects, with its flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortClaim {
    pub port: u16,
    /// A [`port_role`] value.
    pub role: u8,
    /// Index into [`InstanceRecord::servers`] (meaningless for [`port_role::EXTRA`]).
    pub server: u8,
    /// `PortPolicy::*` bits.
    pub flags: u32,
}

/// An allowed source of an instance: `addr/prefix_len` (IPv6 bits; IPv4 as v4-mapped, so
/// 96 + its prefix) may reach `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRule {
    pub addr: [u8; 16],
    pub port: u16,
    pub prefix_len: u8,
    pub reserved: u8,
}

/// A server of an instance, for reports: its name and upstream (cut to fit).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLabel {
    pub name: [u8; SERVER_NAME_LEN],
    pub upstream: [u8; UPSTREAM_TEXT_LEN],
}

/// Value of `INSTANCES`: everything one gateway instance claims, written in one update so a
/// restart replaces its own claim atomically. Text fields are NUL-padded UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The process holding the claim (liveness: it exists and started at `start_ticks`).
    pub pid: u32,
    pub n_ports: u8,
    pub n_allowed: u8,
    pub n_servers: u8,
    pub n_sources: u8,
    /// The process's start time in clock ticks after boot (`/proc/PID/stat` field 22), so a
    /// recycled pid is not mistaken for the instance.
    pub start_ticks: u64,
    /// When the claim was written, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The cgroup the instance's programs are attached to.
    pub cgroup_id: u64,
    pub name: [u8; INSTANCE_NAME_LEN],
    pub ports: [PortClaim; MAX_INSTANCE_PORTS],
    pub allowed: [CgroupPort; MAX_INSTANCE_ALLOWED],
    pub servers: [ServerLabel; MAX_INSTANCE_SERVERS],
    pub sources: [SourceRule; MAX_INSTANCE_SOURCES],
}

impl InstanceRecord {
    /// An empty record (all zero).
    pub const fn zeroed() -> Self {
        Self {
            pid: 0,
            n_ports: 0,
            n_allowed: 0,
            n_servers: 0,
            n_sources: 0,
            start_ticks: 0,
            started_unix: 0,
            cgroup_id: 0,
            name: [0; INSTANCE_NAME_LEN],
            ports: [PortClaim {
                port: 0,
                role: 0,
                server: 0,
                flags: 0,
            }; MAX_INSTANCE_PORTS],
            allowed: [CgroupPort::new(0, 0); MAX_INSTANCE_ALLOWED],
            servers: [ServerLabel {
                name: [0; SERVER_NAME_LEN],
                upstream: [0; UPSTREAM_TEXT_LEN],
            }; MAX_INSTANCE_SERVERS],
            sources: [SourceRule {
                addr: [0; 16],
                port: 0,
                prefix_len: 0,
                reserved: 0,
            }; MAX_INSTANCE_SOURCES],
        }
    }
}

/// Why an event was counted. Stored as `u32` in [`CounterKey::reason`]. Kernel reasons are only
/// ever written by the eBPF programs and HTTP reasons only by the gateway, so the two writers
/// never touch the same key. Readers must accept unknown values (a newer writer may share the
/// map).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// HTTP: the `Origin` header was not allowed.
    Origin = 5,
    /// HTTP: the `Host` header (or the request target) was not allowed.
    Host = 6,
    /// HTTP: `Sec-Fetch-Site` said cross-site without an allowed Origin (strict mode).
    FetchMetadata = 7,
    /// HTTP: the bearer token was missing or wrong.
    Auth = 8,
    /// MCP: a `tools/call` of a tool the allowlists refuse.
    Tool = 9,
    /// MCP: a JSON-RPC method the allowlist refuses.
    Method = 10,
    /// MCP: a POST that is not a valid MCP message (wrong content type, malformed JSON-RPC,
    /// headers that contradict the body).
    Invalid = 11,
    /// Lockdown: a packet to a locked port dropped, or a connect() to one refused (the
    /// gateway's own 503s while locked are in its request counts).
    Lockdown = 12,
    /// A packet from a source not on the port's allowlist was dropped (kernel).
    SourceDenied = 13,
    /// HTTP: a client over its rate limit (429).
    RateLimit = 14,
    /// HTTP: a client address not on the server's source allowlist (403).
    Source = 15,
    /// TLS: a handshake the gateway refused (no client certificate, another CA's, a name not
    /// allowed, not TLS at all).
    Tls = 16,
}

impl Reason {
    /// Every reason this build knows, kernel ones first.
    pub const ALL: [Self; 16] = [
        Self::NonLoopbackPacket,
        Self::BindDenied,
        Self::BindRewritten,
        Self::ConnectDenied,
        Self::Origin,
        Self::Host,
        Self::FetchMetadata,
        Self::Auth,
        Self::Tool,
        Self::Method,
        Self::Invalid,
        Self::Lockdown,
        Self::SourceDenied,
        Self::RateLimit,
        Self::Source,
        Self::Tls,
    ];

    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::NonLoopbackPacket,
            2 => Self::BindDenied,
            3 => Self::BindRewritten,
            4 => Self::ConnectDenied,
            5 => Self::Origin,
            6 => Self::Host,
            7 => Self::FetchMetadata,
            8 => Self::Auth,
            9 => Self::Tool,
            10 => Self::Method,
            11 => Self::Invalid,
            12 => Self::Lockdown,
            13 => Self::SourceDenied,
            14 => Self::RateLimit,
            15 => Self::Source,
            16 => Self::Tls,
            _ => return None,
        })
    }

    /// The name used in logs and metrics (the `reason` label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NonLoopbackPacket => "non_loopback_packet",
            Self::BindDenied => "bind_denied",
            Self::BindRewritten => "bind_rewritten",
            Self::ConnectDenied => "connect_denied",
            Self::Origin => "origin",
            Self::Host => "host",
            Self::FetchMetadata => "fetch_metadata",
            Self::Auth => "auth",
            Self::Tool => "tool",
            Self::Method => "method",
            Self::Invalid => "invalid",
            Self::Lockdown => "lockdown",
            Self::SourceDenied => "source_denied",
            Self::RateLimit => "rate_limit",
            Self::Source => "source",
            Self::Tls => "tls",
        }
    }

    /// Whether the eBPF programs write this reason (else the gateway does).
    pub const fn is_kernel(self) -> bool {
        matches!(
            self,
            Self::NonLoopbackPacket
                | Self::BindDenied
                | Self::BindRewritten
                | Self::ConnectDenied
                | Self::Lockdown
                | Self::SourceDenied
        )
    }
}

/// What [`CounterKey::data`] holds.
pub mod origin_kind {
    /// `data[..16]`: an IPv6 address in network byte order (IPv4 as v4-mapped `::ffff:a.b.c.d`);
    /// `port` is meaningful. Written by the kernel.
    pub const ADDR: u8 = 0;
    /// `data[..len]`: the normalised, sanitised Origin or Host (printable ASCII). Written by the
    /// gateway.
    pub const TEXT: u8 = 1;
    /// No origin: the in-process fallback's overflow bucket (`origin="other"`).
    pub const OTHER: u8 = 2;
}

/// Key of the `COUNTERS` map: one (reason, origin, credential). 200 bytes, no implicit padding;
/// unused bytes are zero so equal origins make equal keys.
///
/// - `NonLoopbackPacket`: the packet's source address; `port` the protected local port.
/// - `BindDenied`/`BindRewritten`: the address and port bind() asked for.
/// - `ConnectDenied`: the connect() destination address and port.
/// - HTTP reasons: the text of the rejected Origin/Host; `port` the listen port of the server
///   that rejected it (so each instance and server reads back its own).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// A [`Reason`] as `u32`.
    pub reason: u32,
    /// Port, host byte order: the event's port (address keys), or the rejecting server's listen
    /// port (text keys).
    pub port: u16,
    /// An [`origin_kind`] value.
    pub kind: u8,
    /// Bytes of `data` used (16 for an address).
    pub len: u8,
    pub data: [u8; COUNTER_TEXT_LEN],
    /// The name of the client's credential, zero-padded; all zero for none (every kernel event,
    /// and HTTP rejections before the client was identified).
    pub credential: [u8; CREDENTIAL_LABEL_LEN],
}

impl CounterKey {
    /// A kernel event: `addr` (16 bytes, v4-mapped for IPv4) and `port`.
    #[inline(always)]
    pub const fn new(reason: Reason, addr: [u8; 16], port: u16) -> Self {
        let mut data = [0u8; COUNTER_TEXT_LEN];
        let mut i = 0;
        while i < 16 {
            data[i] = addr[i];
            i += 1;
        }
        Self {
            reason: reason as u32,
            port,
            kind: origin_kind::ADDR,
            len: 16,
            data,
            credential: [0u8; CREDENTIAL_LABEL_LEN],
        }
    }

    /// An HTTP rejection by the server listening on `port`, for the origin text `text`, cut to
    /// [`COUNTER_TEXT_LEN`] bytes.
    pub fn text(reason: Reason, port: u16, text: &[u8]) -> Self {
        let len = if text.len() < COUNTER_TEXT_LEN {
            text.len()
        } else {
            COUNTER_TEXT_LEN
        };
        let mut data = [0u8; COUNTER_TEXT_LEN];
        data[..len].copy_from_slice(&text[..len]);
        Self {
            reason: reason as u32,
            port,
            kind: origin_kind::TEXT,
            // COUNTER_TEXT_LEN fits in a u8 (asserted below).
            len: len as u8,
            data,
            credential: [0u8; CREDENTIAL_LABEL_LEN],
        }
    }

    /// The same key for a client identified by the credential `name` (cut to
    /// [`CREDENTIAL_LABEL_LEN`] bytes; NUL bytes end it).
    pub fn with_credential(mut self, name: &[u8]) -> Self {
        let len = name.len().min(CREDENTIAL_LABEL_LEN);
        self.credential = [0u8; CREDENTIAL_LABEL_LEN];
        self.credential[..len].copy_from_slice(&name[..len]);
        self
    }

    /// The credential name's bytes (empty for none).
    pub fn credential_bytes(&self) -> &[u8] {
        let end = self
            .credential
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(CREDENTIAL_LABEL_LEN);
        &self.credential[..end]
    }

    /// The overflow bucket of `reason` for the server listening on `port`.
    pub const fn other(reason: Reason, port: u16) -> Self {
        Self {
            reason: reason as u32,
            port,
            kind: origin_kind::OTHER,
            len: 0,
            data: [0u8; COUNTER_TEXT_LEN],
            credential: [0u8; CREDENTIAL_LABEL_LEN],
        }
    }

    /// The 16 address bytes of an [`origin_kind::ADDR`] key.
    pub fn addr(&self) -> Option<[u8; 16]> {
        if self.kind != origin_kind::ADDR {
            return None;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.data[..16]);
        Some(out)
    }

    /// The text of an [`origin_kind::TEXT`] key (any bytes: readers must escape them).
    pub fn text_bytes(&self) -> Option<&[u8]> {
        (self.kind == origin_kind::TEXT)
            .then(|| &self.data[..usize::from(self.len).min(COUNTER_TEXT_LEN)])
    }

    /// `::ffff:a.b.c.d` for an IPv4 address given as its four bytes.
    pub const fn v4_mapped(ip: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
        ]
    }
}

/// Key of `EGRESS_RULES`, a longest-prefix-match trie: the cgroup and the port must match
/// exactly (the prefix always covers them), then the first `prefix_len - 80` bits of the
/// address. Port 0 stands for any port (nobody connects to port 0). Byte arrays only, so the
/// key has no padding and compares bit by bit in this order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressKey {
    /// The confined cgroup's id, big-endian.
    pub cgroup: [u8; 8],
    /// Host port, big-endian; 0: any.
    pub port: [u8; 2],
    /// IPv6 address, network order (IPv4 as v4-mapped).
    pub addr: [u8; 16],
}

impl EgressKey {
    pub const fn new(cgroup: u64, port: u16, addr: [u8; 16]) -> Self {
        Self {
            cgroup: cgroup.to_be_bytes(),
            port: port.to_be_bytes(),
            addr,
        }
    }

    pub const fn cgroup_id(&self) -> u64 {
        u64::from_be_bytes(self.cgroup)
    }

    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// Value of `EGRESS_CGROUPS`: who confines the cgroup (the kernel only checks presence).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressOwner {
    /// The registry id of the owning instance ([`fnv1a`] of its name).
    pub instance: u64,
    /// The server's name, NUL-padded UTF-8 (for labels read from the pins alone).
    pub server: [u8; EGRESS_SERVER_LEN],
    /// For `mcp-gateway status`: the cgroup's path and each rule with the addresses its name
    /// resolves to now, one per line, NUL-padded UTF-8 (cut to fit). Userspace only.
    pub summary: [u8; EGRESS_SUMMARY_LEN],
}

/// Key of `EGRESS_DENIED`: one confined cgroup and one refused destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressDenial {
    /// The confined cgroup (the rules' owner, not the caller's own sub-cgroup).
    pub cgroup: u64,
    /// IPv6 address, network order (IPv4 as v4-mapped).
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub proto: u8,
    pub pad: [u8; 5],
}

/// A record of `EGRESS_EVENTS`: one denial and which process asked (its name is read from
/// /proc by the gateway).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressEvent {
    pub cgroup: u64,
    /// The thread group (process) id.
    pub pid: u32,
    /// Host byte order.
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
mod pod {
    // SAFETY: #[repr(C)], Copy, only integer fields, no padding (checked by the asserts below).
    unsafe impl aya::Pod for super::PortPolicy {}
    // SAFETY: as above; every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CounterKey {}
    // SAFETY: as above (the padding is an explicit zero field).
    unsafe impl aya::Pod for super::CgroupPort {}
    // SAFETY: as above: integers and byte arrays only, sizes asserted below.
    unsafe impl aya::Pod for super::InstanceRecord {}
    // SAFETY: as above (the padding is an explicit zero field).
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above: an integer and a byte array, size asserted below.
    unsafe impl aya::Pod for super::LockRecord {}
    // SAFETY: byte arrays only: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::EgressKey {}
    // SAFETY: an integer and a byte array, size asserted below.
    unsafe impl aya::Pod for super::EgressOwner {}
    // SAFETY: integers and byte arrays, the padding an explicit field (size asserted below).
    unsafe impl aya::Pod for super::EgressDenial {}
}

const _: () = assert!(size_of::<CounterKey>() == 8 + COUNTER_TEXT_LEN + CREDENTIAL_LABEL_LEN);
const _: () = assert!(COUNTER_TEXT_LEN <= u8::MAX as usize);
const _: () = assert!(size_of::<PortPolicy>() == 4);
const _: () = assert!(size_of::<CgroupPort>() == 16);
const _: () = assert!(size_of::<PortClaim>() == 8);
const _: () = assert!(size_of::<ServerLabel>() == SERVER_NAME_LEN + UPSTREAM_TEXT_LEN);
const _: () = assert!(
    size_of::<InstanceRecord>()
        == 32
            + INSTANCE_NAME_LEN
            + 8 * MAX_INSTANCE_PORTS
            + 16 * MAX_INSTANCE_ALLOWED
            + (SERVER_NAME_LEN + UPSTREAM_TEXT_LEN) * MAX_INSTANCE_SERVERS
            + 20 * MAX_INSTANCE_SOURCES
);
const _: () = assert!(size_of::<SourceRule>() == 20);
const _: () = assert!(size_of::<SourceKey>() == 20);
const _: () = assert!(size_of::<LockRecord>() == 8 + LOCK_REASON_LEN);
const _: () = assert!(size_of::<EgressKey>() == 26);
const _: () = assert!(size_of::<EgressOwner>() == 8 + EGRESS_SERVER_LEN + EGRESS_SUMMARY_LEN);
const _: () = assert!(size_of::<EgressDenial>() == 32);
const _: () = assert!(size_of::<EgressEvent>() == 32);
const _: () = assert!(MAX_INSTANCE_SOURCES <= u8::MAX as usize);
const _: () = assert!(MAX_INSTANCE_SERVERS <= u8::MAX as usize);
