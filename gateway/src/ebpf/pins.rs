//! The pin directory: where the gateway's links and maps live in bpffs, so enforcement outlives
//! the process (fails closed) and a restarted gateway finds and takes over its own state.
//!
//! Layout of `<pin dir>` (default `/sys/fs/bpf/mcp-gateway`):
//! - `v<LAYOUT>/`: everything of this map layout, shared by every instance of a build with it:
//!   - `map-<MAP>`: each map: the kernel programs' config and counters, and the `INSTANCES`
//!     registry of what each instance claims;
//!   - `link-<program>-cg<cgroup id>-<object hash>`: one bpf_link per attached program. The
//!     object hash names the exact programs, so a restarted gateway of the same build reuses the
//!     link as is, and a different build (same layout, so same maps) replaces it.
//! - other `v<N>/` directories: another layout's state, never touched by this build except by
//!   `mcp-gateway detach --all`;
//! - `map-v<N>-<MAP>` and `link-…` directly in the pin directory: the state of builds from
//!   before layout directories (layout 2 and older), treated like another layout.
use std::{
    fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use gateway_common::{LAYOUT_VERSION, map};

use super::{OBJECT, sys};
pub use crate::config::kernel::DEFAULT_PIN_DIR;

/// FNV-1a of the embedded object: names the programs a link runs.
pub fn object_hash() -> u64 {
    fnv1a(OBJECT)
}

pub use gateway_common::fnv1a;

/// This build's layout directory inside `pin_dir`.
pub fn layout_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{LAYOUT_VERSION}"))
}

/// Path of the pinned map `name` of this build's layout.
pub fn map_path(pin_dir: &Path, name: &str) -> PathBuf {
    layout_dir(pin_dir).join(format!("map-{name}"))
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

    /// Path of the link pin for `program` on `cgroup_id` by this build.
    pub fn path(pin_dir: &Path, program: &str, cgroup_id: u64) -> PathBuf {
        layout_dir(pin_dir).join(Self::name(program, cgroup_id, object_hash()))
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
    /// This layout's links.
    pub links: Vec<LinkPin>,
    /// This layout's maps.
    pub maps: Vec<PathBuf>,
    /// Links and maps of other layouts (other `v<N>/` directories, and the pre-directory layout
    /// in the pin directory itself). Their programs still enforce their own maps.
    pub other_layouts: Vec<PathBuf>,
    /// Entries that aren't ours by name (left alone).
    pub other: Vec<PathBuf>,
}

impl PinInventory {
    /// This layout's links attached to `cgroup_id`.
    pub fn links_on(&self, cgroup_id: u64) -> impl Iterator<Item = &LinkPin> {
        self.links.iter().filter(move |l| l.cgroup_id == cgroup_id)
    }
}

fn entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in read {
        out.push(entry?.path());
    }
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// `v<digits>`.
fn is_layout_dir_name(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Lists the pin directory; a missing directory is empty.
pub fn inventory(pin_dir: &Path) -> io::Result<PinInventory> {
    let mut found = PinInventory::default();
    let mine = layout_dir(pin_dir);
    for path in entries(&mine)? {
        let name = file_name(&path).to_owned();
        if let Some(link) = LinkPin::parse(path.clone()) {
            found.links.push(link);
        } else if name.starts_with("map-") {
            found.maps.push(path);
        } else {
            found.other.push(path);
        }
    }
    for path in entries(pin_dir)? {
        let name = file_name(&path);
        if path == mine {
            continue;
        }
        let legacy = name.starts_with("link-") || name.starts_with("map-v");
        if legacy || (is_layout_dir_name(name) && path.is_dir()) {
            found.other_layouts.push(path);
        } else {
            found.other.push(path);
        }
    }
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

/// What a removal did.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<LinkPin>,
    pub maps: Vec<PathBuf>,
    /// Links and maps of other layouts.
    pub other_layouts: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub dir_removed: bool,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.maps.is_empty() && self.other_layouts.is_empty()
    }
}

/// Whether `path` is a counter map of any layout (kept by `--keep-counters`).
fn is_counter_map(path: &Path) -> bool {
    let name = file_name(path);
    map::COUNTER_MAPS
        .iter()
        .any(|m| name.strip_suffix(m).is_some_and(|p| p.ends_with('-')))
}

/// Removes another layout's entry: detaches links, unpins maps, recurses into directories.
/// Returns the paths kept (counters with `keep_counters`).
fn remove_other(path: &Path, keep_counters: bool, kept: &mut Vec<PathBuf>) -> io::Result<()> {
    if path.is_dir() {
        for entry in entries(path)? {
            remove_other(&entry, keep_counters, kept)?;
        }
        if entries(path)?.is_empty() {
            fs::remove_dir(path)?;
        }
        return Ok(());
    }
    let name = file_name(path);
    if name.starts_with("link-") {
        return remove_link(path);
    }
    if keep_counters && is_counter_map(path) {
        kept.push(path.to_owned());
        return Ok(());
    }
    fs::remove_file(path)
}

/// Detaches every pinned link and unpins every map of every layout (except the counters with
/// `keep_counters`), then removes the directories left empty.
pub fn remove_all(pin_dir: &Path, keep_counters: bool) -> io::Result<Removed> {
    let found = inventory(pin_dir)?;
    let mut removed = Removed::default();
    for link in found.links {
        remove_link(&link.path)?;
        removed.links.push(link);
    }
    for path in found.maps {
        if keep_counters && is_counter_map(&path) {
            removed.kept.push(path);
            continue;
        }
        fs::remove_file(&path)?;
        removed.maps.push(path);
    }
    for path in found.other_layouts {
        remove_other(&path, keep_counters, &mut removed.kept)?;
        removed.other_layouts.push(path);
    }
    removed.kept.extend(found.other);
    let mine = layout_dir(pin_dir);
    if entries(&mine)?.is_empty() {
        match fs::remove_dir(&mine) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if entries(pin_dir)?.is_empty() {
        match fs::remove_dir(pin_dir) {
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
        assert!(LinkPin::parse(PathBuf::from("/x/map-COUNTERS")).is_none());
    }

    #[test]
    fn paths_live_in_the_layout_directory() {
        let dir = Path::new("/sys/fs/bpf/mcp-gateway");
        let layout = format!("/sys/fs/bpf/mcp-gateway/v{LAYOUT_VERSION}");
        assert_eq!(layout_dir(dir), PathBuf::from(&layout));
        assert_eq!(
            map_path(dir, "COUNTERS"),
            PathBuf::from(format!("{layout}/map-COUNTERS"))
        );
    }

    #[test]
    fn layout_dirs_and_counter_maps_are_recognised() {
        for (name, want) in [
            ("v2", true),
            ("v10", true),
            ("v", false),
            ("vx", false),
            ("x2", false),
        ] {
            assert_eq!(is_layout_dir_name(name), want, "{name}");
        }
        for (path, want) in [
            ("/p/v3/map-COUNTERS", true),
            ("/p/map-v2-COUNTERS", true),
            ("/p/map-v2-SKB_STATS", true),
            ("/p/v3/map-PROTECTED_PORTS", false),
            ("/p/v3/map-XCOUNTERS", false),
        ] {
            assert_eq!(is_counter_map(Path::new(path)), want, "{path}");
        }
    }
}
