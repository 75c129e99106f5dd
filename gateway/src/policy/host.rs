//! Host names and authorities: one strict grammar shared by the `Host` header, the host part of
//! an Origin, and the `allowed_hosts` / `allowed_origins` settings.
//!
//! Accepted forms: a DNS name (letters, digits, `-`, `_`, dot-separated labels), a dotted-decimal
//! IPv4 address, or a bracketed IPv6 address, optionally followed by `:PORT`. Everything else is
//! refused rather than guessed at, because every liberal parse is a chance for the gateway and
//! a browser or resolver to disagree about which host is meant.
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use http::{header::HOST, request::Parts};

use super::{Reason, Rejection, sanitize::sanitize};

/// Longest `Host` value accepted, in bytes (a DNS name is at most 253, plus `:65535`).
pub const MAX_HOST_LEN: usize = 255;

/// The names a legitimate local client uses for the gateway.
const LOOPBACK_NAMES: &str = "localhost, 127.0.0.1, [::1]";

/// A normalised host: names lowercased, addresses parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostName {
    Name(String),
    V4(Ipv4Addr),
    /// Compared as an address, so `[0:0::1]` equals `[::1]` (same address, same socket).
    V6(Ipv6Addr),
}

impl HostName {
    /// `localhost`, `127.0.0.1` and `[::1]`, and nothing else that happens to be loopback.
    pub(crate) fn loopback() -> [Self; 3] {
        [
            Self::Name("localhost".to_owned()),
            Self::V4(Ipv4Addr::LOCALHOST),
            Self::V6(Ipv6Addr::LOCALHOST),
        ]
    }

    fn is_unspecified(&self) -> bool {
        match self {
            Self::Name(_) => false,
            Self::V4(addr) => addr.is_unspecified(),
            Self::V6(addr) => addr.is_unspecified(),
        }
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::V4(addr) => write!(f, "{addr}"),
            Self::V6(addr) => write!(f, "[{addr}]"),
        }
    }
}

/// The port part of an authority; `Any` only where a pattern allows `:*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    Exact(u16),
    Any,
}

/// Parses `host[:port]`; a missing port is `default_port`. `why` strings name the problem.
pub(crate) fn parse_authority(
    text: &str,
    default_port: u16,
    allow_port_wildcard: bool,
) -> Result<(HostName, Port), &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it contains whitespace, control or non-ASCII characters");
    }
    if text.contains('@') {
        return Err("userinfo (`user@`) is not allowed");
    }
    if text.contains(['/', '?', '#']) {
        return Err("a path, query or fragment is not allowed");
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address is missing its closing `]`")?;
        let addr = inside
            .parse::<Ipv6Addr>()
            .map_err(|_| "the bracketed part is not a plain IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("unexpected text after `]`")?),
        };
        (HostName::V6(addr), port)
    } else {
        if text.matches(':').count() > 1 {
            return Err("IPv6 addresses must be in brackets, like [::1]");
        }
        let (name, port) = match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        };
        (parse_name(name)?, port)
    };
    let port = match port {
        None => Port::Exact(default_port),
        Some("*") if allow_port_wildcard => Port::Any,
        Some(port) => Port::Exact(parse_port(port)?),
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() {
        return Err("the port after `:` is empty");
    }
    if text.contains('*') {
        return Err("wildcards are not allowed here");
    }
    // Digits only (no sign, no leading zero): the forms clients send, nothing to reinterpret.
    let digits = text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if digits && port != 0 && !text.starts_with('0') => Ok(port),
        _ => Err("the port must be a number from 1 to 65535 without sign or leading zero"),
    }
}

fn parse_name(name: &str) -> Result<HostName, &'static str> {
    if name.is_empty() {
        return Err("the host name is empty");
    }
    if name.contains('*') {
        return Err("wildcards are not allowed; list each host");
    }
    if name.ends_with('.') {
        return Err("a trailing dot is not allowed; write the name without it");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("a host name may only hold letters, digits, `-`, `_` and dots");
    }
    let mut labels = name.split('.');
    if labels
        .clone()
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err("a host name label is empty or longer than 63 bytes");
    }
    // Browsers treat a name ending in a number as IPv4 (`2130706433`, `0x7f.1`, `127.1`); only
    // the dotted-decimal form is accepted so that no such shorthand ever matches anything.
    let last = labels.next_back().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.starts_with("0x")
        || last.starts_with("0X");
    if numeric {
        return name
            .parse::<Ipv4Addr>()
            .map(HostName::V4)
            .map_err(|_| "a numeric host must be a dotted-decimal IPv4 address like 127.0.0.1");
    }
    Ok(HostName::Name(name.to_ascii_lowercase()))
}

/// A `Host` a request may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    host: HostName,
    port: u16,
}

/// The allowed `Host` values: the loopback names on the listen port plus the configured ones.
#[derive(Clone, Debug)]
pub(crate) struct AllowedHosts {
    allowed: Vec<HostPattern>,
    /// For rules: `localhost, 127.0.0.1, [::1] on port 8787; extra.test:9000`.
    described: String,
}

impl AllowedHosts {
    /// Builds the list; an entry without a port gets `listen_port`.
    pub(crate) fn new(listen_port: u16, extra: &[String]) -> Result<Self, super::PolicyError> {
        let mut allowed: Vec<HostPattern> = HostName::loopback()
            .into_iter()
            .map(|host| HostPattern {
                host,
                port: listen_port,
            })
            .collect();
        let mut described = format!("{LOOPBACK_NAMES} on port {listen_port}");
        for value in extra {
            let bad = |why: &str| super::PolicyError::Host {
                value: value.clone(),
                why: why.to_owned(),
            };
            let (host, port) = parse_authority(value, listen_port, false).map_err(bad)?;
            if host.is_unspecified() {
                return Err(bad(
                    "an unspecified address (0.0.0.0, [::]) is never a request's destination",
                ));
            }
            let Port::Exact(port) = port else {
                return Err(bad("wildcards are not allowed; list each host"));
            };
            let pattern = HostPattern { host, port };
            described.push_str(&format!("; {}:{}", pattern.host, pattern.port));
            allowed.push(pattern);
        }
        Ok(Self { allowed, described })
    }

    /// Checks the request's single `Host`, and that an absolute-form target agrees with it.
    /// Returns the normalised host and port (text is only built for a rejection).
    pub(crate) fn check(&self, req: &Parts) -> Result<(HostName, u16), Rejection> {
        let mut values = req.headers.get_all(HOST).iter();
        let (raw, extra) = (values.next(), values.next());
        let raw = match (raw, extra) {
            (Some(raw), None) => raw.as_bytes(),
            (None, _) => {
                return Err(reject(
                    String::new(),
                    "a request must carry exactly one Host header (got none)".to_owned(),
                ));
            }
            (Some(first), Some(second)) => {
                let value = sanitize(&[first.as_bytes(), b", ", second.as_bytes()].concat());
                return Err(reject(
                    value,
                    "a request must carry exactly one Host header (got several)".to_owned(),
                ));
            }
        };
        let (host, port) = parse_request_host("Host", raw)?;
        let normalised = || format!("{host}:{port}");
        if let Some(authority) = req.uri.authority() {
            // RFC 9112 lets the target override Host; demand agreement instead of picking one.
            let scheme = req.uri.scheme_str().unwrap_or("http");
            if !scheme.eq_ignore_ascii_case("http") {
                let value = sanitize(req.uri.to_string().as_bytes());
                let rule = format!(
                    "request target `{value}` must use http:// (the gateway serves plain HTTP)"
                );
                return Err(reject(value, rule));
            }
            let target = parse_request_host("request target", authority.as_str().as_bytes())?;
            if target.0 != host || target.1 != port {
                return Err(reject(
                    sanitize(normalised().as_bytes()),
                    format!(
                        "request target authority `{}:{}` does not match Host `{}`",
                        target.0,
                        target.1,
                        normalised()
                    ),
                ));
            }
        }
        let pattern = HostPattern { host, port };
        if self.allowed.contains(&pattern) {
            return Ok((pattern.host, pattern.port));
        }
        let normalised = format!("{}:{}", pattern.host, pattern.port);
        let rule = format!(
            "Host `{normalised}` is not an allowed host (allowed: {})",
            self.described
        );
        // Normalised text is plain ASCII, but a 253-byte name still needs the length cap.
        Err(reject(sanitize(normalised.as_bytes()), rule))
    }
}

/// A `Host` value: at most [`MAX_HOST_LEN`] bytes; no port means 80, the HTTP default.
fn parse_request_host(what: &str, raw: &[u8]) -> Result<(HostName, u16), Rejection> {
    let malformed = |why: &str| {
        let value = sanitize(raw);
        let rule = format!("{what} `{value}` is malformed: {why}");
        reject(value, rule)
    };
    if raw.len() > MAX_HOST_LEN {
        return Err(malformed("it is longer than 255 bytes"));
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| malformed("it contains whitespace, control or non-ASCII characters"))?;
    match parse_authority(text, 80, false).map_err(malformed)? {
        (host, Port::Exact(port)) => Ok((host, port)),
        (_, Port::Any) => Err(malformed("wildcards are not allowed")),
    }
}

fn reject(value: String, rule: String) -> Rejection {
    Rejection {
        reason: Reason::Host,
        rule,
        value,
    }
}
