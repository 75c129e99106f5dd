//! The Host/Origin policy: pure functions that decide whether a request may reach the upstream.
//!
//! CONTRACT STUB: the signatures below are what the proxy calls; the bodies are placeholders to
//! be replaced by the real policy (host.rs, origin.rs, cors.rs) with table tests.
pub mod cors;

use std::net::SocketAddr;

use http::request::Parts;

/// How much the policy trusts browsers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Loopback origins on any port, plus the configured ones.
    #[default]
    Permissive,
    /// Only the configured origins; cross-site fetch metadata is rejected even without Origin.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Human-readable rule that made the decision.
    pub rule: String,
    /// The normalised Origin or Host (sanitised and truncated when hostile), for logs and
    /// counters.
    pub value: String,
}

impl Rejection {
    /// The JSON-RPC error message sent to the client.
    pub fn message(&self) -> String {
        format!(
            "Forbidden: {} not allowed ({})",
            self.reason.as_str(),
            self.rule
        )
    }
}

/// An accepted request and the rule that accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub rule: String,
    /// The request's Origin exactly as sent, when present and allowed (echoed by CORS).
    pub origin: Option<String>,
}

/// The compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    settings: PolicySettings,
}

impl Policy {
    pub fn new(settings: &PolicySettings) -> Result<Self, PolicyError> {
        Ok(Self {
            settings: settings.clone(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// Decides a request from its head alone, before anything is sent upstream.
    pub fn verify(&self, req: &Parts) -> Result<Accepted, Rejection> {
        let _ = req;
        Ok(Accepted {
            rule: "stub".into(),
            origin: None,
        })
    }
}
