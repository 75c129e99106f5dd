//! Who a client certificate names, and whether `--allow-client-name` admits it (pure).
//!
//! A certificate's names are its subjectAltName URIs (SPIFFE IDs: `spiffe://example.org/agent`)
//! and DNS names; the subject's common name counts only when there is no SAN at all (as RFC 6125
//! has clients do for servers). The client's credential name is the first allowed name, URIs
//! first; with no list, simply the first name.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::{extensions::GeneralName, prelude::X509Certificate};

/// What the gateway reads from a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// URIs, then DNS names, in certificate order (or the common name when there is no SAN).
    pub names: Vec<String>,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
}

fn time(t: i64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(t).ok()?))
}

/// Parses a DER certificate.
pub fn info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertInfo {
        names: names(&cert),
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
    })
}

fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    let san: Vec<GeneralName<'_>> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        // A malformed or duplicated SAN extension names nobody.
        Ok(None) | Err(_) => Vec::new(),
    };
    if san.is_empty() {
        return cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .collect();
    }
    let uris = san.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let dns = san.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    uris.chain(dns).map(str::to_owned).collect()
}

/// Whether one name of a certificate is `allowed`: URIs exactly, DNS names without regard to
/// case (as DNS compares them).
fn matches(name: &str, allowed: &str) -> bool {
    if name.contains("://") || allowed.contains("://") {
        name == allowed
    } else {
        name.eq_ignore_ascii_case(allowed)
    }
}

/// The client's credential name: its first name on `allowed` (any name when `allowed` is
/// empty), or `None` when the list admits none of its names.
pub fn identity(names: &[String], allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        return names.first().cloned();
    }
    names
        .iter()
        .find(|n| allowed.iter().any(|a| matches(n, a)))
        .cloned()
}

/// Checks an `--allow-client-name` entry: a DNS name or a URI, printable, no spaces.
pub fn check_allowed(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}`: write a DNS name (agent.example.com) or a URI (spiffe://example.org/agent)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn cert(cn: &str, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    fn dns(d: &str) -> SanType {
        SanType::DnsName(d.try_into().unwrap())
    }

    #[test]
    fn names_come_from_the_san_uris_first_and_the_cn_only_without_a_san() {
        let cases: Vec<(Vec<u8>, &[&str])> = vec![
            (
                cert(
                    "ignored",
                    vec![dns("agent.example.com"), uri("spiffe://example.org/agent")],
                ),
                &["spiffe://example.org/agent", "agent.example.com"],
            ),
            (cert("laptop", vec![]), &["laptop"]),
            (
                cert("cn", vec![SanType::IpAddress([127, 0, 0, 1].into())]),
                &[],
            ),
        ];
        for (der, want) in cases {
            assert_eq!(info(&der).unwrap().names, want);
        }
        assert!(info(b"not a certificate").is_err());
    }

    #[test]
    fn the_identity_is_the_first_allowed_name() {
        let names: Vec<String> = ["spiffe://example.org/agent", "Agent.Example.com"]
            .map(str::to_owned)
            .to_vec();
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        #[rustfmt::skip]
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], Some("spiffe://example.org/agent")),
            (&["agent.example.com"], Some("Agent.Example.com")),
            (&["spiffe://example.org/agent"], Some("spiffe://example.org/agent")),
            (&["SPIFFE://example.org/agent"], None),
            (&["spiffe://example.org/agent/x"], None),
            (&["spiffe://example.org/"], None),
            (&["other.example.com", "spiffe://example.org/agent"], Some("spiffe://example.org/agent")),
            (&["example.com"], None),
            (&["*.example.com"], None),
        ];
        for (allowed, want) in cases {
            assert_eq!(
                identity(&names, &s(allowed)).as_deref(),
                *want,
                "{allowed:?}"
            );
        }
        assert_eq!(identity(&[], &[]), None);
    }

    #[test]
    fn allowed_names_are_printable_without_spaces() {
        for ok in ["agent.example.com", "spiffe://example.org/ns/prod/sa/agent"] {
            assert!(check_allowed(ok).is_ok(), "{ok}");
        }
        for bad in ["", "agent example", "agent\n", "agent\u{e9}"] {
            assert!(check_allowed(bad).is_err(), "{bad:?}");
        }
    }
}
