//! Shell completions and man pages, generated from the clap definitions (so they can't drift
//! from the flags).
use std::{io, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `mcp-gateway.1` and `mcp-gateway-SUBCOMMAND.1` into.
    #[arg(long)]
    pub out_dir: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "mcp-gateway",
        &mut io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.out_dir)
        .with_context(|| format!("writing man pages into {}", args.out_dir.display()))?;
    // No page for this hidden subcommand.
    let _ = std::fs::remove_file(args.out_dir.join("mcp-gateway-man.1"));
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&args.out_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}
