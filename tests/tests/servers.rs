//! One gateway process serving two MCP servers from `[[server]]` tables, each with its own
//! policy: the Host/Origin check, the routing to the right upstream, the `server` metric label
//! and the server named in the logs, per server. (The kernel side of the same setup is in
//! `kernel_instances.rs`.)
use std::time::Duration;

use http::StatusCode;
use mcp_gateway_tests::{
    client::{request, send_full},
    gateway::ConfigGateway,
    prometheus::value,
    upstream::Upstream,
};

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;

async fn post(port: u16, host: &str, origin: Option<&str>) -> StatusCode {
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("host", host.as_bytes()),
        ("content-type", b"application/json"),
    ];
    if let Some(origin) = origin {
        headers.push(("origin", origin.as_bytes()));
    }
    let addr = ([127, 0, 0, 1], port).into();
    send_full(addr, request("POST", "/mcp", &headers, INIT))
        .await
        .0
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_in_one_process_each_keep_their_own_policy_upstream_and_label() {
    let (up_a, up_b) = (Upstream::start().await, Upstream::start().await);
    let (port_a, port_b) = (
        mcp_gateway_tests::e2e::free_port(),
        mcp_gateway_tests::e2e::free_port(),
    );
    // Top-level keys are defaults; `b` overrides the mode and allows one origin.
    let config = format!(
        "mode = \"permissive\"\n\
         [[server]]\nname = \"weather\"\nlisten = \"127.0.0.1:{port_a}\"\nupstream = \"http://{}/mcp\"\n\
         [[server]]\nname = \"db\"\nlisten = \"127.0.0.1:{port_b}\"\nupstream = \"http://{}/mcp\"\n\
         mode = \"strict\"\nallowed_origins = [\"https://app.example.com\"]\n",
        up_a.addr, up_b.addr
    );
    let mut gw = ConfigGateway::start(&config, &["--ebpf", "off"]);
    let host_a = format!("127.0.0.1:{port_a}");
    let host_b = format!("127.0.0.1:{port_b}");

    // Each listener reaches its own upstream, and only that one.
    assert_eq!(post(port_a, &host_a, None).await, StatusCode::OK);
    assert_eq!((up_a.requests().len(), up_b.requests().len()), (1, 0));
    assert_eq!(post(port_b, &host_b, None).await, StatusCode::OK);
    assert_eq!((up_a.requests().len(), up_b.requests().len()), (1, 1));

    // Host is checked per server: each server's own port only; rebinding names nowhere.
    let cases = [
        (port_a, host_b.clone(), None, StatusCode::FORBIDDEN),
        (port_b, host_a.clone(), None, StatusCode::FORBIDDEN),
        (
            port_a,
            format!("rebind.test:{port_a}"),
            None,
            StatusCode::FORBIDDEN,
        ),
        // Origin per server: `weather` (permissive) takes a loopback page, `db` (strict) only
        // its configured origin.
        (
            port_a,
            host_a.clone(),
            Some("http://localhost:3000"),
            StatusCode::OK,
        ),
        (
            port_b,
            host_b.clone(),
            Some("http://localhost:3000"),
            StatusCode::FORBIDDEN,
        ),
        (
            port_b,
            host_b.clone(),
            Some("https://app.example.com"),
            StatusCode::OK,
        ),
        (
            port_a,
            host_a.clone(),
            Some("https://app.example.com"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (port, host, origin, want) in &cases {
        assert_eq!(
            post(*port, host, *origin).await,
            *want,
            "{port} {host} {origin:?}"
        );
    }
    assert_eq!(
        (up_a.requests().len(), up_b.requests().len()),
        (2, 2),
        "only the allowed requests reached an upstream, each its own"
    );

    // Logs name the server.
    let line = gw
        .child
        .wait_for_log("rejected request", Duration::from_secs(10));
    assert!(
        line.contains("server=weather") || line.contains("server=db"),
        "{line}"
    );

    // Every per-request series carries the server label; rejections are counted per server.
    let samples = gw.samples();
    let rejected = |server: &str, reason: &str, origin: &str| {
        value(
            &samples,
            "mcp_gateway_rejections_total",
            &[("server", server), ("reason", reason), ("origin", origin)],
        )
    };
    assert_eq!(rejected("weather", "host", &host_b), 1.0);
    assert_eq!(rejected("db", "host", &host_a), 1.0);
    assert_eq!(
        rejected("weather", "host", &format!("rebind.test:{port_a}")),
        1.0
    );
    assert_eq!(rejected("db", "origin", "http://localhost:3000"), 1.0);
    assert_eq!(
        rejected("weather", "origin", "https://app.example.com"),
        1.0
    );
    assert_eq!(rejected("weather", "origin", "http://localhost:3000"), 0.0);
    let requests = |server: &str, status: &str| {
        value(
            &samples,
            "mcp_gateway_requests_total",
            &[("server", server), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(
        (requests("weather", "200"), requests("weather", "403")),
        (2.0, 3.0)
    );
    assert_eq!((requests("db", "200"), requests("db", "403")), (2.0, 2.0));
    for name in ["mcp_gateway_open_connections", "mcp_gateway_sse_streams"] {
        let servers: Vec<&str> = samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get("server").map(String::as_str))
            .collect();
        assert_eq!(servers, ["weather", "db"], "{name}");
    }
}
