//! Connection slots: what happens at `max_connections`, so slow clients cannot starve others.
//!
//! Slow clients (slowloris) hold connections by sending a request head a byte at a time. Were
//! the cap enforced by no longer accepting, a legitimate client would wait in the listen
//! backlog behind them until their header timeouts expire. Closing the oldest to make room for
//! each newcomer is no better against clients that reconnect at once: the gateway then spends
//! its time accepting and closing, and the legitimate client still queues behind them.
//!
//! So connections are admitted in two tiers:
//! - **served** (at most `max_connections`): handed to the HTTP server;
//! - **pending** (at most [`PENDING_PER_SLOT`] × `max_connections`): accepted at the cap but
//!   only watched, at the cost of a socket and a small task, until their first request head
//!   (or TLS ClientHello) is complete. A legitimate client's arrives at once; a slow client's
//!   never does, and it is closed at the header timeout (or, when the pending tier is full,
//!   when it is the oldest there).
//!
//! A pending connection whose request is complete is promoted, closing the served connection
//! that has waited longest **on its client**: for a request head (its first, or the next on a
//! keep-alive connection), or for the body of a request not yet forwarded. Nothing the upstream
//! has seen is ever cut: a connection whose request was forwarded is busy until its response
//! ends. When every served connection is busy, the newcomer gets a 503.
//!
//! Why not shorten the header timeout under pressure (nginx, Envoy's overload manager): slow
//! clients would still hold every slot for that shorter time, and legitimate clients queue
//! behind them; here they are served at once. File descriptors stay bounded by both tiers.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::sync::Notify;

/// Pending connections held per served slot, at most.
pub const PENDING_PER_SLOT: usize = 8;

/// Where a served connection is, as far as shedding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting on the client since this tick (microseconds since the table's start): for a
    /// request head, or for a request body not yet forwarded.
    Waiting(u64),
    /// A request of it is upstream, or its response is still being sent.
    Busy,
    /// Closed to make room; it must not forward anything.
    Evicted,
}

/// Which served connection to close so a promoted one fits: the one waiting on its client the
/// longest (the first listed wins a tie). `None` when none waits: every one is busy upstream.
pub fn victim<K: Copy>(phases: impl IntoIterator<Item = (K, Phase)>) -> Option<K> {
    let mut oldest: Option<(K, u64)> = None;
    for (key, phase) in phases {
        if let Phase::Waiting(since) = phase
            && oldest.is_none_or(|(_, t)| since < t)
        {
            oldest = Some((key, since));
        }
    }
    oldest.map(|(key, _)| key)
}

/// Where a newly accepted connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Under the cap: served at once.
    Served,
    /// At the cap: pending until its first request is complete; `evict_oldest` when the
    /// pending tier is full too (the oldest pending connection is closed for it).
    Pending { evict_oldest: bool },
}

/// The tier of a new connection, given how many are served and pending now.
pub fn tier(served: usize, pending: usize, cap: usize) -> Tier {
    if served < cap {
        Tier::Served
    } else {
        Tier::Pending {
            evict_oldest: pending >= cap.saturating_mul(PENDING_PER_SLOT),
        }
    }
}

// A phase in one atomic word: 0 busy, MAX evicted, else waiting since tick `word - 1`.
const BUSY: u64 = 0;
const EVICTED: u64 = u64::MAX;

fn decode(word: u64) -> Phase {
    match word {
        BUSY => Phase::Busy,
        EVICTED => Phase::Evicted,
        since => Phase::Waiting(since - 1),
    }
}

/// One served connection's slot: its phase, and how it is told to close.
#[derive(Debug)]
pub struct Slot {
    phase: AtomicU64,
    evict: Notify,
    start: Instant,
}

impl Slot {
    fn new(start: Instant) -> Self {
        let slot = Self {
            phase: AtomicU64::new(BUSY),
            evict: Notify::new(),
            start,
        };
        slot.waiting();
        slot
    }

    /// A slot outside any table (a connection refused at the cap, which forwards nothing).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self::new(Instant::now()))
    }

    pub fn phase(&self) -> Phase {
        decode(self.phase.load(Ordering::Acquire))
    }

    /// Waiting on the client from now on (a request head arrived, or a response ended).
    pub fn waiting(&self) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let now = micros.min(EVICTED - 2) + 1;
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w != EVICTED).then_some(now)
            });
    }

    /// About to forward a request: busy until [`Slot::waiting`]. False when the connection was
    /// evicted: then nothing may be forwarded.
    #[must_use]
    pub fn forwarding(&self) -> bool {
        self.phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w != EVICTED).then_some(BUSY)
            })
            .is_ok()
    }

    /// Evicts the connection if it still waits as it did when `seen`. False when it moved on.
    fn evict(&self, seen: Phase) -> bool {
        let Phase::Waiting(since) = seen else {
            return false;
        };
        let ok = self
            .phase
            .compare_exchange(since + 1, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.evict.notify_one();
        }
        ok
    }

    /// Resolves once the connection is evicted: its task then closes it.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// What [`Slots::admit`] decided for a new connection.
#[derive(Debug)]
pub enum Admission {
    Served(Lease),
    /// `evicted`: the oldest pending connection was closed for it.
    Pending {
        pending: Pending,
        evicted: bool,
    },
}

/// The connections of one server.
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    start: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    served: HashMap<u64, Arc<Slot>>,
    /// By id, which is arrival order: the first is the oldest.
    pending: BTreeMap<u64, Arc<Notify>>,
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            start: Instant::now(),
            table: Mutex::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection: served under the cap, else pending.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut table = self.table();
        let id = table.next;
        table.next += 1;
        match tier(table.served.len(), table.pending.len(), self.cap) {
            Tier::Served => Admission::Served(self.serve(&mut table, id)),
            Tier::Pending { evict_oldest } => {
                let evicted = evict_oldest
                    && table
                        .pending
                        .pop_first()
                        .inspect(|(_, oldest)| oldest.notify_one())
                        .is_some();
                let closed = Arc::new(Notify::new());
                table.pending.insert(id, closed.clone());
                Admission::Pending {
                    pending: Pending {
                        id,
                        closed,
                        slots: self.clone(),
                    },
                    evicted,
                }
            }
        }
    }

    fn serve(self: &Arc<Self>, table: &mut Table, id: u64) -> Lease {
        let slot = Arc::new(Slot::new(self.start));
        table.served.insert(id, slot.clone());
        Lease {
            id,
            slot,
            slots: self.clone(),
        }
    }

    /// Served connections now.
    pub fn served(&self) -> usize {
        self.table().served.len()
    }

    /// Pending connections now.
    pub fn pending(&self) -> usize {
        self.table().pending.len()
    }
}

/// A served connection's hold on its slot, released when the connection ends.
#[derive(Debug)]
pub struct Lease {
    id: u64,
    slot: Arc<Slot>,
    slots: Arc<Slots>,
}

impl Lease {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // An evicted connection's entry is already gone (and ids are never reused).
        self.slots.table().served.remove(&self.id);
    }
}

/// Why a pending connection is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum NotServed {
    /// Every served connection is busy upstream: none can make room.
    AllBusy,
    /// It was closed for a newer pending connection meanwhile.
    Evicted,
}

/// A pending connection's place, given up when it is dropped.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    closed: Arc<Notify>,
    slots: Arc<Slots>,
}

impl Pending {
    /// Resolves once the connection is closed to make room for a newer pending one.
    pub async fn evicted(&self) {
        self.closed.notified().await;
    }

    /// Its first request is complete: a served slot, and whether a waiting connection was
    /// evicted for it (when at the cap).
    pub fn promote(self) -> Result<(Lease, bool), NotServed> {
        let slots = self.slots.clone();
        let mut table = slots.table();
        // Evicted meanwhile (its task has not noticed yet): it must not be served.
        if table.pending.remove(&self.id).is_none() {
            return Err(NotServed::Evicted);
        }
        let mut evicted = false;
        if table.served.len() >= slots.cap {
            // A waiter may turn busy between the scan and the eviction: then look again.
            for _ in 0..3 {
                let seen = victim(table.served.iter().map(|(id, s)| {
                    let phase = s.phase();
                    ((*id, phase), phase)
                }));
                let Some((id, phase)) = seen else { break };
                if table.served[&id].evict(phase) {
                    table.served.remove(&id);
                    evicted = true;
                    break;
                }
            }
            if !evicted {
                return Err(NotServed::AllBusy);
            }
        }
        Ok((slots.serve(&mut table, self.id), evicted))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.slots.table().pending.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use Phase::{Busy, Evicted, Waiting};

    use super::*;

    #[test]
    fn the_victim_is_the_longest_waiter() {
        let cases: &[(&str, &[Phase], Option<usize>)] = &[
            ("nothing served", &[], None),
            ("every connection busy upstream", &[Busy, Busy, Busy], None),
            ("only evicted ones", &[Evicted, Busy], None),
            (
                "one waiter among busy ones",
                &[Busy, Waiting(9), Busy],
                Some(1),
            ),
            (
                "the oldest waiter",
                &[Waiting(5), Waiting(2), Waiting(7)],
                Some(1),
            ),
            (
                "a tie: the first listed",
                &[Waiting(3), Waiting(3)],
                Some(0),
            ),
            (
                "tick zero is a real time",
                &[Waiting(1), Waiting(0)],
                Some(1),
            ),
            (
                "evicted ones are not chosen again",
                &[Evicted, Waiting(50)],
                Some(1),
            ),
            // Slow clients started long ago; a legitimate one just sent its request.
            (
                "slowloris before the legitimate client",
                &[Waiting(1_000), Busy, Waiting(9_000_000), Waiting(1_001)],
                Some(0),
            ),
            (
                "the latest possible tick",
                &[Waiting(u64::MAX - 2)],
                Some(0),
            ),
        ];
        for (name, phases, want) in cases {
            let got = victim(phases.iter().copied().enumerate());
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn the_tier_of_a_new_connection() {
        let p = PENDING_PER_SLOT;
        let cases = [
            ("empty", 0, 0, 4, Tier::Served),
            ("under the cap", 3, 0, 4, Tier::Served),
            ("pending ones do not take slots", 3, 30, 4, Tier::Served),
            (
                "at the cap",
                4,
                0,
                4,
                Tier::Pending {
                    evict_oldest: false,
                },
            ),
            (
                "pending tier almost full",
                4,
                4 * p - 1,
                4,
                Tier::Pending {
                    evict_oldest: false,
                },
            ),
            (
                "pending tier full",
                4,
                4 * p,
                4,
                Tier::Pending { evict_oldest: true },
            ),
            (
                "a huge cap does not overflow",
                usize::MAX,
                0,
                usize::MAX,
                Tier::Pending {
                    evict_oldest: false,
                },
            ),
        ];
        for (name, served, pending, cap, want) in cases {
            assert_eq!(tier(served, pending, cap), want, "{name}");
        }
    }

    #[test]
    fn phases_round_trip_through_the_word() {
        assert_eq!(decode(BUSY), Busy);
        assert_eq!(decode(EVICTED), Evicted);
        assert_eq!(decode(1), Waiting(0));
        assert_eq!(decode(EVICTED - 1), Waiting(u64::MAX - 2));
    }

    fn served(admission: Admission) -> Lease {
        match admission {
            Admission::Served(lease) => lease,
            Admission::Pending { .. } => panic!("pending under the cap"),
        }
    }

    fn pending(admission: Admission) -> (Pending, bool) {
        match admission {
            Admission::Pending { pending, evicted } => (pending, evicted),
            Admission::Served(_) => panic!("served over the cap"),
        }
    }

    #[tokio::test]
    async fn a_complete_request_takes_the_longest_waiters_slot() {
        let slots = Slots::new(2);
        let old = served(slots.admit());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let new = served(slots.admit());
        let (newcomer, evicted) = pending(slots.admit());
        assert!(!evicted);
        assert_eq!((slots.served(), slots.pending()), (2, 1));
        let (lease, evicted) = newcomer.promote().expect("a waiter could make room");
        assert!(evicted);
        assert_eq!(old.slot().phase(), Evicted);
        assert!(matches!(new.slot().phase(), Waiting(_)));
        assert!(matches!(lease.slot().phase(), Waiting(_)));
        assert_eq!((slots.served(), slots.pending()), (2, 0));
        // The evicted connection's task hears it, and may no longer forward.
        tokio::time::timeout(std::time::Duration::from_secs(5), old.slot().evicted())
            .await
            .expect("the evicted connection was not told");
        assert!(!old.slot().forwarding());
        old.slot().waiting();
        assert_eq!(old.slot().phase(), Evicted, "an evicted slot stays evicted");
        // Its late release does not free the newcomer's slot.
        drop(old);
        assert_eq!(slots.served(), 2);
    }

    #[test]
    fn busy_connections_are_never_evicted() {
        let slots = Slots::new(2);
        let leases: Vec<_> = (0..2).map(|_| served(slots.admit())).collect();
        for lease in &leases {
            assert!(lease.slot().forwarding());
        }
        let (newcomer, _) = pending(slots.admit());
        assert_eq!(newcomer.promote().err(), Some(NotServed::AllBusy));
        for lease in &leases {
            assert_eq!(lease.slot().phase(), Busy);
        }
        assert_eq!(
            slots.pending(),
            0,
            "a refused newcomer leaves the pending tier"
        );
        // A response ends: that connection waits again, and may now make room.
        leases[1].slot().waiting();
        let (newcomer, _) = pending(slots.admit());
        assert!(newcomer.promote().is_ok());
        assert_eq!(leases[1].slot().phase(), Evicted);
        assert_eq!(leases[0].slot().phase(), Busy);
    }

    #[tokio::test]
    async fn the_pending_tier_is_bounded_oldest_out() {
        let slots = Slots::new(1);
        let _served = served(slots.admit());
        let held: Vec<_> = (0..PENDING_PER_SLOT)
            .map(|_| {
                let (p, evicted) = pending(slots.admit());
                assert!(!evicted);
                p
            })
            .collect();
        assert_eq!(slots.pending(), PENDING_PER_SLOT);
        let (newest, evicted) = pending(slots.admit());
        assert!(evicted, "the pending tier grew past its bound");
        assert_eq!(slots.pending(), PENDING_PER_SLOT);
        // The oldest was told, and can no longer be promoted.
        let mut held = held.into_iter();
        let oldest = held.next().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), oldest.evicted())
            .await
            .expect("the oldest pending connection was not told");
        assert_eq!(oldest.promote().err(), Some(NotServed::Evicted));
        // The others stay, and leave when dropped.
        drop(held);
        assert_eq!(slots.pending(), 1);
        drop(newest);
        assert_eq!(slots.pending(), 0);
    }

    #[test]
    fn a_waiter_that_turned_busy_is_not_evicted() {
        let slot = Slot::new(Instant::now());
        let seen = slot.phase();
        assert!(slot.forwarding());
        assert!(!slot.evict(seen), "evicted a connection that had forwarded");
        assert_eq!(slot.phase(), Busy);
        assert!(!slot.evict(Busy));
    }
}
