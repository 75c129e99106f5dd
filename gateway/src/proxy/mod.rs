//! The userspace gateway: a reverse proxy that lets a request reach the MCP server only after
//! the Host/Origin policy and the MCP checks accepted it.
//!
//! A request passes these layers, top to bottom; the first that answers ends it:
//! 1. connection limits (`serve`): max connections, header read timeout, header size/count caps;
//! 2. lockdown: while the server's ports are locked, 503 to anything that still arrives;
//! 3. source allowlist (non-loopback listeners): 403 for a client address not on it;
//! 4. CORS preflight: answered by the gateway itself, never forwarded;
//! 5. Host/Origin policy: a rejection is a 403 with a JSON-RPC body, logged, never forwarded;
//! 6. bearer-token auth (optional): 401;
//! 7. rate limit per client (optional): 429 with Retry-After;
//! 8. declared body size: 413 before any upstream connection;
//! 9. MCP messages (`mcp`): read whole and checked (415, 400, 403) before anything is sent;
//! 10. forwarding: streamed both ways, hop-by-hop headers stripped, upstream Host set;
//! 11. the answer: `tools/list` filtered, the allowed origin's CORS headers added, audited.
pub mod audit;
pub mod auth;
pub mod body;
pub mod connect;
pub mod forward;
pub mod headers;
pub mod mcp;
pub mod reply;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{Request, Response, StatusCode, header, request::Parts};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use self::{audit::Call, body::Body, forward::UpstreamClient};
use crate::{
    config::{ConfigError, Limits, ServerSettings, Token, Upstream},
    mcp::{McpPolicy, audit::AuditLog, scope::Paths},
    metrics::{self, Metrics, ServerStats},
    policy::{Accepted, Policy, Rejection, cors, sanitize},
    ratelimit::{Decision, Limiter},
    security_log::RejectionLog,
    source::SourceList,
};

/// The name of the one bearer token `--auth-token-file` holds, in audit records.
pub const DEFAULT_CREDENTIAL: &str = "default";

/// One MCP server behind the gateway: its policy and upstream, shared by all its connections.
pub struct Gateway {
    /// The server's name, in logs and the `server` metric label.
    pub name: String,
    /// The bound listen port (HTTP rejections are counted under it).
    pub listen_port: u16,
    pub policy: Policy,
    pub mcp: McpPolicy,
    pub upstream: Upstream,
    pub auth_token: Option<Token>,
    pub limits: Limits,
    pub client: UpstreamClient,
    /// Fires on SIGINT/SIGTERM: SSE streams end, the accept loop stops.
    pub shutdown: CancellationToken,
    /// The process-wide rejection log limiter.
    pub rejections: Arc<RejectionLog>,
    /// Counters for `/metrics` (rejections also go to the pinned map when the kernel layer runs).
    pub metrics: Arc<Metrics>,
    /// This server's per-request series.
    pub stats: Arc<ServerStats>,
    /// Who this process runs as (said when the upstream socket refuses it).
    pub user: String,
    /// The paths whose POSTs are MCP messages: the endpoint, and learned legacy message paths.
    pub paths: Arc<Paths>,
    /// The audit log of MCP calls, when configured (shared by every server).
    pub audit: Option<Arc<AuditLog>>,
    /// Open legacy HTTP+SSE sessions, where refusals of their messages are delivered.
    pub legacy: Arc<mcp::LegacyStreams>,
    /// Who may reach this server (a non-loopback listener's `--allow-source`).
    pub sources: SourceList,
    /// The per-client rate limit, when configured.
    pub limiter: Option<Limiter>,
    /// Set while the server's ports are under lockdown (by the lock watcher).
    pub locked: Arc<AtomicBool>,
}

impl Gateway {
    /// Server `index` of `metrics`, from its settings. `settings.listen` must be the bound
    /// address (its port is the one allowed in `Host`).
    pub fn new(
        settings: ServerSettings,
        index: usize,
        metrics: Arc<Metrics>,
        rejections: Arc<RejectionLog>,
        audit: Option<Arc<AuditLog>>,
        shutdown: CancellationToken,
    ) -> Result<Self, ConfigError> {
        let policy = Policy::new(&settings.policy)?;
        let paths = Arc::new(Paths::new(&settings.upstream.path));
        let mcp = McpPolicy::new(&settings.mcp).map_err(|e| ConfigError::Invalid {
            key: e.key,
            why: e.why,
        })?;
        Ok(Self {
            client: forward::client(&settings.upstream, settings.limits.connect_timeout),
            name: settings.name,
            listen_port: settings.listen.port(),
            policy,
            mcp,
            upstream: settings.upstream,
            auth_token: settings.auth_token,
            limits: settings.limits,
            shutdown,
            rejections,
            stats: metrics.server(index),
            metrics,
            user: connect::process_user(),
            paths,
            audit,
            legacy: Arc::default(),
            sources: settings.sources,
            limiter: settings
                .rate
                .map(|rate| Limiter::new(rate, crate::ratelimit::DEFAULT_CAP)),
            locked: Arc::default(),
        })
    }

    /// Every request, counted by method and final status.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let resp = self.route(peer, req).await;
        self.stats.request(&method, resp.status());
        resp
    }

    /// The request path, as listed in the module docs.
    async fn route(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let mut call = Call::start(self, peer, &parts);
        // Under lockdown the kernel cut the ports; anything that still arrives is not served.
        if self.locked.load(Ordering::Relaxed) {
            call.refused("lockdown");
            let ip = peer.ip().to_canonical().to_string();
            self.metrics
                .reject(gateway_common::Reason::Lockdown, self.listen_port, &ip);
            return call.finish(reply::locked());
        }
        // A non-loopback listener's source allowlist (the kernel drops the rest first).
        if !self.sources.allows(peer.ip()) {
            call.refused("source");
            return call.finish(self.refuse_source(peer, &parts));
        }
        // CORS preflights are the gateway's to answer: the upstream never sees one.
        if cors::is_preflight(&parts) {
            return match cors::preflight(&self.policy, &parts) {
                Ok(headers) => reply::preflight(headers),
                Err(rejection) => self.reject(peer, &parts, &rejection),
            };
        }
        // Host/Origin first: a DNS-rebound or cross-site page is refused before anything else.
        let accepted = match self.policy.verify(&parts) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                call.refused(rejection.reason.as_str());
                return call.finish(self.reject(peer, &parts, &rejection));
            }
        };
        let mut resp = self.admitted(peer, parts, body, &accepted, &mut call).await;
        // The allowed origin may read every answer, the gateway's own errors included. Appended,
        // so an upstream `Vary` survives (upstream CORS headers were already dropped).
        for (name, value) in &cors::response_headers(&accepted) {
            resp.headers_mut().append(name, value.clone());
        }
        call.finish(resp)
    }

    /// The layers after Host/Origin.
    async fn admitted(
        &self,
        peer: SocketAddr,
        parts: Parts,
        body: Incoming,
        accepted: &Accepted,
        call: &mut Call,
    ) -> Response<Body> {
        // The bearer token, when one is configured.
        if let Some(token) = &self.auth_token {
            if !auth::authorized(&parts.headers, token) {
                let label = label(accepted, &parts);
                self.metrics
                    .reject(gateway_common::Reason::Auth, self.listen_port, &label);
                if self
                    .rejections
                    .admit(&format!("{} auth {label}", self.name))
                {
                    tracing::warn!(
                        server = %self.name, reason = "auth", value = ?label, peer = %peer, method = %parts.method,
                        path = ?parts.uri.path(), "rejected request: missing or wrong bearer token"
                    );
                }
                call.refused("auth");
                return reply::unauthorized();
            }
            call.credential(DEFAULT_CREDENTIAL);
        }
        // Each client's rate, keyed by its credential, else its address and Origin.
        if let Some(limiter) = &self.limiter {
            let key = match &self.auth_token {
                Some(_) => DEFAULT_CREDENTIAL.to_owned(),
                None => format!("{} {}", peer.ip(), accepted.origin.as_deref().unwrap_or("")),
            };
            if let Decision::Deny { retry_after } = limiter.check(&key, std::time::Instant::now()) {
                call.refused("rate_limit");
                return self.refuse_rate(peer, &parts, accepted, retry_after);
            }
        }
        // A declared body over the cap is refused before a byte of it is read.
        if declared_length(&parts).is_some_and(|len| len > self.limits.max_body_bytes) {
            call.refused("too_large");
            return self.too_large();
        }
        // MCP messages are read and checked before anything is forwarded.
        let (body, inspection) = match self.inspect(peer, &parts, body, accepted, call).await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        tracing::debug!(server = %self.name, peer = %peer, method = %parts.method, path = ?parts.uri.path(), rule = %accepted.rule(), "accepted");
        let sent = std::time::Instant::now();
        let resp = forward::forward(self, peer, parts, body, inspection.reads_response()).await;
        self.stats.upstream_duration(sent.elapsed());
        // What must be read of the answer is: tools/list filtered, legacy message paths learned.
        self.inspect_response(resp, &inspection).await
    }

    /// A 403 for a client address off the source allowlist: counted by address, logged.
    fn refuse_source(&self, peer: SocketAddr, parts: &Parts) -> Response<Body> {
        let ip = peer.ip().to_canonical().to_string();
        self.metrics
            .reject(gateway_common::Reason::Source, self.listen_port, &ip);
        if self.rejections.admit(&format!("{} source {ip}", self.name)) {
            tracing::warn!(
                server = %self.name, reason = "source", peer = %peer, method = %parts.method,
                path = ?parts.uri.path(), "rejected request: the client's address is not on the source allowlist"
            );
        }
        reply::json_rpc_error(StatusCode::FORBIDDEN, "Forbidden: source not allowed")
    }

    /// A 429 for a client over its rate: counted and logged (rate-limited).
    fn refuse_rate(
        &self,
        peer: SocketAddr,
        parts: &Parts,
        accepted: &Accepted,
        retry_after: std::time::Duration,
    ) -> Response<Body> {
        let label = label(accepted, parts);
        self.metrics
            .reject(gateway_common::Reason::RateLimit, self.listen_port, &label);
        if self
            .rejections
            .admit(&format!("{} rate_limit {label}", self.name))
        {
            tracing::warn!(
                server = %self.name, reason = "rate_limit", value = ?label, peer = %peer,
                retry_after = ?retry_after, "rejected request: the client is over its rate limit"
            );
        }
        reply::too_many(retry_after)
    }

    /// A 403 for a policy rejection: logged (rate-limited), never forwarded.
    fn reject(&self, peer: SocketAddr, parts: &Parts, rejection: &Rejection) -> Response<Body> {
        self.metrics.reject(
            metrics::counted_reason(rejection.reason),
            self.listen_port,
            &rejection.value,
        );
        let reason = rejection.reason.as_str();
        if self
            .rejections
            .admit(&format!("{} {reason} {}", self.name, rejection.value))
        {
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            tracing::warn!(
                server = %self.name,
                reason,
                value = ?rejection.value,
                origin = ?header(header::ORIGIN),
                host = ?header(header::HOST),
                peer = %peer,
                method = %parts.method,
                path = ?parts.uri.path(),
                rule = %rejection.rule,
                "rejected request"
            );
        }
        reply::json_rpc_error(StatusCode::FORBIDDEN, &rejection.message())
    }
}

/// How a refusal is counted and logged: by the allowed Origin, or the Host for non-browser
/// clients (sanitised). Built only when something is refused.
fn label(accepted: &Accepted, parts: &Parts) -> String {
    accepted.origin.as_deref().map_or_else(
        || {
            sanitize(
                parts
                    .headers
                    .get(header::HOST)
                    .map_or(&b""[..], |h| h.as_bytes()),
            )
        },
        |origin| sanitize(origin.as_bytes()),
    )
}

/// `Content-Length`, when the client declared one.
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Accepts connections until `gw.shutdown` fires, then drains them for up to the grace period.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) -> anyhow::Result<()> {
    let limits = gw.limits.clone();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();

    loop {
        // Wait for a free slot before accepting: over the cap, clients queue in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit?,
            () = gw.shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = gw.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let open = gw.stats.connection();
        let gw_name = gw.name.clone();
        let gw = gw.clone();
        let service = service_fn(move |req| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(gw.handle(peer, req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(server = %gw_name, peer = %peer, error = %err, "connection ended with an error");
            }
            drop((permit, open));
        });
    }

    tracing::info!(
        server = %gw.name,
        grace = ?limits.shutdown_grace,
        "shutting down: no new connections; letting in-flight requests finish"
    );
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached; closing the remaining connections");
    }
    Ok(())
}
