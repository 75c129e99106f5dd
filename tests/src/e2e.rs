//! End-to-end pieces: the official MCP SDKs (installed on first use under `tests/e2e`), the SDK
//! upstream server (`tests/e2e/server.py`), the SDK clients, and the real gateway binary.
//!
//! Installs are guarded by a file lock, so concurrent test processes install once, and stamped
//! with the pinned manifest, so a changed pin reinstalls.
use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    process::{ChildGuard, clean_gateway_env, gateway_bin, in_cgroup},
    tools::FileLock,
};

/// `tests/e2e`: the non-Rust assets, and the virtualenv and node_modules the tests install.
pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// The text of a file another process (or thread) appends lines to, once it holds at least
/// `lines` lines (the gateway's audit log is written by its own writer thread, soon after the
/// answer); what it holds after `within` otherwise.
pub fn settled_lines(path: &Path, lines: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A directory of the test's own under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mcp-gateway-e2e-{}-{n}-{label}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` to completion; panics with `hint`, the command and its output on failure.
fn run(cmd: &mut Command, hint: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{hint}: running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{hint}: {cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `stamp` holds exactly `manifest`'s contents (the install is current).
fn installed(stamp: &Path, manifest: &str) -> bool {
    fs::read_to_string(stamp).is_ok_and(|s| s == manifest)
}

/// The virtualenv's python, with `requirements.txt` installed in `tests/e2e/.venv`.
pub fn python() -> PathBuf {
    let dir = assets();
    let venv = dir.join(".venv");
    let python = venv.join("bin").join("python");
    let requirements = fs::read_to_string(dir.join("requirements.txt")).expect("requirements.txt");
    let stamp = venv.join(".installed");
    let _lock = FileLock::acquire(&dir.join(".venv.lock"));
    if installed(&stamp, &requirements) {
        return python;
    }
    let _ = fs::remove_dir_all(&venv);
    let system_python = std::env::var("MCP_GATEWAY_E2E_PYTHON").unwrap_or("python3".into());
    run(
        Command::new(&system_python).args(["-m", "venv"]).arg(&venv),
        "creating the e2e virtualenv (needs Python 3.10+ with venv: `apt-get install -y \
         python3-venv`, or set MCP_GATEWAY_E2E_PYTHON)",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "--requirement",
            ])
            .arg(dir.join("requirements.txt")),
        "installing the pinned MCP Python SDK from PyPI",
    );
    fs::write(&stamp, requirements).expect("writing the venv stamp");
    python
}

/// `tests/e2e`, with `package-lock.json` installed (`npm ci`) into its node_modules.
pub fn node_project() -> PathBuf {
    let dir = assets();
    let lock = fs::read_to_string(dir.join("package-lock.json")).expect("package-lock.json");
    let stamp = dir.join("node_modules").join(".installed");
    let _lock = FileLock::acquire(&dir.join(".node_modules.lock"));
    if installed(&stamp, &lock) {
        return dir;
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        "installing the pinned MCP TypeScript SDK from npm (needs Node.js 18+ and npm: \
         `apt-get install -y nodejs npm`)",
    );
    fs::write(&stamp, lock).expect("writing the node_modules stamp");
    dir
}

/// A free loopback port (bound, then released for the test to use).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP on `/mcp`.
    Streamable,
    /// The legacy HTTP+SSE transport: `GET /sse`, `POST /messages/`.
    Sse,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Self::Streamable => "streamable",
            Self::Sse => "sse",
        }
    }

    /// The endpoint a client connects to.
    pub fn path(self) -> &'static str {
        match self {
            Self::Streamable => "/mcp",
            Self::Sse => "/sse",
        }
    }
}

/// The SDK upstream server (`server.py`), recording every request and tool call it receives.
pub struct Upstream {
    /// 0 for a Unix-socket upstream.
    pub port: u16,
    /// The socket of a Unix-socket upstream.
    pub socket: Option<PathBuf>,
    record: PathBuf,
    // Field order: the server stops before its directory goes.
    _child: ChildGuard,
    _dir: TempDir,
}

impl Upstream {
    /// Starts the server on 127.0.0.1:`port`; `protection` turns the SDK's own DNS-rebinding
    /// protection on (allowed Host: 127.0.0.1:`port` only).
    pub fn start(port: u16, transport: Transport, protection: bool) -> Self {
        let protection = if protection { "on" } else { "off" };
        let port_arg = port.to_string();
        Self::spawn(
            &["--port", &port_arg, "--protection", protection],
            transport,
            |_| port_arg.clone(),
            port,
            None,
        )
    }

    /// Starts the server in the network namespace `netns` (and in `cgroup` when given), bound
    /// to `host`:`port`.
    pub fn start_in(
        netns: &str,
        cgroup: Option<&Path>,
        host: &str,
        port: u16,
        transport: Transport,
        protection: bool,
    ) -> Self {
        let protection = if protection { "on" } else { "off" };
        let port_arg = port.to_string();
        Self::spawn(
            &[
                "--host",
                host,
                "--port",
                &port_arg,
                "--protection",
                protection,
            ],
            transport,
            |_| port_arg.clone(),
            port,
            Some((netns, cgroup)),
        )
    }

    /// Starts the server with its `fetch` tool on 127.0.0.1:`port`, inside `cgroup` (whose
    /// egress a test confines).
    pub fn start_fetching(cgroup: &Path, port: u16) -> Self {
        let port_arg = port.to_string();
        Self::spawn(
            &["--port", &port_arg, "--protection", "off", "--fetch"],
            Transport::Streamable,
            |_| port_arg.clone(),
            port,
            Some(("", Some(cgroup))),
        )
    }

    /// Starts the server on a Unix socket in its own directory (uvicorn `--uds`); the URL to
    /// give the gateway is [`Upstream::url`].
    pub fn start_unix(transport: Transport) -> Self {
        Self::spawn(
            &[],
            transport,
            |dir| dir.join("mcp.sock").display().to_string(),
            0,
            None,
        )
    }

    fn spawn(
        args: &[&str],
        transport: Transport,
        place: impl Fn(&Path) -> String,
        port: u16,
        netns: Option<(&str, Option<&Path>)>,
    ) -> Self {
        let python = python();
        let dir = TempDir::new("upstream");
        let record = dir.path().join("record.jsonl");
        fs::write(&record, "").expect("creating the record");
        let at = place(dir.path());
        let mut cmd = match netns {
            // In a cgroup only, in the host's network namespace.
            Some(("", cgroup)) => in_cgroup(cgroup, &python),
            // nsenter execs the server (the child guard's pid is the server's) and, unlike
            // `ip netns exec`, keeps the host's /sys (the cgroup-v2 mount, bpffs).
            Some((ns, cgroup)) => {
                let mut cmd = in_cgroup(cgroup, Path::new("nsenter"));
                cmd.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(python);
                cmd
            }
            None => Command::new(python),
        };
        cmd.arg(assets().join("server.py"))
            .args(args)
            .args(["--transport", transport.arg()])
            .arg("--record")
            .arg(&record);
        let socket = (port == 0).then(|| PathBuf::from(&at));
        if let Some(socket) = &socket {
            cmd.arg("--uds").arg(socket);
        }
        let mut child = ChildGuard::spawn_logged(&mut cmd);
        let line = child.read_line();
        assert_eq!(line, format!("listening {at}"), "server.py said: {line}");
        Self {
            port,
            socket,
            record,
            _child: child,
            _dir: dir,
        }
    }

    /// The upstream URL of the MCP endpoint for `transport`.
    pub fn url(&self, transport: Transport) -> String {
        match &self.socket {
            Some(socket) => format!("unix:{}:{}", socket.display(), transport.path()),
            None => format!("http://127.0.0.1:{}{}", self.port, transport.path()),
        }
    }

    /// Everything recorded so far, in order.
    pub fn records(&self) -> Vec<Value> {
        fs::read_to_string(&self.record)
            .expect("reading the upstream record")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record line"))
            .collect()
    }

    /// The HTTP requests that reached the server.
    pub fn requests(&self) -> Vec<Value> {
        self.events("request")
    }

    /// The tools the server ran.
    pub fn tool_calls(&self) -> Vec<Value> {
        self.events("tool")
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == kind)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// The Python SDK's handshake-era `ClientSession` (2025-11-25).
    Python,
    /// The Python SDK's `Client`, speaking 2026-07-28 (request metadata headers, no sessions).
    PythonModern,
    TypeScript,
}

/// Runs the SDK client's full sequence against `url` and returns its JSON summary.
pub fn run_client(sdk: Sdk, url: &str, transport: Transport) -> Value {
    run_client_with(sdk, url, transport, &[])
}

/// Like [`run_client`], with more client flags (`--refused TOOL`).
pub fn run_client_with(sdk: Sdk, url: &str, transport: Transport, flags: &[&str]) -> Value {
    let mut cmd = match sdk {
        Sdk::Python | Sdk::PythonModern => {
            let mut cmd = Command::new(python());
            cmd.arg(assets().join("client.py"));
            if sdk == Sdk::PythonModern {
                cmd.args(["--mode", "modern"]);
            }
            cmd
        }
        Sdk::TypeScript => {
            let mut cmd = Command::new("node");
            cmd.arg("client.mjs").current_dir(node_project());
            cmd
        }
    };
    cmd.arg(url)
        .args(["--transport", transport.arg()])
        .args(flags);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{sdk:?} client failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("client summary {stdout}: {e}"))
}

/// `cmd.output()`, killing the command if it runs longer than `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(timeout).is_err() {
        // SAFETY: our own child, not yet reaped (the waiter thread reaps it).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{cmd:?} still running after {timeout:?}: killed");
    }
    waiter
        .join()
        .expect("waiter thread")
        .expect("collecting output")
}

/// One raw HTTP/1.1 POST of an `initialize` with `host`; returns the status code.
pub fn raw_initialize(port: u16, host: &str) -> u16 {
    raw_initialize_from(port, host, None)
}

/// [`raw_initialize`] as a page of `origin` sends it.
pub fn raw_initialize_from(port: u16, host: &str, origin: Option<&str>) -> u16 {
    let origin = origin.map_or_else(String::new, |o| format!("Origin: {o}\r\n"));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         {origin}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut head = [0; 12];
    stream.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code")
}

/// The real `mcp-gateway run`, logging JSON lines to a file the test reads.
pub struct Gateway {
    pub listen: SocketAddr,
    /// The `/metrics` listener (`--metrics-listen` on a free port).
    pub metrics: SocketAddr,
    log: PathBuf,
    _child: ChildGuard,
    _dir: TempDir,
}

impl Gateway {
    /// `mcp-gateway run --ebpf off` on 127.0.0.1:`port` in front of `upstream_port`.
    pub fn start(port: u16, upstream_port: u16) -> Self {
        Self::start_with(port, upstream_port, &["--ebpf", "off"], None)
    }

    /// Like [`Gateway::start`] with `flags` instead of `--ebpf off`, started inside `cgroup`
    /// when given. Waits until it listens.
    pub fn start_with(
        port: u16,
        upstream_port: u16,
        flags: &[&str],
        cgroup: Option<&Path>,
    ) -> Self {
        let upstream = format!("http://127.0.0.1:{upstream_port}/mcp");
        Self::start_url(port, &upstream, flags, cgroup)
    }

    /// Like [`Gateway::start_with`], in front of the upstream URL `upstream`.
    pub fn start_url(port: u16, upstream: &str, flags: &[&str], cgroup: Option<&Path>) -> Self {
        let dir = TempDir::new("gateway");
        let log = dir.path().join("gateway.log");
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = in_cgroup(cgroup, &gateway_bin());
        cmd.args(["run", "--upstream"])
            .arg(upstream)
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--log-format", "json"])
            .args(flags)
            .stderr(File::create(&log).expect("creating the gateway log"));
        // Never the default metrics port: gateways of concurrent tests would collide there.
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        cmd.arg("--metrics-listen").arg(metrics.to_string());
        // Only the flags above configure it.
        clean_gateway_env(&mut cmd).env("RUST_LOG", "info");
        let child = ChildGuard::spawn(&mut cmd);
        let gateway = Self {
            listen,
            metrics,
            log,
            _child: child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gateway
            .logs()
            .iter()
            .any(|l| message(l).starts_with("mcp-gateway listening"))
        {
            assert!(
                Instant::now() < deadline,
                "the gateway did not start listening:\n{}",
                gateway.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `mcp_gateway_rejections_total{server, reason, origin}` from `/metrics`, summed over
    /// servers (0 when absent).
    pub fn rejections_total(&self, reason: &str, origin: &str) -> u64 {
        let addr = self.metrics;
        let mut stream = TcpStream::connect(addr).expect("connecting to /metrics");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("requesting /metrics");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("reading /metrics");
        // Summed over the `server` label (one server here, named by the gateway).
        let labels = format!(",reason=\"{reason}\",origin=\"{origin}\"}} ");
        text.lines()
            .filter(|l| l.starts_with("mcp_gateway_rejections_total{server="))
            .filter_map(|l| l.split_once(&labels))
            .map(|(_, n)| n.trim().parse::<u64>().expect("a counter value"))
            .sum()
    }

    /// The `rejected request` and `refused MCP message` lines, as `(reason, value)` (value
    /// without Debug quotes).
    pub fn rejections(&self) -> Vec<(String, String)> {
        self.logs()
            .iter()
            .filter(|l| {
                let m = message(l);
                m.starts_with("rejected request") || m.starts_with("refused MCP message")
            })
            .map(|l| {
                let field = |name: &str| field(l, name).trim_matches('"').to_owned();
                (field("reason"), field("value"))
            })
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("gateway log:\n{}", self.log_text());
        }
    }
}

/// A field of a JSON log line (flattened at the top level, or under `fields`).
fn field<'a>(line: &'a Value, name: &str) -> &'a str {
    line[name]
        .as_str()
        .or_else(|| line["fields"][name].as_str())
        .unwrap_or_default()
}

fn message(line: &Value) -> &str {
    field(line, "message")
}
