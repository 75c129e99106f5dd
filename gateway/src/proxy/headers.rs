//! Header rewriting between client and upstream (pure functions).
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the next one.
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

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    // `Proxy-Connection` is non-standard but still sent by some clients.
    headers.remove("proxy-connection");
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` for the
/// upstream. The gateway is the first proxy, so client-supplied values are replaced, not
/// trusted.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    let proto = if tls { "https" } else { "http" };
    let ip = peer.ip().to_canonical();
    let node = if ip.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.to_string()
    };
    let mut forwarded = format!("for={node};proto={proto}");
    headers.remove("x-forwarded-host");
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        // The policy accepted this Host, so it is a plain authority; quote it anyway.
        forwarded.push_str(&format!(";host=\"{host}\""));
        if let Ok(value) = HeaderValue::from_str(host) {
            headers.insert("x-forwarded-host", value);
        }
    }
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(headers, "x-forwarded-for", ip.to_string());
    set(headers, "x-forwarded-proto", proto.to_owned());
    set(headers, "forwarded", forwarded);
}

/// CORS response headers belong to the gateway: drop the upstream's before adding ours.
pub fn strip_cors(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "127.0.0.1:5555".parse().unwrap(),
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
        set_forwarded(&mut h, "[::1]:5555".parse().unwrap(), None, true);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the client spoke TLS to the gateway"
        );
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
