//! The Host check: loopback names on the listen port, configured hosts, and hostile forms.
use super::{Case, Cfg::*, HOST_ERR, OK, c, policy, request, run};

const PATH: &str = "/mcp";

#[rustfmt::skip]
pub(super) fn cases() -> Vec<Case> {
    let long_name = format!("{}.test:8787", "a".repeat(300));
    let long_port = format!("localhost:{}", "8".repeat(300));
    vec![
        // Benign: what local clients send.
        c("localhost on the listen port", P, PATH, &[b"localhost:8787"], &[], None, OK),
        c("127.0.0.1 on the listen port", P, PATH, &[b"127.0.0.1:8787"], &[], None, OK),
        c("[::1] on the listen port", P, PATH, &[b"[::1]:8787"], &[], None, OK),
        c("names are case-insensitive", P, PATH, &[b"LOCALHOST:8787"], &[], None, OK),
        c("mixed case name", P, PATH, &[b"LocalHost:8787"], &[], None, OK),
        c("uncompressed IPv6 loopback is the same address", P, PATH, &[b"[0:0:0:0:0:0:0:1]:8787"], &[], None, OK),
        c("GET is checked the same way", P, "/", &[b"localhost:8787"], &[], None, OK),
        c("listen on [::1] still allows all loopback names", V6, PATH, &[b"localhost:8787"], &[], None, OK),
        c("listen on [::1], IPv6 Host", V6, PATH, &[b"[::1]:8787"], &[], None, OK),
        c("port-less Host means 80: allowed when listening on 80", P80, PATH, &[b"localhost"], &[], None, OK),
        c("explicit :80 when listening on 80", P80, PATH, &[b"127.0.0.1:80"], &[], None, OK),
        // Configured hosts.
        c("configured host, no port in config means listen port", X, PATH, &[b"mcp.example.test:8787"], &[], None, OK),
        c("configured host, mixed case", X, PATH, &[b"MCP.Example.TEST:8787"], &[], None, OK),
        c("configured host with its own port", X, PATH, &[b"box.lan:9000"], &[], None, OK),
        c("configured IPv6 host", X, PATH, &[b"[fd00::1]:8787"], &[], None, OK),
        c("configured host on another port", X, PATH, &[b"mcp.example.test:9000"], &[], None, HOST_ERR),
        c("configured host with port, on listen port", X, PATH, &[b"box.lan:8787"], &[], None, HOST_ERR),
        c("subdomain of a configured host", X, PATH, &[b"sub.mcp.example.test:8787"], &[], None, HOST_ERR),
        c("configured host is not allowed as a suffix", X, PATH, &[b"evilmcp.example.test:8787"], &[], None, HOST_ERR),
        // Wrong name or port.
        c("port-less Host means 80, not the listen port", P, PATH, &[b"localhost"], &[], None, HOST_ERR),
        c("port-less IPv6 Host means 80", P, PATH, &[b"[::1]"], &[], None, HOST_ERR),
        c("another port", P, PATH, &[b"localhost:8788"], &[], None, HOST_ERR),
        c("attacker name (DNS rebinding)", P, PATH, &[b"evil.test:8787"], &[], None, HOST_ERR),
        c("lookalike localhost.evil.test", P, PATH, &[b"localhost.evil.test:8787"], &[], None, HOST_ERR),
        c("lookalike 127.0.0.1.evil.test", P, PATH, &[b"127.0.0.1.evil.test:8787"], &[], None, HOST_ERR),
        c("lookalike prefix evillocalhost", P, PATH, &[b"evillocalhost:8787"], &[], None, HOST_ERR),
        c("trailing dot", P, PATH, &[b"localhost.:8787"], &[], None, HOST_ERR),
        c("userinfo", P, PATH, &[b"user@localhost:8787"], &[], None, HOST_ERR),
        c("userinfo with password", P, PATH, &[b"user:pw@localhost:8787"], &[], None, HOST_ERR),
        c("userinfo hiding the real host", P, PATH, &[b"localhost:8787@evil.test"], &[], None, HOST_ERR),
        c("unspecified IPv4", P, PATH, &[b"0.0.0.0:8787"], &[], None, HOST_ERR),
        c("unspecified IPv6", P, PATH, &[b"[::]:8787"], &[], None, HOST_ERR),
        c("LAN address", P, PATH, &[b"192.168.1.10:8787"], &[], None, HOST_ERR),
        c("other loopback 127.0.0.2", P, PATH, &[b"127.0.0.2:8787"], &[], None, HOST_ERR),
        c("decimal IPv4 2130706433", P, PATH, &[b"2130706433:8787"], &[], None, HOST_ERR),
        c("hex shorthand 0x7f.1", P, PATH, &[b"0x7f.1:8787"], &[], None, HOST_ERR),
        c("shorthand 127.1", P, PATH, &[b"127.1:8787"], &[], None, HOST_ERR),
        c("octal 0177.0.0.1", P, PATH, &[b"0177.0.0.1:8787"], &[], None, HOST_ERR),
        c("IPv4-mapped IPv6 loopback", P, PATH, &[b"[::ffff:127.0.0.1]:8787"], &[], None, HOST_ERR),
        c("IPv6 with zone id", P, PATH, &[b"[fe80::1%25lo]:8787"], &[], None, HOST_ERR),
        c("wildcard Host", P, PATH, &[b"*:8787"], &[], None, HOST_ERR),
        // Malformed ports.
        c("empty port", P, PATH, &[b"localhost:"], &[], None, HOST_ERR),
        c("non-numeric port", P, PATH, &[b"localhost:http"], &[], None, HOST_ERR),
        c("port above 65535", P, PATH, &[b"localhost:65536"], &[], None, HOST_ERR),
        c("port wrapping to the listen port mod 65536", P, PATH, &[b"localhost:74323"], &[], None, HOST_ERR),
        c("very long port", P, PATH, &[long_port.as_bytes()], &[], None, HOST_ERR),
        c("negative port", P, PATH, &[b"localhost:-8787"], &[], None, HOST_ERR),
        c("signed port", P, PATH, &[b"localhost:+8787"], &[], None, HOST_ERR),
        c("port zero", P, PATH, &[b"localhost:0"], &[], None, HOST_ERR),
        c("leading zero port", P, PATH, &[b"localhost:08787"], &[], None, HOST_ERR),
        c("two ports", P, PATH, &[b"localhost:8787:8787"], &[], None, HOST_ERR),
        // IPv6 syntax.
        c("IPv6 without brackets, with port", P, PATH, &[b"::1:8787"], &[], None, HOST_ERR),
        c("IPv6 without brackets", P, PATH, &[b"::1"], &[], None, HOST_ERR),
        c("unclosed bracket", P, PATH, &[b"[::1:8787"], &[], None, HOST_ERR),
        c("junk after bracket", P, PATH, &[b"[::1]8787"], &[], None, HOST_ERR),
        c("name in brackets", P, PATH, &[b"[localhost]:8787"], &[], None, HOST_ERR),
        // Header count and bytes.
        c("no Host header", P, PATH, &[], &[], None, HOST_ERR),
        c("two identical Host headers", P, PATH, &[b"localhost:8787", b"localhost:8787"], &[], None, HOST_ERR),
        c("two different Host headers", P, PATH, &[b"localhost:8787", b"evil.test:8787"], &[], None, HOST_ERR),
        c("empty Host", P, PATH, &[b""], &[], None, HOST_ERR),
        c("leading space", P, PATH, &[b" localhost:8787"], &[], None, HOST_ERR),
        c("space before the port", P, PATH, &[b"localhost :8787"], &[], None, HOST_ERR),
        c("tab", P, PATH, &[b"localhost:8787\t"], &[], None, HOST_ERR),
        c("comma-joined list", P, PATH, &[b"localhost:8787,evil.test:8787"], &[], None, HOST_ERR),
        c("Cyrillic o lookalike (UTF-8)", P, PATH, &["l\u{43e}calhost:8787".as_bytes()], &[], None, HOST_ERR),
        c("raw 0xff byte", P, PATH, &[b"localhost\xff:8787"], &[], None, HOST_ERR),
        c("raw 0x80 byte", P, PATH, &[b"\x80localhost:8787"], &[], None, HOST_ERR),
        c("percent-encoded dot", P, PATH, &[b"localhost%2e:8787"], &[], None, HOST_ERR),
        c("path in Host", P, PATH, &[b"localhost:8787/mcp"], &[], None, HOST_ERR),
        c("fragment in Host", P, PATH, &[b"localhost:8787#"], &[], None, HOST_ERR),
        c("over-long name", P, PATH, &[long_name.as_bytes()], &[], None, HOST_ERR),
        // Absolute-form targets must agree with Host.
        c("absolute-form, same authority", P, "http://localhost:8787/mcp", &[b"localhost:8787"], &[], None, OK),
        c("absolute-form, case differs only", P, "http://LOCALHOST:8787/mcp", &[b"localhost:8787"], &[], None, OK),
        c("absolute-form naming another host", P, "http://evil.test:8787/mcp", &[b"localhost:8787"], &[], None, HOST_ERR),
        c("absolute-form, other loopback name", P, "http://127.0.0.1:8787/mcp", &[b"localhost:8787"], &[], None, HOST_ERR),
        c("absolute-form without port means 80", P, "http://localhost/mcp", &[b"localhost:8787"], &[], None, HOST_ERR),
        c("absolute-form with userinfo", P, "http://user@localhost:8787/mcp", &[b"localhost:8787"], &[], None, HOST_ERR),
        c("absolute-form https (not served)", P, "https://localhost:8787/mcp", &[b"localhost:8787"], &[], None, HOST_ERR),
        c("absolute-form still needs a Host", P, "http://localhost:8787/mcp", &[], &[], None, HOST_ERR),
    ]
}

#[test]
fn host_table() {
    run(&cases());
}

#[test]
fn host_rule_names_the_value_and_the_allow_list() {
    let case = c("evil", P, PATH, &[b"evil.test:8787"], &[], None, HOST_ERR);
    let rejection = policy(P).verify(&request(&case)).expect_err("rejected");
    assert_eq!(rejection.value, "evil.test:8787");
    assert_eq!(
        rejection.rule,
        "Host `evil.test:8787` is not an allowed host (allowed: localhost, 127.0.0.1, [::1] on port 8787)"
    );
    assert!(
        rejection.message().contains("host"),
        "{}",
        rejection.message()
    );
}

#[test]
fn host_value_is_normalised() {
    let case = c("port-less", X, PATH, &[b"LocalHost"], &[], None, HOST_ERR);
    let rejection = policy(X).verify(&request(&case)).expect_err("rejected");
    assert_eq!(rejection.value, "localhost:80");
    assert!(
        rejection
            .rule
            .ends_with("on port 8787; mcp.example.test:8787; box.lan:9000; [fd00::1]:8787)"),
        "{}",
        rejection.rule
    );
}

#[test]
fn hostile_host_value_is_escaped() {
    let case = c(
        "0xff",
        P,
        PATH,
        &[b"\"} evil_metric 1\xff"],
        &[],
        None,
        HOST_ERR,
    );
    let rejection = policy(P).verify(&request(&case)).expect_err("rejected");
    assert_eq!(rejection.value, "\\x22} evil_metric 1\\xff");
    assert_eq!(
        rejection.rule,
        "Host `\\x22} evil_metric 1\\xff` is malformed: it contains whitespace, control or non-ASCII characters"
    );
}

#[test]
fn missing_and_duplicate_host_rules() {
    let none = c("none", P, PATH, &[], &[], None, HOST_ERR);
    let rejection = policy(P).verify(&request(&none)).expect_err("rejected");
    assert_eq!(rejection.value, "");
    assert!(
        rejection
            .rule
            .contains("exactly one Host header (got none)")
    );
    let two = c(
        "two",
        P,
        PATH,
        &[b"localhost:8787", b"evil.test:8787"],
        &[],
        None,
        HOST_ERR,
    );
    let rejection = policy(P).verify(&request(&two)).expect_err("rejected");
    assert_eq!(rejection.value, "localhost:8787, evil.test:8787");
}
