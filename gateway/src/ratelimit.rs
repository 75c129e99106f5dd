//! Rate limiting: a token bucket per client key (the credential name when auth is on, else the
//! peer address and Origin), `--rate-limit N/s|N/min` with `--rate-burst N`.
//!
//! Memory is bounded whatever an attacker sends: at most `cap` keys are tracked. Under the cap
//! no bucket is ever dropped, so a client is never refused because of another client's traffic.
//! At the cap, buckets that are full again go first (forgetting one changes nothing: a new
//! bucket starts full); only if none is, the least recently seen eighth goes, sorted once for
//! many insertions.
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Keys tracked per server by default.
pub const DEFAULT_CAP: usize = 10_000;

/// A configured rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: requests a client may send at once.
    pub burst: f64,
}

impl Rate {
    /// Parses `20/s`, `20/sec`, `600/min`, `600/m` (a positive number per second or minute);
    /// the burst defaults to that number.
    pub fn parse(text: &str, burst: Option<u32>) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a rate; write N/s or N/min with N a positive number, e.g. 20/s"
            )
        };
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        let per_second = match unit.trim() {
            "s" | "sec" | "second" => n,
            "m" | "min" | "minute" => n / 60.0,
            _ => return Err(bad()),
        };
        let burst = match burst {
            Some(0) => return Err("the burst must be at least 1".into()),
            Some(b) => f64::from(b),
            None => n.ceil().max(1.0),
        };
        Ok(Self { per_second, burst })
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }
}

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Allow,
    /// Over the limit: the next token comes in `retry_after`.
    Deny {
        retry_after: Duration,
    },
}

/// The buckets of one server.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    cap: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate, cap: usize) -> Self {
        Self {
            rate,
            cap: cap.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a token for `key` at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            return take(bucket, self.rate, now);
        }
        if buckets.len() >= self.cap {
            self.make_room(&mut buckets, now);
        }
        let mut bucket = Bucket {
            tokens: self.rate.burst,
            last: now,
        };
        let decision = take(&mut bucket, self.rate, now);
        buckets.insert(key.to_owned(), bucket);
        decision
    }

    fn make_room(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let rate = self.rate;
        buckets.retain(|_, b| b.refilled(rate, now) < rate.burst);
        if buckets.len() < self.cap {
            return;
        }
        // Every tracked client is active: drop exactly the least recently seen eighth (at least
        // one), ties broken arbitrarily.
        let mut by_age: Vec<(Instant, &String)> =
            buckets.iter().map(|(k, b)| (b.last, k)).collect();
        let count = (by_age.len() / 8).max(1);
        by_age.select_nth_unstable_by_key(count - 1, |(last, _)| *last);
        let oldest: Vec<String> = by_age[..count].iter().map(|(_, k)| (*k).clone()).collect();
        for key in oldest {
            buckets.remove(&key);
        }
    }
}

fn take(bucket: &mut Bucket, rate: Rate, now: Instant) -> Decision {
    let tokens = bucket.refilled(rate, now);
    bucket.last = now;
    if tokens >= 1.0 {
        bucket.tokens = tokens - 1.0;
        Decision::Allow
    } else {
        bucket.tokens = tokens;
        let wait = (1.0 - tokens) / rate.per_second;
        Decision::Deny {
            retry_after: Duration::from_secs_f64(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (text, burst) → (per second, burst), or a piece of the error.
    type Want = Result<(f64, f64), &'static str>;

    #[test]
    fn rates_parse_or_say_why() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<u32>, Want)] = &[
            ("20/s", None, Ok((20.0, 20.0))),
            ("20/sec", Some(5), Ok((20.0, 5.0))),
            ("600/min", None, Ok((10.0, 600.0))),
            ("1/m", None, Ok((1.0 / 60.0, 1.0))),
            ("0.5/s", None, Ok((0.5, 1.0))),
            ("20", None, Err("not a rate")),
            ("0/s", None, Err("not a rate")),
            ("-1/s", None, Err("not a rate")),
            ("inf/s", None, Err("not a rate")),
            ("20/h", None, Err("not a rate")),
            ("x/s", None, Err("not a rate")),
            ("20/s", Some(0), Err("at least 1")),
        ];
        for (text, burst, want) in rows {
            match (Rate::parse(text, *burst), want) {
                (Ok(r), Ok((per, b))) => {
                    assert!(
                        (r.per_second - per).abs() < 1e-9 && r.burst == *b,
                        "{text}: {r:?}"
                    );
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let l = Limiter::new(rate(10.0, 3.0), 100);
        let t0 = Instant::now();
        let decisions: Vec<bool> = (0..5)
            .map(|_| l.check("a", t0) == Decision::Allow)
            .collect();
        assert_eq!(
            decisions,
            [true, true, true, false, false],
            "the burst, then nothing"
        );
        match l.check("a", t0) {
            Decision::Deny { retry_after } => {
                assert!(
                    (retry_after.as_secs_f64() - 0.1).abs() < 1e-6,
                    "{retry_after:?}"
                );
            }
            Decision::Allow => panic!("over the limit"),
        }
        assert_eq!(
            l.check("a", t0 + Duration::from_millis(100)),
            Decision::Allow
        );
        assert_ne!(
            l.check("a", t0 + Duration::from_millis(150)),
            Decision::Allow
        );
        // Idle long enough: the bucket is full again, never fuller.
        let later = t0 + Duration::from_secs(60);
        let allowed = (0..10)
            .filter(|_| l.check("a", later) == Decision::Allow)
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn a_flooding_client_never_costs_a_polite_one_a_request() {
        let l = Limiter::new(rate(5.0, 5.0), 100);
        let t0 = Instant::now();
        let mut polite_refused = 0;
        let mut flood_allowed = 0;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..10 {
                if l.check("10.0.0.66 http://flood.test", now) == Decision::Allow {
                    flood_allowed += 1;
                }
            }
            if ms % 250 == 0 && l.check("10.0.0.7 http://polite.test", now) != Decision::Allow {
                polite_refused += 1;
            }
        }
        assert_eq!(polite_refused, 0);
        assert!(
            flood_allowed <= 5 + 50 + 1,
            "{flood_allowed} in 10 s at 5/s"
        );
    }

    #[test]
    fn keys_are_bounded_and_only_evicted_at_the_cap() {
        let l = Limiter::new(rate(1.0, 2.0), 64);
        let t0 = Instant::now();
        // 64 active clients, each one token down: all kept.
        for i in 0..64 {
            assert_eq!(l.check(&format!("k{i}"), t0), Decision::Allow);
        }
        assert_eq!(l.len(), 64);
        // A 65th: nobody is full, so the least recently seen eighth goes.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(l.check("k64", t1), Decision::Allow);
        assert!(l.len() <= 64 && l.len() >= 56, "{}", l.len());
        // An attacker sending endless new keys stays within the cap.
        for i in 0..10_000 {
            l.check(&format!("attacker{i}"), t1 + Duration::from_micros(i));
        }
        assert!(l.len() <= 64);
    }

    #[test]
    fn full_buckets_go_first() {
        let l = Limiter::new(rate(1.0, 1.0), 2);
        let t0 = Instant::now();
        l.check("idle", t0);
        l.check("busy", t0 + Duration::from_secs(5));
        l.check("busy", t0 + Duration::from_secs(5));
        // At the cap: `idle` refilled long ago and goes; `busy` (empty) stays and stays limited.
        l.check("new", t0 + Duration::from_secs(5));
        assert_ne!(
            l.check("busy", t0 + Duration::from_secs(5)),
            Decision::Allow
        );
        assert_eq!(l.len(), 2);
    }
}
