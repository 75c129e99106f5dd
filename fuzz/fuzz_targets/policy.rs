//! `policy`: the gateway's Host/Origin decision (`Policy::verify`, and `cors::preflight` for CORS
//! preflights) against the independent URL-crate reference of `src/reference.rs`.
//!
//! Input: `key value` lines (see `seeds/policy/`). Settings: `mode strict|permissive`, `port N`
//! (the listen port), `allow-host V`, `allow-origin V`. The request: `method M`, `target URI`,
//! and the headers `host V`, `origin V`, `fetch V` (Sec-Fetch-Site) and `acrm V`
//! (Access-Control-Request-Method), each repeatable.
//!
//! Properties:
//! - no panic;
//! - the gateway never allows a request the reference refuses;
//! - when every value the decision read is canonical to the URL parser, both decide alike.
//!   Non-canonical values are checked in the safety direction only: the URL parser normalises
//!   `127.1`, `0x7f.0.0.1`, `%6c`, `[0:0::1]`, `:08787`, `localhost:`, tabs and spaces into an
//!   address, where the gateway refuses every such spelling;
//! - an accepted request reports its Origin exactly as sent, and a preflight is answered only
//!   for a request the reference allows, echoing that Origin;
//! - a rejection's value and rule are sanitised: printable ASCII, the value at most 128 chars.
//!
//! Inputs whose settings the gateway refuses, or that the URL parser doesn't hold canonical
//! (`xn--a` is a valid name to the gateway but no URL's host), are skipped: nothing to compare.
#![no_main]

use std::net::SocketAddr;

use gateway_fuzz::{lines, reference};
use http::{HeaderName, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;
use mcp_gateway::policy::{MAX_VALUE_CHARS, Mode, Policy, PolicySettings, cors};

fuzz_target!(|data: &[u8]| {
    let mut strict = false;
    let mut port = 8787_u16;
    let (mut allowed_hosts, mut allowed_origins) = (Vec::new(), Vec::new());
    let mut method = Method::GET;
    let mut target = "/mcp";
    let mut headers: Vec<(HeaderName, &[u8])> = Vec::new();
    for (key, value) in lines::pairs(data) {
        let text = std::str::from_utf8(value).ok();
        let name = match key {
            b"mode" => {
                strict = value == b"strict";
                continue;
            }
            b"port" => {
                port = text.and_then(|t| t.parse().ok()).unwrap_or(port);
                continue;
            }
            b"allow-host" => {
                allowed_hosts.extend(text.map(str::to_owned));
                continue;
            }
            b"allow-origin" => {
                allowed_origins.extend(text.map(str::to_owned));
                continue;
            }
            b"method" => {
                method = Method::from_bytes(value).unwrap_or(method);
                continue;
            }
            b"target" => {
                target = text.unwrap_or(target);
                continue;
            }
            b"host" => header::HOST,
            b"origin" => header::ORIGIN,
            b"fetch" => HeaderName::from_static("sec-fetch-site"),
            b"acrm" => header::ACCESS_CONTROL_REQUEST_METHOD,
            _ => continue,
        };
        // Values hyper would refuse never reach the policy.
        if HeaderValue::from_bytes(value).is_ok() {
            headers.push((name, value));
        }
    }
    // The gateway compiles its policy with the bound port, never 0.
    if port == 0 {
        return;
    }
    let settings = PolicySettings {
        mode: if strict {
            Mode::Strict
        } else {
            Mode::Permissive
        },
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        allowed_hosts,
        allowed_origins,
    };
    let Ok(policy) = Policy::new(&settings) else {
        return;
    };
    let Some(reference) = reference::Policy::new(
        strict,
        port,
        &settings.allowed_hosts,
        &settings.allowed_origins,
    ) else {
        return;
    };

    let mut builder = Request::builder().method(method).uri(target);
    for (name, value) in &headers {
        builder = builder.header(name, *value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let values = |wanted: &HeaderName| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, value)| *value)
            .collect()
    };
    let req = reference::Request {
        hosts: values(&header::HOST),
        origins: values(&header::ORIGIN),
        fetch_sites: values(&HeaderName::from_static("sec-fetch-site")),
        target: parts
            .uri
            .authority()
            .map(|a| (parts.uri.scheme_str(), a.as_str().as_bytes())),
    };

    let expected = reference.verify(&req);
    let decided = policy.verify(&parts);
    let input = String::from_utf8_lossy(data);
    assert!(
        decided.is_err() || expected.allowed,
        "the gateway allowed what the reference refuses: {decided:?}\n{input}"
    );
    if expected.canonical {
        assert_eq!(
            decided.is_ok(),
            expected.allowed,
            "canonical values, different decisions: {decided:?}\n{input}"
        );
    }
    match &decided {
        Ok(accepted) => assert_eq!(
            accepted.origin.as_deref().map(str::as_bytes),
            req.origins.first().copied(),
            "the accepted Origin is not the one sent"
        ),
        Err(rejection) => {
            let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
            assert!(
                printable(&rejection.value)
                    && !rejection.value.contains('"')
                    && rejection.value.chars().count() <= MAX_VALUE_CHARS,
                "unsanitised rejection value: {rejection:?}"
            );
            assert!(
                printable(&rejection.rule),
                "unsanitised rule: {rejection:?}"
            );
        }
    }
    if cors::is_preflight(&parts)
        && let Ok(answer) = cors::preflight(&policy, &parts)
    {
        assert!(
            expected.allowed,
            "preflight answered for a refused request\n{input}"
        );
        assert_eq!(
            answer
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .map(HeaderValue::as_bytes),
            req.origins.first().copied(),
            "the preflight does not echo the Origin sent"
        );
    }
});
