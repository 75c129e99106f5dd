//! Security logging of rejections, bounded under a flood.
//!
//! Each key (reason + origin/host value) gets its first [`PER_KEY`] rejections per minute logged
//! in full; the rest are counted and reported in one summary line per minute. At most
//! [`MAX_KEYS`] keys are tracked per window; rejections for further keys are only counted. So an
//! attacker sending endless distinct origins costs a bounded number of lines and bytes of memory.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

pub const PER_KEY: u32 = 10;
/// Most log lines waiting for the log writer thread (see `run::init_tracing`).
pub const LOG_QUEUE_LINES: usize = 64 * 1024;

/// The log queue's count of lines dropped because it was full.
static LOG_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Where the log queue counts its dropped lines (set once, at start).
pub fn count_dropped(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPPED.set(counter);
}

/// Log lines dropped so far because stderr could not take them (0 without the queue).
pub fn log_dropped() -> u64 {
    LOG_DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
pub const MAX_KEYS: usize = 1024;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Rate limiter state for one window.
#[derive(Debug)]
pub struct Window {
    start: Instant,
    logged: HashMap<String, u32>,
    suppressed: u64,
}

impl Window {
    pub fn new(now: Instant) -> Self {
        Self {
            start: now,
            logged: HashMap::new(),
            suppressed: 0,
        }
    }

    /// Whether to log this rejection in full. Also returns the count suppressed in the window
    /// that just ended, if `now` starts a new one.
    pub fn admit(&mut self, key: &str, now: Instant) -> (bool, Option<u64>) {
        let ended = self.roll(now);
        if let Some(n) = self.logged.get_mut(key) {
            if *n < PER_KEY {
                *n += 1;
                return (true, ended);
            }
        } else if self.logged.len() < MAX_KEYS {
            self.logged.insert(key.to_owned(), 1);
            return (true, ended);
        }
        self.suppressed += 1;
        (false, ended)
    }

    /// Starts a new window if this one is over, returning what it suppressed (if anything).
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.start) < WINDOW {
            return None;
        }
        let suppressed = std::mem::replace(self, Self::new(now)).suppressed;
        (suppressed > 0).then_some(suppressed)
    }
}

/// The process-wide limiter.
#[derive(Debug)]
pub struct RejectionLog {
    window: Mutex<Window>,
}

impl Default for RejectionLog {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window::new(Instant::now())),
        }
    }
}

impl RejectionLog {
    /// Whether this rejection should be logged in full; emits the summary for a finished window.
    pub fn admit(&self, key: &str) -> bool {
        let (log, ended) = match self.window.lock() {
            Ok(mut w) => w.admit(key, Instant::now()),
            Err(_) => (true, None),
        };
        summary(ended);
        log
    }

    /// Called periodically so a summary appears even when the flood stops.
    pub fn tick(&self) {
        let ended = self
            .window
            .lock()
            .ok()
            .and_then(|mut w| w.roll(Instant::now()));
        summary(ended);
    }
}

fn summary(suppressed: Option<u64>) {
    if let Some(n) = suppressed {
        tracing::warn!(
            suppressed = n,
            "{n} further rejections in the last minute were not logged individually (log rate limit)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_n_per_key_then_summarises() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        let logged = (0..25)
            .filter(|_| w.admit("origin http://evil.test", t0).0)
            .count();
        assert_eq!(logged, PER_KEY as usize);
        assert!(
            w.admit("origin http://other.test", t0).0,
            "another key has its own budget"
        );
        assert_eq!(w.roll(t0 + WINDOW - Duration::from_millis(1)), None);
        assert_eq!(w.roll(t0 + WINDOW), Some(25 - u64::from(PER_KEY)));
        assert!(
            w.admit("origin http://evil.test", t0 + WINDOW).0,
            "budget resets"
        );
        assert_eq!(
            w.roll(t0 + WINDOW * 2),
            None,
            "nothing suppressed, no summary"
        );
    }

    #[test]
    fn distinct_keys_are_bounded() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        let logged = (0..MAX_KEYS * 3)
            .filter(|i| w.admit(&format!("origin http://{i}.evil.test"), t0).0)
            .count();
        assert_eq!(logged, MAX_KEYS);
        assert_eq!(w.logged.len(), MAX_KEYS);
        assert_eq!(w.suppressed, (MAX_KEYS * 2) as u64);
    }
}
