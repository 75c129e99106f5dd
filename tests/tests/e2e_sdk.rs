//! Interop with the official MCP SDKs through the real gateway binary: an upstream built with
//! the Python SDK (`tests/e2e/server.py`), and the Python and TypeScript SDK clients each doing
//! initialize, tools/list, both tool calls (with every progress notification, in order),
//! resources/read and the session's end.
//!
//! The first test to run installs the pinned SDKs (tests/e2e/.venv, tests/e2e/node_modules).
use std::time::Duration;

use mcp_gateway_tests::{
    e2e::{
        Gateway, Sdk, Transport, Upstream, free_port, raw_initialize, raw_initialize_from,
        run_client_with, wait_listening,
    },
    pki::Pki,
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
    run_interop(sdk, transport, upstream, &[], None, None);
}

/// HTTPS for `run_interop`: the gateway's TLS flags, and the client's.
struct Tls {
    gateway: Vec<String>,
    client: Vec<String>,
}

/// The tool a gateway allowlist refuses in these tests.
const REFUSED: &str = "delete_all";

/// One SDK client's whole session through a gateway with `flags`; with `refused`, the client
/// also calls that tool and the gateway must have refused it.
fn run_interop(
    sdk: Sdk,
    transport: Transport,
    upstream: Upstream,
    flags: &[&str],
    refused: Option<&str>,
    tls: Option<&Tls>,
) {
    let mut all = vec!["--ebpf", "off"];
    all.extend_from_slice(flags);
    all.extend(
        tls.iter()
            .flat_map(|t| t.gateway.iter().map(String::as_str)),
    );
    let gateway = Gateway::start_url(free_port(), &upstream.url(transport), &all, None);
    wait_listening(gateway.listen, Duration::from_secs(10));
    let url = match tls {
        // The name the gateway's certificate is for.
        Some(_) => format!(
            "https://localhost:{}{}",
            gateway.listen.port(),
            transport.path()
        ),
        None => format!("http://{}{}", gateway.listen, transport.path()),
    };

    let mut client_flags: Vec<&str> = refused.map(|t| vec!["--refused", t]).unwrap_or_default();
    client_flags.extend(tls.iter().flat_map(|t| t.client.iter().map(String::as_str)));
    let summary = run_client_with(sdk, &url, transport, &client_flags);

    let tools = match refused {
        // The model is never offered the refused tool.
        Some(_) => json!(["add", "count"]),
        None => json!(["add", "count", REFUSED]),
    };
    assert_received_everything(&summary, &tools);
    if sdk == Sdk::PythonModern {
        assert_eq!(summary["protocol_version"], "2026-07-28", "{summary}");
    }
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
        // 2026-07-28 has no sessions: every message is a POST carrying its metadata headers,
        // which the gateway checked against the body and passed on.
        Transport::Streamable if sdk == Sdk::PythonModern => {
            let posts: Vec<&Value> = requests.iter().filter(|r| r["method"] == "POST").collect();
            assert!(posts.len() >= 5, "{requests:?}");
            for r in posts {
                assert_eq!(r["mcp_protocol_version"], "2026-07-28", "{r}");
                assert!(r["mcp_method"].is_string(), "{r}");
            }
            assert!(
                requests.iter().any(|r| r["mcp_name"] == "add"),
                "tools/call carried Mcp-Name: {requests:?}"
            );
        }
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
        "the tools the upstream ran (never the refused one)"
    );
    let Some(refused) = refused else {
        assert_eq!(
            gateway.rejections(),
            Vec::<(String, String)>::new(),
            "the gateway rejected part of a legitimate session"
        );
        return;
    };
    // The SDK got a clean error for the refused call (no hang, no crash).
    let outcome = &summary["refused"];
    eprintln!("{sdk:?} over {transport:?}: the refused call gave {outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Forbidden: tool not allowed"),
        "{sdk:?}: the refused call gave {outcome}"
    );
    assert_eq!(
        gateway.rejections(),
        [("tool".to_owned(), refused.to_owned())],
        "the gateway refused exactly the refused tool"
    );
}

/// What every client must have received: see tests/e2e/server.py.
fn assert_received_everything(summary: &Value, tools: &Value) {
    assert_eq!(summary["server_name"], "e2e-upstream", "{summary}");
    assert_eq!(&summary["tools"], tools, "{summary}");
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

/// The official Python SDK's 2026-07-28 client (request metadata headers on every POST, no
/// sessions) through the gateway, which validates each header against the body.
#[test]
fn python_sdk_client_speaking_2026_07_28_through_gateway() {
    interop(Sdk::PythonModern, Transport::Streamable, false);
}

/// Allowlists on: every SDK client sees a tools/list without the refused tool, and calling it
/// anyway gives the SDK a clean error; the upstream never runs it. Both transports, both eras.
#[test]
fn sdk_clients_through_gateway_with_a_tool_allowlist() {
    for (sdk, transport, flags) in [
        (
            Sdk::Python,
            Transport::Streamable,
            ["--allow-tool", "add", "--allow-tool", "count"],
        ),
        (
            Sdk::PythonModern,
            Transport::Streamable,
            [
                "--deny-tool",
                REFUSED,
                "--allow-method",
                "tools/*,resources/read",
            ],
        ),
        (
            Sdk::TypeScript,
            Transport::Streamable,
            ["--deny-tool", "delete_*", "--allow-tool", "*"],
        ),
        (
            Sdk::Python,
            Transport::Sse,
            ["--deny-tool", REFUSED, "--deny-tool", "rm"],
        ),
        (
            Sdk::TypeScript,
            Transport::Sse,
            ["--allow-tool", "add", "--allow-tool", "count"],
        ),
    ] {
        let upstream = Upstream::start(free_port(), transport, false);
        run_interop(sdk, transport, upstream, &flags, Some(REFUSED), None);
    }
}

/// HTTPS with a client certificate and a bearer token, both required: the Python SDK client
/// configured as an application would (an httpx2 client with an SSL context), end to end.
#[test]
fn python_sdk_client_over_tls_with_a_client_certificate_and_a_token() {
    let pki = Pki::new("e2e-tls");
    let agent = pki.client("agent", &["spiffe://example.org/agent"]);
    let tokens = pki.dir().join("tokens");
    std::fs::write(&tokens, "laptop 5b1f0c7e9d2a4b6c8e0f\n").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let tls = Tls {
        gateway: [
            "--tls-cert",
            pki.server.cert_str(),
            "--tls-key",
            pki.server.key_str(),
            "--client-ca",
            &path(&pki.ca_cert),
            "--allow-client-name",
            "spiffe://example.org/agent",
            "--auth-token-file",
            &path(&tokens),
        ]
        .map(str::to_owned)
        .to_vec(),
        client: [
            "--cafile",
            &path(&pki.ca_cert),
            "--cert",
            agent.cert_str(),
            "--key",
            agent.key_str(),
            "--token",
            "5b1f0c7e9d2a4b6c8e0f",
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    let transport = Transport::Streamable;
    let upstream = Upstream::start(free_port(), transport, false);
    run_interop(Sdk::Python, transport, upstream, &[], None, Some(&tls));
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

/// A browser origin the gateway allows reaches an upstream whose own rebinding protection is on
/// (the official Python SDK's default) in a form that upstream accepts: it sees its own origin,
/// and the browser's in X-Forwarded-Origin. `--pass-origin` keeps the browser's, and then the
/// upstream refuses it, as it did before the gateway rewrote it.
#[test]
fn an_allowed_browser_origin_passes_the_upstreams_own_origin_check() {
    const APP: &str = "https://app.example.com";
    let upstream = Upstream::start(free_port(), Transport::Streamable, true);
    let direct = format!("127.0.0.1:{}", upstream.port);
    // Control: the upstream itself refuses that origin.
    assert_eq!(raw_initialize_from(upstream.port, &direct, Some(APP)), 403);
    let through = |extra: &[&str]| {
        let port = free_port();
        let mut flags = vec!["--ebpf", "off", "--allow-origin", APP];
        flags.extend_from_slice(extra);
        let gateway = Gateway::start_with(port, upstream.port, &flags, None);
        let status = raw_initialize_from(port, &format!("127.0.0.1:{port}"), Some(APP));
        drop(gateway);
        status
    };
    assert_eq!(through(&[]), 200, "the allowed origin is served");
    assert_eq!(
        through(&["--pass-origin"]),
        403,
        "passed unchanged, the upstream refuses it"
    );
}
