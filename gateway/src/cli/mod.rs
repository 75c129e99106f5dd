//! The `mcp-gateway` command line: one subcommand per job.
pub mod check;
pub mod docs;
pub mod kernel;
pub mod lockdown;
pub mod stats;

use clap::{Parser, Subcommand};

/// Examples, exit status and where the docs are: the end of `--help` and of the man page.
const LONG_HELP: &str = "Examples:
  mcp-gateway run --upstream http://127.0.0.1:8000/mcp
  mcp-gateway run --config /etc/mcp-gateway/gateway.toml
  mcp-gateway check --host rebind.test:8787 --origin http://rebind.test:8787
  mcp-gateway doctor

Exit status:
  0  success (`run`: stopped by SIGINT or SIGTERM after a graceful shutdown)
  1  an error, printed as `mcp-gateway: error: ...` with what to do; also `check` when the
     request would be refused, `doctor` when something required is missing, and `stats`
     when no counters are pinned
  2  invalid command-line arguments (the usage is printed)

Documentation: /usr/share/doc/mcp-gateway (docs/ in the source).";

/// DNS-rebinding protection for local MCP servers.
#[derive(Debug, Parser)]
#[command(
    name = "mcp-gateway",
    version = crate::VERSION,
    about,
    long_about = "DNS-rebinding protection for local MCP (Model Context Protocol) servers: a \
                  gateway that validates Host and Origin (and, as configured, bearer tokens, \
                  client certificates, MCP methods and tools) before a request reaches the \
                  server, and cgroup eBPF programs that keep the server's ports loopback-only.",
    after_help = "Examples:
  mcp-gateway run --upstream http://127.0.0.1:8000/mcp
  mcp-gateway run --config /etc/mcp-gateway/gateway.toml
  mcp-gateway check --host rebind.test:8787 --origin http://rebind.test:8787
  mcp-gateway doctor",
    after_long_help = LONG_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in front of an MCP server.
    #[command(after_help = "Examples:
  mcp-gateway run --upstream http://127.0.0.1:8000/mcp
  mcp-gateway run --upstream unix:/run/mcp/weather.sock --allow-origin https://app.example.com
  mcp-gateway run --config /etc/mcp-gateway/gateway.toml --check-config
  mcp-gateway run --listen 0.0.0.0:8787 --allow-non-loopback --auth-token-file tokens \\
      --tls-cert server.pem --tls-key server.key --upstream http://127.0.0.1:8000/mcp")]
    Run(Box<crate::config::RunArgs>),
    /// Explain how the Host/Origin policy decides a request.
    #[command(after_help = "Examples:
  mcp-gateway check --host localhost:8787
  mcp-gateway check --host rebind.test:8787 --origin http://rebind.test:8787
  mcp-gateway check --host localhost:8787 --origin https://app.example.com \\
      --allow-origin https://app.example.com --method OPTIONS")]
    Check(Box<check::CheckArgs>),
    /// Withdraw one instance's kernel protection (--instance), or remove everything (--all).
    #[command(after_help = "Examples:
  mcp-gateway detach --instance ide
  mcp-gateway detach --all --keep-counters")]
    Detach(kernel::DetachArgs),
    /// Check what kernel enforcement needs on this host, and what is in force.
    #[command(after_help = "Examples:
  mcp-gateway doctor
  sudo mcp-gateway doctor --pin-dir /sys/fs/bpf/mcp-gateway")]
    Doctor(kernel::DoctorArgs),
    /// List every protected port with its flags and owners (instance, upstream, alive).
    #[command(after_help = "Examples:
  sudo mcp-gateway status
  sudo mcp-gateway status --json")]
    Status(kernel::StatusArgs),
    /// Cut every protected port (or --port) for everyone at once, until `unlock`.
    #[command(after_help = "Examples:
  sudo mcp-gateway lockdown --reason \"token leaked\"
  sudo mcp-gateway lockdown --port 8000 --reason \"db tool misbehaving\"")]
    Lockdown(lockdown::LockdownArgs),
    /// Release the lockdown (or one --port of it).
    #[command(after_help = "Examples:
  sudo mcp-gateway unlock
  sudo mcp-gateway unlock --port 8000")]
    Unlock(lockdown::UnlockArgs),
    /// Show the rejection counters pinned by the gateway and its kernel programs.
    #[command(after_help = "Examples:
  sudo mcp-gateway stats
  sudo mcp-gateway stats --json
  sudo mcp-gateway stats --watch 5")]
    Stats(stats::StatsArgs),
    /// Find every MCP server on this host and test it for DNS rebinding (exit 1: one is exposed).
    #[command(after_help = "Examples:
  sudo mcp-gateway scan
  mcp-gateway scan --json --ports 8000,8080-8090

Exit status: 0 no MCP server exposed, 1 one is exposed, 2 the scan itself failed.")]
    Scan(Box<crate::scan::ScanArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  mcp-gateway completions bash > /etc/bash_completion.d/mcp-gateway
  mcp-gateway completions zsh > \"${fpath[1]}/_mcp-gateway\"
  mcp-gateway completions fish > ~/.config/fish/completions/mcp-gateway.fish")]
    Completions(docs::CompletionsArgs),
    /// Write the man pages (mcp-gateway.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man(docs::ManArgs),
}
