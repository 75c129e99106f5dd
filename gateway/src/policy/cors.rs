//! CORS: preflights are answered by the gateway itself, for allowed origins only.
//!
//! CONTRACT STUB (see mod.rs).
use http::{HeaderMap, Method, request::Parts};

use super::{Accepted, Policy, Rejection};

/// Whether the request is a CORS preflight (OPTIONS with Origin and
/// Access-Control-Request-Method).
pub fn is_preflight(req: &Parts) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the gateway's own 204 answer to an allowed preflight, or the rejection.
pub fn preflight(policy: &Policy, req: &Parts) -> Result<HeaderMap, Rejection> {
    policy.verify(req).map(|_| HeaderMap::new())
}

/// CORS headers added to a proxied response for an accepted cross-origin request.
pub fn response_headers(accepted: &Accepted) -> HeaderMap {
    let _ = accepted;
    HeaderMap::new()
}
