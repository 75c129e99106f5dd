//! The `/metrics` listener: a small HTTP/1 server of its own, so scrapes never share the proxy's
//! port, limits or policy.
use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Metrics, encode::Format};
use crate::policy::{Mode, Policy, PolicySettings};

/// Scrapers served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    // On loopback, /metrics gets the proxy's own DNS-rebinding defence: loopback Host on this
    // port, and no browser Origin (strict mode, none allowed). Prometheus sends neither.
    let guard = listener
        .local_addr()
        .ok()
        .filter(|addr| addr.ip().is_loopback())
        .and_then(|listen| {
            Policy::new(&PolicySettings {
                mode: Mode::Strict,
                listen,
                allowed_hosts: Vec::new(),
                allowed_origins: Vec::new(),
            })
            .ok()
        })
        .map(Arc::new);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let metrics = metrics.clone();
        let guard = guard.clone();
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let (parts, _body) = req.into_parts();
            let resp = match guard.as_deref().map(|policy| policy.verify(&parts)) {
                Some(Err(rejection)) => {
                    tracing::debug!(reason = rejection.reason.as_str(), value = ?rejection.value, "metrics: rejected request");
                    plain(
                        StatusCode::FORBIDDEN,
                        "forbidden: Host or Origin not allowed\n",
                    )
                }
                _ => answer(&metrics, &Request::from_parts(parts, ())),
            };
            async move { Ok::<_, Infallible>(resp) }
        });
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                tracing::debug!(peer = %peer, error = %err, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// `GET|HEAD /metrics`; anything else is 404 or 405.
pub fn answer<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = metrics.render(format);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
