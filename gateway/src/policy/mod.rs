//! The Host/Origin policy: pure functions that decide whether a request may reach the upstream.
//!
//! Every request (any method, any path) is decided from its head alone, in this order, and the
//! first failing check names the rejection:
//!
//! 1. **Host** (`host.rs`): exactly one `Host`, well-formed, equal to an allowed `name:port`
//!    (`localhost`, `127.0.0.1`, `[::1]` on the listen port, plus `allowed_hosts`). A `Host`
//!    without a port means port 80. An absolute-form target must use `http://` and name the
//!    same authority as `Host`.
//! 2. **Origin** (`origin.rs`): absent is fine (non-browser clients); present must be a single
//!    well-formed `scheme://host[:port]` matching an allowed origin.
//! 3. **Fetch metadata** (strict mode only, and only for requests without Origin):
//!    `Sec-Fetch-Site` must be absent, `same-origin` or `none`. An Origin that matched a
//!    configured pattern already is the operator's explicit opt-in for that cross-site caller,
//!    so it is not second-guessed by `Sec-Fetch-Site: cross-site` (which every such call has).
pub mod cors;
mod host;
mod origin;
mod sanitize;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use http::{HeaderName, request::Parts};

pub use self::{
    host::MAX_HOST_LEN,
    origin::MAX_ORIGIN_LEN,
    sanitize::{MAX_VALUE_CHARS, sanitize},
};
use self::{
    host::{AllowedHosts, HostName},
    origin::{AllowedOrigins, Matched},
};

/// `Sec-Fetch-Site` (not among the `http` crate's constants).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// How much the policy trusts browsers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Loopback origins on any port, plus the configured ones.
    #[default]
    Permissive,
    /// Only the configured origins; a request without Origin is rejected when its fetch
    /// metadata says cross-site or same-site.
    Strict,
}

/// What the user configured.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    pub mode: Mode,
    /// The gateway's listen address: its port is the port allowed in `Host`.
    pub listen: SocketAddr,
    /// Extra allowed `Host` values (`name[:port]`), beyond the loopback defaults.
    pub allowed_hosts: Vec<String>,
    /// Allowed origin patterns: `scheme://host[:port]` or `scheme://host:*`.
    pub allowed_origins: Vec<String>,
}

/// Invalid settings, naming the bad key and why.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("allowed_origins: `{value}` is not a valid origin pattern: {why}")]
    Origin { value: String, why: String },
    #[error("allowed_hosts: `{value}` is not a valid host: {why}")]
    Host { value: String, why: String },
}

/// Why a request was rejected (also the `reason` label of the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Host,
    Origin,
    FetchMetadata,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Origin => "origin",
            Self::FetchMetadata => "fetch_metadata",
        }
    }
}

/// A rejected request: the reason, the rule that decided, and the offending value.
///
/// `rule` and `value` only ever hold sanitised text (see [`sanitize()`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Human-readable rule that made the decision.
    pub rule: String,
    /// The normalised Origin or Host (sanitised and truncated when hostile), for logs and
    /// counters; empty for a missing Host, the `Sec-Fetch-Site` value for fetch metadata.
    pub value: String,
}

impl Rejection {
    /// The JSON-RPC error message sent to the client: the reason only. A rebinding page reads
    /// this body (it is same-origin to the browser), so it must not reveal the allowed hosts
    /// and origins; the rule goes to the log and to `mcp-gateway check`.
    pub fn message(&self) -> String {
        format!("Forbidden: {} not allowed", self.reason.as_str())
    }
}

/// An accepted request: its Origin, and what accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The request's Origin exactly as sent, when present and allowed (echoed by CORS).
    pub origin: Option<String>,
    how: How,
}

/// What accepted a request (words only on demand: the request path never needs them).
#[derive(Clone, Debug, PartialEq, Eq)]
enum How {
    /// No decision recorded (built by [`Accepted::with_origin`]).
    Unexplained,
    Origin {
        host: (HostName, u16),
        origin: Matched,
    },
    NoOrigin {
        host: (HostName, u16),
        fetch: &'static str,
    },
}

impl Accepted {
    /// The rule that accepted the request, in words: for logs and `mcp-gateway check`.
    pub fn rule(&self) -> String {
        match &self.how {
            How::Unexplained => String::new(),
            How::Origin { host, origin } => {
                format!("Host `{}:{}` is allowed; {origin}", host.0, host.1)
            }
            How::NoOrigin { host, fetch } => format!(
                "Host `{}:{}` is allowed and there is no Origin{fetch}",
                host.0, host.1
            ),
        }
    }

    /// An acceptance of `origin` without a recorded rule (what CORS needs, for tests).
    pub fn with_origin(origin: Option<String>) -> Self {
        Self {
            origin,
            how: How::Unexplained,
        }
    }
}

/// The compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    mode: Mode,
    hosts: AllowedHosts,
    origins: AllowedOrigins,
}

impl Policy {
    /// Validates the settings: wildcard or malformed hosts and origin patterns are errors.
    pub fn new(settings: &PolicySettings) -> Result<Self, PolicyError> {
        Ok(Self {
            mode: settings.mode,
            hosts: AllowedHosts::new(settings.listen.port(), &settings.allowed_hosts)?,
            origins: AllowedOrigins::new(settings.mode, &settings.allowed_origins)?,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decides a request from its head alone, before anything is sent upstream: Host, then
    /// Origin, then (strict mode, no Origin) fetch metadata.
    pub fn verify(&self, req: &Parts) -> Result<Accepted, Rejection> {
        let host = self.hosts.check(req)?;
        if let Some((origin, matched)) = self.origins.check(req)? {
            return Ok(Accepted {
                origin: Some(origin),
                how: How::Origin {
                    host,
                    origin: matched,
                },
            });
        }
        let fetch = match self.mode {
            Mode::Permissive => "",
            Mode::Strict => check_fetch_metadata(req)?,
        };
        Ok(Accepted {
            origin: None,
            how: How::NoOrigin { host, fetch },
        })
    }
}

/// Strict mode without Origin: only `Sec-Fetch-Site` absent, `same-origin` or `none` pass.
/// Anything else, including an unknown value or a repeated header, fails closed.
fn check_fetch_metadata(req: &Parts) -> Result<&'static str, Rejection> {
    let mut values = req.headers.get_all(SEC_FETCH_SITE).iter();
    let (value, extra) = match (values.next(), values.next()) {
        (None, _) => return Ok(""),
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"same-origin") => {
            return Ok(" (Sec-Fetch-Site: same-origin)");
        }
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"none") => {
            return Ok(" (Sec-Fetch-Site: none)");
        }
        (Some(value), extra) => (value, extra),
    };
    let (value, rule) = match extra {
        Some(second) => (
            sanitize(&[value.as_bytes(), b", ", second.as_bytes()].concat()),
            "a request may carry at most one Sec-Fetch-Site header (got several)".to_owned(),
        ),
        None => {
            let value = sanitize(value.as_bytes());
            let rule = format!(
                "Sec-Fetch-Site `{value}` without an allowed Origin is refused in strict mode \
                 (only same-origin, none or no Sec-Fetch-Site)"
            );
            (value, rule)
        }
    };
    Err(Rejection {
        reason: Reason::FetchMetadata,
        rule,
        value,
    })
}
