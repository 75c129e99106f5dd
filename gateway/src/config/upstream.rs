//! The upstream MCP server: `http://HOST:PORT/PATH`, or a Unix socket `unix:/PATH[:/ENDPOINT]`.
use std::path::PathBuf;

use hyper::Uri;

use super::ConfigError;

/// The MCP endpoint path of a Unix-socket upstream written without one: the official SDKs'
/// default (`streamable_http_path` in Python, the examples' `/mcp` in TypeScript).
pub const DEFAULT_UNIX_ENDPOINT: &str = "/mcp";

/// Where the upstream listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamAddr {
    /// `host:port` (also sent as the upstream `Host`).
    Tcp { authority: String, port: u16 },
    /// An absolute socket path. File permissions decide who may connect; there is no TCP port.
    Unix(PathBuf),
}

/// The upstream MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub addr: UpstreamAddr,
    /// The MCP endpoint path (`/mcp`): POSTs to it are inspected as MCP messages. Request paths
    /// pass through unchanged.
    pub path: String,
}

impl Upstream {
    /// A TCP upstream at `authority` (`host:port`) with the MCP endpoint `/mcp`.
    pub fn tcp(authority: &str, port: u16) -> Self {
        Self {
            addr: UpstreamAddr::Tcp {
                authority: authority.to_owned(),
                port,
            },
            path: "/mcp".to_owned(),
        }
    }

    /// The TCP port, protected by the kernel layer (`None` for a socket).
    pub fn port(&self) -> Option<u16> {
        match &self.addr {
            UpstreamAddr::Tcp { port, .. } => Some(*port),
            UpstreamAddr::Unix(_) => None,
        }
    }

    /// The `Host` sent upstream: the upstream's own authority (so an upstream that checks Host
    /// itself accepts it), or `localhost` for a socket.
    pub fn host(&self) -> &str {
        match &self.addr {
            UpstreamAddr::Tcp { authority, .. } => authority,
            UpstreamAddr::Unix(_) => "localhost",
        }
    }
}

impl std::fmt::Display for Upstream {
    /// As written in the configuration: `http://127.0.0.1:8000/mcp`, `unix:/run/x.sock:/mcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            UpstreamAddr::Tcp { authority, .. } => write!(f, "http://{authority}{}", self.path),
            UpstreamAddr::Unix(path) => write!(f, "unix:{}:{}", path.display(), self.path),
        }
    }
}

/// Parses `--upstream` / `upstream = …`.
///
/// - `http://HOST[:PORT][/PATH]`: the path is the MCP endpoint (`/` when absent);
/// - `unix:/ABSOLUTE/PATH.sock[:/ENDPOINT]` (also `unix:///…`): the socket, and the MCP endpoint
///   after the last `:/` (nginx's `proxy_pass http://unix:/path:/uri` spelling), `/mcp` when
///   absent.
pub fn parse(value: &str) -> Result<Upstream, ConfigError> {
    let bad = |why: &str| ConfigError::Upstream {
        value: value.to_owned(),
        why: why.to_owned(),
    };
    if let Some(rest) = value.strip_prefix("unix:") {
        return parse_unix(rest).map_err(bad);
    }
    let uri: Uri = value
        .parse()
        .map_err(|_| bad("not a URL; expected http://HOST:PORT/PATH or unix:/PATH/TO.sock"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// and unix: upstreams are supported (the upstream is local)",
        ));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("userinfo is not allowed"));
    }
    let port = authority.port_u16().unwrap_or(80);
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    Ok(Upstream {
        addr: UpstreamAddr::Tcp {
            authority: format!("{}:{port}", authority.host()),
            port,
        },
        path: uri.path().to_owned(),
    })
}

fn parse_unix(rest: &str) -> Result<Upstream, &'static str> {
    // `unix:///run/x.sock` is the URL spelling of `unix:/run/x.sock`.
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if !rest.starts_with('/') {
        return Err("the socket path must be absolute: unix:/run/mcp/server.sock");
    }
    let (socket, endpoint) = match rest.rfind(":/") {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, DEFAULT_UNIX_ENDPOINT),
    };
    if socket.len() <= 1 {
        return Err("no socket path; expected unix:/run/mcp/server.sock");
    }
    if socket.contains('\0') || endpoint.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("the socket path or endpoint holds a NUL, space or control character");
    }
    if endpoint.contains(['?', '#']) {
        return Err("the endpoint may not carry a query or fragment");
    }
    Ok(Upstream {
        addr: UpstreamAddr::Unix(PathBuf::from(socket)),
        path: endpoint.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(authority: &str, port: u16, path: &str) -> Upstream {
        Upstream {
            addr: UpstreamAddr::Tcp {
                authority: authority.into(),
                port,
            },
            path: path.into(),
        }
    }

    fn unix(socket: &str, path: &str) -> Upstream {
        Upstream {
            addr: UpstreamAddr::Unix(socket.into()),
            path: path.into(),
        }
    }

    #[test]
    fn accepted_forms() {
        let rows = [
            (
                "http://127.0.0.1:8000/mcp",
                tcp("127.0.0.1:8000", 8000, "/mcp"),
            ),
            ("http://localhost", tcp("localhost:80", 80, "/")),
            ("http://[::1]:9/x/y", tcp("[::1]:9", 9, "/x/y")),
            ("unix:/run/mcp/w.sock", unix("/run/mcp/w.sock", "/mcp")),
            ("unix:///run/mcp/w.sock", unix("/run/mcp/w.sock", "/mcp")),
            ("unix:/run/mcp/w.sock:/", unix("/run/mcp/w.sock", "/")),
            (
                "unix:/run/a:b/w.sock:/api/mcp",
                unix("/run/a:b/w.sock", "/api/mcp"),
            ),
        ];
        for (text, want) in rows {
            assert_eq!(parse(text).expect(text), want, "{text}");
        }
    }

    #[test]
    fn refused_forms_say_why() {
        let rows = [
            ("unix:run/w.sock", "must be absolute"),
            ("unix:", "must be absolute"),
            ("unix:/", "no socket path"),
            ("unix:/:/mcp", "no socket path"),
            ("unix:/run/w.sock:/mcp?x=1", "query"),
            ("unix:/run/w sock:/m p", "control character"),
            ("https://127.0.0.1:8000/mcp", "only http:// and unix:"),
            ("http://u@127.0.0.1/", "userinfo"),
            ("http://127.0.0.1/?q", "query string"),
            ("not a url", "not a URL"),
        ];
        for (text, needle) in rows {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.starts_with(&format!("upstream: `{text}`")) && err.contains(needle),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["http://127.0.0.1:8000/mcp", "unix:/run/mcp/w.sock:/mcp"] {
            let up = parse(text).expect("valid");
            assert_eq!(up.to_string(), text);
            assert_eq!(parse(&up.to_string()).expect("again"), up);
        }
        let up = parse("unix:/run/mcp/w.sock").expect("valid");
        assert_eq!((up.port(), up.host()), (None, "localhost"));
    }
}
