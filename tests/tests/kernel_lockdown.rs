//! The kill-switch, for real: `mcp-gateway lockdown` from a separate process cuts the protected
//! ports for everyone (established connections reset, new ones refused), within 100 ms of the
//! command; it survives a gateway crash and restart; `unlock` restores service. Also the
//! source-address allowlist, from two "remote hosts" on a veth link.
//!
//! The gateway runs inside a cgroup of the test's own (the programs cover that cgroup only);
//! the test's own process is outside it, and reaches the gateway over loopback.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use mcp_gateway_tests::{
    cgroup::TestCgroup,
    netns::{HostPair, OTHER_REMOTE_V4, REMOTE_V4, SERVER_V4},
    pins::PinDir,
    probe::{listen, probe},
    process::{ChildGuard, gateway_bin, gateway_output, in_cgroup},
    prometheus::{free_port, parse, rejections, scrape, value, wait_listening},
    require_privileges,
};

/// The real gateway, inside `cgroup`, enforcing there with the test's pin dir.
struct Gateway {
    child: ChildGuard,
    metrics: SocketAddr,
}

impl Gateway {
    fn start(cgroup: &TestCgroup, pins: &PinDir, upstream: u16, listen: SocketAddr) -> Self {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = in_cgroup(Some(cgroup.path()), &gateway_bin());
        cmd.env_remove("RUST_LOG")
            .env("RUST_LOG", "info")
            .arg("run")
            .arg("--upstream")
            .arg(format!("http://127.0.0.1:{upstream}/mcp"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(["--ebpf", "required", "--cgroup"])
            .arg(cgroup.path())
            .args(["--pin-dir", pins.arg()]);
        let mut child = ChildGuard::spawn_logged(&mut cmd);
        child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
        wait_listening(metrics, Duration::from_secs(10));
        Self { child, metrics }
    }

    fn gauge(&self, name: &str) -> f64 {
        value(&parse(&scrape(self.metrics)), name, &[])
    }
}

/// A gateway enforcing in the test's own cgroup and pin directory, in front of an HTTP upstream
/// in that cgroup. Fields drop in order: the gateway, the upstream, the pins, the cgroup.
struct Setup {
    gw: Gateway,
    _server: ChildGuard,
    upstream: u16,
    listen: SocketAddr,
    /// The listen address as a Host header.
    host: String,
    pins: PinDir,
    cgroup: TestCgroup,
}

impl Setup {
    fn new(name: &str) -> Self {
        let cgroup = TestCgroup::new(name);
        let pins = PinDir::new(name);
        let upstream = free_port();
        let server = http_upstream(cgroup.path(), upstream);
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self {
            gw: Gateway::start(&cgroup, &pins, upstream, listen),
            _server: server,
            upstream,
            listen,
            host: format!("127.0.0.1:{}", listen.port()),
            pins,
            cgroup,
        }
    }

    /// SIGKILLs the gateway and starts it again.
    fn crash_and_restart(self) -> Self {
        let Self {
            gw,
            _server,
            upstream,
            listen,
            host,
            pins,
            cgroup,
        } = self;
        gw.child.crash();
        Self {
            gw: Gateway::start(&cgroup, &pins, upstream, listen),
            _server,
            upstream,
            listen,
            host,
            pins,
            cgroup,
        }
    }
}

/// One request on `conn` (keep-alive); the status code, or `None` when the connection failed.
fn request(conn: &mut TcpStream, host: &str) -> Option<u16> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).ok()?;
    (n >= 12).then(|| String::from_utf8_lossy(&buf[9..12]).parse().ok())?
}

/// Whether a fresh loopback connection to `addr` is accepted within `timeout`.
fn reachable(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP upstream inside `cgroup` on `port` (answers every request with 200).
fn http_upstream(cgroup: &Path, port: u16) -> ChildGuard {
    let mut cmd = in_cgroup(Some(cgroup), Path::new("python3"));
    cmd.args(["-c", UPSTREAM_PY, &port.to_string()]);
    let mut child = ChildGuard::spawn(&mut cmd);
    assert_eq!(child.read_line(), "ready");
    child
}

const UPSTREAM_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"#;

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn lockdown_cuts_every_protected_port_at_once_survives_a_restart_and_unlock_restores_it() {
    require_privileges();
    let setup = Setup::new("lockdown");
    let (listen, host) = (setup.listen, setup.host.clone());

    // A client with an established keep-alive connection through the gateway.
    let mut client = TcpStream::connect(listen).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(request(&mut client, &host), Some(200), "setup: served");
    assert_eq!(setup.gw.gauge("mcp_gateway_lockdown"), 0.0);

    // Lockdown from a separate process, while a prober keeps opening connections.
    let cut = Arc::new(AtomicBool::new(false));
    let prober = {
        let cut = cut.clone();
        // Returns when the first refused attempt started: its SYN was dropped, so the lock was
        // in force by then (an upper bound on the time to enforcement, whatever the timeout).
        thread::spawn(move || {
            loop {
                let attempt = Instant::now();
                if !reachable(listen, Duration::from_millis(10)) {
                    cut.store(true, Ordering::Relaxed);
                    return attempt;
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let started = Instant::now();
    let out = gateway_output(&[
        "lockdown",
        "--reason",
        "incident 42",
        "--pin-dir",
        setup.pins.arg(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("LOCKDOWN in force"), "{stdout}");
    eprintln!("{stdout}");
    let enforced_at = prober.join().expect("prober");
    let took = enforced_at.saturating_duration_since(started);
    eprintln!(
        "from the lockdown command's start to the first refused connection attempt: {took:?}"
    );
    assert!(
        took < Duration::from_millis(100),
        "enforcement took {took:?}"
    );

    // The established connection was reset; new ones get nowhere, loopback included.
    assert_eq!(
        request(&mut client, &host),
        None,
        "the established connection survived"
    );
    assert!(!reachable(listen, Duration::from_millis(300)));
    let inside = probe(
        Some(setup.cgroup.path()),
        &mcp_gateway_tests::netns::NetnsGuard::new("lkin"),
        &["connect", &format!("127.0.0.1:{}", setup.upstream), "300"],
    );
    // (A fresh namespace has no listener: any answer but a refusal by the kernel means the
    // connect got past the lock; EPERM is the program's.)
    assert!(
        inside.starts_with("err 1 "),
        "connect to a locked port from inside: {inside}"
    );
    wait_until(
        "the gateway reports the lockdown",
        Duration::from_secs(2),
        || setup.gw.gauge("mcp_gateway_lockdown") == 1.0,
    );
    let status =
        String::from_utf8_lossy(&gateway_output(&["status", "--pin-dir", setup.pins.arg()]).stdout)
            .into_owned();
    assert!(
        status.contains("LOCKDOWN: every protected port since 20")
            && status.contains("incident 42"),
        "{status}"
    );
    let doctor = gateway_output(&["doctor", "--pin-dir", setup.pins.arg()]);
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.contains("every protected port since 20") && doctor.contains("incident 42"),
        "{doctor}"
    );

    // It survives the gateway's crash and restart.
    let setup = setup.crash_and_restart();
    assert!(
        !reachable(listen, Duration::from_millis(300)),
        "the restart undid the lockdown"
    );
    wait_until(
        "the restarted gateway reports it",
        Duration::from_secs(2),
        || setup.gw.gauge("mcp_gateway_lockdown") == 1.0,
    );

    let out = gateway_output(&["unlock", "--pin-dir", setup.pins.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("released every protected port"));
    assert!(
        reachable(listen, Duration::from_secs(1)),
        "the kernel let go at once"
    );
    // The gateway reads the lock state every 100 ms: it serves again within that.
    wait_until("service restored", Duration::from_millis(500), || {
        let mut client = TcpStream::connect_timeout(&listen, Duration::from_secs(1)).expect("back");
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        request(&mut client, &host) == Some(200)
    });
    wait_until(
        "the gateway reports the release",
        Duration::from_secs(2),
        || setup.gw.gauge("mcp_gateway_lockdown") == 0.0,
    );
    assert!(cut.load(Ordering::Relaxed));
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn a_locked_upstream_port_gets_503_from_the_gateway() {
    require_privileges();
    let setup = Setup::new("lock503");
    let (listen, host, gw, pins) = (setup.listen, &setup.host, &setup.gw, &setup.pins);
    let port = setup.upstream.to_string();
    let out = gateway_output(&["lockdown", "--port", &port, "--pin-dir", pins.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The gateway's own port is open, its server's upstream is locked: 503, with a JSON-RPC body.
    wait_until(
        "503 while the upstream is locked",
        Duration::from_secs(2),
        || {
            let mut conn = TcpStream::connect(listen).expect("the listen port is not locked");
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            request(&mut conn, host) == Some(503)
        },
    );
    assert_eq!(gw.gauge("mcp_gateway_lockdown"), 1.0);
    assert!(
        rejections(&parse(&scrape(gw.metrics)), "lockdown", "127.0.0.1") >= 1,
        "the 503 is counted as the peer's lockdown rejection"
    );
    let out = gateway_output(&["unlock", "--port", &port, "--pin-dir", pins.arg()]);
    assert!(out.status.success());
    wait_until("served again", Duration::from_secs(2), || {
        let mut conn = TcpStream::connect(listen).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        request(&mut conn, host) == Some(200)
    });
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn lockdown_without_a_gateway_locks_the_ports_given_or_says_there_is_nothing() {
    require_privileges();
    let cgroup = TestCgroup::new("lockbare");
    let pins = PinDir::new("lockbare");
    let out = gateway_output(&["lockdown", "--pin-dir", pins.arg()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing to lock") && stderr.contains("--port"),
        "{stderr}"
    );

    let ns = mcp_gateway_tests::netns::NetnsGuard::new("lkb");
    let _server = listen(cgroup.path(), &ns, "127.0.0.1:18950");
    let connect = || {
        probe(
            Some(cgroup.path()),
            &ns,
            &["connect", "127.0.0.1:18950", "300"],
        )
    };
    assert_eq!(connect(), "ok", "setup");
    let cg = cgroup.path().to_str().unwrap();
    let out = gateway_output(&[
        "lockdown",
        "--port",
        "18950",
        "--cgroup",
        cg,
        "--pin-dir",
        pins.arg(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("attached them"));
    assert!(connect().starts_with("err 1 "));
    let out = gateway_output(&["unlock", "--pin-dir", pins.arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed the programs"));
    assert_eq!(connect(), "ok");
    assert!(
        mcp_gateway::ebpf::sys::attached_programs(cgroup.path())
            .expect("query")
            .is_empty(),
        "programs left attached"
    );

    // Without the capabilities: an error that says which.
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(gateway_bin())
        .args(["lockdown", "--pin-dir", pins.arg()])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lockdown needs CAP_BPF") && stderr.contains("CAP_NET_ADMIN"),
        "{stderr}"
    );
}

#[test]
#[ignore = "privileged: needs root with CAP_BPF and cgroup v2; run by `cargo xtask test`"]
fn the_source_allowlist_admits_one_remote_host_and_drops_another() {
    require_privileges();
    let cgroup = TestCgroup::new("sources");
    let hosts = HostPair::new("src");
    let pins = PinDir::new("sources");
    let dir = mcp_gateway_tests::e2e::TempDir::new("sources");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let _upstream = listen(cgroup.path(), &hosts.server, "127.0.0.1:18960");
    // The gateway inside the server's namespace, on every address, for 198.18.0.2 only.
    let start = |port: u16, ebpf: &[&str]| {
        let mut cmd = in_cgroup(Some(cgroup.path()), Path::new("nsenter"));
        cmd.arg(format!("--net=/run/netns/{}", hosts.server.name()))
            .arg("--")
            .arg(gateway_bin())
            .env("RUST_LOG", "info")
            .args(["run", "--upstream", "http://127.0.0.1:18960/mcp"])
            .args([
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--allow-non-loopback",
            ])
            .args(["--allow-host", &format!("{SERVER_V4}:{port}")])
            .arg("--auth-token-file")
            .arg(&token)
            .arg("--allow-plaintext")
            .args(["--allow-source", &format!("{REMOTE_V4}/32")])
            .args([
                "--metrics-listen",
                "off",
                "--pin-dir",
                pins.arg(),
                "--cgroup",
            ])
            .arg(cgroup.path())
            .args(ebpf);
        let mut child = ChildGuard::spawn_logged(&mut cmd);
        child.wait_for_log("mcp-gateway listening on", Duration::from_secs(30));
        child
    };
    let get = |port: u16, from: &str| {
        probe(
            None,
            &hosts.remote,
            &[
                "get",
                &format!("{SERVER_V4}:{port}"),
                &format!("{SERVER_V4}:{port}"),
                "s3cret",
                from,
            ],
        )
    };
    // Userspace alone (no eBPF): the other host reaches the port and gets 403.
    let _plain = start(18961, &["--ebpf", "off"]);
    assert_eq!(get(18961, OTHER_REMOTE_V4), "403", "userspace check");
    // The upstream is an echo server: 502 means the request passed every check.
    assert_eq!(get(18961, REMOTE_V4), "502");

    // With the kernel layer: the other host's packets are dropped and counted by source.
    let _kernel = start(18962, &["--ebpf", "required"]);
    assert_eq!(get(18962, OTHER_REMOTE_V4), "timeout", "kernel drop");
    assert_eq!(get(18962, REMOTE_V4), "502");
    let counted = pins.count_addr(
        gateway_common::Reason::SourceDenied,
        OTHER_REMOTE_V4.parse().unwrap(),
        18962,
    );
    assert!(
        counted >= 1,
        "source_denied for {OTHER_REMOTE_V4}: {counted}"
    );
    assert_eq!(
        pins.count_addr(
            gateway_common::Reason::SourceDenied,
            REMOTE_V4.parse().unwrap(),
            18962
        ),
        0
    );
}
