//! The userspace gateway: a reverse proxy that lets a request reach the MCP server only after
//! the Host/Origin policy and the MCP checks accepted it.
//!
//! A request passes these layers, top to bottom; the first that answers ends it. Each step is
//! one file; `Gateway::route` is the whole path in one function, and every refusal is a
//! [`refusal::Refusal`] answered, counted, logged and audited in one place (`Gateway::refuse`).
//!
//! | step | what | file |
//! |---|---|---|
//! | 1 | connection: accept, max connections (at the cap the longest waiter on its client is closed for a newcomer), TLS handshake (client certificate), header timeout, head size and count caps | `accept.rs`, `slots.rs`, `probation.rs`, `head_watch.rs` |
//! | 2 | lockdown: while the server's ports are locked, 503 | `mod.rs` (`admit`) |
//! | 3 | source allowlist of a non-loopback listener: 403 | `mod.rs` (`admit`), `crate::source` |
//! | 4 | CORS preflight: answered by the gateway itself, never forwarded | `crate::policy::cors` |
//! | 5 | Host/Origin policy: 403 with a JSON-RPC body | `crate::policy` |
//! | 6 | framing request smuggling needs: Content-Length with Transfer-Encoding (400), CONNECT (405) | `framing.rs` |
//! | 7 | bearer-token auth (optional): 401; the client is then known by its credential's name | `mod.rs` (`admit`), `crate::credentials` |
//! | 8 | rate limit per client (optional): 429 with Retry-After | `mod.rs` (`admit`), `crate::ratelimit` |
//! | 9 | declared body size: 413 before any upstream connection | `mod.rs` (`admit`) |
//! | 10 | MCP messages: read whole and checked (415, 400, 403) before anything is sent | `mcp.rs`, `crate::mcp` |
//! | 11 | forwarding: streamed both ways, hop-by-hop headers stripped, upstream Host and Origin set | `forward.rs`, `rewrite.rs`, `pool.rs`, `connect.rs` |
//! | 12 | the answer: `tools/list` filtered, legacy paths learned, the allowed origin's CORS headers, audited | `mcp.rs`, `body.rs`, `record.rs` |
//!
//! A refusal: `refusal.rs` (its answer's bytes: `reply.rs`). An early refusal drains what is
//! left of the body, within bounds, so the kept-alive connection takes the next request.
pub mod accept;
pub mod body;
pub mod connect;
pub mod forward;
pub mod framing;
pub mod head_watch;
pub mod mcp;
pub mod pool;
pub mod probation;
pub mod record;
pub mod refusal;
pub mod reply;
pub mod rewrite;
pub mod slots;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{Request, Response, header, request::Parts};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

pub use self::accept::{listen, serve};
use self::{
    body::Body,
    record::Call,
    refusal::{Refusal, Refused},
};
use crate::{
    config::{ConfigError, Limits, ServerSettings, Upstream},
    credentials::{self, CredentialStore},
    mcp::{McpPolicy, audit::AuditLog, scope::Paths},
    metrics::{Metrics, ServerStats},
    policy::{Accepted, Policy, cors},
    ratelimit::{Decision, Limiter},
    security_log::RejectionLog,
    source::SourceList,
    tls::TlsStore,
};

/// Who sent a request.
#[derive(Clone, Debug)]
pub struct Client {
    pub peer: SocketAddr,
    /// The peer as the forwarding headers write it.
    pub forwarded: rewrite::ForwardedFor,
    /// The client's credential: its certificate's from the TLS handshake, else its bearer
    /// token's once the auth layer accepted it.
    pub credential: Option<Identity>,
    /// The connection's slot: whether it may be evicted to make room for a new one.
    pub slot: Arc<slots::Slot>,
    /// What the connection's framing tracker saw of its request heads.
    pub marks: Arc<head_watch::Marks>,
}

/// A client's credential.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The name: in logs, the audit log, and the rate-limit key.
    pub name: Arc<str>,
    /// Its bounded `credential` metric label (`other` past the per-server cap).
    pub label: Arc<str>,
}

impl Client {
    /// A client not yet identified, on a connection with this slot and framing tracker.
    pub fn new(peer: SocketAddr, slot: Arc<slots::Slot>, marks: Arc<head_watch::Marks>) -> Self {
        Self {
            peer,
            forwarded: rewrite::ForwardedFor::new(peer),
            credential: None,
            slot,
            marks,
        }
    }

    pub fn name(&self) -> Option<&Arc<str>> {
        self.credential.as_ref().map(|c| &c.name)
    }

    pub fn label(&self) -> Option<&str> {
        self.credential.as_ref().map(|c| &*c.label)
    }
}

impl Gateway {
    /// The identity of the credential `name`.
    fn identity(&self, name: &str) -> Identity {
        Identity {
            name: name.into(),
            label: self.stats.credential_label(name),
        }
    }
}

/// One MCP server behind the gateway: its policy and upstream, shared by all its connections.
pub struct Gateway {
    /// The server's name, in logs and the `server` metric label.
    pub name: String,
    /// The bound listen port (HTTP rejections are counted under it).
    pub listen_port: u16,
    pub policy: Policy,
    pub mcp: McpPolicy,
    pub upstream: Upstream,
    /// The upstream's `Host` value, parsed once.
    pub(super) upstream_host: http::HeaderValue,
    /// The upstream's own origin, sent in place of an allowed browser's (`None`: `pass_origin`).
    pub(super) upstream_origin: Option<http::HeaderValue>,
    /// The bearer tokens every request must present, when configured.
    pub credentials: Option<Arc<CredentialStore>>,
    /// HTTPS, when configured (with client certificates when it has a client CA).
    pub tls: Option<Arc<TlsStore>>,
    pub limits: Limits,
    /// The open client connections, at most `limits.max_connections`.
    pub slots: Arc<slots::Slots>,
    pub pool: Arc<pool::Pool>,
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
    /// For a server the gateway starts: set while its upstream accepts connections.
    pub ready: Option<Arc<AtomicBool>>,
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
        let bad_upstream = |why: String| ConfigError::Upstream {
            value: settings.upstream.to_string(),
            why,
        };
        let upstream_host = http::HeaderValue::from_str(settings.upstream.host())
            .map_err(|e| bad_upstream(format!("{e}")))?;
        let upstream_origin = match settings.pass_origin {
            true => None,
            false => Some(
                http::HeaderValue::from_str(&format!("http://{}", settings.upstream.host()))
                    .map_err(|e| bad_upstream(format!("{e}")))?,
            ),
        };
        let stats = metrics.server(index);
        if let Some(tls) = &settings.tls {
            stats.certificate_in_force(tls.loaded.cert.not_after);
        }
        let mcp = McpPolicy::new(&settings.mcp).map_err(|e| ConfigError::Invalid {
            key: e.key,
            why: e.why,
        })?;
        Ok(Self {
            pool: forward::pool(&settings.upstream, settings.limits.connect_timeout),
            name: settings.name,
            listen_port: settings.listen.port(),
            policy,
            mcp,
            upstream: settings.upstream,
            upstream_host,
            upstream_origin,
            credentials: settings
                .credentials
                .map(|c| Arc::new(CredentialStore::new(c.path, c.set, c.version))),
            tls: settings
                .tls
                .map(|t| Arc::new(TlsStore::new(t.files, &t.loaded, t.version))),
            slots: slots::Slots::new(settings.limits.max_connections),
            limits: settings.limits,
            shutdown,
            rejections,
            stats,
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
            ready: None,
        })
    }

    /// Every request, counted by credential, method and final status.
    pub async fn handle(&self, mut client: Client, req: Request<Incoming>) -> Response<Body> {
        // A request head arrived: the connection is the newest waiter until it is forwarded.
        client.slot.waiting();
        let method = req.method().clone();
        let resp = self.route(&mut client, req).await;
        self.stats.request(
            client.credential.as_ref().map(|c| &c.label),
            &method,
            resp.status(),
        );
        resp
    }

    /// The request path, as listed in the module docs: every layer answers through here, a
    /// refusal through [`Gateway::refuse`].
    async fn route(&self, client: &mut Client, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let mut ctx = Ctx {
            call: Call::start(self, client, &parts),
            parts,
            accepted: None,
        };
        let mut resp = match self.layers(client, &mut ctx, body).await {
            Ok(resp) => resp,
            Err(refused) => self.refuse(client, &mut ctx, refused).await,
        };
        // The allowed origin may read every answer, the gateway's own errors included.
        if let Some(accepted) = &ctx.accepted {
            refusal::allow_origin(&mut resp, accepted);
        }
        ctx.call.finish(resp)
    }

    /// The layers, top to bottom; the first that answers ends the request.
    async fn layers(
        &self,
        client: &mut Client,
        ctx: &mut Ctx,
        body: Incoming,
    ) -> Result<Response<Body>, Refused> {
        // Everything decided from the head alone comes first: the body is not read for it.
        match self.admit(client, ctx) {
            Ok(Some(preflight)) => return Ok(preflight),
            Ok(None) => {}
            Err(refusal) => {
                let unread = Some(body);
                return Err(Refused { refusal, unread });
            }
        }
        // MCP messages are read and checked before anything is forwarded.
        let (body, inspection) = self.inspect(ctx, body).await?;
        tracing::debug!(server = %self.name, peer = %client.peer, credential = ?client.name(), method = %ctx.parts.method, path = ?ctx.parts.uri.path(), "accepted");
        // A server the gateway starts gets requests once it accepts connections.
        if self
            .ready
            .as_ref()
            .is_some_and(|r| !r.load(Ordering::Relaxed))
        {
            return Err(Refusal::Starting.into());
        }
        let sent = std::time::Instant::now();
        let reads = inspection.reads_response();
        let resp = forward::forward(self, client, &mut ctx.parts, body, reads).await?;
        self.stats.upstream_duration(sent.elapsed());
        // What must be read of the answer is: tools/list filtered, legacy message paths learned.
        Ok(self.inspect_response(resp, &inspection).await)
    }

    /// The layers decided from the request head: `Some` answer for an allowed CORS preflight.
    fn admit(&self, client: &mut Client, ctx: &mut Ctx) -> Result<Option<Response<Body>>, Refusal> {
        let parts = &ctx.parts;
        // Under lockdown the kernel cut the ports; anything that still arrives is not served.
        if self.locked.load(Ordering::Relaxed) {
            return Err(Refusal::Lockdown);
        }
        // A non-loopback listener's source allowlist (the kernel drops the rest first).
        if !self.sources.allows(client.peer.ip()) {
            return Err(Refusal::Source);
        }
        // CORS preflights are the gateway's to answer: the upstream never sees one.
        if cors::is_preflight(parts) {
            let headers = cors::preflight(&self.policy, parts).map_err(Refusal::Policy)?;
            return Ok(Some(reply::preflight(headers)));
        }
        // Host/Origin first: a DNS-rebound or cross-site page is refused before anything else.
        let accepted = self.policy.verify(parts).map_err(Refusal::Policy)?;
        // Framing hyper accepts but smuggling needs (a hidden Content-Length, CONNECT).
        framing::verify(parts, client.marks.both_lengths()).map_err(Refusal::Framing)?;
        let accepted = ctx.accepted.insert(accepted);
        // Bearer tokens, when configured (with client certificates too, both are required).
        if let Some(store) = &self.credentials {
            let set = store.current();
            let Some(credential) = credentials::verify(&parts.headers, &set) else {
                return Err(Refusal::Auth);
            };
            // A certificate's name wins: it is what the handshake proved.
            if client.credential.is_none() {
                client.credential = Some(self.identity(&credential.name));
            }
        }
        ctx.call.credential(client.name());
        // Each client's rate, keyed by its credential, else its address and Origin.
        if let Some(limiter) = &self.limiter {
            let key = match client.name() {
                Some(name) => format!("credential {name}"),
                None => format!(
                    "{} {}",
                    client.peer.ip(),
                    accepted.origin.as_deref().unwrap_or("")
                ),
            };
            if let Decision::Deny { retry_after } = limiter.check(&key, std::time::Instant::now()) {
                return Err(Refusal::RateLimit { retry_after });
            }
        }
        // A declared body over the cap is refused before a byte of it is read.
        if declared_length(parts).is_some_and(|len| len > self.limits.max_body_bytes) {
            return Err(self.too_large());
        }
        Ok(None)
    }

    /// A request body over the cap.
    pub(super) fn too_large(&self) -> Refusal {
        Refusal::TooLarge {
            max: self.limits.max_body_bytes,
        }
    }
}

/// One request's context through every layer: its head, the Host/Origin decision once made,
/// and its audit record.
#[derive(Debug)]
pub(super) struct Ctx {
    pub parts: Parts,
    pub accepted: Option<Accepted>,
    pub call: Call,
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
