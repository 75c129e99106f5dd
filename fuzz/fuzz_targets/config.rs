//! `config`: the TOML configuration file, read and resolved exactly as `mcp-gateway run
//! --config FILE` does (`config::file::load`, then `RunArgs::resolve`: per-server settings,
//! policies, limits, allowlists, kernel and metrics settings).
//!
//! Input: the file's text (see `seeds/config/`, which holds `mcp-gateway.example.toml`).
//!
//! Properties: no panic, whatever the text; `resolve` fails whenever `load` does; a resolved
//! configuration has at least one server, unique names and listen addresses, and each server's
//! Host/Origin policy and MCP allowlists compile.
//!
//! Files named by the configuration (`auth_token_file`, `tls_cert` with `tls_key`) would be
//! read from this machine (`/dev/zero`, a FIFO...): inputs naming them are only parsed, not
//! resolved.
#![no_main]

use std::{collections::HashSet, path::PathBuf, sync::OnceLock};

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use libfuzzer_sys::fuzz_target;
use mcp_gateway::{
    config::{RunArgs, file},
    mcp::McpPolicy,
    policy::Policy,
};

/// `mcp-gateway run`'s flags, parsed once with only `--config`.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

/// The configuration file (one per process: libFuzzer runs one input at a time) and the flags
/// that name it.
fn setup() -> &'static (PathBuf, Cli) {
    static SETUP: OnceLock<(PathBuf, Cli)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "mcp-gateway-fuzz-config-{}.toml",
            std::process::id()
        ));
        // Flags fall back to MCP_GATEWAY_* variables (CI sets some for its tests): without the
        // fallbacks, the file alone is resolved.
        let command = Cli::command().mut_args(|arg| arg.env(None::<&'static str>));
        let args = ["config".as_ref(), "--config".as_ref(), path.as_os_str()];
        let cli = Cli::from_arg_matches(&command.get_matches_from(args)).expect("valid flags");
        (path, cli)
    })
}

fuzz_target!(|data: &[u8]| {
    let (path, cli) = setup();
    std::fs::write(path, data).expect("writing the config file");
    let loaded = file::load(path);
    let reads_files = loaded.as_ref().is_ok_and(|f| {
        let layers = std::iter::once(f.keys()).chain(f.server.iter().map(|t| t.keys()));
        let (mut token, mut cert, mut key) = (false, false, false);
        for keys in layers {
            token |= keys.auth_token_file.is_some();
            cert |= keys.tls_cert.is_some();
            key |= keys.tls_key.is_some();
        }
        token || (cert && key)
    });
    if reads_files {
        return;
    }
    let resolved = cli.run.resolve();
    if loaded.is_err() {
        assert!(resolved.is_err(), "a file that doesn't load resolved");
    }
    let Ok(settings) = resolved else {
        return;
    };
    assert!(!settings.servers.is_empty(), "no server");
    let names: HashSet<_> = settings.servers.iter().map(|s| &s.name).collect();
    let listens: HashSet<_> = settings.servers.iter().map(|s| s.listen).collect();
    assert_eq!(
        names.len(),
        settings.servers.len(),
        "two servers share a name"
    );
    assert_eq!(
        listens.len(),
        settings.servers.len(),
        "two servers share an address"
    );
    for server in &settings.servers {
        Policy::new(&server.policy).expect("a resolved policy compiles");
        McpPolicy::new(&server.mcp).expect("resolved allowlists compile");
    }
    assert!(settings.workers >= 1, "no worker");
});
