//! A real browser attack: headless Chromium (Debian's `chromium`), the attacker's web servers,
//! and a collector the attack pages report their outcomes to.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    e2e::{TempDir, assets},
    process::in_cgroup,
    tools::{self, FileLock},
};

/// Where Debian's `chromium` package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The names the attack pages use; Chromium resolves both to 127.0.0.1 (`--host-resolver-rules`).
pub const REBIND_HOST: &str = "rebind.test";
pub const EVIL_HOST: &str = "evil.test";

/// Chromium, installed with apt-get when missing (as root, once, under a lock). Never skips: a
/// machine where it can't be installed fails the test with the command that fixes it.
pub fn chromium() -> PathBuf {
    let bin = PathBuf::from(CHROMIUM);
    if bin.is_file() {
        return bin;
    }
    tools::ensure_apt("chromium", &["chromium"]);
    assert!(
        bin.is_file(),
        "apt-get installed chromium but {CHROMIUM} is missing"
    );
    bin
}

/// A headless Chromium showing one page, killed with its whole process group on drop.
pub struct Chromium {
    child: Child,
    profile: TempDir,
    // One Chromium at a time on this machine, whichever test binary runs it.
    _lock: FileLock,
}

impl Chromium {
    /// Opens `url`, in `cgroup` when given (all of Chromium's processes start there).
    pub fn open(url: &str, cgroup: Option<&Path>) -> Self {
        let bin = chromium();
        let lock = FileLock::acquire(Path::new("/tmp/mcp-gateway-e2e-chromium.lock"));
        let profile = TempDir::new("chromium");
        let data_dir = profile.path().join("profile");
        let log = fs::File::create(profile.path().join("chromium.log")).expect("chromium log");
        let mut cmd = in_cgroup(cgroup, &bin);
        cmd.args([
            // No display here.
            "--headless",
            // The tests run as root, where Chromium refuses to start with its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            // Plain TCP only, so every request is visible to the servers the test runs.
            "--disable-quic",
            "--no-first-run",
            // The machine's network is closed: no update checks, sync, safe browsing or
            // component downloads (they'd fail, many at a time, and add noise).
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // The attacker's DNS, played by Chromium's resolver: both names are 127.0.0.1.
            &format!(
                "--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1, MAP {EVIL_HOST} 127.0.0.1"
            ),
        ])
        // A fresh profile: no cache, cookies or HSTS state from an earlier run.
        .arg(format!("--user-data-dir={}", data_dir.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
        // Its own process group, so drop can kill the renderers and helpers too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
        Self {
            child,
            profile,
            _lock: lock,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("chromium log:\n{}", self.log());
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: signalling the process group this guard created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        // Anything that left the group still names our unique profile dir on its command line.
        kill_matching(&self.profile.path().to_string_lossy());
    }
}

/// SIGKILLs every process whose command line contains `needle` (a path unique to this test).
fn kill_matching(needle: &str) {
    for _ in 0..20 {
        let mut found = false;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found = true;
                // SAFETY: a process of this test's browser (its cmdline names our profile).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("warning: chromium processes for {needle} survived SIGKILL");
}

/// A request as the mini server saw it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Request) -> (u16, &'static str, Vec<u8>) + Send + Sync;

/// A tiny HTTP/1.1 server on a loopback listener: every answer carries `Connection: close`,
/// so Chromium never reuses a connection to it (what the rebinding relies on).
pub struct MiniServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MiniServer {
    pub fn start(listener: TcpListener, handler: Arc<Handler>) -> Self {
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        thread::spawn(move || {
                            let _ = serve(stream, &*handler);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener closes here: the port is free for whoever binds it next.
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting and closes the listening socket before returning.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (status, content_type, payload) = handler(&Request { method, path, body });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    stream.write_all(&payload)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// The attacker's web server: `GET /` is `page` (a file in tests/e2e), anything else 404.
pub fn page_server(listener: TcpListener, page: &str) -> MiniServer {
    let html = fs::read(assets().join(page)).expect("reading the attack page");
    MiniServer::start(
        listener,
        Arc::new(move |req: &Request| {
            if req.method == "GET" && (req.path == "/" || req.path.starts_with("/?")) {
                (200, "text/html; charset=utf-8", html.clone())
            } else {
                (404, "text/plain", b"the attacker's server".to_vec())
            }
        }),
    )
}

/// Reports with their arrival times, and a condvar signalled on each new one.
type Reports = Arc<(Mutex<Vec<(Instant, Value)>>, Condvar)>;

/// Collects the JSON reports attack pages POST to `/report`, with when each arrived.
pub struct Collector {
    pub server: MiniServer,
    reports: Reports,
}

impl Collector {
    pub fn start() -> Self {
        let reports: Reports = Arc::default();
        let sink = reports.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let server = MiniServer::start(
            listener,
            Arc::new(move |req: &Request| {
                if req.method == "POST"
                    && req.path == "/report"
                    && let Ok(value) = serde_json::from_slice::<Value>(&req.body)
                {
                    eprintln!("  page: {value}");
                    let (list, cv) = &*sink;
                    list.lock().expect("reports").push((Instant::now(), value));
                    cv.notify_all();
                }
                (204, "text/plain", Vec::new())
            }),
        );
        Self { server, reports }
    }

    /// The URL pages report to.
    pub fn url(&self) -> String {
        format!("http://{}/report", self.server.addr)
    }

    /// All reports so far.
    pub fn reports(&self) -> Vec<Value> {
        self.timed().into_iter().map(|(_, v)| v).collect()
    }

    /// All reports so far, with their arrival times.
    pub fn timed(&self) -> Vec<(Instant, Value)> {
        self.reports.0.lock().expect("reports").clone()
    }

    /// Waits until `done` holds for the reports, and returns them; panics with them after
    /// `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let (list, cv) = &*self.reports;
        let mut guard = list.lock().expect("reports");
        loop {
            let values: Vec<Value> = guard.iter().map(|(_, v)| v.clone()).collect();
            if done(&values) {
                return values;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the page did not report what was expected within {timeout:?}; it reported:\n{}",
                values
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            guard = cv.wait_timeout(guard, left).expect("reports").0;
        }
    }
}

/// Reports with `step == name`.
pub fn steps<'a>(reports: &'a [Value], name: &str) -> Vec<&'a Value> {
    reports.iter().filter(|r| r["step"] == name).collect()
}

/// Step 1 and 2 of the rebinding attack: the attacker's server serves `attack.html` on
/// 127.0.0.1:P to Chromium as `http://rebind.test:P/`; once the page has loaded, the server
/// stops, leaving port P free for the victim. Returns P, the browser and the collector.
pub struct Rebinding {
    pub port: u16,
    pub collector: Collector,
    pub browser: Chromium,
}

impl Rebinding {
    pub fn start(cgroup: Option<&Path>, attempts: u32) -> Self {
        let collector = Collector::start();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the attacker's server");
        let port = listener.local_addr().expect("addr").port();
        let mut attacker = page_server(listener, "attack.html");
        let url = format!(
            "http://{REBIND_HOST}:{port}/?collector={}&attempts={attempts}",
            collector.url()
        );
        let browser = Chromium::open(&url, cgroup);
        let loaded =
            collector.wait_for(Duration::from_secs(60), |r| !steps(r, "loaded").is_empty());
        assert_eq!(
            steps(&loaded, "loaded")[0]["origin"],
            format!("http://{REBIND_HOST}:{port}"),
            "the page runs on the attacker's origin"
        );
        // The rebinding: the name and port stay the same, what answers on them changes.
        attacker.stop();
        Self {
            port,
            collector,
            browser,
        }
    }

    /// Waits for the page to finish (it stops after the tool answered, or after three answers
    /// other than the attacker's 404, or after its attempts), and returns every report.
    pub fn finish(&self, timeout: Duration) -> Vec<Value> {
        self.collector
            .wait_for(timeout, |r| !steps(r, "finished").is_empty())
    }
}
