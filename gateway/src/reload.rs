//! Reloading, without a restart, what operators rotate: each server's credentials file and TLS
//! files.
//!
//! - **When.** The files' metadata (not their contents) is polled every [`POLL_EVERY`]; a
//!   change is read once a poll finds the file as the previous poll did, so a file rewritten in
//!   place is not read half-written (within 2 polls: 250–500 ms). SIGHUP reloads everything at
//!   once.
//! - **Failure.** An unreadable or malformed file changes nothing: the previous credentials or
//!   certificate stay in force, an error is logged and `mcp_gateway_config_reload_errors_total`
//!   counts it. The same broken file is not retried until it changes again (or SIGHUP).
//! - **Effect.** The new set is swapped in whole: the next request on any connection, kept
//!   alive or not, is checked against it; no connection is dropped.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Notify;

pub use crate::file_version::{Version, version};
use crate::{credentials::CredentialStore, metrics::ServerStats, tls::TlsStore};

pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What is reloaded.
#[derive(Clone, Debug)]
pub enum Target {
    Credentials(Arc<CredentialStore>),
    Tls(Arc<TlsStore>),
}

impl Target {
    /// The `what` label of the reload counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::Tls(_) => "tls",
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Self::Credentials(store) => vec![store.path().to_owned()],
            Self::Tls(store) => store.paths(),
        }
    }

    /// The version of the files the gateway started with.
    fn loaded_at_start(&self) -> Version {
        match self {
            Self::Credentials(store) => store.version_at_start().clone(),
            Self::Tls(store) => store.version_at_start().clone(),
        }
    }

    /// Loads the files again; what changed, for the log.
    fn reload(&self, stats: &ServerStats) -> Result<String, String> {
        match self {
            Self::Credentials(store) => store.reload().map(|c| {
                format!(
                    "reloaded credentials: added {:?}, removed {:?}, new token for {:?}; {} in force",
                    c.added, c.removed, c.rotated, c.total
                )
            }),
            Self::Tls(store) => store.reload().map_err(|e| e.to_string()).map(|loaded| {
                stats.certificate_in_force(loaded.cert.not_after);
                let until = loaded
                    .cert
                    .not_after
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string());
                format!(
                    "reloaded TLS files: certificate for {:?}, valid until {}",
                    loaded.cert.names,
                    until.as_deref().unwrap_or("?")
                )
            }),
        }
    }
}

/// What one poll does.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// As last loaded (or last failed): nothing to do.
    Unchanged,
    /// Changed since the last poll: wait one more, in case it is still being written.
    Settling,
    Load,
}

/// The decision of one poll (pure).
pub fn step<S: PartialEq>(loaded: &S, previous_poll: &S, now: &S, forced: bool) -> Step {
    if forced {
        Step::Load
    } else if now == loaded {
        Step::Unchanged
    } else if now == previous_poll {
        Step::Load
    } else {
        Step::Settling
    }
}

/// One server's reloadable files.
#[derive(Debug)]
pub struct Watched {
    pub server: String,
    pub target: Target,
    pub stats: Arc<ServerStats>,
}

struct State {
    watched: Watched,
    paths: Vec<PathBuf>,
    loaded: Version,
    previous: Version,
}

impl State {
    fn poll(&mut self, forced: bool) {
        let now = version(&self.paths);
        let decision = step(&self.loaded, &self.previous, &now, forced);
        self.previous = now.clone();
        if decision != Step::Load {
            return;
        }
        self.loaded = now;
        let w = &self.watched;
        let kind = w.target.kind();
        match w.target.reload(&w.stats) {
            Ok(what) => {
                w.stats.reloaded(kind, true);
                tracing::info!(server = %w.server, what = kind, "{what}");
            }
            Err(e) => {
                w.stats.reloaded(kind, false);
                tracing::error!(
                    server = %w.server, what = kind, error = %e,
                    "reload failed: the previous {kind} stay in force; fix the file (it is read again when it changes, or on SIGHUP)"
                );
            }
        }
    }
}

/// Polls `watched` until the task is dropped; `hup` (SIGHUP) reloads everything at once.
pub async fn run(watched: Vec<Watched>, hup: Arc<Notify>) {
    let mut states: Vec<State> = watched
        .into_iter()
        .map(|w| {
            w.stats.expect_reloads(w.target.kind());
            let loaded = w.target.loaded_at_start();
            State {
                paths: w.target.paths(),
                watched: w,
                previous: loaded.clone(),
                loaded,
            }
        })
        .collect();
    let mut every = tokio::time::interval(POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = every.tick() => false,
            () = hup.notified() => true,
        };
        for state in &mut states {
            state.poll(forced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_loaded_once_it_has_settled() {
        // (loaded, previous poll, now, forced) -> step
        #[rustfmt::skip]
        let cases = [
            ((1, 1, 1, false), Step::Unchanged),
            ((1, 1, 2, false), Step::Settling),
            ((1, 2, 2, false), Step::Load),
            ((1, 2, 3, false), Step::Settling),
            ((1, 2, 1, false), Step::Unchanged),
            ((1, 1, 1, true), Step::Load),
            ((1, 1, 2, true), Step::Load),
        ];
        for ((loaded, previous, now, forced), want) in cases {
            assert_eq!(
                step(&loaded, &previous, &now, forced),
                want,
                "{loaded} {previous} {now} {forced}"
            );
        }
    }

    #[test]
    fn a_rewritten_or_removed_file_has_a_new_signature() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "a tok\n").unwrap();
        let paths = vec![path.clone()];
        let first = version(&paths);
        assert!(first[0].is_some());
        std::fs::write(&path, "b tok\n").unwrap();
        assert_ne!(
            version(&paths),
            first,
            "same size, rewritten: ctime/mtime move"
        );
        let tmp = dir.join("tokens.new");
        std::fs::write(&tmp, "b tok\n").unwrap();
        let before = version(&paths);
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(version(&paths), before, "replaced by rename: a new inode");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(version(&paths), vec![None]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
