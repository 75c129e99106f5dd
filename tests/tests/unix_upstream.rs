//! Unix-socket upstreams: the MCP server has no TCP port; file permissions are the boundary.
use std::{os::unix::fs::PermissionsExt as _, process::Stdio, time::Duration};

use http::StatusCode;
use http_body_util::BodyExt as _;
use mcp_gateway::config::upstream;
use mcp_gateway_tests::{
    client::{request, send, send_full},
    e2e::{TempDir, free_port},
    gateway::{Options, TestGateway},
    process::{ChildGuard, gateway_command},
    upstream::Upstream,
};

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;

fn options(socket: &std::path::Path) -> Options {
    Options {
        upstream: Some(upstream::parse(&format!("unix:{}", socket.display())).expect("valid")),
        ..Options::default()
    }
}

fn error_message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON-RPC body");
    assert_eq!(v["jsonrpc"], "2.0");
    v["error"]["message"].as_str().expect("message").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_sse_reach_a_socket_upstream_intact() {
    let dir = TempDir::new("uds");
    let socket = dir.path().join("mcp.sock");
    let upstream = Upstream::start_unix(&socket);
    let gw = TestGateway::start(([127, 0, 0, 1], 9).into(), options(&socket)).await;
    let host = gw.host();
    let (resp, body) = send_full(
        gw.addr,
        request(
            "POST",
            "/mcp?x=1",
            &[
                ("host", host.as_bytes()),
                ("content-type", b"application/json"),
                ("x-custom", b"kept"),
            ],
            INIT,
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{body:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/mcp?x=1", "paths pass through unchanged");
    assert_eq!(&seen[0].body[..], INIT);
    assert_eq!(seen[0].headers["host"], "localhost");
    assert_eq!(seen[0].headers["x-custom"], "kept");
    assert_eq!(seen[0].headers["x-forwarded-host"], host.as_str());

    // SSE streams through event by event.
    let resp = send(
        gw.addr,
        request(
            "GET",
            "/sse?events=3&every_ms=20",
            &[("host", host.as_bytes())],
            b"",
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("stream").to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body)
            .matches("event: message")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_socket_gives_502_naming_the_path() {
    let dir = TempDir::new("uds-missing");
    let socket = dir.path().join("absent.sock");
    let gw = TestGateway::start(([127, 0, 0, 1], 9).into(), options(&socket)).await;
    let host = gw.host();
    let (resp, body) = send_full(
        gw.addr,
        request(
            "POST",
            "/mcp",
            &[
                ("host", host.as_bytes()),
                ("content-type", b"application/json"),
            ],
            INIT,
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let message = error_message(&body);
    assert_eq!(
        message,
        format!(
            "Bad gateway: the MCP server's socket {} does not exist",
            socket.display()
        )
    );
}

/// The real binary as `nobody` in front of a root-only socket: 502 saying so, and a log line
/// that names the user the gateway runs as (the fix is the socket's group or mode).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "privileged: needs root to run the gateway as another user; run by `cargo xtask test`"]
async fn permission_denied_on_the_socket_gives_502_and_names_the_gateway_user() {
    mcp_gateway_tests::require_privileges();
    let dir = TempDir::new("uds-perm");
    let socket = dir.path().join("private.sock");
    let upstream = Upstream::start_unix(&socket);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let port = free_port();
    let mut cmd = std::process::Command::new("setpriv");
    let gw = gateway_command();
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(gw.get_program())
        .env("RUST_LOG", "info")
        .args([
            "run",
            "--ebpf",
            "off",
            "--metrics-listen",
            "off",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(format!("unix:{}", socket.display()))
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn_logged(&mut cmd);
    child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
    let host = format!("127.0.0.1:{port}");
    let (resp, body) = send_full(
        ([127, 0, 0, 1], port).into(),
        request(
            "POST",
            "/mcp",
            &[
                ("host", host.as_bytes()),
                ("content-type", b"application/json"),
            ],
            INIT,
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        error_message(&body),
        format!(
            "Bad gateway: permission denied on the MCP server's socket {}",
            socket.display()
        )
    );
    let line = child.wait_for_log(
        "permission denied on the upstream socket",
        Duration::from_secs(10),
    );
    assert!(line.contains("uid 65534 (nobody), gid 65534"), "{line}");
    assert!(upstream.requests().is_empty());
}
