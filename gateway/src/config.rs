//! Settings for `mcp-gateway run`, layered: flags win over `MCP_GATEWAY_*` environment
//! variables, which win over the TOML file given with `--config`, which wins over defaults.
//!
//! Bad configuration fails at start with the key and the reason; nothing is silently ignored.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, ValueEnum};
use hyper::Uri;
use serde::Deserialize;

use crate::{
    cli::kernel::EbpfArgs,
    policy::{Mode, Policy, PolicyError, PolicySettings},
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
const MIB: u64 = 1024 * 1024;

/// Flags of `mcp-gateway run`. Every setting can also come from the environment or the file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// URL of the MCP server to protect, e.g. http://127.0.0.1:8000/mcp. Request paths pass
    /// through unchanged.
    #[arg(long, env = "MCP_GATEWAY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8787]. Loopback only unless
    /// --allow-non-loopback and --auth-token-file are both given.
    #[arg(long, env = "MCP_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Policy mode [default: permissive].
    #[arg(long, id = "policy_mode", env = "MCP_GATEWAY_MODE")]
    pub mode: Option<Mode>,
    /// Allowed browser origin (repeatable): `scheme://host[:port]` or `scheme://host:*`.
    #[arg(
        long = "allow-origin",
        env = "MCP_GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Extra allowed Host value (repeatable), `name[:port]`, beyond the loopback names.
    #[arg(
        long = "allow-host",
        env = "MCP_GATEWAY_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,
    /// Permit a non-loopback listen address (also needs --auth-token-file).
    #[arg(
        long,
        env = "MCP_GATEWAY_ALLOW_NON_LOOPBACK",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_non_loopback: Option<bool>,
    /// File holding a bearer token that every request must present.
    #[arg(long, env = "MCP_GATEWAY_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes [default: 4 MiB]; larger gets 413.
    #[arg(long, env = "MCP_GATEWAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Seconds a client may take to send its request headers [default: 10].
    #[arg(long, env = "MCP_GATEWAY_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<f64>,
    /// Largest request head in bytes [default: 16384].
    #[arg(long, env = "MCP_GATEWAY_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most request headers [default: 64].
    #[arg(long, env = "MCP_GATEWAY_MAX_HEADERS")]
    pub max_headers: Option<usize>,
    /// Most client connections open at once [default: 512].
    #[arg(long, env = "MCP_GATEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds to wait for the upstream to accept a connection [default: 5]; then 504.
    #[arg(long, env = "MCP_GATEWAY_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<f64>,
    /// Seconds in-flight requests get to finish on SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "MCP_GATEWAY_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<f64>,
    /// Log format [default: text].
    #[arg(long, env = "MCP_GATEWAY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Address of the Prometheus `/metrics` listener, or `off` [default: 127.0.0.1:9464]. A
    /// listener of its own, never the proxy's.
    #[arg(long, env = "MCP_GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<crate::metrics::Listen>,
    /// Most (reason, origin) series in mcp_gateway_rejections_total; further origins count
    /// as origin="other" [default: 200].
    #[arg(long, env = "MCP_GATEWAY_METRICS_LABEL_BUDGET")]
    pub metrics_label_budget: Option<usize>,
    /// TOML configuration file (keys as in `mcp-gateway.example.toml`).
    #[arg(long, env = "MCP_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub ebpf: EbpfArgs,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    upstream: Option<String>,
    listen: Option<SocketAddr>,
    mode: Option<Mode>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    allow_non_loopback: Option<bool>,
    auth_token_file: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    header_timeout_secs: Option<f64>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_connections: Option<usize>,
    connect_timeout_secs: Option<f64>,
    shutdown_grace_secs: Option<f64>,
    log_format: Option<LogFormat>,
    metrics_listen: Option<crate::metrics::Listen>,
    metrics_label_budget: Option<usize>,
}

/// Configuration errors, each naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "upstream: missing; pass --upstream http://127.0.0.1:PORT/mcp (the MCP server to protect)"
    )]
    MissingUpstream,
    #[error("upstream: `{value}` is not usable: {why}")]
    Upstream { value: String, why: String },
    #[error(
        "listen: {addr} is not a loopback address. Anything on the network could reach it; bind 127.0.0.1, \
         or pass --allow-non-loopback together with --auth-token-file"
    )]
    NonLoopback { addr: SocketAddr },
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("auth_token_file: reading {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    pub upstream: Upstream,
    pub listen: SocketAddr,
    /// Validated; compiled again by `run` once the real listen port is known (`--listen :0`).
    pub policy: PolicySettings,
    pub auth_token: Option<Token>,
    pub limits: Limits,
    pub log_format: LogFormat,
    pub metrics: MetricsSettings,
}

/// The `/metrics` listener.
#[derive(Clone, Debug)]
pub struct MetricsSettings {
    /// `None`: off.
    pub listen: Option<SocketAddr>,
    /// Whether the address was configured (a busy default only warns; a chosen one must bind).
    pub explicit: bool,
    pub label_budget: usize,
}

/// The upstream MCP server.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host:port`, also sent as the upstream `Host`.
    pub authority: String,
    /// The upstream's port: protected by the kernel layer.
    pub port: u16,
    /// The MCP endpoint path from the upstream URL (`/mcp`). Paths pass through unchanged; this
    /// one is shown in the start-up message as the URL clients should use.
    pub path: String,
}

/// A bearer token. Its Debug output never shows the secret.
#[derive(Clone)]
pub struct Token(pub Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl RunArgs {
    /// Merges flags/env with the file and defaults, and validates the result.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        // `a.or(b)` everywhere: flags/env (already merged by clap) over the file.
        let upstream = self
            .upstream
            .clone()
            .or(file.upstream)
            .ok_or(ConfigError::MissingUpstream)?;
        let upstream = parse_upstream(&upstream)?;
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let allow_non_loopback = self
            .allow_non_loopback
            .or(file.allow_non_loopback)
            .unwrap_or(false);
        let token_file = self.auth_token_file.clone().or(file.auth_token_file);
        let auth_token = token_file.map(|path| read_token(&path)).transpose()?;
        let exposed_ok = allow_non_loopback && auth_token.is_some();
        if !(listen.ip().is_loopback() || exposed_ok) {
            return Err(ConfigError::NonLoopback { addr: listen });
        }
        let policy = PolicySettings {
            mode: self.mode.or(file.mode).unwrap_or_default(),
            listen,
            allowed_hosts: self
                .allowed_hosts
                .clone()
                .or(file.allowed_hosts)
                .unwrap_or_default(),
            allowed_origins: self
                .allowed_origins
                .clone()
                .or(file.allowed_origins)
                .unwrap_or_default(),
        };
        Policy::new(&policy)?;
        let limits = Limits {
            max_body_bytes: positive(
                "max_body_bytes",
                self.max_body_bytes.or(file.max_body_bytes),
                4 * MIB,
            )?,
            header_timeout: secs(
                "header_timeout_secs",
                self.header_timeout_secs.or(file.header_timeout_secs),
                10.0,
            )?,
            max_header_bytes: positive(
                "max_header_bytes",
                self.max_header_bytes.or(file.max_header_bytes),
                16 * 1024,
            )?,
            max_headers: positive("max_headers", self.max_headers.or(file.max_headers), 64)?,
            max_connections: positive(
                "max_connections",
                self.max_connections.or(file.max_connections),
                512,
            )?,
            connect_timeout: secs(
                "connect_timeout_secs",
                self.connect_timeout_secs.or(file.connect_timeout_secs),
                5.0,
            )?,
            shutdown_grace: secs(
                "shutdown_grace_secs",
                self.shutdown_grace_secs.or(file.shutdown_grace_secs),
                10.0,
            )?,
        };
        // hyper's smallest read buffer.
        if limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid {
                key: "max_header_bytes",
                why: "must be at least 8192".into(),
            });
        }
        let metrics = metrics_settings(
            listen,
            self.metrics_listen.or(file.metrics_listen),
            self.metrics_label_budget.or(file.metrics_label_budget),
        )?;
        Ok(Settings {
            upstream,
            listen,
            policy,
            auth_token,
            limits,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            metrics,
        })
    }
}

fn metrics_settings(
    proxy: SocketAddr,
    listen: Option<crate::metrics::Listen>,
    budget: Option<usize>,
) -> Result<MetricsSettings, ConfigError> {
    use crate::metrics::{DEFAULT_LABEL_BUDGET, DEFAULT_LISTEN, Listen, MAX_LABEL_BUDGET};
    let explicit = listen.is_some();
    let listen = match listen {
        Some(Listen::Off) => None,
        Some(Listen::On(addr)) => Some(addr),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    if let Some(addr) = listen {
        let overlaps = addr.ip() == proxy.ip() || addr.ip().is_unspecified();
        if addr.port() != 0 && addr.port() == proxy.port() && overlaps {
            return Err(ConfigError::Invalid {
                key: "metrics_listen",
                why: format!(
                    "{addr} is the proxy's own address; metrics need a listener of their own                      (e.g. {DEFAULT_LISTEN}) or `off`"
                ),
            });
        }
    }
    let label_budget = budget.unwrap_or(DEFAULT_LABEL_BUDGET);
    if label_budget > MAX_LABEL_BUDGET {
        return Err(ConfigError::Invalid {
            key: "metrics_label_budget",
            why: format!("{label_budget} is more than {MAX_LABEL_BUDGET} series"),
        });
    }
    Ok(MetricsSettings {
        listen,
        explicit,
        label_budget,
    })
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn parse_upstream(value: &str) -> Result<Upstream, ConfigError> {
    let bad = |why: &str| ConfigError::Upstream {
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let uri: Uri = value
        .parse()
        .map_err(|_| bad("not a URL; expected http://HOST:PORT/PATH"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// upstreams are supported (the upstream is local)",
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
        authority: format!("{}:{port}", authority.host()),
        port,
        path: uri.path().to_owned(),
    })
}

fn read_token(path: &Path) -> Result<Token, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Token {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(ConfigError::Invalid {
            key: "auth_token_file",
            why: format!(
                "{} must hold one token with no spaces or control characters",
                path.display()
            ),
        });
    }
    Ok(Token(token.as_bytes().to_vec()))
}

fn positive<T: PartialOrd + Default + Copy>(
    key: &'static str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(default);
    if value <= T::default() {
        return Err(ConfigError::Invalid {
            key,
            why: "must be greater than zero".into(),
        });
    }
    Ok(value)
}

fn secs(key: &'static str, value: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ConfigError::Invalid {
            key,
            why: format!("{value} is not a positive number of seconds"),
        })
}
