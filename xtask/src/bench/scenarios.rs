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
    Row,
    procs::{Proc, Topology, cpu_per_request, free_port, json, wait_listening},
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
}

/// One wrk run.
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    pub requests: f64,
    /// Answers that were not 2xx.
    pub non_2xx: f64,
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

    /// nginx with the same Host/Origin rules (`xtask/bench/nginx-proxy.conf`), in front of
    /// `upstream`, on the proxy CPUs with as many workers as the gateway.
    pub fn nginx(&self, upstream: &str) -> anyhow::Result<(Proc, u16)> {
        let port = free_port()?;
        let conf = include_str!("../../bench/nginx-proxy.conf")
            .replace("{{PORT}}", &port.to_string())
            .replace("{{UPSTREAM}}", upstream)
            .replace("{{WORKERS}}", &self.topo.workers.to_string())
            .replace("{{DIR}}", &self.dir.display().to_string());
        let path = self.dir.join(format!("proxy-{port}.conf"));
        std::fs::write(&path, conf)?;
        let proc = Proc::spawn(
            self.topo
                .proxy(std::path::Path::new("nginx"))
                .arg("-p")
                .arg(&self.dir)
                .arg("-c")
                .arg(&path)
                .args(["-g", "daemon off;"]),
            "nginx (proxy)",
        )?;
        wait_listening(port)?;
        Ok((proc, port))
    }

    /// A wrk script: the allowed `tools/list` POST, or with `host` a request the policy refuses.
    fn script(&self, host: Option<&str>) -> anyhow::Result<PathBuf> {
        let name = if host.is_some() {
            "reject.lua"
        } else {
            "post.lua"
        };
        let path = self.dir.join(name);
        let host_line = host.map_or(String::new(), |h| {
            format!("wrk.headers[\"Host\"] = \"{h}\"\n")
        });
        std::fs::write(
            &path,
            format!(
                "wrk.method = \"POST\"\n\
                 wrk.body = '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{{}}}}'\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n\
                 wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n\
                 {host_line}\
                 done = function(summary, latency, requests)\n\
                 io.write(string.format(\"RESULT %f %f %d %d\\n\", \
                 summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, \
                 summary.requests, summary.errors.status))\nend\n"
            ),
        )?;
        Ok(path)
    }

    /// wrk, closed loop, on the load CPUs.
    pub fn wrk(&self, port: u16, connections: u32, reject: Option<&str>) -> anyhow::Result<Wrk> {
        let script = self.script(reject)?;
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

/// Allowed and rejected requests, closed loop: throughput and p99 per core, and CPU per request.
pub fn throughput(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let upstream = format!("127.0.0.1:{}", b.upstream_port);
    let (gw, gw_port) = b.gateway(&upstream, &[])?;
    let (ng, ng_port) = b.nginx(&upstream)?;
    let connections: &[u32] = if b.smoke { &[32] } else { &[32, 1, 256] };
    for &c in connections {
        let (gw_run, gw_cpu) = cpu_per_request(&gw, || b.wrk(gw_port, c, None), |w| w.requests)?;
        let (ng_run, ng_cpu) = cpu_per_request(&ng, || b.wrk(ng_port, c, None), |w| w.requests)?;
        for (name, run) in [("mcp-gateway", &gw_run), ("nginx", &ng_run)] {
            if run.non_2xx > 0.0 {
                bail!("{name}: {} allowed requests were refused", run.non_2xx);
            }
        }
        rows.push(
            Row::new(
                format!("allowed POST, c={c}: req/s"),
                gw_run.rps,
                Some(ng_run.rps),
                "req/s",
            )
            .goal_if(c == 32, "≥ 1.2× nginx", |r| r >= 1.2),
        );
        rows.push(
            Row::new(
                format!("allowed POST, c={c}: p99"),
                gw_run.p99_ms,
                Some(ng_run.p99_ms),
                "ms",
            )
            .goal_if(c == 32, "≤ nginx's", |r| r <= 1.0),
        );
        if c == 32 {
            rows.push(Row::new(
                "allowed POST, c=32: CPU per request".into(),
                gw_cpu,
                Some(ng_cpu),
                "µs",
            ));
        }
    }
    // Rejected: a Host naming another site, as a DNS-rebinding page sends.
    let host = |port: u16| format!("rebind.test:{port}");
    let (gw_run, gw_cpu) = cpu_per_request(
        &gw,
        || b.wrk(gw_port, 32, Some(&host(gw_port))),
        |w| w.requests,
    )?;
    let (ng_run, ng_cpu) = cpu_per_request(
        &ng,
        || b.wrk(ng_port, 32, Some(&host(ng_port))),
        |w| w.requests,
    )?;
    for (name, run) in [("mcp-gateway", &gw_run), ("nginx", &ng_run)] {
        if run.non_2xx < run.requests {
            bail!(
                "{name}: {} rebinding requests were not refused",
                run.requests - run.non_2xx
            );
        }
    }
    rows.push(
        Row::new(
            "rejected (403), c=32: req/s".into(),
            gw_run.rps,
            Some(ng_run.rps),
            "req/s",
        )
        .goal_if(true, "≥ 1.0× nginx", |r| r >= 1.0),
    );
    rows.push(Row::new(
        "rejected (403), c=32: CPU per request".into(),
        gw_cpu,
        Some(ng_cpu),
        "µs",
    ));
    Ok(())
}

/// Open loop at a fixed rate: latency percentiles from the scheduled send time, and the proxy's
/// CPU time per request.
pub fn fixed_rate(b: &Bench, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let rps: u32 = if b.smoke { 500 } else { 10_000 };
    let upstream = format!("127.0.0.1:{}", b.upstream_port);
    let (gw, gw_port) = b.gateway(&upstream, &[])?;
    let (ng, ng_port) = b.nginx(&upstream)?;
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
    let direct = rate(b.upstream_port)?;
    let (gw_run, gw_cpu) = cpu_per_request(&gw, || rate(gw_port), count)?;
    let (ng_run, ng_cpu) = cpu_per_request(&ng, || rate(ng_port), count)?;
    for (name, run) in [
        ("direct", &direct),
        ("mcp-gateway", &gw_run),
        ("nginx", &ng_run),
    ] {
        if run["errors"].as_u64() != Some(0) || count(run) < 1.0 {
            bail!("{name}: fixed-rate run failed: {run}");
        }
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    for (key, label) in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")] {
        rows.push(Row::new(
            format!(
                "{rps} req/s open loop: {label} (direct {:.3} ms)",
                f(&direct, key)
            ),
            f(&gw_run, key),
            Some(f(&ng_run, key)),
            "ms",
        ));
    }
    rows.push(
        Row::new(
            format!("{rps} req/s: CPU per request"),
            gw_cpu,
            Some(ng_cpu),
            "µs",
        )
        .goal_if(true, "≤ 0.8× nginx", |r| r <= 0.8),
    );
    Ok(())
}

/// 100 SSE streams of 100 events a second: the delay each event gets, through the gateway and
/// through nginx, over going direct.
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
    let upstream = format!("127.0.0.1:{port}");
    let (_gw, gw_port) = b.gateway(&upstream, &[])?;
    let (_ng, ng_port) = b.nginx(&upstream)?;
    let clients = |port: u16| {
        json(
            b.tool()
                .arg("sse-clients")
                .arg(format!("http://127.0.0.1:{port}/mcp"))
                .args(["--streams", &streams.to_string()])
                .args(["--seconds", &b.seconds.to_string()]),
            "benchtool sse-clients",
        )
    };
    let p99 = |v: &serde_json::Value| v["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let direct = clients(port)?;
    let gw = clients(gw_port)?;
    let ng = clients(ng_port)?;
    for (name, run) in [("direct", &direct), ("mcp-gateway", &gw), ("nginx", &ng)] {
        if run["count"].as_f64().unwrap_or(0.0) < 1.0 {
            bail!("{name}: no SSE event arrived: {run}");
        }
    }
    let base = p99(&direct);
    rows.push(
        Row::new(
            format!(
                "SSE, {streams} streams × {rate} events/s: event delay p99 (direct {base:.3} ms)"
            ),
            p99(&gw),
            Some(p99(&ng)),
            "ms",
        )
        .absolute("≤ direct + 1 ms", move |v| v - base <= 1.0),
    );
    Ok(())
}

/// The gateway's resident memory: idle, with 1,000 idle keep-alive connections, with 1,000
/// open SSE streams.
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
    let upstream = format!("127.0.0.1:{port}");
    let (gw, gw_port) = b.gateway(&upstream, &[])?;
    let (ng, ng_port) = b.nginx(&upstream)?;
    thread::sleep(Duration::from_millis(500));
    rows.push(
        Row::new("RSS idle".into(), gw.rss_mib(), Some(ng.rss_mib()), "MiB")
            .absolute("≤ 20 MiB", |v| v <= 20.0),
    );
    for (sse, label, limit) in [
        (false, "keep-alive connections", 60.0),
        (true, "SSE streams", 80.0),
    ] {
        let held = |port: u16| hold(b, port, n, sse);
        let gw_hold = held(gw_port)?;
        let ng_hold = held(ng_port)?;
        thread::sleep(Duration::from_millis(300));
        rows.push(
            Row::new(
                format!("RSS with {n} {label}"),
                gw.rss_mib(),
                Some(ng.rss_mib()),
                "MiB",
            )
            .absolute(&format!("≤ {limit} MiB"), move |v| v <= limit),
        );
        drop((gw_hold, ng_hold));
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
    rows.push(Row::new(label.into(), ms, None, "ms").absolute("≤ 250 ms", |v| v <= 250.0));
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
            runs[0].push(b.wrk(b.upstream_port, 32, None)?.rps);
            runs[1].push(b.wrk(b.unrelated_port, 32, None)?.rps);
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
            let run = b.wrk(b.upstream_port, 32, None)?;
            let spent = program_time_ns(enforcing.pid()).saturating_sub(before);
            per_request.push(spent as f64 / run.requests);
            let _ = std::fs::write(stats, stats_were.trim());
        } else {
            runs[2].push(b.wrk(b.upstream_port, 32, None)?.rps);
            runs[3].push(b.wrk(b.unrelated_port, 32, None)?.rps);
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
    rows.push(Row::new(
        format!(
            "kernel programs' own run time per request, all its packets (bpf_stats; a request \
             costs {request_us:.1} µs of CPU direct)"
        ),
        ns / 1000.0,
        Some(request_us),
        "µs",
    ));
    rows.push(
        Row::new(
            "kernel programs attached: protected port, req/s (vs detached)".into(),
            on_p,
            Some(off_p),
            "req/s",
        )
        .goal_if(true, "≥ 0.97× detached", |r| r >= 0.97),
    );
    rows.push(
        Row::new(
            "kernel programs attached: unrelated port, req/s (vs detached)".into(),
            on_u,
            Some(off_u),
            "req/s",
        )
        .goal_if(true, "≥ 0.99× detached", |r| r >= 0.99),
    );
    Ok(())
}
