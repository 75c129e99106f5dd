//! Forwarding an accepted request to the upstream and streaming the answer back.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header, request::Parts};
use http_body_util::LengthLimitError;
use hyper::body::Incoming;

use super::{
    Client, Gateway,
    body::{self, Body, ClientFault},
    connect::Connector,
    pool::{Pool, PoolError},
    refusal::Refusal,
    reply, rewrite,
};
use crate::config::{Upstream, UpstreamAddr};

/// The upstream's keep-alive connections.
pub fn pool(upstream: &Upstream, connect_timeout: Duration) -> Arc<Pool> {
    // What the TCP connector dials; the Unix one ignores it.
    let target = format!("http://{}/", upstream.host())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://localhost/"));
    Pool::new(Connector::new(upstream, connect_timeout), target)
}

/// The request body to send upstream.
#[derive(Debug)]
pub enum Outgoing {
    /// Streamed as the client sends it (capped).
    Streamed(Incoming),
    /// Already read whole (and checked).
    Buffered(Bytes),
}

/// Sends the request upstream. Paths pass through unchanged; `Host` becomes the upstream's
/// authority (`localhost` for a socket) so an upstream that checks Host itself accepts it.
/// `identity` asks the upstream for an uncompressed response (one the gateway must read).
/// The request's method and headers move into the upstream request. A client's fault found
/// while forwarding (its body broke, or grew over the cap) is its refusal; the upstream's
/// failures are answered here (502, 504).
pub async fn forward(
    gw: &Gateway,
    client: &Client,
    parts: &mut Parts,
    body: Outgoing,
    identity: bool,
) -> Result<Response<Body>, Refusal> {
    let method = std::mem::take(&mut parts.method);
    let uri = &parts.uri;
    let mut headers = std::mem::take(&mut parts.headers);
    let client_host = headers.get(header::HOST).cloned();
    rewrite::strip_hop_by_hop(&mut headers);
    rewrite::set_forwarded(
        &mut headers,
        &client.forwarded,
        client_host.as_ref(),
        gw.tls.is_some(),
    );
    rewrite::rewrite_origin(&mut headers, gw.upstream_origin.as_ref());
    if gw.credentials.is_some() {
        // The gateway's own token is not the upstream's business.
        headers.remove(header::AUTHORIZATION);
    }
    // Origin-form (`/mcp?x`), as HTTP/1.1 sends to a server (not to a proxy); `Host` says where.
    let mut target = http::uri::Parts::default();
    target.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    let Ok(target) = Uri::from_parts(target) else {
        return Ok(reply::json_rpc_error(
            StatusCode::BAD_REQUEST,
            "Bad request: invalid request target",
        ));
    };
    headers.insert(header::HOST, gw.upstream_host.clone());
    if identity {
        headers.remove(header::ACCEPT_ENCODING);
    }

    let (body, fault) = match body {
        Outgoing::Streamed(incoming) => {
            let (body, fault) = body::limited(incoming, gw.limits.max_body_bytes);
            (body, Some(fault))
        }
        Outgoing::Buffered(bytes) => (body::buffered(bytes), None),
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = target;
    *req.headers_mut() = headers;

    // A connection closed to make room forwards nothing; one that forwards is never closed.
    if !client.slot.forwarding() {
        return Ok(reply::json_rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable: the gateway is at its connection limit",
        ));
    }
    // Connecting has its own timeout; this one bounds a hung MCP server (it never answers).
    let sent = tokio::time::timeout(gw.limits.response_timeout, gw.pool.send(req)).await;
    if !matches!(sent, Ok(Ok(_))) {
        client.slot.waiting();
    }
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => return upstream_error(gw, &err, fault.as_deref()),
        Err(_) => {
            if gw
                .rejections
                .admit(&format!("{} upstream timeout", gw.name))
            {
                tracing::warn!(server = %gw.name, upstream = %gw.upstream, timeout = ?gw.limits.response_timeout, "the upstream did not answer in time (response_timeout_secs): is the MCP server hung?");
            }
            return Ok(reply::json_rpc_error(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway timeout: the MCP server did not answer in time",
            ));
        }
    };
    let (mut parts, body) = resp.into_parts();
    rewrite::strip_hop_by_hop(&mut parts.headers);
    rewrite::strip_cors(&mut parts.headers);
    let is_sse = crate::mcp::sse::is_event_stream(&parts.headers);
    let mut body = Body::upstream(body, client.slot.clone());
    // SSE streams end cleanly on shutdown or an upstream failure, and are counted while open.
    // Other bodies cut short stay cut: a truncated JSON answer must not look complete.
    if is_sse {
        let (rejections, name, upstream) = (
            gw.rejections.clone(),
            gw.name.clone(),
            gw.upstream.to_string(),
        );
        let on_error: body::OnUpstreamError = Box::new(move |err| {
            if rejections.admit(&format!("{name} upstream stream")) {
                tracing::warn!(server = %name, %upstream, error = %err, "the upstream failed mid-stream (MCP server restarted or crashed?): ended the client's SSE stream cleanly so it can resume");
            }
        });
        body.stream(gw.shutdown.clone(), on_error, gw.stats.sse_stream());
    }
    Ok(Response::from_parts(parts, body))
}

/// Maps a failed upstream exchange to the client's refusal (413, 400: its body's fault), or
/// to 504 or 502 (the upstream's), with a JSON-RPC error body.
fn upstream_error(
    gw: &Gateway,
    err: &PoolError,
    fault: Option<&ClientFault>,
) -> Result<Response<Body>, Refusal> {
    let is_connect = matches!(err, PoolError::Connect(_));
    if find::<LengthLimitError>(err).is_some() {
        return Err(gw.too_large());
    }
    if let Some(why) = fault.and_then(ClientFault::get) {
        return Err(Refusal::BrokenBody(why.to_owned()));
    }
    Ok(upstream_failure(gw, err, is_connect))
}

/// The answer to an exchange the upstream failed: 504 or 502, logged rate-limited.
fn upstream_failure(gw: &Gateway, err: &PoolError, is_connect: bool) -> Response<Body> {
    let io = find::<std::io::Error>(err).map(std::io::Error::kind);
    let timed_out = io == Some(std::io::ErrorKind::TimedOut);
    // Every accepted request can fail while the upstream is down: logged rate-limited.
    let log = |what: &str| gw.rejections.admit(&format!("{} upstream {what}", gw.name));
    if is_connect && timed_out {
        if log("connect timeout") {
            tracing::warn!(server = %gw.name, upstream = %gw.upstream, "upstream connect timed out");
        }
        return reply::json_rpc_error(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway timeout: the MCP server did not accept the connection in time",
        );
    }
    if let (true, UpstreamAddr::Unix(path)) = (is_connect, &gw.upstream.addr) {
        let path = path.display();
        match io {
            Some(std::io::ErrorKind::NotFound) => {
                if log("socket missing") {
                    tracing::warn!(server = %gw.name, socket = %path, "the upstream socket does not exist: is the MCP server running, and listening on this path?");
                }
                return reply::json_rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("Bad gateway: the MCP server's socket {path} does not exist"),
                );
            }
            Some(std::io::ErrorKind::PermissionDenied) => {
                if log("socket permission") {
                    tracing::warn!(server = %gw.name, socket = %path, user = %gw.user, "permission denied on the upstream socket: give the gateway's user access to it (group or mode of the socket and its directories)");
                }
                return reply::json_rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("Bad gateway: permission denied on the MCP server's socket {path}"),
                );
            }
            _ => {}
        }
    }
    if log("failed") {
        tracing::warn!(server = %gw.name, upstream = %gw.upstream, error = %err, cause = ?std::error::Error::source(err), "upstream request failed");
    }
    reply::json_rpc_error(
        StatusCode::BAD_GATEWAY,
        "Bad gateway: the MCP server is unreachable or closed the connection",
    )
}

/// The first error of type `E` in `err`'s source chain.
fn find<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
