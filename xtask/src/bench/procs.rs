//! The processes a benchmark runs, pinned to their CPUs, and what /proc says about them.
use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where things run. Pinned (the default with 2+ CPUs): the proxy under test alone on the last
/// CPU, the load generators and the upstream on the others, so the proxy's throughput is one
/// core's. Unpinned: everything anywhere, and both proxies get one worker per CPU.
#[derive(Clone, Debug)]
pub struct Topology {
    pub pinned: bool,
    /// CPUs of the proxy under test (`taskset -c` list).
    pub proxy_cpus: String,
    /// CPUs of the load generators and the upstream.
    pub load_cpus: String,
    /// Workers each proxy gets.
    pub workers: usize,
}

impl Topology {
    pub fn new(pinned: Option<bool>) -> Self {
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        let pinned = pinned.unwrap_or(cpus >= 2) && cpus >= 2;
        let all = format!("0-{}", cpus - 1);
        if pinned {
            Self {
                pinned,
                proxy_cpus: (cpus - 1).to_string(),
                load_cpus: if cpus == 2 {
                    "0".to_owned()
                } else {
                    format!("0-{}", cpus - 2)
                },
                workers: 1,
            }
        } else {
            Self {
                pinned,
                proxy_cpus: all.clone(),
                load_cpus: all,
                workers: cpus,
            }
        }
    }

    /// `program` on the proxy's CPUs.
    pub fn proxy(&self, program: &Path) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.proxy_cpus]).arg(program);
        cmd
    }

    /// `program` on the load CPUs.
    pub fn load(&self, program: &Path) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.load_cpus]).arg(program);
        cmd
    }
}

/// A child killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime, in clock ticks (USER_HZ: 100 a second on x86 and arm64).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the name: field 3 is index 0, utime (14) index 11, stime (15) index 12.
        field(11) + field(12)
    }

    /// Resident memory, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU microseconds per request spent by `proc` while `run` made `requests()` requests.
pub fn cpu_per_request<T>(
    proc: &Proc,
    run: impl FnOnce() -> anyhow::Result<T>,
    requests: impl Fn(&T) -> f64,
) -> anyhow::Result<(T, f64)> {
    let before = proc.cpu_ticks();
    let out = run()?;
    let ticks = proc.cpu_ticks().saturating_sub(before);
    let n = requests(&out);
    let us = if n > 0.0 {
        ticks as f64 * 10_000.0 / n
    } else {
        0.0
    };
    Ok((out, us))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_listening(port: u16) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 20s")
}

/// Runs `cmd` and parses the one JSON object it prints.
pub fn json(cmd: &mut Command, what: &str) -> anyhow::Result<serde_json::Value> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {text}"))
}
