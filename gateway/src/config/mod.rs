//! Settings for `mcp-gateway run`, layered. For a single server: flags win over `MCP_GATEWAY_*`
//! environment variables, which win over the TOML file given with `--config`, which wins over
//! defaults. A file with `[[server]]` tables describes several servers served by one process:
//! a key inside a server table wins for that server; flags, the environment and the file's top
//! level are defaults for every server, in that order.
//!
//! Bad configuration fails at start with the key and the reason; nothing is silently ignored.
pub mod access;
pub mod file;
pub mod kernel;
pub mod metrics;
pub mod summary;
pub mod upstream;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use serde::Deserialize;

pub use self::upstream::{Upstream, UpstreamAddr};
use self::{
    file::{FileConfig, ServerKeys},
    kernel::{BindPolicy, DEFAULT_PIN_DIR, EbpfArgs, EbpfMode},
};
use crate::{
    mcp::{McpPolicy, McpSettings},
    policy::{Policy, PolicyError, PolicySettings},
    ratelimit::Rate,
    source::SourceList,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The server name of a gateway configured without `[[server]]` tables or `--name`.
pub const DEFAULT_SERVER_NAME: &str = "default";
/// Longest server name (it is a log field and a metric label).
pub const MAX_SERVER_NAME: usize = gateway_common::SERVER_NAME_LEN;
const MIB: u64 = 1024 * 1024;

/// Flags of `mcp-gateway run`. Every setting can also come from the environment or the file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// URL of the MCP server to protect: http://127.0.0.1:8000/mcp, or a Unix socket
    /// unix:/run/mcp/server.sock[:/ENDPOINT] (endpoint /mcp by default). Request paths pass
    /// through unchanged.
    #[arg(long, env = "MCP_GATEWAY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8787]. Loopback only unless
    /// --allow-non-loopback, authentication and TLS (or --allow-plaintext) are all given.
    #[arg(long, env = "MCP_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Name of the server in logs and metrics [default: default].
    #[arg(long, env = "MCP_GATEWAY_NAME")]
    pub name: Option<String>,
    /// Name of this gateway instance in the kernel layer's shared registry; a restart with the
    /// same name takes its protection over [default: the listen addresses].
    #[arg(long, env = "MCP_GATEWAY_INSTANCE")]
    pub instance: Option<String>,
    /// Audit log of MCP calls: a file (JSON lines, reopened on SIGHUP) or `-` for stderr.
    #[arg(long, env = "MCP_GATEWAY_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "MCP_GATEWAY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Threads serving requests; 1 runs everything on one thread with no cross-thread
    /// scheduling (as an nginx worker does) [default: the CPUs this process may use].
    #[arg(long, env = "MCP_GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Address of the Prometheus `/metrics` listener, or `off` [default: 127.0.0.1:9464]. A
    /// listener of its own, never the proxy's.
    #[arg(long, env = "MCP_GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<metrics::Listen>,
    /// Most (reason, origin) series in mcp_gateway_rejections_total; further origins count
    /// as origin="other" [default: 200].
    #[arg(long, env = "MCP_GATEWAY_METRICS_LABEL_BUDGET")]
    pub metrics_label_budget: Option<usize>,
    /// Scan this host for MCP servers every DURATION (like `5m`; see docs/scan.md) and export
    /// mcp_gateway_scan_servers{verdict} [default: off].
    #[arg(long, env = "MCP_GATEWAY_SCAN_INTERVAL", value_name = "DURATION")]
    pub scan_interval: Option<String>,
    /// Seconds between lookups of the DNS names in egress rules, 5 to 60 [default: 30]. A
    /// name's previous addresses stay allowed until the next lookup after a change.
    #[arg(long, env = "MCP_GATEWAY_EGRESS_REFRESH_SECS")]
    pub egress_refresh_secs: Option<f64>,
    /// TOML configuration file (keys as in `mcp-gateway.example.toml`; `[[server]]` tables
    /// describe several servers).
    #[arg(long, env = "MCP_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration and every file it names (tokens, certificates), print what
    /// would run, and exit: nothing is bound, nothing touches the kernel.
    #[arg(long)]
    pub check_config: bool,
    /// The per-server keys (`file::ServerKeys`, declared once for flags, variables and file).
    #[command(flatten)]
    pub server: ServerKeys,
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

pub use crate::mcp::audit::AuditTarget;

/// Configuration errors, each naming the key. Each message is whole: the cause is part of it
/// (fields are named `cause`, not `source`, so an error chain never prints it twice).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {cause}")]
    ReadFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path}: {cause}")]
    ParseFile {
        path: PathBuf,
        cause: Box<toml::de::Error>,
    },
    #[error(
        "upstream: missing; pass --upstream http://127.0.0.1:PORT/mcp (the MCP server to protect)"
    )]
    MissingUpstream,
    #[error("upstream: `{value}` is not usable: {why}")]
    Upstream { value: String, why: String },
    #[error(
        "listen: {addr} is not a loopback address: anything on the network could reach it. Bind \
         127.0.0.1, or add {missing}"
    )]
    NonLoopback { addr: SocketAddr, missing: String },
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An error inside one `[[server]]` table.
    #[error("server `{server}` ([[server]] table {index}): {cause}")]
    Server {
        server: String,
        index: usize,
        cause: Box<ConfigError>,
    },
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    /// `--instance`; `None`: derived from the listen addresses once bound.
    pub instance: Option<String>,
    /// At least one; names and listen addresses are unique.
    pub servers: Vec<ServerSettings>,
    pub log_format: LogFormat,
    /// Request-serving threads.
    pub workers: usize,
    pub metrics: MetricsSettings,
    pub kernel: KernelSettings,
    pub audit_log: Option<AuditTarget>,
    /// `None`: no background scan.
    pub scan_interval: Option<Duration>,
    /// How often egress rules' names are looked up again.
    pub egress_refresh: Duration,
}

/// One MCP server behind the gateway, with its own policy.
#[derive(Debug)]
pub struct ServerSettings {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    /// Validated; compiled again by `run` once the real listen port is known (`--listen :0`).
    pub policy: PolicySettings,
    /// Bearer tokens: the file, and what it held at start.
    pub credentials: Option<access::CredentialsFile>,
    /// HTTPS: the files, and what they held at start.
    pub tls: Option<access::TlsConfig>,
    /// Plain HTTP on a non-loopback address (`allow_plaintext`).
    pub plaintext_beyond_loopback: bool,
    /// Forward the browser's Origin unchanged (`pass_origin`), not the upstream's own.
    pub pass_origin: bool,
    pub limits: Limits,
    pub exclusive_upstream: bool,
    pub allow_cgroups: Vec<PathBuf>,
    pub mcp: McpSettings,
    /// Who may reach a non-loopback listener (empty: anyone).
    pub sources: SourceList,
    pub rate: Option<Rate>,
    /// What the server may reach, when it is confined.
    pub egress: Option<EgressSettings>,
    /// Set when the gateway starts the server itself (`command`).
    pub supervised: Option<Supervised>,
}

/// A confined server's egress allowlist.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressSettings {
    pub rules: Vec<crate::egress::Rule>,
    /// Allow /etc/resolv.conf's resolvers on port 53.
    pub dns: bool,
    /// The server's cgroup (checked at start: it is a property of the running host); `None`
    /// for a server the gateway starts, in the cgroup it makes for it.
    pub cgroup: Option<PathBuf>,
}

/// The default, shortest and longest time between lookups of egress names.
pub const EGRESS_REFRESH: (Duration, Duration, Duration) = (
    Duration::from_secs(30),
    Duration::from_secs(5),
    Duration::from_secs(60),
);

fn egress_refresh(secs: Option<f64>) -> Result<Duration, ConfigError> {
    let (default, min, max) = EGRESS_REFRESH;
    let Some(secs) = secs else {
        return Ok(default);
    };
    if !(min.as_secs_f64()..=max.as_secs_f64()).contains(&secs) {
        return Err(ConfigError::Invalid {
            key: "egress_refresh_secs",
            why: format!(
                "must be {} to {} seconds: often enough to follow a changing answer, rarely \
                 enough not to load the resolver",
                min.as_secs(),
                max.as_secs()
            ),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The egress settings of one server's keys; `supervised` when the gateway starts the server
/// (its processes are then in a cgroup the gateway makes).
fn egress(keys: &ServerKeys, supervised: bool) -> Result<Option<EgressSettings>, ConfigError> {
    let rules = keys
        .egress
        .as_deref()
        .map(|entries| {
            entries
                .iter()
                .map(|e| crate::egress::Rule::parse(e))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|why| ConfigError::Invalid { key: "egress", why })?;
    let dns = keys.egress_dns.unwrap_or(false);
    let cgroup = keys.egress_cgroup.clone();
    if supervised && cgroup.is_some() {
        return Err(ConfigError::Invalid {
            key: "cgroup",
            why: "a server the gateway starts (`command`) runs in a cgroup the gateway makes \
                  for it; remove `cgroup`"
                .into(),
        });
    }
    if rules.is_none() && !dns {
        if cgroup.is_some() {
            return Err(ConfigError::Invalid {
                key: "cgroup",
                why: "is set without egress rules; list what the server may reach \
                      (egress = [\"api.example.com:443\"]), or egress = [] to refuse \
                      everything"
                    .into(),
            });
        }
        return Ok(None);
    }
    if cgroup.is_none() && !supervised {
        return Err(ConfigError::Invalid {
            key: if rules.is_none() {
                "egress_dns"
            } else {
                "egress"
            },
            why: "needs the server's cgroup (`cgroup` in its [[server]] table, or \
                  --egress-cgroup): the gateway does not start this server, so it must be told \
                  which processes are the server, for example \
                  cgroup = \"system.slice/mcp-weather.service\""
                .into(),
        });
    }
    Ok(Some(EgressSettings {
        rules: rules.unwrap_or_default(),
        dns,
        cgroup,
    }))
}

/// The kernel layer of the whole process (the union of its servers' ports).
#[derive(Clone, Debug)]
pub struct KernelSettings {
    pub mode: EbpfMode,
    /// `None`: the cgroup-v2 root.
    pub cgroup: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub bind_policy: BindPolicy,
    pub protect_ports: Vec<u16>,
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

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    /// From forwarding a request to its response head.
    pub response_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// The defaults of every limit: the one place they are written (the configuration reference
/// and the tests' harness read them from here).
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * MIB,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 512,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl RunArgs {
    /// Merges flags/env with the file and defaults, and validates the result.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => file::load(path)?,
            None => FileConfig::default(),
        };
        // The per-server keys set by flags or the environment.
        let flags = self.server.clone();
        let servers = if file.server.is_empty() {
            // `a.or(b)` everywhere: flags/env (already merged by clap) over the file.
            let upstream = self
                .upstream
                .clone()
                .or(file.upstream.clone())
                .ok_or(ConfigError::MissingUpstream)?;
            let listen = self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
            let name = self
                .name
                .clone()
                .or(file.name.clone())
                .unwrap_or_else(|| DEFAULT_SERVER_NAME.to_owned());
            vec![server(name, listen, &upstream, flags.or(file.keys()))?]
        } else {
            self.servers(&file, flags)?
        };
        let instance = self.instance.clone().or(file.instance.clone());
        if let Some(name) = &instance {
            check_instance_name(name)?;
        }
        let metrics = metrics_settings(
            &servers,
            self.metrics_listen.or(file.metrics_listen),
            self.metrics_label_budget.or(file.metrics_label_budget),
        )?;
        let kernel = self.kernel(&file, &servers)?;
        let audit_log = self
            .audit_log
            .clone()
            .or(file.audit_log.clone())
            .map(|t| audit_target(&t))
            .transpose()?;
        let scan_interval = scan_interval(
            self.scan_interval
                .as_deref()
                .or(file.scan_interval.as_deref()),
        )?;
        let egress_refresh = egress_refresh(self.egress_refresh_secs.or(file.egress_refresh_secs))?;
        Ok(Settings {
            scan_interval,
            egress_refresh,
            instance,
            servers,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            workers: workers(self.workers.or(file.workers))?,
            metrics,
            kernel,
            audit_log,
        })
    }

    /// The `[[server]]` tables, each over the flags and the top level.
    fn servers(
        &self,
        file: &FileConfig,
        flags: ServerKeys,
    ) -> Result<Vec<ServerSettings>, ConfigError> {
        for (set, key) in [
            (
                self.upstream.is_some() || file.upstream.is_some(),
                "upstream",
            ),
            (self.listen.is_some() || file.listen.is_some(), "listen"),
            (self.name.is_some() || file.name.is_some(), "name"),
        ] {
            if set {
                return Err(ConfigError::Invalid {
                    key,
                    why: "the config file has [[server]] tables: set it in each table, not with \
                          a flag, an MCP_GATEWAY_* variable or a top-level key"
                        .into(),
                });
            }
        }
        let defaults = flags.or(file.keys());
        let mut servers: Vec<ServerSettings> = Vec::with_capacity(file.server.len());
        for (i, table) in file.server.iter().enumerate() {
            let index = i + 1;
            let in_table = |source: ConfigError| ConfigError::Server {
                server: table.name.clone().unwrap_or_else(|| "?".into()),
                index,
                cause: Box::new(source),
            };
            let missing = |key: &'static str, example: &str| {
                in_table(ConfigError::Invalid {
                    key,
                    why: format!("missing; add {key} = {example} to the table"),
                })
            };
            let name = table
                .name
                .clone()
                .ok_or_else(|| missing("name", "\"weather\""))?;
            let listen = table
                .listen
                .ok_or_else(|| missing("listen", "\"127.0.0.1:8787\""))?;
            let upstream = table.upstream.as_deref().ok_or_else(|| {
                missing(
                    "upstream",
                    "\"http://127.0.0.1:8000/mcp\" (or \"unix:/run/mcp/NAME.sock\")",
                )
            })?;
            let keys = table.keys().or(defaults.clone());
            let supervised = supervised(table).map_err(in_table)?;
            let mut settings =
                server_with(name.clone(), listen, upstream, keys, supervised.is_some())
                    .map_err(in_table)?;
            settings.supervised = supervised;
            if let Some(other) = servers.iter().find(|s| s.name == name) {
                return Err(in_table(ConfigError::Invalid {
                    key: "name",
                    why: format!(
                        "`{name}` also names [[server]] table {}; give each server its own name",
                        servers
                            .iter()
                            .position(|s| s.name == other.name)
                            .unwrap_or(0)
                            + 1
                    ),
                }));
            }
            if let Some(other) = servers.iter().find(|s| s.listen == listen) {
                return Err(in_table(ConfigError::Invalid {
                    key: "listen",
                    why: format!(
                        "{listen} is also the listen address of server `{}`; give each server \
                         its own address",
                        other.name
                    ),
                }));
            }
            servers.push(settings);
        }
        if servers.len() > gateway_common::MAX_INSTANCE_SERVERS {
            return Err(ConfigError::Invalid {
                key: "server",
                why: format!(
                    "{} servers; one gateway serves at most {}: run another instance",
                    servers.len(),
                    gateway_common::MAX_INSTANCE_SERVERS
                ),
            });
        }
        Ok(servers)
    }

    fn kernel(
        &self,
        file: &FileConfig,
        servers: &[ServerSettings],
    ) -> Result<KernelSettings, ConfigError> {
        for s in servers.iter().filter(|s| s.exclusive_upstream) {
            if s.upstream.port().is_none() {
                return Err(ConfigError::Invalid {
                    key: "exclusive_upstream",
                    why: format!(
                        "server `{}` has a Unix-socket upstream: there is no port to reserve; \
                         the socket's file permissions decide who may connect",
                        s.name
                    ),
                });
            }
        }
        Ok(kernel_settings(&self.ebpf, file))
    }
}

/// The kernel layer's settings: flags (and the environment) over the file's keys.
pub fn kernel_settings(e: &EbpfArgs, file: &FileConfig) -> KernelSettings {
    KernelSettings {
        mode: e.mode.or(file.ebpf).unwrap_or_default(),
        cgroup: e.cgroup.clone().or(file.cgroup.clone()),
        pin_dir: e
            .pin_dir
            .clone()
            .or(file.pin_dir.clone())
            .unwrap_or_else(|| DEFAULT_PIN_DIR.into()),
        bind_policy: e.bind_policy.or(file.bind_policy).unwrap_or_default(),
        protect_ports: e
            .protect_ports
            .clone()
            .or(file.protect_ports.clone())
            .unwrap_or_default(),
    }
}

/// One server from its name, listen address, upstream and merged per-server keys.
fn server(
    name: String,
    listen: SocketAddr,
    upstream: &str,
    keys: ServerKeys,
) -> Result<ServerSettings, ConfigError> {
    server_with(name, listen, upstream, keys, false)
}

/// One server; `supervised` when the gateway starts it (`command`).
fn server_with(
    name: String,
    listen: SocketAddr,
    upstream: &str,
    keys: ServerKeys,
    supervised: bool,
) -> Result<ServerSettings, ConfigError> {
    check_server_name(&name)?;
    let upstream = upstream::parse(upstream)?;
    let egress = egress(&keys, supervised)?;
    let access = access::resolve(listen, &keys)?;
    let policy = PolicySettings {
        mode: keys.mode.unwrap_or_default(),
        listen,
        allowed_hosts: keys.allowed_hosts.unwrap_or_default(),
        allowed_origins: keys.allowed_origins.unwrap_or_default(),
    };
    Policy::new(&policy)?;
    let d = Limits::default();
    let limits = Limits {
        max_body_bytes: positive("max_body_bytes", keys.max_body_bytes, d.max_body_bytes)?,
        header_timeout: secs(
            "header_timeout_secs",
            keys.header_timeout_secs,
            d.header_timeout,
        )?,
        max_header_bytes: positive(
            "max_header_bytes",
            keys.max_header_bytes,
            d.max_header_bytes,
        )?,
        max_headers: positive("max_headers", keys.max_headers, d.max_headers)?,
        max_connections: positive("max_connections", keys.max_connections, d.max_connections)?,
        connect_timeout: secs(
            "connect_timeout_secs",
            keys.connect_timeout_secs,
            d.connect_timeout,
        )?,
        response_timeout: secs(
            "response_timeout_secs",
            keys.response_timeout_secs,
            d.response_timeout,
        )?,
        shutdown_grace: secs(
            "shutdown_grace_secs",
            keys.shutdown_grace_secs,
            d.shutdown_grace,
        )?,
    };
    // hyper's smallest read buffer.
    if limits.max_header_bytes < 8192 {
        return Err(ConfigError::Invalid {
            key: "max_header_bytes",
            why: "must be at least 8192".into(),
        });
    }
    let mcp = McpSettings {
        allowed_tools: keys.allowed_tools.unwrap_or_default(),
        denied_tools: keys.denied_tools.unwrap_or_default(),
        allowed_methods: keys.allowed_methods.unwrap_or_default(),
    };
    McpPolicy::new(&mcp).map_err(|e| ConfigError::Invalid {
        key: e.key,
        why: e.why,
    })?;
    let sources = SourceList::parse(&keys.allow_sources.unwrap_or_default()).map_err(|why| {
        ConfigError::Invalid {
            key: "allow_sources",
            why,
        }
    })?;
    let rate = match (keys.rate_limit, keys.rate_burst) {
        (_, Some(0)) => {
            return Err(ConfigError::Invalid {
                key: "rate_burst",
                why: "must be at least 1: it is how many requests a client may send at once".into(),
            });
        }
        (Some(limit), burst) => {
            Some(
                Rate::parse(&limit, burst).map_err(|why| ConfigError::Invalid {
                    key: "rate_limit",
                    why,
                })?,
            )
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "rate_burst",
                why: "needs rate_limit (--rate-limit N/s)".into(),
            });
        }
        (None, None) => None,
    };
    Ok(ServerSettings {
        name,
        listen,
        upstream,
        policy,
        credentials: access.credentials,
        tls: access.tls,
        plaintext_beyond_loopback: access.plaintext_beyond_loopback,
        pass_origin: keys.pass_origin.unwrap_or(false),
        limits,
        exclusive_upstream: keys.exclusive_upstream.unwrap_or(false),
        allow_cgroups: keys.allow_cgroups.unwrap_or_default(),
        mcp,
        sources,
        rate,
        egress,
        supervised: None,
    })
}

/// The shortest `scan_interval`: a scan sends up to 8 requests to every listener.
pub const MIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// `scan_interval`: a duration like `5m`, at least [`MIN_SCAN_INTERVAL`]; `off` or none: no scan.
fn scan_interval(text: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = text.map(str::trim).filter(|t| *t != "off") else {
        return Ok(None);
    };
    let invalid = |why: String| ConfigError::Invalid {
        key: "scan_interval",
        why,
    };
    let every = humantime::parse_duration(text).map_err(|e| {
        invalid(format!(
            "`{text}`: {e}; give a duration like 5m or 30s, or off"
        ))
    })?;
    if every < MIN_SCAN_INTERVAL {
        return Err(invalid(format!(
            "`{text}` is shorter than {}s; scan less often",
            MIN_SCAN_INTERVAL.as_secs()
        )));
    }
    Ok(Some(every))
}

/// Server names are log fields and metric labels: short, and letters, digits, `.`, `_`, `-`.
fn check_server_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "name",
        why: format!(
            "`{name}`: use 1 to {MAX_SERVER_NAME} letters, digits, `.`, `_` or `-` (it names the \
             server in logs and metrics)"
        ),
    })
}

fn check_instance_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= gateway_common::INSTANCE_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "instance",
        why: format!(
            "`{name}`: use 1 to {} printable ASCII characters without spaces",
            gateway_common::INSTANCE_NAME_LEN
        ),
    })
}

/// The default instance name: the servers' listen addresses, which no two running gateways
/// share (a long list is shortened to its hash).
pub fn default_instance(listens: &[SocketAddr]) -> String {
    let joined = listens
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if joined.len() <= gateway_common::INSTANCE_NAME_LEN {
        return joined;
    }
    format!("listen-{:016x}", gateway_common::fnv1a(joined.as_bytes()))
}

fn audit_target(text: &str) -> Result<AuditTarget, ConfigError> {
    match text {
        "-" => Ok(AuditTarget::Stderr),
        "" => Err(ConfigError::Invalid {
            key: "audit_log",
            why: "empty; give a file path, or `-` for stderr".into(),
        }),
        path => Ok(AuditTarget::File(PathBuf::from(path))),
    }
}

fn metrics_settings(
    servers: &[ServerSettings],
    listen: Option<metrics::Listen>,
    budget: Option<usize>,
) -> Result<MetricsSettings, ConfigError> {
    use self::metrics::{DEFAULT_LABEL_BUDGET, DEFAULT_LISTEN, Listen, MAX_LABEL_BUDGET};
    let explicit = listen.is_some();
    let listen = match listen {
        Some(Listen::Off) => None,
        Some(Listen::On(addr)) => Some(addr),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    if let Some(addr) = listen {
        for proxy in servers.iter().map(|s| s.listen) {
            let overlaps = addr.ip() == proxy.ip() || addr.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == proxy.port() && overlaps {
                return Err(ConfigError::Invalid {
                    key: "metrics_listen",
                    why: format!(
                        "{addr} is a proxy's own address; metrics need a listener of their own \
                         (e.g. {DEFAULT_LISTEN}) or `off`"
                    ),
                });
            }
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

/// Request-serving threads: given, or one per CPU this process may run on.
fn workers(given: Option<usize>) -> Result<usize, ConfigError> {
    match given {
        Some(0) => Err(ConfigError::Invalid {
            key: "workers",
            why: "must be at least 1".into(),
        }),
        Some(n) if n > 1024 => Err(ConfigError::Invalid {
            key: "workers",
            why: format!("{n} threads is more than any host needs; at most 1024"),
        }),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
    }
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

fn secs(key: &'static str, value: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default.as_secs_f64());
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ConfigError::Invalid {
            key,
            why: format!("{value} is not a positive number of seconds"),
        })
}

/// A server the gateway starts, watches and stops (`command` in its table).
#[derive(Clone, Debug, PartialEq)]
pub struct Supervised {
    /// argv; `program` is `argv[0]` as found.
    pub argv: Vec<String>,
    pub program: PathBuf,
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub restart: crate::supervise::policy::Restart,
    pub sandbox: crate::supervise::sandbox::Mode,
    pub read_paths: Vec<PathBuf>,
    pub write_paths: Vec<PathBuf>,
    /// (uid, gid) it runs as; `None`: the gateway's own.
    pub ids: Option<(u32, u32)>,
    /// Its resource limits.
    pub limits: Vec<crate::supervise::limits::Limit>,
}

/// The `command` keys of a `[[server]]` table.
fn supervised(table: &file::ServerTable) -> Result<Option<Supervised>, ConfigError> {
    let Some(argv) = &table.command else {
        for (set, key) in [
            (table.transport.is_some(), "transport"),
            (table.env.is_some(), "env"),
            (table.cwd.is_some(), "cwd"),
            (table.restart.is_some(), "restart"),
            (table.sandbox.is_some(), "sandbox"),
            (table.read_paths.is_some(), "read_paths"),
            (table.write_paths.is_some(), "write_paths"),
            (table.user.is_some(), "user"),
            (table.group.is_some(), "group"),
            (table.memory_max.is_some(), "memory_max"),
            (table.cpu_max.is_some(), "cpu_max"),
            (table.pids_max.is_some(), "pids_max"),
        ] {
            if set {
                return Err(ConfigError::Invalid {
                    key,
                    why: "applies to a server the gateway starts: set `command` too".into(),
                });
            }
        }
        return Ok(None);
    };
    let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
    match table.transport.as_deref() {
        None | Some("http") => {}
        Some("stdio") => {
            return Err(invalid(
                "transport",
                "`stdio` is not supported yet: run the server with a Streamable HTTP transport \
                 listening on `upstream` (transport = \"http\")"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "transport",
                format!("`{other}`: give `http` (the command listens on `upstream`)"),
            ));
        }
    }
    let Some(first) = argv.first().filter(|p| !p.is_empty()) else {
        return Err(invalid(
            "command",
            "is empty: give the program and its arguments, like [\"uvx\", \"mcp-server-fetch\"]"
                .into(),
        ));
    };
    let env = table.env.clone().unwrap_or_default();
    for name in env.keys() {
        crate::supervise::env::check_name(name).map_err(|why| invalid("env", why))?;
    }
    let path = env
        .get("PATH")
        .map_or(crate::supervise::env::PATH, String::as_str);
    let program = crate::supervise::env::find_program(first, path).ok_or_else(|| {
        invalid(
            "command",
            format!(
                "`{first}` is not an executable file{}; give its absolute path, or install it",
                if first.contains('/') {
                    String::new()
                } else {
                    format!(" on the server's PATH ({path})")
                }
            ),
        )
    })?;
    if let Some(cwd) = &table.cwd
        && !cwd.is_dir()
    {
        return Err(invalid(
            "cwd",
            format!("{} is not a directory", cwd.display()),
        ));
    }
    for (key, paths) in [
        ("read_paths", &table.read_paths),
        ("write_paths", &table.write_paths),
    ] {
        if let Some(bad) = paths.iter().flatten().find(|p| !p.is_absolute()) {
            return Err(invalid(
                key,
                format!("{} is not an absolute path", bad.display()),
            ));
        }
    }
    let user = match table.user.as_deref() {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => crate::sys::user_by_name(name).ok_or_else(|| {
                invalid(
                    "user",
                    format!("`{name}` is not a user of this host (getent passwd {name})"),
                )
            })?,
        }),
    };
    let group = match table.group.as_deref() {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => crate::sys::group_by_name(name).ok_or_else(|| {
                invalid(
                    "group",
                    format!("`{name}` is not a group of this host (getent group {name})"),
                )
            })?,
        }),
    };
    let ids = match (user, group) {
        (Some((uid, primary)), group) => Some((uid, group.unwrap_or(primary))),
        (None, Some(gid)) => Some((crate::sys::ids().0, gid)),
        (None, None) => None,
    };
    let mut limits = Vec::new();
    if let Some(text) = &table.memory_max {
        limits.push(
            crate::supervise::limits::memory_max(text).map_err(|why| invalid("memory_max", why))?,
        );
    }
    if let Some(text) = &table.cpu_max {
        limits
            .push(crate::supervise::limits::cpu_max(text).map_err(|why| invalid("cpu_max", why))?);
    }
    if let Some(n) = table.pids_max {
        limits.push(crate::supervise::limits::pids_max(n).map_err(|why| invalid("pids_max", why))?);
    }
    Ok(Some(Supervised {
        limits,
        ids,
        argv: argv.clone(),
        program,
        env,
        cwd: table.cwd.clone(),
        restart: table.restart.unwrap_or_default(),
        sandbox: table.sandbox.unwrap_or_default(),
        read_paths: table.read_paths.clone().unwrap_or_default(),
        write_paths: table.write_paths.clone().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod scan_interval_tests {
    use super::*;

    #[test]
    fn scan_intervals() {
        assert_eq!(scan_interval(None).unwrap(), None);
        assert_eq!(scan_interval(Some("off")).unwrap(), None);
        assert_eq!(
            scan_interval(Some("5m")).unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            scan_interval(Some(" 1s ")).unwrap(),
            Some(Duration::from_secs(1))
        );
        for bad in [
            "",
            "0s",
            "500ms",
            "5",
            "five minutes",
            "-1m",
            "99999999999999999999y",
        ] {
            let err = scan_interval(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("scan_interval: "), "{bad}: {err}");
        }
    }
}
