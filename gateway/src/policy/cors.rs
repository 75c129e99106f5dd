//! CORS: preflights are answered by the gateway itself, for allowed origins only.
//!
//! A preflight goes through the same [`Policy::verify`] as any request (Host, then Origin), so a
//! disallowed origin or a bad Host gets the rejection (403), also when it asks for
//! private-network access. `Access-Control-Allow-Origin` always echoes the exact Origin sent,
//! never `*`, and every answer carries `Vary: Origin` (with or without Origin) because the
//! headers depend on it and a cache must not hand one origin's answer to another.
//!
//! Request headers: an allowed origin may send every header an MCP client sends, so the answer
//! lists MCP's own ([`ALLOW_HEADERS`]) and reflects each name the preflight asks for that is a
//! valid header name (at most [`MAX_REFLECTED`]). Reflecting is what makes `Mcp-Param-{Name}`
//! work, whose names come from each tool's schema, and the custom headers (API keys) users
//! configure in their clients. It grants nothing the origin check didn't: the origin is already
//! trusted to call this server, and header names carry no authority of their own (the gateway
//! still checks Host, Origin and its own bearer token on the request itself).
use http::{
    HeaderMap, HeaderName, HeaderValue, Method,
    header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
        VARY,
    },
    request::Parts,
};

use super::{Accepted, Policy, Reason, Rejection};

/// Methods of the MCP streamable HTTP transport.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers an MCP browser client sends (2025 and 2026-07-28 revisions), always allowed.
pub const ALLOW_HEADERS: &str = "mcp-protocol-version, mcp-method, mcp-name, mcp-session-id, \
                                 last-event-id, authorization, content-type, accept";
/// Response headers a browser client must be able to read: the session (2025), the version,
/// `WWW-Authenticate` (an auth challenge points to the server's OAuth metadata) and
/// `Retry-After` (how long a rate-limited client waits).
pub const EXPOSE_HEADERS: &str =
    "mcp-session-id, mcp-protocol-version, www-authenticate, retry-after";
/// Most requested header names reflected in one answer.
pub const MAX_REFLECTED: usize = 64;
/// Seconds a browser may cache a preflight answer.
pub const MAX_AGE_SECS: &str = "600";

const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// Whether the request is a CORS preflight (OPTIONS with Origin and
/// Access-Control-Request-Method). Without Origin it is an ordinary request for `verify`.
pub fn is_preflight(req: &Parts) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the gateway's own 204 answer to an allowed preflight, or the rejection.
pub fn preflight(policy: &Policy, req: &Parts) -> Result<HeaderMap, Rejection> {
    let accepted = policy.verify(req)?;
    if accepted.origin.is_none() {
        // Only reachable when called on a non-preflight; nothing to allow without an Origin.
        return Err(Rejection {
            reason: Reason::Origin,
            rule: "a CORS preflight must carry an Origin header".to_owned(),
            value: String::new(),
        });
    }
    let mut headers = response_headers(&accepted);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers(req));
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    // Private Network Access: the page asks to reach a more private address space. The origin
    // was allowed above, so say yes; a disallowed origin never got here.
    let private_network = req
        .headers
        .get(REQUEST_PRIVATE_NETWORK)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if private_network {
        headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
    }
    Ok(headers)
}

/// `Access-Control-Allow-Headers`: MCP's headers, plus every valid name the preflight asks for.
fn allow_headers(req: &Parts) -> HeaderValue {
    let mut names: Vec<String> = ALLOW_HEADERS.split(", ").map(str::to_owned).collect();
    let asked = req
        .headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty() && HeaderName::from_bytes(name).is_ok())
        .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
        .take(MAX_REFLECTED);
    for name in asked {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    // Valid header names joined by ", " always make a valid value.
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static(ALLOW_HEADERS))
}

/// CORS headers added to a proxied response: `Vary: Origin` always; with an allowed Origin also
/// `Access-Control-Allow-Origin: <exact origin>` and `Access-Control-Expose-Headers`.
pub fn response_headers(accepted: &Accepted) -> HeaderMap {
    let mut headers = HeaderMap::new();
    append_response_headers(accepted, &mut headers);
    headers
}

/// [`response_headers`], appended to an answer's own (an upstream `Vary` survives: its CORS
/// headers were already dropped). Every answer of the path gets these: no map is built for it.
pub fn append_response_headers(accepted: &Accepted, headers: &mut HeaderMap) {
    headers.append(VARY, HeaderValue::from_static("Origin"));
    // The Origin came from a header value that passed the policy, so it converts back; if it
    // somehow did not, leaving Allow-Origin out fails closed.
    let origin = accepted
        .origin
        .as_deref()
        .and_then(|origin| HeaderValue::from_str(origin).ok());
    if let Some(origin) = origin {
        headers.append(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}
