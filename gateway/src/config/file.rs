//! The TOML file: process-wide keys, per-server keys (defaults at the top level), and
//! `[[server]]` tables. Unknown keys are errors, at the top level and inside server tables.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{ConfigError, LogFormat};
use crate::{
    cli::kernel::{BindPolicyArg, EbpfMode},
    policy::Mode,
};

/// Declares the per-server keys once, and from them: [`ServerKeys`] (one layer's values),
/// [`FileConfig`] (the top level, where they are defaults for every server) and
/// [`ServerTable`] (a `[[server]]` table).
macro_rules! server_keys {
    ($($(#[doc = $doc:literal])* $key:ident: $ty:ty,)*) => {
        /// The per-server settings of one layer (flags, environment, the file's top level, a
        /// server table); `None` where that layer doesn't set the key.
        #[derive(Clone, Debug, Default)]
        pub struct ServerKeys {
            $($(#[doc = $doc])* pub $key: Option<$ty>,)*
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
            pub metrics_listen: Option<crate::metrics::Listen>,
            pub metrics_label_budget: Option<usize>,
            pub audit_log: Option<String>,
            pub ebpf: Option<EbpfMode>,
            pub cgroup: Option<PathBuf>,
            pub pin_dir: Option<PathBuf>,
            pub bind_policy: Option<BindPolicyArg>,
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
                ServerKeys { $($key: self.$key.clone(),)* }
            }
        }
    };
}

server_keys! {
    /// Host/Origin policy mode.
    mode: Mode,
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    allow_non_loopback: bool,
    auth_token_file: PathBuf,
    max_body_bytes: u64,
    header_timeout_secs: f64,
    max_header_bytes: usize,
    max_headers: usize,
    max_connections: usize,
    connect_timeout_secs: f64,
    response_timeout_secs: f64,
    shutdown_grace_secs: f64,
    /// Only the gateway may connect to this server's upstream port (kernel layer).
    exclusive_upstream: bool,
    allow_cgroups: Vec<PathBuf>,
    /// MCP tool and method allowlists.
    allowed_tools: Vec<String>,
    denied_tools: Vec<String>,
    allowed_methods: Vec<String>,
    /// Source-address allowlist (CIDRs) of a non-loopback listener.
    allow_sources: Vec<String>,
    /// Rate limit per client, `N/s` or `N/min`.
    rate_limit: String,
    rate_burst: u32,
    /// HTTPS: the certificate chain and its private key (PEM).
    tls_cert: PathBuf,
    tls_key: PathBuf,
    /// Clients must present a certificate from this CA (PEM)...
    client_ca: PathBuf,
    /// ...naming one of these (SAN DNS names or URIs).
    allowed_client_names: Vec<String>,
    /// Plain HTTP on a non-loopback listener (behind a TLS terminator, say).
    allow_plaintext: bool,
    /// The browser's Origin reaches the upstream unchanged.
    pass_origin: bool,
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
