//! Slow clients (slowloris) must not starve legitimate ones, with default settings.
//!
//! 2,000 connections each send a request head one byte per second, and reconnect as soon as the
//! gateway closes them (the harshest slowloris: it never lets a freed slot go). Meanwhile a
//! legitimate client sends an MCP ping every 250 ms, each on a fresh connection. Every ping must
//! be answered, the slowest within 100 ms, while the gateway's file descriptors stay near
//! `max_connections` and its memory bounded. Runs alone (.config/nextest.toml): it measures
//! latency.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_gateway_tests::{gateway::BinaryGateway, prometheus, upstream::Upstream};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

const SLOW_CLIENTS: usize = 2_000;
/// The default `max_connections`.
const CAP: usize = 512;
const PINGS: usize = 52;

/// Counts what the attackers managed.
#[derive(Default)]
struct Attack {
    connected: AtomicU64,
    closed_by_gateway: AtomicU64,
}

/// One slow client: a byte of a never-ending request head each second; reconnects when closed.
async fn slow_client(addr: SocketAddr, host: String, attack: Arc<Attack>, stop: CancellationToken) {
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nX-Slow: {}",
        "a".repeat(4096)
    );
    while !stop.is_cancelled() {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        attack.connected.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 512];
        'dribble: for byte in head.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            let sleep = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(sleep);
            // Reading notices a close at once (an answer, EOF or a reset).
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    read = stream.read(&mut buf) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            attack.closed_by_gateway.fetch_add(1, Ordering::Relaxed);
                            break 'dribble;
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// One MCP ping on a fresh connection: the status and how long it took, connect included.
async fn ping(addr: SocketAddr, host: &str) -> Result<(u16, Duration), String> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        stream
            .read_to_end(&mut resp)
            .await
            .map_err(|e| e.to_string())?;
        let status = std::str::from_utf8(resp.get(9..12).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP answer: {:?}", String::from_utf8_lossy(&resp)))?;
        Ok((status, start.elapsed()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

/// The gateway's open file descriptors and resident memory (KiB).
fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    (fds, rss)
}

/// 2,000 sockets here, besides the runner's own: lift the soft limit to the hard one.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut now) };
    assert!(
        now.rlim_cur >= (SLOW_CLIENTS + 200) as u64,
        "the open-files limit ({}) is too low for {SLOW_CLIENTS} slow clients: raise it (ulimit -n)",
        now.rlim_cur
    );
}

#[test]
fn slow_clients_do_not_starve_legitimate_ones() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = Upstream::start().await;
        // Default settings: only the addresses and the kernel layer are chosen.
        let mut gw = BinaryGateway::start(upstream.addr, &["--ebpf", "off"]);
        let (addr, host, pid) = (gw.listen, gw.host(), gw.child.id());
        let (idle_fds, idle_rss) = usage(pid);

        let attack = Arc::new(Attack::default());
        let stop = CancellationToken::new();
        let attackers: Vec<_> = (0..SLOW_CLIENTS)
            .map(|_| {
                tokio::spawn(slow_client(
                    addr,
                    host.clone(),
                    attack.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // Every slow client connected at least once: the cap is reached and defended.
        let deadline = Instant::now() + Duration::from_secs(30);
        while attack.connected.load(Ordering::Relaxed) < SLOW_CLIENTS as u64 {
            assert!(
                Instant::now() < deadline,
                "only {} of {SLOW_CLIENTS} slow clients connected in 30 s",
                attack.connected.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut answers = Vec::new();
        let (mut max_fds, mut max_rss) = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        for _ in 0..PINGS {
            tick.tick().await;
            answers.push(ping(addr, &host).await);
            let (fds, rss) = usage(pid);
            max_fds = max_fds.max(fds);
            max_rss = max_rss.max(rss);
        }
        let metrics = prometheus::parse(&prometheus::scrape(gw.metrics));
        stop.cancel();
        for attacker in attackers {
            let _ = attacker.await;
        }

        let mut latencies: Vec<Duration> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok().map(|(_, took)| *took))
            .collect();
        latencies.sort();
        let gauge = |name| prometheus::value(&metrics, name, &[]);
        let (served, pending) = (
            gauge("mcp_gateway_open_connections"),
            gauge("mcp_gateway_pending_connections"),
        );
        let evicted = prometheus::value(
            &metrics,
            "mcp_gateway_connections_shed_total",
            &[("why", "evicted")],
        );
        eprintln!(
            "{SLOW_CLIENTS} slow clients: {} connections, {} closed by the gateway; {served} served, \
             {pending} pending, {evicted} evicted at the end; \
             pings answered {}/{PINGS}, p50 {:?}, slowest {:?}; gateway fds {idle_fds} idle, {max_fds} max; \
             RSS {idle_rss} KiB idle, {max_rss} KiB max",
            attack.connected.load(Ordering::Relaxed),
            attack.closed_by_gateway.load(Ordering::Relaxed),
            latencies.len(),
            latencies.get(latencies.len() / 2),
            latencies.last(),
        );

        let failed: Vec<_> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| !matches!(a, Ok((200, _))))
            .collect();
        assert!(
            failed.is_empty(),
            "legitimate pings failed under the slow-client attack: {failed:?}"
        );
        let slowest = *latencies.last().unwrap();
        assert!(
            slowest < Duration::from_millis(100),
            "the slowest legitimate ping took {slowest:?} (limit 100 ms)"
        );
        // The attack really held the cap (else this test proves nothing), and the pings got in
        // by evicting slow clients.
        assert!(
            served >= (CAP - 1) as f64 && pending >= (SLOW_CLIENTS - CAP - 100) as f64,
            "the attack did not hold the cap: {served} served, {pending} pending"
        );
        assert!(evicted >= 1.0, "no slow client was evicted for a ping");
        // Sockets: the slow clients' own (all held, none churned), plus listeners, the upstream
        // pool and std streams.
        assert!(
            max_fds <= SLOW_CLIENTS + idle_fds + 16,
            "the gateway held {max_fds} file descriptors for {SLOW_CLIENTS} clients ({idle_fds} idle)"
        );
        assert!(
            max_rss < idle_rss + 64 * 1024,
            "the gateway's RSS grew from {idle_rss} KiB to {max_rss} KiB"
        );
        // No slow client's request head ever completed: the upstream saw the pings only.
        assert_eq!(upstream.requests().len(), PINGS, "the upstream saw other requests");
        gw.child.wait_for_log(
            "at max_connections: closed the connection that waited longest",
            Duration::from_secs(5),
        );
    });
}
