//! The `Origin` header and the allowed-origin patterns.
//!
//! An Origin is `scheme://host[:port]` with scheme http or https and the host grammar of
//! [`super::host`]. Default ports are normalised (`http://localhost:80` is `http://localhost`),
//! scheme and name compare case-insensitively. A pattern is the same, or ends in `:*` to allow
//! any port.
use std::fmt;

use http::{header::ORIGIN, request::Parts};

use super::{
    Mode, PolicyError, Reason, Rejection,
    host::{HostName, MAX_HOST_LEN, Port, parse_authority},
    sanitize::sanitize,
};

/// Longest Origin accepted, in bytes: `https://` plus the longest accepted Host.
pub const MAX_ORIGIN_LEN: usize = "https://".len() + MAX_HOST_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// A normalised Origin (`port` is `Exact`) or pattern (`port` may be `Any`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parsed {
    scheme: Scheme,
    host: HostName,
    port: Port,
}

impl Parsed {
    fn matches(&self, origin: &Self) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && (self.port == Port::Any || self.port == origin.port)
    }
}

impl fmt::Display for Parsed {
    /// Serialised as browsers do: the default port is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        match self.port {
            Port::Any => f.write_str(":*"),
            Port::Exact(port) if port == self.scheme.default_port() => Ok(()),
            Port::Exact(port) => write!(f, ":{port}"),
        }
    }
}

fn parse(text: &str, allow_port_wildcard: bool) -> Result<Parsed, &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.eq_ignore_ascii_case("null") {
        return Err(
            "`null` is the origin of sandboxed frames, file: and data: pages; never allowed",
        );
    }
    if text == "*" {
        return Err("a wildcard origin is not allowed; list each origin");
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it contains whitespace, control or non-ASCII characters");
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("it must look like scheme://host[:port]")?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err("the scheme must be http or https");
    };
    if rest.contains('/') {
        return Err("a path (even `/`) is not allowed");
    }
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed");
    }
    let (host, port) = parse_authority(rest, scheme.default_port(), allow_port_wildcard)?;
    Ok(Parsed { scheme, host, port })
}

/// How an allowed Origin matched: the normalised origin, and the configured pattern it
/// matched (`None`: a loopback origin in permissive mode). Displayed as the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Matched {
    origin: Parsed,
    pattern: Option<Parsed>,
}

impl fmt::Display for Matched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            None => write!(
                f,
                "Origin `{}` is a loopback origin (permissive mode)",
                self.origin
            ),
            Some(pattern) => write!(
                f,
                "Origin `{}` matches allowed origin `{pattern}`",
                self.origin
            ),
        }
    }
}

/// The allowed origins of one policy.
#[derive(Clone, Debug)]
pub(crate) struct AllowedOrigins {
    /// Permissive mode: loopback origins on any port.
    loopback: bool,
    configured: Vec<Parsed>,
    /// For rules: `loopback origins on any port, https://app.example.com`.
    described: String,
}

impl AllowedOrigins {
    pub(crate) fn new(mode: Mode, configured: &[String]) -> Result<Self, PolicyError> {
        let configured = configured
            .iter()
            .map(|value| {
                parse(value, true).map_err(|why| PolicyError::Origin {
                    value: value.clone(),
                    why: why.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let loopback = mode == Mode::Permissive;
        let mut described: Vec<String> = configured.iter().map(ToString::to_string).collect();
        if loopback {
            described.insert(0, "loopback origins on any port".to_owned());
        }
        let described = match described.is_empty() {
            true => "none configured (strict mode)".to_owned(),
            false => described.join(", "),
        };
        Ok(Self {
            loopback,
            configured,
            described,
        })
    }

    /// `Ok(None)` without Origin; `Ok(Some((origin as sent, what matched)))` when it is allowed.
    pub(crate) fn check(&self, req: &Parts) -> Result<Option<(String, Matched)>, Rejection> {
        let mut values = req.headers.get_all(ORIGIN).iter();
        let raw = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(raw), None) => raw.as_bytes(),
            (Some(first), Some(second)) => {
                let value = sanitize(&[first.as_bytes(), b", ", second.as_bytes()].concat());
                let rule = "a request may carry at most one Origin header (got several)";
                return Err(reject(value, rule.to_owned()));
            }
        };
        let malformed = |why: &str| {
            let value = sanitize(raw);
            let rule = format!("Origin `{value}` is malformed: {why}");
            reject(value, rule)
        };
        if raw.len() > MAX_ORIGIN_LEN {
            return Err(malformed("it is too long"));
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| malformed("it contains whitespace, control or non-ASCII characters"))?;
        let origin = parse(text, false).map_err(malformed)?;
        if self.loopback && HostName::loopback().contains(&origin.host) {
            let matched = Matched {
                origin,
                pattern: None,
            };
            return Ok(Some((text.to_owned(), matched)));
        }
        if let Some(pattern) = self.configured.iter().find(|p| p.matches(&origin)) {
            let matched = Matched {
                origin,
                pattern: Some(pattern.clone()),
            };
            return Ok(Some((text.to_owned(), matched)));
        }
        let rule = format!(
            "Origin `{origin}` is not an allowed origin (allowed: {})",
            self.described
        );
        Err(reject(sanitize(origin.to_string().as_bytes()), rule))
    }
}

fn reject(value: String, rule: String) -> Rejection {
    Rejection {
        reason: Reason::Origin,
        rule,
        value,
    }
}
