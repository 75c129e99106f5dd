//! The Origin check and the modes (strict origins, fetch metadata, check order).
use super::{
    Case,
    Cfg::{self, *},
    FETCH_ERR, HOST_ERR, OK, ORIGIN_ERR, c, policy, request, run,
};
use crate::policy::Reason;

const PATH: &str = "/mcp";
const H: &[&[u8]] = &[b"localhost:8787"];

#[rustfmt::skip]
pub(super) fn cases() -> Vec<Case> {
    let long = format!("http://{}.test", "a".repeat(300));
    vec![
        // Benign.
        c("no Origin (non-browser client)", P, PATH, H, &[], None, OK),
        c("loopback origin on a dev port", P, PATH, H, &[b"http://localhost:3000"], None, OK),
        c("127.0.0.1 origin", P, PATH, H, &[b"http://127.0.0.1:5173"], None, OK),
        c("[::1] origin", P, PATH, H, &[b"http://[::1]:8080"], None, OK),
        c("https loopback origin, default port", P, PATH, H, &[b"https://localhost"], None, OK),
        c("mixed-case scheme and host", P, PATH, H, &[b"HTTP://LocalHost:3000"], None, OK),
        c("explicit default port :80", P, PATH, H, &[b"http://localhost:80"], None, OK),
        c("the gateway's own origin", P, PATH, H, &[b"http://localhost:8787"], None, OK),
        c("configured exact origin", X, PATH, H, &[b"https://app.example.com"], None, OK),
        c("configured origin, mixed case", X, PATH, H, &[b"HTTPS://APP.Example.com"], None, OK),
        c("configured origin, explicit :443", X, PATH, H, &[b"https://app.example.com:443"], None, OK),
        c("port wildcard pattern", X, PATH, H, &[b"http://devbox.test:1234"], None, OK),
        c("port wildcard matches the default port", X, PATH, H, &[b"http://devbox.test"], None, OK),
        c("configured origins keep loopback in permissive", X, PATH, H, &[b"http://127.0.0.1:3000"], None, OK),
        // Not allowed.
        c("attacker origin", P, PATH, H, &[b"http://evil.test"], None, ORIGIN_ERR),
        c("unconfigured remote origin", P, PATH, H, &[b"https://app.example.com"], None, ORIGIN_ERR),
        c("lookalike localhost.evil.test", P, PATH, H, &[b"http://localhost.evil.test"], None, ORIGIN_ERR),
        c("lookalike 127.0.0.1.evil.test", P, PATH, H, &[b"http://127.0.0.1.evil.test:8787"], None, ORIGIN_ERR),
        c("configured origin as a prefix", X, PATH, H, &[b"https://app.example.com.evil.test"], None, ORIGIN_ERR),
        c("configured origin, other scheme", X, PATH, H, &[b"http://app.example.com"], None, ORIGIN_ERR),
        c("configured origin, other port", X, PATH, H, &[b"https://app.example.com:8443"], None, ORIGIN_ERR),
        c("port wildcard does not widen the scheme", X, PATH, H, &[b"https://devbox.test:1234"], None, ORIGIN_ERR),
        c("unspecified 0.0.0.0", P, PATH, H, &[b"http://0.0.0.0:3000"], None, ORIGIN_ERR),
        c("unspecified [::]", P, PATH, H, &[b"http://[::]:3000"], None, ORIGIN_ERR),
        c("other loopback 127.0.0.2", P, PATH, H, &[b"http://127.0.0.2:3000"], None, ORIGIN_ERR),
        c("IPv4-mapped loopback", P, PATH, H, &[b"http://[::ffff:127.0.0.1]:3000"], None, ORIGIN_ERR),
        c("decimal IPv4", P, PATH, H, &[b"http://2130706433"], None, ORIGIN_ERR),
        c("trailing dot", P, PATH, H, &[b"http://localhost.:3000"], None, ORIGIN_ERR),
        // Malformed.
        c("null", P, PATH, H, &[b"null"], None, ORIGIN_ERR),
        c("NULL upper case", P, PATH, H, &[b"NULL"], None, ORIGIN_ERR),
        c("empty Origin", P, PATH, H, &[b""], None, ORIGIN_ERR),
        c("wildcard Origin", P, PATH, H, &[b"*"], None, ORIGIN_ERR),
        c("no scheme", P, PATH, H, &[b"localhost:3000"], None, ORIGIN_ERR),
        c("ftp scheme", P, PATH, H, &[b"ftp://localhost"], None, ORIGIN_ERR),
        c("file scheme", P, PATH, H, &[b"file://"], None, ORIGIN_ERR),
        c("chrome-extension scheme", P, PATH, H, &[b"chrome-extension://abcdef"], None, ORIGIN_ERR),
        c("path `/`", P, PATH, H, &[b"http://localhost:3000/"], None, ORIGIN_ERR),
        c("path", P, PATH, H, &[b"http://localhost:3000/mcp"], None, ORIGIN_ERR),
        c("query", P, PATH, H, &[b"http://localhost:3000?x=1"], None, ORIGIN_ERR),
        c("fragment", P, PATH, H, &[b"http://localhost:3000#f"], None, ORIGIN_ERR),
        c("userinfo", P, PATH, H, &[b"http://user@localhost:3000"], None, ORIGIN_ERR),
        c("userinfo hiding the real host", P, PATH, H, &[b"http://localhost@evil.test"], None, ORIGIN_ERR),
        c("empty port", P, PATH, H, &[b"http://localhost:"], None, ORIGIN_ERR),
        c("port above 65535", P, PATH, H, &[b"http://localhost:99999"], None, ORIGIN_ERR),
        c("port wildcard is for patterns only", P, PATH, H, &[b"http://localhost:*"], None, ORIGIN_ERR),
        c("IPv6 without brackets", P, PATH, H, &[b"http://::1:3000"], None, ORIGIN_ERR),
        c("two identical Origin headers", P, PATH, H, &[b"http://localhost:3000", b"http://localhost:3000"], None, ORIGIN_ERR),
        c("two different Origin headers", P, PATH, H, &[b"http://localhost:3000", b"http://evil.test"], None, ORIGIN_ERR),
        c("space-joined origin list", P, PATH, H, &[b"http://localhost:3000 http://evil.test"], None, ORIGIN_ERR),
        c("Cyrillic o lookalike", P, PATH, H, &["http://l\u{43e}calhost:3000".as_bytes()], None, ORIGIN_ERR),
        c("raw 0xff byte", P, PATH, H, &[b"http://localhost\xff:3000"], None, ORIGIN_ERR),
        c("tab inside", P, PATH, H, &[b"http://localhost\t:3000"], None, ORIGIN_ERR),
        c("over-long", P, PATH, H, &[long.as_bytes()], None, ORIGIN_ERR),
    ]
}

#[rustfmt::skip]
pub(super) fn mode_cases() -> Vec<Case> {
    vec![
        // Strict: only configured origins.
        c("strict, configured origin", S, PATH, H, &[b"https://app.example.com"], None, OK),
        c("strict, configured loopback origin", S, PATH, H, &[b"http://localhost:3000"], None, OK),
        c("strict, loopback origin on another port", S, PATH, H, &[b"http://localhost:3001"], None, ORIGIN_ERR),
        c("strict, other loopback name", S, PATH, H, &[b"http://127.0.0.1:3000"], None, ORIGIN_ERR),
        c("strict, attacker origin", S, PATH, H, &[b"http://evil.test"], None, ORIGIN_ERR),
        c("strict, configured origin vouches for cross-site", S, PATH, H, &[b"https://app.example.com"], Some("cross-site"), OK),
        // Strict: fetch metadata without Origin.
        c("strict, no Origin, no fetch metadata", S, PATH, H, &[], None, OK),
        c("strict, no Origin, same-origin", S, PATH, H, &[], Some("same-origin"), OK),
        c("strict, no Origin, none (user navigation)", S, PATH, H, &[], Some("none"), OK),
        c("GET strict, no Origin, cross-site", S, "/", H, &[], Some("cross-site"), FETCH_ERR),
        c("strict, no Origin, cross-site", S, PATH, H, &[], Some("cross-site"), FETCH_ERR),
        c("strict, no Origin, same-site", S, PATH, H, &[], Some("same-site"), FETCH_ERR),
        c("strict, no Origin, upper-case CROSS-SITE", S, PATH, H, &[], Some("CROSS-SITE"), FETCH_ERR),
        c("strict, no Origin, unknown value fails closed", S, PATH, H, &[], Some("bogus"), FETCH_ERR),
        c("strict, no Origin, empty value fails closed", S, PATH, H, &[], Some(""), FETCH_ERR),
        // Permissive does not consult fetch metadata.
        c("permissive, no Origin, cross-site", P, PATH, H, &[], Some("cross-site"), OK),
        c("permissive, no Origin, same-site", P, PATH, H, &[], Some("same-site"), OK),
        // Order: Host, then Origin, then fetch metadata.
        c("bad Host wins over a good Origin", P, PATH, &[b"evil.test:8787"], &[b"http://localhost:3000"], None, HOST_ERR),
        c("bad Host wins over a bad Origin", P, PATH, &[b"evil.test:8787"], &[b"http://evil.test"], None, HOST_ERR),
        c("strict, bad Host wins over fetch metadata", S, PATH, &[b"evil.test:8787"], &[], Some("cross-site"), HOST_ERR),
        c("strict, bad Origin wins over fetch metadata", S, PATH, H, &[b"http://evil.test"], Some("cross-site"), ORIGIN_ERR),
        c("permissive, bad Origin with same-origin metadata", P, PATH, H, &[b"http://evil.test"], Some("same-origin"), ORIGIN_ERR),
    ]
}

#[test]
fn origin_table() {
    run(&cases());
}

#[test]
fn mode_table() {
    run(&mode_cases());
}

fn verify(cfg: Cfg, origin: &[u8]) -> Result<crate::policy::Accepted, crate::policy::Rejection> {
    policy(cfg).verify(&request(&c("one", cfg, PATH, H, &[origin], None, OK)))
}

#[test]
fn accepted_origin_is_the_exact_header() {
    let accepted = verify(P, b"HTTP://LocalHost:3000").expect("allowed");
    assert_eq!(accepted.origin.as_deref(), Some("HTTP://LocalHost:3000"));
    assert!(
        accepted
            .rule()
            .contains("`http://localhost:3000` is a loopback origin"),
        "{}",
        accepted.rule()
    );
    let accepted = verify(X, b"https://app.example.com:443").expect("allowed");
    assert_eq!(
        accepted.origin.as_deref(),
        Some("https://app.example.com:443")
    );
    assert!(
        accepted
            .rule()
            .contains("matches allowed origin `https://app.example.com`"),
        "{}",
        accepted.rule()
    );
    let no_origin = c("none", P, PATH, H, &[], None, OK);
    assert_eq!(
        policy(P)
            .verify(&request(&no_origin))
            .expect("allowed")
            .origin,
        None
    );
}

#[test]
fn origin_rejection_is_normalised_and_named() {
    let rejection = verify(S, b"HTTP://Evil.Test:80").expect_err("rejected");
    assert_eq!(rejection.reason, Reason::Origin);
    assert_eq!(rejection.value, "http://evil.test");
    assert_eq!(
        rejection.rule,
        "Origin `http://evil.test` is not an allowed origin (allowed: https://app.example.com, http://localhost:3000)"
    );
    assert!(rejection.message().contains("origin"));
}

#[test]
fn hostile_origin_is_escaped_and_cut() {
    let rejection = verify(P, b"null\t").expect_err("rejected");
    assert_eq!(rejection.value, "null\\x09");
    let long = format!("http://{}\u{e9}", "a".repeat(400));
    let rejection = verify(P, long.as_bytes()).expect_err("rejected");
    assert_eq!(rejection.value.len(), crate::policy::MAX_VALUE_CHARS);
    assert!(rejection.value.ends_with("..."), "{}", rejection.value);
    assert!(rejection.rule.contains("too long"), "{}", rejection.rule);
}

#[test]
fn fetch_metadata_rejection() {
    let case = c("x", S, PATH, H, &[], Some("cross-site"), FETCH_ERR);
    let rejection = policy(S).verify(&request(&case)).expect_err("rejected");
    assert_eq!(rejection.reason, Reason::FetchMetadata);
    assert_eq!(rejection.value, "cross-site");
    assert!(
        rejection.message().contains("fetch_metadata"),
        "{}",
        rejection.message()
    );
}
