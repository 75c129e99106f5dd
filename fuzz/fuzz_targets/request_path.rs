//! `request_path`: the whole request path in memory. The input is raw HTTP/1.1 bytes from one
//! client connection, served by hyper with the listener's own settings
//! (`proxy::accept::http1_builder`) and `Gateway::handle`, in front of a real upstream on
//! `127.0.0.1` that records every request it receives.
//!
//! Input: one byte choosing the server, then the bytes the client sends (see
//! `seeds/request_path/`; the choice is the byte's value mod 3, so `0`, `1`, `2` read well):
//! - `0`: permissive mode, defaults;
//! - `1`: strict mode, extra allowed hosts and origins (one with a port wildcard);
//! - `2`: permissive, bearer token `fuzz-token`, and tool/method allowlists.
//!
//! Properties:
//! - no panic, no hang (an input is served within 10 s);
//! - every request the upstream receives is allowed by the independent reference of
//!   `src/reference.rs` (its `X-Forwarded-Host`, the client's Host, is allowed; its Origin is
//!   absent or allowed; strict mode's Sec-Fetch-Site rule holds), carries no bearer token,
//!   and a POST of a JSON-RPC body (to the endpoint, or a body that is JSON-RPC to the JSON tree
//!   of `src/jsonrpc.rs`) is valid JSON-RPC 2.0 that the allowlists, read plainly, allow;
//! - nothing the gateway refused reaches the upstream: the gateway answers one request at a
//!   time, so its answers and the upstream's records pair up in order. An answer from the
//!   upstream (it tags each with its record's number) must be the next record; a refusal the
//!   gateway makes before forwarding (401, 403, 415, 429, a 400 with a JSON-RPC parse, invalid
//!   request or header-mismatch code, a preflight's 204) pairs with none; other errors
//!   (413, 502, 504, a 400 for a body cut short) may come before or after forwarding.
//!
//! The client half-closes only once the gateway is idle (every input byte read, no request in
//! flight), so that no request is cut off mid-flight. When an input leaves the gateway waiting
//! (a body announced longer than sent), the client closes after a while without progress, and
//! one last forwarded request may then be left without an answer.
#![no_main]

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use gateway_fuzz::{
    jsonrpc::{self, Checked, Json},
    reference,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use mcp_gateway::{
    config::{Limits, ServerSettings, Upstream, access::CredentialsFile},
    credentials,
    mcp::{
        McpSettings,
        allow::ALWAYS_ALLOWED_METHODS,
        headers::HEADER_MISMATCH,
        message::{INVALID_REQUEST, PARSE_ERROR},
    },
    metrics::{self, Metrics, ServerInfo},
    policy::{Mode, PolicySettings},
    proxy::{Client, Gateway, accept, body::Body, head_watch, slots::Slot},
    security_log::RejectionLog,
    source::SourceList,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio_util::sync::CancellationToken;

const LISTEN_PORT: u16 = 8787;
const TOKEN: &str = "fuzz-token";
/// The header the upstream tags its answers with: the number of its record.
const SEQ: HeaderName = HeaderName::from_static("x-fuzz-seq");
/// Scheduler turns without any progress after which a waiting gateway is given EOF.
const STALL_TURNS: u32 = 100;

/// Record numbers, across all upstreams.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);
/// Bumped by everything that moves: reads, answers, upstream records.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn progress() {
    PROGRESS.fetch_add(1, SeqCst);
}

/// One server's settings.
struct Config {
    mode: Mode,
    hosts: &'static [&'static str],
    origins: &'static [&'static str],
    allowlists: bool,
    auth: bool,
}

const CONFIGS: [Config; 3] = [
    Config {
        mode: Mode::Permissive,
        hosts: &[],
        origins: &[],
        allowlists: false,
        auth: false,
    },
    Config {
        mode: Mode::Strict,
        hosts: &["mcp.example.test", "127.0.0.1:9000"],
        origins: &["https://app.example.com", "http://localhost:*"],
        allowlists: false,
        auth: false,
    },
    Config {
        mode: Mode::Permissive,
        hosts: &[],
        origins: &["https://app.example.com"],
        allowlists: true,
        auth: true,
    },
];

/// What an upstream received.
#[derive(Debug)]
struct Record {
    seq: u64,
    method: Method,
    path: String,
    headers: HeaderMap,
    /// `None` until read whole (or when it could not be).
    body: Option<Bytes>,
}

type Log = Arc<Mutex<Vec<Record>>>;

struct Server {
    gw: Arc<Gateway>,
    http: http1::Builder,
    reference: reference::Policy,
    log: Log,
    allowlists: bool,
    auth: bool,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    servers: Vec<Server>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One thread, kept across inputs: the gateway, its upstream and the client take turns.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let servers = rt.block_on(async { CONFIGS.iter().map(server).collect() });
        Fixture { rt, servers }
    })
}

/// A gateway for `config` in front of a recording upstream of its own.
fn server(config: &Config) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the upstream");
    listener.set_nonblocking(true).expect("non-blocking");
    let upstream = listener.local_addr().expect("its address");
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let log = Log::default();
    tokio::spawn(serve_upstream(listener, log.clone()));

    let listen = SocketAddr::from(([127, 0, 0, 1], LISTEN_PORT));
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let policy = PolicySettings {
        mode: config.mode,
        listen,
        allowed_hosts: strings(config.hosts),
        allowed_origins: strings(config.origins),
    };
    let reference = reference::Policy::new(
        config.mode == Mode::Strict,
        LISTEN_PORT,
        &policy.allowed_hosts,
        &policy.allowed_origins,
    )
    .expect("canonical settings");
    let mcp = match config.allowlists {
        true => McpSettings {
            allowed_tools: vec!["get_*".into()],
            denied_tools: vec!["get_secrets".into()],
            allowed_methods: vec!["tools/*".into(), "resources/read".into()],
        },
        false => McpSettings::default(),
    };
    // The production defaults, with short waits: a hung case must not stall the fuzzer.
    let limits = Limits {
        response_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        ..Limits::default()
    };
    let settings = ServerSettings {
        name: "fuzz".into(),
        listen,
        upstream: Upstream::tcp(&upstream.to_string(), upstream.port()),
        policy,
        credentials: config.auth.then(|| CredentialsFile {
            path: "(fuzz)".into(),
            set: credentials::file::parse(TOKEN).expect("a token"),
            version: Vec::new(),
        }),
        tls: None,
        plaintext_beyond_loopback: false,
        pass_origin: false,
        limits,
        exclusive_upstream: false,
        allow_cgroups: Vec::new(),
        mcp,
        sources: SourceList::default(),
        rate: None,
        egress: None,
        supervised: None,
    };
    let metrics = Arc::new(Metrics::in_process(
        metrics::DEFAULT_LABEL_BUDGET,
        &[ServerInfo {
            name: "fuzz".into(),
            listen_port: LISTEN_PORT,
            upstream_port: Some(upstream.port()),
        }],
    ));
    let gw = Gateway::new(
        settings,
        0,
        metrics,
        Arc::new(RejectionLog::default()),
        None,
        CancellationToken::new(),
    )
    .expect("valid settings");
    Server {
        http: accept::http1_builder(&gw.limits),
        gw: Arc::new(gw),
        reference,
        log,
        allowlists: config.allowlists,
        auth: config.auth,
    }
}

async fn serve_upstream(listener: tokio::net::TcpListener, log: Log) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| record(log.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The upstream: records the request, reads its body, answers 200 tagged with the record.
async fn record(log: Log, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let seq = NEXT_SEQ.fetch_add(1, SeqCst);
    progress();
    let (parts, body) = req.into_parts();
    lock(&log).push(Record {
        seq,
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: None,
    });
    let body = body.collect().await.ok().map(|b| b.to_bytes());
    if let Some(r) = lock(&log).iter_mut().find(|r| r.seq == seq) {
        r.body = body;
    }
    progress();
    let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_secrets"}]}}"#;
    let mut resp = Response::new(Full::new(Bytes::from_static(answer)));
    resp.headers_mut().insert(SEQ, seq.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// How the gateway answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The upstream's answer to record `seq`.
    Upstream(u64),
    /// Refused before anything was forwarded.
    Refused(u16),
    /// The gateway's own error, before or after forwarding.
    Either(u16),
}

/// One input's connection, as the gateway's side sees it.
#[derive(Default)]
struct Exec {
    /// Bytes the gateway read.
    read: AtomicUsize,
    /// Requests handed to the gateway and not answered yet.
    in_flight: AtomicUsize,
    /// The gateway's last read found no data, and no request started or ended since.
    waiting: AtomicBool,
    answers: Mutex<Vec<Seen>>,
}

/// The gateway's end of the connection, telling `Exec` what it reads.
struct Counted {
    inner: tokio::io::DuplexStream,
    exec: Arc<Exec>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(_) => {
                let n = buf.filled().len() - before;
                self.exec.read.fetch_add(n, SeqCst);
                self.exec.waiting.store(false, SeqCst);
                progress();
            }
            Poll::Pending => self.exec.waiting.store(true, SeqCst),
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        progress();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Classifies an answer; a 400's JSON-RPC code tells a refusal from a body cut short.
async fn classify(resp: Response<Body>) -> (Response<Body>, Seen) {
    let tag = resp
        .headers()
        .get(SEQ)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(seq) = tag {
        return (resp, Seen::Upstream(seq));
    }
    let status = resp.status().as_u16();
    match resp.status() {
        StatusCode::BAD_REQUEST => {
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let code = jsonrpc::parse(&bytes)
                .ok()
                .flatten()
                .and_then(|v| v.get("error")?.get("code").cloned());
            let refused = [PARSE_ERROR, INVALID_REQUEST, HEADER_MISMATCH]
                .iter()
                .any(|c| code == Some(Json::Int((*c).into())));
            let seen = match refused {
                true => Seen::Refused(status),
                false => Seen::Either(status),
            };
            (Response::from_parts(parts, Body::full(bytes)), seen)
        }
        StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::NO_CONTENT => (resp, Seen::Refused(status)),
        _ => (resp, Seen::Either(status)),
    }
}

/// Lets every task run until nothing moves any more.
async fn settle() {
    let mut quiet = 0;
    let mut last = PROGRESS.load(SeqCst);
    while quiet < 16 {
        tokio::task::yield_now().await;
        let now = PROGRESS.load(SeqCst);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// Serves `input` on one connection; whether every request the gateway started was answered
/// (none was dropped mid-flight by the client's close).
async fn exec(server: &Server, state: &Arc<Exec>, input: &[u8]) -> bool {
    let (client, theirs) = tokio::io::duplex(input.len() + 64 * 1024);
    let counted = Counted {
        inner: theirs,
        exec: state.clone(),
    };
    // As `accept.rs` serves a plain connection: its bytes watched by the framing tracker.
    let (io, marks) = head_watch::Watched::new(counted, server.gw.limits.max_header_bytes);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let who = Client::new(peer, Slot::detached(), marks);
    let gw = server.gw.clone();
    let shared = state.clone();
    let service = service_fn(move |req| {
        let (gw, state, who) = (gw.clone(), shared.clone(), who.clone());
        async move {
            state.in_flight.fetch_add(1, SeqCst);
            state.waiting.store(false, SeqCst);
            progress();
            let (resp, seen) = classify(gw.handle(who, req).await).await;
            lock(&state.answers).push(seen);
            state.in_flight.fetch_sub(1, SeqCst);
            state.waiting.store(false, SeqCst);
            progress();
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = tokio::spawn(server.http.serve_connection(TokioIo::new(io), service));
    let (mut from, mut to) = tokio::io::split(client);
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = from.read_to_end(&mut sink).await;
    });
    // The pipe holds the whole input: this never waits on the gateway.
    let _ = to.write_all(input).await;

    let (mut quiet, mut last) = (0, PROGRESS.load(SeqCst));
    while !conn.is_finished() && quiet < STALL_TURNS {
        tokio::task::yield_now().await;
        let idle = state.read.load(SeqCst) == input.len()
            && state.in_flight.load(SeqCst) == 0
            && state.waiting.load(SeqCst);
        if idle {
            break;
        }
        let now = PROGRESS.load(SeqCst);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let _ = to.shutdown().await;
    let _ = conn.await;
    let _ = drain.await;
    state.in_flight.load(SeqCst) == 0
}

/// JSON-RPC to the independent reading: an object with a `jsonrpc` member, or an array holding
/// one.
fn looks_like_jsonrpc(body: &[u8]) -> bool {
    let is_message = |v: &Json| v.get("jsonrpc").is_some();
    match jsonrpc::parse(body) {
        Ok(Some(Json::Array(items))) => items.iter().any(is_message),
        Ok(Some(value)) => is_message(&value),
        Ok(None) | Err(_) => false,
    }
}

/// The allowlists of server `2`, read plainly.
fn allowed(m: &Json) -> bool {
    let Some(method) = m.get("method").and_then(Json::as_str) else {
        return true;
    };
    let method_ok = ALWAYS_ALLOWED_METHODS.contains(&method)
        || method.starts_with("tools/")
        || method == "resources/read";
    let name = m
        .get("params")
        .and_then(|p| p.get("name"))
        .and_then(Json::as_str)
        .unwrap_or_default();
    let tool_ok = method != "tools/call" || (name.starts_with("get_") && name != "get_secrets");
    method_ok && tool_ok
}

/// What the upstream may receive.
fn check_record(server: &Server, r: &Record) {
    let all = |name: &str| -> Vec<&[u8]> {
        r.headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    };
    // The upstream sees its own Origin; the client's, which the gateway judged, comes in
    // X-Forwarded-Origin (a client's own X-Forwarded-Origin never passes).
    let forwarded_origins = all("x-forwarded-origin");
    if !forwarded_origins.is_empty() {
        assert_eq!(
            all("origin"),
            [format!("http://{}", r.headers[header::HOST].to_str().unwrap_or("")).as_bytes()],
            "the upstream was not shown its own origin: {r:?}"
        );
    }
    let req = reference::Request {
        hosts: all("x-forwarded-host"),
        origins: forwarded_origins,
        fetch_sites: all("sec-fetch-site"),
        target: None,
    };
    assert!(
        server.reference.verify(&req).allowed,
        "the upstream received a request the reference refuses: {r:?}"
    );
    if server.auth {
        assert!(
            !r.headers.contains_key(header::AUTHORIZATION),
            "the bearer token reached the upstream"
        );
    }
    let Some(body) = r.body.as_deref().filter(|_| r.method == Method::POST) else {
        return;
    };
    if r.path != "/mcp" && !looks_like_jsonrpc(body) {
        return;
    }
    match jsonrpc::check(body) {
        Err(why) => panic!("the upstream received an invalid MCP message ({why}): {r:?}"),
        Ok(Checked::Unrepresentable) => {}
        Ok(Checked::Messages(list)) => {
            if server.allowlists {
                assert!(
                    list.iter().all(allowed),
                    "the upstream received a refused message: {r:?}"
                );
            }
        }
    }
}

/// Pairs the gateway's answers with the upstream's records, in order.
fn check_pairing(answers: &[Seen], records: &[Record], complete: bool) {
    let mut next = 0;
    for (i, seen) in answers.iter().enumerate() {
        match *seen {
            Seen::Upstream(seq) => {
                let got = records.get(next).map(|r| r.seq);
                assert_eq!(
                    got,
                    Some(seq),
                    "a request reached the upstream without an answer of its own: \
                     answers {answers:?}, records {records:?}"
                );
                next += 1;
            }
            Seen::Refused(_) => {}
            Seen::Either(_) => {
                let claimed = |seq| answers[i + 1..].contains(&Seen::Upstream(seq));
                if records.get(next).is_some_and(|r| !claimed(r.seq)) {
                    next += 1;
                }
            }
        }
    }
    let unanswered = records.len() - next;
    assert!(
        unanswered == 0 || (!complete && unanswered == 1),
        "{unanswered} requests reached the upstream unanswered: answers {answers:?}, \
         records {records:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((which, input)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let server = &fx.servers[usize::from(*which) % fx.servers.len()];
    fx.rt.block_on(async {
        settle().await;
        for s in &fx.servers {
            lock(&s.log).clear();
        }
        let state = Arc::new(Exec::default());
        let served = tokio::time::timeout(Duration::from_secs(10), exec(server, &state, input));
        let Ok(complete) = served.await else {
            panic!(
                "the gateway did not finish serving this input within 10 s:\n{}",
                String::from_utf8_lossy(input)
            );
        };
        settle().await;
        for s in &fx.servers {
            for r in lock(&s.log).iter() {
                check_record(s, r);
            }
        }
        let answers = lock(&state.answers).clone();
        check_pairing(&answers, &lock(&server.log), complete);
    });
});
