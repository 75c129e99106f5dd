//! `mcp-gateway detach`: withdrawing one instance's claim, or removing everything.
//!
//! Withdrawing an instance removes its registry record and rewrites the config maps to the
//! union of the remaining claims, so every other instance keeps exactly its protection. The
//! links on its cgroup go when no remaining instance uses that cgroup; when none remains at all,
//! the layout's links and config maps go too (the counters stay).
use std::path::Path;

use super::{
    EbpfError, egress,
    enforce::{LOCK_TIMEOUT, apply_union, remove_links_on},
    pins::{self, LinkPin, Removed},
    registry::{self, Instance, LayoutLock, Registry},
};

/// What withdrawing an instance did.
#[derive(Debug)]
pub struct Withdrawn {
    pub instance: Instance,
    pub links: Vec<LinkPin>,
    /// The cgroups whose egress rules and programs went with the instance.
    pub egress_cgroups: Vec<u64>,
    /// Instances still registered.
    pub remaining: Vec<Instance>,
    /// Set when no instance remained and the layout's programs and config were removed.
    pub layout: Option<Removed>,
}

/// Every instance registered in `pin_dir` (none when nothing is pinned).
pub fn instances(pin_dir: &Path) -> Result<Vec<Instance>, EbpfError> {
    match Registry::open(pin_dir)? {
        Some(registry) => registry.instances(),
        None => Ok(Vec::new()),
    }
}

/// Withdraws instance `name`'s claim from `pin_dir`.
pub fn withdraw(pin_dir: &Path, name: &str) -> Result<Withdrawn, EbpfError> {
    let _lock = LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)?;
    let mut registry = Registry::open(pin_dir)?.ok_or_else(|| {
        EbpfError::Instance(format!(
            "no instance is registered in {} (nothing to detach)",
            pin_dir.display()
        ))
    })?;
    let id = registry::instance_id(name);
    let Some(instance) = registry.get(id)? else {
        let names: Vec<String> = registry
            .instances()?
            .into_iter()
            .map(|i| i.claim.instance)
            .collect();
        return Err(EbpfError::Instance(format!(
            "no instance `{name}` in {}; registered: {}",
            pin_dir.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    registry.remove(id)?;
    let remaining = registry.instances()?;
    apply_union(pin_dir, &remaining)?;
    let egress_cgroups = egress::release_instance(pin_dir, id)?;
    let cgroup = instance.claim.cgroup_id;
    let links = if remaining.iter().any(|i| i.claim.cgroup_id == cgroup) {
        Vec::new()
    } else {
        remove_links_on(pin_dir, cgroup)
    };
    let layout = if remaining.is_empty() {
        drop(registry);
        Some(remove_layout(pin_dir)?)
    } else {
        None
    };
    Ok(Withdrawn {
        instance,
        links,
        egress_cgroups,
        remaining,
        layout,
    })
}

/// This layout's links and non-counter maps (the registry included); the counters stay.
fn remove_layout(pin_dir: &Path) -> Result<Removed, EbpfError> {
    let found = pins::inventory(pin_dir).map_err(|source| EbpfError::Io {
        what: "listing the pin directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    let mut removed = Removed::default();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EbpfError::Io {
            what: "removing",
            path,
            source,
        }
    };
    for link in found.links {
        pins::remove_link(&link.path).map_err(io(&link.path))?;
        removed.links.push(link);
    }
    for path in found.maps {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let counter = gateway_common::map::COUNTER_MAPS
            .iter()
            .any(|m| name == format!("map-{m}"));
        if counter {
            removed.kept.push(path);
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed.maps.push(path);
        }
    }
    Ok(removed)
}

/// Removes everything of every layout (the counters stay with `keep_counters`), under the lock
/// when there is a layout directory to lock.
pub fn remove_all(pin_dir: &Path, keep_counters: bool) -> Result<Removed, EbpfError> {
    let _lock = match pins::layout_dir(pin_dir).is_dir() {
        true => Some(LayoutLock::acquire(pin_dir, LOCK_TIMEOUT)?),
        false => None,
    };
    pins::remove_all(pin_dir, keep_counters).map_err(|source| EbpfError::Io {
        what: "removing the pins in",
        path: pin_dir.to_owned(),
        source,
    })
}
