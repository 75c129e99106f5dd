//! `/metrics` and `mcp-gateway stats` without the kernel layer: exact counts, hostile labels
//! checked by `promtool`, and a real Prometheus server scraping the gateway.
//!
//! Every binary run passes `--ebpf off` and a `--metrics-listen` on a free port (never the
//! default 9464: tests run in parallel).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    gateway::{BinaryGateway, Options, TestGateway, hammer},
    process::gateway_command,
    prometheus::{
        PrometheusServer, Sample, free_port, http_get, parse, promtool_check, rejections, scrape,
    },
    upstream::Upstream,
};

async fn scrape_async(addr: SocketAddr) -> Vec<Sample> {
    let text = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .expect("scrape task");
    parse(&text)
}

fn requests(samples: &[Sample], method: &str, status: &str) -> u64 {
    samples
        .iter()
        .filter(|s| {
            s.name == "mcp_gateway_requests_total"
                && s.labels["method"] == method
                && s.labels["status"] == status
        })
        .map(|s| s.value as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_rejections_count_exactly_ten_thousand() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let before = scrape_async(gw.metrics_addr).await;
    let origin = "http://evil.test";
    assert_eq!(rejections(&before, "origin", origin), 0);

    let started = Instant::now();
    let statuses = hammer(
        gw.addr,
        50,
        200,
        vec![
            ("host".into(), gw.host().into_bytes()),
            ("origin".into(), origin.as_bytes().to_vec()),
        ],
    )
    .await;
    eprintln!(
        "10000 rejections over 50 connections (in-process counters): {:?}",
        started.elapsed()
    );
    assert_eq!(statuses, [(403, 10_000)].into_iter().collect());

    let after = scrape_async(gw.metrics_addr).await;
    assert_eq!(rejections(&after, "origin", origin), 10_000);
    assert_eq!(requests(&after, "POST", "403"), 10_000);
    assert!(
        upstream.requests().is_empty(),
        "a rejection reached the upstream"
    );
}

// Multi-threaded: the SSE client below uses a blocking socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_sse_streams_and_upstream_durations_are_counted() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        upstream.addr,
        Options {
            auth_token: Some("secret-token"),
            ..Options::default()
        },
    )
    .await;
    let host = gw.host();
    let statuses = hammer(
        gw.addr,
        1,
        3,
        vec![("host".into(), host.clone().into_bytes())],
    )
    .await;
    assert_eq!(statuses, [(401, 3)].into_iter().collect());
    // An SSE stream held open while scraping.
    let mut sse = TcpStream::connect(gw.addr).expect("connect");
    write!(
        sse,
        "GET /sse?events=50&every_ms=100 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer secret-token\r\n\r\n"
    )
    .expect("write");
    let mut first = [0u8; 64];
    let n = sse.read(&mut first).expect("read the response head");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let samples = scrape_async(gw.metrics_addr).await;
    assert_eq!(rejections(&samples, "auth", &host), 3);
    let gauge = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .value
    };
    assert_eq!(gauge("mcp_gateway_sse_streams"), 1.0);
    assert!(gauge("mcp_gateway_open_connections") >= 1.0);
    assert_eq!(
        gauge("mcp_gateway_upstream_request_duration_seconds_count"),
        1.0
    );
    assert_eq!(gauge("mcp_gateway_ebpf_enforcing"), 0.0);
    drop(sse);
    // The stream's end is seen once the gateway notices the client left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape_async(gw.metrics_addr).await;
        let open = samples
            .iter()
            .find(|s| s.name == "mcp_gateway_sse_streams")
            .map(|s| s.value);
        if open == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "SSE gauge stuck at {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Distinct hostile origins that survive HTTP parsing: quotes, backslashes, `"} evil_metric 1`,
/// tabs and bytes that are not UTF-8.
fn hostile(i: usize) -> Vec<u8> {
    match i % 5 {
        0 => format!("\"}} evil_metric 1 {i}").into_bytes(),
        1 => format!("http://\"\"{i}\".test").into_bytes(),
        2 => format!("http://a\\\"\\n{i}\\").into_bytes(),
        3 => [b"http://\xff\xfe\"".as_slice(), i.to_string().as_bytes()].concat(),
        _ => format!("\"}} evil_metric{{x=\"1\"}} 1\t# {i}").into_bytes(),
    }
}

/// Origins with raw newlines or control characters: HTTP parsing refuses them (400, never
/// counted); sent anyway.
fn unparseable(i: usize) -> Vec<u8> {
    match i % 2 {
        0 => format!("x{i}\nevil_metric 1").into_bytes(),
        _ => format!("\"}} evil_metric 1 {i}\x01\r").into_bytes(),
    }
}

/// Sends one request with raw header bytes; returns the status (0 when the connection closed).
fn raw_request(addr: SocketAddr, host: &[u8], origin: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = b"POST /mcp HTTP/1.1\r\nHost: ".to_vec();
    req.extend_from_slice(host);
    req.extend_from_slice(b"\r\nOrigin: ");
    req.extend_from_slice(origin);
    req.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(&req).expect("write");
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_origins_cannot_inject_series_and_promtool_accepts_the_output() {
    let budget = 50;
    let upstream: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = BinaryGateway::start(
        upstream,
        &[
            "--ebpf",
            "off",
            "--metrics-label-budget",
            &budget.to_string(),
        ],
    );
    let host = gw.host();
    let mut forbidden = 0;
    let mut host_forbidden = 0;
    for i in 0..200 {
        assert_eq!(
            raw_request(gw.listen, host.as_bytes(), &hostile(i)),
            403,
            "hostile origin {i}"
        );
        forbidden += 1;
        if i % 10 == 0 && raw_request(gw.listen, &hostile(i + 1000), b"http://localhost") == 403 {
            host_forbidden += 1;
        }
    }
    for i in 0..20 {
        let status = raw_request(gw.listen, host.as_bytes(), &unparseable(i));
        assert!(
            matches!(status, 400 | 0),
            "unparseable origin {i} got {status}"
        );
    }
    assert!(host_forbidden > 0, "no hostile Host reached the policy");

    let text = scrape(gw.metrics);
    if let Err(complaints) = promtool_check(&text) {
        panic!("{complaints}\n--- exposition ---\n{text}");
    }
    for line in text.lines() {
        assert!(
            line.starts_with("mcp_gateway_")
                || line.starts_with("# HELP mcp_gateway_")
                || line.starts_with("# TYPE mcp_gateway_"),
            "injected or foreign line: {line:?}"
        );
    }
    let samples = parse(&text);
    assert!(samples.iter().all(|s| s.name.starts_with("mcp_gateway_")));
    let series: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "mcp_gateway_rejections_total")
        .collect();
    let origin_series = series
        .iter()
        .filter(|s| s.labels["reason"] == "origin")
        .count();
    assert!(
        origin_series <= budget + 1,
        "{origin_series} origin series for a budget of {budget}"
    );
    let total = |reason: &str| -> u64 {
        series
            .iter()
            .filter(|s| s.labels["reason"] == reason)
            .map(|s| s.value as u64)
            .sum()
    };
    assert_eq!(total("origin"), forbidden, "every rejection counted once");
    assert_eq!(total("host"), host_forbidden);
    assert!(
        rejections(&samples, "origin", "other") > 0,
        "no overflow series"
    );
    // The sanitiser's escapes survive as label text: the value is data, not syntax.
    assert!(
        series
            .iter()
            .any(|s| s.labels["origin"].starts_with("\\x22} evil_metric 1")),
        "{series:?}"
    );

    // OpenMetrics on request, with the same samples and its end marker.
    let (status, content_type, om) = http_get(
        gw.metrics,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE mcp_gateway_rejections counter"));
    assert!(!om.lines().any(|l| l.starts_with("evil")));
}

#[test]
fn a_real_prometheus_scrapes_the_rejection_counts() {
    let upstream: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = BinaryGateway::start(upstream, &["--ebpf", "off"]);
    let host = gw.host();
    for _ in 0..7 {
        assert_eq!(
            raw_request(gw.listen, host.as_bytes(), b"http://rebind.test"),
            403
        );
    }
    for _ in 0..3 {
        assert_eq!(
            raw_request(gw.listen, b"rebind.test", b"http://localhost"),
            403
        );
    }
    let prometheus = PrometheusServer::start(&[gw.metrics]);
    let value = |result: &[serde_json::Value]| -> Option<f64> {
        result.first()?["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let origin = prometheus
            .query("mcp_gateway_rejections_total{reason=\"origin\",origin=\"http://rebind.test\"}");
        let host = prometheus.query("sum(mcp_gateway_rejections_total{reason=\"host\"})");
        if value(&origin) == Some(7.0) && value(&host) == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the counts: origin={origin:?} host={host:?} up={:?}",
            prometheus.query("up")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let up = prometheus.query("up{job=\"mcp-gateway\"}");
    assert_eq!(value(&up), Some(1.0), "{up:?}");
    let enforcing = prometheus.query("mcp_gateway_ebpf_enforcing");
    assert_eq!(value(&enforcing), Some(0.0), "{enforcing:?}");
}

fn gateway(args: &[&str]) -> Command {
    let mut cmd = gateway_command();
    cmd.args(args);
    cmd.stdin(Stdio::null());
    cmd
}

#[test]
fn stats_says_clearly_when_no_map_is_pinned() {
    let dir = std::env::temp_dir().join(format!("mcp-gateway-test-nopins-{}", std::process::id()));
    let out = gateway(&["stats", "--pin-dir", dir.to_str().unwrap()])
        .output()
        .expect("run stats");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no counters map is pinned") && stderr.contains("detach"),
        "{stderr}"
    );
    let out = gateway(&["stats", "--json", "--pin-dir", dir.to_str().unwrap()])
        .output()
        .expect("run stats --json");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["pinned"], false);
}

#[test]
fn metrics_listener_settings_are_validated_and_can_be_turned_off() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = gateway(&[
        "run",
        "--ebpf",
        "off",
        "--upstream",
        "http://127.0.0.1:1/mcp",
        "--listen",
        &listen,
        "--metrics-listen",
        &listen,
    ])
    .output()
    .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics_listen:"), "{stderr}");

    let out = gateway(&[
        "run",
        "--ebpf",
        "off",
        "--upstream",
        "http://127.0.0.1:1/mcp",
        "--metrics-listen",
        "nowhere",
    ])
    .output()
    .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nor `off`"));

    let mut cmd = gateway(&[
        "run",
        "--ebpf",
        "off",
        "--upstream",
        "http://127.0.0.1:1/mcp",
        "--listen",
        &listen,
        "--metrics-listen",
        "off",
    ]);
    cmd.env("RUST_LOG", "info");
    let mut child = mcp_gateway_tests::process::ChildGuard::spawn_logged(&mut cmd);
    child.wait_for_log("metrics listener is off", Duration::from_secs(30));
}

#[test]
fn deploy_rules_config_and_dashboard_are_valid_and_name_real_metrics() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy");
    let promtool = mcp_gateway_tests::tools::promtool();
    for (what, file) in [
        ("rules", "prometheus/mcp-gateway-alerts.yml"),
        ("config", "prometheus/prometheus.yml"),
    ] {
        let out = Command::new(&promtool)
            .args(["check", what])
            .arg(deploy.join(file))
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dashboard =
        std::fs::read_to_string(deploy.join("grafana/mcp-gateway-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let alerts = std::fs::read_to_string(deploy.join("prometheus/mcp-gateway-alerts.yml")).unwrap();

    // Every metric name they use is one the gateway exports.
    let upstream: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = BinaryGateway::start(upstream, &["--ebpf", "off"]);
    let exported: Vec<String> = scrape(gw.metrics)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for text in [&dashboard, &alerts] {
        for (i, _) in text.match_indices("mcp_gateway_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                exported.iter().any(|e| e == base),
                "{name} is not exported: {exported:?}"
            );
        }
    }
}

/// The alert rules' unit tests pass, and every rule has one case that fires it and one that
/// must not (an alert with only a firing case could fire on anything).
#[test]
fn every_alert_rule_has_a_firing_and_a_quiet_promtool_test_that_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let out = Command::new(mcp_gateway_tests::tools::promtool())
        .args(["test", "rules"])
        .arg(dir.join("mcp-gateway-alerts.test.yml"))
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = std::fs::read_to_string(dir.join("mcp-gateway-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("mcp-gateway-alerts.test.yml")).unwrap();
    let names: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 5, "alert rules: {names:?}");
    // Each `alertname:` line is followed by its `exp_alerts:`, empty (`[]`) or not.
    let mut cases: Vec<(&str, bool)> = Vec::new();
    let mut lines = tests.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("alertname: ") {
            let exp = lines.next().unwrap_or_default();
            assert!(exp.starts_with("exp_alerts:"), "after {name}: {exp}");
            cases.push((name, exp != "exp_alerts: []"));
        }
    }
    for name in names {
        for fires in [true, false] {
            assert!(
                cases.contains(&(name, fires)),
                "{name} has no promtool case where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

#[tokio::test]
async fn metrics_on_loopback_refuse_rebound_hosts_and_browser_origins() {
    use mcp_gateway_tests::client::{request, send_full};
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let port = gw.metrics_addr.port();
    let own = format!("127.0.0.1:{port}");
    let rebound = format!("rebind.test:{port}");
    let localhost = format!("localhost:{port}");
    // (request headers, expected status)
    type Case<'a> = (&'a [(&'a str, &'a [u8])], u16);
    let cases: [Case; 4] = [
        (&[("host", own.as_bytes())], 200),
        (&[("host", localhost.as_bytes())], 200),
        (&[("host", rebound.as_bytes())], 403),
        (
            &[("host", own.as_bytes()), ("origin", b"http://evil.test")],
            403,
        ),
    ];
    for (headers, want) in cases {
        let (resp, body) =
            send_full(gw.metrics_addr, request("GET", "/metrics", headers, b"")).await;
        assert_eq!(resp.status().as_u16(), want, "{headers:?}");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            body.contains("mcp_gateway_build_info"),
            want == 200,
            "{headers:?}: {body}"
        );
    }
}
