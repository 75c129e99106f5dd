//! `cargo xtask fuzz [--seconds N] [TARGET...]`: every fuzz target of `fuzz/` (or the named
//! ones) for N seconds each, with cargo-fuzz on rustup's nightly (installed into the tools dir
//! if missing), then one summary line per target. Fails on any crash, naming the artifact and
//! the command that reproduces it.
//!
//! Each target starts from its committed seeds (`fuzz/seeds/TARGET`, only read) and the corpus
//! earlier runs grew (`fuzz/corpus/TARGET`, ignored by git, where new inputs go). libFuzzer's
//! full output goes to `fuzz/target/logs/TARGET.log`; the terminal gets all but its per-input
//! lines.
use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The targets, in the order they run.
const TARGETS: [&str; 4] = ["policy", "config", "jsonrpc", "request_path"];
/// Seconds one input may take before libFuzzer reports it as a hang (`timeout-*` artifact).
const INPUT_TIMEOUT_SECS: u32 = 60;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run [default: all: policy, config, jsonrpc, request_path].
    targets: Vec<String>,
}

/// What one target's run reached, from libFuzzer's final lines.
#[derive(Debug, Default)]
struct Summary {
    execs: u64,
    execs_per_sec: u64,
    /// Coverage counters and features of the last status line.
    cov: u64,
    ft: u64,
    corpus: u64,
    /// libFuzzer's own time ("Done N runs in S second(s)"), else the whole run's (a crash).
    seconds: u64,
    /// Set when libFuzzer wrote a crash, hang or OOM input.
    artifact: Option<PathBuf>,
}

pub fn fuzz(options: &Options) -> anyhow::Result<()> {
    let targets: Vec<&str> = match options.targets.is_empty() {
        true => TARGETS.to_vec(),
        false => options.targets.iter().map(String::as_str).collect(),
    };
    if let Some(unknown) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!(
            "no fuzz target `{unknown}`; the targets are {}",
            TARGETS.join(", ")
        );
    }
    if cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_none()
    {
        bail!("cargo-fuzz needs rustup's nightly: rustup toolchain install nightly");
    }
    // The gateway's build script builds the eBPF programs: setup provides their toolchain.
    let tools = setup::setup()?;
    ensure_cargo_fuzz(&tools.dir)?;
    let path = tools.path()?;
    let fuzz_dir = cmd::workspace_root().join("fuzz");
    let cargo_fuzz = || {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", "fuzz"])
            .current_dir(&fuzz_dir)
            .env("PATH", &path);
        cmd
    };
    // Every target at once (the same flags `run` uses, so each run starts at once).
    cmd::run(cargo_fuzz().args(["build", "--fuzz-dir", "."]))
        .context("building the fuzz targets")?;

    let logs = fuzz_dir.join("target").join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut results = Vec::new();
    for target in &targets {
        let corpus = Path::new("corpus").join(target);
        fs::create_dir_all(fuzz_dir.join(&corpus))
            .with_context(|| format!("creating fuzz/{}", corpus.display()))?;
        let mut run = cargo_fuzz();
        run.args(["run", "--fuzz-dir", ".", target])
            .arg(&corpus)
            .arg(Path::new("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
            .arg("-print_final_stats=1");
        eprintln!("xtask: fuzzing {target} for {} s", options.seconds);
        let log = logs.join(format!("{target}.log"));
        let summary = run_logged(run, &log)
            .with_context(|| format!("fuzzing {target} (log: {})", log.display()))?;
        results.push((*target, summary, log));
    }

    let mut total = (0, 0);
    for (target, s, _) in &results {
        total = (total.0 + s.execs, total.1 + s.seconds);
        println!(
            "fuzz: {target:<12} {:>11} execs {:>7} exec/s  cov {:>5}  ft {:>6}  corpus {:>5}  {:>4} s{}",
            s.execs,
            s.execs_per_sec,
            s.cov,
            s.ft,
            s.corpus,
            s.seconds,
            if s.artifact.is_some() {
                "  CRASHED"
            } else {
                ""
            },
        );
    }
    println!("fuzz: total        {:>11} execs in {} s", total.0, total.1);

    let crashed: Vec<String> = results
        .iter()
        .filter_map(|(target, s, log)| {
            let artifact = s.artifact.as_ref()?;
            let artifact = artifact.strip_prefix(".").unwrap_or(artifact);
            Some(format!(
                "{target}: {} (log: {})\n  reproduce: cd fuzz && PATH={}:$PATH cargo +nightly fuzz run --fuzz-dir . {target} {}",
                fuzz_dir.join(artifact).display(),
                log.display(),
                tools.dir.join("bin").display(),
                artifact.display()
            ))
        })
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found {} crash(es):\n{}",
            crashed.len(),
            crashed.join("\n")
        );
    }
    Ok(())
}

/// Installs cargo-fuzz into the tools dir, once.
fn ensure_cargo_fuzz(tools: &Path) -> anyhow::Result<()> {
    let bin = tools.join("bin").join("cargo-fuzz");
    let version = cmd::output(Command::new(&bin).arg("--version"));
    if version.is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once)",
        tools.display()
    );
    cmd::run(
        cmd::cargo()
            .args(["install", "--locked", "--force", "cargo-fuzz", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(tools),
    )
    .context("installing cargo-fuzz failed")
}

/// Runs `cmd` with its output in `log`, echoing all but libFuzzer's per-input lines; its
/// summary. A crash is a summary with an artifact, any other failure an error.
fn run_logged(mut cmd: Command, log: &Path) -> anyhow::Result<Summary> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting cargo fuzz")?;
    // The command holds the pipe's writing ends: once it is dropped, reading ends with the child.
    drop(cmd);
    let mut file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut summary = Summary::default();
    let mut tail = std::collections::VecDeque::new();
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        writeln!(file, "{line}")?;
        summary.read(&line);
        if !is_per_input(&line) {
            eprintln!("{line}");
        }
        tail.push_back(line);
        if tail.len() > 40 {
            tail.pop_front();
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if summary.seconds == 0 {
        summary.seconds = started.elapsed().as_secs();
    }
    if !status.success() && summary.artifact.is_none() {
        let tail: Vec<String> = tail.into();
        bail!("cargo fuzz failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(summary)
}

/// libFuzzer's lines about single inputs (new coverage, reductions, new functions, dictionary).
fn is_per_input(line: &str) -> bool {
    let status = line.starts_with('#')
        && ["NEW", "REDUCE", "RELOAD"]
            .iter()
            .any(|word| line.split_whitespace().nth(1) == Some(word));
    status || line.contains("NEW_FUNC[") || line.contains("# Uses: ")
}

impl Summary {
    /// Takes what it needs of one output line.
    fn read(&mut self, line: &str) {
        let stat = |name: &str| -> Option<u64> { line.strip_prefix(name)?.trim().parse().ok() };
        if let Some(n) = stat("stat::number_of_executed_units:") {
            self.execs = n;
        } else if let Some(n) = stat("stat::average_exec_per_sec:") {
            self.execs_per_sec = n;
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 123 runs in 61 second(s)`
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [_, "runs", "in", secs, ..] = words[..] {
                self.seconds = secs.parse().unwrap_or(self.seconds);
            }
        } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
            self.artifact = Some(PathBuf::from(rest.trim()));
        } else if line.starts_with('#') && line.contains(" cov: ") {
            let field = |name: &str| -> Option<u64> {
                let mut words = line.split_whitespace();
                words.find(|w| *w == name)?;
                let value = words.next()?;
                value.split('/').next()?.parse().ok()
            };
            self.cov = field("cov:").unwrap_or(self.cov);
            self.ft = field("ft:").unwrap_or(self.ft);
            self.corpus = field("corp:").unwrap_or(self.corpus);
        }
    }
}
