//! Pieces of the framing and smuggling tests (`tests/tests/smuggling.rs`): upstreams built on
//! real HTTP/1.1 parsers that record every request they parsed, and a raw TCP client that sends
//! exact bytes and splits whatever comes back into responses.
use std::{
    fs,
    io::{ErrorKind, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    e2e::{TempDir, assets, python},
    process::ChildGuard,
};

/// The HTTP/1.1 parser an upstream runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parser {
    /// uvicorn `--http h11`: the pure-Python parser.
    H11,
    /// uvicorn `--http httptools` (llhttp): uvicorn's default when installed.
    Httptools,
    /// Node's `http.createServer` (llhttp, Node's strict defaults).
    Node,
}

impl Parser {
    pub const ALL: [Self; 3] = [Self::H11, Self::Httptools, Self::Node];

    pub fn name(self) -> &'static str {
        match self {
            Self::H11 => "uvicorn-h11",
            Self::Httptools => "uvicorn-httptools",
            Self::Node => "node",
        }
    }
}

/// An upstream (`tests/e2e/recorder_asgi.py` or `recorder.mjs`) on a loopback port of its own
/// choosing, recording every request its parser handed to the application.
pub struct Recorder {
    pub parser: Parser,
    pub addr: SocketAddr,
    record: PathBuf,
    // Field order: the server stops before its directory goes.
    _child: ChildGuard,
    _dir: TempDir,
}

impl Recorder {
    pub fn start(parser: Parser) -> Self {
        let dir = TempDir::new("recorder");
        let record = dir.path().join("record.jsonl");
        fs::write(&record, "").expect("creating the record");
        let mut cmd = match parser {
            Parser::H11 | Parser::Httptools => {
                let mut cmd = Command::new(python());
                let http = if parser == Parser::H11 {
                    "h11"
                } else {
                    "httptools"
                };
                cmd.arg(assets().join("recorder_asgi.py"))
                    .args(["--http", http]);
                cmd
            }
            // Node's own modules only: no npm install needed.
            Parser::Node => {
                let mut cmd = Command::new("node");
                cmd.arg(assets().join("recorder.mjs"));
                cmd
            }
        };
        cmd.arg("--record").arg(&record);
        let mut child = ChildGuard::spawn_logged(&mut cmd);
        let line = child.read_line();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{} recorder said: {line}", parser.name()));
        Self {
            parser,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            record,
            _child: child,
            _dir: dir,
        }
    }

    /// Every request recorded so far, in order.
    pub fn records(&self) -> Vec<Record> {
        fs::read_to_string(&self.record)
            .expect("reading the recorder's record")
            .lines()
            .map(|l| Record::parse(l).unwrap_or_else(|| panic!("a record line: {l}")))
            .collect()
    }
}

/// One request an upstream's parser handed to its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub method: String,
    pub target: String,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl Record {
    fn parse(line: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(line).ok()?;
        let headers = v["headers"]
            .as_array()?
            .iter()
            .map(|h| {
                Some((
                    h[0].as_str()?.to_ascii_lowercase(),
                    h[1].as_str()?.to_owned(),
                ))
            })
            .collect::<Option<_>>()?;
        Some(Self {
            method: v["method"].as_str()?.to_owned(),
            target: v["target"].as_str()?.to_owned(),
            headers,
        })
    }

    /// The case that sent this request: the `case=` tag of the target, else its `X-Case`
    /// header (a CONNECT target has no query).
    pub fn case(&self) -> Option<&str> {
        if let Some((_, rest)) = self.target.split_once("case=") {
            return rest.split(['&', ' ', '#']).next();
        }
        self.headers
            .iter()
            .find(|(name, _)| name == "x-case")
            .map(|(_, value)| value.as_str())
    }

    /// Whether this is (part of) a hidden request: the smuggled path or marker header, or the
    /// hostile authority anywhere (Host, or the gateway's X-Forwarded-Host/Forwarded copy).
    pub fn is_hidden(&self, marker_path: &str, hostile: &str) -> bool {
        self.target.contains(marker_path)
            || self.target.contains(hostile)
            || self
                .headers
                .iter()
                .any(|(name, value)| name == "x-smuggled" || value.contains(hostile))
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        let host: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == "host" || n == "x-forwarded-host")
            .map(|(_, v)| v.as_str())
            .collect();
        format!("{} {} (host {host:?})", self.method, self.target)
    }
}

/// One response read off the wire.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// What came back on one connection.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub responses: Vec<Response>,
    /// The peer closed (or reset) the connection.
    pub closed: bool,
    /// Bytes after the last complete response: a partial or unparseable answer.
    pub trailing: Vec<u8>,
    /// Writes that were never sent because the connection was gone (or the write failed).
    pub unsent: usize,
}

impl Outcome {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// `200,403`, `400`, `-` (nothing), with `+close` when the peer closed, and `+junk` when
    /// bytes followed that are not a response.
    pub fn describe(&self) -> String {
        let mut s = if self.responses.is_empty() {
            "-".to_owned()
        } else {
            self.statuses()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.trailing.is_empty() {
            s.push_str("+junk");
        }
        s.push_str(if self.closed { "+close" } else { "+open" });
        s
    }
}

/// Sends `writes` over one fresh connection to `addr`, each after the previous ones were
/// answered (one response per write before it, or the connection closed, or `idle` passed),
/// shuts down the write side after the last when `half_close`, and reads until the peer
/// closes or sends nothing for `idle`.
pub fn exchange(addr: SocketAddr, writes: &[Vec<u8>], half_close: bool, idle: Duration) -> Outcome {
    let mut conn = Conn::new(addr);
    for (i, bytes) in writes.iter().enumerate() {
        if i > 0 {
            conn.pump(idle, |c| c.outcome.responses.len() >= i);
        }
        if conn.outcome.closed || conn.stream.write_all(bytes).is_err() {
            conn.outcome.unsent = writes.len() - i;
            break;
        }
    }
    if half_close {
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
    conn.pump(idle, |_| false);
    conn.outcome.trailing = conn.buf[conn.parsed..].to_vec();
    conn.outcome
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// How much of `buf` is complete responses.
    parsed: usize,
    /// A `101` switched the connection away from HTTP: nothing after it is a response.
    switched: bool,
    outcome: Outcome,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        // Short reads, so `pump` notices its deadlines.
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Self {
            stream,
            buf: Vec::new(),
            parsed: 0,
            switched: false,
            outcome: Outcome::default(),
        }
    }

    /// Reads until `done`, the peer closes, or nothing arrives for `idle` (and 30 s at most).
    fn pump(&mut self, idle: Duration, done: impl Fn(&Self) -> bool) {
        let cap = Instant::now() + Duration::from_secs(30);
        let mut last = Instant::now();
        let mut chunk = [0; 16 * 1024];
        while !done(self) && !self.outcome.closed && last.elapsed() < idle && Instant::now() < cap {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.outcome.closed = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.outcome.closed = true,
            }
            self.split(false);
        }
        if self.outcome.closed {
            self.split(true);
        }
    }

    /// Moves every complete response in `buf` into the outcome; `eof` ends a body delimited by
    /// the connection's close.
    fn split(&mut self, eof: bool) {
        while !self.switched {
            let Some((response, used)) = parse_response(&self.buf[self.parsed..], eof) else {
                return;
            };
            self.switched = response.status == 101;
            self.parsed += used;
            self.outcome.responses.push(response);
        }
    }
}

/// One complete response at the start of `buf`, and its length; `None` when it is incomplete
/// or not HTTP. A body without `Content-Length` or chunking ends at `eof`.
pub fn parse_response(buf: &[u8], eof: bool) -> Option<(Response, usize)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let rest = &buf[end..];
    let (body, used) = if status == 101 || status == 204 || status == 304 || status < 200 {
        (Vec::new(), 0)
    } else if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().ok()?;
        (rest.get(..len)?.to_vec(), len)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((Response { status, head, body }, end + used))
}

/// A complete chunked body at the start of `buf` (without trailers), and its length.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (buf.get(at..at + 2)? == b"\r\n").then_some((body, at + 2));
        }
        body.extend_from_slice(buf.get(at..at + size)?);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
