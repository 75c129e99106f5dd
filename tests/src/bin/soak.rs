//! The soak run behind `cargo xtask soak`: the real gateway under mixed traffic for minutes,
//! with its upstream restarted every minute, reporting over time what must stay flat.
//!
//! - `soak run --gateway BIN --minutes M [--report FILE]`: starts an upstream (this program,
//!   `upstream` mode) and `BIN run --ebpf off` in front of it, then runs until the time is up:
//!   - allowed MCP POSTs on keep-alive connections;
//!   - attacks: a rebinding Host, a hostile Origin, and hostile Origins that are all different
//!     (a flood of metric labels and log lines);
//!   - SSE streams (`GET /mcp`), reopened whenever they end;
//!   - an upstream restart (SIGTERM, then a new process on the same port) in the middle of every
//!     minute.
//!
//!   Every few seconds it samples the gateway's RSS and open file descriptors. At the end it
//!   checks: the rejection counters equal the attacks sent, exactly; the upstream saw no attack;
//!   every attack got a 403 and every allowed request a 200 (or a 502/504 while the upstream was
//!   restarting); SSE streams only ever ended cleanly; RSS and descriptors stayed flat. It prints
//!   a Markdown report (also to `--report`), and exits non-zero when a check fails.
//! - `soak upstream --listen ADDR`: the MCP server stand-in. POST answers a JSON-RPC result,
//!   GET is an SSE stream of an event every 100 ms. It prints `hostile ...` for any request that
//!   carries an attack's marks, and `served N` when SIGTERM stops it.
use std::{
    convert::Infallible,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use mcp_gateway_tests::prometheus::{free_port, parse, scrape, value, wait_listening};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the soak against a gateway binary.
    Run {
        #[arg(long)]
        gateway: PathBuf,
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// Also write the Markdown report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// The upstream MCP server stand-in.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// Marks every attack carries in its Host or Origin, so the upstream can tell one.
const HOSTILE_MARKS: [&str; 2] = ["attacker.example", "evil"];

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match Cli::parse().command {
        Mode::Upstream { listen } => rt.block_on(upstream(listen)),
        Mode::Run {
            gateway,
            minutes,
            report,
        } => {
            let text = rt.block_on(soak(&gateway, Duration::from_secs_f64(minutes * 60.0)))?;
            println!();
            print!("{}", text.0);
            if let Some(path) = report {
                std::fs::write(&path, &text.0)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !text.1.is_empty() {
                bail!("soak failed:\n- {}", text.1.join("\n- "));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

/// What a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Allowed,
    /// DNS rebinding: the attacker's name in Host.
    RebindHost,
    /// A hostile page's Origin.
    EvilOrigin,
    /// A different hostile Origin every time: label and log flooding.
    FloodOrigin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::RebindHost => "attack: rebinding Host",
            Self::EvilOrigin => "attack: hostile Origin",
            Self::FloodOrigin => "attack: a new hostile Origin each time",
        }
    }
}

/// Everything the clients saw.
#[derive(Default)]
struct Tally {
    statuses: Mutex<std::collections::BTreeMap<(Kind, u16), u64>>,
    /// Connections the gateway broke (it never should).
    broken: AtomicU64,
    sse_events: AtomicU64,
    sse_clean_ends: AtomicU64,
    sse_errors: AtomicU64,
    sse_refused: AtomicU64,
    sse_opened: AtomicU64,
    flood: AtomicU64,
}

impl Tally {
    fn count(&self, kind: Kind, status: u16) {
        *self
            .statuses
            .lock()
            .unwrap()
            .entry((kind, status))
            .or_default() += 1;
    }

    fn total(&self, kinds: &[Kind], status: Option<u16>) -> u64 {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|((k, s), _)| kinds.contains(k) && status.is_none_or(|want| *s == want))
            .map(|(_, n)| n)
            .sum()
    }
}

const PING: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A new client connection to the gateway; `None` (counted as broken, after a pause) when it
/// cannot be opened.
async fn open(
    addr: SocketAddr,
    tally: &Tally,
) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let opened = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(sender)
    };
    let sender = opened.await;
    if sender.is_none() {
        tally.broken.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sender
}

/// One keep-alive client of `kind`, reconnecting when its connection ends, pausing `pace`
/// between requests, until `stop`. Stops between requests, so every request sent is answered.
async fn client(
    addr: SocketAddr,
    kind: Kind,
    pace: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let host = addr.to_string();
    let allowed_origin = format!("http://localhost:{}", addr.port());
    while !stop.load(Ordering::Relaxed) {
        let Some(mut sender) = open(addr, &tally).await else {
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let mut req = hyper::Request::new(Full::new(Bytes::from_static(PING)));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = http::Uri::from_static("/mcp");
            let headers = req.headers_mut();
            let (host, origin) = match kind {
                Kind::Allowed => (host.clone(), allowed_origin.clone()),
                Kind::RebindHost => (format!("attacker.example:{}", addr.port()), String::new()),
                Kind::EvilOrigin => (host.clone(), "http://evil.example".to_owned()),
                Kind::FloodOrigin => {
                    let n = tally.flood.fetch_add(1, Ordering::Relaxed);
                    (host.clone(), format!("http://evil-{n}.example"))
                }
            };
            headers.insert("host", host.parse().unwrap());
            if !origin.is_empty() {
                headers.insert("origin", origin.parse().unwrap());
            }
            headers.insert("content-type", "application/json".parse().unwrap());
            headers.insert(
                "accept",
                "application/json, text/event-stream".parse().unwrap(),
            );
            headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
            let answered = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            };
            match answered.await {
                Ok(status) => tally.count(kind, status),
                Err(_) => {
                    tally.broken.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            tokio::time::sleep(pace).await;
        }
    }
}

/// An SSE stream through the gateway, reopened whenever it ends, until `stop`.
async fn sse_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut sender) = open(addr, &tally).await else {
            continue;
        };
        let mut req = hyper::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = http::Uri::from_static("/mcp");
        let headers = req.headers_mut();
        headers.insert("host", addr.to_string().parse().unwrap());
        headers.insert("accept", "text/event-stream".parse().unwrap());
        headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        let Ok(resp) = sender.send_request(req).await else {
            tally.broken.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if resp.status() != http::StatusCode::OK {
            // The upstream is restarting (502): try again shortly.
            tally.sse_refused.fetch_add(1, Ordering::Relaxed);
            let _ = resp.into_body().collect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tally.sse_opened.fetch_add(1, Ordering::Relaxed);
        let mut body = resp.into_body();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match body.frame().await {
                Some(Ok(frame)) if frame.is_data() => {
                    tally.sse_events.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                None => {
                    tally.sse_clean_ends.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Err(_)) => {
                    tally.sse_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// The upstream process, and what it reported.
struct UpstreamProc {
    child: Child,
    reader: std::thread::JoinHandle<()>,
}

/// What every upstream process reported.
#[derive(Default)]
struct UpstreamLog {
    hostile: AtomicU64,
    first_hostile: Mutex<Vec<String>>,
    served: AtomicU64,
}

impl UpstreamProc {
    fn start(listen: SocketAddr, log: &Arc<UpstreamLog>) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["upstream", "--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the upstream")?;
        let stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log = log.clone();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(n) = line.strip_prefix("served ") {
                    log.served
                        .fetch_add(n.parse().unwrap_or(0), Ordering::Relaxed);
                } else if line.starts_with("hostile ") {
                    log.hostile.fetch_add(1, Ordering::Relaxed);
                    let mut first = log.first_hostile.lock().unwrap();
                    if first.len() < 5 {
                        first.push(line);
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the upstream did not start")?;
        Ok(Self { child, reader })
    }

    /// SIGTERM, and its last report read.
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait()?;
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("upstream reader panicked"))
    }
}

/// A sample of the gateway's resources and the traffic so far.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    allowed_ok: u64,
    attacks: u64,
    sse_events: u64,
    restarts: u32,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

const ATTACKS: [Kind; 3] = [Kind::RebindHost, Kind::EvilOrigin, Kind::FloodOrigin];

/// Runs the soak; returns the report and the failed checks.
async fn soak(
    gateway: &std::path::Path,
    duration: Duration,
) -> anyhow::Result<(String, Vec<String>)> {
    let upstream_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let upstream_log = Arc::new(UpstreamLog::default());
    let mut upstream = Some(UpstreamProc::start(upstream_addr, &upstream_log)?);

    let log_path =
        std::env::temp_dir().join(format!("mcp-gateway-soak-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path)?;
    let mut gw = Command::new(gateway)
        .arg("run")
        .args(["--upstream", &format!("http://{upstream_addr}/mcp")])
        .args(["--listen", &listen.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--ebpf", "off"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", gateway.display()))?;
    let pid = gw.id();
    tokio::task::block_in_place(|| {
        wait_listening(listen, Duration::from_secs(30));
        wait_listening(metrics, Duration::from_secs(10));
    });

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for (kind, n, pace_ms) in [
        (Kind::Allowed, 4, 5),
        (Kind::RebindHost, 1, 10),
        (Kind::EvilOrigin, 1, 10),
        (Kind::FloodOrigin, 1, 10),
    ] {
        for _ in 0..n {
            let pace = Duration::from_millis(pace_ms);
            tasks.push(tokio::spawn(client(
                listen,
                kind,
                pace,
                stop.clone(),
                tally.clone(),
            )));
        }
    }
    for _ in 0..10 {
        tasks.push(tokio::spawn(sse_client(
            listen,
            stop.clone(),
            tally.clone(),
        )));
    }

    let every = (duration / 60).max(Duration::from_secs(5));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut restarts = 0u32;
    let mut next_sample = every;
    // In the middle of every minute, so even a 1-minute run restarts once.
    let mut next_restart = Duration::from_secs(30);
    println!("| time | RSS | fds | allowed (200) | attacks | SSE events | upstream restarts |");
    println!("|---|---|---|---|---|---|---|");
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = started.elapsed();
        if now >= next_restart {
            next_restart += Duration::from_secs(60);
            if let Some(up) = upstream.take() {
                tokio::task::block_in_place(|| up.stop())?;
            }
            // A moment down, as in a real restart: requests meanwhile get a 502.
            tokio::time::sleep(Duration::from_millis(300)).await;
            upstream = Some(tokio::task::block_in_place(|| {
                UpstreamProc::start(upstream_addr, &upstream_log)
            })?);
            restarts += 1;
        }
        if now >= next_sample {
            next_sample += every;
            let sample = Sample {
                at: now,
                rss_kib: rss_kib(pid),
                fds: fds(pid),
                allowed_ok: tally.total(&[Kind::Allowed], Some(200)),
                attacks: tally.total(&ATTACKS, None),
                sse_events: tally.sse_events.load(Ordering::Relaxed),
                restarts,
            };
            println!("{}", row(&sample));
            samples.push(sample);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let scraped = tokio::task::block_in_place(|| parse(&scrape(metrics)));
    if let Some(up) = upstream.take() {
        tokio::task::block_in_place(|| up.stop())?;
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(i32::try_from(pid)?, libc::SIGTERM) };
    let exit = tokio::task::block_in_place(|| gw.wait())?;

    let counted = |reason: &str| -> u64 {
        value(
            &scraped,
            "mcp_gateway_rejections_total",
            &[("reason", reason)],
        ) as u64
    };
    let mut failed = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failed.push(what);
        }
    };
    let statuses = tally.statuses.lock().unwrap().clone();
    for ((kind, status), n) in &statuses {
        let expected = match kind {
            Kind::Allowed => [200, 502, 504].contains(status),
            _ => *status == 403,
        };
        check(expected, format!("{n} × {status} for {}", kind.name()));
    }
    for kind in [
        Kind::Allowed,
        Kind::RebindHost,
        Kind::EvilOrigin,
        Kind::FloodOrigin,
    ] {
        check(
            tally.total(&[kind], None) > 0,
            format!("no request of the kind {} was answered", kind.name()),
        );
    }
    let host_sent = tally.total(&[Kind::RebindHost], Some(403));
    let origin_sent = tally.total(&[Kind::EvilOrigin, Kind::FloodOrigin], Some(403));
    check(
        counted("host") == host_sent,
        format!(
            "reason=\"host\" counted {} for {host_sent} attacks",
            counted("host")
        ),
    );
    check(
        counted("origin") == origin_sent,
        format!(
            "reason=\"origin\" counted {} for {origin_sent} attacks",
            counted("origin")
        ),
    );
    let hostile = upstream_log.hostile.load(Ordering::Relaxed);
    check(
        hostile == 0,
        format!(
            "{hostile} attacks reached the upstream, e.g. {:?}",
            upstream_log.first_hostile.lock().unwrap()
        ),
    );
    // Exactly the allowed requests reached the upstream: those answered 200, plus at most those
    // cut by a restart after arriving (answered 502).
    let served = upstream_log.served.load(Ordering::Relaxed);
    let answered =
        tally.total(&[Kind::Allowed], Some(200)) + tally.sse_opened.load(Ordering::Relaxed);
    let cut = tally.total(&[Kind::Allowed], Some(502));
    check(
        served >= answered && served <= answered + cut,
        format!(
            "the upstream served {served} requests for {answered} answered (+ up to {cut} cut)"
        ),
    );
    let broken = tally.broken.load(Ordering::Relaxed);
    check(
        broken == 0,
        format!("the gateway broke {broken} client connections"),
    );
    let sse = (
        tally.sse_events.load(Ordering::Relaxed),
        tally.sse_clean_ends.load(Ordering::Relaxed),
        tally.sse_errors.load(Ordering::Relaxed),
    );
    check(sse.0 > 0, "no SSE event arrived".to_owned());
    check(
        sse.2 == 0,
        format!("{} SSE streams were cut instead of ended", sse.2),
    );
    check(
        restarts == 0 || sse.1 > 0,
        "upstream restarts ended no SSE stream cleanly".to_owned(),
    );
    check(exit.success(), format!("the gateway exited with {exit}"));
    // Flat: the last third of the run against the first.
    let third = samples.len() / 3;
    if third > 0 {
        let max = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap_or(0);
        let (first, last) = (&samples[..third], &samples[samples.len() - third..]);
        let (rss0, rss1) = (max(first, |s| s.rss_kib), max(last, |s| s.rss_kib));
        let (fd0, fd1) = (max(first, |s| s.fds as u64), max(last, |s| s.fds as u64));
        check(
            rss1 <= rss0 + rss0 / 10 + 4096,
            format!("RSS grew from {rss0} KiB to {rss1} KiB"),
        );
        check(
            fd1 <= fd0 + 16,
            format!("file descriptors grew from {fd0} to {fd1}"),
        );
    } else {
        check(
            false,
            "too short to judge flatness (fewer than 3 samples)".to_owned(),
        );
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "Traffic: 4 allowed clients (a request every 5 ms each), 3 attacking clients (rebinding \
         Host, hostile Origin, a new hostile Origin every time; every 10 ms each), 10 SSE streams \
         reopened whenever they end; the upstream restarted in the middle of every minute. \
         Gateway: default settings, kernel layer off.\n"
    );
    let _ = writeln!(
        report,
        "| time | RSS | fds | allowed (200) | attacks | SSE events | upstream restarts |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|");
    for sample in &samples {
        let _ = writeln!(report, "{}", row(sample));
    }
    let _ = writeln!(report, "\n| outcome | count |\n|---|---|");
    for ((kind, status), n) in &statuses {
        let _ = writeln!(report, "| {} → {status} | {n} |", kind.name());
    }
    let lines = [
        ("rejections counted, reason=\"host\"", counted("host")),
        ("rejections counted, reason=\"origin\"", counted("origin")),
        ("attacks seen by the upstream", hostile),
        (
            "requests served by the upstream",
            upstream_log.served.load(Ordering::Relaxed),
        ),
        ("SSE events received", sse.0),
        ("SSE streams ended cleanly (upstream restarts)", sse.1),
        ("SSE streams cut", sse.2),
        (
            "SSE opens refused while the upstream was down",
            tally.sse_refused.load(Ordering::Relaxed),
        ),
        ("client connections broken by the gateway", broken),
        ("upstream restarts", u64::from(restarts)),
    ];
    for (what, n) in lines {
        let _ = writeln!(report, "| {what} | {n} |");
    }
    let _ = writeln!(
        report,
        "\n{}",
        if failed.is_empty() {
            "Every check passed: counters equal to the attacks answered, no attack at the \
             upstream, RSS and descriptors flat (last third of the run against the first)."
                .to_owned()
        } else {
            format!("**Failed:** {}", failed.join("; "))
        }
    );
    if failed.is_empty() {
        let _ = std::fs::remove_file(&log_path);
    } else {
        let _ = writeln!(report, "\nThe gateway's log: {}", log_path.display());
    }
    Ok((report, failed))
}

fn row(s: &Sample) -> String {
    format!(
        "| {:.0} s | {:.1} MiB | {} | {} | {} | {} | {} |",
        s.at.as_secs_f64(),
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.allowed_ok,
        s.attacks,
        s.sse_events,
        s.restarts
    )
}

// ---------------------------------------------------------------------------------------------
// The upstream.

type Body = BoxBody<Bytes, Infallible>;

async fn upstream(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.context("binding")?;
    let served = Arc::new(AtomicU64::new(0));
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, served.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = term.recv() => break,
        }
    }
    println!("served {}", served.load(Ordering::Relaxed));
    std::io::stdout().flush()?;
    // Exits at once: open SSE streams die with the process, as in a real restart.
    std::process::exit(0);
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    served: Arc<AtomicU64>,
) -> Result<hyper::Response<Body>, Infallible> {
    served.fetch_add(1, Ordering::Relaxed);
    for name in ["host", "origin"] {
        if let Some(value) = req.headers().get(name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            if HOSTILE_MARKS.iter().any(|m| value.contains(m)) {
                println!("hostile {name}: {value}");
            }
        }
    }
    if req.method() == http::Method::GET {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for n in 0u64.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let event = format!("event: message\ndata: {{\"n\":{n}}}\n\n");
                if tx.send(Frame::data(Bytes::from(event))).await.is_err() {
                    break;
                }
            }
        });
        let mut resp = hyper::Response::new(Events(rx).boxed());
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(resp);
    }
    let _ = req.into_body().collect().await;
    let mut resp = hyper::Response::new(
        Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ))
        .boxed(),
    );
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

/// An SSE body fed by a channel; ends when the producer does.
struct Events(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}
