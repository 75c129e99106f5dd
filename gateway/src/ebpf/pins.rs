//! The pin directory: where the gateway's links and maps live in bpffs, so enforcement outlives
//! the process (fails closed) and a restarted gateway finds and takes over its own state.
//!
//! Layout of `<pin dir>` (default `/sys/fs/bpf/mcp-gateway`):
//! - `map-v<LAYOUT>-<MAP>`: each map (config and counters); the layout version keeps a gateway
//!   with different map layouts from reusing them.
//! - `link-<program>-cg<cgroup id>-<object hash>`: one bpf_link per attached program. The
//!   object hash names the exact programs, so a restarted gateway of the same build reuses the
//!   link as is, and a different build replaces it.
use std::{
    fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use gateway_common::{LAYOUT_VERSION, map};

use super::{OBJECT, sys};

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mcp-gateway";

/// FNV-1a of the embedded object: names the programs a link runs.
pub fn object_hash() -> u64 {
    OBJECT.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Path of the pinned map `name`.
pub fn map_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("map-v{LAYOUT_VERSION}-{name}"))
}

/// A pinned link, parsed from its file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPin {
    pub path: PathBuf,
    pub program: String,
    pub cgroup_id: u64,
    pub object_hash: u64,
}

impl LinkPin {
    pub fn name(program: &str, cgroup_id: u64, object_hash: u64) -> String {
        format!("link-{program}-cg{cgroup_id}-{object_hash:016x}")
    }

    fn parse(path: PathBuf) -> Option<Self> {
        let name = path.file_name()?.to_str()?.strip_prefix("link-")?;
        let (rest, hash) = name.rsplit_once('-')?;
        let (program, cgroup) = rest.rsplit_once("-cg")?;
        Some(Self {
            program: program.to_owned(),
            cgroup_id: cgroup.parse().ok()?,
            object_hash: u64::from_str_radix(hash, 16).ok()?,
            path,
        })
    }
}

/// Everything found in a pin directory.
#[derive(Debug, Default)]
pub struct PinInventory {
    pub links: Vec<LinkPin>,
    pub maps: Vec<PathBuf>,
    /// Entries that aren't ours by name (left alone).
    pub other: Vec<PathBuf>,
}

/// Lists the pin directory; a missing directory is empty.
pub fn inventory(dir: &Path) -> io::Result<PinInventory> {
    let mut found = PinInventory::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if let Some(link) = LinkPin::parse(path.clone()) {
            found.links.push(link);
        } else if name.starts_with("map-v") {
            found.maps.push(path);
        } else {
            found.other.push(path);
        }
    }
    found.links.sort_by(|a, b| a.path.cmp(&b.path));
    found.maps.sort();
    Ok(found)
}

/// Detaches a pinned link and removes its pin. The detach is immediate even while another
/// process (a still-running gateway) holds the link.
pub fn remove_link(pin: &Path) -> io::Result<()> {
    match sys::obj_get(pin) {
        Ok(fd) => {
            if let Err(e) = sys::link_detach(fd.as_fd()) {
                // Before 5.9 there is no BPF_LINK_DETACH: the link goes with its last reference.
                tracing::debug!(pin = %pin.display(), error = %e, "BPF_LINK_DETACH failed");
            }
        }
        Err(e) => tracing::debug!(pin = %pin.display(), error = %e, "opening pinned link"),
    }
    match fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What [`remove_all`] did.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<LinkPin>,
    pub maps: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub dir_removed: bool,
}

/// Detaches every pinned link and unpins every map (except the counters with `keep_counters`),
/// then removes the directory if it is empty.
pub fn remove_all(dir: &Path, keep_counters: bool) -> io::Result<Removed> {
    let found = inventory(dir)?;
    let mut removed = Removed::default();
    for link in found.links {
        remove_link(&link.path)?;
        removed.links.push(link);
    }
    let counters: Vec<PathBuf> = map::COUNTER_MAPS
        .iter()
        .map(|name| map_path(dir, name))
        .collect();
    for path in found.maps {
        if keep_counters && counters.contains(&path) {
            removed.kept.push(path);
            continue;
        }
        fs::remove_file(&path)?;
        removed.maps.push(path);
    }
    removed.kept.extend(found.other);
    if removed.kept.is_empty() {
        match fs::remove_dir(dir) {
            Ok(()) => removed.dir_removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        let name = LinkPin::name("mcp_connect4", 4242, 0xdead_beef);
        let pin = LinkPin::parse(PathBuf::from("/x").join(&name)).expect("parses");
        assert_eq!(pin.program, "mcp_connect4");
        assert_eq!(pin.cgroup_id, 4242);
        assert_eq!(pin.object_hash, 0xdead_beef);
        assert!(LinkPin::parse(PathBuf::from("/x/map-v1-COUNTERS")).is_none());
    }
}
