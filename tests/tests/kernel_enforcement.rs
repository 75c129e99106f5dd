//! Kernel enforcement end to end on a cgroup of the test's own, a server namespace, and a
//! "remote host" namespace joined to it by a veth pair. The program tests drive the kernel layer
//! through the `enforcer` helper (it runs `ebpf::startup::start` exactly as `mcp-gateway run`
//! does, and reports what it attached); the lifecycle tests (crash, detach, missing privileges)
//! run the real `mcp-gateway` binary.
//!
//! Every test checks its setup before enforcement (the remote host reaches the port, the bind
//! works...), so it fails when the protection is absent.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use gateway_common::Reason;
use mcp_gateway::ebpf::sys;
use mcp_gateway_tests::{
    cgroup::TestCgroup,
    netns::{HostPair, NetnsGuard, REMOTE_V4, REMOTE_V6, SERVER_V4, SERVER_V6},
    pins::PinDir,
    probe::{ATTEMPT_MS, connect, listen, probe},
    process::{ChildGuard, gateway_bin},
    require_privileges,
};

const UPSTREAM: u16 = 18000;
const UNPROTECTED: u16 = 18001;
const LISTEN: &str = "127.0.0.1:18787";

fn enforcer_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("enforcer"))
        .expect("target dir");
    assert!(
        bin.is_file(),
        "{} is missing: build the test binaries first",
        bin.display()
    );
    bin
}

/// Starts enforcement on `cgroup` for upstream port 18000 and listen 127.0.0.1:18787, plus
/// `extra` flags; returns once it is in force.
fn enforce(cgroup: &TestCgroup, pins: &PinDir, extra: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(enforcer_bin());
    // Warnings and errors only: a failing test shows why, a passing one stays quiet.
    cmd.env("RUST_LOG", "warn");
    cmd.arg("--join-cgroup").arg(cgroup.path()).arg("run");
    cmd.args([
        "--ebpf",
        "required",
        "--upstream-port",
        "18000",
        "--listen",
        LISTEN,
    ]);
    cmd.arg("--cgroup").arg(cgroup.path());
    cmd.arg("--pin-dir").arg(pins.path());
    cmd.args(extra);
    let mut child = ChildGuard::spawn(&mut cmd);
    let line = child.read_line();
    assert!(line.starts_with("enforcing "), "enforcer said: {line}");
    (child, line)
}

/// The real `mcp-gateway run` (upstream port 18000, listen 127.0.0.1:18787) enforcing on the
/// test's cgroup with the test's pin dir.
fn gateway_cmd(cgroup: &TestCgroup, pins: &PinDir, ebpf: &str) -> Command {
    let mut cmd = Command::new(gateway_bin());
    cmd.env("RUST_LOG", "info");
    cmd.args([
        "run",
        "--upstream",
        "http://127.0.0.1:18000/mcp",
        "--listen",
        LISTEN,
    ]);
    cmd.args(["--ebpf", ebpf]);
    // Tests never take the default metrics port (9464): others may run at the same time.
    cmd.args(["--metrics-listen", "off"]);
    cmd.arg("--cgroup").arg(cgroup.path());
    cmd.arg("--pin-dir").arg(pins.path());
    cmd
}

/// Starts the real gateway with `--ebpf required`; returns it and its "in force" log line.
fn start_gateway(cgroup: &TestCgroup, pins: &PinDir) -> (ChildGuard, String) {
    let mut gateway = ChildGuard::spawn_logged(&mut gateway_cmd(cgroup, pins, "required"));
    let line = gateway.wait_for_log("kernel enforcement in force", Duration::from_secs(30));
    (gateway, line)
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().expect("v4"))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"))
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn remote_host_cannot_reach_protected_port_but_loopback_and_unprotected_ports_work() {
    require_privileges();
    let cgroup = TestCgroup::new("ingress4");
    let hosts = HostPair::new("i4");
    let pins = PinDir::new("ingress4");
    // The MCP server binds 0.0.0.0 before the gateway starts (so bind policy can't help).
    let _upstream = listen(cgroup.path(), &hosts.server, "0.0.0.0:18000");
    let _other = listen(cgroup.path(), &hosts.server, "0.0.0.0:18001");
    let remote_upstream = format!("{SERVER_V4}:{UPSTREAM}");
    assert_eq!(
        connect(&hosts.remote, &remote_upstream),
        "ok",
        "setup: remote reaches the port"
    );

    let (_gateway, _) = enforce(&cgroup, &pins, &[]);

    assert_eq!(
        connect(&hosts.remote, &remote_upstream),
        "timeout",
        "remote host got through"
    );
    assert_eq!(
        connect(&hosts.server, "127.0.0.1:18000"),
        "ok",
        "loopback client refused"
    );
    // The server's own non-loopback address is not loopback either.
    assert_eq!(connect(&hosts.server, &remote_upstream), "timeout");
    assert_eq!(
        connect(&hosts.remote, &format!("{SERVER_V4}:{UNPROTECTED}")),
        "ok",
        "an unprotected port must stay reachable"
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn drop_counter_moves_by_exactly_the_attempts_made() {
    require_privileges();
    let cgroup = TestCgroup::new("count");
    let hosts = HostPair::new("cnt");
    let pins = PinDir::new("count");
    let _upstream = listen(cgroup.path(), &hosts.server, "0.0.0.0:18000");
    let (_gateway, _) = enforce(&cgroup, &pins, &[]);
    let remote = v4(REMOTE_V4);

    let before = pins.count_addr(Reason::NonLoopbackPacket, remote, UPSTREAM);
    for _ in 0..3 {
        assert_eq!(
            connect(&hosts.remote, &format!("{SERVER_V4}:{UPSTREAM}")),
            "timeout"
        );
    }
    assert_eq!(connect(&hosts.server, "127.0.0.1:18000"), "ok");
    let after = pins.count_addr(Reason::NonLoopbackPacket, remote, UPSTREAM);
    assert_eq!(
        after - before,
        3,
        "3 remote SYNs dropped, the loopback connection not counted"
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn ipv6_remote_host_is_dropped_and_ipv6_loopback_connects() {
    require_privileges();
    let cgroup = TestCgroup::new("ingress6");
    let hosts = HostPair::new("i6");
    let pins = PinDir::new("ingress6");
    // Dual-stack listener on [::].
    let _upstream = listen(cgroup.path(), &hosts.server, "[::]:18000");
    let remote_v6 = format!("[{SERVER_V6}]:{UPSTREAM}");
    assert_eq!(
        connect(&hosts.remote, &remote_v6),
        "ok",
        "setup: remote reaches the port"
    );

    let (_gateway, _) = enforce(&cgroup, &pins, &[]);

    assert_eq!(
        connect(&hosts.remote, &remote_v6),
        "timeout",
        "remote IPv6 host got through"
    );
    assert_eq!(
        connect(&hosts.server, "[::1]:18000"),
        "ok",
        "::1 client refused"
    );
    assert_eq!(
        connect(&hosts.server, "127.0.0.1:18000"),
        "ok",
        "127.0.0.1 client refused"
    );
    // IPv4 to the dual-stack socket is judged too.
    assert_eq!(
        connect(&hosts.remote, &format!("{SERVER_V4}:{UPSTREAM}")),
        "timeout"
    );
    assert_eq!(
        pins.count_addr(Reason::NonLoopbackPacket, v6(REMOTE_V6), UPSTREAM),
        1
    );
    assert_eq!(
        pins.count_addr(Reason::NonLoopbackPacket, v4(REMOTE_V4), UPSTREAM),
        1
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn bind_deny_refuses_non_loopback_binds_with_eperm() {
    require_privileges();
    let cgroup = TestCgroup::new("binddeny");
    let ns = NetnsGuard::new("bd");
    let pins = PinDir::new("binddeny");
    let bind = |addr: &str| probe(Some(cgroup.path()), &ns, &["bind", addr]);
    assert_eq!(
        bind("0.0.0.0:18000"),
        "ok 0.0.0.0:18000",
        "setup: bind works before"
    );

    let (_gateway, _) = enforce(&cgroup, &pins, &["--bind-policy", "deny"]);

    for addr in ["0.0.0.0:18000", "[::]:18000"] {
        let answer = bind(addr);
        assert!(answer.starts_with("err 1 "), "bind {addr}: {answer}");
    }
    assert_eq!(bind("127.0.0.1:18000"), "ok 127.0.0.1:18000");
    assert_eq!(bind("[::1]:18000"), "ok [::1]:18000");
    assert_eq!(
        bind("0.0.0.0:18001"),
        "ok 0.0.0.0:18001",
        "unprotected port refused"
    );
    // The gateway's own listen port is protected too (it listens on loopback).
    assert!(bind("0.0.0.0:18787").starts_with("err 1 "));
    assert_eq!(
        pins.count_addr(Reason::BindDenied, v4("0.0.0.0"), UPSTREAM),
        1
    );
    assert_eq!(pins.count_addr(Reason::BindDenied, v6("::"), UPSTREAM), 1);
    assert_eq!(pins.count_addr(Reason::BindDenied, v4("0.0.0.0"), 18787), 1);
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn bind_rewrite_moves_non_loopback_binds_to_loopback() {
    require_privileges();
    let cgroup = TestCgroup::new("bindrw");
    let ns = NetnsGuard::new("brw");
    let pins = PinDir::new("bindrw");
    let bind = |addr: &str| probe(Some(cgroup.path()), &ns, &["bind", addr]);
    assert_eq!(
        bind("0.0.0.0:18000"),
        "ok 0.0.0.0:18000",
        "setup: bind works before"
    );

    let (_gateway, _) = enforce(&cgroup, &pins, &["--bind-policy", "rewrite"]);

    assert_eq!(bind("0.0.0.0:18000"), "ok 127.0.0.1:18000");
    assert_eq!(bind("[::]:18000"), "ok [::1]:18000");
    assert_eq!(
        bind("0.0.0.0:18001"),
        "ok 0.0.0.0:18001",
        "unprotected port rewritten"
    );
    assert_eq!(
        pins.count_addr(Reason::BindRewritten, v4("0.0.0.0"), UPSTREAM),
        1
    );
    assert_eq!(
        pins.count_addr(Reason::BindRewritten, v6("::"), UPSTREAM),
        1
    );
    assert_eq!(
        pins.count_addr(Reason::BindDenied, v4("0.0.0.0"), UPSTREAM),
        0
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn exclusive_upstream_admits_only_the_gateway_and_allowed_cgroups() {
    require_privileges();
    let cgroup = TestCgroup::new("exclusive");
    let allowed = cgroup.child("allowed");
    let ns = NetnsGuard::new("ex");
    let pins = PinDir::new("exclusive");
    let _upstream = listen(cgroup.path(), &ns, "127.0.0.1:18000");
    let _other = listen(cgroup.path(), &ns, "127.0.0.1:18001");
    let connect_from =
        |dir: &Path, addr: &str| probe(Some(dir), &ns, &["connect", addr, ATTEMPT_MS]);
    assert_eq!(
        connect_from(cgroup.path(), "127.0.0.1:18000"),
        "ok",
        "setup"
    );

    let allow = allowed.to_str().expect("utf-8 path");
    let (_gateway, line) = enforce(
        &cgroup,
        &pins,
        &["--exclusive-upstream", "--allow-cgroup", allow],
    );
    // The enforcer shared the test cgroup, so it moved into a child of its own.
    let own = cgroup.path().join("mcp-gateway");
    assert!(
        line.ends_with(&format!("own_cgroup={}", own.display())),
        "{line}"
    );

    let denied = connect_from(cgroup.path(), "127.0.0.1:18000");
    assert!(denied.starts_with("err 1 "), "outside process: {denied}");
    let denied6 = connect_from(cgroup.path(), "[::ffff:127.0.0.1]:18000");
    assert!(
        denied6.starts_with("err 1 "),
        "outside process over IPv6: {denied6}"
    );
    assert_eq!(
        connect_from(&own, "127.0.0.1:18000"),
        "ok",
        "the gateway's cgroup refused"
    );
    assert_eq!(
        connect_from(&allowed, "127.0.0.1:18000"),
        "ok",
        "--allow-cgroup refused"
    );
    assert_eq!(
        connect_from(cgroup.path(), "127.0.0.1:18001"),
        "ok",
        "other port refused"
    );
    assert_eq!(
        pins.count_addr(Reason::ConnectDenied, v4("127.0.0.1"), UPSTREAM),
        2
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn enforcement_survives_sigkill_and_a_restart_takes_over_its_pins() {
    require_privileges();
    let cgroup = TestCgroup::new("crash");
    let hosts = HostPair::new("cr");
    let pins = PinDir::new("crash");
    let _upstream = listen(cgroup.path(), &hosts.server, "0.0.0.0:18000");
    let remote_upstream = format!("{SERVER_V4}:{UPSTREAM}");
    assert_eq!(connect(&hosts.remote, &remote_upstream), "ok", "setup");

    let (gateway, line) = start_gateway(&cgroup, &pins);
    assert!(
        line.contains("taken_over=0") && line.contains("attached=5"),
        "{line}"
    );
    assert_eq!(connect(&hosts.remote, &remote_upstream), "timeout");
    gateway.crash();

    assert_eq!(
        connect(&hosts.remote, &remote_upstream),
        "timeout",
        "enforcement died with the gateway"
    );
    assert_eq!(connect(&hosts.server, "127.0.0.1:18000"), "ok");
    let counted = pins.count_addr(Reason::NonLoopbackPacket, v4(REMOTE_V4), UPSTREAM);
    assert_eq!(counted, 2, "counters kept in the pinned map");

    // A restart reuses the five pinned links instead of attaching again.
    let (_gateway, line) = start_gateway(&cgroup, &pins);
    assert!(
        line.contains("taken_over=5") && line.contains("attached=0"),
        "{line}"
    );
    let attached = sys::attached_programs(cgroup.path()).expect("query the cgroup");
    assert_eq!(attached.len(), 5, "attached twice? {attached:?}");
    assert_eq!(connect(&hosts.remote, &remote_upstream), "timeout");
    assert_eq!(
        pins.count_addr(Reason::NonLoopbackPacket, v4(REMOTE_V4), UPSTREAM),
        counted + 1
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn detach_removes_every_link_and_pin() {
    require_privileges();
    let cgroup = TestCgroup::new("detach");
    let hosts = HostPair::new("dt");
    let pins = PinDir::new("detach");
    let _upstream = listen(cgroup.path(), &hosts.server, "0.0.0.0:18000");
    let remote_upstream = format!("{SERVER_V4}:{UPSTREAM}");
    let (_gateway, _) = start_gateway(&cgroup, &pins);
    assert_eq!(
        sys::attached_programs(cgroup.path()).expect("query").len(),
        5
    );
    assert_eq!(connect(&hosts.remote, &remote_upstream), "timeout");

    // Detach while the gateway still runs (and holds the links): they go anyway.
    let out = Command::new(gateway_bin())
        .arg("detach")
        .arg("--pin-dir")
        .arg(pins.path())
        .output()
        .expect("running detach");
    assert!(
        out.status.success(),
        "detach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let attached = sys::attached_programs(cgroup.path()).expect("query the cgroup");
    assert!(
        attached.is_empty(),
        "still attached after detach: {attached:?}"
    );
    assert!(
        !pins.path().exists(),
        "pin dir left behind: {}",
        pins.path().display()
    );
    assert_eq!(
        connect(&hosts.remote, &remote_upstream),
        "ok",
        "still enforced after detach"
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn ebpf_required_without_privileges_fails_and_auto_warns() {
    require_privileges();
    let cgroup = TestCgroup::new("unpriv");
    let pins = PinDir::new("unpriv");
    // The real binary with every capability dropped (util-linux setpriv).
    let unprivileged = |ebpf: &str| {
        let gateway = gateway_cmd(&cgroup, &pins, ebpf);
        let mut cmd = Command::new("setpriv");
        cmd.args(["--inh-caps=-all", "--bounding-set=-all", "--"])
            .arg(gateway.get_program())
            .args(gateway.get_args());
        cmd
    };

    let out = unprivileged("required")
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--ebpf required started without privileges"
    );
    assert!(
        stderr.contains(
            "kernel enforcement is required (--ebpf required) but unavailable: missing CAP_BPF"
        ) && stderr.contains("CAP_NET_ADMIN"),
        "unexpected error: {stderr}"
    );

    // auto: warns loudly, then serves userspace-only.
    let mut gateway = ChildGuard::spawn_logged(&mut unprivileged("auto"));
    gateway.wait_for_log(
        "KERNEL ENFORCEMENT IS OFF: missing CAP_BPF",
        Duration::from_secs(30),
    );
    gateway.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
    drop(gateway);
    assert!(
        sys::attached_programs(cgroup.path())
            .expect("query")
            .is_empty()
    );
}
