//! Every way the gateway refuses a request, as a value, and the one place that answers one:
//! status, body and headers, the `mcp_gateway_rejections_total` count, the log line and the
//! audit record (linkerd2-proxy's `errors/respond.rs`).
//!
//! A refusal sent before the client's body arrived must not leave a kept-alive connection
//! silently dead: hyper closes a connection whose request body was left unread, without saying
//! so, and the client's next request dies on the closed socket. So the unread body is drained,
//! bounded in bytes and time as nginx does; past those bounds the answer says
//! `Connection: close`.
use std::time::Duration;

use bytes::Bytes;
use gateway_common::Reason;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};

use super::{Client, Ctx, Gateway, body::Body, framing, reply};
use crate::{
    metrics,
    policy::{Rejection, cors, sanitize},
};

/// Most bytes of a refused request's unread body read (and dropped) to keep its connection.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// Longest wait for the rest of a refused request's body.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Why the gateway refused a request.
#[derive(Debug)]
pub enum Refusal {
    /// The server's ports are under lockdown (503).
    Lockdown,
    /// The client's address is not on the server's source allowlist (403).
    Source,
    /// The Host/Origin policy refused it, CORS preflights included (403).
    Policy(Rejection),
    /// Framing request smuggling needs (400, 405).
    Framing(framing::Refusal),
    /// No valid bearer token (401).
    Auth,
    /// The client is over its rate (429).
    RateLimit { retry_after: Duration },
    /// The body is over `max_body_bytes`, declared or read (413).
    TooLarge { max: u64 },
    /// The client's body broke: a bad chunk, or it was cut short (400).
    BrokenBody(String),
    /// Not a valid MCP message (415, 400), answered with JSON-RPC `code` and the request's id.
    Invalid {
        status: StatusCode,
        code: i64,
        why: String,
        id: Option<String>,
    },
    /// The server the gateway starts is not accepting connections yet, or is being started
    /// again (503, `Retry-After`). Not the client's doing: not counted as a rejection.
    Starting,
    /// A method or tool the allowlists refuse (403): `answer` is the JSON-RPC error (or batch
    /// of errors) for the request's messages.
    Message {
        reason: Reason,
        value: String,
        rule: String,
        answer: String,
    },
}

/// How a refusal is counted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    /// By the client's address.
    Peer,
    /// By the allowed Origin, else the Host.
    Caller,
    /// By the refused value itself (the Host or Origin the policy refused).
    Value,
}

impl Refusal {
    /// A POSTed message that is not valid MCP (400), answered with JSON-RPC `code` and the
    /// request's `id`.
    pub fn bad_message(code: i64, why: String, id: Option<String>) -> Self {
        Self::Invalid {
            status: StatusCode::BAD_REQUEST,
            code,
            why,
            id,
        }
    }

    /// The counted reason; `None` for a body over the cap (counted only by its 413).
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Self::Lockdown => Reason::Lockdown,
            Self::Source => Reason::Source,
            Self::Policy(rejection) => metrics::counted_reason(rejection.reason),
            Self::Framing(_) | Self::BrokenBody(_) | Self::Invalid { .. } => Reason::Invalid,
            Self::Auth => Reason::Auth,
            Self::RateLimit { .. } => Reason::RateLimit,
            Self::TooLarge { .. } | Self::Starting => return None,
            Self::Message { reason, .. } => *reason,
        })
    }

    /// The audit record's `decision`.
    pub fn decision(&self) -> &'static str {
        match (self, self.reason()) {
            (_, Some(reason)) => reason.name(),
            (Self::Starting, None) => "starting",
            (_, None) => "too_large",
        }
    }

    fn subject(&self) -> Subject {
        match self {
            Self::Lockdown | Self::Source | Self::Framing(_) | Self::BrokenBody(_) => Subject::Peer,
            Self::Policy(_) => Subject::Value,
            _ => Subject::Caller,
        }
    }

    /// The log line's words after `rejected request: `, and its detail (a rule, the client's
    /// error).
    fn said(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Lockdown => ("the server is under lockdown", None),
            Self::Source => ("the client's address is not on the source allowlist", None),
            Self::Policy(rejection) => ("Host/Origin policy", Some(&rejection.rule)),
            Self::Framing(framing::Refusal::BothLengths) => (
                "Content-Length and Transfer-Encoding together (request smuggling?; the client's error)",
                None,
            ),
            Self::Framing(framing::Refusal::Connect) => {
                ("a CONNECT request (the client's error)", None)
            }
            Self::Auth => ("missing or wrong bearer token", None),
            Self::RateLimit { .. } => ("the client is over its rate limit", None),
            Self::TooLarge { .. } => ("the request body is over max_body_bytes", None),
            Self::Starting => ("the MCP server is starting", None),
            Self::BrokenBody(why) => (
                "the request body is malformed or was cut short (the client's error, not the MCP server's)",
                Some(why),
            ),
            Self::Invalid { why, .. } => {
                ("not a valid MCP message (the client's error)", Some(why))
            }
            Self::Message { rule, .. } => ("refused MCP message", Some(rule)),
        }
    }

    /// The answer: status, a JSON-RPC error body that never reveals configuration, and the
    /// headers the status calls for.
    pub fn response(&self) -> Response<Body> {
        match self {
            Self::Lockdown => reply::json_rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable: this MCP server is under lockdown",
            ),
            Self::Source => {
                reply::json_rpc_error(StatusCode::FORBIDDEN, "Forbidden: source not allowed")
            }
            Self::Policy(rejection) => {
                reply::json_rpc_error(StatusCode::FORBIDDEN, &rejection.message())
            }
            Self::Framing(refusal) => {
                let mut resp = reply::json_rpc_error(refusal.status(), refusal.message());
                if *refusal == framing::Refusal::Connect {
                    resp.headers_mut().insert(
                        header::ALLOW,
                        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                    );
                }
                resp
            }
            Self::Auth => {
                let mut resp = reply::json_rpc_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: a valid bearer token is required",
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"mcp-gateway\""),
                );
                resp
            }
            Self::RateLimit { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut resp = reply::json_rpc_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too many requests: over the rate limit; retry in {secs} s"),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                resp
            }
            Self::Starting => {
                let mut resp = reply::json_rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable: the MCP server is starting; retry in 1 s",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
                resp
            }
            Self::TooLarge { max } => reply::json_rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("Payload too large: the request body exceeds {max} bytes"),
            ),
            Self::BrokenBody(_) => reply::json_rpc_error(
                StatusCode::BAD_REQUEST,
                "Bad request: the request body is malformed or was cut short",
            ),
            Self::Invalid {
                status,
                code,
                why,
                id,
            } => reply::error(*status, *code, why, id.as_deref()),
            Self::Message { answer, .. } => reply::json(StatusCode::FORBIDDEN, answer.clone()),
        }
    }
}

/// A refusal, with the request body when nothing of it was read.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub unread: Option<Incoming>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Self {
            refusal,
            unread: None,
        }
    }
}

impl Gateway {
    /// The one place a refusal is answered: counted, logged (rate-limited per server, reason
    /// and client), audited, and answered on a connection that stays usable.
    pub(super) async fn refuse(
        &self,
        client: &Client,
        ctx: &mut Ctx,
        Refused { refusal, unread }: Refused,
    ) -> Response<Body> {
        let label = match &refusal {
            Refusal::Policy(rejection) => rejection.value.clone(),
            _ if refusal.subject() == Subject::Peer => client.peer.ip().to_canonical().to_string(),
            _ => caller(ctx),
        };
        let logged = match refusal.reason() {
            Some(reason) => {
                self.metrics
                    .reject(reason, self.listen_port, &label, client.label());
                // A lockdown is logged once by the lock watcher; each refusal only counted.
                reason != Reason::Lockdown
            }
            // The supervisor logs the server's state; each request is only answered.
            None => !matches!(refusal, Refusal::Starting),
        };
        let key = match &refusal {
            Refusal::Message { value, .. } => value.as_str(),
            _ => label.as_str(),
        };
        if logged
            && self
                .rejections
                .admit(&format!("{} {} {key}", self.name, refusal.decision()))
        {
            let (what, detail) = refusal.said();
            let parts = &ctx.parts;
            let reason = refusal.decision();
            match refusal {
                Refusal::Message { .. } => tracing::warn!(
                    server = %self.name, reason, value = ?key, peer = %client.peer, credential = ?client.name(),
                    method = %parts.method, path = ?parts.uri.path(), origin = ?label, rule = detail,
                    "{what}"
                ),
                _ => tracing::warn!(
                    server = %self.name, reason, value = ?label, peer = %client.peer, credential = ?client.name(),
                    method = %parts.method, path = ?parts.uri.path(), detail,
                    "rejected request: {what}"
                ),
            }
        }
        ctx.call.refused(refusal.decision());
        let mut resp = match &refusal {
            // A legacy HTTP+SSE session: answered on its stream, as that transport answers.
            Refusal::Message { answer, .. } if self.on_legacy_stream(&ctx.parts, answer) => {
                reply::accepted()
            }
            _ => refusal.response(),
        };
        if let Some(body) = unread
            && !drain(body, expects_continue(&ctx.parts)).await
        {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// A refused TLS handshake: no request to answer, only counted and logged (rate-limited)
    /// as the client's error.
    pub(super) fn refused_handshake(&self, client: &Client, why: &str) {
        let ip = client.peer.ip().to_canonical().to_string();
        self.metrics
            .reject(Reason::Tls, self.listen_port, &ip, client.label());
        if self.rejections.admit(&format!("{} tls {ip}", self.name)) {
            tracing::warn!(
                server = %self.name, reason = "tls", peer = %client.peer, error = %why,
                "refused a TLS handshake (the client's error: no or an untrusted client certificate, a name not allowed, or not TLS)"
            );
        }
    }

    /// Queues `answer` on the legacy HTTP+SSE session the request was POSTed to, if one is
    /// open: whether it was.
    fn on_legacy_stream(&self, parts: &http::request::Parts, answer: &str) -> bool {
        let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let event = Bytes::from(format!("event: message\ndata: {answer}\n\n"));
        !self.paths.endpoint().eq(parts.uri.path()) && self.legacy.deliver(target, event)
    }
}

/// How a refusal after the Host/Origin check is counted and logged: by the allowed Origin, or
/// the Host for non-browser clients (sanitised).
fn caller(ctx: &Ctx) -> String {
    match ctx.accepted.as_ref().and_then(|a| a.origin.as_deref()) {
        Some(origin) => sanitize(origin.as_bytes()),
        None => sanitize(
            ctx.parts
                .headers
                .get(header::HOST)
                .map_or(&b""[..], |h| h.as_bytes()),
        ),
    }
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and drops what is left of a refused request's body, within [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIME`]: `true` when it ended, so the connection can take the next request.
pub async fn drain(mut body: Incoming, expects_continue: bool) -> bool {
    if body.is_end_stream() {
        return true;
    }
    // Reading would ask a client that waits for `100 Continue` for a body nobody wants.
    if expects_continue || body.size_hint().lower() > DRAIN_MAX_BYTES {
        return false;
    }
    let read = async {
        let mut seen = 0_u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > DRAIN_MAX_BYTES {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// Appends the allowed origin's CORS headers to an answer (the gateway's own refusals
/// included), so the page can read why it was refused.
pub fn allow_origin(resp: &mut Response<Body>, accepted: &crate::policy::Accepted) {
    cors::append_response_headers(accepted, resp.headers_mut());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Refusal> {
        vec![
            Refusal::Lockdown,
            Refusal::Source,
            Refusal::Policy(Rejection {
                reason: crate::policy::Reason::Host,
                rule: "allowed_hosts: localhost:8787".into(),
                value: "rebind.example:8787".into(),
            }),
            Refusal::Framing(framing::Refusal::BothLengths),
            Refusal::Framing(framing::Refusal::Connect),
            Refusal::Auth,
            Refusal::RateLimit {
                retry_after: Duration::from_millis(1200),
            },
            Refusal::TooLarge { max: 1024 },
            Refusal::BrokenBody("invalid chunk size".into()),
            Refusal::Invalid {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: reply::SERVER_ERROR,
                why: "Unsupported media type: compressed request bodies are not accepted".into(),
                id: Some("7".into()),
            },
            Refusal::Message {
                reason: Reason::Tool,
                value: "delete_all".into(),
                rule: "allowed_tools: add".into(),
                answer: reply::error_object(
                    reply::SERVER_ERROR,
                    "Forbidden: tool not allowed",
                    None,
                ),
            },
        ]
    }

    #[test]
    fn refusal_table() {
        // (status, decision, counted by)
        let want: [(u16, &str, Subject); 11] = [
            (503, "lockdown", Subject::Peer),
            (403, "source", Subject::Peer),
            (403, "host", Subject::Value),
            (400, "invalid", Subject::Peer),
            (405, "invalid", Subject::Peer),
            (401, "auth", Subject::Caller),
            (429, "rate_limit", Subject::Caller),
            (413, "too_large", Subject::Caller),
            (400, "invalid", Subject::Peer),
            (415, "invalid", Subject::Caller),
            (403, "tool", Subject::Caller),
        ];
        for (refusal, (status, decision, subject)) in every().iter().zip(want) {
            let resp = refusal.response();
            assert_eq!(resp.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.decision(), decision, "{refusal:?}");
            assert_eq!(refusal.subject(), subject, "{refusal:?}");
            assert!(
                resp.status().is_client_error() || status == 503,
                "{refusal:?}"
            );
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/json",
                "{refusal:?}"
            );
        }
    }

    #[tokio::test]
    async fn bodies_never_reveal_the_configuration() {
        for refusal in every() {
            let body = refusal.response().into_body().collect().await.unwrap();
            let text = String::from_utf8(body.to_bytes().to_vec()).unwrap();
            for secret in [
                "localhost:8787",
                "rebind.example",
                "allowed_",
                "invalid chunk",
            ] {
                assert!(!text.contains(secret), "{refusal:?} said {text}");
            }
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON-RPC");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(':'),
                "{text}"
            );
        }
    }

    #[test]
    fn statuses_carry_their_headers() {
        let rate = Refusal::RateLimit {
            retry_after: Duration::from_millis(1200),
        }
        .response();
        assert_eq!(rate.headers()[header::RETRY_AFTER], "2");
        let tiny = Refusal::RateLimit {
            retry_after: Duration::ZERO,
        }
        .response();
        assert_eq!(tiny.headers()[header::RETRY_AFTER], "1");
        assert!(
            Refusal::Auth
                .response()
                .headers()
                .contains_key(header::WWW_AUTHENTICATE)
        );
        assert!(
            Refusal::Framing(framing::Refusal::Connect)
                .response()
                .headers()
                .contains_key(header::ALLOW)
        );
    }

    #[test]
    fn continue_is_recognised_in_any_case() {
        let parts = |v: &str| {
            http::Request::builder()
                .header(header::EXPECT, v)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(expects_continue(&parts("100-Continue")));
        assert!(!expects_continue(&parts("something-else")));
    }
}
