//! mcp-gateway's kernel programs. Entry points are thin wrappers around `try_*` functions.
//!
//! - `mcp_ingress` (cgroup_skb ingress): a TCP packet to a protected local port whose source is
//!   not loopback is dropped and counted by source address; on a port with a source allowlist,
//!   one whose source is not on it; under lockdown, every packet to a locked port, loopback too.
//! - `mcp_bind4`/`mcp_bind6` (cgroup/bind*): a bind() of a protected port to a non-loopback
//!   address is refused (EPERM) or moved to the family's loopback address, per the port's policy.
//! - `mcp_connect4`/`mcp_connect6` (cgroup/connect*): a TCP connect() to an exclusive port on a
//!   local address (loopback or unspecified) only from a cgroup allowed on that port; to a locked
//!   port, from nobody (it fails at once instead of timing out).
//! - `egress_connect4/6`, `egress_sendmsg4/6` (cgroup/connect*, cgroup/sendmsg*), attached to each
//!   confined server's cgroup: a connect() or a datagram to an explicit address is refused (EPERM)
//!   unless the server's egress rules allow the destination; loopback is judged like any other
//!   address. Under the lockdown of every port, all of it is refused.
//!
//! Configuration lives in maps written by userspace; every map is keyed by host-order ports.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, bpf_sock_addr},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        generated::bpf_get_current_ancestor_cgroup_id,
    },
    macros::{cgroup_skb, cgroup_sock_addr, map},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{SkBuffContext, SockAddrContext},
};
use aya_log_ebpf::debug;
use gateway_common::{
    CgroupPort, CounterKey, EGRESS_EVENTS_BYTES, EGRESS_FIXED_BITS, EgressDenial, EgressEvent,
    EgressKey, EgressOwner, LockRecord, MAX_ALLOWED_CGROUPS, MAX_CGROUP_DEPTH, MAX_COUNTER_KEYS,
    MAX_EGRESS_CGROUPS, MAX_EGRESS_DENIALS, MAX_EGRESS_RULES, MAX_LOCKS, MAX_PROTECTED_PORTS,
    MAX_SOURCES, PortPolicy, Reason, SOURCE_PORT_BITS, SkbStat, SourceKey, origin_kind,
};

/// Verdicts of `cgroup_skb` and `cgroup/sock_addr` programs.
const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const SOCK_STREAM: u32 = 1;

#[map(name = "SKB_STATS")]
static SKB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SkbStat::COUNT, 0);

#[map(name = "PROTECTED_PORTS")]
static PROTECTED_PORTS: HashMap<u16, PortPolicy> =
    HashMap::with_max_entries(MAX_PROTECTED_PORTS, 0);

#[map(name = "ALLOWED_CGROUPS")]
static ALLOWED_CGROUPS: HashMap<CgroupPort, u8> = HashMap::with_max_entries(MAX_ALLOWED_CGROUPS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: LruPerCpuHashMap<CounterKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_COUNTER_KEYS, 0);

#[map(name = "SOURCES")]
static SOURCES: LpmTrie<SourceKey, u8> = LpmTrie::with_max_entries(MAX_SOURCES, 0);

#[map(name = "LOCK_ACTIVE")]
static LOCK_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "LOCKS")]
static LOCKS: HashMap<u16, LockRecord> = HashMap::with_max_entries(MAX_LOCKS, 0);

#[map(name = "EGRESS_CGROUPS")]
static EGRESS_CGROUPS: HashMap<u64, EgressOwner> = HashMap::with_max_entries(MAX_EGRESS_CGROUPS, 0);

#[map(name = "EGRESS_RULES")]
static EGRESS_RULES: LpmTrie<EgressKey, u8> = LpmTrie::with_max_entries(MAX_EGRESS_RULES, 0);

#[map(name = "EGRESS_DENIED")]
static EGRESS_DENIED: LruPerCpuHashMap<EgressDenial, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_EGRESS_DENIALS, 0);

#[map(name = "EGRESS_EVENTS")]
static EGRESS_EVENTS: RingBuf = RingBuf::with_byte_size(EGRESS_EVENTS_BYTES, 0);

/// Where `count` builds a `COUNTERS` key: in this CPU's slot of a map, not on the stack. A
/// 200-byte key on the stack is zeroed with a memset loop, and the verifier refuses its
/// variable-offset stack writes without CAP_PERFMON, a capability the gateway has no other
/// use for. One slot per program kind: a packet program (softirq) can interrupt a sock_addr
/// program (process context) on the same CPU, and must not write the key it is building.
#[map(name = "KEY_SCRATCH")]
static KEY_SCRATCH: PerCpuArray<CounterKey> = PerCpuArray::with_max_entries(2, 0);

/// A slot of `KEY_SCRATCH`.
#[derive(Clone, Copy)]
enum Scratch {
    Skb = 0,
    SockAddr = 1,
}

#[cgroup_skb]
pub fn mcp_ingress(ctx: SkBuffContext) -> i32 {
    // A packet the program can't read is one it can't judge: pass it (the socket-level hooks
    // and the gateway still apply).
    verdict(try_mcp_ingress(&ctx))
}

#[cgroup_sock_addr(bind4)]
pub fn mcp_bind4(ctx: SockAddrContext) -> i32 {
    verdict(try_mcp_bind4(&ctx))
}

#[cgroup_sock_addr(bind6)]
pub fn mcp_bind6(ctx: SockAddrContext) -> i32 {
    verdict(try_mcp_bind6(&ctx))
}

#[cgroup_sock_addr(connect4)]
pub fn mcp_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_mcp_connect4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn mcp_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_mcp_connect6(&ctx))
}

#[cgroup_sock_addr(connect4)]
pub fn egress_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_egress4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn egress_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_egress6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn egress_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(try_egress4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn egress_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(try_egress6(&ctx))
}

fn try_mcp_ingress(ctx: &SkBuffContext) -> Result<i32, i64> {
    bump(SkbStat::Seen);
    // cgroup_skb data starts at the network header.
    let first: u8 = ctx.load(0)?;
    let (source, tcp) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9)?;
            let src: [u8; 4] = ctx.load(12)?;
            (v4_mapped(src), proto == IPPROTO_TCP)
        }
        6 => {
            let next: u8 = ctx.load(6)?;
            let src: [u8; 16] = ctx.load(8)?;
            // Anything but plain UDP/ICMPv6 may be TCP behind extension headers: judge it.
            (src, next != IPPROTO_UDP && next != IPPROTO_ICMPV6)
        }
        _ => return Ok(PASS),
    };
    if !tcp {
        return Ok(PASS);
    }
    // The receiving socket's local port, host byte order: the port the packet is for.
    let port = ctx.skb.local_port() as u16;
    // Lockdown cuts loopback too: checked before anything lets a packet through.
    if lock_active() && locked(port, policy(port).is_some()) {
        bump(SkbStat::Dropped);
        count(Scratch::Skb, Reason::Lockdown, source, port);
        debug!(ctx, "dropped a packet to locked port {}", port);
        return Ok(DROP);
    }
    if is_loopback(&source) {
        return Ok(PASS);
    }
    let Some(policy) = policy(port) else {
        return Ok(PASS);
    };
    if policy.has(PortPolicy::LOOPBACK_ONLY) {
        bump(SkbStat::Dropped);
        count(Scratch::Skb, Reason::NonLoopbackPacket, source, port);
        debug!(
            ctx,
            "dropped a non-loopback packet to protected port {}", port
        );
        return Ok(DROP);
    }
    if policy.has(PortPolicy::SOURCE_ALLOWLIST) && !source_allowed(port, source) {
        bump(SkbStat::Dropped);
        count(Scratch::Skb, Reason::SourceDenied, source, port);
        debug!(
            ctx,
            "dropped a packet from a source not allowed on port {}", port
        );
        return Ok(DROP);
    }
    Ok(PASS)
}

fn try_mcp_bind4(ctx: &SockAddrContext) -> Result<i32, i64> {
    let sa = SockAddr::of(ctx);
    let port = sa.user_port();
    let addr = v4_mapped(sa.user_ip4());
    match bind_verdict(port, &addr) {
        BindVerdict::Allow => Ok(PASS),
        BindVerdict::Deny => {
            count(Scratch::SockAddr, Reason::BindDenied, addr, port);
            debug!(
                ctx,
                "refused bind of protected port {} to a non-loopback IPv4 address", port
            );
            Ok(DROP)
        }
        BindVerdict::Rewrite => {
            sa.set_user_ip4([127, 0, 0, 1]);
            count(Scratch::SockAddr, Reason::BindRewritten, addr, port);
            debug!(ctx, "moved bind of protected port {} to 127.0.0.1", port);
            Ok(PASS)
        }
    }
}

fn try_mcp_bind6(ctx: &SockAddrContext) -> Result<i32, i64> {
    let sa = SockAddr::of(ctx);
    let port = sa.user_port();
    let addr = sa.user_ip6();
    match bind_verdict(port, &addr) {
        BindVerdict::Allow => Ok(PASS),
        BindVerdict::Deny => {
            count(Scratch::SockAddr, Reason::BindDenied, addr, port);
            debug!(
                ctx,
                "refused bind of protected port {} to a non-loopback IPv6 address", port
            );
            Ok(DROP)
        }
        BindVerdict::Rewrite => {
            // A v4-mapped address stays IPv4 (::ffff:127.0.0.1); anything else becomes ::1.
            let loopback = if is_v4_mapped(&addr) {
                v4_mapped([127, 0, 0, 1])
            } else {
                let mut one = [0u8; 16];
                one[15] = 1;
                one
            };
            sa.set_user_ip6(&loopback);
            count(Scratch::SockAddr, Reason::BindRewritten, addr, port);
            debug!(ctx, "moved bind of protected port {} to loopback", port);
            Ok(PASS)
        }
    }
}

fn try_mcp_connect4(ctx: &SockAddrContext) -> Result<i32, i64> {
    connect_verdict(ctx, v4_mapped(SockAddr::of(ctx).user_ip4()))
}

fn try_mcp_connect6(ctx: &SockAddrContext) -> Result<i32, i64> {
    connect_verdict(ctx, SockAddr::of(ctx).user_ip6())
}

fn connect_verdict(ctx: &SockAddrContext, addr: [u8; 16]) -> Result<i32, i64> {
    let sa = SockAddr::of(ctx);
    if sa.sock_type() != SOCK_STREAM {
        return Ok(PASS);
    }
    // Only local destinations: a non-loopback local address is already cut off by the ingress
    // program (the source would not be loopback), and remote hosts are none of our business.
    if !is_loopback(&addr) && !is_unspecified(&addr) {
        return Ok(PASS);
    }
    let port = sa.user_port();
    let policy = policy(port);
    // Under lockdown a connect() to a locked port fails at once (a dropped SYN would hang).
    if lock_active() && locked(port, policy.is_some()) {
        count(Scratch::SockAddr, Reason::Lockdown, addr, port);
        debug!(ctx, "refused connect to locked port {}", port);
        return Ok(DROP);
    }
    let exclusive = policy.is_some_and(|p| p.has(PortPolicy::EXCLUSIVE));
    if !exclusive {
        return Ok(PASS);
    }
    // SAFETY: a helper without arguments, allowed in cgroup/connect programs (Linux 4.18).
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // Per port: a cgroup allowed onto one instance's upstream is not allowed onto another's.
    let key = CgroupPort::new(cgroup, port);
    // SAFETY: the value is only checked for presence, never read through the pointer.
    if unsafe { ALLOWED_CGROUPS.get(key) }.is_some() {
        return Ok(PASS);
    }
    count(Scratch::SockAddr, Reason::ConnectDenied, addr, port);
    debug!(
        ctx,
        "refused connect to exclusive port {} from cgroup {}", port, cgroup
    );
    Ok(DROP)
}

fn try_egress4(ctx: &SockAddrContext) -> Result<i32, i64> {
    let sa = SockAddr::of(ctx);
    Ok(egress_verdict(sa, v4_mapped(sa.user_ip4())))
}

fn try_egress6(ctx: &SockAddrContext) -> Result<i32, i64> {
    let sa = SockAddr::of(ctx);
    Ok(egress_verdict(sa, sa.user_ip6()))
}

/// The egress decision for a connect() or sendmsg() to `addr` from a confined cgroup.
fn egress_verdict(sa: SockAddr, addr: [u8; 16]) -> i32 {
    let Some(cgroup) = confined_cgroup() else {
        // Attached here, but no rules are loaded for this cgroup (being set up or torn down):
        // the maps, not the links, say what is confined.
        return PASS;
    };
    let port = sa.user_port();
    // The lockdown of every port cuts a confined server's outbound traffic too.
    // SAFETY: a presence check only.
    let all_locked = lock_active() && unsafe { LOCKS.get(0).is_some() };
    if !all_locked && (egress_allowed(cgroup, port, addr) || egress_allowed(cgroup, 0, addr)) {
        return PASS;
    }
    let proto = sa.protocol() as u8;
    count_denial(cgroup, addr, port, proto);
    report_denial(cgroup, addr, port, proto);
    DROP
}

/// The confined cgroup the caller is in: its own, else its innermost ancestor that is confined
/// (a server's children may make cgroups of their own below it).
#[inline(always)]
fn confined_cgroup() -> Option<u64> {
    // SAFETY: a helper without arguments, allowed in cgroup/sock_addr programs.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: presence checks only.
    if unsafe { EGRESS_CGROUPS.get(own) }.is_some() {
        return Some(own);
    }
    let mut level = MAX_CGROUP_DEPTH;
    while level > 0 {
        level -= 1;
        // SAFETY: takes an integer; returns 0 past the caller's depth.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        // SAFETY: as above.
        if id != 0 && unsafe { EGRESS_CGROUPS.get(id) }.is_some() {
            return Some(id);
        }
    }
    None
}

/// Whether `cgroup`'s rules allow `addr` on `port` (0: the rules for any port).
#[inline(always)]
fn egress_allowed(cgroup: u64, port: u16, addr: [u8; 16]) -> bool {
    let key = Key::new(EGRESS_FIXED_BITS + 128, EgressKey::new(cgroup, port, addr));
    EGRESS_RULES.get(&key).is_some()
}

/// Adds one to this CPU's count of denials of (`cgroup`, `addr`, `port`, `proto`).
#[inline(always)]
fn count_denial(cgroup: u64, addr: [u8; 16], port: u16, proto: u8) {
    let (high, low) = addr_words(addr);
    let [p0, p1] = port.to_ne_bytes();
    // Built from four 8-byte words, for the same reason as `v4_mapped`: a struct literal with
    // zero padding becomes a memset the verifier refuses without CAP_PERFMON.
    // SAFETY: EgressDenial is 32 bytes of integers and byte arrays, laid out as these four
    // native-endian words (cgroup; address; address; port, proto, padding).
    let key: EgressDenial = unsafe {
        core::mem::transmute::<[u64; 4], EgressDenial>([
            cgroup,
            high,
            low,
            u64::from_ne_bytes([p0, p1, proto, 0, 0, 0, 0, 0]),
        ])
    };
    if let Some(value) = EGRESS_DENIED.get_ptr_mut(key) {
        // SAFETY: as in `bump`: this CPU's copy, valid for this run, no other writer.
        unsafe { *value += 1 };
        return;
    }
    if EGRESS_DENIED
        .insert(key, 1, u64::from(BPF_NOEXIST))
        .is_err()
        && let Some(value) = EGRESS_DENIED.get_ptr_mut(key)
    {
        // SAFETY: as above.
        unsafe { *value += 1 };
    }
}

/// Sends one `EgressEvent` to userspace for the log; dropped when the ring buffer is full (the
/// count above is what stays exact). The process's name is not read here:
/// `bpf_get_current_comm` needs CAP_PERFMON in these programs, which the gateway does not have;
/// userspace reads it from /proc.
#[inline(always)]
fn report_denial(cgroup: u64, addr: [u8; 16], port: u16, proto: u8) {
    let Some(mut entry) = EGRESS_EVENTS.reserve::<EgressEvent>(0) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, 8-byte aligned record of EgressEvent's size; every
    // field is written before it is submitted.
    unsafe {
        (*event).cgroup = cgroup;
        (*event).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).port = port;
        (*event).proto = proto;
        (*event).pad = 0;
        (*event).addr = addr;
    }
    entry.submit(0);
}

/// Only 0 or 1 may leave a program: the verifier must see the range, whatever `r` held.
fn verdict(r: Result<i32, i64>) -> i32 {
    match r {
        Ok(DROP) => DROP,
        _ => PASS,
    }
}

enum BindVerdict {
    Allow,
    Deny,
    Rewrite,
}

fn bind_verdict(port: u16, addr: &[u8; 16]) -> BindVerdict {
    // Port 0 asks for an ephemeral port; loopback is what we want anyway.
    if port == 0 || is_loopback(addr) {
        return BindVerdict::Allow;
    }
    match policy(port) {
        Some(p) if p.has(PortPolicy::BIND_REWRITE) => BindVerdict::Rewrite,
        Some(p) if p.has(PortPolicy::BIND_DENY) => BindVerdict::Deny,
        _ => BindVerdict::Allow,
    }
}

/// Whether any lockdown is engaged: one array lookup, the only cost while none is.
#[inline(always)]
fn lock_active() -> bool {
    LOCK_ACTIVE.get(0).is_some_and(|active| *active != 0)
}

/// Whether `port` is locked: by a lock of its own, or, when it is protected, by the lock of
/// every protected port (key 0).
#[inline(always)]
fn locked(port: u16, protected: bool) -> bool {
    // SAFETY: presence checks only; the values are never read through the pointers.
    unsafe { LOCKS.get(port).is_some() || (protected && LOCKS.get(0).is_some()) }
}

/// Whether `source` is on `port`'s source allowlist (longest-prefix match on port + address).
#[inline(always)]
fn source_allowed(port: u16, source: [u8; 16]) -> bool {
    let key = Key::new(SOURCE_PORT_BITS + 128, SourceKey::new(port, source));
    SOURCES.get(&key).is_some()
}

fn policy(port: u16) -> Option<PortPolicy> {
    // SAFETY: the value is copied out at once; userspace only replaces whole values.
    unsafe { PROTECTED_PORTS.get(port) }.copied()
}

/// 127.0.0.0/8 (as v4-mapped), ::1.
fn is_loopback(addr: &[u8; 16]) -> bool {
    if is_v4_mapped(addr) {
        return addr[12] == 127;
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] == 1
}

/// `::ffff:0:0/96`.
/// `::ffff:a.b.c.d`, written as two 8-byte volatile stores. From a byte-array literal LLVM
/// emits a memset call for the ten zeros, whose variable-offset stores the verifier refuses
/// without CAP_PERFMON (a capability the gateway has no other use for).
#[inline(always)]
fn v4_mapped(ip: [u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = ip;
    let mut words = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let w = words.as_mut_ptr().cast::<u64>();
    // SAFETY: both words of the array are written before it is read.
    unsafe {
        core::ptr::write_volatile(w, 0);
        core::ptr::write_volatile(w.add(1), u64::from_ne_bytes([0, 0, 0xff, 0xff, a, b, c, d]));
        core::mem::transmute::<[u64; 2], [u8; 16]>(words.assume_init())
    }
}

fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 10 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[10] == 0xff && addr[11] == 0xff
}

/// `::` or `::ffff:0.0.0.0` (connecting to it reaches the local host).
fn is_unspecified(addr: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        // ::ffff:0.0.0.0 differs from :: only in bytes 10 and 11.
        if addr[i] != 0 && !(is_v4_mapped(addr) && (i == 10 || i == 11)) {
            return false;
        }
        i += 1;
    }
    true
}

/// The context of a `cgroup/sock_addr` program, read and written only through its named
/// fields: each accessor picks a 4-byte field of `bpf_sock_addr`, so no caller can hand the raw
/// access an offset the verifier (or the struct) does not allow.
#[derive(Clone, Copy)]
struct SockAddr(*mut bpf_sock_addr);

impl SockAddr {
    fn of(ctx: &SockAddrContext) -> Self {
        Self(ctx.sock_addr)
    }

    /// `user_port`: a network-order port in the low 16 bits.
    fn user_port(self) -> u16 {
        // SAFETY: `user_port` is a 4-byte field of the context.
        u16::from_be(unsafe { self.read(core::mem::offset_of!(bpf_sock_addr, user_port)) } as u16)
    }

    /// `type_`: the socket type (`SOCK_STREAM`, `SOCK_DGRAM`).
    fn sock_type(self) -> u32 {
        // SAFETY: `type_` is a 4-byte field of the context.
        unsafe { self.read(core::mem::offset_of!(bpf_sock_addr, type_)) }
    }

    /// `protocol`: `IPPROTO_TCP`, `IPPROTO_UDP`, ...
    fn protocol(self) -> u32 {
        // SAFETY: `protocol` is a 4-byte field of the context.
        unsafe { self.read(core::mem::offset_of!(bpf_sock_addr, protocol)) }
    }

    /// `user_ip4`, as 4 network-order bytes.
    fn user_ip4(self) -> [u8; 4] {
        // SAFETY: `user_ip4` is a 4-byte field of the context.
        unsafe { self.read(core::mem::offset_of!(bpf_sock_addr, user_ip4)) }.to_ne_bytes()
    }

    /// Sets `user_ip4` (bind and connect programs may).
    fn set_user_ip4(self, ip: [u8; 4]) {
        // SAFETY: `user_ip4` is a writable 4-byte field of the context.
        unsafe {
            self.write(
                core::mem::offset_of!(bpf_sock_addr, user_ip4),
                u32::from_ne_bytes(ip),
            );
        }
    }

    /// `user_ip6` as 16 network-order bytes, read 4 bytes at a time as the verifier wants.
    fn user_ip6(self) -> [u8; 16] {
        let base = core::mem::offset_of!(bpf_sock_addr, user_ip6);
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            // SAFETY: `user_ip6` is four 4-byte fields of the context; i < 4.
            let word = unsafe { self.read(base + 4 * i) }.to_ne_bytes();
            out[4 * i] = word[0];
            out[4 * i + 1] = word[1];
            out[4 * i + 2] = word[2];
            out[4 * i + 3] = word[3];
            i += 1;
        }
        out
    }

    /// Sets `user_ip6`, 4 bytes at a time (bind and connect programs may).
    fn set_user_ip6(self, ip: &[u8; 16]) {
        let base = core::mem::offset_of!(bpf_sock_addr, user_ip6);
        let mut i = 0;
        while i < 4 {
            let word = [ip[4 * i], ip[4 * i + 1], ip[4 * i + 2], ip[4 * i + 3]];
            // SAFETY: `user_ip6` is four writable 4-byte fields of the context; i < 4.
            unsafe { self.write(base + 4 * i, u32::from_ne_bytes(word)) };
            i += 1;
        }
    }

    /// One 4-byte load from the context (the verifier rewrites context accesses by size).
    ///
    /// # Safety
    /// `offset` must be that of a 4-byte field of `bpf_sock_addr`.
    unsafe fn read(self, offset: usize) -> u32 {
        // SAFETY: `self.0` is the program's context, and the caller passes the offset of a
        // 4-byte field of it; a volatile read keeps the access exactly 4 bytes wide.
        unsafe { core::ptr::read_volatile(self.0.cast::<u8>().add(offset).cast::<u32>()) }
    }

    /// One 4-byte store into the context.
    ///
    /// # Safety
    /// `offset` must be that of a 4-byte field of `bpf_sock_addr` the program type may write
    /// (`user_ip4`, `user_ip6[i]`, `user_port`).
    unsafe fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`, for a writable field.
        unsafe { core::ptr::write_volatile(self.0.cast::<u8>().add(offset).cast::<u32>(), value) }
    }
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

/// Counts a kernel event: adds one to this CPU's value of its `COUNTERS` key, creating it at 1.
/// Only kernel reasons are written here; the gateway writes the HTTP ones, so no key has two
/// writers.
#[inline(always)]
fn count(slot: Scratch, reason: Reason, addr: [u8; 16], port: u16) {
    let Some(key) = KEY_SCRATCH.get_ptr_mut(slot as u32) else {
        return;
    };
    // SAFETY: this CPU's slot, valid for this run; its program kind doesn't nest on one CPU.
    // Every field a kernel key uses is written; the rest (origin text past the address, the
    // credential) is never written by the kernel, so it stays zero as the map created it.
    let key = unsafe { &mut *key };
    key.reason = reason as u32;
    key.port = port;
    key.kind = origin_kind::ADDR;
    key.len = 16;
    // Two 8-byte volatile stores (`data` is 8-byte aligned in the 8-aligned map value): LLVM
    // would turn a byte copy into memset/memcpy calls with variable-offset stores (for a
    // v4-mapped address, a memset of its ten known zeros), which the verifier refuses without
    // CAP_PERFMON.
    let (high, low) = addr_words(addr);
    let words = key.data.as_mut_ptr().cast::<u64>();
    // SAFETY: `data` has 128 bytes, so both words are in bounds, and aligned (see above).
    unsafe {
        core::ptr::write_volatile(words, high);
        core::ptr::write_volatile(words.add(1), low);
    }
    increment(key);
}

/// An address as its two native-endian 8-byte words, in memory order.
#[inline(always)]
fn addr_words(addr: [u8; 16]) -> (u64, u64) {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = addr;
    (
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

#[inline(always)]
fn increment(key: &CounterKey) {
    if let Some(value) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: as in `bump`: this CPU's copy, valid for this run, no other writer.
        unsafe { *value += 1 };
        return;
    }
    if COUNTERS.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
        // Another CPU created the key meanwhile; this CPU's copy starts at 0.
        if let Some(value) = COUNTERS.get_ptr_mut(key) {
            // SAFETY: as above.
            unsafe { *value += 1 };
        }
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
