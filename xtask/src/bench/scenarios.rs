//! What `cargo xtask bench` measures, one function per scenario. Each returns rows for the
//! report; the ratios within one run are the result (absolute numbers on a shared machine are
//! noise).
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    DIRECT, GATEWAY, Row,
    procs::{Proc, Topology, cpu_per_request, free_port, json, wait_listening},
    reference::Reference,
};

/// Everything the scenarios share.
pub struct Bench {
    pub topo: Topology,
    pub dir: PathBuf,
    pub gateway_bin: PathBuf,
    pub benchtool: PathBuf,
    /// Seconds per measurement.
    pub seconds: f64,
    pub smoke: bool,
    pub upstream_port: u16,
    pub unrelated_port: u16,
    /// The cgroup the upstream runs in and the kernel programs attach to (root only).
    pub cgroup: Option<PathBuf>,
    /// The reference proxies this run measures (those that could be installed).
    pub refs: Vec<&'static Reference>,
}

/// One wrk run.
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    pub requests: f64,
    /// Answers that were not 2xx.
    pub non_2xx: f64,
}

/// A JSON-RPC request the closed-loop runs POST.
#[derive(Clone, Copy)]
pub struct Request {
    /// How the report names it.
    label: &'static str,
    /// Its file name in the bench's directory.
    name: &'static str,
    body: &'static str,
}

/// The small request every scenario uses.
pub const TOOLS_LIST: Request = Request {
    label: "tools/list",
    name: "tools-list",
    body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
};

/// A realistic `tools/call`: about 1 KiB of arguments (an issue to file), which the gateway
/// parses like any MCP body.
pub const TOOLS_CALL: Request = Request {
    label: "tools/call 1 KiB",
    name: "tools-call",
    body: include_str!("../../bench/tools-call.json"),
};

/// Where a scenario sends its load: the gateway, a reference proxy, or the upstream itself.
pub struct Target {
    /// Its report column.
    pub name: &'static str,
    pub port: u16,
    /// The proxy's process; none when direct.
    pub proc: Option<Proc>,
}

impl Target {
    /// `run`'s result, and the proxy's CPU microseconds per request over it (NaN when direct).
    fn cpu_per_request<T>(
        &self,
        run: impl FnOnce() -> anyhow::Result<T>,
        requests: impl Fn(&T) -> f64,
    ) -> anyhow::Result<(T, f64)> {
        match &self.proc {
            Some(proc) => cpu_per_request(proc, run, requests),
            None => Ok((run()?, f64::NAN)),
        }
    }

    fn rss_mib(&self) -> f64 {
        self.proc.as_ref().map_or(f64::NAN, Proc::rss_mib)
    }
}

impl Bench {
    /// The gateway under test, in front of `upstream` (`host:port`), on the proxy CPUs.
    pub fn gateway(&self, upstream: &str, extra: &[&str]) -> anyhow::Result<(Proc, u16)> {
        let port = free_port()?;
        let workers = self.topo.workers.to_string();
        let proc = Proc::spawn(
            self.topo
                .proxy(&self.gateway_bin)
                .args(["run", "--ebpf", "off", "--metrics-listen", "off"])
                .args(["--workers", &workers, "--max-connections", "4096"])
                .arg("--upstream")
                .arg(format!("http://{upstream}/mcp"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(extra)
                .env("RUST_LOG", "warn"),
            "mcp-gateway",
        )?;
        wait_listening(port)?;
        Ok((proc, port))
    }

    /// A reference proxy with the same Host/Origin rules, in front of `upstream`, on the proxy
    /// CPUs with as many workers as the gateway.
    pub fn reference(&self, r: &Reference, upstream: &str) -> anyhow::Result<(Proc, u16)> {
        let port = free_port()?;
        let path = self.dir.join(format!("{}-{port}.conf", r.name));
        std::fs::write(
            &path,
            r.config(port, upstream, self.topo.workers, &self.dir),
        )?;
        let proc = Proc::spawn(
            self.topo.proxy(r.program()).args(r.args(&path, &self.dir)),
            &format!("{} (proxy)", r.name),
        )?;
        wait_listening(port).with_context(|| format!("{} did not start", r.name))?;
        Ok((proc, port))
    }

    /// The gateway and every reference in front of the upstream at `upstream_port`, after
    /// going straight to it when `direct`.
    pub fn targets(&self, upstream_port: u16, direct: bool) -> anyhow::Result<Vec<Target>> {
        let upstream = format!("127.0.0.1:{upstream_port}");
        let mut targets = Vec::new();
        if direct {
            targets.push(Target {
                name: DIRECT,
                port: upstream_port,
                proc: None,
            });
        }
        let (gw, port) = self.gateway(&upstream, &[])?;
        targets.push(Target {
            name: GATEWAY,
            port,
            proc: Some(gw),
        });
        for r in &self.refs {
            let (proc, port) = self.reference(r, &upstream)?;
            targets.push(Target {
                name: r.name,
                port,
                proc: Some(proc),
            });
        }
        Ok(targets)
    }

    /// A wrk script: `request` allowed, or with `host` refused by the policy.
    fn script(&self, request: Request, host: Option<&str>) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!(
            "{}{}.lua",
            request.name,
            if host.is_some() { "-reject" } else { "" }
        ));
        let host_line = host.map_or(String::new(), |h| {
            format!("wrk.headers[\"Host\"] = \"{h}\"\n")
        });
        // A long bracket: the body's backslashes stay as they are.
        std::fs::write(
            &path,
            format!(
                "wrk.method = \"POST\"\n\
                 wrk.body = [==[{}]==]\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n\
                 wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n\
                 {host_line}\
                 done = function(summary, latency, requests)\n\
                 io.write(string.format(\"RESULT %f %f %d %d\\n\", \
                 summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, \
                 summary.requests, summary.errors.status))\nend\n",
                request.body.trim()
            ),
        )?;
        Ok(path)
    }

    /// wrk, closed loop, on the load CPUs.
    pub fn wrk(
        &self,
        port: u16,
        connections: u32,
        request: Request,
        reject: Option<&str>,
    ) -> anyhow::Result<Wrk> {
        let script = self.script(request, reject)?;
        let threads = self.load_threads().min(connections as usize).to_string();
        let duration = format!("{}s", self.seconds.max(1.0).round());
        let out = self
            .topo
            .load(std::path::Path::new("wrk"))
            .args([
                "-t",
                &threads,
                "-c",
                &connections.to_string(),
                "-d",
                &duration,
            ])
            .arg("-s")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}/mcp"))
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<f64> = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .with_context(|| format!("no result from wrk:\n{text}"))?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [rps, p99_ms, requests, non_2xx] = fields[..] else {
            bail!("unexpected wrk result: {text}");
        };
        if requests < 1.0 {
            bail!("wrk made no request:\n{text}");
        }
        Ok(Wrk {
            rps,
            p99_ms,
            requests,
            non_2xx,
        })
    }

    fn load_threads(&self) -> usize {
        if self.topo.pinned {
            1
        } else {
            self.topo.workers
        }
    }

    fn tool(&self) -> Command {
        self.topo.load(&self.benchtool)
    }
}

/// Allowed requests (`tools/list`, and a 1 KiB `tools/call`) and rejected ones, closed loop:
/// throughput and p99 per core, and CPU per request.
pub fn throughput(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let targets = b.targets(b.upstream_port, true)?;
    let runs: &[(Request, &[u32])] = if b.smoke {
        &[(TOOLS_LIST, &[32]), (TOOLS_CALL, &[32])]
    } else {
        &[(TOOLS_LIST, &[32, 1, 256]), (TOOLS_CALL, &[32, 256])]
    };
    for &(request, connections) in runs {
        for &c in connections {
            let mut rps = Vec::new();
            let mut p99 = Vec::new();
            let mut cpu = Vec::new();
            for t in &targets {
                let (run, us) =
                    t.cpu_per_request(|| b.wrk(t.port, c, request, None), |w| w.requests)?;
                if run.non_2xx > 0.0 {
                    bail!("{}: {} allowed requests were refused", t.name, run.non_2xx);
                }
                rps.push((t.name, run.rps));
                p99.push((t.name, run.p99_ms));
                cpu.push((t.name, us));
            }
            let what = format!("allowed {} POST, c={c}", request.label);
            rows.push(Row::new(format!("{what}: req/s"), "req/s", &rps).goal_if(
                c == 32,
                "nginx",
                "≥ 1.2× nginx",
                |r| r >= 1.2,
            ));
            rows.push(Row::new(format!("{what}: p99"), "ms", &p99).goal_if(
                c == 32,
                "nginx",
                "≤ nginx's",
                |r| r <= 1.0,
            ));
            if c == 32 {
                rows.push(Row::new(format!("{what}: CPU per request"), "µs", &cpu));
            }
        }
    }
    // Rejected: a Host naming another site, as a DNS-rebinding page sends. (The upstream itself
    // would accept it: no direct column.)
    let mut rps = Vec::new();
    let mut cpu = Vec::new();
    for t in targets.iter().filter(|t| t.proc.is_some()) {
        let host = format!("rebind.test:{}", t.port);
        let (run, us) = t.cpu_per_request(
            || b.wrk(t.port, 32, TOOLS_LIST, Some(&host)),
            |w| w.requests,
        )?;
        if run.non_2xx < run.requests {
            bail!(
                "{}: {} rebinding requests were not refused",
                t.name,
                run.requests - run.non_2xx
            );
        }
        rps.push((t.name, run.rps));
        cpu.push((t.name, us));
    }
    rows.push(
        Row::new("rejected (403), c=32: req/s".into(), "req/s", &rps).goal_if(
            true,
            "nginx",
            "≥ 1.0× nginx",
            |r| r >= 1.0,
        ),
    );
    rows.push(Row::new(
        "rejected (403), c=32: CPU per request".into(),
        "µs",
        &cpu,
    ));
    Ok(())
}

/// Open loop at a fixed rate: latency percentiles from the scheduled send time, and the proxy's
/// CPU time per request.
pub fn fixed_rate(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let rps: u32 = if b.smoke { 500 } else { 10_000 };
    let targets = b.targets(b.upstream_port, true)?;
    let rate = |port: u16| {
        json(
            b.tool()
                .arg("rate")
                .arg(format!("http://127.0.0.1:{port}/mcp"))
                .args(["--rps", &rps.to_string(), "--connections", "32"])
                .args(["--seconds", &b.seconds.to_string()]),
            "benchtool rate",
        )
    };
    let count = |v: &serde_json::Value| v["count"].as_f64().unwrap_or(0.0);
    let mut runs = Vec::new();
    for t in &targets {
        let (run, us) = t.cpu_per_request(|| rate(t.port), count)?;
        if run["errors"].as_u64() != Some(0) || count(&run) < 1.0 {
            bail!("{}: fixed-rate run failed: {run}", t.name);
        }
        runs.push((t.name, run, us));
    }
    let column = |f: &dyn Fn(&serde_json::Value, f64) -> f64| -> Vec<(&'static str, f64)> {
        runs.iter().map(|(n, v, us)| (*n, f(v, *us))).collect()
    };
    for (key, label) in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")] {
        rows.push(Row::new(
            format!("{rps} req/s open loop: {label}"),
            "ms",
            &column(&|v, _| v[key].as_f64().unwrap_or(f64::NAN)),
        ));
    }
    rows.push(
        Row::new(
            format!("{rps} req/s: CPU per request"),
            "µs",
            &column(&|_, us| us),
        )
        .goal_if(true, "nginx", "≤ 0.8× nginx", |r| r <= 0.8),
    );
    Ok(())
}

/// 100 SSE streams of 100 events a second: the delay each event gets, through each proxy and
/// going direct.
pub fn sse(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (streams, rate) = if b.smoke { (10, 20) } else { (100, 100) };
    let port = free_port()?;
    let _server = Proc::spawn(
        b.tool()
            .args(["sse-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--events-per-sec", &rate.to_string()]),
        "benchtool sse-server",
    )?;
    wait_listening(port)?;
    let targets = b.targets(port, true)?;
    let mut p99 = Vec::new();
    for t in &targets {
        let run = json(
            b.tool()
                .arg("sse-clients")
                .arg(format!("http://127.0.0.1:{}/mcp", t.port))
                .args(["--streams", &streams.to_string()])
                .args(["--seconds", &b.seconds.to_string()]),
            "benchtool sse-clients",
        )?;
        if run["count"].as_f64().unwrap_or(0.0) < 1.0 {
            bail!("{}: no SSE event arrived: {run}", t.name);
        }
        p99.push((t.name, run["p99_ms"].as_f64().unwrap_or(f64::NAN)));
    }
    let base = p99
        .iter()
        .find(|(n, _)| *n == DIRECT)
        .map_or(f64::NAN, |(_, v)| *v);
    rows.push(
        Row::new(
            format!("SSE, {streams} streams × {rate} events/s: event delay p99"),
            "ms",
            &p99,
        )
        .absolute("≤ direct + 1 ms", move |v| v - base <= 1.0),
    );
    Ok(())
}

/// Each proxy's resident memory: idle, with 1,000 idle keep-alive connections, with 1,000 open
/// SSE streams.
pub fn memory(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n: usize = if b.smoke { 50 } else { 1000 };
    let port = free_port()?;
    let _server = Proc::spawn(
        b.tool()
            .args(["sse-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--events-per-sec", "1"]),
        "benchtool sse-server",
    )?;
    wait_listening(port)?;
    let targets = b.targets(port, false)?;
    let rss =
        || -> Vec<(&'static str, f64)> { targets.iter().map(|t| (t.name, t.rss_mib())).collect() };
    thread::sleep(Duration::from_millis(500));
    rows.push(Row::new("RSS idle".into(), "MiB", &rss()).absolute("≤ 20 MiB", |v| v <= 20.0));
    for (sse, label, limit) in [
        (false, "keep-alive connections", 60.0),
        (true, "SSE streams", 80.0),
    ] {
        let held = targets
            .iter()
            .map(|t| hold(b, t.port, n, sse))
            .collect::<anyhow::Result<Vec<_>>>()?;
        thread::sleep(Duration::from_millis(300));
        rows.push(
            Row::new(format!("RSS with {n} {label}"), "MiB", &rss())
                .absolute(&format!("≤ {limit} MiB"), move |v| v <= limit),
        );
        drop(held);
    }
    Ok(())
}

/// `benchtool hold`, until the returned guard drops.
fn hold(b: &Bench, port: u16, n: usize, sse: bool) -> anyhow::Result<Proc> {
    let mut cmd = b.tool();
    cmd.arg("hold")
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .args(["--connections", &n.to_string()]);
    if sse {
        cmd.arg("--sse");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting benchtool hold")?;
    let mut out = child.stdout.take().context("hold's stdout")?;
    let mut line = [0u8; 64];
    let read = std::io::Read::read(&mut out, &mut line)?;
    if !String::from_utf8_lossy(&line[..read]).contains("ready") {
        bail!("benchtool hold did not get its {n} connections");
    }
    // The child holds its connections until its stdin closes: when the guard kills it.
    Ok(Proc { child })
}

/// From starting the gateway to the first request it serves; with the kernel layer attached
/// when this runs as root.
pub fn startup(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let port = free_port()?;
    let pin_dir =
        PathBuf::from("/sys/fs/bpf").join(format!("mcp-gateway-bench-{}", std::process::id()));
    let mut cmd = b.tool();
    cmd.arg("startup")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg("--")
        .arg(&b.gateway_bin)
        .args(["run", "--metrics-listen", "off"])
        .arg("--upstream")
        .arg(format!("http://127.0.0.1:{}/mcp", b.upstream_port))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let kernel = b.cgroup.is_some();
    match &b.cgroup {
        Some(cgroup) => {
            cmd.args(["--ebpf", "required", "--cgroup"])
                .arg(cgroup)
                .arg("--pin-dir")
                .arg(&pin_dir);
        }
        None => {
            cmd.args(["--ebpf", "off"]);
        }
    }
    let run = json(&mut cmd, "benchtool startup");
    if kernel {
        let _ = Command::new(&b.gateway_bin)
            .args(["detach", "--all", "--pin-dir"])
            .arg(&pin_dir)
            .output();
    }
    let ms = run?["first_request_ms"].as_f64().unwrap_or(f64::NAN);
    let label = if kernel {
        "start-up to first request served, eBPF attached"
    } else {
        "start-up to first request served (kernel layer off: not root)"
    };
    rows.push(Row::new(label.into(), "ms", &[(GATEWAY, ms)]).absolute("≤ 250 ms", |v| v <= 250.0));
    Ok(())
}

/// The run time (ns) the kernel has accounted to the BPF programs `pid` holds open, from their
/// fdinfo (needs `kernel.bpf_stats_enabled`).
fn program_time_ns(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("run_time_ns:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Throughput straight to the upstream, with the kernel programs attached to its cgroup and
/// without: on the protected port, and on an unrelated one. Root only.
pub fn kernel(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let Some(cgroup) = &b.cgroup else {
        rows.push(Row::note("kernel layer: not measured (needs root)"));
        return Ok(());
    };
    let pin_dir =
        PathBuf::from("/sys/fs/bpf").join(format!("mcp-gateway-bench-k-{}", std::process::id()));
    let rounds = if b.smoke { 1 } else { 3 };
    let mut runs: [Vec<f64>; 4] = Default::default();
    // The kernel's own accounting of the programs' run time, in a last run of its own: it
    // costs a little itself, so the throughput runs go without it.
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_were = std::fs::read_to_string(stats).unwrap_or_default();
    let mut per_request = Vec::new();
    for round in 0..=rounds {
        let last = round == rounds;
        if !last {
            runs[0].push(b.wrk(b.upstream_port, 32, TOOLS_LIST, None)?.rps);
            runs[1].push(b.wrk(b.unrelated_port, 32, TOOLS_LIST, None)?.rps);
        }
        let enforcing = Proc::spawn(
            b.topo
                .proxy(&b.gateway_bin)
                .args(["run", "--metrics-listen", "off", "--ebpf", "required"])
                .arg("--upstream")
                .arg(format!("http://127.0.0.1:{}/mcp", b.upstream_port))
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", free_port()?))
                .arg("--cgroup")
                .arg(cgroup)
                .arg("--pin-dir")
                .arg(&pin_dir),
            "mcp-gateway (enforcing)",
        )?;
        // In force once the programs are pinned.
        let mut waited = 0;
        while !pin_dir.join("v3").exists() && waited < 200 {
            thread::sleep(Duration::from_millis(25));
            waited += 1;
        }
        thread::sleep(Duration::from_millis(200));
        if last {
            let _ = std::fs::write(stats, "1");
            let before = program_time_ns(enforcing.pid());
            let run = b.wrk(b.upstream_port, 32, TOOLS_LIST, None)?;
            let spent = program_time_ns(enforcing.pid()).saturating_sub(before);
            per_request.push(spent as f64 / run.requests);
            let _ = std::fs::write(stats, stats_were.trim());
        } else {
            runs[2].push(b.wrk(b.upstream_port, 32, TOOLS_LIST, None)?.rps);
            runs[3].push(b.wrk(b.unrelated_port, 32, TOOLS_LIST, None)?.rps);
        }
        drop(enforcing);
        let _ = Command::new(&b.gateway_bin)
            .args(["detach", "--all", "--pin-dir"])
            .arg(&pin_dir)
            .output();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ns = median(&mut per_request);
    let [mut off_p, mut off_u, mut on_p, mut on_u] = runs;
    let (off_p, off_u, on_p, on_u) = (
        median(&mut off_p),
        median(&mut off_u),
        median(&mut on_p),
        median(&mut on_u),
    );
    // wrk saturates the load CPU it shares with the upstream: a request costs 1/rps of it.
    let request_us = 1e6 / off_p;
    // In these rows the gateway's column is the kernel programs' (attached), and the direct
    // column the upstream's without them.
    rows.push(Row::new(
        "kernel programs' own run time per request, all its packets (bpf_stats), against a \
         request's CPU direct"
            .into(),
        "µs",
        &[(GATEWAY, ns / 1000.0), (DIRECT, request_us)],
    ));
    rows.push(
        Row::new(
            "kernel programs attached: protected port, req/s (direct: detached)".into(),
            "req/s",
            &[(GATEWAY, on_p), (DIRECT, off_p)],
        )
        .goal_if(true, DIRECT, "≥ 0.97× detached", |r| r >= 0.97),
    );
    rows.push(
        Row::new(
            "kernel programs attached: unrelated port, req/s (direct: detached)".into(),
            "req/s",
            &[(GATEWAY, on_u), (DIRECT, off_u)],
        )
        .goal_if(true, DIRECT, "≥ 0.99× detached", |r| r >= 0.99),
    );
    Ok(())
}
