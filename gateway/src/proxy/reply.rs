//! Responses the gateway writes itself: JSON-RPC errors, the preflight answer, 401.
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};

use super::body::Body;

/// JSON-RPC's "server error" code, used for every error the gateway itself answers.
const SERVER_ERROR: i64 = -32000;

/// A JSON-RPC error response (`"id": null`: the gateway never reads the request body).
pub fn json_rpc_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": SERVER_ERROR, "message": message },
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 401 with `WWW-Authenticate: Bearer`; never says anything about the token itself.
pub fn unauthorized() -> Response<Body> {
    let mut resp = json_rpc_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: a valid bearer token is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mcp-gateway\""),
    );
    resp
}

/// The gateway's own 204 answer to an allowed CORS preflight.
pub fn preflight(headers: HeaderMap) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    *resp.headers_mut() = headers;
    resp
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
