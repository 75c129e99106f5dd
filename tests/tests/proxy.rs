//! The gateway as MCP clients see it: the same cases direct and through the gateway, against a
//! real upstream that records what it received.
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt as _;
use mcp_gateway_tests::{
    client::{json_rpc_error, request, send, send_full},
    gateway::{Options, TestGateway},
    upstream::Upstream,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
/// The content type every MCP POST declares.
const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// A legitimate client's `initialize` POST to the gateway, read in full.
async fn post_init(gw: &TestGateway) -> (http::Response<()>, bytes::Bytes) {
    let host = gw.host();
    send_full(
        gw.addr,
        request("POST", "/mcp", &[("host", host.as_bytes()), JSON], INIT),
    )
    .await
}

#[tokio::test]
async fn allowed_request_arrives_intact_direct_and_through_the_gateway() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    for (via, addr, host) in [
        ("direct", upstream.addr, upstream.addr.to_string()),
        ("gateway", gw.addr, gw.host()),
    ] {
        let req = request(
            "POST",
            "/mcp?x=1",
            &[
                ("host", host.as_bytes()),
                (
                    "origin",
                    format!("http://localhost:{}", gw.addr.port()).as_bytes(),
                ),
                ("content-type", b"application/json"),
                ("accept", b"application/json, text/event-stream"),
                ("mcp-protocol-version", b"2025-06-18"),
                ("mcp-session-id", b"client-session"),
                ("last-event-id", b"7"),
                ("x-custom", b"kept"),
            ],
            INIT,
        );
        let (resp, _) = send_full(addr, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{via}");
        assert_eq!(
            resp.headers()["mcp-session-id"],
            "session-from-upstream",
            "{via}"
        );
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    let (direct, proxied) = (&seen[0], &seen[1]);
    assert_eq!(proxied.method, direct.method);
    assert_eq!(proxied.uri, "/mcp?x=1");
    assert_eq!(proxied.body, direct.body);
    assert_eq!(&proxied.body[..], INIT);
    for name in [
        "content-type",
        "accept",
        "mcp-protocol-version",
        "mcp-session-id",
        "last-event-id",
        "x-custom",
    ] {
        assert_eq!(
            proxied.headers.get(name),
            direct.headers.get(name),
            "header {name}"
        );
    }
    // Upstream Host is the upstream's own authority; the client's goes in the forwarded headers.
    assert_eq!(proxied.headers["host"], upstream.addr.to_string());
    // So is the Origin (the gateway allowed the browser's and answers CORS itself), so the
    // upstream's own rebinding check accepts it; the browser's is kept beside it. This changed
    // on purpose (issue 19): the browser's Origin went unchanged before, and an upstream that
    // checks Origin itself refused what the gateway had allowed. `--pass-origin` restores it.
    assert_eq!(
        proxied.headers["origin"],
        format!("http://{}", upstream.addr).as_str()
    );
    assert_eq!(
        proxied.headers.get("x-forwarded-origin"),
        direct.headers.get("origin")
    );
    assert_eq!(proxied.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(proxied.headers["x-forwarded-host"], gw.host());
    assert!(
        proxied.headers["forwarded"]
            .to_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http"),
    );
}

#[tokio::test]
async fn rejected_requests_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = gw.host();
    let port = gw.addr.port();
    let evil_host = format!("rebind.test:{port}");
    // (method, headers, reason the message must name)
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            vec![("host", evil_host.clone().into_bytes())],
            "host",
        ),
        (
            "GET",
            vec![
                ("host", evil_host.clone().into_bytes()),
                ("accept", b"text/event-stream".to_vec()),
            ],
            "host",
        ),
        (
            "DELETE",
            vec![("host", evil_host.clone().into_bytes())],
            "host",
        ),
        ("POST", vec![], "host"),
        (
            "POST",
            vec![
                ("host", host.clone().into_bytes()),
                ("host", host.clone().into_bytes()),
            ],
            "host",
        ),
        (
            "POST",
            vec![
                ("host", host.clone().into_bytes()),
                ("origin", b"http://evil.test".to_vec()),
            ],
            "origin",
        ),
        (
            "POST",
            vec![
                ("host", host.clone().into_bytes()),
                ("origin", b"null".to_vec()),
            ],
            "origin",
        ),
        (
            "OPTIONS",
            vec![
                ("host", host.clone().into_bytes()),
                ("origin", b"http://evil.test".to_vec()),
                ("access-control-request-method", b"POST".to_vec()),
                ("access-control-request-private-network", b"true".to_vec()),
            ],
            "origin",
        ),
    ];
    for (method, headers, reason) in &cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let (resp, body) = send_full(gw.addr, request(method, "/mcp", &headers, INIT)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {headers:?}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let message = json_rpc_error(&body);
        assert!(message.contains(reason), "{message:?} should name {reason}");
    }
    assert_eq!(
        upstream.connections(),
        0,
        "a rejected request opened an upstream connection"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway_for_allowed_origins() {
    let upstream = Upstream::start().await;
    let opts = Options {
        allowed_origins: vec!["https://app.example.com".into()],
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let host = gw.host();
    let req = request(
        "OPTIONS",
        "/mcp",
        &[
            ("host", host.as_bytes()),
            ("origin", b"https://app.example.com"),
            ("access-control-request-method", b"POST"),
            (
                "access-control-request-headers",
                b"content-type, mcp-session-id",
            ),
        ],
        b"",
    );
    let (resp, _) = send_full(gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h.get_all("vary").iter().any(|v| v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin"))
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "authorization",
        "content-type",
    ] {
        assert!(allowed.contains(name), "{name} missing from {allowed}");
    }
    assert!(upstream.requests().is_empty(), "preflight was forwarded");

    // The actual request gets the exact origin echoed and mcp-session-id exposed.
    let req = request(
        "POST",
        "/mcp",
        &[
            ("host", host.as_bytes()),
            ("origin", b"https://app.example.com"),
            JSON,
        ],
        INIT,
    );
    let (resp, _) = send_full(gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("mcp-session-id"));
}

#[tokio::test]
async fn session_headers_and_statuses_round_trip() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = gw.host();
    let (resp, _) = post_init(&gw).await;
    let session = resp.headers()["mcp-session-id"].clone();
    let req = request(
        "DELETE",
        "/mcp",
        &[
            ("host", host.as_bytes()),
            ("mcp-session-id", session.as_bytes()),
        ],
        b"",
    );
    let (resp, _) = send_full(gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        upstream.requests()[1].headers["mcp-session-id"],
        "session-from-upstream"
    );

    for code in [202u16, 400, 404, 405] {
        let path = format!("/status/{code}");
        let (resp, _) = send_full(
            gw.addr,
            request("POST", &path, &[("host", host.as_bytes()), JSON], INIT),
        )
        .await;
        assert_eq!(resp.status().as_u16(), code);
    }
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_as_sent() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = gw.host();
    let req = request(
        "GET",
        "/sse?events=6&every_ms=100",
        &[("host", host.as_bytes()), ("accept", b"text/event-stream")],
        b"",
    );
    let resp = send(gw.addr, req).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            // One event per frame means nothing was buffered and coalesced on the way.
            assert!(data.ends_with(b"\n\n"), "partial event {data:?}");
            received.push(Instant::now());
        }
    }
    let sent = upstream.sse_sent();
    assert_eq!(sent.len(), 6);
    assert_eq!(received.len(), 6, "events were coalesced or lost");
    for (i, (s, r)) in sent.iter().zip(&received).enumerate() {
        let lag = r.duration_since(*s);
        assert!(lag < Duration::from_millis(50), "event {i} took {lag:?}");
    }
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_stream() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = gw.host();
    let req = request(
        "GET",
        "/sse?events=1000&every_ms=50",
        &[("host", host.as_bytes()), ("accept", b"text/event-stream")],
        b"",
    );
    let resp = send(gw.addr, req).await;
    let mut body = resp.into_body();
    body.frame().await.expect("first event").expect("frame");
    assert!(upstream.sse_dropped().is_none());
    drop(body);
    let gone = Instant::now();
    while upstream.sse_dropped().is_none() && gone.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        upstream.sse_dropped().is_some(),
        "upstream stream still open after the client left"
    );
    assert!(upstream.sse_sent().len() < 1000);
}

#[tokio::test]
async fn dead_upstream_gives_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(dead, Options::default()).await;
    let (resp, body) = post_init(&gw).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(json_rpc_error(&body).contains("unreachable"));
}

#[tokio::test]
async fn oversize_body_gives_413() {
    let upstream = Upstream::start().await;
    let mut opts = Options::default();
    opts.limits.max_body_bytes = 1024;
    let gw = TestGateway::start(upstream.addr, opts).await;
    let host = gw.host();
    let big = vec![b'x'; 4096];
    let (resp, body) = send_full(
        gw.addr,
        request("POST", "/mcp", &[("host", host.as_bytes()), JSON], &big),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    json_rpc_error(&body);
    assert_eq!(
        upstream.connections(),
        0,
        "a declared oversize body was sent upstream"
    );
    // A valid message of exactly the cap passes; one byte more, sent without a declared length
    // (chunked), is refused while it is read, before anything goes upstream.
    let at_cap = |size: usize| {
        let head = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":""#;
        let tail = br#""}}"#;
        let mut msg = head.to_vec();
        msg.resize(size - tail.len(), b'x');
        msg.extend_from_slice(tail);
        msg
    };
    let (resp, _) = send_full(
        gw.addr,
        request(
            "POST",
            "/mcp",
            &[("host", host.as_bytes()), JSON],
            &at_cap(1024),
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "a body at the cap passes");
    let over = at_cap(1025);
    let (a, b) = over.split_at(600);
    let mut raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        a.len()
    )
    .into_bytes();
    raw.extend_from_slice(a);
    raw.extend_from_slice(format!("\r\n{:x}\r\n", b.len()).as_bytes());
    raw.extend_from_slice(b);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw_status(gw.addr, &raw).await, 413);
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the message at the cap went upstream"
    );
}

/// Writes `raw` on a new connection and returns the response's status code.
async fn raw_status(addr: std::net::SocketAddr, raw: &[u8]) -> u16 {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(raw).await.unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test]
async fn bearer_token_is_required_and_not_forwarded() {
    let upstream = Upstream::start().await;
    let opts = Options {
        auth_token: Some("t0ken"),
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let host = gw.host();
    let (resp, body) = post_init(&gw).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert!(!String::from_utf8_lossy(&body).contains("t0ken"));
    let req = request(
        "POST",
        "/mcp",
        &[
            ("host", host.as_bytes()),
            ("authorization", b"Bearer t0ken"),
            JSON,
        ],
        INIT,
    );
    let (resp, _) = send_full(gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn slowloris_is_cut_at_the_header_timeout_while_others_are_served() {
    let upstream = Upstream::start().await;
    let mut opts = Options::default();
    opts.limits.header_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(upstream.addr, opts).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let head =
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for byte in head {
            if conn.write_all(&[*byte]).await.is_err() {
                break;
            }
            // Is the connection closed yet? (A closed socket reads EOF or an error.)
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
            if read.is_ok() {
                break;
            }
        }
        start.elapsed()
    });
    // Meanwhile a normal client is served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (resp, _) = post_init(&gw).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cut_after = slow.await.unwrap();
    assert!(
        cut_after >= Duration::from_millis(1500) && cut_after < Duration::from_secs(6),
        "slow client cut after {cut_after:?}, header timeout is 2s"
    );
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let upstream = Upstream::start().await;
    let mut opts = Options::default();
    opts.limits.max_headers = 16;
    let gw = TestGateway::start(upstream.addr, opts).await;
    let host = gw.host();
    let names: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
    let mut headers: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
    headers.extend(names.iter().map(|n| (n.as_str(), &b"v"[..])));
    let (resp, _) = send_full(gw.addr, request("POST", "/mcp", &headers, INIT)).await;
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn shutdown_ends_sse_streams_cleanly_and_stops_serving() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = gw.host();
    let req = request(
        "GET",
        "/sse?events=1000&every_ms=50",
        &[("host", host.as_bytes()), ("accept", b"text/event-stream")],
        b"",
    );
    let mut body = send(gw.addr, req).await.into_body();
    body.frame().await.expect("first event").expect("frame");
    gw.shutdown.cancel();
    // The stream ends without an error (a clean chunked terminator), well before the grace period.
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("stream ended on shutdown");
    assert!(rest.is_ok(), "stream was cut instead of ended: {rest:?}");
    let TestGateway { .. } = &gw;
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        while !gw.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "serve() did not return after shutdown");
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn upstream_that_never_accepts_gives_504_after_the_connect_timeout() {
    // A listener with backlog 0 whose one queue slot is taken: the kernel drops further SYNs,
    // so a connect hangs until the gateway's connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stalled = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let _queued = TcpStream::connect(stalled).await.unwrap();

    let mut opts = Options::default();
    opts.limits.connect_timeout = Duration::from_millis(500);
    let gw = TestGateway::start(stalled, opts).await;
    let (resp, body) = post_init(&gw).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(json_rpc_error(&body).contains("did not accept the connection in time"));
}

#[tokio::test]
async fn at_the_cap_a_new_request_closes_the_connection_idle_longest() {
    let upstream = Upstream::start().await;
    let mut opts = Options::default();
    opts.limits.max_connections = 1;
    let gw = TestGateway::start(upstream.addr, opts).await;
    // The only slot: a connection that never sends a request (a slow client, or an idle one).
    let mut holder = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (resp, _) = tokio::time::timeout(Duration::from_secs(5), post_init(&gw))
        .await
        .expect("a new client is served at once, not after the idle one's header timeout");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(2), holder.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the idle connection was not closed: {closed:?}"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_upstream_a_new_client_gets_503() {
    // An upstream that accepts and never answers keeps the one slot busy.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut opts = Options::default();
    opts.limits.max_connections = 1;
    opts.limits.response_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(silent_addr, opts).await;
    let host = gw.host();
    let busy = tokio::spawn(send_full(
        gw.addr,
        request("POST", "/mcp", &[("host", host.as_bytes()), JSON], INIT),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (resp, body) = post_init(&gw).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(
        json_rpc_error(&body).contains("connection limit"),
        "{body:?}"
    );
    // The forwarded request was never cut for the newcomer: it ends at the response timeout.
    let (resp, _) = busy.await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
}
