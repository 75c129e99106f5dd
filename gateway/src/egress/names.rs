//! Names in egress rules, as the gateway last resolved them. A name's previous answer stays
//! allowed for one more refresh, so a rotating answer (a CDN) does not cut a connection the
//! server opened a moment before the answer changed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// What one name resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The latest answer.
    pub now: BTreeSet<IpAddr>,
    /// The answer before it, still allowed until the next refresh.
    pub before: BTreeSet<IpAddr>,
}

impl Resolved {
    /// Takes a fresh answer; the current one is kept one more round.
    pub fn update(&mut self, fresh: BTreeSet<IpAddr>) {
        self.before = std::mem::replace(&mut self.now, fresh);
    }

    /// Everything allowed now.
    pub fn allowed(&self) -> BTreeSet<IpAddr> {
        self.now.union(&self.before).copied().collect()
    }
}

/// Every name of one server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names(pub BTreeMap<String, Resolved>);

impl Names {
    /// Applies one round of lookups. A failed lookup (`Err`) keeps what the name had: it is
    /// retried next round, and the server keeps what it was allowed.
    pub fn refresh<E>(
        &mut self,
        answers: impl IntoIterator<Item = (String, Result<BTreeSet<IpAddr>, E>)>,
    ) {
        for (name, answer) in answers {
            if let Ok(fresh) = answer {
                self.0.entry(name).or_default().update(fresh);
            }
        }
    }

    /// Name -> every address allowed for it now.
    pub fn allowed(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.0
            .iter()
            .map(|(name, r)| (name.clone(), r.allowed()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn an_old_answer_stays_one_more_round() {
        let mut names = Names::default();
        let round = |names: &mut Names, answer: Result<&[&str], ()>| {
            names.refresh([("api.example".to_owned(), answer.map(set))]);
            names.allowed()["api.example"].clone()
        };
        assert_eq!(round(&mut names, Ok(&["192.0.2.1"])), set(&["192.0.2.1"]));
        assert_eq!(
            round(&mut names, Ok(&["192.0.2.2"])),
            set(&["192.0.2.1", "192.0.2.2"]),
            "the new address at once, the old one still"
        );
        assert_eq!(
            round(&mut names, Err(())),
            set(&["192.0.2.1", "192.0.2.2"]),
            "a failed lookup changes nothing"
        );
        assert_eq!(
            round(&mut names, Ok(&["192.0.2.2"])),
            set(&["192.0.2.2"]),
            "gone after one more round"
        );
        assert_eq!(round(&mut names, Ok(&[])), set(&["192.0.2.2"]));
        assert_eq!(
            round(&mut names, Ok(&[])),
            set(&[]),
            "a name that resolves to nothing"
        );
    }

    #[test]
    fn a_name_that_never_resolved_allows_nothing() {
        let mut names = Names::default();
        names.refresh([(
            "gone.example".to_owned(),
            Err::<BTreeSet<IpAddr>, _>("NXDOMAIN"),
        )]);
        assert!(names.allowed().is_empty());
    }
}
