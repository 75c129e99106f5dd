//! Settings validation: bad `allowed_hosts` / `allowed_origins` entries are errors naming the
//! value and why.
use crate::policy::{Mode, Policy, PolicyError, PolicySettings};

fn build(mode: Mode, hosts: &[&str], origins: &[&str]) -> Result<Policy, PolicyError> {
    Policy::new(&PolicySettings {
        mode,
        listen: "127.0.0.1:8787".parse().expect("listen"),
        allowed_hosts: hosts.iter().map(|s| (*s).to_owned()).collect(),
        allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// `(entry, Some(part of the why) for an error, None when valid)`.
#[rustfmt::skip]
const HOSTS: &[(&str, Option<&str>)] = &[
    ("example.test", None),
    ("Example.TEST:9000", None),
    ("my_box.lan", None),
    ("192.168.1.5", None),
    ("[fd00::1]:9000", None),
    ("*", Some("wildcards")),
    ("*.example.com", Some("wildcards")),
    ("example.com:*", Some("wildcards")),
    ("", Some("empty")),
    ("localhost:", Some("empty")),
    ("localhost:abc", Some("port")),
    ("localhost:70000", Some("port")),
    ("localhost:0", Some("port")),
    ("::1", Some("brackets")),
    ("[::1", Some("closing")),
    ("user@example.test", Some("userinfo")),
    ("http://example.test", Some("path")),
    ("example.test/mcp", Some("path")),
    ("0.0.0.0", Some("unspecified")),
    ("[::]:8787", Some("unspecified")),
    ("example.test.", Some("trailing dot")),
    ("exa mple.test", Some("whitespace")),
    (" example.test", Some("whitespace")),
    ("h\u{e9}.test", Some("non-ASCII")),
    ("2130706433", Some("dotted-decimal")),
    ("0x7f.1", Some("dotted-decimal")),
    ("a..b", Some("label")),
];

#[rustfmt::skip]
const ORIGINS: &[(&str, Option<&str>)] = &[
    ("https://app.example.com", None),
    ("http://localhost:*", None),
    ("HTTP://LOCALHOST:3000", None),
    ("http://[::1]:*", None),
    ("https://app.example.com:8443", None),
    ("*", Some("wildcard")),
    ("null", Some("null")),
    ("https://*.example.com", Some("wildcards")),
    ("http://*:*", Some("wildcards")),
    ("https://app.example.com/", Some("path")),
    ("https://app.example.com/app", Some("path")),
    ("https://user@app.example.com", Some("userinfo")),
    ("app.example.com", Some("scheme://host")),
    ("ftp://app.example.com", Some("http or https")),
    ("http://", Some("empty")),
    ("http://host:", Some("empty")),
    ("http://host:**", Some("wildcards")),
    ("http://host:99999", Some("port")),
    ("http://host?x=1", Some("query")),
    ("http://host#top", Some("fragment")),
    ("http://[::1", Some("closing")),
    ("http://host.", Some("trailing dot")),
    ("http://::1:3000", Some("brackets")),
    ("http://h\u{e9}.test", Some("non-ASCII")),
];

#[test]
fn allowed_hosts_validation() {
    for (value, expected) in HOSTS {
        match (build(Mode::Permissive, &[value], &[]), expected) {
            (Ok(_), None) => {}
            (Err(PolicyError::Host { value: got, why }), Some(part)) => {
                assert_eq!(&got, value);
                assert!(why.contains(part), "{value:?}: why {why:?} lacks {part:?}");
                let text = PolicyError::Host { value: got, why }.to_string();
                assert!(text.starts_with("allowed_hosts: `"), "{text}");
            }
            (got, _) => panic!("{value:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn allowed_origins_validation() {
    for mode in [Mode::Permissive, Mode::Strict] {
        for (value, expected) in ORIGINS {
            match (build(mode, &[], &[value]), expected) {
                (Ok(_), None) => {}
                (Err(PolicyError::Origin { value: got, why }), Some(part)) => {
                    assert_eq!(&got, value);
                    assert!(why.contains(part), "{value:?}: why {why:?} lacks {part:?}");
                }
                (got, _) => panic!("{value:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn the_first_bad_entry_is_named() {
    let err = build(Mode::Strict, &["ok.test", "*"], &[]).expect_err("wildcard");
    assert_eq!(
        err.to_string(),
        "allowed_hosts: `*` is not a valid host: wildcards are not allowed; list each host"
    );
}
