//! The gateway under test, run in-process on `127.0.0.1:0` with the same code as the binary.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use mcp_gateway::{
    config::{AuditTarget, Limits, ServerSettings, Upstream},
    mcp::{McpSettings, audit::AuditLog},
    metrics::{self, Metrics, ServerInfo},
    policy::{Mode, PolicySettings},
    proxy::{self, Gateway},
    security_log::RejectionLog,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Knobs the tests turn; everything else is the production default.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub allowed_origins: Vec<String>,
    /// The credentials file's text (one bare token, or `NAME TOKEN` lines).
    pub auth_token: Option<&'static str>,
    pub limits: Limits,
    /// Method and tool allowlists.
    pub mcp: McpSettings,
    /// The upstream, when not the TCP address `start` is given (e.g. a Unix socket).
    pub upstream: Option<Upstream>,
    /// The audit log of MCP calls.
    pub audit: Option<AuditTarget>,
    /// Per-client rate limit.
    pub rate: Option<mcp_gateway::ratelimit::Rate>,
    /// Forward the browser's Origin unchanged.
    pub pass_origin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Permissive,
            allowed_origins: Vec::new(),
            auth_token: None,
            limits: Limits::default(),
            mcp: McpSettings::default(),
            upstream: None,
            audit: None,
            rate: None,
            pass_origin: false,
        }
    }
}

/// A running in-process gateway.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The gateway's `/metrics` listener (in-process counters).
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The server itself (a test may set its lockdown flag as the lock watcher does).
    pub gateway: Arc<Gateway>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl TestGateway {
    pub async fn start(upstream: SocketAddr, opts: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr");
        let audit = opts
            .audit
            .as_ref()
            .map(|target| Arc::new(AuditLog::open(target).expect("opening the audit log")));
        let settings = ServerSettings {
            name: "test".to_owned(),
            listen: addr,
            upstream: opts
                .upstream
                .unwrap_or_else(|| Upstream::tcp(&upstream.to_string(), upstream.port())),
            policy: PolicySettings {
                mode: opts.mode,
                listen: addr,
                allowed_hosts: Vec::new(),
                allowed_origins: opts.allowed_origins,
            },
            credentials: opts
                .auth_token
                .map(|text| mcp_gateway::config::access::CredentialsFile {
                    path: "(test)".into(),
                    set: mcp_gateway::credentials::file::parse(text).expect("credentials"),
                    version: Vec::new(),
                }),
            tls: None,
            plaintext_beyond_loopback: false,
            pass_origin: opts.pass_origin,
            limits: opts.limits,
            exclusive_upstream: false,
            allow_cgroups: Vec::new(),
            mcp: opts.mcp,
            sources: mcp_gateway::source::SourceList::default(),
            rate: opts.rate,
            egress: None,
            supervised: None,
        };
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::in_process(
            metrics::DEFAULT_LABEL_BUDGET,
            &[ServerInfo {
                name: "test".to_owned(),
                listen_port: addr.port(),
                upstream_port: Some(upstream.port()),
            }],
        ));
        let gw = Gateway::new(
            settings,
            0,
            metrics.clone(),
            Arc::new(RejectionLog::default()),
            audit,
            shutdown.clone(),
        )
        .expect("valid settings");
        let metrics_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let metrics_addr = metrics_listener.local_addr().expect("addr");
        tokio::spawn(metrics::server::serve(
            metrics_listener,
            metrics.clone(),
            shutdown.clone(),
        ));
        let gateway = Arc::new(gw);
        let task = tokio::spawn(proxy::serve(listener, gateway.clone()));
        Self {
            addr,
            metrics_addr,
            metrics,
            gateway,
            shutdown,
            task,
        }
    }

    /// The `Host` value a legitimate local client sends.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

/// The real `mcp-gateway run` binary on free loopback ports, with its own metrics listener.
pub struct BinaryGateway {
    pub child: crate::process::ChildGuard,
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
}

impl BinaryGateway {
    /// Starts `mcp-gateway run --upstream http://UPSTREAM/mcp` on free ports plus `args` (which
    /// must include `--ebpf ...`); returns once both listeners are up.
    pub fn start(upstream: SocketAddr, args: &[&str]) -> Self {
        let port = || crate::prometheus::free_port();
        let listen: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("addr");
        let metrics: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("addr");
        Self::start_on(upstream, listen, metrics, args)
    }

    /// As [`BinaryGateway::start`], on the given addresses (a restart keeps them).
    pub fn start_on(
        upstream: SocketAddr,
        listen: SocketAddr,
        metrics: SocketAddr,
        args: &[&str],
    ) -> Self {
        let mut cmd = std::process::Command::new(crate::process::gateway_bin());
        cmd.env("RUST_LOG", "info")
            .arg("run")
            .arg("--upstream")
            .arg(format!("http://{upstream}/mcp"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(args);
        let mut child = crate::process::ChildGuard::spawn_logged(&mut cmd);
        child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
        crate::prometheus::wait_listening(metrics, Duration::from_secs(10));
        Self {
            child,
            listen,
            metrics,
        }
    }

    /// The `Host` value a legitimate local client sends.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.listen.port())
    }
}

/// The real `mcp-gateway run --config FILE` serving the file's `[[server]]` tables, with its own
/// metrics listener; the file lives (and is removed) with it.
pub struct ConfigGateway {
    pub child: crate::process::ChildGuard,
    pub metrics: SocketAddr,
    _dir: crate::e2e::TempDir,
}

impl ConfigGateway {
    /// Writes `config` to a file, starts the gateway on it plus `args` (which must include
    /// `--ebpf ...`), and waits until every server listens.
    pub fn start(config: &str, args: &[&str]) -> Self {
        let dir = crate::e2e::TempDir::new("config");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).expect("writing the config file");
        let metrics: SocketAddr = format!("127.0.0.1:{}", crate::prometheus::free_port())
            .parse()
            .expect("addr");
        let mut cmd = crate::process::gateway_command();
        cmd.env("RUST_LOG", "info")
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(args);
        let mut child = crate::process::ChildGuard::spawn_logged(&mut cmd);
        for _ in 0..config.matches("[[server]]").count().max(1) {
            child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
        }
        crate::prometheus::wait_listening(metrics, Duration::from_secs(10));
        Self {
            child,
            metrics,
            _dir: dir,
        }
    }

    /// The parsed `/metrics` samples.
    pub fn samples(&self) -> Vec<crate::prometheus::Sample> {
        crate::prometheus::parse(&crate::prometheus::scrape(self.metrics))
    }
}

/// Sends `per_connection` requests with `headers` on each of `connections` concurrent
/// keep-alive connections to `addr`; returns how many got each status.
pub async fn hammer(
    addr: SocketAddr,
    connections: usize,
    per_connection: usize,
    headers: Vec<(String, Vec<u8>)>,
) -> std::collections::BTreeMap<u16, usize> {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    let headers = Arc::new(headers);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let headers = headers.clone();
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            let mut statuses = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let mut req = http::Request::new(Full::new(Bytes::new()));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = "/mcp".parse().expect("uri");
                for (name, value) in headers.iter() {
                    req.headers_mut().append(
                        http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                        http::HeaderValue::from_bytes(value).expect("value"),
                    );
                }
                sender.ready().await.expect("connection ready");
                let resp = sender.send_request(req).await.expect("response");
                statuses.push(resp.status().as_u16());
                resp.into_body().collect().await.expect("body");
            }
            statuses
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        for status in done.expect("client task") {
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    counts
}
