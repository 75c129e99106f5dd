//! Header rewriting between client and upstream (pure functions): hop-by-hop headers, the
//! forwarding headers, the Origin the upstream sees, the upstream's CORS headers.
use std::{net::SocketAddr, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the next one.
/// `is_hop_by_hop` matches these (and `Proxy-Connection`); a test keeps the two in step.
#[cfg(test)]
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is hop-by-hop (fixed list, or the non-standard `Proxy-Connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none, or just `Connection`: one pass over the names, and no
    // allocation unless `Connection` names other headers.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `Connection: keep-alive` (or `close`) is the usual case: names it lists that are
    // hop-by-hop anyway go without being parsed.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !(token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close"))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| !is_hop_by_hop(name))
        .collect();
    while let Some(name) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// The client's address as the forwarding headers write it, formatted once per connection
/// (it is the same for every request on it).
#[derive(Clone, Debug)]
pub struct ForwardedFor {
    /// `X-Forwarded-For`: `127.0.0.1`, `::1`.
    ip: HeaderValue,
    /// `Forwarded: for=` node: `127.0.0.1`, `"[::1]"` (quoted: it has colons).
    node: Arc<str>,
}

impl ForwardedFor {
    pub fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip().to_canonical();
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        Self {
            ip: HeaderValue::from_str(&ip.to_string()).expect("an IP address is a header value"),
            node: node.into(),
        }
    }
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` for the
/// upstream. The gateway is the first proxy, so client-supplied values are replaced, not
/// trusted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    from: &ForwardedFor,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    let proto = if tls { "https" } else { "http" };
    // Built by hand, not with format!: this runs for every forwarded request.
    let mut forwarded = String::with_capacity(48);
    forwarded.push_str("for=");
    forwarded.push_str(&from.node);
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    headers.remove(X_FORWARDED_HOST);
    if let Some((value, host)) = host.and_then(|h| Some((h, h.to_str().ok()?))) {
        // The policy accepted this Host, so it is a plain authority; quote it anyway.
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
        headers.insert(X_FORWARDED_HOST, value.clone());
    }
    headers.insert(X_FORWARDED_FOR, from.ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(header::FORWARDED, value);
    }
}

/// Where the browser's Origin goes when the upstream is shown its own.
pub const X_FORWARDED_ORIGIN: HeaderName = HeaderName::from_static("x-forwarded-origin");

/// The Origin the upstream sees. The gateway allowed the browser's origin and answers CORS
/// itself, so by default (`own`: the upstream's own origin) the upstream sees a same-origin
/// request its own rebinding check accepts, and the browser's origin in `X-Forwarded-Origin`.
/// With `pass_origin` (`own` is `None`) the Origin passes unchanged. A client's own
/// `X-Forwarded-Origin` is never trusted: the gateway is the first proxy.
pub fn rewrite_origin(headers: &mut HeaderMap, own: Option<&HeaderValue>) {
    headers.remove(X_FORWARDED_ORIGIN);
    if let Some(own) = own
        && let Some(origin) = headers.remove(header::ORIGIN)
    {
        headers.insert(X_FORWARDED_ORIGIN, origin);
        headers.insert(header::ORIGIN, own.clone());
    }
}

/// CORS response headers belong to the gateway: drop the upstream's before adding ours.
pub fn strip_cors(headers: &mut HeaderMap) {
    let is_cors = |n: &HeaderName| n.as_str().starts_with("access-control-");
    if !headers.keys().any(is_cors) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_cors(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_table() {
        let own = HeaderValue::from_static("http://127.0.0.1:8000");
        // (request headers, own origin?, Origin after, X-Forwarded-Origin after)
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            bool,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: [Case<'_>; 6] = [
            (
                &[("origin", "https://app.example.com")],
                true,
                Some("http://127.0.0.1:8000"),
                Some("https://app.example.com"),
            ),
            (
                &[("origin", "https://app.example.com")],
                false,
                Some("https://app.example.com"),
                None,
            ),
            // No Origin (a non-browser client): nothing is added.
            (&[], true, None, None),
            // A client's own forwarding header is dropped, rewritten or not.
            (
                &[("x-forwarded-origin", "https://evil.example")],
                true,
                None,
                None,
            ),
            (
                &[
                    ("x-forwarded-origin", "https://evil.example"),
                    ("origin", "http://localhost:3000"),
                ],
                true,
                Some("http://127.0.0.1:8000"),
                Some("http://localhost:3000"),
            ),
            (
                &[("x-forwarded-origin", "https://evil.example")],
                false,
                None,
                None,
            ),
        ];
        for (pairs, rewrite, origin, forwarded) in cases {
            let mut headers = map(pairs);
            rewrite_origin(&mut headers, rewrite.then_some(&own));
            let get = |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                get(&header::ORIGIN).as_deref(),
                origin,
                "{pairs:?} {rewrite}"
            );
            assert_eq!(
                get(&X_FORWARDED_ORIGIN).as_deref(),
                forwarded,
                "{pairs:?} {rewrite}"
            );
            assert!(headers.get_all(header::ORIGIN).iter().count() <= 1);
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic xyz"),
            ("proxy-connection", "keep-alive"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-06-18"),
            ("last-event-id", "42"),
            ("accept", "text/event-stream, application/json"),
            ("authorization", "Bearer upstream-token"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept",
                "authorization",
                "last-event-id",
                "mcp-protocol-version",
                "mcp-session-id"
            ]
        );
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")]);
        let host = HeaderValue::from_static("localhost:8787");
        set_forwarded(
            &mut h,
            &ForwardedFor::new("127.0.0.1:5555".parse().unwrap()),
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "localhost:8787");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"localhost:8787\""
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);

        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            &ForwardedFor::new("[::1]:5555".parse().unwrap()),
            None,
            true,
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the client spoke TLS to the gateway"
        );
    }

    #[test]
    fn the_fast_hop_by_hop_check_knows_every_listed_header() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(is_hop_by_hop(&HeaderName::from_static("proxy-connection")));
        assert!(!is_hop_by_hop(&header::HOST));
    }

    #[test]
    fn strips_upstream_cors() {
        let mut h = map(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "text/event-stream"),
        ]);
        strip_cors(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
