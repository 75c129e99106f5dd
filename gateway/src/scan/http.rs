//! One probe request and what its answer says: the bytes the scan sends ([`Request::to_bytes`]),
//! when it stops reading ([`enough`]), what came back ([`classify`]) and whether that is an MCP
//! server speaking ([`mcp_answer`]). Pure, but for [`exchange`], the thin socket plumbing.
use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};

/// The most of an answer the scan reads.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The foreign name the rebinding test sends as `Host` (and in `Origin`): `.invalid` never
/// resolves, so nothing real is impersonated.
pub const FOREIGN_HOST: &str = "rebind.mcp-gateway.invalid";

/// The protocol versions the probes speak.
pub const ERA_2026: &str = "2026-07-28";
pub const ERA_2025: &str = "2025-06-18";

/// What one probe asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `POST` of a 2026-07-28 `server/discover`.
    Discover,
    /// `POST` of a 2025 `initialize`.
    Initialize,
    /// `GET` of the old HTTP+SSE transport's event stream.
    SseStream,
    /// `DELETE` of the session an `initialize` opened.
    EndSession(String),
    /// `POST` of `tools/list` (`--deep` only): in the 2026-07-28 form, or in the 2025 form
    /// within the session an `initialize` opened (when it opened one).
    ListTools {
        era_2026: bool,
        session: Option<String>,
    },
}

/// The `_meta` every 2026-07-28 request carries.
const META_2026: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

/// One probe request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub ask: Ask,
    pub path: &'static str,
    /// The `Host` header.
    pub host: String,
    pub origin: Option<String>,
}

impl Request {
    /// The exact bytes sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (method, body, extra): (&str, Option<String>, Vec<(&str, String)>) = match &self.ask {
            Ask::Discover => (
                "POST",
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{"_meta":{META_2026}}}}}"#
                )),
                vec![
                    ("MCP-Protocol-Version", ERA_2026.into()),
                    ("Mcp-Method", "server/discover".into()),
                ],
            ),
            Ask::Initialize => (
                "POST",
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{ERA_2025}","capabilities":{{}},"clientInfo":{{"name":"mcp-gateway-scan","version":"{}"}}}}}}"#,
                    env!("CARGO_PKG_VERSION")
                )),
                Vec::new(),
            ),
            Ask::SseStream => ("GET", None, Vec::new()),
            Ask::ListTools { era_2026: true, .. } => (
                "POST",
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{META_2026}}}}}"#
                )),
                vec![
                    ("MCP-Protocol-Version", ERA_2026.into()),
                    ("Mcp-Method", "tools/list".into()),
                ],
            ),
            Ask::ListTools {
                era_2026: false,
                session,
            } => (
                "POST",
                Some(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#.into()),
                session
                    .iter()
                    .map(|id| ("Mcp-Session-Id", id.clone()))
                    .chain([("MCP-Protocol-Version", ERA_2025.into())])
                    .collect(),
            ),
            Ask::EndSession(id) => (
                "DELETE",
                None,
                vec![
                    ("Mcp-Session-Id", id.clone()),
                    ("MCP-Protocol-Version", ERA_2025.into()),
                ],
            ),
        };
        let mut out = format!("{method} {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.host);
        if let Some(origin) = &self.origin {
            out.push_str(&format!("Origin: {origin}\r\n"));
        }
        out.push_str(concat!(
            "User-Agent: mcp-gateway-scan/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        out.push_str("Accept: application/json, text/event-stream\r\nConnection: close\r\n");
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &body {
            out.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        out.push_str("\r\n");
        if let Some(body) = body {
            out.push_str(&body);
        }
        out.into_bytes()
    }
}

/// What came back on the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// connect() failed (refused, or EPERM from a kernel policy).
    ConnectFailed(String),
    /// Nothing within the timeout.
    NoAnswer,
    /// Closed without sending a byte.
    ClosedEmpty,
    /// Bytes that are not an HTTP/1.x response.
    NotHttp,
    Http(HttpAnswer),
}

/// An HTTP answer, as much of it as arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_event_stream(&self) -> bool {
        self.header("content-type").is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
    }
}

const PREFIX: &[u8] = b"HTTP/1.";

/// Whether `buf` can no longer be the start of an HTTP/1.x response.
fn not_http(buf: &[u8]) -> bool {
    let n = buf.len().min(PREFIX.len());
    buf[..n] != PREFIX[..n]
}

/// Whether the scan has read enough of an answer to judge it (it stops reading then).
pub fn enough(buf: &[u8]) -> bool {
    if buf.len() >= MAX_ANSWER || (!buf.is_empty() && not_http(buf)) {
        return true;
    }
    let Some((answer, head_len)) = parse_head(buf) else {
        return false;
    };
    let raw = &buf[head_len..];
    if answer
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        if memchr::memmem::find(raw, b"0\r\n\r\n").is_some_and(|i| i == 0 || raw[i - 1] == b'\n') {
            return true;
        }
    } else if let Some(len) = content_length(&answer) {
        return raw.len() >= len;
    }
    // A stream: one complete event is enough (the server may stream forever).
    answer.is_event_stream() && {
        let body = decode_body(&answer, raw);
        memchr::memmem::find(&body, b"\n\n").is_some()
            || memchr::memmem::find(&body, b"\r\n\r\n").is_some()
    }
}

fn content_length(answer: &HttpAnswer) -> Option<usize> {
    answer.header("content-length")?.trim().parse().ok()
}

/// The head of `buf` when complete, and its length.
fn parse_head(buf: &[u8]) -> Option<(HttpAnswer, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Some((
            HttpAnswer {
                status: response.code.unwrap_or(0),
                headers: response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body: Vec::new(),
            },
            len,
        )),
        _ => None,
    }
}

/// De-chunks what arrived of a chunked body (tolerating a cut-off end).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = memchr::memmem::find(raw, b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = start.saturating_add(size).min(raw.len());
        out.extend_from_slice(&raw[start..end]);
        if end + 2 > raw.len() {
            break;
        }
        raw = &raw[end + 2..];
    }
    out
}

fn decode_body(answer: &HttpAnswer, raw: &[u8]) -> Vec<u8> {
    if answer
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(raw)
    } else if let Some(len) = content_length(answer) {
        raw[..len.min(raw.len())].to_vec()
    } else {
        raw.to_vec()
    }
}

/// What the bytes read say, once reading stopped (`eof`: the peer closed).
pub fn classify(buf: &[u8], eof: bool) -> Answer {
    if buf.is_empty() {
        return if eof {
            Answer::ClosedEmpty
        } else {
            Answer::NoAnswer
        };
    }
    if not_http(buf) {
        return Answer::NotHttp;
    }
    match parse_head(buf) {
        Some((mut answer, len)) => {
            answer.body = decode_body(&answer, &buf[len..]);
            Answer::Http(answer)
        }
        // A head cut off: HTTP-looking, but nothing to judge.
        None if buf.len() < MAX_ANSWER => Answer::Http(HttpAnswer::default()),
        None => Answer::NotHttp,
    }
}

/// What an MCP server said, read from its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    pub protocol_versions: Vec<String>,
    /// The `Mcp-Session-Id` an `initialize` opened.
    pub session: Option<String>,
}

/// Whether an answer is an MCP server speaking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mcp {
    /// A JSON-RPC result naming the server (`serverInfo`), in JSON or in an SSE event.
    Server(ServerInfo),
    /// The old HTTP+SSE transport's stream, opening with an `endpoint` event.
    SseEndpoint,
    /// `401` with a `WWW-Authenticate` naming `resource_metadata` (MCP authorization).
    AuthRequired,
    /// Another 4xx.
    Refused(u16),
    /// Anything else (with its status; 0 when the head was cut off).
    Other(u16),
}

/// Judges an HTTP answer.
pub fn mcp_answer(answer: &HttpAnswer) -> Mcp {
    let status = answer.status;
    if status == 401
        && answer
            .header("www-authenticate")
            .is_some_and(|v| v.to_ascii_lowercase().contains("resource_metadata"))
    {
        return Mcp::AuthRequired;
    }
    if (200..300).contains(&status) {
        let text = String::from_utf8_lossy(&answer.body);
        if answer.is_event_stream() {
            let mut event = None;
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(data) = line.strip_prefix("data:") {
                    if event.as_deref() == Some("endpoint") {
                        return Mcp::SseEndpoint;
                    }
                    if let Some(info) = server_info(data.trim(), answer) {
                        return Mcp::Server(info);
                    }
                }
            }
        } else if let Some(info) = server_info(text.trim(), answer) {
            return Mcp::Server(info);
        }
    }
    if (400..500).contains(&status) {
        Mcp::Refused(status)
    } else {
        Mcp::Other(status)
    }
}

/// The most tool names kept from a `tools/list` answer, and the characters of each.
const MAX_TOOLS: usize = 256;
const MAX_TOOL_NAME: usize = 64;

/// The tool names of a `tools/list` answer (JSON, or the result in an SSE event); `None` when
/// the answer is not a `tools/list` result.
pub fn tool_names(answer: &HttpAnswer) -> Option<Vec<String>> {
    if !(200..300).contains(&answer.status) {
        return None;
    }
    let text = String::from_utf8_lossy(&answer.body);
    let from_json = |json: &str| -> Option<Vec<String>> {
        let value: Value = serde_json::from_str(json.trim()).ok()?;
        let tools = value.get("result")?.get("tools")?.as_array()?;
        Some(
            tools
                .iter()
                .filter_map(|t| t.get("name")?.as_str().map(|n| truncate(n, MAX_TOOL_NAME)))
                .take(MAX_TOOLS)
                .collect(),
        )
    };
    if answer.is_event_stream() {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(from_json)
    } else {
        from_json(&text)
    }
}

/// The server's identity, from a JSON-RPC result with `serverInfo`.
fn server_info(json: &str, answer: &HttpAnswer) -> Option<ServerInfo> {
    let value: Value = serde_json::from_str(json).ok()?;
    if value.get("jsonrpc")?.as_str()? != "2.0" {
        return None;
    }
    let result = value.get("result")?;
    // 2025: `serverInfo` in the `initialize` result; 2026-07-28: in the result's `_meta`.
    let info = result
        .get("serverInfo")
        .or_else(|| {
            result
                .get("_meta")?
                .get("io.modelcontextprotocol/serverInfo")
        })?
        .as_object()?;
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(|s| truncate(s, 128))
            .filter(|s| !s.is_empty())
    };
    let mut versions: Vec<String> = ["supportedVersions", "protocolVersions"]
        .iter()
        .filter_map(|k| result.get(*k)?.as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(|s| truncate(s, 32)))
        .take(16)
        .collect();
    if let Some(v) = text(result.get("protocolVersion")) {
        versions.push(v);
    }
    Some(ServerInfo {
        name: text(info.get("name")),
        version: text(info.get("version")),
        protocol_versions: versions,
        session: answer
            .header("mcp-session-id")
            .map(|s| truncate(s.trim(), 256)),
    })
}

/// At most `max` characters of `s`, control characters dropped (the table prints them).
fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Sends `request` to `to` and reads the answer, all within `timeout`.
pub async fn exchange(to: SocketAddr, request: &[u8], timeout: Duration) -> Answer {
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, TcpStream::connect(to)).await {
        Err(_) => Answer::NoAnswer,
        Ok(Err(e)) => Answer::ConnectFailed(e.to_string()),
        Ok(Ok(stream)) => exchange_on(stream, request, deadline).await,
    }
}

/// Sends `request` to the Unix socket at `path` and reads the answer, all within `timeout`.
pub async fn exchange_unix(path: &std::path::Path, request: &[u8], timeout: Duration) -> Answer {
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(path)).await {
        Err(_) => Answer::NoAnswer,
        Ok(Err(e)) => Answer::ConnectFailed(e.to_string()),
        Ok(Ok(stream)) => exchange_on(stream, request, deadline).await,
    }
}

/// Writes `request` on a connected stream and reads the answer until [`enough`], the peer
/// closes, or `deadline`.
async fn exchange_on(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &[u8],
    deadline: Instant,
) -> Answer {
    let mut buf = Vec::new();
    let mut eof = false;
    let io = async {
        // A peer that closes before reading everything still may have answered: read anyway.
        let _ = stream.write_all(request).await;
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if enough(&buf) {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, io).await;
    buf.truncate(MAX_ANSWER);
    classify(&buf, eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(raw: &str) -> HttpAnswer {
        match classify(raw.as_bytes(), true) {
            Answer::Http(a) => a,
            other => panic!("not HTTP: {other:?}"),
        }
    }

    const INIT_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"weather","version":"1.2.0"}}}"#;

    #[test]
    fn answers_are_classified() {
        let json = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: abc\r\ncontent-length: {}\r\n\r\n{INIT_RESULT}",
            INIT_RESULT.len()
        );
        let sse_result = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\nevent: message\r\ndata: {INIT_RESULT}\r\n\r\n\r\n",
            INIT_RESULT.len() + 26
        );
        let info = ServerInfo {
            name: Some("weather".into()),
            version: Some("1.2.0".into()),
            protocol_versions: vec!["2025-06-18".into()],
            session: Some("abc".into()),
        };
        let cases: Vec<(&str, String, Mcp)> = vec![
            ("JSON initialize result", json, Mcp::Server(info.clone())),
            (
                "SSE initialize result, chunked",
                sse_result,
                Mcp::Server(ServerInfo {
                    session: None,
                    ..info.clone()
                }),
            ),
            (
                "old SSE transport",
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\nevent: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n".into(),
                Mcp::SseEndpoint,
            ),
            (
                "2026 discover",
                r#"HTTP/1.1 200 OK
content-type: application/json

{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28","2025-06-18"],"serverInfo":{"name":"n","version":"2"}}}"#
                    .replace('\n', "\r\n"),
                Mcp::Server(ServerInfo {
                    name: Some("n".into()),
                    version: Some("2".into()),
                    protocol_versions: vec!["2026-07-28".into(), "2025-06-18".into()],
                    session: None,
                }),
            ),
            (
                // What the Python SDK 2.3 answers: the identity in the result's `_meta`.
                "2026 discover, serverInfo in _meta",
                r#"HTTP/1.1 200 OK
content-type: application/json

{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"tools":{}},"resultType":"complete","supportedVersions":["2026-07-28"],"ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"e2e-upstream","version":""}}}}"#
                    .replace('\n', "\r\n"),
                Mcp::Server(ServerInfo {
                    name: Some("e2e-upstream".into()),
                    version: None,
                    protocol_versions: vec!["2026-07-28".into()],
                    session: None,
                }),
            ),
            (
                "MCP authorization",
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer resource_metadata=\"http://x/.well-known/oauth-protected-resource\"\r\ncontent-length: 0\r\n\r\n".into(),
                Mcp::AuthRequired,
            ),
            (
                "plain 401 is not MCP",
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n\r\n".into(),
                Mcp::Refused(401),
            ),
            (
                "SDK rebinding refusal",
                "HTTP/1.1 421 Misdirected Request\r\ncontent-length: 12\r\n\r\nInvalid Host".into(),
                Mcp::Refused(421),
            ),
            (
                "a web page",
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\n<html>hi</html>".into(),
                Mcp::Other(200),
            ),
            (
                "an empty version is no version",
                "HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"serverInfo\":{\"name\":\"n\",\"version\":\"\"}}}".into(),
                Mcp::Server(ServerInfo {
                    name: Some("n".into()),
                    ..ServerInfo::default()
                }),
            ),
            (
                "hostile: JSON-RPC error is not a server",
                "HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"x\"}}".into(),
                Mcp::Other(200),
            ),
            (
                "hostile: serverInfo not an object",
                "HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"serverInfo\":\"x\"}}".into(),
                Mcp::Other(200),
            ),
            (
                "hostile: result on a 500",
                format!("HTTP/1.1 500 Oops\r\n\r\n{INIT_RESULT}"),
                Mcp::Other(500),
            ),
            (
                "hostile: not JSON",
                "HTTP/1.1 200 OK\r\n\r\n{{{{\"jsonrpc\"".into(),
                Mcp::Other(200),
            ),
        ];
        for (what, raw, want) in cases {
            assert_eq!(mcp_answer(&http(&raw)), want, "{what}");
        }
    }

    #[test]
    fn hostile_names_are_cut_and_cleaned() {
        let name = format!("evil\u{1b}[2J{}", "x".repeat(500));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"serverInfo":{{"name":{}}}}}}}"#,
            serde_json::to_string(&name).unwrap()
        );
        let Mcp::Server(info) = mcp_answer(&http(&format!("HTTP/1.1 200 OK\r\n\r\n{body}"))) else {
            panic!("not a server");
        };
        let got = info.name.unwrap();
        assert_eq!(got.chars().count(), 128);
        assert!(!got.contains('\u{1b}'));
    }

    #[test]
    fn raw_bytes_are_classified() {
        assert_eq!(classify(b"", false), Answer::NoAnswer);
        assert_eq!(classify(b"", true), Answer::ClosedEmpty);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n", true), Answer::NotHttp);
        assert_eq!(classify(b"\x00\x01garbage", false), Answer::NotHttp);
        assert_eq!(classify(b"HTTX", false), Answer::NotHttp);
        // A head still arriving when the time ran out: HTTP, nothing to judge.
        assert_eq!(
            classify(b"HTTP/1.1 200 O", false),
            Answer::Http(HttpAnswer::default())
        );
        assert_eq!(classify(&vec![b'H'; MAX_ANSWER], false), Answer::NotHttp);
    }

    #[test]
    fn reading_stops_when_the_answer_can_be_judged() {
        assert!(!enough(b""));
        assert!(!enough(b"HTTP/1."), "a prefix may go on");
        assert!(enough(b"SSH-2.0"), "not HTTP: judged at once");
        assert!(!enough(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc"));
        assert!(enough(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabcde"));
        assert!(!enough(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"
        ));
        assert!(enough(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ));
        // An endless stream: the first complete event is enough.
        assert!(!enough(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\r\n"
        ));
        assert!(enough(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\r\ndata: /m\r\n\r\n"));
        assert!(enough(&vec![b'x'; MAX_ANSWER]));
    }

    #[test]
    fn dechunking_tolerates_hostile_and_cut_bodies() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"3\r\nab"), b"ab");
        assert_eq!(dechunk(b"zz\r\nabc"), b"");
        assert_eq!(dechunk(b"ffffffffffffffff\r\nabc"), b"abc");
        assert_eq!(dechunk(b"fffffffffffffffffffff\r\nabc"), b"");
    }

    /// A peer on loopback that behaves as `serve` says, and what `exchange` made of it, with
    /// how long it took.
    fn against<F, Fut>(serve: F) -> (Answer, Duration)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let to = listener.local_addr().unwrap();
            let peer = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                serve(stream).await;
            });
            let start = std::time::Instant::now();
            let answer = exchange(to, b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(1000)).await;
            let took = start.elapsed();
            peer.abort();
            (answer, took)
        })
    }

    #[test]
    fn hostile_peers_end_within_the_timeout() {
        // The timeout is 1 s: the slow cases end at it, the quick ones well before.
        let limit = Duration::from_millis(2500);
        // Never answers.
        let (answer, took) = against(|s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        assert_eq!(answer, Answer::NoAnswer);
        assert!(took < limit, "{took:?}");
        // Closes at once.
        let (answer, _) = against(|s| async move { drop(s) });
        assert_eq!(answer, Answer::ClosedEmpty);
        // Garbage, then silence: judged at once, not at the timeout.
        let (answer, took) = against(|mut s| async move {
            let _ = s.write_all(b"\x00\xffgarbage").await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        assert_eq!(answer, Answer::NotHttp);
        assert!(took < Duration::from_millis(800), "{took:?}");
        // An HTTP head byte by byte, slower than the timeout allows.
        let (answer, took) = against(|mut s| async move {
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
                let _ = s.write_all(&[*b]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        assert_eq!(
            answer,
            Answer::Http(HttpAnswer::default()),
            "cut off: nothing to judge"
        );
        assert!(took < limit, "{took:?}");
        // An endless event stream: read until its first event, long before the timeout.
        let (answer, took) = against(|mut s| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\r\ndata: /messages/\r\n\r\n")
                .await;
            loop {
                if s.write_all(b": keep-alive\r\n\r\n").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let Answer::Http(http) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(mcp_answer(&http), Mcp::SseEndpoint);
        assert!(took < Duration::from_millis(800), "{took:?}");
        // An endless stream of junk after a valid head: capped by the timeout and 64 KiB.
        let (answer, took) = against(|mut s| async move {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            let junk = [b'x'; 4096];
            while s.write_all(&junk).await.is_ok() {}
        });
        let Answer::Http(http) = answer else {
            panic!("{answer:?}");
        };
        assert!(http.body.len() <= MAX_ANSWER);
        assert!(took < limit, "{took:?}");
    }

    #[test]
    fn requests_are_exactly_what_the_docs_say() {
        let req = Request {
            ask: Ask::Initialize,
            path: "/mcp",
            host: format!("{FOREIGN_HOST}:8000"),
            origin: None,
        };
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.starts_with(
            "POST /mcp HTTP/1.1\r\nHost: rebind.mcp-gateway.invalid:8000\r\nUser-Agent: mcp-gateway-scan/"
        ));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["method"], "initialize");
        let discover = Request {
            ask: Ask::Discover,
            path: "/",
            host: "127.0.0.1:1".into(),
            origin: Some("http://x".into()),
        };
        let text = String::from_utf8(discover.to_bytes()).unwrap();
        assert!(text.contains("\r\nOrigin: http://x\r\n"));
        assert!(text.contains("\r\nMcp-Method: server/discover\r\n"));
        assert!(text.contains("\r\nMCP-Protocol-Version: 2026-07-28\r\n"));
        let delete = Request {
            ask: Ask::EndSession("s1".into()),
            path: "/mcp",
            host: "127.0.0.1:1".into(),
            origin: None,
        };
        let text = String::from_utf8(delete.to_bytes()).unwrap();
        assert!(text.starts_with("DELETE /mcp HTTP/1.1\r\n"));
        assert!(text.contains("\r\nMcp-Session-Id: s1\r\n"));
        assert!(!text.contains("Content-Length"));
    }
}
