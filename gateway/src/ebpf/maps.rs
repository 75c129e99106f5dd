//! The pinned config maps the programs read, opened by pin (no object load needed), read back
//! as a [`Plan`] and rewritten in place: additions first, removals last, so a reader never sees
//! less than the old or the new plan.
use std::path::Path;

use aya::maps::{
    HashMap, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use gateway_common::{CgroupPort, PortPolicy, SOURCE_PORT_BITS, SourceKey, map};

use super::{EbpfError, pins, policy::Plan};
use crate::source::Cidr;

/// Names the map in an aya map error.
pub(crate) fn err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// The map pinned as `name` in `pin_dir`, or `None` when it is not pinned.
pub(crate) fn open_map(pin_dir: &Path, name: &'static str) -> Result<Option<Map>, EbpfError> {
    let path = pins::map_path(pin_dir, name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(err(name))?;
    Ok(Some(Map::from_map_data(data).map_err(err(name))?))
}

fn open<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<Option<HashMap<MapData, K, V>>, EbpfError> {
    open_map(pin_dir, name)?
        .map(|map| HashMap::try_from(map).map_err(err(name)))
        .transpose()
}

/// The trie key of `port` and `cidr`.
fn source_key(port: u16, cidr: &Cidr) -> Key<SourceKey> {
    Key::new(
        SOURCE_PORT_BITS + u32::from(cidr.prefix_len),
        SourceKey::new(port, cidr.addr),
    )
}

/// `PROTECTED_PORTS`, `ALLOWED_CGROUPS` and `SOURCES`.
pub struct ConfigMaps {
    ports: HashMap<MapData, u16, PortPolicy>,
    allowed: HashMap<MapData, CgroupPort, u8>,
    sources: LpmTrie<MapData, SourceKey, u8>,
}

impl std::fmt::Debug for ConfigMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMaps").finish_non_exhaustive()
    }
}

impl ConfigMaps {
    /// The config maps pinned in `pin_dir`; `None` when they are not (never enforced there, or
    /// detached).
    pub fn open(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let ports = open(pin_dir, map::PROTECTED_PORTS)?;
        let allowed = open(pin_dir, map::ALLOWED_CGROUPS)?;
        let sources = open_map(pin_dir, map::SOURCES)?
            .map(|m| LpmTrie::try_from(m).map_err(err(map::SOURCES)))
            .transpose()?;
        Ok(match (ports, allowed, sources) {
            (Some(ports), Some(allowed), Some(sources)) => Some(Self {
                ports,
                allowed,
                sources,
            }),
            _ => None,
        })
    }

    /// What the programs enforce now.
    pub fn read(&self) -> Result<Plan, EbpfError> {
        let mut plan = Plan::default();
        for entry in self.ports.iter() {
            match entry {
                Ok((port, policy)) => {
                    plan.ports.insert(port, policy);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(map::PROTECTED_PORTS)(e)),
            }
        }
        for key in self.allowed.keys() {
            match key {
                Ok(key) => {
                    plan.allowed.insert(key);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(map::ALLOWED_CGROUPS)(e)),
            }
        }
        for key in self.sources.keys() {
            match key {
                Ok(key) => {
                    let bits = key.prefix_len().saturating_sub(SOURCE_PORT_BITS).min(128);
                    let data = key.data();
                    let cidr = Cidr {
                        addr: data.addr,
                        prefix_len: bits as u8,
                    };
                    plan.sources.insert((u16::from_be_bytes(data.port), cidr));
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(map::SOURCES)(e)),
            }
        }
        Ok(plan)
    }

    /// Makes the maps hold exactly `plan`.
    pub fn write(&mut self, plan: &Plan) -> Result<(), EbpfError> {
        let ports_err = err(map::PROTECTED_PORTS);
        for (port, policy) in &plan.ports {
            self.ports.insert(port, policy, 0).map_err(&ports_err)?;
        }
        let allowed_err = err(map::ALLOWED_CGROUPS);
        for pair in &plan.allowed {
            self.allowed.insert(pair, 1, 0).map_err(&allowed_err)?;
        }
        let sources_err = err(map::SOURCES);
        for (port, cidr) in &plan.sources {
            self.sources
                .insert(&source_key(*port, cidr), 1, 0)
                .map_err(&sources_err)?;
        }
        let stale: Vec<u16> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|port| !plan.ports.contains_key(port))
            .collect();
        for port in stale {
            self.ports.remove(&port).map_err(&ports_err)?;
        }
        let stale: Vec<CgroupPort> = self
            .allowed
            .keys()
            .filter_map(Result::ok)
            .filter(|pair| !plan.allowed.contains(pair))
            .collect();
        for pair in stale {
            self.allowed.remove(&pair).map_err(&allowed_err)?;
        }
        let current = self.read()?;
        for (port, cidr) in current.sources.difference(&plan.sources) {
            self.sources
                .remove(&source_key(*port, cidr))
                .map_err(&sources_err)?;
        }
        Ok(())
    }
}
