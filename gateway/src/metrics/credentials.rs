//! The `credential` label: which credential (bearer token name, or client certificate name) a
//! request came with. Names come from the operator's token file and CA, but rotation adds new
//! ones over a long process life, so each server labels at most [`MAX_LABELS`] distinct names;
//! later ones count as `other`. Labels are printable ASCII, at most
//! [`CREDENTIAL_LABEL_LEN`] bytes (what the pinned counter key holds).
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use gateway_common::CREDENTIAL_LABEL_LEN;

use crate::policy::sanitize;

/// Distinct credential labels per server.
pub const MAX_LABELS: usize = 64;

/// The label of credentials past [`MAX_LABELS`].
pub const OTHER: &str = "other";

/// One server's credential labels, first come.
#[derive(Debug)]
pub struct CredentialLabels {
    known: Mutex<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl Default for CredentialLabels {
    fn default() -> Self {
        Self {
            known: Mutex::new(HashSet::new()),
            other: OTHER.into(),
        }
    }
}

/// `name` as a label: escaped to printable ASCII, cut to fit the counter key.
fn clean(name: &str) -> String {
    let mut label = sanitize(name.as_bytes());
    if label.len() > CREDENTIAL_LABEL_LEN {
        // Printable ASCII only: any byte index is a char boundary.
        label.truncate(CREDENTIAL_LABEL_LEN - 3);
        label.push_str("...");
    }
    label
}

impl CredentialLabels {
    /// The label for credential `name`.
    pub fn label(&self, name: &str) -> Arc<str> {
        let label = clean(name);
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = known.get(label.as_str()) {
            return l.clone();
        }
        if known.len() >= MAX_LABELS || label == OTHER {
            return self.other.clone();
        }
        let label: Arc<str> = label.into();
        known.insert(label.clone());
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_clean_bounded_and_first_come() {
        let labels = CredentialLabels::default();
        let long = format!("spiffe://example.org/{}", "a".repeat(100));
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("ci", "ci"),
            ("spiffe://example.org/agent", "spiffe://example.org/agent"),
            ("bad\"} x", "bad\\x22} x"),
            (&long, &format!("{}...", &long[..CREDENTIAL_LABEL_LEN - 3])),
            ("other", "other"),
        ];
        for (name, want) in cases {
            let got = labels.label(name);
            assert_eq!(&*got, *want);
            assert!(got.len() <= CREDENTIAL_LABEL_LEN);
        }
        for i in 0..200 {
            labels.label(&format!("rotated-{i}"));
        }
        assert_eq!(
            &*labels.label("ci"),
            "ci",
            "an admitted name keeps its label"
        );
        assert_eq!(&*labels.label("rotated-199"), OTHER);
        assert_eq!(labels.known.lock().unwrap().len(), MAX_LABELS);
    }
}
