//! Where rejections are counted: the pinned `COUNTERS` map when kernel enforcement runs (shared
//! with the kernel, persistent), else a bounded map in this process.
use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use gateway_common::{CounterKey, MAX_COUNTER_KEYS, Reason};

use crate::ebpf::{
    EbpfError,
    counters::{Counter, PinnedCounters},
};

enum Writer {
    Pinned(PinnedCounters),
    /// Bounded like the map: past [`MAX_COUNTER_KEYS`] keys, new origins count in their
    /// reason's overflow key.
    InProcess(HashMap<CounterKey, u64>),
}

/// The rejection counters.
pub struct Store {
    /// The one lock of every userspace writer: makes the map's read-modify-write exact.
    writer: Mutex<Writer>,
    /// A second handle on the pinned map, so scrapes never hold up the request path.
    reader: Option<PinnedCounters>,
    /// Increments that could not be written (reported as a metric and a warning).
    failed: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pinned", &self.is_pinned())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Counts in this process only (no kernel enforcement).
    pub fn in_process() -> Self {
        Self {
            writer: Mutex::new(Writer::InProcess(HashMap::new())),
            reader: None,
            failed: AtomicU64::new(0),
        }
    }

    /// Counts in the map pinned in `pin_dir`; `None` when no map is pinned there.
    pub fn pinned(pin_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let (Some(writer), Some(reader)) = (
            PinnedCounters::open(pin_dir)?,
            PinnedCounters::open(pin_dir)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            writer: Mutex::new(Writer::Pinned(writer)),
            reader: Some(reader),
            failed: AtomicU64::new(0),
        }))
    }

    pub fn is_pinned(&self) -> bool {
        self.reader.is_some()
    }

    /// Increments that could not be recorded.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts one HTTP rejection of `origin` (sanitised text) for `reason`, by the server
    /// listening on `port`.
    pub fn add(&self, reason: Reason, port: u16, origin: &str, credential: &str) {
        let key = CounterKey::text(reason, port, origin.as_bytes())
            .with_credential(credential.as_bytes());
        // A poisoned lock only means another thread panicked mid-increment; the map itself is
        // consistent (each write is one syscall), so keep counting.
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *writer {
            Writer::Pinned(map) => {
                if let Err(e) = map.add(&key, 1) {
                    drop(writer);
                    if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(error = %e, "could not count a rejection in the pinned counters map; see mcp_gateway_rejection_store_errors_total");
                    }
                }
            }
            Writer::InProcess(counts) => {
                let full = counts.len() >= MAX_COUNTER_KEYS as usize;
                let key = if full && !counts.contains_key(&key) {
                    CounterKey::other(reason, port).with_credential(credential.as_bytes())
                } else {
                    key
                };
                *counts.entry(key).or_insert(0) += 1;
            }
        }
    }

    /// Every counter, kernel and HTTP.
    pub fn snapshot(&self) -> Result<Vec<Counter>, EbpfError> {
        if let Some(reader) = &self.reader {
            return reader.read();
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(match &*writer {
            Writer::InProcess(counts) => counts
                .iter()
                .map(|(key, count)| Counter {
                    key: *key,
                    count: *count,
                })
                .collect(),
            Writer::Pinned(map) => map.read()?,
        })
    }
}
