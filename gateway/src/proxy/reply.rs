//! Responses the gateway writes itself: JSON-RPC errors, the preflight answer, 202.
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::body::Body;

/// JSON-RPC's "server error" code, used for the gateway's own errors outside MCP's codes.
pub const SERVER_ERROR: i64 = -32000;

/// A JSON-RPC error response with `"id": null` (the request's id is unknown or unread).
pub fn json_rpc_error(status: StatusCode, message: &str) -> Response<Body> {
    error(status, SERVER_ERROR, message, None)
}

/// One JSON-RPC error object: `id` is the request's id as JSON text (`None`: `null`).
pub fn error_object(code: i64, message: &str, id: Option<&str>) -> String {
    // The id came out of the JSON parser as a string or an integer, so it is valid JSON text.
    let id = id.unwrap_or("null");
    let message = serde_json::Value::from(message);
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

/// A JSON-RPC error response answering the request with id `id`.
pub fn error(status: StatusCode, code: i64, message: &str, id: Option<&str>) -> Response<Body> {
    json(status, error_object(code, message, id))
}

/// A response with a JSON body.
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `202 Accepted` without a body: a legacy HTTP+SSE message taken (its answer goes on the
/// session's stream).
pub fn accepted() -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// The gateway's own 204 answer to an allowed CORS preflight.
pub fn preflight(headers: HeaderMap) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_echo_the_id_and_escape_the_message() {
        let v: serde_json::Value =
            serde_json::from_str(&error_object(-32020, "bad \"x\"\n", Some("\"a\""))).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], -32020);
        assert_eq!(v["error"]["message"], "bad \"x\"\n");
        let v: serde_json::Value = serde_json::from_str(&error_object(-1, "m", None)).unwrap();
        assert!(v["id"].is_null());
        let v: serde_json::Value =
            serde_json::from_str(&error_object(-1, "m", Some("18446744073709551615"))).unwrap();
        assert_eq!(v["id"], 18_446_744_073_709_551_615_u64);
    }
}
