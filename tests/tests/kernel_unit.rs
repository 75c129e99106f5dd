//! The systemd unit's privileges are enough: the real gateway, run as an unprivileged user with
//! exactly the capabilities `deploy/systemd/mcp-gateway.service` grants (through setpriv, as
//! systemd would), loads and enforces the kernel layer. Privileged: it needs root to set that
//! up, and runs in the test's own cgroup, network namespaces and pin directory.
use std::{os::unix::fs::chown, path::Path, time::Duration};

use mcp_gateway_tests::{
    cgroup::TestCgroup,
    netns::{HostPair, REMOTE_V4, SERVER_V4},
    pins::PinDir,
    probe::{listen, probe},
    process::{ChildGuard, gateway_bin, in_cgroup},
    require_privileges,
};

/// The unprivileged user the gateway runs as (`nobody`).
const UID: u32 = 65534;

/// `KEY=` of the unit, split on spaces.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// The capabilities the unit grants, as setpriv names them (`bpf`, `net_admin`).
fn unit_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/mcp-gateway.service");
    let unit = std::fs::read_to_string(path).expect("reading the unit");
    let ambient = unit_values(&unit, "AmbientCapabilities");
    let bounding = unit_values(&unit, "CapabilityBoundingSet");
    assert_eq!(ambient, bounding, "the unit grants what it bounds");
    assert!(!ambient.is_empty());
    ambient
        .iter()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ name").to_lowercase())
        .collect()
}

/// The `CapEff` mask of a process, from /proc.
fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn the_gateway_enforces_as_an_unprivileged_user_with_exactly_the_units_capabilities() {
    require_privileges();
    let caps = unit_capabilities();
    assert_eq!(
        caps,
        ["bpf", "net_admin"],
        "update this test's expectations"
    );
    // A systemd service's cgroup is its own: named like one.
    let cgroup = TestCgroup::new("unit.service");
    // An MCP server run by another unit, confined to the gateway's port by egress rules.
    let confined = TestCgroup::new("weather.service");
    let hosts = HostPair::new("unit");
    let pins = PinDir::new("unit");
    // What ExecStartPre does: the pin directory, made the service user's.
    std::fs::create_dir(pins.path()).unwrap();
    chown(pins.path(), Some(UID), Some(UID)).unwrap();
    let _upstream = listen(cgroup.path(), &hosts.server, "0.0.0.0:18970");
    let remote = format!("{SERVER_V4}:18970");
    assert_eq!(
        probe(None, &hosts.remote, &["connect", &remote]),
        "ok",
        "setup"
    );

    let set = format!("-all,+{}", caps.join(",+"));
    let mut cmd = in_cgroup(Some(cgroup.path()), Path::new("nsenter"));
    cmd.arg(format!("--net=/run/netns/{}", hosts.server.name()))
        .args(["--", "setpriv"])
        .args([
            format!("--reuid={UID}"),
            format!("--regid={UID}"),
            "--clear-groups".to_owned(),
            "--no-new-privs".to_owned(),
            format!("--inh-caps={set}"),
            format!("--ambient-caps={set}"),
            format!("--bounding-set={set}"),
            "--".to_owned(),
        ])
        .arg(gateway_bin())
        .env("RUST_LOG", "info")
        .args(["run", "--upstream", "http://127.0.0.1:18970/mcp"])
        .args(["--listen", "127.0.0.1:18971", "--exclusive-upstream"])
        .args(["--ebpf", "required", "--metrics-listen", "off"])
        .args(["--pin-dir", pins.arg(), "--cgroup"])
        .arg(cgroup.path())
        .args(["--egress", "127.0.0.1:18971", "--egress-cgroup"])
        .arg(confined.path());
    assert!(
        probe(
            Some(confined.path()),
            &hosts.server,
            &["connect", "127.0.0.1:18972", "300"]
        )
        .starts_with("err 111 "),
        "setup: nothing listens there, so the connect is refused by the stack"
    );
    let mut gateway = ChildGuard::spawn_logged(&mut cmd);
    gateway.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));

    // It runs as nobody with only the unit's capabilities (the pid is setpriv's, exec'd).
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.id())).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{UID}\t{UID}\t{UID}")),
        "{status}"
    );
    let (cap_bpf, cap_net_admin) = (1u64 << 39, 1u64 << 12);
    assert_eq!(effective_caps(gateway.id()), cap_bpf | cap_net_admin);

    // And the kernel layer works: another host can't reach the MCP server...
    assert_eq!(
        probe(None, &hosts.remote, &["connect", &remote]),
        "timeout",
        "remote host got through"
    );
    let dropped = pins.count_addr(
        gateway_common::Reason::NonLoopbackPacket,
        REMOTE_V4.parse().unwrap(),
        18970,
    );
    assert!(dropped >= 1, "drops are counted in the pinned map");
    // ...a local process in another cgroup can't connect to it (exclusive upstream)...
    let other = cgroup.child("other");
    let direct = probe(
        Some(&other),
        &hosts.server,
        &["connect", "127.0.0.1:18970", "300"],
    );
    assert!(direct.starts_with("err 1 "), "direct connect: {direct}");
    // ...while the gateway itself still reaches it (the echo upstream answers no HTTP: 502).
    assert_eq!(
        probe(
            Some(&other),
            &hosts.server,
            &[
                "get",
                "127.0.0.1:18971",
                "127.0.0.1:18971",
                "-",
                "127.0.0.1"
            ]
        ),
        "502"
    );
    // ...and the egress programs load and enforce with these capabilities too.
    assert!(
        gateway.logged("egress rules in force").is_some(),
        "egress rules were not put in force"
    );
    let denied = probe(
        Some(confined.path()),
        &hosts.server,
        &["connect", "127.0.0.1:18972", "300"],
    );
    assert!(denied.starts_with("err 1 "), "confined connect: {denied}");
}
