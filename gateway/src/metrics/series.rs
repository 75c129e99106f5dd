//! The exported `mcp_gateway_rejections_total` series, bounded and monotonic.
//!
//! - **Bounded**: at most `budget` (server, credential, reason, origin) series are ever
//!   exported, first come (the highest counts first within one scrape, so the map's busiest
//!   keys win at start-up); every further origin adds to its server, credential and reason's
//!   `origin="other"` series. At most `budget + servers × credentials × reasons` series, with
//!   credentials bounded per server (`metrics::credentials`) and absent for most reasons.
//! - **Sticky**: an admitted series stays for the life of the process, so no count moves from
//!   one series to another and none goes backwards.
//! - **Monotonic**: each series accumulates the increases of its keys between scrapes. A key the
//!   LRU map evicted and re-created restarts at a small value; that is read as a reset and only
//!   the new count is added, never subtracted.
use std::collections::{BTreeMap, HashMap, HashSet};

use gateway_common::{CounterKey, Reason};

use crate::ebpf::counters::Counter;

/// The `origin` label of the overflow series.
pub const OTHER: &str = "other";

/// (server, credential label, reason, origin label).
type Key = (String, String, Reason, String);

/// Exported state. Memory: `budget` labels, one `u64` per key of the map (itself bounded).
#[derive(Debug)]
pub struct Series {
    budget: usize,
    admitted: HashSet<Key>,
    last: HashMap<CounterKey, u64>,
    totals: BTreeMap<Key, u64>,
}

impl Series {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            admitted: HashSet::new(),
            last: HashMap::new(),
            totals: BTreeMap::new(),
        }
    }

    /// Folds a fresh read of every counter in, each with its `server` label.
    pub fn update(&mut self, mut snapshot: Vec<(String, Counter)>) {
        // Admission order: highest counts first, then by key for determinism.
        snapshot.sort_by(|(_, a), (_, b)| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.key.data.cmp(&b.key.data))
                .then_with(|| a.key.port.cmp(&b.key.port))
        });
        let mut seen = HashMap::with_capacity(snapshot.len());
        for (server, counter) in snapshot {
            // Unknown reasons (a newer writer) are not exported: the reason label stays bounded.
            let Some(reason) = counter.reason() else {
                continue;
            };
            let delta = match self.last.get(&counter.key) {
                Some(&before) if counter.count >= before => counter.count - before,
                // Evicted and re-created (or the map was replaced): a reset.
                _ => counter.count,
            };
            seen.insert(counter.key, counter.count);
            let key = (server, counter.credential(), reason, counter.label());
            let series = if self.admitted.contains(&key) {
                key
            } else if key.3 != OTHER && self.admitted.len() < self.budget {
                self.admitted.insert(key.clone());
                key
            } else {
                (key.0, key.1, reason, OTHER.to_owned())
            };
            let total = self.totals.entry(series).or_insert(0);
            *total = total.saturating_add(delta);
        }
        // Keys gone from the map are forgotten: bounded by the map's size.
        self.last = seen;
    }

    /// `(server, credential, reason, origin label, count)`, sorted in that order.
    pub fn totals(&self) -> impl Iterator<Item = (&str, &str, Reason, &str, u64)> {
        self.totals
            .iter()
            .map(|((server, credential, reason, label), count)| {
                (
                    server.as_str(),
                    credential.as_str(),
                    *reason,
                    label.as_str(),
                    *count,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(reason: Reason, origin: &str, count: u64) -> (String, Counter) {
        (
            "s".to_owned(),
            Counter {
                key: CounterKey::text(reason, 8787, origin.as_bytes()),
                count,
            },
        )
    }

    fn totals(series: &Series) -> Vec<(&'static str, String, u64)> {
        series
            .totals()
            .map(|(_, _, r, l, c)| (r.name(), l.to_owned(), c))
            .collect()
    }

    #[test]
    fn budget_sends_later_origins_to_other_and_keeps_admitted_ones() {
        let mut s = Series::new(2);
        s.update(vec![
            http(Reason::Origin, "http://a.test", 5),
            http(Reason::Origin, "http://b.test", 9),
            http(Reason::Origin, "http://c.test", 1),
        ]);
        assert_eq!(
            totals(&s),
            [
                ("origin", "http://a.test".into(), 5),
                ("origin", "http://b.test".into(), 9),
                ("origin", "other".into(), 1),
            ],
            "the two busiest keys are admitted"
        );
        s.update(vec![
            http(Reason::Origin, "http://a.test", 6),
            http(Reason::Origin, "http://b.test", 9),
            http(Reason::Origin, "http://c.test", 100),
            http(Reason::Host, "evil.test:80", 3),
        ]);
        assert_eq!(
            totals(&s),
            [
                ("origin", "http://a.test".into(), 6),
                ("origin", "http://b.test".into(), 9),
                ("origin", "other".into(), 100),
                ("host", "other".into(), 3),
            ],
            "c.test stays in other although it is now the busiest: series are sticky"
        );
    }

    #[test]
    fn an_evicted_key_never_makes_a_series_go_backwards() {
        let mut s = Series::new(10);
        s.update(vec![http(Reason::Auth, "http://a.test", 50)]);
        // Evicted by the LRU map, then counted again from 1.
        s.update(vec![]);
        s.update(vec![http(Reason::Auth, "http://a.test", 1)]);
        assert_eq!(totals(&s), [("auth", "http://a.test".into(), 51)]);
        // A lower value without a gap (map replaced): a reset, not a decrease.
        s.update(vec![http(Reason::Auth, "http://a.test", 0)]);
        s.update(vec![http(Reason::Auth, "http://a.test", 2)]);
        assert_eq!(totals(&s), [("auth", "http://a.test".into(), 53)]);
    }

    #[test]
    fn servers_keep_their_own_series_and_overflow() {
        let key = |port: u16, origin: &str| CounterKey::text(Reason::Host, port, origin.as_bytes());
        let mut s = Series::new(1);
        s.update(vec![
            (
                "a".into(),
                Counter {
                    key: key(1, "x"),
                    count: 5,
                },
            ),
            (
                "b".into(),
                Counter {
                    key: key(2, "x"),
                    count: 3,
                },
            ),
            (
                "b".into(),
                Counter {
                    key: key(2, "y"),
                    count: 1,
                },
            ),
        ]);
        let got: Vec<(String, String, u64)> = s
            .totals()
            .map(|(srv, _, _, l, c)| (srv.to_owned(), l.to_owned(), c))
            .collect();
        assert_eq!(
            got,
            [("a".into(), "x".into(), 5), ("b".into(), "other".into(), 4),],
            "the same origin at another server is another series; past the budget each server \
             has its own overflow"
        );
    }

    #[test]
    fn each_credential_has_its_own_series_and_its_own_overflow() {
        let mut s = Series::new(2);
        let with = |credential: &str, origin: &str, count| {
            let (server, mut c) = http(Reason::Tool, origin, count);
            c.key = c.key.with_credential(credential.as_bytes());
            (server, c)
        };
        s.update(vec![
            with("ci", "http://a.test", 5),
            with("alice", "http://a.test", 3),
            http(Reason::Tool, "http://a.test", 1),
            with("ci", "http://b.test", 2),
        ]);
        let got: Vec<(String, String, u64)> = s
            .totals()
            .map(|(_, cred, _, l, c)| (cred.to_owned(), l.to_owned(), c))
            .collect();
        assert_eq!(
            got,
            [
                ("".into(), "other".into(), 1),
                ("ci".into(), "http://a.test".into(), 5),
                ("ci".into(), "other".into(), 2),
                ("alice".into(), "http://a.test".into(), 3),
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
            "the budget (2) admits the two busiest; the rest overflow per credential"
        );
    }

    #[test]
    fn an_origin_spelled_other_never_takes_a_budget_slot() {
        let mut s = Series::new(1);
        s.update(vec![http(Reason::Host, "other", 4)]);
        s.update(vec![
            http(Reason::Host, "other", 4),
            http(Reason::Host, "x", 1),
        ]);
        assert_eq!(
            totals(&s),
            [("host", "other".into(), 4), ("host", "x".into(), 1)]
        );
    }
}
