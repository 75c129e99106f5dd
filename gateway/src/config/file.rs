//! The TOML file: process-wide keys, per-server keys (defaults at the top level), and
//! `[[server]]` tables. Unknown keys are errors, at the top level and inside server tables.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    ConfigError, LogFormat,
    kernel::{BindPolicy, EbpfMode},
};
use crate::policy::Mode;

/// Declares the per-server keys once, each with its flag, variable and help, and from them:
/// [`ServerKeys`] (one layer's values, and the flags of `mcp-gateway run`),
/// [`FileConfig`] (the top level, where they are defaults for every server) and
/// [`ServerTable`] (a `[[server]]` table).
macro_rules! server_keys {
    ($($(#[doc = $doc:literal])* #[arg($($arg:tt)*)] $key:ident: $ty:ty,)*) => {
        /// The per-server settings of one layer (flags, environment, the file's top level, a
        /// server table); `None` where that layer doesn't set the key. As clap arguments, the
        /// flags and variables of `mcp-gateway run`.
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct ServerKeys {
            $($(#[doc = $doc])* #[arg($($arg)*)] pub $key: Option<$ty>,)*
        }

        impl ServerKeys {
            /// Every key of `self` that is set, else `general`'s.
            pub fn or(self, general: Self) -> Self {
                Self { $($key: self.$key.or(general.$key),)* }
            }
        }

        /// The whole file. Top-level per-server keys are defaults for every server.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            /// `[[server]]` tables; none means one server described by the top level.
            #[serde(default)]
            pub server: Vec<ServerTable>,
            // The one server of a file without tables.
            pub name: Option<String>,
            pub upstream: Option<String>,
            pub listen: Option<SocketAddr>,
            // Process-wide.
            pub instance: Option<String>,
            pub log_format: Option<LogFormat>,
            pub workers: Option<usize>,
            pub metrics_listen: Option<super::metrics::Listen>,
            pub metrics_label_budget: Option<usize>,
            pub scan_interval: Option<String>,
            pub egress_refresh_secs: Option<f64>,
            pub audit_log: Option<String>,
            pub ebpf: Option<EbpfMode>,
            pub cgroup: Option<PathBuf>,
            pub pin_dir: Option<PathBuf>,
            pub bind_policy: Option<BindPolicy>,
            pub protect_ports: Option<Vec<u16>>,
            $($key: Option<$ty>,)*
        }

        /// One `[[server]]` table.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServerTable {
            pub name: Option<String>,
            pub listen: Option<SocketAddr>,
            pub upstream: Option<String>,
            /// The server's cgroup, for its egress rules (the table's name for `egress_cgroup`).
            pub cgroup: Option<PathBuf>,
            /// A server the gateway starts itself: its argv.
            pub command: Option<Vec<String>>,
            /// How the gateway speaks to it: `http` (it listens on `upstream`).
            pub transport: Option<String>,
            /// Its whole environment, beyond a minimal PATH, HOME and LANG.
            pub env: Option<std::collections::BTreeMap<String, String>>,
            /// Its working directory [default: its state directory].
            pub cwd: Option<PathBuf>,
            /// When it is started again: `on-failure`, `always` or `never`.
            pub restart: Option<crate::supervise::policy::Restart>,
            /// Its file system sandbox: `auto`, `required` or `off`.
            pub sandbox: Option<crate::supervise::sandbox::Mode>,
            /// Directories (or files) it may read, beyond the system's.
            pub read_paths: Option<Vec<PathBuf>>,
            /// Directories (or files) it may write, beyond its state directory.
            pub write_paths: Option<Vec<PathBuf>>,
            /// The user it runs as (a name or a number).
            pub user: Option<String>,
            /// The group it runs as [default: the user's primary group].
            pub group: Option<String>,
            /// Its memory limit (`512M`).
            pub memory_max: Option<String>,
            /// Its CPU limit, a share of one CPU (`50%`).
            pub cpu_max: Option<String>,
            /// The most processes and threads it may have.
            pub pids_max: Option<u64>,
            $($key: Option<$ty>,)*
        }

        impl FileConfig {
            /// The top level's per-server defaults.
            pub fn keys(&self) -> ServerKeys {
                ServerKeys { $($key: self.$key.clone(),)* }
            }
        }

        impl ServerTable {
            pub fn keys(&self) -> ServerKeys {
                let mut keys = ServerKeys { $($key: self.$key.clone(),)* };
                keys.egress_cgroup = keys.egress_cgroup.or(self.cgroup.clone());
                keys
            }
        }
    };
}

server_keys! {
    /// Policy mode [default: permissive].
    #[arg(long, id = "policy_mode", env = "MCP_GATEWAY_MODE")]
    mode: Mode,
    /// Allowed browser origin (repeatable): `scheme://host[:port]` or `scheme://host:*`.
    #[arg(
        long = "allow-origin",
        env = "MCP_GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Extra allowed Host value (repeatable), `name[:port]`, beyond the loopback names.
    #[arg(
        long = "allow-host",
        env = "MCP_GATEWAY_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Permit a non-loopback listen address (also needs --auth-token-file or --client-ca, and
    /// TLS or --allow-plaintext).
    #[arg(
        long,
        env = "MCP_GATEWAY_ALLOW_NON_LOOPBACK",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    allow_non_loopback: bool,
    /// Bearer tokens every request must present: one `NAME TOKEN` per line (`#` comments), or
    /// one bare token (named `default`). Reloaded when it changes, and on SIGHUP.
    #[arg(long, env = "MCP_GATEWAY_AUTH_TOKEN_FILE")]
    auth_token_file: PathBuf,
    /// Largest request body accepted, in bytes [default: 4 MiB]; larger gets 413.
    #[arg(long, env = "MCP_GATEWAY_MAX_BODY_BYTES")]
    max_body_bytes: u64,
    /// Seconds a client may take to send its request headers [default: 10].
    #[arg(long, env = "MCP_GATEWAY_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: f64,
    /// Largest request head in bytes [default: 16384].
    #[arg(long, env = "MCP_GATEWAY_MAX_HEADER_BYTES")]
    max_header_bytes: usize,
    /// Most request headers [default: 64].
    #[arg(long, env = "MCP_GATEWAY_MAX_HEADERS")]
    max_headers: usize,
    /// Most client connections open at once [default: 512].
    #[arg(long, env = "MCP_GATEWAY_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Seconds to wait for the upstream to accept a connection [default: 5]; then 504.
    #[arg(long, env = "MCP_GATEWAY_CONNECT_TIMEOUT_SECS")]
    connect_timeout_secs: f64,
    /// Seconds the upstream has to answer a forwarded request with a response head
    /// [default: 300]; then 504. An SSE stream's events may take longer.
    #[arg(long, env = "MCP_GATEWAY_RESPONSE_TIMEOUT_SECS")]
    response_timeout_secs: f64,
    /// Seconds in-flight requests get to finish on SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "MCP_GATEWAY_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: f64,
    /// Only the gateway (and --allow-cgroup cgroups) may connect to the upstream's port.
    #[arg(
        long,
        env = "MCP_GATEWAY_EXCLUSIVE_UPSTREAM",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    exclusive_upstream: bool,
    /// Another cgroup allowed to connect to the upstream with --exclusive-upstream (repeatable).
    #[arg(
        long = "allow-cgroup",
        env = "MCP_GATEWAY_ALLOW_CGROUPS",
        value_delimiter = ','
    )]
    allow_cgroups: Vec<PathBuf>,
    /// Only these MCP tools may be called and listed (repeatable; a trailing `*` matches a
    /// prefix) [default: every tool].
    #[arg(
        long = "allow-tool",
        env = "MCP_GATEWAY_ALLOWED_TOOLS",
        value_delimiter = ','
    )]
    allowed_tools: Vec<String>,
    /// These MCP tools may never be called, and are hidden from tools/list (repeatable; a
    /// trailing `*` matches a prefix; wins over --allow-tool).
    #[arg(
        long = "deny-tool",
        env = "MCP_GATEWAY_DENIED_TOOLS",
        value_delimiter = ','
    )]
    denied_tools: Vec<String>,
    /// Only these JSON-RPC methods may be sent (repeatable; a trailing `*` matches a prefix).
    /// initialize, notifications/initialized, ping, server/discover and notifications/cancelled
    /// are always allowed [default: every method].
    #[arg(
        long = "allow-method",
        env = "MCP_GATEWAY_ALLOWED_METHODS",
        value_delimiter = ','
    )]
    allowed_methods: Vec<String>,
    /// Client network allowed to reach a non-loopback listener (repeatable; CIDR, IPv4 or
    /// IPv6). Others are dropped by the kernel and refused (403) by the gateway [default: any].
    #[arg(
        long = "allow-source",
        env = "MCP_GATEWAY_ALLOW_SOURCES",
        value_delimiter = ','
    )]
    allow_sources: Vec<String>,
    /// Requests per client (credential, else address and Origin): N/s or N/min; over it, 429
    /// [default: no limit].
    #[arg(long, env = "MCP_GATEWAY_RATE_LIMIT")]
    rate_limit: String,
    /// Requests a client may send at once under --rate-limit [default: the rate's N].
    #[arg(long, env = "MCP_GATEWAY_RATE_BURST")]
    rate_burst: u32,
    /// Serve HTTPS with this certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "MCP_GATEWAY_TLS_CERT")]
    tls_cert: PathBuf,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, env = "MCP_GATEWAY_TLS_KEY")]
    tls_key: PathBuf,
    /// Require a client certificate issued by this CA (PEM); its name becomes the client's
    /// credential name.
    #[arg(long, env = "MCP_GATEWAY_CLIENT_CA")]
    client_ca: PathBuf,
    /// Accept only client certificates naming this (repeatable): a SAN DNS name, or a URI such
    /// as a SPIFFE ID [default: any certificate from --client-ca].
    #[arg(
        long = "allow-client-name",
        env = "MCP_GATEWAY_ALLOWED_CLIENT_NAMES",
        value_delimiter = ','
    )]
    allowed_client_names: Vec<String>,
    /// Serve plain HTTP on a non-loopback address (only behind a TLS terminator: tokens and
    /// MCP traffic would otherwise cross the network in clear).
    #[arg(
        long,
        env = "MCP_GATEWAY_ALLOW_PLAINTEXT",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    allow_plaintext: bool,
    /// Pass the browser's Origin to the MCP server unchanged. By default the server sees its
    /// own origin (so its own Host/Origin check accepts what the gateway allowed), and the
    /// browser's in X-Forwarded-Origin.
    #[arg(
        long,
        env = "MCP_GATEWAY_PASS_ORIGIN",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pass_origin: bool,
    /// A destination the server may reach (repeatable): `HOST:PORT`, where HOST is an
    /// address, a CIDR (`10.0.0.0/8`, `[2001:db8::/32]`) or a DNS name, and PORT a number or
    /// `*`. Everything else, loopback included, is refused by the kernel. Needs
    /// --egress-cgroup [default: no egress rules].
    #[arg(long = "egress", env = "MCP_GATEWAY_EGRESS", value_delimiter = ',')]
    egress: Vec<String>,
    /// Also allow the resolvers of /etc/resolv.conf on port 53.
    #[arg(
        long,
        env = "MCP_GATEWAY_EGRESS_DNS",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    egress_dns: bool,
    /// The server's cgroup, whose processes the egress rules confine (absolute, or relative to
    /// the cgroup-v2 mount; `cgroup` in a [[server]] table).
    #[arg(long, env = "MCP_GATEWAY_EGRESS_CGROUP")]
    egress_cgroup: PathBuf,
}

/// Reads and parses `path`. TOML's own errors name the line and the key (an unknown key inside
/// a server table reads "unknown field `x`, expected one of ...").
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile {
        path: path.to_owned(),
        cause,
    })?;
    toml::from_str(&text).map_err(|cause| ConfigError::ParseFile {
        path: path.to_owned(),
        cause: Box::new(cause),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tables_and_top_level_defaults_parse() {
        let file: FileConfig = toml::from_str(
            r#"
            mode = "strict"
            allowed_tools = ["get_*"]
            [[server]]
            name = "weather"
            listen = "127.0.0.1:8787"
            upstream = "http://127.0.0.1:8000/mcp"
            [[server]]
            name = "db"
            listen = "127.0.0.1:8788"
            upstream = "unix:/run/mcp/db.sock"
            mode = "permissive"
            "#,
        )
        .expect("valid");
        assert_eq!(file.server.len(), 2);
        let db = file.server[1].keys().or(file.keys());
        assert_eq!(db.mode, Some(Mode::Permissive), "the table wins");
        assert_eq!(
            db.allowed_tools,
            Some(vec!["get_*".to_owned()]),
            "the top level fills in"
        );
        let weather = file.server[0].keys().or(file.keys());
        assert_eq!(weather.mode, Some(Mode::Strict));
    }

    #[test]
    fn unknown_keys_are_errors_at_both_levels() {
        for (text, needle) in [
            ("colour = 1", "unknown field `colour`"),
            (
                "[[server]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"http://x:1/\"\nmodee = \"strict\"",
                "unknown field `modee`",
            ),
            (
                "[[server]]\nname = \"a\"\nmetrics_listen = \"off\"",
                "unknown field `metrics_listen`",
            ),
        ] {
            let err = toml::from_str::<FileConfig>(text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
