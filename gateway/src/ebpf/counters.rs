//! Reading the kernel's event counters (`COUNTERS`, per CPU; summed here).
use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use aya::maps::{Map, MapData, PerCpuHashMap};
use gateway_common::{CounterKey, Reason, map};

use super::{EbpfError, pins};

/// One counter: how many times `reason` happened for `addr`/`port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The raw reason code; [`Counter::reason`] decodes it.
    pub reason_code: u32,
    /// IPv4 addresses come back as IPv4 (they are stored v4-mapped).
    pub addr: IpAddr,
    pub port: u16,
    pub count: u64,
}

impl Counter {
    /// `None` for a code this build doesn't know (a newer writer shares the map).
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_u32(self.reason_code)
    }

    /// The reason's name, or `reason_<code>` when unknown.
    pub fn reason_name(&self) -> String {
        self.reason().map_or_else(
            || format!("reason_{}", self.reason_code),
            |r| r.name().to_owned(),
        )
    }
}

fn read(map: &Map) -> Result<Vec<Counter>, EbpfError> {
    let name = map::COUNTERS;
    let counters: PerCpuHashMap<&MapData, CounterKey, u64> =
        PerCpuHashMap::try_from(map).map_err(|source| EbpfError::Map { name, source })?;
    let mut out = Vec::new();
    for entry in counters.iter() {
        let (key, per_cpu) = entry.map_err(|source| EbpfError::Map { name, source })?;
        let ip = Ipv6Addr::from(key.addr);
        let addr = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
        out.push(Counter {
            reason_code: key.reason,
            addr,
            port: key.port,
            count: per_cpu.iter().sum(),
        });
    }
    out.sort_by_key(|c| (c.reason_code, c.addr, c.port));
    Ok(out)
}

/// The counters of a loaded object.
pub fn from_ebpf(bpf: &aya::Ebpf) -> Result<Vec<Counter>, EbpfError> {
    let name = map::COUNTERS;
    read(
        bpf.map(name)
            .ok_or(EbpfError::Missing { kind: "map", name })?,
    )
}

/// The counters pinned in `pin_dir` (works while no gateway runs; empty if none are pinned).
pub fn from_pin(pin_dir: &Path) -> Result<Vec<Counter>, EbpfError> {
    let name = map::COUNTERS;
    let path = pins::map_path(pin_dir, name);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let data = MapData::from_pin(&path).map_err(|source| EbpfError::Map { name, source })?;
    let map = Map::from_map_data(data).map_err(|source| EbpfError::Map { name, source })?;
    read(&map)
}

/// Sum of the counters with `reason` (and `port`, when given).
pub fn total(counters: &[Counter], reason: Reason, port: Option<u16>) -> u64 {
    counters
        .iter()
        .filter(|c| c.reason() == Some(reason) && port.is_none_or(|p| p == c.port))
        .map(|c| c.count)
        .sum()
}
