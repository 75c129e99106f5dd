//! The shared counters map with the kernel layer on: exact under concurrency, persistent across
//! restarts and SIGKILL, and kernel events visible in `stats` and `/metrics`.
//!
//! Each test runs the real `mcp-gateway run --ebpf required` on a cgroup and a pin directory of
//! its own (removed by RAII guards), with its metrics on a free loopback port.
use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway_common::Reason;
use mcp_gateway::ebpf::counters;
use mcp_gateway_tests::{
    cgroup::TestCgroup,
    gateway::{BinaryGateway, hammer},
    netns::{HostPair, REMOTE_V4, SERVER_V4},
    pins::PinDir,
    process::{ChildGuard, gateway_bin, netprobe},
    prometheus::{free_port, parse, rejections, scrape},
    require_privileges,
};

fn kernel_args<'a>(cgroup: &'a TestCgroup, pins: &'a PinDir) -> Vec<&'a str> {
    vec![
        "--ebpf",
        "required",
        "--cgroup",
        cgroup.path().to_str().expect("UTF-8 cgroup path"),
        "--pin-dir",
        pins.arg(),
    ]
}

fn metrics_count(gw: &BinaryGateway, reason: &str, origin: &str) -> u64 {
    rejections(&parse(&scrape(gw.metrics)), reason, origin)
}

/// `mcp-gateway stats --json`: the count of (reason, origin).
fn stats_count(pins: &PinDir, reason: &str, origin: &str) -> u64 {
    let out = Command::new(gateway_bin())
        .args(["stats", "--json", "--pin-dir", pins.arg()])
        .stdin(Stdio::null())
        .output()
        .expect("running stats");
    assert!(
        out.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    doc["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .filter(|c| c["reason"] == reason && c["origin"] == origin)
        .map(|c| c["count"].as_u64().expect("count"))
        .sum()
}

fn unused_upstream() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

fn evil_origin_headers(gw: &BinaryGateway, origin: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        ("host".into(), gw.host().into_bytes()),
        ("origin".into(), origin.as_bytes().to_vec()),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn ten_thousand_concurrent_rejections_raise_the_pinned_counter_by_exactly_ten_thousand() {
    require_privileges();
    let cgroup = TestCgroup::new("cnt-exact");
    let pins = PinDir::new("cnt-exact");
    let gw = BinaryGateway::start(unused_upstream(), &kernel_args(&cgroup, &pins));
    let origin = "http://rebind.test";
    let samples = parse(&scrape(gw.metrics));
    let gauge = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(gauge("mcp_gateway_ebpf_enforcing"), Some(1.0));
    assert_eq!(gauge("mcp_gateway_rejections_persistent"), Some(1.0));
    let before = pins.count_label(Reason::Origin, origin);
    let metrics_before = metrics_count(&gw, "origin", origin);

    let started = Instant::now();
    let statuses = runtime().block_on(hammer(gw.listen, 50, 200, evil_origin_headers(&gw, origin)));
    eprintln!(
        "10000 rejections over 50 connections (written through to the pinned map): {:?}",
        started.elapsed()
    );
    assert_eq!(statuses, [(403, 10_000)].into_iter().collect());

    assert_eq!(pins.count_label(Reason::Origin, origin) - before, 10_000);
    assert_eq!(
        metrics_count(&gw, "origin", origin) - metrics_before,
        10_000
    );
    assert_eq!(stats_count(&pins, "origin", origin) - before, 10_000);

    // The write-through's own cost (lookup + update syscalls), for the record.
    let mut map = counters::PinnedCounters::open(pins.path())
        .expect("opening the map")
        .expect("pinned");
    let key = gateway_common::CounterKey::text(Reason::Auth, 1, b"http://bench.test");
    let started = Instant::now();
    for _ in 0..10_000 {
        map.add(&key, 1).expect("add");
    }
    eprintln!(
        "write-through cost: {:?} per rejection",
        started.elapsed() / 10_000
    );
    assert_eq!(pins.count_label(Reason::Auth, "http://bench.test"), 10_000);
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn counters_survive_a_restart_and_a_sigkill_and_never_go_backwards() {
    require_privileges();
    let cgroup = TestCgroup::new("cnt-persist");
    let pins = PinDir::new("cnt-persist");
    let upstream = unused_upstream();
    let args = kernel_args(&cgroup, &pins);
    let origin = "http://persist.test";
    let rt = runtime();
    let send = |gw: &BinaryGateway, n: usize| {
        let statuses = rt.block_on(hammer(gw.listen, 1, n, evil_origin_headers(gw, origin)));
        assert_eq!(statuses, [(403, n)].into_iter().collect());
    };

    let mut gw = BinaryGateway::start(upstream, &args);
    let (listen, metrics) = (gw.listen, gw.metrics);
    send(&gw, 100);
    assert_eq!(metrics_count(&gw, "origin", origin), 100);
    // A clean stop (SIGTERM) and a restart.
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(gw.child.id() as i32, libc::SIGTERM) },
        0
    );
    gw.child
        .wait_for_log("mcp-gateway stopped", Duration::from_secs(30));
    drop(gw);
    assert_eq!(pins.count_label(Reason::Origin, origin), 100);
    assert_eq!(
        stats_count(&pins, "origin", origin),
        100,
        "stats while stopped"
    );

    let gw = BinaryGateway::start_on(upstream, listen, metrics, &args);
    assert_eq!(metrics_count(&gw, "origin", origin), 100, "after restart");
    send(&gw, 50);
    assert_eq!(metrics_count(&gw, "origin", origin), 150);
    // A crash: nothing gets flushed on the way out; every increment is already in the map.
    gw.child.crash();
    assert_eq!(pins.count_label(Reason::Origin, origin), 150);

    let gw = BinaryGateway::start_on(upstream, listen, metrics, &args);
    let mut last = 0;
    for expected in [150, 151] {
        let now = metrics_count(&gw, "origin", origin);
        assert!(now >= last, "went backwards: {last} -> {now}");
        assert_eq!(now, expected);
        last = now;
        send(&gw, 1);
    }
    assert_eq!(pins.count_label(Reason::Origin, origin), 152);
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn kernel_drops_show_up_in_stats_and_metrics_under_their_reason() {
    require_privileges();
    let cgroup = TestCgroup::new("cnt-kernel");
    let hosts = HostPair::new("ck");
    let pins = PinDir::new("cnt-kernel");
    // The MCP server binds 0.0.0.0:18000 in the server namespace, inside the test cgroup.
    let mut server = ChildGuard::spawn(netprobe().arg("--cgroup").arg(cgroup.path()).args([
        "--netns",
        hosts.server.name(),
        "listen",
        "0.0.0.0:18000",
    ]));
    assert_eq!(server.read_line(), "18000");
    let connect = || {
        let out = netprobe()
            .args(["--netns", hosts.remote.name()])
            .args(["connect", &format!("{SERVER_V4}:18000"), "400"])
            .stdin(Stdio::null())
            .output()
            .expect("running netprobe");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(connect(), "ok", "setup: the remote host reaches the port");

    let upstream: SocketAddr = "127.0.0.1:18000".parse().expect("addr");
    let gw = BinaryGateway::start(upstream, &kernel_args(&cgroup, &pins));
    for _ in 0..2 {
        assert_eq!(connect(), "timeout", "the remote host got through");
    }

    let origin = format!("{REMOTE_V4}:18000");
    assert_eq!(pins.count_label(Reason::NonLoopbackPacket, &origin), 2);
    assert_eq!(stats_count(&pins, "non_loopback_packet", &origin), 2);
    assert_eq!(metrics_count(&gw, "non_loopback_packet", &origin), 2);
    // The table names the reason and the source too.
    let out = Command::new(gateway_bin())
        .args(["stats", "--pin-dir", pins.arg()])
        .stdin(Stdio::null())
        .output()
        .expect("running stats");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("non_loopback_packet") && l.contains(&origin)),
        "{table}"
    );
}
