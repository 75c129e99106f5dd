//! Reporting denials without letting a hostile server flood the metrics or the log: a bounded
//! set of `destination` labels per server, and a rate limit on denial log lines.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

/// Distinct `destination` label values per server; the rest are counted as `other`.
pub const MAX_DESTINATIONS: usize = 32;

/// The label of destinations past the bound.
pub const OTHER: &str = "other";

/// The destinations of one server that have a label of their own. A destination keeps its
/// label once given (a series never moves into `other`), so each exported series only grows.
#[derive(Debug, Default)]
pub struct Labels {
    known: BTreeSet<String>,
}

impl Labels {
    /// Folds cumulative per-destination counts into per-label totals. New destinations get a
    /// label while there is room, busiest first.
    pub fn fold(&mut self, counts: &BTreeMap<String, u64>, max: usize) -> BTreeMap<String, u64> {
        let mut fresh: Vec<(&String, &u64)> = counts
            .iter()
            .filter(|(dest, _)| !self.known.contains(*dest))
            .collect();
        fresh.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (dest, _) in fresh {
            if self.known.len() >= max {
                break;
            }
            self.known.insert(dest.clone());
        }
        let mut out = BTreeMap::new();
        for (dest, count) in counts {
            let label = if self.known.contains(dest) {
                dest.as_str()
            } else {
                OTHER
            };
            *out.entry(label.to_owned()).or_insert(0) += count;
        }
        out
    }
}

/// What to do with one denial's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it.
    Log,
    /// Log it, and say that this many were left out since the last logged line.
    LogAfterSuppressed(u64),
    /// Leave it out (it is counted all the same).
    Suppress,
}

/// At most `burst` lines per `window`.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        let expired = self
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return Admit::Suppress;
        }
        self.used += 1;
        match std::mem::take(&mut self.suppressed) {
            0 => Admit::Log,
            n => Admit::LogAfterSuppressed(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(d, c)| ((*d).to_owned(), *c)).collect()
    }

    #[test]
    fn labels_are_bounded_busiest_first_and_kept() {
        let mut labels = Labels::default();
        let first = labels.fold(&counts(&[("a:1", 1), ("b:1", 5), ("c:1", 3)]), 2);
        assert_eq!(first, counts(&[("b:1", 5), ("c:1", 3), ("other", 1)]));
        // `a` gets busier, but `b` and `c` keep their labels: series never move.
        let second = labels.fold(
            &counts(&[("a:1", 50), ("b:1", 5), ("c:1", 4), ("d:1", 2)]),
            2,
        );
        assert_eq!(second, counts(&[("b:1", 5), ("c:1", 4), ("other", 52)]));
        assert_eq!(
            second.values().sum::<u64>(),
            61,
            "nothing is lost in the folding"
        );
    }

    #[test]
    fn log_lines_are_rate_limited_and_the_gap_is_reported() {
        let t0 = Instant::now();
        let mut budget = LogBudget::new(2, Duration::from_secs(10));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(budget.admit(at(0)), Admit::Log);
        assert_eq!(budget.admit(at(1)), Admit::Log);
        assert_eq!(budget.admit(at(2)), Admit::Suppress);
        assert_eq!(budget.admit(at(9)), Admit::Suppress);
        assert_eq!(budget.admit(at(10)), Admit::LogAfterSuppressed(2));
        assert_eq!(budget.admit(at(11)), Admit::Log);
        assert_eq!(budget.admit(at(12)), Admit::Suppress);
    }
}
