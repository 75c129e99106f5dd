//! The gateway killed (SIGKILL) in the middle of mixed traffic: the kernel enforcement and the
//! counters outlive it, and a restart takes over.
//!
//! The real `mcp-gateway run --ebpf required` runs on a cgroup and a pin directory of the
//! test's own (removed by RAII guards); the upstream is the recording test upstream.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gateway_common::Reason;
use http_body_util::{BodyExt as _, Full};
use mcp_gateway_tests::{
    cgroup::TestCgroup, gateway::BinaryGateway, netns::NetnsGuard, pins::PinDir,
    probe::bind_refused, require_privileges, upstream::Upstream,
};

const ORIGIN: &str = "http://rebind-during-crash.test";

/// Requests on one keep-alive connection (reconnecting when it closes) until the gateway is
/// gone; statuses received. `evil` sends the rebinding Origin.
async fn load(addr: SocketAddr, host: String, evil: bool, stop: Arc<AtomicBool>) -> Vec<u16> {
    let mut statuses = Vec::new();
    'connections: loop {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            break;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            break;
        };
        tokio::spawn(conn);
        // Stopping between requests, never mid-request: each one sent is answered and counted.
        while !stop.load(Ordering::Relaxed) {
            let mut req = http::Request::new(Full::new(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            )));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = "/mcp".parse().unwrap();
            let h = req.headers_mut();
            h.insert("host", host.parse().unwrap());
            h.insert("content-type", "application/json".parse().unwrap());
            if evil {
                h.insert("origin", ORIGIN.parse().unwrap());
            }
            let sent = async {
                sender.ready().await?;
                sender.send_request(req).await
            };
            let Ok(resp) = sent.await else {
                // The gateway died mid-request: nothing to count.
                continue 'connections;
            };
            let status = resp.status().as_u16();
            if resp.into_body().collect().await.is_ok() {
                statuses.push(status);
            }
        }
        break;
    }
    statuses
}

/// Runs allowed and attacking clients against `gw` until `stop` (or the gateway's death).
fn start_load(
    rt: &tokio::runtime::Runtime,
    gw: &BinaryGateway,
    stop: &Arc<AtomicBool>,
) -> Vec<(bool, tokio::task::JoinHandle<Vec<u16>>)> {
    [false, false, true, true]
        .into_iter()
        .map(|evil| {
            (
                evil,
                rt.spawn(load(gw.listen, gw.host(), evil, stop.clone())),
            )
        })
        .collect()
}

fn tally(
    rt: &tokio::runtime::Runtime,
    clients: Vec<(bool, tokio::task::JoinHandle<Vec<u16>>)>,
) -> BTreeMap<(bool, u16), usize> {
    let mut counts = BTreeMap::new();
    for (evil, task) in clients {
        for status in rt.block_on(task).expect("client task") {
            *counts.entry((evil, status)).or_default() += 1;
        }
    }
    counts
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn sigkill_under_load_keeps_enforcement_and_counters_and_a_restart_takes_over() {
    require_privileges();
    let cgroup = TestCgroup::new("faults-kill");
    let pins = PinDir::new("faults-kill");
    let binds = NetnsGuard::new("fkb");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(Upstream::start());
    let args = [
        "--ebpf",
        "required",
        "--cgroup",
        cgroup.path().to_str().unwrap(),
        "--pin-dir",
        pins.arg(),
    ];
    let gw = BinaryGateway::start(upstream.addr, &args);
    let (listen, metrics) = (gw.listen, gw.metrics);
    let protected = [upstream.addr.port(), listen.port()];
    assert!(
        protected.iter().all(|&p| bind_refused(&cgroup, &binds, p)),
        "setup: the kernel layer is not enforcing"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_load(&rt, &gw, &stop);
    std::thread::sleep(Duration::from_millis(700));
    gw.child.crash();
    let before = tally(&rt, clients);
    let (allowed, attacks) = (before[&(false, 200)], before[&(true, 403)]);
    eprintln!("until the SIGKILL: {before:?}");
    assert!(
        allowed > 50 && attacks > 50,
        "too little load to mean anything: {before:?}"
    );
    assert_eq!(
        before.len(),
        2,
        "other answers than 200 and 403: {before:?}"
    );

    // After the crash: every answered attack counted (one in flight may be counted but not
    // answered), none reached the upstream, and the ports stay protected.
    let counted = pins.count_label(Reason::Origin, ORIGIN);
    assert!(
        counted >= attacks as u64 && counted <= attacks as u64 + 2,
        "{counted} counted for {attacks} answered attacks"
    );
    let reached = upstream.requests();
    assert!(
        reached.iter().all(|r| !r.headers.contains_key("origin")),
        "an attack reached the upstream"
    );
    assert!(reached.len() >= allowed);
    for port in protected {
        assert!(
            bind_refused(&cgroup, &binds, port),
            "port {port} lost its protection with the gateway's death"
        );
    }

    // A restart on the same ports takes over its own entries and goes on counting.
    let started = Instant::now();
    let gw = BinaryGateway::start_on(upstream.addr, listen, metrics, &args);
    let line = gw
        .child
        .logged("kernel enforcement in force")
        .expect("no enforcement line");
    assert!(line.contains("attached=0"), "{line}");
    eprintln!("restart to serving: {:?}", started.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_load(&rt, &gw, &stop);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let after = tally(&rt, clients);
    assert_eq!(after.len(), 2, "other answers than 200 and 403: {after:?}");
    assert_eq!(
        pins.count_label(Reason::Origin, ORIGIN) - counted,
        after[&(true, 403)] as u64,
        "the restarted gateway's counts are not exact"
    );
    for port in protected {
        assert!(bind_refused(&cgroup, &binds, port));
    }
    drop(gw);
}
