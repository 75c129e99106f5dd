//! `cargo xtask bench`: the gateway against going direct and against the reference proxies
//! (nginx and HAProxy, `reference.rs`) with the same Host/Origin rules, per core, in one run, and
//! the ratios written to `docs/benchmarks.md`.
//!
//! Pinned (the default with 2+ CPUs): the proxy under test runs alone on the last CPU with one
//! worker (nginx: `worker_processes 1`; HAProxy: `nbthread 1`; the gateway: `--workers 1`), and
//! the load generators (wrk; `benchtool` for open-loop latency, SSE and held connections) and the
//! upstream (nginx serving a fixed answer) share the others. Scenarios: closed-loop throughput
//! and p99 (allowed `tools/list` and 1 KiB `tools/call` requests, and rejected ones), open-loop
//! latency and CPU per request at a fixed rate, SSE added delay, memory, start-up, and the kernel
//! programs' cost (root only).
//!
//! `--smoke` (CI) runs every scenario briefly to keep the harness working; it checks no timing
//! target and writes `target/bench-smoke.md` instead.
mod procs;
mod reference;
mod scenarios;

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use self::{
    procs::{Proc, Topology, free_port, wait_listening},
    reference::Reference,
    scenarios::Bench,
};
use crate::{cmd, run};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// A short run of every scenario that checks the harness, not the targets (CI).
    #[arg(long)]
    smoke: bool,
    /// Let every process run on every CPU (both proxies then get one worker per CPU).
    #[arg(long)]
    unpinned: bool,
}

/// A goal on a row: a bound on the gateway's value or on its ratio to one column.
struct Goal {
    text: String,
    met: bool,
}

/// The column of a measure made straight to the upstream, without a proxy.
pub const DIRECT: &str = "direct";

/// One line of the report.
pub struct Row {
    measure: String,
    gateway: f64,
    /// The same measure in the other columns: [`DIRECT`] and the reference proxies, by name.
    others: Vec<(&'static str, f64)>,
    unit: &'static str,
    goal: Option<Goal>,
}

impl Row {
    /// A row of values by column, the gateway's among them (`mcp-gateway`); columns without a
    /// finite value are left empty.
    fn new(measure: String, unit: &'static str, values: &[(&'static str, f64)]) -> Self {
        let value = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        Self {
            measure,
            gateway: value(GATEWAY).unwrap_or(f64::NAN),
            others: values
                .iter()
                .filter(|(n, v)| *n != GATEWAY && v.is_finite())
                .copied()
                .collect(),
            unit,
            goal: None,
        }
    }

    fn note(text: &str) -> Self {
        Self::new(text.to_owned(), "", &[])
    }

    /// The gateway's value over `column`'s.
    fn ratio(&self, column: &str) -> Option<f64> {
        self.others
            .iter()
            .find(|(n, _)| *n == column)
            .map(|(_, r)| *r)
            .filter(|r| *r > 0.0 && self.gateway.is_finite())
            .map(|r| self.gateway / r)
    }

    /// A goal on the ratio to `column`, when `applies`.
    fn goal_if(
        mut self,
        applies: bool,
        column: &str,
        text: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Self {
        if applies && let Some(r) = self.ratio(column) {
            self.goal = Some(Goal {
                text: text.to_owned(),
                met: ok(r),
            });
        }
        self
    }

    /// A goal on the gateway's own value.
    fn absolute(mut self, text: &str, ok: impl Fn(f64) -> bool) -> Self {
        self.goal = Some(Goal {
            text: text.to_owned(),
            met: self.gateway.is_finite() && ok(self.gateway),
        });
        self
    }
}

/// The gateway's column.
pub const GATEWAY: &str = "mcp-gateway";

fn machine(refs: &[&Reference]) -> String {
    // wrk prints its version and exits 1.
    let wrk = Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_default();
    let versions: Vec<String> = refs.iter().map(|r| r.version()).collect();
    format!("{}; {}; {wrk}", cmd::machine(), versions.join("; "))
}

/// What the report says about the run, and its table.
struct Run<'a> {
    topo: &'a Topology,
    options: &'a Options,
    commit: &'a str,
    refs: &'a [&'static Reference],
    /// References left out, and why.
    skipped: &'a [(&'static str, String)],
}

fn report(rows: &[Row], run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "One run of `cargo xtask bench{}`, on {}, at commit {}.\n",
        if run.options.unpinned {
            " --unpinned"
        } else {
            ""
        },
        machine(run.refs),
        run.commit
    );
    let links: Vec<String> = run
        .refs
        .iter()
        .map(|r| {
            format!(
                "{} ([`{}`](../{}))",
                r.name, r.template_path, r.template_path
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "{}\nThe references are {}, each with the gateway's Host/Origin rules, in front of the same \
         upstream; `direct` is the same measure straight to the upstream. A reference's cell \
         holds its value and, in parentheses, mcp-gateway / it; only ratios within one run mean \
         anything on a shared machine.\n",
        if run.topo.pinned {
            format!(
                "Pinned: each proxy alone on CPU {} with one worker; wrk, benchtool and the \
                 upstream on CPU {}.",
                run.topo.proxy_cpus, run.topo.load_cpus
            )
        } else {
            format!(
                "Unpinned: {} workers each, every process on every CPU.",
                run.topo.workers
            )
        },
        links.join(" and ")
    );
    for (name, why) in run.skipped {
        let _ = writeln!(out, "**{name} was not measured**: {why}\n");
    }
    let mut columns = vec![DIRECT];
    columns.extend(run.refs.iter().map(|r| r.name));
    let _ = writeln!(
        out,
        "| measure | {GATEWAY} | {} | goal | |",
        columns.join(" | ")
    );
    let _ = writeln!(out, "|---|---|{}---|---|", "---|".repeat(columns.len()));
    let empty = " |".repeat(columns.len() + 3);
    for r in rows {
        if r.unit.is_empty() {
            let _ = writeln!(out, "| {} |{empty}", r.measure);
            continue;
        }
        let fmt = |v: f64| match r.unit {
            "req/s" => format!("{v:.0} {}", r.unit),
            _ => format!("{v:.3} {}", r.unit),
        };
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let value = r.others.iter().find(|(n, _)| n == c).map(|(_, v)| *v);
                match (value, r.ratio(c)) {
                    (Some(v), Some(x)) => format!("{} ({x:.2}×)", fmt(v)),
                    (Some(v), None) => fmt(v),
                    (None, _) => String::new(),
                }
            })
            .collect();
        let (goal, mark) = r.goal.as_ref().map_or(("", ""), |g| {
            (g.text.as_str(), if g.met { "met" } else { "**missed**" })
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {goal} | {mark} |",
            r.measure,
            fmt(r.gateway),
            cells.join(" | "),
        );
    }
    out
}

/// One scenario: it adds its rows to the report.
type Scenario = fn(&Bench, &mut Vec<Row>) -> anyhow::Result<()>;

pub fn bench(options: &Options) -> anyhow::Result<()> {
    cmd::ensure_apt(&[
        ("nginx", "nginx"),
        ("wrk", "wrk"),
        ("taskset", "util-linux"),
    ])?;
    let (refs, skipped) = reference::available();
    let topo = Topology::new((!options.unpinned).then_some(true));
    let dir = std::env::temp_dir().join(format!("mcp-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Copies, so that a build in a shared target directory can't swap them during the run.
    let own_copy = |built: PathBuf| -> anyhow::Result<PathBuf> {
        let copy = dir.join(built.file_name().context("a binary's name")?);
        std::fs::copy(&built, &copy).with_context(|| format!("copying {}", built.display()))?;
        Ok(copy)
    };
    let gateway_bin = own_copy(run::build_release()?)?;
    let benchtool = own_copy(run::build_test_bin("benchtool")?)?;
    // The gateway measured must be this tree's: in a target directory shared with another
    // checkout, its build can replace the binary between ours and the copy.
    let head = cmd::output(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(cmd::workspace_root()),
    )
    .map(|h| h.trim().to_owned());
    let version = cmd::output(Command::new(&gateway_bin).arg("--version")).unwrap_or_default();
    if let Some(head) = &head
        && !version.contains(head.as_str())
    {
        let _ = std::fs::remove_dir_all(&dir);
        bail!(
            "the gateway built is `{}`, not this tree's commit {head}: another build in the \
             same target directory replaced it; run the bench again",
            version.trim()
        );
    }
    let (upstream_port, unrelated_port) = (free_port()?, free_port()?);
    let conf = include_str!("../../bench/nginx-upstream.conf")
        .replace("{{PORT}}", &upstream_port.to_string())
        .replace("{{UNRELATED}}", &unrelated_port.to_string())
        .replace("{{DIR}}", &dir.display().to_string());
    std::fs::write(dir.join("upstream.conf"), conf)?;

    // As root, the upstream runs in a cgroup of the bench's own, where the kernel-layer scenario
    // attaches the programs (never the root cgroup).
    let cgroup = if cmd::is_root() {
        let mount = cgroup2_mount().context("no cgroup v2 mount")?;
        let dir = mount.join(format!("mcp-gateway-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Some(dir)
    } else {
        None
    };
    let mut upstream_cmd = topo.load(std::path::Path::new("sh"));
    upstream_cmd
        .arg("-c")
        .arg(match &cgroup {
            Some(cg) => format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.display()),
            None => "exec \"$@\"".to_owned(),
        })
        .arg("sh")
        .arg("nginx")
        .arg("-p")
        .arg(&dir)
        .args(["-c", "upstream.conf", "-g", "daemon off;"]);
    let upstream = Proc::spawn(&mut upstream_cmd, "nginx (upstream)")?;
    wait_listening(upstream_port)?;

    let b = Bench {
        topo: topo.clone(),
        dir: dir.clone(),
        gateway_bin,
        benchtool,
        seconds: if options.smoke { 1.0 } else { options.seconds },
        smoke: options.smoke,
        upstream_port,
        unrelated_port,
        cgroup: cgroup.clone(),
        refs: refs.clone(),
    };
    let mut rows = Vec::new();
    let scenarios: [(&str, Scenario); 6] = [
        ("throughput", scenarios::throughput),
        ("fixed rate", scenarios::fixed_rate),
        ("SSE", scenarios::sse),
        ("memory", scenarios::memory),
        ("start-up", scenarios::startup),
        ("kernel layer", scenarios::kernel),
    ];
    let mut result = Ok(());
    for (name, scenario) in scenarios {
        eprintln!("xtask: bench: {name}");
        if let Err(e) = scenario(&b, &mut rows) {
            result = Err(e.context(format!("bench scenario `{name}`")));
            break;
        }
    }
    drop(upstream);
    if let Some(cg) = &cgroup {
        let _ = std::fs::remove_dir(cg);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result?;

    let mut commit = head.unwrap_or_else(|| "?".to_owned());
    if cmd::output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
        .is_some_and(|s| !s.trim().is_empty())
    {
        commit.push_str(" with uncommitted changes");
    }
    let text = report(
        &rows,
        &Run {
            topo: &topo,
            options,
            commit: &commit,
            refs: &refs,
            skipped: &skipped,
        },
    );
    println!("\n{text}");
    let path = if options.smoke {
        run::target_dir().join("bench-smoke.md")
    } else {
        cmd::workspace_root().join("docs").join("benchmarks.md")
    };
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&old, &text))?;
    eprintln!("xtask: bench: wrote {}", path.display());
    Ok(())
}

const BEGIN: &str = "<!-- cargo xtask bench: begin -->";
const END: &str = "<!-- cargo xtask bench: end -->";

/// `doc` with the generated `table` between the markers (the analysis around them is kept), or
/// the table alone when `doc` has no markers.
fn splice(doc: &str, table: &str) -> String {
    let generated = format!("{BEGIN}\n{table}{END}\n");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(start), Some(end)) if start < end => {
            format!(
                "{}{generated}{}",
                &doc[..start],
                &doc[end + END.len()..].trim_start_matches('\n')
            )
        }
        _ => generated,
    }
}

/// Where cgroup v2 is mounted (from /proc/self/mounts).
fn cgroup2_mount() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
}
