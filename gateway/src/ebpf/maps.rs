//! The pinned config maps the programs read, opened by pin (no object load needed), read back
//! as a [`Plan`] and rewritten in place: additions first, removals last, so a reader never sees
//! less than the old or the new plan.
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use gateway_common::{CgroupPort, PortPolicy, map};

use super::{EbpfError, pins, policy::Plan};

fn err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

fn open<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<Option<HashMap<MapData, K, V>>, EbpfError> {
    let path = pins::map_path(pin_dir, name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(err(name))?;
    let map = Map::from_map_data(data).map_err(err(name))?;
    Ok(Some(HashMap::try_from(map).map_err(err(name))?))
}

/// `PROTECTED_PORTS` and `ALLOWED_CGROUPS`.
pub struct ConfigMaps {
    ports: HashMap<MapData, u16, PortPolicy>,
    allowed: HashMap<MapData, CgroupPort, u8>,
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
        Ok(match (ports, allowed) {
            (Some(ports), Some(allowed)) => Some(Self { ports, allowed }),
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
        Ok(())
    }
}
