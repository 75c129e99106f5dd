//! Prometheus in the tests: scraping `/metrics`, parsing the text format, `promtool check
//! metrics`, and a real Prometheus server on loopback.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{process::ChildGuard, tools};

/// A free port on 127.0.0.1 (bound, then released: good enough for a test's own listeners).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listening on {addr} after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.0 GET; returns (status, content type, body).
pub fn http_get(
    addr: SocketAddr,
    path_and_query: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// GET /metrics in the text format; panics unless 200.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, content_type, body) = http_get(addr, "/metrics", None);
    assert_eq!(status, 200, "GET /metrics: {body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    body
}

/// One parsed sample line: name, labels (still escaped, as written), value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a text exposition, unescaping label values. Panics on a line that
/// is not a well-formed sample or comment: an injected line makes the test fail here too.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("not a sample line: {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let inner2 = inner.strip_prefix(',').unwrap_or(inner);
                let (label, after) = inner2
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad labels: {line:?}"));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("bad escape: {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line:?}"),
                    }
                };
                labels.insert(label.to_owned(), value);
                inner = &after[end + 1..];
            }
        }
        let value = rest
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// The value of `mcp_gateway_rejections_total{reason,origin}`, 0 when absent.
pub fn rejections(samples: &[Sample], reason: &str, origin: &str) -> u64 {
    samples
        .iter()
        .filter(|s| {
            s.name == "mcp_gateway_rejections_total"
                && s.labels.get("reason").map(String::as_str) == Some(reason)
                && s.labels.get("origin").map(String::as_str) == Some(origin)
        })
        .map(|s| s.value as u64)
        .sum()
}

/// The sum of the samples named `name` whose labels include every `(label, value)` of `labels`
/// (0 when none).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// `promtool check metrics` on `text`: Ok, or its complaints.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new(tools::promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}): {said}", out.status))
    }
}

/// A Prometheus server on 127.0.0.1 scraping `targets` every second, with its storage in a temp
/// directory. Killed and cleaned up on drop.
pub struct PrometheusServer {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl PrometheusServer {
    pub fn start(targets: &[SocketAddr]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let binary = tools::prometheus();
        let dir = std::env::temp_dir().join(format!(
            "mcp-gateway-test-prometheus-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data")).expect("creating the prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: mcp-gateway\n    scrape_interval: 1s\n    \
             scrape_timeout: 1s\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stderr(Stdio::null());
        let child = ChildGuard::spawn(&mut cmd);
        let server = Self {
            addr,
            dir,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready", None).0 == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus did not become ready on {addr}"
            );
            thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// An instant query through the HTTP API; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, _, body) = http_get(self.addr, &path, None);
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // Kill and reap the server first, then remove its storage.
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
