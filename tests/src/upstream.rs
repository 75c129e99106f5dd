//! A real upstream on `127.0.0.1:0` that records every connection and request it receives.
//!
//! Routes:
//! - `/status/NNN`: answers with that status (and an `mcp-session-id` header);
//! - `/slow?ms=N`: answers like the default route after N ms;
//! - `/sse?events=N&every_ms=M`: an SSE stream of N events, one every M ms, recording when each
//!   was sent and when the stream was dropped (client gone);
//! - a `tools/list` request: the tools [`TOOLS`], as JSON, or as an SSE stream (a progress
//!   notification, then the result) on `/mcp-sse`;
//! - anything else: `200 application/json`, echoing method and path, with `mcp-session-id`.
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, combinators::UnsyncBoxBody};
use hyper::{
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::mpsc,
};

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Log {
    connections: usize,
    requests: Vec<Seen>,
    sse_sent: Vec<Instant>,
    sse_dropped: Option<Instant>,
}

/// The running upstream. Dropping it stops accepting.
pub struct Upstream {
    /// The TCP address (`0.0.0.0:0` for a Unix-socket upstream).
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_on(([127, 0, 0, 1], 0).into()).await
    }

    /// The upstream on a given address (e.g. one a gateway already points at).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let accept_log = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &accept_log);
            }
        });
        Self { addr, log, task }
    }

    /// The same upstream on a Unix socket at `path`.
    pub fn start_unix(path: &std::path::Path) -> Self {
        let listener = UnixListener::bind(path).expect("bind the upstream socket");
        let log = Arc::new(Mutex::new(Log::default()));
        let accept_log = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &accept_log);
            }
        });
        Self {
            addr: ([0, 0, 0, 0], 0).into(),
            log,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    /// Requests received so far (bodies read in full).
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    /// When each SSE event was handed to the connection.
    pub fn sse_sent(&self) -> Vec<Instant> {
        self.log.lock().unwrap().sse_sent.clone()
    }

    /// When the SSE stream was dropped by hyper (the client went away), if it was.
    pub fn sse_dropped(&self) -> Option<Instant> {
        self.log.lock().unwrap().sse_dropped
    }
}

/// Serves one accepted connection, counting it.
fn serve<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S, log: &Arc<Mutex<Log>>) {
    log.lock().unwrap().connections += 1;
    let log = log.clone();
    tokio::spawn(async move {
        let service = service_fn(move |req| handle(req, log.clone()));
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The tools the upstream lists.
pub const TOOLS: [&str; 4] = ["add", "get_weather", "get_secret", "delete_all"];

/// A `tools/list` result for request `id`.
pub fn tools_result(id: &serde_json::Value) -> String {
    let tools: Vec<serde_json::Value> = TOOLS
        .iter()
        .map(|name| serde_json::json!({"name": name, "inputSchema": {"type": "object"}}))
        .collect();
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}).to_string()
}

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Log>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    // A body error (client or gateway gave up mid-body) is recorded as what arrived.
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    log.lock().unwrap().requests.push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });

    let rpc: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let tools_list = rpc
        .as_ref()
        .filter(|v| v["method"] == "tools/list")
        .map(|v| tools_result(&v["id"]));
    let mut resp = if let Some(result) = tools_list {
        if path == "/mcp-sse" {
            let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
            let stream = format!(
                "event: message\ndata: {progress}\n\nid: 2\nevent: message\ndata: {result}\n\n"
            );
            let mut r = Response::new(full(stream));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        } else {
            let mut r = Response::new(full(result));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::IM_A_TEAPOT);
        let mut r = Response::new(full(format!("status {code}")));
        *r.status_mut() = status;
        r
    } else if path == "/slow" {
        let ms = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("ms=")?.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut r = Response::new(full(format!("{{\"slept_ms\":{ms}}}")));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    } else if path == "/sse" {
        sse(&query, log)
    } else {
        let echo = serde_json::json!({
            "method": parts.method.as_str(),
            "path": path,
            "body_len": body.len(),
        });
        let mut r = Response::new(full(echo.to_string()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    resp.headers_mut()
        .insert("mcp-session-id", "session-from-upstream".parse().unwrap());
    Ok(resp)
}

fn full(s: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(s.into()).boxed_unsync()
}

/// Sets the drop time when hyper drops the stream (client disconnected or stream ended).
struct DropRecorder(Arc<Mutex<Log>>);

impl Drop for DropRecorder {
    fn drop(&mut self) {
        self.0.lock().unwrap().sse_dropped = Some(Instant::now());
    }
}

fn sse(query: &str, log: Arc<Mutex<Log>>) -> Response<Body> {
    let param = |name: &str, default: u64| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(default)
    };
    let events = param("events", 5);
    let every = Duration::from_millis(param("every_ms", 100));
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(1);
    let recorder = DropRecorder(log.clone());
    tokio::spawn(async move {
        for i in 0..events {
            tokio::time::sleep(every).await;
            let frame = Frame::data(Bytes::from(format!(
                "id: {i}\nevent: message\ndata: {{\"n\":{i}}}\n\n"
            )));
            // Recorded just before the event is handed to the connection.
            log.lock().unwrap().sse_sent.push(Instant::now());
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(
        SseBody {
            rx,
            _recorder: recorder,
        }
        .boxed_unsync(),
    );
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r.headers_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    r
}

/// Streams events as the producer sends them; records when hyper drops it.
struct SseBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    _recorder: DropRecorder,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// A tiny HTTP/1.0 server on 127.0.0.1, in a thread of the test, answering every request with
/// `body` (a service a confined MCP server fetches from, or must not); its port.
pub fn http_responder(body: &'static str) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the responder");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}
