//! The kill-switch's state: the pinned `LOCKS` map (port → when and why; port 0 is every
//! protected port) and the `LOCK_ACTIVE` flag the programs check first. Both live in the pin
//! directory, so a lockdown holds for every instance, survives restarts and crashes, and needs
//! no gateway running.
use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, HashMap, MapData, MapError};
use gateway_common::{LOCK_REASON_LEN, LockRecord, map};

use super::{
    EbpfError,
    maps::{err, open_map},
};

/// One lockdown.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lock {
    /// The locked port; `None`: every protected port.
    pub port: Option<u16>,
    /// Seconds since the Unix epoch.
    pub since_unix: u64,
    pub reason: String,
}

/// Whether `port` is locked by `locks`: by a lock of its own, or, when it is protected, by the
/// lock of every protected port. (The programs decide the same way.)
pub fn is_locked(locks: &[Lock], port: u16, protected: bool) -> bool {
    locks
        .iter()
        .any(|l| l.port == Some(port) || (protected && l.port.is_none()))
}

fn record(reason: &str, since_unix: u64) -> LockRecord {
    let mut rec = LockRecord {
        since_unix,
        reason: [0; LOCK_REASON_LEN],
    };
    let mut len = reason.len().min(LOCK_REASON_LEN);
    while !reason.is_char_boundary(len) {
        len -= 1;
    }
    rec.reason[..len].copy_from_slice(&reason.as_bytes()[..len]);
    rec
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The pinned lock maps.
pub struct LockMaps {
    active: Array<MapData, u32>,
    locks: HashMap<MapData, u16, LockRecord>,
}

impl std::fmt::Debug for LockMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockMaps").finish_non_exhaustive()
    }
}

impl LockMaps {
    /// The lock maps pinned in `pin_dir`; `None` when no gateway ever pinned them there.
    pub fn open(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let (Some(active), Some(locks)) = (
            open_map(pin_dir, map::LOCK_ACTIVE)?,
            open_map(pin_dir, map::LOCKS)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            active: Array::try_from(active).map_err(err(map::LOCK_ACTIVE))?,
            locks: HashMap::try_from(locks).map_err(err(map::LOCKS))?,
        }))
    }

    /// The locks in force, every-port lock first, then by port.
    pub fn read(&self) -> Result<Vec<Lock>, EbpfError> {
        let mut out = Vec::new();
        for entry in self.locks.iter() {
            match entry {
                Ok((port, rec)) => out.push(Lock {
                    port: (port != 0).then_some(port),
                    since_unix: rec.since_unix,
                    reason: text(&rec.reason),
                }),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(map::LOCKS)(e)),
            }
        }
        out.sort_by_key(|l| l.port);
        Ok(out)
    }

    /// Locks `ports` (every protected port when empty) for `reason`. The locks are written
    /// before the flag that makes the programs read them.
    pub fn engage(&mut self, ports: &[u16], reason: &str) -> Result<(), EbpfError> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rec = record(reason, since);
        let keys: Vec<u16> = if ports.is_empty() {
            vec![0]
        } else {
            ports.to_vec()
        };
        for port in keys {
            self.locks.insert(port, rec, 0).map_err(err(map::LOCKS))?;
        }
        self.active.set(0, 1, 0).map_err(err(map::LOCK_ACTIVE))
    }

    /// Releases the locks of `ports` (every lock when `None`; `Some(&[])` is the every-port
    /// lock); returns those released. The flag drops when no lock is left.
    pub fn release(&mut self, ports: Option<&[u16]>) -> Result<Vec<Lock>, EbpfError> {
        let before = self.read()?;
        let released: Vec<Lock> = before
            .into_iter()
            .filter(|l| match ports {
                None => true,
                Some([]) => l.port.is_none(),
                Some(ports) => l.port.is_some_and(|p| ports.contains(&p)),
            })
            .collect();
        for lock in &released {
            match self.locks.remove(&lock.port.unwrap_or(0)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(map::LOCKS)(e)),
            }
        }
        if self.read()?.is_empty() {
            self.active.set(0, 0, 0).map_err(err(map::LOCK_ACTIVE))?;
        }
        Ok(released)
    }
}

impl Lock {
    /// One lock, in words.
    pub fn describe(&self) -> String {
        let what = match self.port {
            Some(port) => format!("port {port}"),
            None => "every protected port".to_owned(),
        };
        let since = UNIX_EPOCH + Duration::from_secs(self.since_unix);
        format!(
            "{what} since {}: {}",
            humantime::format_rfc3339_seconds(since),
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(port: Option<u16>) -> Lock {
        Lock {
            port,
            since_unix: 0,
            reason: String::new(),
        }
    }

    #[test]
    fn which_ports_a_lockdown_covers() {
        #[rustfmt::skip]
        let rows: &[(&[Option<u16>], u16, bool, bool)] = &[
            (&[], 8000, true, false),
            (&[None], 8000, true, true),
            (&[None], 8000, false, false),
            (&[Some(8000)], 8000, false, true),
            (&[Some(8000)], 8001, true, false),
            (&[Some(9000), None], 8001, true, true),
        ];
        for (locks, port, protected, want) in rows {
            let locks: Vec<Lock> = locks.iter().map(|p| lock(*p)).collect();
            assert_eq!(
                is_locked(&locks, *port, *protected),
                *want,
                "{locks:?} {port}"
            );
        }
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary() {
        let rec = record(&"é".repeat(100), 5);
        let back = text(&rec.reason);
        assert!(back.len() <= LOCK_REASON_LEN && back.chars().all(|c| c == 'é'));
        assert_eq!(text(&record("incident 42", 1).reason), "incident 42");
    }
}
