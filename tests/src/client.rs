//! A client that sends exactly the request it is given (no Host added, duplicates kept), over a
//! fresh connection, so hostile requests reach the server as written.
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Builds a request from raw parts; header values may be any bytes `http` accepts.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::copy_from_slice(body)));
    *req.method_mut() = Method::from_bytes(method.as_bytes()).expect("method");
    *req.uri_mut() = uri.parse().expect("uri");
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value).expect("header value"),
        );
    }
    req
}

/// Sends `req` on a new connection and returns the response head and streaming body.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("response")
}

/// Sends `req` and reads the whole response body.
pub async fn send_full(addr: SocketAddr, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let resp = send(addr, req).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (Response::from_parts(parts, ()), body)
}

/// The message of a gateway's own JSON-RPC error body (`id` null, code -32000); panics on any
/// other body.
pub fn json_rpc_error(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v["id"].is_null(), "id must be null: {v}");
    assert_eq!(v["error"]["code"], -32000);
    v["error"]["message"].as_str().expect("message").to_owned()
}
