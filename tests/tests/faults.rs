//! Faults of the MCP server behind the gateway, and of the gateway process itself: each fault
//! gets a clear answer (502, 504, or a stream that ends cleanly), and the gateway keeps serving
//! other clients throughout.
//!
//! A fault that hyper's own upstream cannot produce (never answering, garbage, dying
//! mid-stream) comes from [`Faulty`], a raw TCP upstream that misbehaves by path.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt as _;
use mcp_gateway_tests::{
    client::{json_rpc_error, request, send, send_full},
    gateway::{BinaryGateway, Options, TestGateway},
    upstream::Upstream,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// A raw upstream that misbehaves by request path (one request per connection):
/// - `/hang`: accepts, reads the request, never answers;
/// - `/garbage`: answers bytes that are not HTTP, then closes;
/// - `/sse-die`: starts an SSE stream, sends one event and half of another, then resets the
///   connection (the MCP server crashed);
/// - `/json-die`: starts a chunked JSON answer, then resets the connection;
/// - anything else: a small `200` JSON answer.
struct Faulty {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const FIRST_EVENT: &str = "id: 1\nevent: message\ndata: {\"n\":1}\n\n";

impl Faulty {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(misbehave(stream));
            }
        });
        Self { addr, task }
    }
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

async fn misbehave(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let reset = |stream: TcpStream| {
        // SO_LINGER 0: close with a reset, as when the process dies.
        let _ = stream.set_zero_linger();
        drop(stream);
    };
    match path.as_str() {
        "/hang" => {
            // Held open, silent, until the gateway gives up on it.
            let _ = stream.read(&mut buf).await;
        }
        "/garbage" => {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n")
                .await;
        }
        "/sse-die" => {
            let mut out = SSE_HEAD.to_vec();
            out.extend(chunk(FIRST_EVENT));
            out.extend(chunk("id: 2\nevent: message\ndata: {\"n\":"));
            let _ = stream.write_all(&out).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream);
        }
        "/json-die" => {
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            out.extend(chunk(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["#));
            let _ = stream.write_all(&out).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream);
        }
        _ => {
            let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    }
}

/// A legitimate GET of `path` through the gateway at `addr`.
fn get(host: &str, path: &str) -> http::Request<http_body_util::Full<Bytes>> {
    request(
        "GET",
        path,
        &[
            ("host", host.as_bytes()),
            ("accept", b"application/json, text/event-stream"),
        ],
        b"",
    )
}

/// Another client, meanwhile: served, and quickly.
async fn others_are_served(addr: SocketAddr, host: &str) {
    let started = Instant::now();
    let (resp, _) = tokio::time::timeout(Duration::from_secs(2), send_full(addr, get(host, "/ok")))
        .await
        .expect("another client was not served during the fault");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn upstream_down_at_start_gets_502_then_recovers_when_it_comes_up() {
    // A port nothing listens on (yet).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(addr, Options::default()).await;
    let host = gw.host();
    let post = || request("POST", "/mcp", &[("host", host.as_bytes()), JSON], INIT);
    let (resp, body) = send_full(gw.addr, post()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(json_rpc_error(&body).contains("unreachable"), "{body:?}");

    let upstream = Upstream::start_on(addr).await;
    let (resp, _) = send_full(gw.addr, post()).await;
    assert_eq!(resp.status(), StatusCode::OK, "no recovery once it is up");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_after_the_response_timeout() {
    let faulty = Faulty::start().await;
    let mut opts = Options::default();
    opts.limits.response_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(faulty.addr, opts).await;
    let host = gw.host();
    let started = Instant::now();
    let hung = tokio::spawn(send_full(gw.addr, get(&host, "/hang")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    others_are_served(gw.addr, &host).await;
    let (resp, body) = hung.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(json_rpc_error(&body).contains("did not answer in time"));
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "504 after {waited:?}, response timeout 1 s"
    );
    others_are_served(gw.addr, &host).await;
}

#[tokio::test]
async fn upstream_answering_garbage_gets_502() {
    let faulty = Faulty::start().await;
    let gw = TestGateway::start(faulty.addr, Options::default()).await;
    let host = gw.host();
    let (resp, body) = send_full(gw.addr, get(&host, "/garbage")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(json_rpc_error(&body).starts_with("Bad gateway"));
    others_are_served(gw.addr, &host).await;
}

#[tokio::test]
async fn upstream_dying_mid_sse_ends_the_client_stream_cleanly() {
    let faulty = Faulty::start().await;
    let gw = TestGateway::start(faulty.addr, Options::default()).await;
    let host = gw.host();
    // Direct, the client sees the crash as a broken body: the fault is real.
    let direct = send(faulty.addr, get(&faulty.addr.to_string(), "/sse-die")).await;
    assert!(direct.into_body().collect().await.is_err());

    let resp = send(gw.addr, get(&host, "/sse-die")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("the stream did not end")
        .expect("the stream was cut instead of ended")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    // The whole first event arrived; the half event is discarded by SSE clients at the end.
    assert!(text.starts_with(FIRST_EVENT), "{text:?}");
    others_are_served(gw.addr, &host).await;
}

#[tokio::test]
async fn upstream_dying_mid_json_is_not_passed_off_as_a_complete_answer() {
    let faulty = Faulty::start().await;
    let gw = TestGateway::start(faulty.addr, Options::default()).await;
    let host = gw.host();
    let resp = send(gw.addr, get(&host, "/json-die")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("the body did not end");
    assert!(body.is_err(), "a truncated JSON answer ended cleanly");
    others_are_served(gw.addr, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_lets_in_flight_requests_finish() {
    let upstream = Upstream::start().await;
    let mut gw = BinaryGateway::start(upstream.addr, &["--ebpf", "off"]);
    let (addr, host) = (gw.listen, gw.host());
    let in_flight: Vec<_> = (0..20)
        .map(|_| tokio::spawn(send_full(addr, get(&host, "/slow?ms=1500"))))
        .collect();
    // Every request has reached the upstream: they are in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.requests().len() < 20 {
        assert!(Instant::now() < deadline, "requests did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.child.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting new connections after SIGTERM"
    );
    for request in in_flight {
        let (resp, body) = request.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(&body[..], br#"{"slept_ms":1500}"#);
    }
    let status = tokio::task::block_in_place(|| gw.child.wait_exit(Duration::from_secs(10)))
        .expect("the gateway did not exit after its in-flight requests");
    assert!(status.success(), "{status:?}");
}
