//! The shared `COUNTERS` map: kernel events and HTTP rejections by (reason, origin).
//!
//! Per-CPU LRU hash: the kernel bumps its own CPU's slot (no atomics on BPF); readers sum the
//! CPUs. Kernel reasons are written only by the eBPF programs and HTTP reasons only by the
//! gateway ([`PinnedCounters::add`], a read-modify-write under the caller's lock), so no key has
//! two writers and no update is lost.
use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use aya::maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use gateway_common::{CounterKey, Reason, map, origin_kind};

use super::{EbpfError, pins};

/// One counter: how many times `reason` happened for one origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The raw key; [`Counter::reason`], [`Counter::addr`] and [`Counter::label`] decode it.
    pub key: CounterKey,
    /// Summed over CPUs.
    pub count: u64,
}

impl Counter {
    /// `None` for a code this build doesn't know (a newer writer shares the map).
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_u32(self.key.reason)
    }

    /// The reason's name, or `reason_<code>` when unknown.
    pub fn reason_name(&self) -> String {
        self.reason().map_or_else(
            || format!("reason_{}", self.key.reason),
            |r| r.name().to_owned(),
        )
    }

    /// The address of a kernel event (IPv4 comes back as IPv4: it is stored v4-mapped).
    pub fn addr(&self) -> Option<IpAddr> {
        let ip = Ipv6Addr::from(self.key.addr()?);
        Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
    }

    /// The port of a kernel event (see `CounterKey` for what it means per reason).
    pub fn port(&self) -> Option<u16> {
        (self.key.kind == origin_kind::ADDR).then_some(self.key.port)
    }

    /// The port the counter belongs to: the event's port for kernel events, the rejecting
    /// server's listen port for HTTP rejections.
    pub fn owner_port(&self) -> u16 {
        self.key.port
    }

    /// The origin as shown in `stats` and the `origin` label: `addr:port` for kernel events,
    /// the rejected Origin/Host for HTTP ones, `other` for the overflow bucket. Always printable
    /// ASCII, whatever bytes the map holds.
    pub fn label(&self) -> String {
        match (self.addr(), self.key.text_bytes()) {
            (Some(addr), _) => std::net::SocketAddr::new(addr, self.key.port).to_string(),
            (None, Some([])) => "(none)".to_owned(),
            (None, Some(text)) => printable(text),
            (None, None) => "other".to_owned(),
        }
    }

    /// The client's credential label (empty when the client was not identified), printable.
    pub fn credential(&self) -> String {
        printable(self.key.credential_bytes())
    }
}

/// Printable ASCII as is; any other byte as `\xNN`. The gateway only stores sanitised text, so
/// this is a second guard against whatever else could have written the map.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..=0x7e).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn map_err(source: MapError) -> EbpfError {
    EbpfError::Map {
        name: map::COUNTERS,
        source,
    }
}

fn read<T: std::borrow::Borrow<MapData>>(
    counters: &PerCpuHashMap<T, CounterKey, u64>,
) -> Result<Vec<Counter>, EbpfError> {
    let mut out = Vec::new();
    for entry in counters.iter() {
        match entry {
            Ok((key, per_cpu)) => out.push(Counter {
                key,
                count: per_cpu.iter().sum(),
            }),
            // An LRU key evicted between listing and lookup: it is simply gone.
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_err(source)),
        }
    }
    out.sort_by(|a, b| {
        (a.key.reason, a.key.kind, a.key.data, a.key.port).cmp(&(
            b.key.reason,
            b.key.kind,
            b.key.data,
            b.key.port,
        ))
    });
    Ok(out)
}

/// The counters of a loaded object.
pub fn from_ebpf(bpf: &aya::Ebpf) -> Result<Vec<Counter>, EbpfError> {
    let name = map::COUNTERS;
    let raw = bpf
        .map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    read(&PerCpuHashMap::<&MapData, CounterKey, u64>::try_from(raw).map_err(map_err)?)
}

/// The counters pinned in `pin_dir` (works while no gateway runs; empty if none are pinned).
pub fn from_pin(pin_dir: &Path) -> Result<Vec<Counter>, EbpfError> {
    match PinnedCounters::open(pin_dir)? {
        Some(pinned) => pinned.read(),
        None => Ok(Vec::new()),
    }
}

/// Sum of the counters with `reason` (and `port`, when given).
pub fn total(counters: &[Counter], reason: Reason, port: Option<u16>) -> u64 {
    counters
        .iter()
        .filter(|c| c.reason() == Some(reason) && port.is_none_or(|p| c.port() == Some(p)))
        .map(|c| c.count)
        .sum()
}

/// A handle on the pinned `COUNTERS` map, independent of the loaded object (its own fd).
pub struct PinnedCounters {
    map: PerCpuHashMap<MapData, CounterKey, u64>,
    cpus: usize,
}

impl std::fmt::Debug for PinnedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedCounters")
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

impl PinnedCounters {
    /// Opens the map pinned in `pin_dir`; `None` when there is none (never ran, or detached).
    pub fn open(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let path = pins::map_path(pin_dir, map::COUNTERS);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path).map_err(map_err)?;
        let map =
            PerCpuHashMap::try_from(Map::from_map_data(data).map_err(map_err)?).map_err(map_err)?;
        let cpus = aya::util::nr_cpus().map_err(|(file, source)| EbpfError::Io {
            what: "reading the possible CPUs",
            path: file.into(),
            source,
        })?;
        Ok(Some(Self { map, cpus }))
    }

    /// Every key, summed over CPUs, sorted by key.
    pub fn read(&self) -> Result<Vec<Counter>, EbpfError> {
        read(&self.map)
    }

    /// Adds `n` to a key written only by userspace; returns the new total.
    ///
    /// Read-modify-write: the caller must hold the one lock every userspace writer in this
    /// process takes. HTTP keys carry the writer's listen port, so gateways sharing a pin
    /// directory write disjoint keys. The count lives in CPU 0's slot; the other slots are kept
    /// as they are (zero, unless something else wrote them).
    pub fn add(&mut self, key: &CounterKey, n: u64) -> Result<u64, EbpfError> {
        let mut values = match self.map.get(key, 0) {
            Ok(values) => values.to_vec(),
            Err(MapError::KeyNotFound) => vec![0; self.cpus],
            Err(source) => return Err(map_err(source)),
        };
        if values.is_empty() {
            values.push(0);
        }
        values[0] = values[0].saturating_add(n);
        let total = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
        let values = PerCpuValues::try_from(values).map_err(|source| EbpfError::Io {
            what: "building per-CPU values for",
            path: map::COUNTERS.into(),
            source,
        })?;
        self.map.insert(key, values, 0).map_err(map_err)?;
        Ok(total)
    }
}
