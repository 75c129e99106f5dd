//! The MCP layer of the gateway against a real recording upstream: input checks, 2026-07-28
//! header–body validation, method and tool allowlists, `tools/list` filtering, the client's
//! body errors, what rejection bodies reveal, CORS on the gateway's own errors, the audit log.
use std::{os::unix::fs::OpenOptionsExt as _, time::Duration};

use http::StatusCode;
use mcp_gateway::{config::AuditTarget, mcp::McpSettings};
use mcp_gateway_tests::{
    client::{request, send_full},
    e2e::TempDir,
    gateway::{Options, TestGateway},
    prometheus::{parse, scrape, value},
    upstream::Upstream,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// Request headers, as (name, value).
type Headers<'a> = Vec<(&'a str, &'a [u8])>;
const V2026: (&str, &[u8]) = ("mcp-protocol-version", b"2026-07-28");

/// A 2026-07-28 `tools/call` of `name`, with `arguments`.
fn call(id: u64, name: &str, arguments: Value) -> Vec<u8> {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": name, "arguments": arguments,
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}
        }
    })
    .to_string()
    .into_bytes()
}

/// A legacy (2025) request.
fn legacy(id: u64, method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// POSTs `body` to `path` with `headers` (plus Host); status and parsed JSON body (Null when
/// not JSON).
async fn post(
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> (StatusCode, Value) {
    let host = gw.host();
    let mut all: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
    all.extend_from_slice(headers);
    let (resp, bytes) = send_full(gw.addr, request("POST", path, &all, body)).await;
    (
        resp.status(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn rejections(gw: &TestGateway, reason: &str) -> f64 {
    let samples = parse(&scrape(gw.metrics_addr));
    value(
        &samples,
        "mcp_gateway_rejections_total",
        &[("reason", reason)],
    )
}

fn policy() -> McpSettings {
    McpSettings {
        allowed_tools: vec!["add".into(), "get_*".into()],
        denied_tools: vec!["get_secret".into()],
        allowed_methods: vec!["tools/*".into()],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn input_checks_answer_before_anything_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let init = legacy(1, "initialize", json!({}));
    let modern = call(1, "add", json!({"a": 1}));
    let batch = format!(
        "[{},{}]",
        String::from_utf8_lossy(&legacy(1, "ping", json!({}))),
        String::from_utf8_lossy(&legacy(2, "ping", json!({})))
    );
    type Row<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a [u8])>,
        &'a [u8],
        u16,
        Option<i64>,
        Value,
    );
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("text/plain to the endpoint", "/mcp", vec![("content-type", b"text/plain")], &init, 415, Some(-32000), Value::Null),
        ("no content type", "/mcp", vec![], &init, 415, Some(-32000), Value::Null),
        ("form to the endpoint", "/mcp", vec![("content-type", b"application/x-www-form-urlencoded")], b"a=b", 415, Some(-32000), Value::Null),
        ("JSON-RPC as text/plain elsewhere (a no-cors page)", "/other", vec![("content-type", b"text/plain")], &init, 415, Some(-32000), Value::Null),
        ("compressed", "/mcp", vec![JSON, ("content-encoding", b"gzip")], &init, 415, Some(-32000), Value::Null),
        ("not JSON", "/mcp", vec![JSON], b"{\"jsonrpc\":", 400, Some(-32700), Value::Null),
        ("not JSON-RPC", "/mcp", vec![JSON], b"{\"id\":1}", 400, Some(-32600), json!(1)),
        ("tools/call without a name", "/mcp", vec![JSON], br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{}}"#, 400, Some(-32600), json!("x")),
        ("repeated method", "/mcp", vec![JSON], br#"{"jsonrpc":"2.0","id":3,"method":"ping","method":"tools/call"}"#, 400, Some(-32600), Value::Null),
        ("2026: headers missing", "/mcp", vec![JSON, V2026], &modern, 400, Some(-32020), json!(1)),
        ("2026: Mcp-Name of another tool", "/mcp", vec![JSON, V2026, ("mcp-method", b"tools/call"), ("mcp-name", b"get_weather")], &modern, 400, Some(-32020), json!(1)),
        ("2026 body, 2025 header", "/mcp", vec![JSON, ("mcp-protocol-version", b"2025-06-18"), ("mcp-method", b"tools/call"), ("mcp-name", b"add")], &modern, 400, Some(-32020), json!(1)),
        ("a batch in 2025-06-18", "/mcp", vec![JSON, ("mcp-protocol-version", b"2025-06-18")], batch.as_bytes(), 400, Some(-32600), Value::Null),
    ];
    for (what, path, headers, body, status, code, id) in &rows {
        let (got, body) = post(&gw, path, headers, body).await;
        assert_eq!(got.as_u16(), *status, "{what}: {body}");
        assert_eq!(body["jsonrpc"], "2.0", "{what}");
        assert_eq!(body["error"]["code"].as_i64(), *code, "{what}: {body}");
        assert_eq!(&body["id"], id, "{what}");
    }
    assert!(
        upstream.requests().is_empty(),
        "an invalid message was forwarded"
    );
    assert_eq!(rejections(&gw, "invalid"), rows.len() as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_messages_and_other_requests_pass_as_they_came() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let modern = call(4, "add", json!({"a": 1}));
    let headers = [
        JSON,
        V2026,
        ("mcp-method", b"tools/call".as_slice()),
        ("mcp-name", b"add"),
    ];
    let batch = format!(
        "[{},{}]",
        String::from_utf8_lossy(&legacy(1, "ping", json!({}))),
        String::from_utf8_lossy(&legacy(2, "ping", json!({})))
    );
    #[rustfmt::skip]
    let rows: Vec<(&str, &str, Headers, Vec<u8>)> = vec![
        ("2026-07-28 tools/call", "/mcp", headers.to_vec(), modern),
        ("Base64 Mcp-Name", "/mcp", vec![JSON, V2026, ("mcp-method", b"tools/call"), ("mcp-name", b"=?base64?YWRk?=")], call(5, "add", json!({}))),
        ("2025 initialize", "/mcp", vec![JSON], legacy(1, "initialize", json!({"protocolVersion": "2025-06-18"}))),
        ("2025-03-26 batch", "/mcp", vec![JSON], batch.into_bytes()),
        ("OAuth token request", "/token", vec![("content-type", b"application/x-www-form-urlencoded")], b"grant_type=authorization_code&code=abc".to_vec()),
        ("client registration", "/register", vec![JSON], br#"{"client_name":"x","redirect_uris":["http://localhost/cb"]}"#.to_vec()),
        ("plain text elsewhere", "/upload", vec![("content-type", b"text/plain")], b"hello".to_vec()),
    ];
    for (what, path, headers, body) in &rows {
        let (status, _) = post(&gw, path, headers, body).await;
        assert_eq!(status, StatusCode::OK, "{what}");
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), rows.len());
    for ((what, path, _, body), got) in rows.iter().zip(&seen) {
        assert_eq!(got.uri, *path, "{what}");
        assert_eq!(
            &got.body[..],
            &body[..],
            "{what}: the body arrives byte for byte"
        );
    }
    assert_eq!(
        seen[0].headers["mcp-name"], "add",
        "metadata headers are forwarded"
    );
    assert_eq!(rejections(&gw, "invalid"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_tools_and_methods_get_403_with_the_request_id() {
    let upstream = Upstream::start().await;
    let opts = Options {
        mcp: policy(),
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let modern_headers = |name: &'static [u8]| {
        vec![
            JSON,
            V2026,
            ("mcp-method", b"tools/call".as_slice()),
            ("mcp-name", name),
        ]
    };
    /// (what, path, headers, body, status, refusal reason)
    type Row<'a> = (&'a str, &'a str, Headers<'a>, Vec<u8>, u16, &'a str);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("denied tool", "/mcp", modern_headers(b"get_secret"), call(7, "get_secret", json!({})), 403, "tool"),
        ("tool off the list", "/mcp", modern_headers(b"delete_all"), call(8, "delete_all", json!({})), 403, "tool"),
        ("tool name case", "/mcp", modern_headers(b"ADD"), call(9, "ADD", json!({})), 403, "tool"),
        // Path spellings an upstream router may take for its endpoint: inspected all the same.
        ("trailing slash", "/mcp/", vec![JSON], legacy(10, "tools/call", json!({"name": "delete_all"})), 403, "tool"),
        ("double slash", "//mcp", vec![JSON], legacy(11, "tools/call", json!({"name": "delete_all"})), 403, "tool"),
        ("method off the list", "/mcp", vec![JSON], legacy(12, "prompts/get", json!({"name": "p"})), 403, "method"),
        ("allowed tool", "/mcp", modern_headers(b"add"), call(13, "add", json!({})), 200, ""),
        ("allowed prefix", "/mcp", vec![JSON], legacy(14, "tools/call", json!({"name": "get_weather"})), 200, ""),
        ("lifecycle always allowed", "/mcp", vec![JSON], legacy(15, "initialize", json!({})), 200, ""),
    ];
    for (what, path, headers, body, status, reason) in &rows {
        let (got, answer) = post(&gw, path, headers, body).await;
        assert_eq!(got.as_u16(), *status, "{what}: {answer}");
        if *status == 403 {
            let id: Value = serde_json::from_slice::<Value>(body).unwrap()["id"].clone();
            assert_eq!(answer["id"], id, "{what}: the request's id");
            assert_eq!(
                answer["error"]["message"],
                format!("Forbidden: {reason} not allowed"),
                "{what}"
            );
        }
    }
    let forwarded: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"].to_string())
        .collect();
    assert_eq!(
        forwarded,
        ["13", "14", "15"],
        "only allowed calls reached the upstream"
    );
    assert_eq!(
        (rejections(&gw, "tool"), rejections(&gw, "method")),
        (5.0, 1.0)
    );

    // A batch runs whole or not at all; every request in it is answered.
    let batch = format!(
        "[{},{},{}]",
        String::from_utf8_lossy(&legacy(20, "tools/call", json!({"name": "add"}))),
        String::from_utf8_lossy(&legacy(21, "tools/call", json!({"name": "delete_all"}))),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
    );
    let (status, answer) = post(&gw, "/mcp", &[JSON], batch.as_bytes()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let ids: Vec<(i64, String)> = answer
        .as_array()
        .expect("one error per request")
        .iter()
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["error"]["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (
                20,
                "Not executed: another message of the batch was refused".to_owned()
            ),
            (21, "Forbidden: tool not allowed".to_owned())
        ]
    );
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_list_is_filtered_in_json_and_in_sse() {
    let upstream = Upstream::start().await;
    let filtered = TestGateway::start(
        upstream.addr,
        Options {
            mcp: policy(),
            ..Options::default()
        },
    )
    .await;
    let plain = TestGateway::start(upstream.addr, Options::default()).await;
    let list = legacy(3, "tools/list", json!({}));
    let names = |v: &Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, answer) = post(&filtered, "/mcp", &[JSON], &list).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&answer), ["add", "get_weather"]);
    assert_eq!(answer["id"], 3);
    let (_, answer) = post(&plain, "/mcp", &[JSON], &list).await;
    assert_eq!(
        names(&answer),
        mcp_gateway_tests::upstream::TOOLS,
        "no policy: untouched"
    );

    // SSE: the tools event is rewritten, every other event passes byte for byte.
    let host = filtered.host();
    let (resp, body) = send_full(
        filtered.addr,
        request(
            "POST",
            "/mcp-sse",
            &[("host", host.as_bytes()), JSON],
            &list,
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("content-length").is_none());
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].starts_with(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\""
    ));
    assert!(
        events[1].starts_with("id: 2\nevent: message\ndata: "),
        "{text}"
    );
    let result: Value = serde_json::from_str(events[1].split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(names(&result), ["add", "get_weather"]);
}

/// A chunked request with a broken body; the status the gateway answers.
async fn broken_chunked(gw: &TestGateway, method: &str, path: &str, chunks: &str) -> u16 {
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunks}",
        gw.host()
    );
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head))
        .await
        .expect("an answer")
        .expect("a status line");
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_the_client_breaks_is_a_400_not_the_upstreams_502() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let cases = [
        ("bad chunk size", "zz\r\nabc\r\n0\r\n\r\n"),
        ("negative chunk size", "-1\r\nabc\r\n0\r\n\r\n"),
        (
            "overflowing chunk size",
            "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        ("LF in a chunk extension", "3;ext=a\nb\r\nabc\r\n0\r\n\r\n"),
    ];
    for (what, chunks) in cases {
        // A POST (read whole before forwarding), and a PUT (streamed to the upstream).
        assert_eq!(
            broken_chunked(&gw, "POST", "/mcp", chunks).await,
            400,
            "POST, {what}"
        );
        assert_eq!(
            broken_chunked(&gw, "PUT", "/upload", chunks).await,
            400,
            "PUT, {what}"
        );
    }
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| r.method == http::Method::PUT),
        "no POST reached the upstream"
    );
    assert!(rejections(&gw, "invalid") >= 8.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejection_bodies_name_the_reason_and_nothing_of_the_configuration() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        upstream.addr,
        Options {
            allowed_origins: vec!["https://secret-app.example.com".into()],
            mcp: policy(),
            ..Options::default()
        },
    )
    .await;
    let port = gw.addr.port();
    let host = format!("rebind.test:{port}");
    let own = gw.host();
    let cases: [(Headers, &str); 3] = [
        (
            vec![("host", host.as_bytes())],
            "Forbidden: host not allowed",
        ),
        (
            vec![("host", own.as_bytes()), ("origin", b"http://evil.test")],
            "Forbidden: origin not allowed",
        ),
        (
            vec![("host", own.as_bytes()), JSON],
            "Forbidden: tool not allowed",
        ),
    ];
    for (headers, want) in cases {
        let (resp, body) = send_full(
            gw.addr,
            request(
                "POST",
                "/mcp",
                &headers,
                &legacy(1, "tools/call", json!({"name": "rm"})),
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let text = String::from_utf8_lossy(&body);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["message"], want);
        for secret in [
            "secret-app",
            "localhost",
            "127.0.0.1",
            "loopback",
            "allowed:",
            "get_",
            "add",
        ] {
            assert!(
                !text.contains(secret),
                "the body reveals `{secret}`: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_origin_can_read_the_gateways_own_errors() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        upstream.addr,
        Options {
            mcp: policy(),
            ..Options::default()
        },
    )
    .await;
    let origin = b"http://localhost:5173".as_slice();
    for (headers, body, status) in [
        (
            vec![JSON, ("origin", origin)],
            legacy(1, "tools/call", json!({"name": "rm"})),
            403,
        ),
        (
            vec![
                ("content-type", b"text/plain".as_slice()),
                ("origin", origin),
            ],
            legacy(1, "ping", json!({})),
            415,
        ),
        (vec![JSON, ("origin", origin)], b"{".to_vec(), 400),
    ] {
        let host = gw.host();
        let mut all: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
        all.extend(headers);
        let (resp, _) = send_full(gw.addr, request("POST", "/mcp", &all, &body)).await;
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "http://localhost:5173"
        );
        assert!(
            resp.headers()["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .contains("mcp-protocol-version")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_each_call_and_never_its_arguments_or_token() {
    let dir = TempDir::new("audit");
    let path = dir.path().join("audit.jsonl");
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        upstream.addr,
        Options {
            mcp: policy(),
            auth_token: Some("t0ken-SECRET"),
            audit: Some(AuditTarget::File(path.clone())),
            ..Options::default()
        },
    )
    .await;
    let auth = ("authorization", b"Bearer t0ken-SECRET".as_slice());
    let origin = ("origin", b"http://localhost:3000".as_slice());
    let headers = vec![
        JSON,
        V2026,
        ("mcp-method", b"tools/call".as_slice()),
        ("mcp-name", b"add".as_slice()),
        auth,
        origin,
    ];
    let args = json!({"query": "ARGUMENT-SECRET-42"});
    assert_eq!(
        post(&gw, "/mcp", &headers, &call(1, "add", args.clone()))
            .await
            .0,
        200
    );
    let refused = call(2, "delete_all", args.clone());
    let mut denied = headers.clone();
    denied[3] = ("mcp-name", b"delete_all");
    assert_eq!(post(&gw, "/mcp", &denied, &refused).await.0, 403);
    assert_eq!(post(&gw, "/mcp", &[JSON, auth], b"{").await.0, 400);
    assert_eq!(
        post(&gw, "/mcp", &[JSON], &call(3, "add", args)).await.0,
        401
    );
    let rebound = format!("rebind.test:{}", gw.addr.port());
    let (resp, _) = send_full(
        gw.addr,
        request("POST", "/mcp", &[("host", rebound.as_bytes()), JSON], b"{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Not an MCP request: no record.
    assert_eq!(
        post(
            &gw,
            "/token",
            &[("content-type", b"application/x-www-form-urlencoded"), auth],
            b"a=b"
        )
        .await
        .0,
        200
    );

    let text = mcp_gateway_tests::e2e::settled_lines(&path, 5, Duration::from_secs(10));
    for secret in ["ARGUMENT-SECRET-42", "t0ken-SECRET"] {
        assert!(
            !text.contains(secret),
            "the audit log holds `{secret}`:\n{text}"
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(Value, Value, Value, Value, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].clone(),
                l["id"].clone(),
                l["name"].clone(),
                l["status"].clone(),
                l["decision"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!("tools/call"),
                json!(1),
                json!("add"),
                json!(200),
                json!("allowed")
            ),
            (
                json!("tools/call"),
                json!(2),
                json!("delete_all"),
                json!(403),
                json!("tool")
            ),
            (
                Value::Null,
                Value::Null,
                Value::Null,
                json!(400),
                json!("invalid")
            ),
            (
                Value::Null,
                Value::Null,
                Value::Null,
                json!(401),
                json!("auth")
            ),
            (
                Value::Null,
                Value::Null,
                Value::Null,
                json!(403),
                json!("host")
            ),
        ]
    );
    let first = &lines[0];
    assert_eq!(first["server"], "test");
    assert_eq!(first["origin"], "http://localhost:3000");
    assert_eq!(first["credential"], "default");
    assert_eq!(first["http_method"], "POST");
    assert_eq!(first["path"], "/mcp");
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["bytes_in"].as_u64().unwrap() > 0 && first["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(
        lines[3]["credential"],
        Value::Null,
        "a refused token names no credential"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_body_is_logged_as_the_clients_error_not_the_upstreams() {
    let upstream = Upstream::start().await;
    let mut gw =
        mcp_gateway_tests::gateway::BinaryGateway::start(upstream.addr, &["--ebpf", "off"]);
    let mut conn = TcpStream::connect(gw.listen).await.unwrap();
    let raw = format!(
        "PUT /upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        gw.host()
    );
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[9..12], b"400");
    let line = gw
        .child
        .wait_for_log("rejected request", Duration::from_secs(10));
    assert!(
        line.contains("the client's error, not the MCP server's"),
        "{line}"
    );
    assert!(!line.contains("upstream request failed"), "{line}");
}

/// logrotate's way: move the file, SIGHUP, and the next call lands in a new file.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_the_audit_log() {
    let dir = TempDir::new("audit-hup");
    let path = dir.path().join("audit.jsonl");
    let upstream = Upstream::start().await;
    let audit = path.to_str().unwrap();
    let mut gw = mcp_gateway_tests::gateway::BinaryGateway::start(
        upstream.addr,
        &["--ebpf", "off", "--audit-log", audit],
    );
    let (host, addr) = (gw.host(), gw.listen);
    let call_once = |id: u64| {
        let host = host.clone();
        async move {
            let body = legacy(id, "tools/call", json!({"name": "add"}));
            let (resp, _) = send_full(
                addr,
                request("POST", "/mcp", &[("host", host.as_bytes()), JSON], &body),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::OK);
        }
    };
    call_once(1).await;
    mcp_gateway_tests::e2e::settled_lines(&path, 1, Duration::from_secs(10));
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) }, 0);
    gw.child
        .wait_for_log("audit log reopened", Duration::from_secs(10));
    call_once(2).await;
    let ids = |p: &std::path::Path| -> Vec<Value> {
        mcp_gateway_tests::e2e::settled_lines(p, 1, Duration::from_secs(10))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].clone())
            .collect()
    };
    assert_eq!(ids(&rotated), [json!(1)]);
    assert_eq!(ids(&path), [json!(2)]);
}

/// An audit log on a FIFO that nobody reads: once the pipe is full the writer is stuck, and
/// requests must still be served at their usual pace (the lines that do not fit in the queue
/// are dropped and counted); SIGTERM still stops the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_nobody_reads_never_holds_up_requests() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = TempDir::new("audit-fifo");
    let fifo = dir.path().join("audit.fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).expect("path");
    // SAFETY: mkfifo with a NUL-terminated path of our own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    // A reader that never reads: the gateway's open succeeds, its writes fill the pipe.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("opening the FIFO's read end");
    let upstream = Upstream::start().await;
    let mut gw = mcp_gateway_tests::gateway::BinaryGateway::start(
        upstream.addr,
        &["--ebpf", "off", "--audit-log", fifo.to_str().unwrap()],
    );
    let headers = vec![
        ("host".to_owned(), gw.host().into_bytes()),
        ("content-type".to_owned(), b"application/json".to_vec()),
    ];
    // Each request is audited (an empty MCP message: 400). Far more lines than the pipe holds
    // (about 200) and than the queue holds: before the queue, the gateway stopped at ~112.
    let (connections, per_connection) = (8, 2_600);
    let sent = mcp_gateway_tests::gateway::hammer(gw.listen, connections, per_connection, headers);
    let counts = tokio::time::timeout(Duration::from_secs(120), sent)
        .await
        .expect("every request answered while the audit log is stuck");
    assert_eq!(
        counts.get(&400).copied(),
        Some(connections * per_connection),
        "{counts:?}"
    );
    // Still answering at once.
    let started = std::time::Instant::now();
    let host = gw.host();
    let (resp, _) = send_full(
        gw.listen,
        request("POST", "/mcp", &[("host", host.as_bytes()), JSON], b"{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let samples = parse(&scrape(gw.metrics));
    let dropped = value(&samples, "mcp_gateway_audit_dropped_total", &[]);
    assert!(
        dropped > 0.0,
        "the lines that did not fit are counted: {dropped}"
    );
    gw.child
        .wait_for_log("AUDIT LOG LINES DROPPED", Duration::from_secs(10));
    gw.child.signal(libc::SIGTERM);
    assert!(
        gw.child.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGTERM stops a gateway whose audit log is stuck"
    );
}
