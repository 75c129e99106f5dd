//! CORS: the gateway's own preflight answers and the headers added to proxied responses.
use http::{
    HeaderMap, HeaderName, Method,
    header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
        ACCESS_CONTROL_REQUEST_METHOD, HOST, ORIGIN, VARY,
    },
};

use super::{Cfg, Cfg::*, head, policy};
use crate::policy::{Accepted, Reason, cors};

const ACRPN: HeaderName = HeaderName::from_static("access-control-request-private-network");
const ACAPN: HeaderName = HeaderName::from_static("access-control-allow-private-network");

fn preflight(
    cfg: Cfg,
    host: &[u8],
    origin: &[u8],
    private_network: bool,
) -> Result<HeaderMap, Reason> {
    let mut headers = vec![
        (HOST, host),
        (ORIGIN, origin),
        (ACCESS_CONTROL_REQUEST_METHOD, b"POST".as_slice()),
    ];
    if private_network {
        headers.push((ACRPN, b"true"));
    }
    let req = head(Method::OPTIONS, "/mcp", &headers);
    assert!(cors::is_preflight(&req));
    cors::preflight(&policy(cfg), &req).map_err(|r| r.reason)
}

fn get<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `(what, cfg, Host, Origin, private network asked, expected: Ok(echoed origin) or Err)`.
type Row = (
    &'static str,
    Cfg,
    &'static [u8],
    &'static [u8],
    bool,
    Result<&'static str, Reason>,
);

#[rustfmt::skip]
const PREFLIGHTS: &[Row] = &[
    ("loopback origin", P, b"localhost:8787", b"http://localhost:3000", false, Ok("http://localhost:3000")),
    ("exact echo, case kept", P, b"localhost:8787", b"HTTP://LocalHost:3000", false, Ok("HTTP://LocalHost:3000")),
    ("configured origin", X, b"localhost:8787", b"https://app.example.com", false, Ok("https://app.example.com")),
    ("private network, allowed origin", P, b"127.0.0.1:8787", b"http://localhost:5173", true, Ok("http://localhost:5173")),
    ("strict, configured origin", S, b"localhost:8787", b"https://app.example.com", true, Ok("https://app.example.com")),
    ("disallowed origin", P, b"localhost:8787", b"http://evil.test", false, Err(Reason::Origin)),
    ("disallowed origin asking for private network", P, b"localhost:8787", b"http://evil.test", true, Err(Reason::Origin)),
    ("null origin", P, b"localhost:8787", b"null", true, Err(Reason::Origin)),
    ("strict, loopback origin not configured", S, b"localhost:8787", b"http://localhost:5173", false, Err(Reason::Origin)),
    ("rebinding Host", P, b"evil.test:8787", b"http://localhost:3000", true, Err(Reason::Host)),
];

#[test]
fn preflight_table() {
    for (what, cfg, host, origin, pna, expected) in PREFLIGHTS {
        let got = preflight(*cfg, host, origin, *pna);
        match (got, expected) {
            (Ok(headers), Ok(echo)) => {
                assert_eq!(
                    get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
                    Some(*echo),
                    "{what}"
                );
                assert_eq!(
                    headers.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().count(),
                    1,
                    "{what}"
                );
                assert_eq!(get(&headers, &VARY), Some("Origin"), "{what}");
                assert_eq!(
                    get(&headers, &ACCESS_CONTROL_ALLOW_METHODS),
                    Some("GET, POST, DELETE, OPTIONS"),
                    "{what}"
                );
                assert_eq!(
                    get(&headers, &ACCESS_CONTROL_MAX_AGE),
                    Some("600"),
                    "{what}"
                );
                let allow = get(&headers, &ACCESS_CONTROL_ALLOW_HEADERS).unwrap_or_default();
                for needed in [
                    "mcp-session-id",
                    "mcp-protocol-version",
                    "mcp-method",
                    "mcp-name",
                    "last-event-id",
                    "authorization",
                    "content-type",
                    "accept",
                ] {
                    assert!(
                        allow.split(", ").any(|h| h == needed),
                        "{what}: {needed} missing"
                    );
                }
                let expose = get(&headers, &ACCESS_CONTROL_EXPOSE_HEADERS).unwrap_or_default();
                assert!(expose.contains("mcp-session-id"), "{what}");
                assert_eq!(get(&headers, &ACAPN), pna.then_some("true"), "{what}");
            }
            (Err(reason), Err(want)) => assert_eq!(reason, *want, "{what}"),
            (got, _) => panic!("{what}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn preflight_never_allows_star() {
    for (what, cfg, host, origin, pna, _) in PREFLIGHTS {
        if let Ok(headers) = preflight(*cfg, host, origin, *pna) {
            assert_ne!(
                get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
                Some("*"),
                "{what}"
            );
        }
    }
}

/// `Access-Control-Allow-Headers` for a preflight asking for `asked` (each a header value).
fn allowed_headers(asked: &[&[u8]]) -> Vec<String> {
    let mut headers = vec![
        (HOST, b"localhost:8787".as_slice()),
        (ORIGIN, b"http://localhost:3000".as_slice()),
        (ACCESS_CONTROL_REQUEST_METHOD, b"POST".as_slice()),
    ];
    for value in asked {
        headers.push((ACCESS_CONTROL_REQUEST_HEADERS, value));
    }
    let answer = cors::preflight(&policy(P), &head(Method::OPTIONS, "/mcp", &headers))
        .expect("allowed origin");
    get(&answer, &ACCESS_CONTROL_ALLOW_HEADERS)
        .expect("one valid value")
        .split(", ")
        .map(str::to_owned)
        .collect()
}

#[test]
fn preflights_allow_the_2026_headers_and_reflect_valid_names_only() {
    let base = allowed_headers(&[]);
    assert_eq!(base.len(), 8);
    type Row<'a> = (&'a [&'a [u8]], &'a [&'a str], &'a [&'a str]);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // What a 2026-07-28 browser client asks for.
        (&[b"content-type,mcp-method,mcp-name,mcp-protocol-version,mcp-param-region"], &["mcp-param-region"], &[]),
        (&[b"Mcp-Param-Region, MCP-PARAM-Tenant_ID"], &["mcp-param-region", "mcp-param-tenant_id"], &[]),
        // User-configured headers of a client (an API key for the upstream).
        (&[b"x-api-key", b"authorization"], &["x-api-key"], &[]),
        // Not header names: left out, never echoed into the answer.
        (&[b"bad name, x-ok, a\"b, (x), , ,"], &["x-ok"], &["bad name", "a\"b", "(x)"]),
        (&[b"\xff\xfe, x-\xc3\xa9"], &[], &["\u{fffd}", "x-"]),
    ];
    for (asked, added, absent) in rows {
        let got = allowed_headers(asked);
        assert_eq!(
            &got[..base.len()],
            &base[..],
            "{asked:?}: MCP's own stay first"
        );
        let extra: Vec<&str> = got[base.len()..].iter().map(String::as_str).collect();
        assert_eq!(extra, *added, "{asked:?}");
        for a in *absent {
            assert!(
                !got.iter().any(|g| g.contains(a)),
                "{asked:?}: {a} reflected"
            );
        }
    }
    let many: Vec<u8> = (0..500)
        .map(|i| format!("x-h{i},"))
        .collect::<String>()
        .into_bytes();
    assert_eq!(
        allowed_headers(&[&many]).len(),
        base.len() + cors::MAX_REFLECTED,
        "bounded"
    );
}

type Header = (HeaderName, &'static [u8]);

#[test]
fn is_preflight_needs_options_origin_and_request_method() {
    let host = (HOST, b"localhost:8787".as_slice());
    let origin = (ORIGIN, b"http://localhost:3000".as_slice());
    let method = (ACCESS_CONTROL_REQUEST_METHOD, b"POST".as_slice());
    #[rustfmt::skip]
    let rows: &[(&str, Method, Vec<Header>, bool)] = &[
        ("full preflight", Method::OPTIONS, vec![host.clone(), origin.clone(), method.clone()], true),
        ("no Origin: plain OPTIONS for verify", Method::OPTIONS, vec![host.clone(), method.clone()], false),
        ("no request method", Method::OPTIONS, vec![host.clone(), origin.clone()], false),
        ("POST is never a preflight", Method::POST, vec![host.clone(), origin.clone(), method.clone()], false),
    ];
    for (what, m, headers, expected) in rows {
        assert_eq!(
            cors::is_preflight(&head(m.clone(), "/mcp", headers)),
            *expected,
            "{what}"
        );
    }
}

#[test]
fn options_without_origin_goes_through_verify() {
    let req = head(Method::OPTIONS, "/mcp", &[(HOST, b"evil.test:8787")]);
    assert!(!cors::is_preflight(&req));
    let rejection = policy(P).verify(&req).expect_err("Host still checked");
    assert_eq!(rejection.reason, Reason::Host);
}

#[test]
fn response_headers_with_and_without_origin() {
    let with = cors::response_headers(&Accepted::with_origin(Some(
        "http://localhost:3000".to_owned(),
    )));
    assert_eq!(
        get(&with, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://localhost:3000")
    );
    assert_eq!(get(&with, &VARY), Some("Origin"));
    assert_eq!(
        get(&with, &ACCESS_CONTROL_EXPOSE_HEADERS),
        Some("mcp-session-id, mcp-protocol-version, www-authenticate, retry-after")
    );
    assert!(
        with.get(ACCESS_CONTROL_ALLOW_METHODS).is_none(),
        "only preflights list methods"
    );
    let without = cors::response_headers(&Accepted::with_origin(None));
    assert_eq!(without.len(), 1);
    assert_eq!(get(&without, &VARY), Some("Origin"));
}

#[test]
fn response_headers_follow_verify() {
    let req = head(
        Method::POST,
        "/mcp",
        &[(HOST, b"localhost:8787"), (ORIGIN, b"http://[::1]:3000")],
    );
    let accepted = policy(P).verify(&req).expect("allowed");
    let headers = cors::response_headers(&accepted);
    assert_eq!(
        get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://[::1]:3000")
    );
}
