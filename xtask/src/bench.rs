//! `cargo xtask bench`: the gateway's cost, as ratios measured in one run.
//!
//! One nginx serves a fixed MCP-sized JSON answer (the upstream). wrk drives the same POST
//! (`tools/list`) four ways, one after another: straight to the upstream, through `mcp-gateway`
//! (release, `--ebpf off`), through a second `mcp-gateway` with a tool allowlist (so the answer is
//! parsed and its tools filtered), and through an nginx reverse proxy as the reference proxy.
//! Absolute numbers on a shared machine are noise; the ratios within one run are the result.
use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, run::build_release};

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
const ANSWER: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echo the input","inputSchema":{"type":"object"}}]}}"#;

/// A child killed (with its process group) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Result {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The proxy process's own CPU time per request (gateways only), robust to scheduling noise
    /// on a shared machine.
    cpu_us: Option<f64>,
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 is index 0, utime (14) index 11, stime (15) index 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second in /proc: Linux reports them in USER_HZ, 100 on x86 and arm64.
fn ticks_per_second() -> f64 {
    100.0
}

pub fn bench(seconds: u32, connections: u32) -> anyhow::Result<()> {
    cmd::ensure_apt(&[("nginx", "nginx"), ("wrk", "wrk")])?;
    let gateway_bin = build_release()?;

    let dir = std::env::temp_dir().join(format!("mcp-gateway-bench-{}", std::process::id()));
    fs::create_dir_all(dir.join("logs"))?;
    let (up, proxy, gw, gw_allow) = (free_port()?, free_port()?, free_port()?, free_port()?);
    fs::write(dir.join("nginx.conf"), nginx_conf(up, proxy))?;
    fs::write(dir.join("post.lua"), wrk_script())?;

    let _nginx = Guard(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?,
    );
    let gateway = |port: u16, extra: &[&str]| -> anyhow::Result<Guard> {
        Ok(Guard(
            Command::new(&gateway_bin)
                .args([
                    "run",
                    "--ebpf",
                    "off",
                    "--metrics-listen",
                    "off",
                    "--upstream",
                ])
                .arg(format!("http://127.0.0.1:{up}/mcp"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(extra)
                .env("RUST_LOG", "warn")
                .spawn()
                .context("starting mcp-gateway")?,
        ))
    };
    let plain = gateway(gw, &[])?;
    // The upstream lists one tool, `echo`: the allowlist keeps it, so only the cost differs.
    let allow = gateway(gw_allow, &["--allow-tool", "echo"])?;
    for port in [up, proxy, gw, gw_allow] {
        wait_listening(port)?;
    }

    let mut results = Vec::new();
    for (name, port, pid) in [
        ("direct", up, None),
        ("mcp-gateway", gw, Some(plain.0.id())),
        ("+allowlist", gw_allow, Some(allow.0.id())),
        ("nginx proxy", proxy, None),
    ] {
        eprintln!("xtask: bench {name}: {seconds}s, {connections} connections");
        let before = pid.and_then(cpu_ticks);
        let mut result = wrk(name, port, seconds, connections, &dir)?;
        if let (Some(pid), Some(before)) = (pid, before)
            && let Some(after) = cpu_ticks(pid)
        {
            let requests = result.rps * f64::from(seconds);
            result.cpu_us = Some((after - before) as f64 / ticks_per_second() * 1e6 / requests);
        }
        results.push(result);
    }
    let _ = fs::remove_dir_all(&dir);

    println!(
        "\n{:<12} {:>10} {:>9} {:>9} {:>12}",
        "target", "req/s", "p50 ms", "p99 ms", "cpu µs/req"
    );
    for r in &results {
        let cpu = r
            .cpu_us
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        println!(
            "{:<12} {:>10.0} {:>9.3} {:>9.3} {:>12}",
            r.name, r.rps, r.p50_ms, r.p99_ms, cpu
        );
    }
    let (direct, gateway, allow, nginx) = (&results[0], &results[1], &results[2], &results[3]);
    println!(
        "\nthroughput: gateway/direct = {:.2}, gateway/nginx = {:.2}",
        gateway.rps / direct.rps,
        gateway.rps / nginx.rps
    );
    if let (Some(with), Some(without)) = (allow.cpu_us, gateway.cpu_us) {
        println!(
            "tool allowlist on (tools/list answers parsed and filtered): {:.2}x the gateway's CPU \
             per request; throughput {:.2}x (noisy unpinned)",
            with / without,
            allow.rps / gateway.rps,
        );
    }
    println!(
        "p50 latency: gateway/direct = {:.2}, gateway/nginx = {:.2}",
        gateway.p50_ms / direct.p50_ms,
        gateway.p50_ms / nginx.p50_ms
    );
    Ok(())
}

fn nginx_conf(up: u16, proxy: u16) -> String {
    format!(
        // One process (no master): killing the child we started stops all of nginx.
        r#"master_process off;
worker_processes 1;
pid nginx.pid;
error_log logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path /tmp;
    proxy_temp_path /tmp;
    upstream mcp {{ server 127.0.0.1:{up}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{up};
        location / {{
            default_type application/json;
            return 200 '{ANSWER}';
        }}
    }}
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

fn wrk_script() -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n\
         done = function(summary, latency, requests)\n\
         io.write(string.format(\"RESULT %f %f %f\\n\", summary.requests / (summary.duration / 1e6), \
         latency:percentile(50) / 1000, latency:percentile(99) / 1000))\nend\n"
    )
}

fn wrk(
    name: &'static str,
    port: u16,
    seconds: u32,
    connections: u32,
    dir: &Path,
) -> anyhow::Result<Result> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .arg("-s")
        .arg(dir.join("post.lua"))
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("{name}: some answers were not 2xx:\n{text}");
    }
    let fields: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("{name}: no result from wrk:\n{text}"))?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [rps, p50_ms, p99_ms] = fields[..] else {
        bail!("{name}: unexpected wrk result: {text}");
    };
    Ok(Result {
        name,
        rps,
        p50_ms,
        p99_ms,
        cpu_us: None,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(port: u16) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 20s")
}
