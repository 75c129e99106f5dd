//! Table tests for the policy. Each row names the case, the settings, the request head, and the
//! expected decision (`Ok(())` or the rejection `Reason`).
mod config;
mod cors;
mod hosts;
mod origins;
mod sanitize;

use http::{
    HeaderName, HeaderValue, Method, Request,
    header::{HOST, ORIGIN},
    request::Parts,
};

use super::{Mode, Policy, PolicySettings, Reason, Rejection};

/// The settings a row runs under.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cfg {
    /// Permissive, listen 127.0.0.1:8787, nothing configured.
    P,
    /// Permissive, listen 127.0.0.1:80.
    P80,
    /// Permissive, listen [::1]:8787.
    V6,
    /// Permissive with extra hosts and origins (see `settings`).
    X,
    /// Strict with two configured origins.
    S,
}

pub(super) fn settings(cfg: Cfg) -> PolicySettings {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (mode, listen, hosts, origins) = match cfg {
        Cfg::P => (Mode::Permissive, "127.0.0.1:8787", vec![], vec![]),
        Cfg::P80 => (Mode::Permissive, "127.0.0.1:80", vec![], vec![]),
        Cfg::V6 => (Mode::Permissive, "[::1]:8787", vec![], vec![]),
        Cfg::X => (
            Mode::Permissive,
            "127.0.0.1:8787",
            strings(&["mcp.example.test", "Box.LAN:9000", "[fd00::1]"]),
            strings(&["https://app.example.com", "http://devbox.test:*"]),
        ),
        Cfg::S => (
            Mode::Strict,
            "127.0.0.1:8787",
            vec![],
            strings(&["https://app.example.com", "http://localhost:3000"]),
        ),
    };
    PolicySettings {
        mode,
        listen: listen.parse().expect("test listen address"),
        allowed_hosts: hosts,
        allowed_origins: origins,
    }
}

pub(super) fn policy(cfg: Cfg) -> Policy {
    Policy::new(&settings(cfg)).expect("test settings are valid")
}

/// A request head; header values are raw bytes so hostile (non-UTF-8) values can be sent.
pub(super) fn head(method: Method, uri: &str, headers: &[(HeaderName, &[u8])]) -> Parts {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("test request")
        .into_parts();
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value).expect("http accepts the test value");
        parts.headers.append(name.clone(), value);
    }
    parts
}

/// One row of the request tables.
pub(super) struct Case {
    pub what: &'static str,
    pub cfg: Cfg,
    /// Request target: origin-form (`/mcp`) or absolute-form.
    pub uri: &'static str,
    /// Zero, one or two `Host` headers.
    pub hosts: Vec<Vec<u8>>,
    /// Zero, one or two `Origin` headers.
    pub origins: Vec<Vec<u8>>,
    pub fetch: Option<&'static str>,
    pub expect: Result<(), Reason>,
}

/// Row shorthand: `c(what, cfg, uri, hosts, origins, fetch, expect)`.
pub(super) fn c(
    what: &'static str,
    cfg: Cfg,
    uri: &'static str,
    hosts: &[&[u8]],
    origins: &[&[u8]],
    fetch: Option<&'static str>,
    expect: Result<(), Reason>,
) -> Case {
    Case {
        what,
        cfg,
        uri,
        hosts: hosts.iter().map(|h| h.to_vec()).collect(),
        origins: origins.iter().map(|o| o.to_vec()).collect(),
        fetch,
        expect,
    }
}

pub(super) const OK: Result<(), Reason> = Ok(());
pub(super) const HOST_ERR: Result<(), Reason> = Err(Reason::Host);
pub(super) const ORIGIN_ERR: Result<(), Reason> = Err(Reason::Origin);
pub(super) const FETCH_ERR: Result<(), Reason> = Err(Reason::FetchMetadata);

pub(super) fn request(case: &Case) -> Parts {
    let mut headers: Vec<(HeaderName, &[u8])> = Vec::new();
    headers.extend(case.hosts.iter().map(|h| (HOST, h.as_slice())));
    headers.extend(case.origins.iter().map(|o| (ORIGIN, o.as_slice())));
    if let Some(fetch) = case.fetch {
        headers.push((HeaderName::from_static("sec-fetch-site"), fetch.as_bytes()));
    }
    let method = if case.what.starts_with("GET") {
        Method::GET
    } else {
        Method::POST
    };
    head(method, case.uri, &headers)
}

/// Every rejection, whatever the input, carries only safe text.
pub(super) fn assert_safe(what: &str, rejection: &Rejection) {
    let safe = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"');
    assert!(
        safe(&rejection.value),
        "{what}: value {:?}",
        rejection.value
    );
    assert!(
        rejection.value.len() <= super::MAX_VALUE_CHARS,
        "{what}: value too long"
    );
    assert!(safe(&rejection.rule), "{what}: rule {:?}", rejection.rule);
    assert!(safe(&rejection.message()), "{what}: message");
}

/// Runs a table and reports every mismatch at once.
pub(super) fn run(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let got = policy(case.cfg).verify(&request(case));
        if let Err(rejection) = &got {
            assert_safe(case.what, rejection);
        }
        let got = got.map(|_| ()).map_err(|r| r.reason);
        if got != case.expect {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.what, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_request_tables_have_at_least_80_cases() {
    let total = hosts::cases().len() + origins::cases().len() + origins::mode_cases().len();
    assert!(total >= 80, "only {total} cases");
}
