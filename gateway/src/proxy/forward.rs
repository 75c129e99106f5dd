//! Forwarding an accepted request to the upstream and streaming the answer back.
use std::{net::SocketAddr, time::Duration};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header, request::Parts};
use http_body_util::{BodyExt as _, LengthLimitError};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{
    Gateway,
    body::{self, Body, EndOnShutdown},
    headers, reply,
};

/// Pooled keep-alive client for the upstream.
pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Sends the request upstream. Paths pass through unchanged; `Host` becomes the upstream's
/// authority so an upstream that checks Host itself still accepts it.
pub async fn forward(
    gw: &Gateway,
    peer: SocketAddr,
    parts: Parts,
    body: Incoming,
) -> Response<Body> {
    let Parts {
        method,
        uri,
        version: _,
        mut headers,
        ..
    } = parts;
    let client_host = headers.get(header::HOST).cloned();
    headers::strip_hop_by_hop(&mut headers);
    headers::set_forwarded(&mut headers, peer, client_host.as_ref());
    if gw.auth_token.is_some() {
        // The gateway's own token is not the upstream's business.
        headers.remove(header::AUTHORIZATION);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(target) = Uri::builder()
        .scheme("http")
        .authority(gw.upstream.authority.as_str())
        .path_and_query(path)
        .build()
    else {
        return reply::json_rpc_error(
            StatusCode::BAD_REQUEST,
            "Bad request: invalid request target",
        );
    };
    if let Ok(host) = HeaderValue::from_str(&gw.upstream.authority) {
        headers.insert(header::HOST, host);
    }

    let mut req = Request::new(body::limited(body, gw.limits.max_body_bytes));
    *req.method_mut() = method;
    *req.uri_mut() = target;
    *req.headers_mut() = headers;

    let resp = match gw.client.request(req).await {
        Ok(resp) => resp,
        Err(err) => return upstream_error(gw, &err),
    };
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_cors(&mut parts.headers);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let body = body.map_err(body::BoxError::from).boxed_unsync();
    // SSE streams end cleanly on shutdown and are counted while open.
    let body = if is_sse {
        gw.metrics
            .track_sse(EndOnShutdown::wrap(body, gw.shutdown.clone()))
    } else {
        body
    };
    Response::from_parts(parts, body)
}

/// Maps a failed upstream exchange to 413, 504 or 502, with a JSON-RPC error body.
fn upstream_error(gw: &Gateway, err: &hyper_util::client::legacy::Error) -> Response<Body> {
    if find::<LengthLimitError>(err).is_some() {
        return reply::json_rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Payload too large: the request body exceeds {} bytes",
                gw.limits.max_body_bytes
            ),
        );
    }
    let timed_out =
        find::<std::io::Error>(err).is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
    if err.is_connect() && timed_out {
        tracing::warn!(upstream = %gw.upstream.authority, "upstream connect timed out");
        return reply::json_rpc_error(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway timeout: the MCP server did not accept the connection in time",
        );
    }
    tracing::warn!(upstream = %gw.upstream.authority, error = %err, cause = ?std::error::Error::source(err), "upstream request failed");
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
