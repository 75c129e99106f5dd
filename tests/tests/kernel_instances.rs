//! Several gateways on one host share one pin directory and never undo each other's kernel
//! protection; one gateway process serving two servers protects the union of their ports.
//!
//! The real `mcp-gateway` binary runs in the root namespace, enforcing on a cgroup of the
//! test's own; the "MCP servers" are netprobe listeners inside that cgroup in a server
//! namespace, with a remote host namespace on a veth pair. Every test checks its setup first,
//! so it fails when the protection is absent.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    cgroup::TestCgroup,
    gateway::ConfigGateway,
    netns::{HostPair, NetnsGuard, SERVER_V4},
    pins::PinDir,
    probe::{bind_refused, connect, listen},
    process::{ChildGuard, gateway_command, gateway_output},
    prometheus::{free_port, parse, scrape, value, wait_listening},
    require_privileges,
};
use serde_json::Value;

/// One gateway instance with its ports.
struct Instance {
    upstream: u16,
    listen: u16,
    metrics: SocketAddr,
}

impl Instance {
    fn new(upstream: u16, listen: u16) -> Self {
        Self {
            upstream,
            listen,
            metrics: ([127, 0, 0, 1], free_port()).into(),
        }
    }

    /// The instance name the gateway derives from its listen address.
    fn name(&self) -> String {
        format!("127.0.0.1:{}", self.listen)
    }

    /// Starts the real gateway with its default instance name; returns it and its "in force"
    /// log line.
    fn start(&self, cgroup: &TestCgroup, pins: &PinDir) -> (ChildGuard, String) {
        let mut cmd = gateway_command();
        cmd.env("RUST_LOG", "info")
            .arg("run")
            .arg("--upstream")
            .arg(format!("http://127.0.0.1:{}/mcp", self.upstream))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.listen))
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .args(["--ebpf", "required", "--cgroup"])
            .arg(cgroup.path())
            .args(["--pin-dir", pins.arg()]);
        let mut gw = ChildGuard::spawn_logged(&mut cmd);
        let line = gw.wait_for_log("kernel enforcement in force", Duration::from_secs(30));
        wait_listening(self.metrics, Duration::from_secs(10));
        (gw, line)
    }

    /// `mcp_gateway_ebpf_enforcing` of the running gateway.
    fn enforcing(&self) -> f64 {
        value(
            &parse(&scrape(self.metrics)),
            "mcp_gateway_ebpf_enforcing",
            &[],
        )
    }
}

/// One owner of a port: (instance, role, alive).
type Owner = (String, String, bool);

/// `port -> [(owner instance, role, alive)]` from a status report.
fn owners(status: &Value) -> Vec<(u64, Vec<Owner>)> {
    status["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|row| {
            let owners = row["owners"]
                .as_array()
                .expect("owners")
                .iter()
                .map(|o| {
                    (
                        o["instance"].as_str().unwrap().to_owned(),
                        o["role"].as_str().unwrap().to_owned(),
                        o["alive"].as_bool().unwrap(),
                    )
                })
                .collect();
            (row["port"].as_u64().unwrap(), owners)
        })
        .collect()
}

/// Whether a remote host can reach `port` on the server namespace.
fn remote_reaches(hosts: &HostPair, port: u16) -> bool {
    let answer = connect(&hosts.remote, &format!("{SERVER_V4}:{port}"));
    match answer.as_str() {
        "ok" => true,
        "timeout" => false,
        other => panic!("unexpected probe answer: {other}"),
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn two_instances_on_one_pin_dir_never_undo_each_others_protection() {
    require_privileges();
    let cgroup = TestCgroup::new("instances");
    let hosts = HostPair::new("in");
    let binds = NetnsGuard::new("inb");
    let pins = PinDir::new("instances");
    let a = Instance::new(18200, 18787);
    let b = Instance::new(18300, 18788);
    // Both MCP servers bind 0.0.0.0 before any gateway starts.
    let _up_a = listen(cgroup.path(), &hosts.server, "0.0.0.0:18200");
    let _up_b = listen(cgroup.path(), &hosts.server, "0.0.0.0:18300");
    assert!(
        remote_reaches(&hosts, a.upstream) && remote_reaches(&hosts, b.upstream),
        "setup"
    );
    assert!(
        !bind_refused(&cgroup, &binds, a.listen),
        "setup: bind works before"
    );

    let (gw_a, line) = a.start(&cgroup, &pins);
    assert!(line.contains("other_instances=0"), "{line}");
    let (gw_b, line) = b.start(&cgroup, &pins);
    assert!(
        line.contains("other_instances=1") && line.contains("taken_over=5"),
        "b shares a's programs on the cgroup: {line}"
    );

    // The bug this fixes: b's start replaced a's ports. Both are protected now.
    let all = [a.upstream, a.listen, b.upstream, b.listen];
    for port in [a.upstream, b.upstream] {
        assert!(
            !remote_reaches(&hosts, port),
            "port {port} reachable from another host"
        );
    }
    for port in all {
        assert!(
            bind_refused(&cgroup, &binds, port),
            "bind 0.0.0.0:{port} allowed"
        );
    }
    assert_eq!((a.enforcing(), b.enforcing()), (1.0, 1.0));
    let report = pins.status_json();
    assert_eq!(
        owners(&report),
        [
            (18200, vec![(a.name(), "upstream".into(), true)]),
            (18300, vec![(b.name(), "upstream".into(), true)]),
            (18787, vec![(a.name(), "listen".into(), true)]),
            (18788, vec![(b.name(), "listen".into(), true)]),
        ]
    );
    let upstream_of_a = &report["ports"][0]["owners"][0]["upstream"];
    assert_eq!(upstream_of_a, "http://127.0.0.1:18200/mcp");

    // A crashed instance's ports stay protected; the other instance is untouched.
    let pid_b = gw_b.id();
    gw_a.crash();
    for port in [a.upstream, b.upstream] {
        assert!(
            !remote_reaches(&hosts, port),
            "port {port} open after a's crash"
        );
    }
    assert_eq!(b.enforcing(), 1.0);
    let report = pins.status_json();
    let alive: Vec<(String, bool)> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(alive, [(a.name(), false), (b.name(), true)]);

    // Restarted, a takes over its own entries (and links) and nothing else.
    let (gw_a, line) = a.start(&cgroup, &pins);
    assert!(
        line.contains("taken_over=5") && line.contains("attached=0"),
        "{line}"
    );
    let report = pins.status_json();
    let pids: Vec<u64> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [u64::from(gw_a.id()), u64::from(pid_b)]);
    assert_eq!(owners(&report).len(), 4);

    // A plain detach refuses to remove two instances at once, and says how to choose.
    let out = gateway_output(&["detach", "--pin-dir", pins.arg()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plain detach removed two instances");
    assert!(
        stderr.contains("2 instances share") && stderr.contains("--instance NAME"),
        "{stderr}"
    );
    assert!(!remote_reaches(&hosts, a.upstream));

    // Detaching a (while it runs) leaves b enforcing, and a says it lost its protection.
    let out = gateway_output(&["detach", "--instance", &a.name(), "--pin-dir", pins.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        remote_reaches(&hosts, a.upstream),
        "a's upstream still blocked"
    );
    assert!(
        !bind_refused(&cgroup, &binds, a.listen),
        "a's listen port still blocked"
    );
    assert!(
        !remote_reaches(&hosts, b.upstream),
        "b's upstream lost its protection"
    );
    assert!(
        bind_refused(&cgroup, &binds, b.listen),
        "b's listen port lost its protection"
    );
    assert_eq!((a.enforcing(), b.enforcing()), (0.0, 1.0));
    let mut gw_a = gw_a;
    gw_a.wait_for_log("KERNEL ENFORCEMENT LOST", Duration::from_secs(15));
    assert_eq!(owners(&pins.status_json()).len(), 2);

    // The last instance detached: programs gone, counters kept.
    let out = gateway_output(&["detach", "--instance", &b.name(), "--pin-dir", pins.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("programs detached", Duration::from_secs(5), || {
        mcp_gateway::ebpf::sys::attached_programs(cgroup.path())
            .expect("query")
            .is_empty()
    });
    assert!(remote_reaches(&hosts, b.upstream));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the counters"));
    drop(gw_b);
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn one_gateway_with_two_servers_protects_both_servers_ports() {
    require_privileges();
    let cgroup = TestCgroup::new("servers");
    let hosts = HostPair::new("sv");
    let binds = NetnsGuard::new("svb");
    let pins = PinDir::new("servers");
    let _up_a = listen(cgroup.path(), &hosts.server, "0.0.0.0:18400");
    let _up_b = listen(cgroup.path(), &hosts.server, "0.0.0.0:18500");
    assert!(
        remote_reaches(&hosts, 18400) && remote_reaches(&hosts, 18500),
        "setup"
    );
    let config = "[[server]]\nname = \"weather\"\nlisten = \"127.0.0.1:18791\"\n\
                  upstream = \"http://127.0.0.1:18400/mcp\"\n\
                  [[server]]\nname = \"db\"\nlisten = \"127.0.0.1:18792\"\n\
                  upstream = \"http://127.0.0.1:18500/mcp\"\n";
    let cg = cgroup.path().to_str().expect("utf-8");
    let gw = ConfigGateway::start(
        config,
        &[
            "--ebpf",
            "required",
            "--cgroup",
            cg,
            "--pin-dir",
            pins.arg(),
        ],
    );
    for port in [18400, 18500] {
        assert!(
            !remote_reaches(&hosts, port),
            "upstream port {port} reachable"
        );
    }
    for port in [18400, 18500, 18791, 18792] {
        assert!(
            bind_refused(&cgroup, &binds, port),
            "bind 0.0.0.0:{port} allowed"
        );
    }
    let samples = gw.samples();
    assert_eq!(value(&samples, "mcp_gateway_ebpf_enforcing", &[]), 1.0);
    // Kernel drops land under the server whose port they hit.
    let drops = |server: &str| {
        value(
            &samples,
            "mcp_gateway_rejections_total",
            &[("server", server), ("reason", "non_loopback_packet")],
        )
    };
    assert_eq!((drops("weather"), drops("db")), (1.0, 1.0));
    let report = pins.status_json();
    let servers: Vec<(u64, String)> = report["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap(),
                r["owners"][0]["server"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            (18400, "weather".into()),
            (18500, "db".into()),
            (18791, "weather".into()),
            (18792, "db".into()),
        ]
    );
    // One instance for the whole process, named after both listen addresses.
    assert_eq!(
        report["instances"][0]["name"],
        "127.0.0.1:18791,127.0.0.1:18792"
    );
}
