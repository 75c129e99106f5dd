//! `mcp-gateway scan`: every listening TCP socket of this host (sock_diag), probed over loopback
//! for MCP, tested for DNS rebinding, and judged with the kernel layer's pins. What is sent is in
//! docs/scan.md.
pub mod config_out;
pub mod http;
pub mod identify;
pub mod owner;
pub mod report;
pub mod unix;
pub mod verdict;
pub mod watch;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Args;
use identify::{Outcome, Prober, Tcp, Unix};
use report::{Report, Row};
use verdict::{BindScope, Facts, GatewayOf, Kernel, Verdict};

use crate::ebpf::{pins::DEFAULT_PIN_DIR, status};

/// Flags of `mcp-gateway scan`.
#[derive(Clone, Debug, Args)]
pub struct ScanArgs {
    /// One JSON document (schema `mcp-gateway-scan/1`, see docs/scan.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only these local ports: a list and/or ranges, like `8000,8080-8090` [default: every
    /// listening port].
    #[arg(long, value_name = "LIST")]
    pub ports: Option<String>,
    /// Sockets probed at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Time for each request, connect to last byte (like `2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Also probe sockets bound to one specific non-loopback address, on that address
    /// (otherwise they are judged from their bind address alone).
    #[arg(long)]
    pub probe_bound_addresses: bool,
    /// Write a gateway configuration protecting the exposed MCP servers to FILE (one
    /// `[[server]]` each on a free loopback port, exclusive_upstream, kernel layer required).
    #[arg(long, value_name = "FILE")]
    pub config_out: Option<PathBuf>,
    /// bpffs directory of the kernel layer's pins, to tell which ports it protects.
    #[arg(long, env = "MCP_GATEWAY_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Also ask each MCP server found for its tools (`tools/list`, one request more; never a
    /// tool call).
    #[arg(long)]
    pub deep: bool,
    /// Also list the listening Unix stream sockets (/proc/net/unix) and probe each for MCP
    /// over the socket.
    #[arg(long)]
    pub unix: bool,
}

/// Runs `scan`: exit 0 when no MCP server is exposed, 1 when one is, 2 when the scan failed.
pub fn run(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    match scan(args).and_then(|report| {
        if let Some(path) = &args.config_out {
            write_config(&report, path)?;
        }
        Ok(report)
    }) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report::table(&report));
            }
            Ok(
                if report.rows.iter().any(|r| r.verdict == Verdict::Exposed) {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Err(err) => {
            eprintln!("mcp-gateway: error: {err:#}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `--config-out`: the configuration for the exposed servers, each on a free loopback port.
fn write_config(report: &Report, path: &Path) -> anyhow::Result<()> {
    let rows = config_out::candidates(report);
    if rows.is_empty() {
        eprintln!(
            "mcp-gateway: no exposed MCP server to put behind a gateway: {} not written",
            path.display()
        );
        return Ok(());
    }
    // Held until every port is chosen, so no two servers get the same one.
    let mut held = Vec::new();
    let mut entries = Vec::new();
    for row in rows {
        let free = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| Ok((l.local_addr()?, l)))
            .context("choosing a free loopback port for --config-out")?;
        entries.extend(config_out::entry(row, free.0));
        held.push(free.1);
    }
    drop(held);
    std::fs::write(path, config_out::render(&entries))
        .with_context(|| format!("writing the --config-out file {}", path.display()))?;
    eprintln!(
        "mcp-gateway: wrote {} server(s) to {}; check it, then run: sudo mcp-gateway run --config {}",
        entries.len(),
        path.display(),
        path.display()
    );
    Ok(())
}

/// `--timeout`: a duration like `2s`, not zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a zero timeout would judge every socket silent; give one like 2s".into()),
        Err(e) => Err(format!("{e}; give a duration like 2s or 500ms")),
    }
}

/// The ports of a `--ports` list.
pub fn parse_ports(list: &str) -> anyhow::Result<Vec<RangeInclusive<u16>>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| {
                    format!(
                        "--ports: `{s}` is not a port (1-65535); give a list like 8000,8080-8090"
                    )
                })
        };
        let range = match item.split_once('-') {
            Some((a, b)) => parse(a)?..=parse(b)?,
            None => parse(item)?..=parse(item)?,
        };
        if range.is_empty() {
            bail!("--ports: `{item}` runs backwards; write the lower port first");
        }
        out.push(range);
    }
    Ok(out)
}

/// Where the probes of a socket bound to `ip` go, or why it is not probed.
pub fn probe_target(ip: IpAddr, port: u16, probe_bound: bool) -> Result<SocketAddr, String> {
    let to = match BindScope::of(ip) {
        BindScope::Loopback => ip,
        BindScope::All if ip.is_ipv4() => Ipv4Addr::LOCALHOST.into(),
        BindScope::All => match ip {
            // `::ffff:0.0.0.0` listens on IPv4 too.
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Ipv4Addr::LOCALHOST.into(),
            _ => Ipv6Addr::LOCALHOST.into(),
        },
        BindScope::Address if probe_bound => ip,
        BindScope::Address => {
            return Err(format!(
                "bound to {ip} only; probed there only with --probe-bound-addresses"
            ));
        }
    };
    Ok((to, port).into())
}

/// The kernel layer's view of every protected port, or why it could not be read.
fn kernel_view(pin_dir: &Path) -> Result<HashMap<u16, (Kernel, Option<GatewayOf>)>, String> {
    match std::fs::metadata(pin_dir) {
        // Nothing pinned: no port is protected (not "unknown").
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(format!(
                "reading the pins in {}: {e} (run as root, or with CAP_BPF)",
                pin_dir.display()
            ));
        }
        Ok(_) => {}
    }
    let report = status::collect(pin_dir).map_err(|e| {
        format!(
            "reading the pins in {}: {e} (run as root, or with CAP_BPF)",
            pin_dir.display()
        )
    })?;
    Ok(report
        .ports
        .into_iter()
        .map(|row| {
            let exclusive = row.flags.contains(&"exclusive");
            let gateway = row
                .owners
                .iter()
                .find(|o| o.alive && o.role == "upstream")
                .map(|o| GatewayOf {
                    instance: o.instance.clone(),
                    server: o.server.clone(),
                    pid: o.pid,
                    exclusive,
                });
            let kernel = Kernel::Protected {
                flags: row.flags.iter().map(|f| (*f).to_owned()).collect(),
            };
            (row.port, (kernel, gateway))
        })
        .collect())
}

fn scan(args: &ScanArgs) -> anyhow::Result<Report> {
    scan_with(args, None)
}

/// The scan, leaving out the listeners of process `skip_pid` when given.
pub fn scan_with(args: &ScanArgs, skip_pid: Option<u32>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ranges = args.ports.as_deref().map(parse_ports).transpose()?;
    let mut listeners = crate::lockdown::sockets::tcp_listeners().context(
        "listing the listening TCP sockets through sock_diag netlink (is netlink allowed in \
         this sandbox? `ss -ltn` uses the same interface)",
    )?;
    if let Some(ranges) = &ranges {
        listeners.retain(|l| ranges.iter().any(|r| r.contains(&l.addr.port())));
    }
    listeners.sort_by_key(|l| (l.addr.port(), l.addr.ip()));
    let owners = owner::socket_owners();
    if let Some(pid) = skip_pid {
        listeners.retain(|l| owners.get(&l.inode) != Some(&pid));
    }
    let kernel = kernel_view(&args.pin_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(usize::from(args.concurrency)));
    let timeout = args.timeout;
    let deep = args.deep;
    let outcomes: Vec<(Result<Outcome, String>, Vec<String>)> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, l) in listeners.iter().enumerate() {
            let target = probe_target(l.addr.ip(), l.addr.port(), args.probe_bound_addresses);
            let limit = limit.clone();
            tasks.spawn(async move {
                let Ok(to) = target else {
                    return (i, (Err(target.unwrap_err()), Vec::new()));
                };
                let _permit = limit.acquire_owned().await;
                let mut prober = Prober::new(Tcp { to, timeout }, to.port(), deep);
                let outcome = prober.run().await;
                (i, (Ok(outcome), prober.sent))
            });
        }
        let mut out: Vec<_> = (0..listeners.len())
            .map(|_| (Err("its probe task failed".to_owned()), Vec::new()))
            .collect();
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, result)) = done {
                out[i] = result;
            }
        }
        out
    });
    let unix_rows = if args.unix {
        Some(runtime.block_on(scan_unix(args, &owners, &limit, skip_pid)))
    } else {
        None
    };
    let kernel_detail = kernel.as_ref().err().cloned();
    let rows = listeners
        .iter()
        .zip(outcomes)
        .map(|(l, (outcome, requests))| {
            let (kernel, gateway) = match &kernel {
                Ok(view) => view
                    .get(&l.addr.port())
                    .cloned()
                    .unwrap_or((Kernel::None, None)),
                Err(detail) => (
                    Kernel::Unknown {
                        detail: detail.clone(),
                    },
                    None,
                ),
            };
            let facts = Facts {
                ip: l.addr.ip(),
                port: l.addr.port(),
                scope: BindScope::of(l.addr.ip()),
                outcome,
                kernel,
                gateway,
            };
            let owner = owners.get(&l.inode).map(|pid| owner::describe(*pid));
            Row::new(facts, owner, l.uid, requests)
        })
        .collect();
    let report = Report::new(
        started_unix,
        started.elapsed(),
        &args.pin_dir,
        kernel_detail,
        rows,
    );
    Ok(match unix_rows {
        Some(rows) => report.with_unix(rows),
        None => report,
    })
}

/// `--unix`: every listening Unix stream socket with a path, probed over the socket (abstract
/// sockets are listed, not probed).
async fn scan_unix(
    args: &ScanArgs,
    owners: &HashMap<u32, u32>,
    limit: &Arc<tokio::sync::Semaphore>,
    skip_pid: Option<u32>,
) -> Vec<unix::UnixRow> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut listeners = unix::parse_proc_net_unix(&text);
    if let Some(pid) = skip_pid {
        listeners.retain(|l| owners.get(&l.inode) != Some(&pid));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let (limit, timeout, deep) = (limit.clone(), args.timeout, args.deep);
        let listener = l.clone();
        tasks.spawn(async move {
            if listener.is_abstract() {
                let why = "an abstract socket (only sockets with a path are probed)".to_owned();
                return (i, Err(why), Vec::new());
            }
            let _permit = limit.acquire_owned().await;
            let path = PathBuf::from(&listener.path);
            let mut prober = Prober::unix(Unix { path, timeout }, deep);
            let outcome = prober.run().await;
            (i, Ok(outcome), prober.sent)
        });
    }
    let mut outcomes: Vec<(Result<Outcome, String>, Vec<String>)> = (0..listeners.len())
        .map(|_| (Err("its probe task failed".to_owned()), Vec::new()))
        .collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, outcome, sent)) = done {
            outcomes[i] = (outcome, sent);
        }
    }
    listeners
        .iter()
        .zip(outcomes)
        .map(|(l, (outcome, sent))| {
            let mode = (!l.is_abstract())
                .then(|| std::fs::metadata(&l.path).ok())
                .flatten()
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
            let owner = owners.get(&l.inode).map(|pid| owner::describe(*pid));
            unix::UnixRow::new(l, mode, owner, outcome, sent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_durations() {
        assert_eq!(positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(positive_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["0s", "0", "", "2", "soon"] {
            assert!(positive_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_lists() {
        assert_eq!(parse_ports("8000").unwrap(), [8000..=8000]);
        assert_eq!(
            parse_ports("8000, 8080-8090").unwrap(),
            [8000..=8000, 8080..=8090]
        );
        for bad in [
            "",
            "0",
            "65536",
            "a",
            "9000-8000",
            "1-",
            "-5",
            "1--2",
            "8000,",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn probes_go_over_loopback_only() {
        let t = |ip: &str, bound| probe_target(ip.parse().unwrap(), 80, bound);
        assert_eq!(t("0.0.0.0", false), Ok("127.0.0.1:80".parse().unwrap()));
        assert_eq!(t("::", false), Ok("[::1]:80".parse().unwrap()));
        assert_eq!(
            t("::ffff:0.0.0.0", false),
            Ok("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(t("127.0.0.53", false), Ok("127.0.0.53:80".parse().unwrap()));
        assert_eq!(t("::1", false), Ok("[::1]:80".parse().unwrap()));
        assert!(t("198.18.0.1", false).is_err());
        assert!(t("fe80::1", false).is_err());
        assert_eq!(t("198.18.0.1", true), Ok("198.18.0.1:80".parse().unwrap()));
    }
}
