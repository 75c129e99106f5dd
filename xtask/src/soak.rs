//! `cargo xtask soak --minutes N`: the release gateway under mixed allowed, attack and SSE
//! traffic, with its upstream restarted every minute (`tests/src/bin/soak.rs` drives it). With
//! `--record`, the report goes to `docs/soak.md`.
use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, run};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// How long to run.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Write the report to docs/soak.md (for a long run by hand, not CI).
    #[arg(long)]
    record: bool,
}

pub fn soak(options: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.minutes > 0.0,
        "--minutes must be more than 0 (e.g. --minutes 1)"
    );
    // What is built now, before the run: `-dirty` when the tree has uncommitted changes.
    let commit = cmd::output(Command::new("git").args(["describe", "--always", "--dirty"]))
        .unwrap_or_else(|| "?".to_owned());
    let gateway = run::build_release()?;
    let soak = run::build_test_bin("soak")?;
    let report = std::env::temp_dir().join(format!("mcp-gateway-soak-{}.md", std::process::id()));
    let result = cmd::run(
        Command::new(&soak)
            .args(["run", "--minutes", &options.minutes.to_string()])
            .arg("--gateway")
            .arg(&gateway)
            .arg("--report")
            .arg(&report),
    );
    if options.record && report.exists() {
        let body = std::fs::read_to_string(&report)?;
        let text = format!(
            "# Soak run\n\nOne run of `cargo xtask soak --minutes {} --record`, at commit {}, on {}.\n\
             Regenerate it with the same command; CI runs `cargo xtask soak --minutes 1`.\n\n{body}",
            options.minutes,
            commit.trim(),
            cmd::machine(),
        );
        let path = cmd::workspace_root().join("docs/soak.md");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("xtask: wrote {}", path.display());
    }
    let _ = std::fs::remove_file(&report);
    result.context("the soak run failed: its report above says which check")
}
