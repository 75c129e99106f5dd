//! `mcp-gateway scan` on a host of its own: a network namespace the test made (sock_diag lists
//! one namespace, so the scan sees exactly the test's listeners), holding at once the official
//! Python SDK server on 0.0.0.0 with its protection off, the same SDK with its protection on on
//! loopback, a plain HTTP server, a TCP server that is not HTTP, one that never answers, and the
//! official TypeScript SDK server on loopback with its protection off, and on.
//!
//! Those are privileged (`ip netns` needs root; run by `cargo xtask test`); one test runs
//! without privileges in the host's namespace, on loopback listeners of its own only.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    cgroup::TestCgroup,
    e2e::{TempDir, Transport, Upstream, assets, free_port, node_project, python},
    netns::NetnsGuard,
    pins::PinDir,
    process::{ChildGuard, clean_gateway_env, gateway_bin, gateway_command, in_cgroup},
    require_privileges,
};
use serde_json::Value;

const EXPOSED: u16 = 8001;
const DEFENDED: u16 = 8002;
const PLAIN_HTTP: u16 = 8003;
const BANNER: u16 = 8004;
const SILENT: u16 = 8005;
const TYPESCRIPT: u16 = 8006;
const TYPESCRIPT_DEFENDED: u16 = 8007;
/// A plain HTTP server on one non-loopback address of the namespace (from 198.18.0.0/15).
const BOUND: u16 = 8008;
const BOUND_ADDR: &str = "198.18.0.1";

/// A command run in `ns` (and in `cgroup` when given): nsenter, not `ip netns exec`, which
/// mounts a /sys of its own and so hides the cgroup-v2 mount and the pins.
fn enter(ns: &NetnsGuard, cgroup: Option<&Path>) -> Command {
    let mut cmd = in_cgroup(cgroup, Path::new("nsenter"));
    cmd.arg(format!("--net=/run/netns/{}", ns.name())).arg("--");
    cmd
}

/// `mcp-gateway scan ARGS` inside `ns`, with a pin directory that does not exist (the host's
/// own pins must not leak into the verdicts).
fn scan(ns: &NetnsGuard, args: &[&str]) -> (Output, Duration) {
    scan_in(
        ns,
        None,
        Path::new("/nonexistent/mcp-gateway-scan-test"),
        args,
    )
}

/// `mcp-gateway scan --pin-dir PINS ARGS` inside `ns`, and in `cgroup` when given.
fn scan_in(
    ns: &NetnsGuard,
    cgroup: Option<&Path>,
    pins: &Path,
    args: &[&str],
) -> (Output, Duration) {
    let mut cmd = enter(ns, cgroup);
    cmd.arg(gateway_bin())
        .args(["scan", "--pin-dir"])
        .arg(pins)
        .args(args)
        .stdin(Stdio::null());
    clean_gateway_env(&mut cmd);
    let start = Instant::now();
    let out = cmd.output().expect("running mcp-gateway scan");
    (out, start.elapsed())
}

struct Host {
    ns: NetnsGuard,
    exposed: Upstream,
    _defended: Upstream,
    _fakes: ChildGuard,
    _typescript: [ChildGuard; 2],
}

fn host(label: &str) -> Host {
    require_privileges();
    let ns = NetnsGuard::new(label);
    ns.ip(&["addr", "add", &format!("{BOUND_ADDR}/32"), "dev", "lo"]);
    let exposed = Upstream::start_in(
        ns.name(),
        None,
        "0.0.0.0",
        EXPOSED,
        Transport::Streamable,
        false,
    );
    let defended = Upstream::start_in(
        ns.name(),
        None,
        "127.0.0.1",
        DEFENDED,
        Transport::Streamable,
        true,
    );
    let mut cmd = enter(&ns, None);
    cmd.arg(python())
        .arg(assets().join("scan_fakes.py"))
        .args(["--http", &PLAIN_HTTP.to_string()])
        .args(["--banner", &BANNER.to_string()])
        .args(["--silent", &SILENT.to_string()])
        .args(["--bound", &format!("{BOUND_ADDR}:{BOUND}")]);
    let mut fakes = ChildGuard::spawn_logged(&mut cmd);
    assert_eq!(fakes.read_line(), "listening");
    let typescript =
        [(TYPESCRIPT, "off"), (TYPESCRIPT_DEFENDED, "on")].map(|(port, protection)| {
            let mut cmd = enter(&ns, None);
            cmd.arg("node")
                .arg(node_project().join("server.mjs"))
                .args(["--port", &port.to_string(), "--protection", protection]);
            let mut server = ChildGuard::spawn_logged(&mut cmd);
            assert_eq!(server.read_line(), format!("listening {port}"));
            server
        });
    Host {
        ns,
        exposed,
        _defended: defended,
        _fakes: fakes,
        _typescript: typescript,
    }
}

fn socket(report: &Value, port: u16) -> &Value {
    report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == port)
        .unwrap_or_else(|| panic!("port {port} not in the report: {report:#}"))
}

fn codes(socket: &Value) -> Vec<&str> {
    socket["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect()
}

#[test]
#[ignore = "privileged: needs root for ip netns; run by `cargo xtask test`"]
fn every_kind_of_listener_is_classified_in_bounded_time_in_both_forms() {
    let host = host("scan");
    let (out, took) = scan(&host.ns, &["--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an exposed server: exit 1\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The silent socket costs one timeout (2 s); everything else answers at once.
    assert!(took < Duration::from_secs(10), "the scan took {took:?}");
    let report: Value = serde_json::from_str(&stdout).expect("--json is JSON");
    assert_eq!(report["schema"], "mcp-gateway-scan/1");
    let ports: Vec<u64> = report["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ports,
        [8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008],
        "exactly the test's listeners"
    );

    let exposed = socket(&report, EXPOSED);
    assert_eq!(exposed["verdict"], "exposed", "{exposed:#}");
    assert_eq!(exposed["bind_scope"], "all");
    assert_eq!(exposed["mcp"]["name"], "e2e-upstream");
    assert_eq!(exposed["mcp"]["path"], "/mcp");
    assert_eq!(exposed["rebinding"]["foreign_host"]["result"], "accepted");
    assert_eq!(exposed["rebinding"]["foreign_origin"]["result"], "accepted");
    assert_eq!(
        codes(exposed),
        [
            "binds-all-interfaces",
            "foreign-host-accepted",
            "foreign-origin-accepted",
            "no-kernel-protection"
        ]
    );
    let owner = &exposed["owner"];
    assert!(
        owner["cmdline"].as_str().unwrap().contains("server.py"),
        "{owner:#}"
    );

    let defended = socket(&report, DEFENDED);
    assert_eq!(defended["verdict"], "protected", "{defended:#}");
    assert_eq!(defended["bind_scope"], "loopback");
    assert_eq!(defended["rebinding"]["foreign_host"]["result"], "refused");
    assert_eq!(defended["rebinding"]["foreign_origin"]["result"], "refused");

    let typescript = socket(&report, TYPESCRIPT);
    assert_eq!(typescript["verdict"], "exposed", "{typescript:#}");
    assert_eq!(typescript["bind_scope"], "loopback");
    assert_eq!(typescript["mcp"]["name"], "e2e-ts-upstream");
    assert_eq!(
        codes(typescript),
        [
            "foreign-host-accepted",
            "foreign-origin-accepted",
            "no-kernel-protection"
        ]
    );

    let ts_defended = socket(&report, TYPESCRIPT_DEFENDED);
    assert_eq!(ts_defended["verdict"], "protected", "{ts_defended:#}");
    assert_eq!(
        ts_defended["rebinding"]["foreign_host"]["result"],
        "refused"
    );
    assert_eq!(
        ts_defended["rebinding"]["foreign_origin"]["result"],
        "refused"
    );

    let plain = socket(&report, PLAIN_HTTP);
    assert_eq!(
        (&plain["verdict"], &plain["probe"]),
        (&"not-mcp".into(), &"not-mcp".into())
    );
    let banner = socket(&report, BANNER);
    assert_eq!(
        (&banner["verdict"], &banner["probe"]),
        (&"not-mcp".into(), &"not-http".into())
    );
    assert_eq!(
        banner["requests"].as_array().unwrap().len(),
        1,
        "one request to a non-HTTP listener"
    );
    let silent = socket(&report, SILENT);
    assert_eq!(
        (&silent["verdict"], &silent["probe"]),
        (&"unknown".into(), &"no-answer".into())
    );
    assert_eq!(silent["requests"].as_array().unwrap().len(), 1);
    // Bound to one non-loopback address: judged from it, not probed.
    let bound = socket(&report, BOUND);
    assert_eq!(bound["bind_scope"], "address");
    assert_eq!(
        (&bound["verdict"], &bound["probe"]),
        (&"unknown".into(), &"not-probed".into())
    );
    assert_eq!(codes(bound), ["not-probed"]);
    assert!(bound["requests"].as_array().unwrap().is_empty());
    for s in report["sockets"].as_array().unwrap() {
        assert!(s["requests"].as_array().unwrap().len() <= 8, "{s:#}");
    }

    // What reached the unprotected server: never a tool. It answers the 2026-07-28
    // `server/discover`, so every probe is one (no session opened, none left open; the
    // session era's DELETE is checked with the TypeScript SDK in the --deep test).
    assert!(host.exposed.tool_calls().is_empty());
    let requests = host.exposed.requests();
    assert!(
        requests
            .iter()
            .all(|r| r["method"] == "POST" && r["mcp_method"] == "server/discover"),
        "{requests:#?}"
    );
    assert!(requests.len() <= 8);

    // The same verdicts as a table.
    let (out, _) = scan(&host.ns, &[]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    for (verdict, socket) in [
        ("exposed", "0.0.0.0:8001"),
        ("protected", "127.0.0.1:8002"),
        ("not-mcp", "127.0.0.1:8003"),
        ("not-mcp", "127.0.0.1:8004"),
        ("unknown", "127.0.0.1:8005"),
        ("exposed", "127.0.0.1:8006"),
        ("protected", "127.0.0.1:8007"),
        ("unknown", "198.18.0.1:8008"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(verdict) && l.contains(socket)),
            "{verdict} {socket} not in:\n{table}"
        );
    }
    assert!(table.contains("fix: bind it to 127.0.0.1:8001"), "{table}");

    // --probe-bound-addresses probes it there.
    let (out, _) = scan(
        &host.ns,
        &["--json", "--probe-bound-addresses", "--ports", "8008"],
    );
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bound = socket(&report, BOUND);
    assert_eq!(
        (&bound["verdict"], &bound["probe"]),
        (&"not-mcp".into(), &"not-mcp".into()),
        "{bound:#}"
    );
}

#[test]
#[ignore = "privileged: needs root for ip netns; run by `cargo xtask test`"]
fn a_host_without_mcp_exposure_exits_0_and_a_bad_port_list_exits_2() {
    let host = host("scan0");
    let (out, _) = scan(&host.ns, &["--json", "--ports", "8002-8005"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sockets"].as_array().unwrap().len(), 4);
    let (out, _) = scan(&host.ns, &["--ports", "9000-8000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs backwards"));
}

/// Scan, write the configuration, run the gateway with it and the kernel layer, scan again:
/// the exposed server is protected (only the gateway reaches it; the scan itself is refused
/// the connection), and so is the gateway in front of it.
#[test]
#[ignore = "privileged: needs root with CAP_BPF, cgroup v2 and ip netns; run by `cargo xtask test`"]
fn the_config_out_file_run_with_the_kernel_layer_protects_the_exposed_server() {
    require_privileges();
    let cgroup = TestCgroup::new("scancfg");
    let pins = PinDir::new("scancfg");
    let ns = NetnsGuard::new("scancfg");
    let _exposed = Upstream::start_in(
        ns.name(),
        Some(cgroup.path()),
        "0.0.0.0",
        EXPOSED,
        Transport::Streamable,
        false,
    );
    let dir = TempDir::new("scan-config");
    let file = dir.path().join("gateway.toml");
    let file_arg = file.to_str().unwrap();
    let (out, _) = scan_in(
        &ns,
        Some(cgroup.path()),
        pins.path(),
        &["--json", "--config-out", file_arg],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("--config-out wrote the file");
    let config: toml::Value = toml::from_str(&text).expect("TOML");
    let servers = config["server"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{text}");
    assert_eq!(
        servers[0]["upstream"].as_str(),
        Some("http://127.0.0.1:8001/mcp")
    );
    assert_eq!(servers[0]["exclusive_upstream"].as_bool(), Some(true));
    assert_eq!(servers[0]["name"].as_str(), Some("e2e-upstream-8001"));
    assert!(text.contains("server.py"), "names the process:\n{text}");
    let listen: SocketAddr = servers[0]["listen"].as_str().unwrap().parse().unwrap();
    assert!(listen.ip().is_loopback());

    let mut cmd = enter(&ns, Some(cgroup.path()));
    cmd.arg(gateway_bin())
        .args(["run", "--config", file_arg, "--cgroup"])
        .arg(cgroup.path())
        .arg("--pin-dir")
        .arg(pins.path())
        .args(["--metrics-listen", "off", "--log-format", "json"]);
    clean_gateway_env(&mut cmd).env("RUST_LOG", "info");
    let mut gateway = ChildGuard::spawn_logged(&mut cmd);
    gateway.wait_for_log("mcp-gateway listening", Duration::from_secs(30));

    let (out, _) = scan_in(&ns, Some(cgroup.path()), pins.path(), &["--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing exposed any more:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let upstream = socket(&report, EXPOSED);
    assert_eq!(upstream["verdict"], "protected", "{upstream:#}");
    assert_eq!(codes(upstream), ["gateway-exclusive"]);
    assert_eq!(upstream["gateway"]["exclusive"], true);
    assert_eq!(
        upstream["probe"], "connect-failed",
        "the scan's own connection is refused by the kernel: {upstream:#}"
    );
    let front = socket(&report, listen.port());
    assert_eq!(front["verdict"], "protected", "{front:#}");
    assert_eq!(
        front["mcp"]["name"], "e2e-upstream",
        "reached through the gateway"
    );
    assert_eq!(front["rebinding"]["foreign_host"]["result"], "refused");
    assert_eq!(front["rebinding"]["foreign_origin"]["result"], "refused");
}

/// `run --scan-interval`: the background scan exports the verdicts, logs the exposed server
/// once however many scans see it, and leaves the gateway's own listeners alone.
#[test]
#[ignore = "privileged: needs root for ip netns; run by `cargo xtask test`"]
fn a_gateway_scanning_in_the_background_exports_the_verdicts_and_logs_each_exposure_once() {
    require_privileges();
    let ns = NetnsGuard::new("scanrun");
    let _exposed = Upstream::start_in(
        ns.name(),
        None,
        "0.0.0.0",
        EXPOSED,
        Transport::Streamable,
        false,
    );
    let dir = TempDir::new("scan-run");
    let log = dir.path().join("gateway.log");
    let mut cmd = enter(&ns, None);
    cmd.arg(gateway_bin())
        .args([
            "run",
            "--ebpf",
            "off",
            "--upstream",
            "http://127.0.0.1:8002/mcp",
        ])
        .args([
            "--listen",
            "127.0.0.1:8787",
            "--metrics-listen",
            "127.0.0.1:9464",
        ])
        .args(["--scan-interval", "1s", "--log-format", "json"])
        .stderr(std::fs::File::create(&log).unwrap());
    clean_gateway_env(&mut cmd).env("RUST_LOG", "info");
    let _gateway = ChildGuard::spawn(&mut cmd);
    let metrics = || {
        let out = enter(&ns, None)
            .args([
                "curl",
                "-s",
                "--max-time",
                "2",
                "http://127.0.0.1:9464/metrics",
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sample = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = metrics();
        if sample(&text, "mcp_gateway_scan_last_success_timestamp_seconds").is_some_and(|t| t > 0.0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no successful scan in 30 s:\n{text}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        sample(&text, r#"mcp_gateway_scan_servers{verdict="exposed"}"#),
        Some(1.0),
        "{text}"
    );
    // The gateway's own listeners (8787, 9464) are left out: nothing else listens here.
    for verdict in ["protected", "not-mcp", "unknown"] {
        let name = format!(r#"mcp_gateway_scan_servers{{verdict="{verdict}"}}"#);
        assert_eq!(sample(&text, &name), Some(0.0), "{name}\n{text}");
    }
    assert_eq!(sample(&text, "mcp_gateway_scan_failures_total"), Some(0.0));
    assert!(
        !text.contains("rebind.mcp-gateway.invalid"),
        "it probed itself:\n{text}"
    );

    // More scans see the same server: still one log line.
    let first = sample(&text, "mcp_gateway_scan_last_success_timestamp_seconds").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(
        &metrics(),
        "mcp_gateway_scan_last_success_timestamp_seconds",
    )
    .unwrap()
        < first + 2.0
    {
        assert!(Instant::now() < deadline, "the scans stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("an exposed MCP server appeared"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("\"port\":8001") && lines[0].contains("server.py"),
        "{}",
        lines[0]
    );
}

/// Without privileges, in the host's namespace, limited with --ports to listeners of this test
/// on loopback: the SDK with its protection on, an ssh-like banner, and a socket that is never
/// accepted (the kernel completes the handshake; nothing ever answers).
#[test]
fn the_tests_own_loopback_listeners_are_classified_without_needing_root() {
    let defended = Upstream::start(free_port(), Transport::Streamable, true);
    let banner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let banner_port = banner.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in banner.incoming().flatten() {
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, b"SSH-2.0-OpenSSH_9.2p1 fake\r\n");
        }
    });
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let ports = format!("{},{banner_port},{silent_port}", defended.port);
    let start = Instant::now();
    let out = gateway_command()
        .args(["scan", "--json", "--timeout", "1s", "--ports", &ports])
        .args(["--pin-dir", "/nonexistent/mcp-gateway-scan-test"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["sockets"].as_array().unwrap().len(), 3, "{report:#}");
    let verdict = |port: u16| {
        socket(&report, port)["verdict"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(verdict(defended.port), "protected");
    assert_eq!(verdict(banner_port), "not-mcp");
    assert_eq!(verdict(silent_port), "unknown");
    assert_eq!(
        socket(&report, defended.port)["owner"]["cmdline"]
            .as_str()
            .map(|c| c.contains("server.py")),
        Some(true),
        "its own user's processes are visible"
    );
    drop(silent);
}

/// `--deep` with real SDK servers on loopback: the Python SDK (answering the 2026-07-28
/// `server/discover`) and the TypeScript SDK (the 2025 session era, listed within its session),
/// each listing its tools; no tool is ever run.
#[test]
fn deep_lists_the_tools_of_real_sdk_servers_and_runs_none() {
    let python = Upstream::start(free_port(), Transport::Streamable, false);
    let ts_port = free_port();
    let mut ts = ChildGuard::spawn_logged(
        Command::new("node")
            .arg(node_project().join("server.mjs"))
            .args(["--port", &ts_port.to_string(), "--protection", "off"]),
    );
    assert_eq!(ts.read_line(), format!("listening {ts_port}"));
    let ports = format!("{},{ts_port}", python.port);
    let out = gateway_command()
        .args([
            "scan",
            "--json",
            "--deep",
            "--timeout",
            "2s",
            "--ports",
            &ports,
        ])
        .args(["--pin-dir", "/nonexistent/mcp-gateway-scan-test"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let py = socket(&report, python.port);
    assert_eq!(py["mcp"]["era"], "2026-07-28", "{report:#}");
    assert_eq!(py["mcp"]["name"], "e2e-upstream", "{report:#}");
    assert_eq!(
        py["mcp"]["tools"],
        serde_json::json!(["add", "count", "delete_all"]),
        "{report:#}"
    );
    let node = socket(&report, ts_port);
    assert_eq!(node["mcp"]["era"], "2025", "{report:#}");
    // In the session era the list is asked within the session, which is then ended.
    let sent: Vec<&str> = node["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let at = |prefix: &str| sent.iter().position(|r| r.starts_with(prefix));
    assert!(
        at("POST initialize") < at("POST tools/list") && at("POST tools/list") < at("DELETE"),
        "{sent:#?}"
    );
    assert_eq!(
        node["mcp"]["tools"],
        serde_json::json!(["greet"]),
        "{report:#}"
    );
    for s in [py, node] {
        let requests = s["requests"].as_array().expect("requests");
        assert!(requests.len() <= 8, "{s:#}");
        assert!(
            requests
                .iter()
                .any(|r| r.as_str().unwrap().starts_with("POST tools/list")),
            "{s:#}"
        );
    }
    assert!(
        python.tool_calls().is_empty(),
        "a tool ran: {:?}",
        python.tool_calls()
    );
    // Without --deep, no tools are listed.
    let out = gateway_command()
        .args(["scan", "--json", "--timeout", "2s", "--ports", &ports])
        .args(["--pin-dir", "/nonexistent/mcp-gateway-scan-test"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(socket(&report, python.port)["mcp"].get("tools").is_none());
}

/// `--unix` without privileges: the Python SDK serving on a Unix socket is found over it (and is
/// out of reach of web pages: `protected`, with a note when any local user may connect), a Unix
/// socket that speaks something else is `not-mcp`.
#[test]
fn unix_socket_listeners_are_listed_and_probed_over_the_socket() {
    use std::os::unix::fs::PermissionsExt as _;
    let sdk = Upstream::start_unix(Transport::Streamable);
    let sdk_path = sdk.socket.clone().expect("a socket path");
    std::fs::set_permissions(&sdk_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = TempDir::new("scan-unix");
    let banner_path = dir.path().join("banner.sock");
    let banner = std::os::unix::net::UnixListener::bind(&banner_path).unwrap();
    std::thread::spawn(move || {
        for conn in banner.incoming().flatten() {
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, b"220 not http at all\r\n");
        }
    });
    let out = gateway_command()
        .args(["scan", "--json", "--unix", "--deep", "--timeout", "2s"])
        // No TCP port of interest: only the Unix sockets are judged here.
        .args([
            "--ports",
            "1",
            "--pin-dir",
            "/nonexistent/mcp-gateway-scan-test",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let unix = report["unix_sockets"].as_array().expect("unix_sockets");
    let row = |path: &Path| {
        unix.iter()
            .find(|r| r["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{} not listed: {report:#}", path.display()))
    };
    let mcp = row(&sdk_path);
    assert_eq!(mcp["probe"], "mcp", "{mcp:#}");
    assert_eq!(mcp["verdict"], "protected", "{mcp:#}");
    assert_eq!(mcp["mode"], "0777");
    assert_eq!(mcp["mcp"]["name"], "e2e-upstream");
    assert_eq!(
        mcp["mcp"]["tools"],
        serde_json::json!(["add", "count", "delete_all"])
    );
    let codes: Vec<&str> = mcp["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["unix-socket", "any-local-user"]);
    assert!(
        mcp["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.as_str().unwrap().ends_with("Host: localhost")),
        "no rebinding replay over a Unix socket: {mcp:#}"
    );
    assert!(
        mcp["owner"]["pid"].is_u64(),
        "its own user's process is visible"
    );
    assert_eq!(row(&banner_path)["verdict"], "not-mcp");
    assert!(sdk.tool_calls().is_empty());
    // The table says the same.
    let out = gateway_command()
        .args(["scan", "--unix", "--timeout", "2s", "--ports", "1"])
        .args(["--pin-dir", "/nonexistent/mcp-gateway-scan-test"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("protected")
            && l.contains(sdk_path.to_str().unwrap())
            && l.contains("e2e-upstream")),
        "{table}"
    );
    assert!(
        table.contains("any local user may connect (mode 0777)"),
        "{table}"
    );
}
