//! Test helper: the gateway's kernel layer without the proxy, driven like `mcp-gateway`.
//!
//! - `enforcer [--join-cgroup DIR] run --upstream-port P --listen ADDR [kernel flags of run]`
//!   calls `ebpf::startup::start` as `mcp-gateway run` does, prints one line (`enforcing
//!   reused=N new=M own_cgroup=DIR` or `userspace-only`), then holds enforcement until stdin
//!   closes (or the process is killed).
//! - `enforcer detach ...` and `enforcer doctor ...` are `mcp-gateway detach|doctor`.
//!
//! `--join-cgroup` puts the process into DIR first, as if it had been started there.
use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use mcp_gateway::{
    cli::kernel::{self, DetachArgs, DoctorArgs},
    config::{
        self,
        file::{FileConfig, ServerKeys},
        kernel::EbpfArgs,
    },
    ebpf::startup::{self, ServerPorts},
};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    join_cgroup: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start; run's arguments are every per-server key"
)]
enum Cmd {
    Run(RunArgs),
    Detach(DetachArgs),
    Doctor(DoctorArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    upstream_port: u16,
    #[arg(long)]
    listen: SocketAddr,
    /// `--exclusive-upstream` and `--allow-cgroup` among them.
    #[command(flatten)]
    server: ServerKeys,
    #[command(flatten)]
    ebpf: EbpfArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Some(dir) = &cli.join_cgroup {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())?;
    }
    match cli.command {
        Cmd::Run(args) => run(&args),
        Cmd::Detach(args) => kernel::detach(&args).map(|()| ExitCode::SUCCESS),
        Cmd::Doctor(args) => kernel::doctor(&args),
    }
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let settings = config::kernel_settings(&args.ebpf, &FileConfig::default());
        let server = ServerPorts {
            name: "enforcer".to_owned(),
            upstream: format!("http://127.0.0.1:{}/mcp", args.upstream_port),
            upstream_port: Some(args.upstream_port),
            listen: args.listen,
            exclusive_upstream: args.server.exclusive_upstream.unwrap_or(false),
            allow_cgroups: args.server.allow_cgroups.clone().unwrap_or_default(),
            sources: Vec::new(),
        };
        let instance = config::default_instance(&[args.listen]);
        let enforcement = startup::start(&settings, &instance, &[server])?;
        match &enforcement {
            Some(e) => {
                let s = e.status();
                println!(
                    "enforcing reused={} new={} own_cgroup={}",
                    s.reused_links.len(),
                    s.new_links.len(),
                    s.own_cgroup
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
                );
            }
            None => println!("userspace-only"),
        }
        std::io::stdout().flush()?;
        // Hold enforcement (and forward kernel logs) until the test closes stdin.
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
        drop(enforcement);
        Ok(ExitCode::SUCCESS)
    })
}
