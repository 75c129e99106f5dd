//! Rate limiting per client: a flooding client gets 429 (with Retry-After and a JSON-RPC body),
//! a polite one beside it is never limited.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway::ratelimit::Rate;
use mcp_gateway_tests::{
    client::request,
    gateway::{Options, TestGateway},
    prometheus::{parse, scrape, value},
    upstream::Upstream,
};
use tokio::net::TcpSocket;

const PING: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A keep-alive client connected from the local address `from`.
async fn client_from(
    from: &str,
    to: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind the client's address");
    let stream = socket.connect(to).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_and_a_polite_one_beside_it_never_is() {
    let upstream = Upstream::start().await;
    let opts = Options {
        rate: Some(Rate::parse("20/s", Some(5)).expect("valid")),
        ..Options::default()
    };
    let gw = TestGateway::start(upstream.addr, opts).await;
    let host = gw.host();
    let headers = |h: &str| -> Vec<(String, Vec<u8>)> {
        vec![
            ("host".into(), h.as_bytes().to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ]
    };
    let run_for = Duration::from_secs(2);
    let (flood_ok, flood_limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = Vec::new();
    for _ in 0..8 {
        let (ok, limited, h) = (flood_ok.clone(), flood_limited.clone(), headers(&host));
        let addr = gw.addr;
        flooders.push(tokio::spawn(async move {
            let mut sender = client_from("127.0.0.1", addr).await;
            let start = Instant::now();
            let mut retry_after = None;
            while start.elapsed() < run_for {
                let mut req = request("POST", "/mcp", &[], PING);
                for (k, v) in &h {
                    req.headers_mut().insert(
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        http::HeaderValue::from_bytes(v).unwrap(),
                    );
                }
                sender.ready().await.expect("ready");
                let resp = sender.send_request(req).await.expect("response");
                let status = resp.status();
                let after = resp.headers().get("retry-after").cloned();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                match status {
                    StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => {
                        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON-RPC");
                        assert_eq!(v["jsonrpc"], "2.0");
                        assert!(
                            v["error"]["message"]
                                .as_str()
                                .unwrap()
                                .starts_with("Too many requests")
                        );
                        retry_after = after;
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("flood got {other}"),
                };
            }
            retry_after
        }));
    }
    // The polite client, from another address: one request every 250 ms.
    let mut polite = client_from("127.0.0.2", gw.addr).await;
    let mut polite_statuses = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run_for {
        let mut req = request("POST", "/mcp", &[], PING);
        for (k, v) in headers(&host) {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(&v).unwrap(),
            );
        }
        polite.ready().await.expect("ready");
        let resp = polite.send_request(req).await.expect("response");
        polite_statuses.push(resp.status().as_u16());
        resp.into_body().collect().await.expect("body");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut retry_afters = Vec::new();
    for f in flooders {
        retry_afters.push(f.await.expect("flooder"));
    }
    assert!(polite_statuses.len() >= 7, "{polite_statuses:?}");
    assert!(
        polite_statuses.iter().all(|s| *s == 200),
        "the polite client was limited: {polite_statuses:?}"
    );
    let (ok, limited) = (
        flood_ok.load(Ordering::Relaxed),
        flood_limited.load(Ordering::Relaxed),
    );
    eprintln!("flood: {ok} served, {limited} limited in {run_for:?}");
    // A burst of 5, then 20 a second.
    assert!(ok <= 5 + 20 * 2 + 2, "the flood got {ok} through");
    assert!(ok >= 20, "the flood got only {ok} through");
    assert!(limited > 100, "hardly limited: {limited}");
    assert!(
        retry_afters.iter().flatten().all(|v| v == "1"),
        "Retry-After: {retry_afters:?}"
    );
    let samples = parse(&scrape(gw.metrics_addr));
    let counted = value(
        &samples,
        "mcp_gateway_rejections_total",
        &[("reason", "rate_limit")],
    );
    assert_eq!(counted as u64, limited, "every 429 is counted");
    assert_eq!(
        upstream.requests().len() as u64,
        ok + polite_statuses.len() as u64,
        "a limited request never reached the upstream"
    );
}
