//! Named credentials on the real gateway binary: rotation and revocation under load without a
//! restart, broken files that change nothing, SIGHUP, and the credential in metrics.
use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway_tests::{
    e2e::TempDir,
    gateway::BinaryGateway,
    prometheus::{parse, scrape, value},
    upstream::Upstream,
};

const KEEP: &str = "keep-3f9a1c7e5b2d4068";
const DROP: &str = "drop-9e8d7c6b5a4f3e2d";

/// One keep-alive connection to the gateway sending MCP pings with a bearer token.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    token: &'static str,
}

impl Connection {
    async fn open(addr: SocketAddr, token: &'static str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Self {
            sender,
            host: format!("127.0.0.1:{}", addr.port()),
            token,
        }
    }

    /// One request on this connection: its status (an error means the connection broke).
    async fn ping(&mut self) -> Result<u16, hyper::Error> {
        let req = http::Request::post("/mcp")
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            )))
            .expect("request");
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

/// An upstream, and the gateway binary in front of it with `tokens` and `args`.
async fn start(tokens: &Path, args: &[&str]) -> (Upstream, BinaryGateway) {
    let upstream = Upstream::start().await;
    let mut all = vec![
        "--ebpf",
        "off",
        "--auth-token-file",
        tokens.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let gw = BinaryGateway::start(upstream.addr, &all);
    (upstream, gw)
}

/// Rewrites the credentials file atomically.
fn write_tokens(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reloads(gw: &BinaryGateway) -> (f64, f64) {
    let s = parse(&scrape(gw.metrics));
    let what = [("what", "credentials")];
    (
        value(&s, "mcp_gateway_config_reloads_total", &what),
        value(&s, "mcp_gateway_config_reload_errors_total", &what),
    )
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

/// (started, token, status) of every request.
type Log = Arc<Mutex<Vec<(Instant, &'static str, u16)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_fails_on_the_next_request_and_the_kept_one_never_does() {
    let dir = TempDir::new("rotation");
    let tokens = dir.path().join("tokens");
    write_tokens(
        &tokens,
        &format!("# two clients\nci {KEEP}\nold-laptop {DROP}\n"),
    );
    let audit = dir.path().join("audit.jsonl");
    let (upstream, gw) = start(&tokens, &["--audit-log", audit.to_str().unwrap()]).await;

    // Eight keep-alive connections per token, sending until told to stop.
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for token in [KEEP, DROP].into_iter().cycle().take(16) {
        let (log, stop) = (log.clone(), stop.clone());
        let mut conn = Connection::open(gw.listen, token).await;
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                // A reload must drop no connection: every request gets an answer.
                let status = conn
                    .ping()
                    .await
                    .expect("the connection survived the reload");
                log.lock().unwrap().push((started, token, status));
            }
        });
    }
    let count = |log: &Log| log.lock().unwrap().len();
    eventually("500 requests before the rotation", || count(&log) >= 500).await;
    write_tokens(&tokens, &format!("ci {KEEP}\n"));
    let confirmed = eventually("the reload", || reloads(&gw).0 == 1.0).await;
    let before = count(&log);
    eventually("500 more requests after it", || count(&log) >= before + 500).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = clients.join_next().await {
        done.expect("client");
    }

    let log = log.lock().unwrap();
    let kept: Vec<u16> = log.iter().filter(|r| r.1 == KEEP).map(|r| r.2).collect();
    assert!(
        kept.iter().all(|s| *s == 200),
        "a kept-token request failed"
    );
    let dropped_after: Vec<u16> = log
        .iter()
        .filter(|r| r.1 == DROP && r.0 >= confirmed)
        .map(|r| r.2)
        .collect();
    let dropped_before = log.iter().filter(|r| r.1 == DROP && r.0 < confirmed);
    assert!(
        dropped_before.clone().any(|r| r.2 == 200),
        "setup: the token worked before it was removed"
    );
    assert!(!dropped_after.is_empty());
    assert!(
        dropped_after.iter().all(|s| *s == 401),
        "a removed token succeeded after the reload"
    );
    eprintln!(
        "{} requests: {} with the kept token (all 200), {} with the removed one after the reload (all 401)",
        log.len(),
        kept.len(),
        dropped_after.len()
    );
    assert!(log.len() >= 1000);
    // What went upstream never carried a token.
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    let s = parse(&scrape(gw.metrics));
    let by = |credential: &str, status: &str| {
        value(
            &s,
            "mcp_gateway_requests_total",
            &[("credential", credential), ("status", status)],
        )
    };
    assert_eq!(
        by("ci", "200") as usize,
        kept.len(),
        "counted under the name"
    );
    assert_eq!(by("old-laptop", "401"), 0.0, "a refused token names nobody");

    // The audit log names the credential of every authenticated call, and never a token.
    drop(gw);
    let text = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named = |name: &str| records.iter().filter(|r| r["credential"] == name).count();
    assert_eq!(named("ci"), kept.len());
    assert!(named("old-laptop") > 0);
    assert!(
        records
            .iter()
            .filter(|r| r["status"] == 401)
            .all(|r| r["credential"].is_null())
    );
    assert!(!text.contains(KEEP) && !text.contains(DROP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_missing_file_keeps_the_tokens_in_force_and_sighup_reloads_at_once() {
    let dir = TempDir::new("broken-tokens");
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, &format!("ci {KEEP}\n"));
    let (_upstream, gw) = start(&tokens, &[]).await;
    let mut conn = Connection::open(gw.listen, KEEP).await;
    assert_eq!(conn.ping().await.unwrap(), 200);

    for (i, broken) in [
        format!("ci {KEEP}\nci {DROP}\n"),
        "two fields three\n".to_owned(),
        String::new(),
    ]
    .iter()
    .enumerate()
    {
        write_tokens(&tokens, broken);
        let errors = i as f64 + 1.0;
        eventually("the failed reload is counted", || reloads(&gw).1 == errors).await;
        assert_eq!(
            conn.ping().await.unwrap(),
            200,
            "{broken:?} changed the tokens"
        );
    }
    std::fs::remove_file(&tokens).unwrap();
    eventually("the missing file is counted", || reloads(&gw).1 == 4.0).await;
    assert_eq!(conn.ping().await.unwrap(), 200);
    assert_eq!(reloads(&gw).0, 0.0);

    // The file is back: loaded when it settles.
    write_tokens(&tokens, &format!("ci {DROP}\n"));
    eventually("the reload", || reloads(&gw).0 == 1.0).await;
    assert_eq!(
        conn.ping().await.unwrap(),
        401,
        "the rotated token is in force"
    );
    let mut rotated = Connection::open(gw.listen, DROP).await;
    assert_eq!(rotated.ping().await.unwrap(), 200);

    // SIGHUP reloads at once, even a file that did not change (only SIGHUP does that).
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) }, 0);
    eventually("the SIGHUP reload", || reloads(&gw).0 == 2.0).await;
    assert_eq!(rotated.ping().await.unwrap(), 200);
}
