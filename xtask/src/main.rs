//! Project chores: `cargo xtask setup | run | test | bench | lint | soak | fuzz | deb`.
#![forbid(unsafe_code)]
mod bench;
mod cmd;
mod deb;
mod fuzz;
mod run;
mod setup;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "mcp-gateway development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the eBPF toolchain (nightly + rust-src, or Debian's matched compiler) and
    /// bpf-linker. Idempotent; a few seconds when already done.
    Setup,
    /// Build everything (release) and start `mcp-gateway` with the privileges it needs.
    Run {
        /// Arguments for `mcp-gateway`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, integration, and (with root + CAP_BPF) the privileged kernel tests.
    Test {
        /// Extra arguments for the test runner (cargo-nextest), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the gateway against direct access and nginx with the same Host/Origin rules,
    /// per core, and write the ratios to docs/benchmarks.md.
    Bench(bench::Options),
    /// Check formatting (nightly rustfmt) and run clippy with -D warnings, the eBPF crate on its
    /// own target.
    Lint,
    /// The release gateway under mixed allowed, attack and SSE traffic for N minutes, with its
    /// upstream restarted every minute; checks counters, RSS and descriptors stay exact and flat.
    Soak(soak::Options),
    /// Run every fuzz target (cargo-fuzz on nightly, installed if missing) for N seconds each
    /// from the committed seeds; fails on a crash, naming the input and how to reproduce it.
    Fuzz(fuzz::Options),
    /// Build the Debian package (cargo-deb, installed if missing) into target/debian/.
    Deb,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup().map(drop),
        Task::Run { args } => run::run(&args),
        Task::Test { args } => test::test(&args),
        Task::Bench(options) => bench::bench(&options),
        Task::Lint => test::lint(),
        Task::Soak(options) => soak::soak(&options),
        Task::Fuzz(options) => fuzz::fuzz(&options),
        Task::Deb => deb::deb().map(drop),
    }
}
