//! `mcp-gateway stats`: the rejection counters straight from the pinned map, so they can be read
//! while the gateway is stopped.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::ebpf::{
    counters::{Counter, PinnedCounters},
    pins::{self, DEFAULT_PIN_DIR},
};

/// Flags of `mcp-gateway stats`.
#[derive(Clone, Debug, Args)]
pub struct StatsArgs {
    /// bpffs directory the gateway pinned into.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// One JSON document: `{"pin_dir": ..., "counters": [{"reason", "origin", "count"}...]}`.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds until interrupted [default: 2 when given without SECS].
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}

/// Runs `stats`; exit status 1 when no counters map is pinned.
pub fn run(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let Some(every) = args.watch else {
        return once(args);
    };
    let every = Duration::try_from_secs_f64(every)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--watch: give a positive number of seconds")?;
    loop {
        if !args.json {
            // Clear the terminal and go home, like watch(1).
            print!("\x1b[2J\x1b[H");
        }
        once(args)?;
        std::thread::sleep(every);
    }
}

fn once(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let pinned = PinnedCounters::open(&args.pin_dir).with_context(|| {
        format!(
            "opening the counters pinned in {} (run as root, or with CAP_BPF)",
            args.pin_dir.display()
        )
    })?;
    let Some(pinned) = pinned else {
        let path = pins::map_path(&args.pin_dir, gateway_common::map::COUNTERS);
        let msg = format!(
            "no counters map is pinned at {}: the gateway has not run with kernel enforcement \
             on this pin directory, or it was detached (`mcp-gateway detach` removes the counters \
             unless --keep-counters). Without the kernel layer (--ebpf off) counters live only \
             in the gateway process: read them from its /metrics",
            path.display()
        );
        if args.json {
            let doc = serde_json::json!({
                "pin_dir": args.pin_dir.display().to_string(),
                "pinned": false,
                "error": msg,
                "counters": [],
            });
            println!("{doc}");
        } else {
            eprintln!("mcp-gateway: {msg}");
        }
        return Ok(ExitCode::from(1));
    };
    let mut counters = pinned.read().context("reading the pinned counters")?;
    // Busiest first; ties in a stable order.
    counters.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.key.reason.cmp(&b.key.reason))
            .then_with(|| a.label().cmp(&b.label()))
    });
    if args.json {
        print_json(args, &counters);
    } else {
        print_table(args, &counters);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(args: &StatsArgs, counters: &[Counter]) {
    let rows: Vec<_> = counters
        .iter()
        .map(|c| {
            serde_json::json!({
                "reason": c.reason_name(),
                "origin": c.label(),
                "credential": Some(c.credential()).filter(|n| !n.is_empty()),
                "count": c.count,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "pin_dir": args.pin_dir.display().to_string(),
        "pinned": true,
        "counters": rows,
    });
    println!("{doc}");
}

fn print_table(args: &StatsArgs, counters: &[Counter]) {
    println!("counters pinned in {}", args.pin_dir.display());
    if counters.is_empty() {
        println!("no rejections counted yet");
        return;
    }
    let width = counters
        .iter()
        .map(|c| c.count.to_string().len())
        .max()
        .unwrap_or(0)
        .max("COUNT".len());
    println!("{:>width$}  {:<20}  ORIGIN", "COUNT", "REASON");
    for c in counters {
        // Labels are printable ASCII (escaped), so a hostile origin can't move the cursor.
        let credential = c.credential();
        let by = match credential.is_empty() {
            true => String::new(),
            false => format!("  (credential {credential})"),
        };
        println!(
            "{:>width$}  {:<20}  {}{by}",
            c.count,
            c.reason_name(),
            c.label()
        );
    }
}
