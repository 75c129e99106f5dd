//! A file's version as its metadata says (not its contents): what the credentials and TLS
//! stores remember of the files they loaded, and what `reload` polls. A leaf: it depends on
//! nothing of the crate, so the stores need not import the reloader that drives them.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

/// What identifies a file's version: device, inode, size, mtime and ctime (ns); `None` for a
/// file that can't be read.
type FileSig = Option<(u64, u64, u64, i128, i128)>;

/// The versions of a set of files. Taken *before* reading them, so a change made while they
/// are read is seen by the next poll.
pub type Version = Vec<FileSig>;

/// The version of `paths` now.
pub fn version(paths: &[PathBuf]) -> Version {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((
                m.dev(),
                m.ino(),
                m.size(),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ))
        })
        .collect()
}
