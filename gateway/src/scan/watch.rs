//! `run --scan-interval`: the scan in the background, its result in /metrics, and one log line
//! for each exposed MCP server when it appears.
use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    ScanArgs,
    report::{Report, Row},
    verdict::Verdict,
};

/// What the last scans found, for /metrics.
#[derive(Debug, Default)]
pub struct ScanStats {
    /// Sockets per verdict of the last successful scan: protected, exposed, not-mcp, unknown.
    pub servers: [AtomicU64; 4],
    /// Unix time of the last successful scan (0: none yet).
    pub last_success: AtomicU64,
    pub failures: AtomicU64,
}

/// The verdicts in the order of [`ScanStats::servers`].
pub const VERDICTS: [Verdict; 4] = [
    Verdict::Protected,
    Verdict::Exposed,
    Verdict::NotMcp,
    Verdict::Unknown,
];

impl ScanStats {
    fn record(&self, report: &Report) {
        let s = &report.summary;
        for (slot, n) in self
            .servers
            .iter()
            .zip([s.protected, s.exposed, s.not_mcp, s.unknown])
        {
            slot.store(n as u64, Ordering::Relaxed);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success.store(now, Ordering::Relaxed);
    }
}

/// An exposed server, as the log names it: its socket.
pub type Key = (String, u16);

/// The exposed servers of `rows` that `before` did not have, and the new set. A server that
/// goes away and comes back is logged again.
pub fn newly_exposed<'a>(before: &BTreeSet<Key>, rows: &'a [Row]) -> (Vec<&'a Row>, BTreeSet<Key>) {
    let now: BTreeSet<Key> = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Exposed)
        .map(|r| (r.address.clone(), r.port))
        .collect();
    let new = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Exposed && !before.contains(&(r.address.clone(), r.port)))
        .collect();
    (new, now)
}

/// Starts the scanning thread: a scan now, then every `every`. It scans with the `scan`
/// defaults and leaves out this process's own listeners (probing them would count rejections
/// of its own).
pub fn spawn(every: Duration, pin_dir: PathBuf, stats: Arc<ScanStats>) -> std::io::Result<()> {
    let args = ScanArgs {
        json: false,
        ports: None,
        concurrency: 16,
        timeout: Duration::from_secs(2),
        probe_bound_addresses: false,
        config_out: None,
        pin_dir,
        deep: false,
        unix: false,
    };
    std::thread::Builder::new()
        .name("scan".into())
        .spawn(move || {
            let mut exposed = BTreeSet::new();
            loop {
                match super::scan_with(&args, Some(std::process::id())) {
                    Ok(report) => {
                        stats.record(&report);
                        let (new, now) = newly_exposed(&exposed, &report.rows);
                        for row in new {
                            let reasons: Vec<&str> =
                                row.reasons.iter().map(|r| r.text.as_str()).collect();
                            tracing::warn!(
                                address = %row.address,
                                port = row.port,
                                pid = row.owner.as_ref().map(|o| o.pid),
                                cmdline = row.owner.as_ref().map(|o| o.cmdline.as_str()),
                                reasons = %reasons.join("; "),
                                "scan: an exposed MCP server appeared on this host; `mcp-gateway scan` shows each fix"
                            );
                        }
                        exposed = now;
                    }
                    Err(e) => {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %format!("{e:#}"), "scan: the background scan failed; mcp_gateway_scan_last_success_timestamp_seconds stays at the last success");
                    }
                }
                std::thread::sleep(every);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{identify::Replay, verdict::test_mcp_facts};

    fn row(ip: &str, port: u16, host: Replay) -> Row {
        let facts = test_mcp_facts(ip, port, host);
        Row::new(facts, None, 0, vec![])
    }

    #[test]
    fn each_exposed_server_is_logged_when_it_appears() {
        let refused = || Replay::Refused { status: 421 };
        let first = [
            row("0.0.0.0", 8000, refused()),
            row("127.0.0.1", 8001, refused()),
        ];
        let (new, seen) = newly_exposed(&BTreeSet::new(), &first);
        assert_eq!(new.iter().map(|r| r.port).collect::<Vec<_>>(), [8000]);
        let (new, seen) = newly_exposed(&seen, &first);
        assert!(new.is_empty(), "already logged");
        let second = [
            row("0.0.0.0", 8000, refused()),
            row("127.0.0.1", 8001, Replay::Accepted),
        ];
        let (new, seen) = newly_exposed(&seen, &second);
        assert_eq!(new.iter().map(|r| r.port).collect::<Vec<_>>(), [8001]);
        let (new, seen) = newly_exposed(&seen, &[]);
        assert!(new.is_empty());
        assert!(seen.is_empty());
        let (new, _) = newly_exposed(&seen, &first);
        assert_eq!(new.len(), 1, "gone and back: logged again");
    }

    #[test]
    fn stats_hold_the_last_scan() {
        let stats = ScanStats::default();
        let report = Report::new(
            0,
            Duration::ZERO,
            std::path::Path::new("/p"),
            None,
            vec![
                row("0.0.0.0", 8000, Replay::Accepted),
                row("127.0.0.1", 1, Replay::Refused { status: 403 }),
            ],
        );
        stats.record(&report);
        let counts: Vec<u64> = stats
            .servers
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 1, 0, 0]);
        assert!(stats.last_success.load(Ordering::Relaxed) > 0);
    }
}
