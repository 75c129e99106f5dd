//! A refusal never leaves a kept-alive connection silently dead.
//!
//! Clients such as Python's `http.client` write the request head and its body in two writes.
//! When the gateway refuses the request from its head alone (401, 403, 413, 429, 503), the body
//! arrives after the answer; a connection closed then without `Connection: close` kills the
//! client's next request on a dead socket. Each case here sends head and body apart, then a
//! good request on the same connection, which must be answered.
use std::{sync::atomic::Ordering, time::Duration};

use mcp_gateway::{config::Limits, ratelimit::Rate};
use mcp_gateway_tests::{
    gateway::{Options, TestGateway},
    upstream::Upstream,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// One answer read off the connection: its status, its headers (lower-case names), its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client that writes head and body in separate writes, as `http.client` does.
struct TwoWrites {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TwoWrites {
    async fn connect(gw: &TestGateway) -> Self {
        Self {
            stream: TcpStream::connect(gw.addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// POSTs `body` with `headers`: head first, then the body after a pause.
    async fn post(&mut self, host: &str, headers: &[&str], body: &[u8]) -> Option<Answer> {
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await.ok()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The gateway may already have answered; the body still goes, as a client sends it.
        let _ = self.stream.write_all(body).await;
        self.read_answer().await
    }

    /// One response (Content-Length framed, as all the gateway's own answers and the test
    /// upstream's are); `None` when the connection closed first.
    async fn read_answer(&mut self) -> Option<Answer> {
        let read = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while self.buf.len() < end + 4 + len {
                        self.fill().await?;
                    }
                    self.buf.drain(..end + 4 + len);
                    return Some(Answer { status, headers });
                }
                self.fill().await?;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an answer or a close within 10 s")
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0_u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }
}

/// Refused first, then a good request on the same connection: it must be answered 200.
async fn refused_then_served(
    gw: &TestGateway,
    refused: (&str, &[&str], &[u8]),
    good: &[&str],
    want: u16,
) {
    let mut client = TwoWrites::connect(gw).await;
    let (host, headers, body) = refused;
    let first = client
        .post(host, headers, body)
        .await
        .expect("the refusal is answered");
    assert_eq!(first.status, want, "{first:?}");
    assert_ne!(
        first.header("connection"),
        Some("close"),
        "a small body is drained, and the connection kept: {first:?}"
    );
    let next = client.post(&gw.host(), good, PING.as_bytes()).await;
    let next = next.unwrap_or_else(|| {
        panic!("the connection died silently after a {want}: the client's next request failed")
    });
    assert_eq!(next.status, 200, "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_keeps_the_connection() {
    let upstream = Upstream::start().await;
    let opts = Options {
        auth_token: Some("alice 0123456789abcdef0123456789abcdef"),
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let good = ["Authorization: Bearer 0123456789abcdef0123456789abcdef"];
    let wrong = ["Authorization: Bearer wrong"];
    refused_then_served(&gw, (&gw.host(), &wrong, PING.as_bytes()), &good, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_keeps_the_connection() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let host = format!("rebind.example:{}", gw.addr.port());
    refused_then_served(&gw, (&host, &[], PING.as_bytes()), &[], 403).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_keeps_the_connection_when_the_body_is_small_and_says_close_when_not() {
    let upstream = Upstream::start().await;
    let opts = Options {
        limits: Limits {
            max_body_bytes: 1024,
            ..Options::default().limits
        },
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let over = vec![b' '; 2048];
    refused_then_served(&gw, (&gw.host(), &[], &over), &[], 413).await;
    // A body past what is worth reading: the answer says the connection closes.
    let mut client = TwoWrites::connect(&gw).await;
    let huge = vec![b' '; 1024 * 1024];
    let first = client.post(&gw.host(), &[], &huge).await.expect("answered");
    assert_eq!(first.status, 413);
    assert_eq!(first.header("connection"), Some("close"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_keeps_the_connection() {
    let upstream = Upstream::start().await;
    let opts = Options {
        rate: Some(Rate::parse("1/m", Some(1)).expect("valid")),
        auth_token: Some(
            "alice 0123456789abcdef0123456789abcdef\nbob fedcba9876543210fedcba9876543210",
        ),
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let alice = ["Authorization: Bearer 0123456789abcdef0123456789abcdef"];
    let bob = ["Authorization: Bearer fedcba9876543210fedcba9876543210"];
    let mut client = TwoWrites::connect(&gw).await;
    let first = client.post(&gw.host(), &alice, PING.as_bytes()).await;
    assert_eq!(first.expect("answered").status, 200);
    // Alice is over her rate; Bob, on the same connection, is not.
    refused_then_served(&gw, (&gw.host(), &alice, PING.as_bytes()), &bob, 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockdown_503_keeps_the_connection() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(upstream.addr, Options::default()).await;
    let mut client = TwoWrites::connect(&gw).await;
    gw.gateway.locked.store(true, Ordering::Relaxed);
    let first = client
        .post(&gw.host(), &[], PING.as_bytes())
        .await
        .expect("answered");
    assert_eq!(first.status, 503);
    assert_ne!(first.header("connection"), Some("close"), "{first:?}");
    gw.gateway.locked.store(false, Ordering::Relaxed);
    let next = client
        .post(&gw.host(), &[], PING.as_bytes())
        .await
        .expect("the connection lives on after the lockdown's 503");
    assert_eq!(next.status, 200);
}
