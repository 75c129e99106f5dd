//! The direct-port variant of the browser attack: the rebinding page targets the upstream MCP
//! server's own port, skipping the gateway. With `--exclusive-upstream` the kernel refuses
//! Chromium's connections and nothing reaches the server; without it the attack succeeds.
//!
//! Privileged: Chromium runs in a cgroup of the test's own, and the real gateway enforces on
//! that cgroup (`--cgroup`, `--pin-dir` of the test's own), moving itself into
//! `<cgroup>/mcp-gateway`; everything is removed by RAII guards.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use gateway_common::Reason;
use mcp_gateway_tests::{
    browser::{REBIND_HOST, Rebinding, steps},
    cgroup::TestCgroup,
    e2e::{Gateway, Transport, Upstream, free_port, raw_initialize},
    pins::PinDir,
    require_privileges,
};
use serde_json::Value;

const PAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// The attack on the upstream's port P with Chromium in `cgroup`, the real gateway enforcing
/// on it (`--ebpf required` plus `extra`), and the bare SDK server then taking port P.
/// Returns the reports, the upstream, and when the upstream was up.
fn direct_port_attack(
    cgroup: &TestCgroup,
    pins: &PinDir,
    extra: &[&str],
) -> (Vec<(Instant, Value)>, Upstream, Gateway, Instant, u16) {
    let attack = Rebinding::start(Some(cgroup.path()), 60);
    let cgroup_arg = cgroup.path().to_str().expect("utf-8 path");
    let pin_arg = pins.path().to_str().expect("utf-8 path");
    let mut flags = vec![
        "--ebpf",
        "required",
        "--cgroup",
        cgroup_arg,
        "--pin-dir",
        pin_arg,
    ];
    flags.extend_from_slice(extra);
    // The gateway is in force before the upstream listens, so no attempt slips in between.
    let gateway = Gateway::start_with(free_port(), attack.port, &flags, Some(cgroup.path()));
    assert!(
        gateway.log_text().contains("kernel enforcement in force"),
        "{}",
        gateway.log_text()
    );
    let upstream = Upstream::start(attack.port, Transport::Streamable, false);
    let up = Instant::now();
    // The gateway itself reaches the upstream (its cgroup is allowed).
    assert_eq!(
        raw_initialize(
            gateway.listen.port(),
            &format!("127.0.0.1:{}", gateway.listen.port())
        ),
        200,
        "a legitimate client through the gateway"
    );
    attack.finish(PAGE_TIMEOUT);
    (attack.collector.timed(), upstream, gateway, up, attack.port)
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn direct_port_rebinding_from_chromium_is_refused_with_exclusive_upstream() {
    require_privileges();
    let cgroup = TestCgroup::new("browser-excl");
    let pins = PinDir::new("browser-excl");

    let (timed, upstream, gateway, up, port) =
        direct_port_attack(&cgroup, &pins, &["--exclusive-upstream"]);

    let own = cgroup.path().join("mcp-gateway");
    assert!(
        gateway.log_text().contains(&own.display().to_string()),
        "the gateway moved into its own cgroup: {}",
        gateway.log_text()
    );
    let reports: Vec<Value> = timed.iter().map(|(_, v)| v.clone()).collect();
    // Attempts made while the server was listening all failed at connect().
    let refused_while_up = timed
        .iter()
        .filter(|(at, r)| *at > up && r["step"] == "initialize" && r["error"].is_string())
        .count();
    assert!(
        refused_while_up >= 5,
        "too few attempts while the server listened: {reports:?}"
    );
    assert!(
        steps(&reports, "initialize")
            .iter()
            .all(|r| r["status"].is_null() || r["status"] == 404),
        "the page got an answer from the victim: {reports:?}"
    );
    assert!(steps(&reports, "tools/call").is_empty(), "{reports:?}");
    let denied = pins.count_addr(Reason::ConnectDenied, IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    assert!(
        denied >= refused_while_up as u64,
        "the kernel counted {denied} refused connects, the page saw {refused_while_up} failures"
    );
    // Only the test's own request, through the gateway, reached the server.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["host"], format!("127.0.0.1:{port}"));
    assert_eq!(upstream.tool_calls(), Vec::<Value>::new());
}

/// Control: the same with kernel enforcement on but without `--exclusive-upstream`. The page
/// reaches the server directly, around the gateway, and calls the tool.
#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn control_direct_port_rebinding_from_chromium_succeeds_without_exclusive_upstream() {
    require_privileges();
    let cgroup = TestCgroup::new("browser-open");
    let pins = PinDir::new("browser-open");

    let (timed, upstream, _gateway, _, port) = direct_port_attack(&cgroup, &pins, &[]);

    let reports: Vec<Value> = timed.into_iter().map(|(_, v)| v).collect();
    let calls = steps(&reports, "tools/call");
    assert_eq!(calls.len(), 1, "{reports:?}");
    assert_eq!(calls[0]["result"], "42", "{reports:?}");
    let tools = upstream.tool_calls();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["args"], serde_json::json!({"a": 40, "b": 2}));
    let rebound = format!("{REBIND_HOST}:{port}");
    assert!(
        upstream.requests().iter().any(|r| r["host"] == rebound),
        "{:?}",
        upstream.requests()
    );
    assert_eq!(
        pins.count_addr(Reason::ConnectDenied, IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        0
    );
}
