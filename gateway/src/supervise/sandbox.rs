//! The file system sandbox of a supervised server (Landlock, Linux 5.13+): read and execute
//! below `read_paths` and the system directories, write below `write_paths` and its own state
//! directory, nothing else. Built here in the gateway (it opens the paths), put on the child
//! between fork and exec (`sys::supervise_child`).
use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use landlock::{
    ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, path_beneath_rules,
};
use serde::Deserialize;

/// `sandbox` of a `[[server]]` table with a `command`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sandbox where the kernel has Landlock; a loud warning where it has not.
    #[default]
    Auto,
    /// The sandbox, or the server is not started.
    Required,
    /// No file system sandbox.
    Off,
}

/// Read (and execute) below these by default: what a program needs to load and run.
pub const SYSTEM_READ: [&str; 12] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/proc", "/sys", "/dev",
    "/run",
];
/// Written by most programs, harmless: the bit buckets.
pub const SYSTEM_WRITE: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

/// The newest Landlock ABI this build asks for; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V5;

/// Where a program is installed: the prefix of a `.../bin/PROGRAM` (so its own libraries, a
/// virtualenv's or an interpreter's standard library, are readable), else its directory.
fn installation(program: &Path) -> Option<PathBuf> {
    let dir = program.parent()?;
    Some(match dir.file_name() {
        Some(name) if name == "bin" || name == "sbin" => dir.parent().unwrap_or(dir).to_owned(),
        _ => dir.to_owned(),
    })
}

/// Every path the server may read, and every path it may write: the defaults, where its
/// program is installed (`programs`: as configured and with its links resolved), its `cwd`,
/// its state directory, and what its table lists. Pure.
pub fn paths(
    programs: &[&Path],
    cwd: Option<&Path>,
    home: &Path,
    read: &[PathBuf],
    write: &[PathBuf],
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut r: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    r.extend(programs.iter().filter_map(|p| installation(p)));
    r.extend(cwd.map(Path::to_owned));
    r.extend(read.iter().cloned());
    let mut w: Vec<PathBuf> = SYSTEM_WRITE.iter().map(PathBuf::from).collect();
    w.push(home.to_owned());
    w.extend(write.iter().cloned());
    r.sort();
    r.dedup();
    w.sort();
    w.dedup();
    (r, w)
}

/// The Landlock ruleset for these paths, ready to be put on a child; `None` when the kernel has
/// no Landlock (then nothing is confined: the caller says so). Paths that do not exist are
/// skipped.
pub fn ruleset(read: &[PathBuf], write: &[PathBuf]) -> Result<Option<OwnedFd>, String> {
    let read_access = AccessFs::from_read(ABI_WANTED);
    let all = AccessFs::from_all(ABI_WANTED);
    let created = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(read, read_access)))
        .and_then(|r| r.add_rules(path_beneath_rules(write, all)))
        .map_err(|e| e.to_string())?;
    Ok(Option::<OwnedFd>::from(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_are_the_defaults_the_program_the_state_and_the_table() {
        let (read, write) = paths(
            &[
                Path::new("/srv/venv/bin/python"),
                Path::new("/root/.pyenv/versions/3.11.7/bin/python3.11"),
                Path::new("/srv/tools/run.sh"),
            ],
            Some(Path::new("/srv/fetch")),
            Path::new("/var/lib/mcp-gateway/servers/fetch"),
            &[PathBuf::from("/srv/data")],
            &[PathBuf::from("/srv/out"), PathBuf::from("/srv/out")],
        );
        for p in [
            "/usr",
            "/etc",
            "/srv/venv",
            "/root/.pyenv/versions/3.11.7",
            "/srv/tools",
            "/srv/fetch",
            "/srv/data",
        ] {
            assert!(read.contains(&PathBuf::from(p)), "{p} readable: {read:?}");
        }
        assert!(!read.contains(&PathBuf::from("/home")));
        assert!(!read.contains(&PathBuf::from("/root")));
        assert!(
            !read.contains(&PathBuf::from("/srv")),
            "not a parent beyond the prefix"
        );
        assert_eq!(
            write,
            [
                "/dev/full",
                "/dev/null",
                "/dev/zero",
                "/srv/out",
                "/var/lib/mcp-gateway/servers/fetch"
            ]
            .map(PathBuf::from),
            "the state directory and the table's, once each"
        );
    }
}
