//! Interop with the official MCP SDKs through the real gateway binary: an upstream built with
//! the Python SDK (`tests/e2e/server.py`), and the Python and TypeScript SDK clients each doing
//! initialize, tools/list, both tool calls (with every progress notification, in order),
//! resources/read and the session's end.
//!
//! The first test to run installs the pinned SDKs (tests/e2e/.venv, tests/e2e/node_modules).
use std::time::Duration;

use mcp_gateway_tests::e2e::{
    Gateway, Sdk, Transport, Upstream, free_port, raw_initialize, run_client, wait_listening,
};
use serde_json::{Value, json};

/// Starts an upstream and a gateway in front of it, runs `sdk`'s client through the gateway,
/// and checks what the client received and what reached the upstream.
fn interop(sdk: Sdk, transport: Transport, protection: bool) {
    interop_with(
        sdk,
        transport,
        Upstream::start(free_port(), transport, protection),
    );
}

fn interop_with(sdk: Sdk, transport: Transport, upstream: Upstream) {
    let gateway = Gateway::start_url(
        free_port(),
        &upstream.url(transport),
        &["--ebpf", "off"],
        None,
    );
    wait_listening(gateway.listen, Duration::from_secs(10));
    let url = format!("http://{}{}", gateway.listen, transport.path());

    let summary = run_client(sdk, &url, transport);

    assert_received_everything(&summary);
    let requests = upstream.requests();
    assert!(!requests.is_empty(), "nothing reached the upstream");
    let upstream_host = match upstream.socket {
        Some(_) => "localhost".to_owned(),
        None => format!("127.0.0.1:{}", upstream.port),
    };
    for r in &requests {
        assert_eq!(
            r["host"], upstream_host,
            "the gateway forwards with the upstream's Host: {r}"
        );
    }
    let methods: Vec<&str> = requests
        .iter()
        .map(|r| r["method"].as_str().unwrap_or_default())
        .collect();
    match transport {
        // The session ends with DELETE, and it went through the gateway to the server.
        Transport::Streamable => assert_eq!(
            methods.last(),
            Some(&"DELETE"),
            "no DELETE ended the session: {methods:?}"
        ),
        Transport::Sse => {
            assert_eq!(requests[0]["path"], "/sse", "{requests:?}");
            assert!(
                requests[1..].iter().all(|r| r["path"] == "/messages/"),
                "{requests:?}"
            );
        }
    }
    let tools: Vec<Value> = upstream
        .tool_calls()
        .into_iter()
        .map(|t| json!([t["name"], t["args"]]))
        .collect();
    assert_eq!(
        tools,
        [
            json!(["add", {"a": 2, "b": 3}]),
            json!(["count", {"steps": 3}])
        ],
        "the tools the upstream ran"
    );
    assert_eq!(
        gateway.rejections(),
        Vec::<(String, String)>::new(),
        "the gateway rejected part of a legitimate session"
    );
}

/// What every client must have received: see tests/e2e/server.py.
fn assert_received_everything(summary: &Value) {
    assert_eq!(summary["server_name"], "e2e-upstream", "{summary}");
    assert_eq!(summary["tools"], json!(["add", "count"]), "{summary}");
    assert_eq!(summary["add"], json!(["5"]), "{summary}");
    assert_eq!(summary["add_is_error"], false, "{summary}");
    assert_eq!(summary["count"], json!(["counted to 3"]), "{summary}");
    let progress: Vec<(f64, f64, String)> = summary["progress"]
        .as_array()
        .expect("progress list")
        .iter()
        .map(|p| {
            (
                p["progress"].as_f64().expect("progress"),
                p["total"].as_f64().expect("total"),
                p["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [
            (1.0, 3.0, "step 1".to_owned()),
            (2.0, 3.0, "step 2".to_owned()),
            (3.0, 3.0, "step 3".to_owned()),
        ],
        "progress notifications, in order"
    );
    assert_eq!(
        summary["resource"],
        json!(["hello from the upstream MCP server"]),
        "{summary}"
    );
    assert_eq!(summary["closed"], true, "{summary}");
}

#[test]
fn python_sdk_client_through_gateway() {
    interop(Sdk::Python, Transport::Streamable, false);
}

#[test]
fn typescript_sdk_client_through_gateway() {
    interop(Sdk::TypeScript, Transport::Streamable, false);
}

#[test]
fn python_sdk_client_over_legacy_sse_through_gateway() {
    interop(Sdk::Python, Transport::Sse, false);
}

#[test]
fn typescript_sdk_client_over_legacy_sse_through_gateway() {
    interop(Sdk::TypeScript, Transport::Sse, false);
}

/// The official Python SDK server on a Unix socket (uvicorn `--uds`): no TCP port at all, the
/// gateway in front, both SDK clients and both transports.
#[test]
fn sdk_clients_through_gateway_to_a_python_sdk_server_on_a_unix_socket() {
    for (sdk, transport) in [
        (Sdk::Python, Transport::Streamable),
        (Sdk::TypeScript, Transport::Streamable),
        (Sdk::Python, Transport::Sse),
    ] {
        interop_with(sdk, transport, Upstream::start_unix(transport));
    }
}

/// With the SDK's own protection on (only Host 127.0.0.1:<its port>), clients through the
/// gateway still work, because the gateway rewrites Host to the upstream's authority.
#[test]
fn clients_work_through_gateway_when_the_upstream_checks_host_itself() {
    for sdk in [Sdk::Python, Sdk::TypeScript] {
        interop(sdk, Transport::Streamable, true);
    }
    // The upstream's protection is really on: the Host a client of the gateway sends (the
    // gateway's address) is refused when it reaches the upstream unchanged.
    let upstream = Upstream::start(free_port(), Transport::Streamable, true);
    let gateway_host = format!("127.0.0.1:{}", free_port());
    assert_eq!(raw_initialize(upstream.port, &gateway_host), 421);
    assert_eq!(
        raw_initialize(upstream.port, &format!("127.0.0.1:{}", upstream.port)),
        200
    );
}
