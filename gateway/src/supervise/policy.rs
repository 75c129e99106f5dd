//! When a supervised server is started again, and after how long: the restart policy and an
//! exponential backoff that forgets a crash once the server has run long enough.
use std::time::Duration;

use serde::Deserialize;

/// `restart` of a `[[server]]` table with a `command`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Again after it exits with an error or a signal, not after a clean exit (status 0).
    #[default]
    OnFailure,
    /// Again after any exit.
    Always,
    /// Never: an exit is final (`mcp_gateway_server_up` stays 0).
    Never,
}

impl Restart {
    /// Whether an exit (`clean`: status 0) is followed by a start.
    pub fn restarts(self, clean: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => !clean,
            Self::Never => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OnFailure => "on-failure",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// The first wait before a start again, and the longest.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));
/// A run this long counts as healthy: the next crash starts the backoff from the beginning.
pub const STABLE: Duration = Duration::from_secs(60);

/// The delays between a crash and the next start: doubling from [`BACKOFF`]'s first to its
/// last, back to the first after a stable run.
#[derive(Debug, Default)]
pub struct Backoff {
    crashes: u32,
}

impl Backoff {
    /// The wait before the next start, after a run that lasted `ran`.
    pub fn after(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE {
            self.crashes = 0;
        }
        let (first, max) = BACKOFF;
        let delay = first.saturating_mul(1u32 << self.crashes.min(16));
        self.crashes = self.crashes.saturating_add(1);
        delay.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_decides_on_the_exit() {
        for (policy, clean, restarts) in [
            (Restart::OnFailure, false, true),
            (Restart::OnFailure, true, false),
            (Restart::Always, true, true),
            (Restart::Always, false, true),
            (Restart::Never, false, false),
            (Restart::Never, true, false),
        ] {
            assert_eq!(policy.restarts(clean), restarts, "{policy:?} clean={clean}");
        }
    }

    #[test]
    fn the_backoff_doubles_to_a_minute_and_forgets_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..10).map(|_| b.after(quick).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000
            ]
        );
        // Many more crashes: never past the maximum, never an overflow.
        for _ in 0..100 {
            assert!(b.after(quick) <= BACKOFF.1);
        }
        assert_eq!(b.after(STABLE), BACKOFF.0, "a stable run resets it");
        assert_eq!(b.after(quick), BACKOFF.0 * 2);
    }
}
